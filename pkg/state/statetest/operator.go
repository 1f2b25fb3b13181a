package statetest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/protobuf/proto"
)

const (
	split = sluicev1.RedistributionMode_REDISTRIBUTION_MODE_SPLIT
	union = sluicev1.RedistributionMode_REDISTRIBUTION_MODE_UNION
)

func strs(bs [][]byte) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}

func testOperatorState(t *testing.T) {
	b := state.NewOperatorStateBackend()
	l, err := b.List("offsets", split)
	must(t, err)
	v := []byte("p0:10")
	l.Append(v)
	copy(v, "XXXXX") // stored as a copy
	l.Append([]byte("p1:20"))
	if got := strs(l.Get()); !slices.Equal(got, []string{"p0:10", "p1:20"}) {
		t.Fatalf("Get = %q", got)
	}
	l.Update([][]byte{[]byte("p0:11")})
	if got := strs(l.Get()); !slices.Equal(got, []string{"p0:11"}) {
		t.Fatalf("after Update = %q", got)
	}
	if again, err := b.List("offsets", sluicev1.RedistributionMode_REDISTRIBUTION_MODE_UNSPECIFIED); err != nil || again != l {
		t.Fatalf("re-open with UNSPECIFIED (= SPLIT): %v", err)
	}
	if _, err := b.List("offsets", union); !errors.Is(err, state.ErrWrongKind) {
		t.Fatalf("re-open with another mode: %v", err)
	}
	u, err := b.List("config", union)
	must(t, err)
	u.Append([]byte("c"))
	e, err := b.List("empty", split)
	must(t, err)
	e.Append([]byte("gone"))
	e.Clear()
	snap := b.Snapshot()
	// The snapshot is not affected by later updates.
	l.Append([]byte("later"))
	if len(snap) != 3 || snap[0].GetName() != "config" || snap[1].GetName() != "empty" || snap[2].GetName() != "offsets" {
		t.Fatalf("snapshot = %v", snap)
	}
	if got := strs(snap[2].GetEntries()); !slices.Equal(got, []string{"p0:11"}) {
		t.Fatalf("snapshot entries = %q", got)
	}
	r := state.NewOperatorStateBackend()
	must(t, r.Restore(snap))
	rl, err := r.List("offsets", split)
	must(t, err)
	if got := strs(rl.Get()); !slices.Equal(got, []string{"p0:11"}) {
		t.Fatalf("restored = %q", got)
	}
	if _, err := r.List("config", split); !errors.Is(err, state.ErrWrongKind) {
		t.Fatalf("restored union state opened as split: %v", err)
	}
	if _, err := r.List("", split); err == nil {
		t.Fatal("empty name accepted")
	}
}

// testRedistribute: 1 -> 3 -> 2 -> 1 subtasks through Redistribute and the operator
// backend; SPLIT loses and duplicates nothing and deals evenly, UNION gives everyone
// all entries of all old subtasks.
func testRedistribute(t *testing.T) {
	if Redistribute0 := state.Redistribute(nil, 0); Redistribute0 != nil {
		t.Fatal("Redistribute to 0 subtasks returned state")
	}
	rng := rand.New(rand.NewPCG(3, 3))
	for _, n := range []int{0, 1, 2, 5, 17, 100} {
		b := state.NewOperatorStateBackend()
		sl, err := b.List("split", split)
		must(t, err)
		ul, err := b.List("union", union)
		must(t, err)
		var splitAll []string
		for i := range n {
			e := fmt.Sprintf("s-%d", i)
			sl.Append([]byte(e))
			splitAll = append(splitAll, e)
		}
		for i := range rng.IntN(4) {
			ul.Append([]byte(fmt.Sprintf("u-%d", i)))
		}
		old := [][]*sluicev1.OperatorListState{b.Snapshot()}
		for _, p := range []int{3, 2, 1, 4} {
			next := state.Redistribute(old, p)
			if again := state.Redistribute(old, p); !equalStates(next, again) {
				t.Fatalf("n=%d p=%d: Redistribute is not deterministic", n, p)
			}
			if len(next) != p {
				t.Fatalf("n=%d: %d subtasks, want %d", n, len(next), p)
			}
			var unionAll []string
			for _, sub := range old {
				for _, s := range sub {
					if s.GetName() == "union" {
						unionAll = append(unionAll, strs(s.GetEntries())...)
					}
				}
			}
			var gotSplit []string
			minShare, maxShare := n+1, -1
			var snaps [][]*sluicev1.OperatorListState
			for i, sub := range next {
				if len(sub) != 2 || sub[0].GetName() != "split" || sub[1].GetName() != "union" {
					t.Fatalf("n=%d p=%d subtask %d: states %v", n, p, i, sub)
				}
				if sub[0].GetMode() != split || sub[1].GetMode() != union {
					t.Fatalf("modes %v %v", sub[0].GetMode(), sub[1].GetMode())
				}
				share := strs(sub[0].GetEntries())
				gotSplit = append(gotSplit, share...)
				minShare, maxShare = min(minShare, len(share)), max(maxShare, len(share))
				if got := strs(sub[1].GetEntries()); !slices.Equal(got, unionAll) {
					t.Fatalf("n=%d p=%d subtask %d: union has %q, want %q", n, p, i, got, unionAll)
				}
				// Through a backend, as the runtime does.
				ob := state.NewOperatorStateBackend()
				must(t, ob.Restore(sub))
				snaps = append(snaps, ob.Snapshot())
			}
			slices.Sort(gotSplit)
			want := slices.Clone(splitAll)
			slices.Sort(want)
			if !slices.Equal(gotSplit, want) {
				t.Fatalf("n=%d p=%d: split entries %q, want %q (lost or duplicated)", n, p, gotSplit, want)
			}
			if maxShare-minShare > 1 {
				t.Fatalf("n=%d p=%d: uneven split %d..%d", n, p, minShare, maxShare)
			}
			old = snaps
		}
	}
	// Mixed modes: union wins; missing names on some subtasks are fine.
	old := [][]*sluicev1.OperatorListState{
		{{Name: "x", Mode: split, Entries: [][]byte{[]byte("a")}}},
		{{Name: "x", Mode: union, Entries: [][]byte{[]byte("b")}}, {Name: "y", Entries: [][]byte{[]byte("c")}}},
		nil,
	}
	next := state.Redistribute(old, 2)
	for i, sub := range next {
		if len(sub) != 2 || sub[0].GetMode() != union || !slices.Equal(strs(sub[0].GetEntries()), []string{"a", "b"}) {
			t.Fatalf("subtask %d: %v", i, sub)
		}
		if sub[1].GetMode() != split {
			t.Fatalf("unspecified mode became %v", sub[1].GetMode())
		}
	}
	if len(next[0][1].GetEntries())+len(next[1][1].GetEntries()) != 1 {
		t.Fatal("split entry lost or duplicated")
	}
}

func equalStates(a, b [][]*sluicev1.OperatorListState) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if !proto.Equal(a[i][j], b[i][j]) {
				return false
			}
		}
	}
	return true
}
