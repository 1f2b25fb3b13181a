package scheduler

import (
	"slices"
	"testing"
)

func TestAllocateSpreadsAndReleases(t *testing.T) {
	tests := []struct {
		name      string
		tms       map[string]int
		n         int
		preferred map[int]string
		want      []string
		wantErr   bool
	}{
		{"spread over three", map[string]int{"a": 2, "b": 2, "c": 2}, 3, nil, []string{"a", "b", "c"}, false},
		{"most free first", map[string]int{"a": 1, "b": 3}, 3, nil, []string{"b", "b", "a"}, false},
		{"preferred honoured", map[string]int{"a": 2, "b": 2}, 2, map[int]string{0: "b", 1: "b"}, []string{"b", "b"}, false},
		{"preferred dead ignored", map[string]int{"a": 2}, 1, map[int]string{0: "zz"}, []string{"a"}, false},
		{"not enough", map[string]int{"a": 1, "b": 1}, 3, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := NewPool()
			for id, s := range tt.tms {
				p.Add(id, id+":1", s, "b1")
			}
			free := p.FreeSlots()
			got, err := p.Allocate(tt.n, tt.preferred)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if err != nil {
				if p.FreeSlots() != free {
					t.Fatalf("failed allocation took slots")
				}
				return
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Allocate = %v, want %v", got, tt.want)
			}
			if p.FreeSlots() != free-tt.n {
				t.Fatalf("free = %d, want %d", p.FreeSlots(), free-tt.n)
			}
			p.Release(got)
			if p.FreeSlots() != free {
				t.Fatalf("after release free = %d, want %d", p.FreeSlots(), free)
			}
		})
	}
}

func TestDeadTaskManagerOffersNothing(t *testing.T) {
	p := NewPool()
	p.Add("a", "a:1", 4, "")
	p.Get("a").Alive = false
	if _, err := p.Allocate(1, nil); err == nil {
		t.Fatal("allocated a slot of a dead task manager")
	}
}
