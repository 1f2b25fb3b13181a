//go:build cgo

package rocksdb_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// deltaFiles counts the delta files a handle references, and those it uploaded itself
// (named after its checkpoint).
func deltaFiles(h *sluicev1.KeyedStateHandle, id int64) (all, own int) {
	for _, f := range h.GetSharedFiles() {
		if strings.Contains(f.GetPath(), "-delta-") {
			all++
			if strings.Contains(f.GetPath(), fmt.Sprintf("-delta-%d-", id)) {
				own++
			}
		}
	}
	return all, own
}

// TestDeltaSnapshotsRestoreExactly: with deltas (the incremental default), checkpoints
// after the first upload only the changed entries of every state kind and timers; some
// are never confirmed, so the next delta repeats their changes. Every checkpoint
// restores to exactly the state it was taken at, whole and rescaled (clipped), and two
// subtasks' handles with deltas merge into one backend.
func TestDeltaSnapshotsRestoreExactly(t *testing.T) {
	for _, maxP := range []int{128, 1000} {
		t.Run(fmt.Sprintf("maxP=%d", maxP), func(t *testing.T) {
			store, _ := fileStore(t)
			cfg := rocksdb.Config{Incremental: true}
			b := newBackend(t, cfg, opts(t, maxP, all(maxP)))
			want := content{}
			var (
				hs    []*sluicev1.KeyedStateHandle
				wants []content
			)
			for id := int64(1); id <= 10; id++ {
				n := 400
				if id == 1 {
					n = 8000
				}
				mixed(t, b, want, uint64(100+id), 900, n)
				h := checkpoint(t, b, store, id)
				all, own := deltaFiles(h, id)
				t.Logf("checkpoint %d: %d deltas (%d new), uploaded %d of %d bytes", id, all, own, h.GetIncrementalSize(), h.GetFullSize())
				if id > 1 && own == 0 {
					t.Fatalf("checkpoint %d wrote no delta", id)
				}
				if id > 1 && h.GetIncrementalSize()*3 > h.GetFullSize() {
					t.Fatalf("checkpoint %d uploaded %d of %d bytes", id, h.GetIncrementalSize(), h.GetFullSize())
				}
				if id%4 != 2 { // 2, 6, 10 never confirmed
					b.NotifyCheckpointComplete(id)
				}
				hs, wants = append(hs, h), append(wants, want.clone())
			}
			for i, h := range hs {
				sameContent(t, fmt.Sprintf("checkpoint %d", i+1), contentOf(t, restore(t, cfg, opts(t, maxP, all(maxP)), store, h)), wants[i])
			}
			last, w := hs[len(hs)-1], wants[len(wants)-1]
			lo, hi := keygroup.Range{Start: 0, End: maxP/3 - 1}, keygroup.Range{Start: maxP / 3, End: maxP - 1}
			var halves []*sluicev1.KeyedStateHandle
			for i, r := range []keygroup.Range{lo, hi} {
				o := opts(t, maxP, r)
				o.Subtask = i
				h := restore(t, cfg, o, store, last)
				got := w.in(r)
				// A base after the restore, then deltas on it.
				for id := int64(11); id <= 13; id++ {
					mixed(t, h, got, uint64(200+10*i)+uint64(id), 900, 500)
					hh := checkpoint(t, h, store, id)
					h.NotifyCheckpointComplete(id)
					if _, own := deltaFiles(hh, id); (id == 11) != (own == 0) {
						t.Fatalf("%v, checkpoint %d: %d new deltas (want a base first, then deltas)", r, id, own)
					}
					if id == 13 {
						halves = append(halves, hh)
					}
				}
				w = mergeContent(w, r, got)
			}
			sameContent(t, "two subtasks' deltas merged", contentOf(t, restore(t, cfg, opts(t, maxP, all(maxP)), store, halves...)), w)
		})
	}
}

// mergeContent replaces the entries of key groups r in c by those of part.
func mergeContent(c content, r keygroup.Range, part content) content {
	d := content{}
	for k, v := range c {
		if !r.Contains(k.kg) {
			d[k] = v
		}
	}
	for k, v := range part {
		d[k] = v
	}
	return d
}

// TestDeltaNeedsBase: a state registered after the confirmed base, and a forced full
// snapshot, each make the next snapshot a base; deltas resume on it once confirmed.
func TestDeltaNeedsBase(t *testing.T) {
	store, _ := fileStore(t)
	cfg := rocksdb.Config{Incremental: true}
	b := newBackend(t, cfg, opts(t, 128, all(128)))
	want := content{}
	mixed(t, b, want, 1, 500, 3000)
	step := func(id int64) (*sluicev1.KeyedStateHandle, int) {
		h := checkpoint(t, b, store, id)
		b.NotifyCheckpointComplete(id)
		_, own := deltaFiles(h, id)
		return h, own
	}
	if _, own := step(1); own != 0 {
		t.Fatal("the first checkpoint is a delta")
	}
	mixed(t, b, want, 2, 500, 300)
	if _, own := step(2); own == 0 {
		t.Fatal("checkpoint 2 is not a delta")
	}
	id, err := b.Register(state.StateDesc{Name: "late", Kind: state.KindValue})
	must(t, err)
	b.SetCurrentKey([]byte("k"), keygroup.Of([]byte("k"), 128))
	must(t, b.Put(id, nil, []byte("x")))
	if _, own := step(3); own != 0 {
		t.Fatal("checkpoint 3, after a new state, is a delta")
	}
	mixed(t, b, want, 3, 500, 300)
	if _, own := step(4); own == 0 {
		t.Fatal("checkpoint 4 is not a delta")
	}
	b.ForceFullSnapshot()
	h5, own := step(5)
	if own != 0 || h5.GetIncrementalSize() != h5.GetFullSize() {
		t.Fatalf("forced full checkpoint 5: %d new deltas, uploaded %d of %d bytes", own, h5.GetIncrementalSize(), h5.GetFullSize())
	}
	mixed(t, b, want, 4, 500, 300)
	h6, own := step(6)
	if own == 0 {
		t.Fatal("checkpoint 6 is not a delta")
	}
	r := restore(t, cfg, opts(t, 128, all(128)), store, h6)
	late, err := r.Register(state.StateDesc{Name: "late", Kind: state.KindValue})
	must(t, err)
	r.SetCurrentKey([]byte("k"), keygroup.Of([]byte("k"), 128))
	if v, ok, err := r.Get(late, nil); err != nil || !ok || string(v) != "x" {
		t.Fatalf("state registered after a base: %q %v %v", v, ok, err)
	}
	sameContent(t, "checkpoint 6", contentOf(t, r), want)
}

// TestDeltaSteadyStateUploads: with deltas, over many checkpoints that each follow a
// change of 1% of the keys, the uploads stay within 1 + 1/DeltaRatio (plus the files'
// own overhead) of the bytes changed, bases included, whatever compaction does;
// without deltas (TestIncrementalSteadyStateUploads) they are several times that.
func TestDeltaSteadyStateUploads(t *testing.T) {
	const keys, n = 50_000, 300
	r := newUploadRun(t, rocksdb.Config{Incremental: true}, keys)
	r.checkpoint()
	for range 20 {
		r.change(0.01)
		r.checkpoint()
	}
	var changed, uploaded int64
	bases := 0
	for range n {
		changed += r.change(0.01)
		h := r.checkpoint()
		uploaded += h.GetIncrementalSize()
		if _, own := deltaFiles(h, r.next); own == 0 {
			bases++
		}
	}
	ratio := float64(uploaded) / float64(changed)
	t.Logf("%d checkpoints: uploaded %d bytes for %d changed (%.2fx), %d bases", n, uploaded, changed, ratio, bases)
	if bases == 0 || ratio > 1.7 {
		t.Fatalf("uploaded/changed %.2f with %d bases (want at most 1.7, and some bases)", ratio, bases)
	}
}
