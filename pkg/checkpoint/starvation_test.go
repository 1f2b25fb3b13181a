package checkpoint

import (
	"strings"
	"testing"
)

// TestStarvationDetector feeds series of completed checkpoints and checks the state
// after each, one character per sample: '.' no warning, 'O' onset, '+' the warning
// holds, 'E' it ended.
func TestStarvationDetector(t *testing.T) {
	cfg := StarvationConfig{Window: 5, MinGrowth: 0.25, MinPendingBytes: 100}
	tests := []struct {
		name        string
		pending     []int64
		incremental []int64
		want        string
	}{
		{"both grow steadily", []int64{100, 200, 300, 400, 500}, []int64{10, 20, 30, 40, 50}, "....O"},
		{"a window needs five checkpoints", []int64{100, 200, 300, 400}, []int64{10, 20, 30, 40}, "...."},
		{"pending grows, incremental shrinks", []int64{100, 200, 300, 400, 500}, []int64{50, 40, 30, 20, 10}, "....."},
		{"pending grows, incremental flat", []int64{100, 200, 300, 400, 500}, []int64{30, 30, 30, 30, 30}, "....."},
		{"incremental grows, pending flat", []int64{500, 500, 500, 500, 500}, []int64{10, 20, 30, 40, 50}, "....."},
		{"one dip of pending is noise", []int64{100, 200, 150, 300, 400}, []int64{10, 12, 11, 15, 20}, "....O"},
		{"two dips are no trend", []int64{100, 200, 150, 300, 250}, []int64{10, 20, 30, 40, 50}, "....."},
		{"a single jump is no trend", []int64{0, 0, 0, 0, 1000}, []int64{10, 20, 30, 40, 50}, "....."},
		{"noisy incremental sizes rising on the whole", []int64{100, 200, 300, 400, 500}, []int64{10, 30, 15, 35, 25}, "....O"},
		{"small pending debt", []int64{10, 20, 30, 40, 50}, []int64{10, 20, 30, 40, 50}, "....."},
		{"growth under MinGrowth", []int64{1000, 1010, 1020, 1030, 1040}, []int64{10, 20, 30, 40, 50}, "....."},
		{"growth from zero", []int64{0, 100, 200, 300, 400}, []int64{10, 20, 30, 40, 50}, "....O"},
		{
			"once per onset, held until pending stops growing",
			[]int64{100, 200, 300, 400, 500, 600, 700, 700, 650, 600, 550, 500},
			[]int64{10, 20, 30, 40, 50, 50, 50, 50, 50, 50, 50, 50},
			"....O++++E..",
		},
		{
			"incremental noise does not end it",
			[]int64{100, 200, 300, 400, 500, 600, 700},
			[]int64{10, 20, 30, 40, 50, 5, 5},
			"....O++",
		},
		{
			"ends when pending falls under the minimum",
			[]int64{100, 200, 300, 400, 500, 600, 50},
			[]int64{10, 20, 30, 40, 50, 60, 70},
			"....O+E",
		},
		{
			"a second onset after the end",
			[]int64{100, 200, 300, 400, 500, 50, 50, 50, 50, 100, 200, 300, 400},
			[]int64{10, 20, 30, 40, 50, 10, 10, 10, 10, 20, 30, 40, 50},
			"....OE.....O+",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := NewStarvationDetector(cfg)
			var got strings.Builder
			var since int64
			for i := range tt.pending {
				id := int64(i + 1)
				st := d.Observe(StarvationSample{CheckpointID: id, PendingCompactionBytes: tt.pending[i], IncrementalBytes: tt.incremental[i]})
				switch {
				case st.Onset:
					got.WriteByte('O')
					since = id
				case st.Ended:
					got.WriteByte('E')
				case st.Active:
					got.WriteByte('+')
				default:
					got.WriteByte('.')
				}
				if st.Onset && st.Ended || st.Ended && st.Active || st.Onset && !st.Active {
					t.Fatalf("checkpoint %d: inconsistent state %+v", id, st)
				}
				if (st.Active || st.Ended) && st.Since != since {
					t.Errorf("checkpoint %d: since %d, want %d", id, st.Since, since)
				}
				if st.Active && (st.Last.CheckpointID != id || st.First.CheckpointID != id-4) {
					t.Errorf("checkpoint %d: window %d..%d", id, st.First.CheckpointID, st.Last.CheckpointID)
				}
			}
			if got.String() != tt.want {
				t.Errorf("pending %v incremental %v: got %s, want %s", tt.pending, tt.incremental, got.String(), tt.want)
			}
		})
	}
}

// TestStarvationDetectorOrderAndReset: samples of checkpoints not newer than the last
// are ignored; Reset starts a new window and drops a warning without an end.
func TestStarvationDetectorOrderAndReset(t *testing.T) {
	d := NewStarvationDetector(StarvationConfig{MinPendingBytes: 1})
	if c := d.Config(); c.Window != DefaultStarvationWindow || c.MinGrowth != DefaultStarvationMinGrowth {
		t.Fatalf("defaults: %+v", c)
	}
	obs := func(id, pending, incremental int64) Starvation {
		return d.Observe(StarvationSample{CheckpointID: id, PendingCompactionBytes: pending, IncrementalBytes: incremental})
	}
	for i := int64(1); i <= 4; i++ {
		obs(i, i*100, i*10)
		if st := obs(i, 0, 0); st.Active || st.Onset {
			t.Fatalf("repeated checkpoint %d: %+v", i, st)
		}
	}
	if st := obs(3, 1000, 1000); st.Active {
		t.Fatalf("older checkpoint: %+v", st)
	}
	if st := obs(5, 500, 50); !st.Onset || st.Since != 5 || st.First.CheckpointID != 1 {
		t.Fatalf("fifth checkpoint: %+v, want the onset", st)
	}
	d.Reset()
	if st := d.State(); st.Active || st.Last.CheckpointID != 0 {
		t.Fatalf("after Reset: %+v", st)
	}
	for i := int64(6); i <= 9; i++ {
		if st := obs(i, i*100, i*10); st.Active || st.Ended {
			t.Fatalf("checkpoint %d after Reset: %+v", i, st)
		}
	}
	if st := obs(10, 1000, 100); !st.Onset {
		t.Fatalf("a full window after Reset: %+v, want the onset", st)
	}
	if w := NewStarvationDetector(StarvationConfig{Window: 2}).Config().Window; w != 3 {
		t.Fatalf("window 2 became %d, want 3", w)
	}
}
