//go:build cgo

package rocksdb_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

// nativeBase says whether h's base is a native checkpoint (it has a MANIFEST) rather
// than a stage's chunks.
func nativeBase(h *sluicev1.KeyedStateHandle) bool {
	for _, f := range h.GetSharedFiles() {
		if strings.Contains(f.GetPath(), "-MANIFEST-") {
			return true
		}
	}
	return false
}

// TestDeltaSnapshotsRestoreExactly: with deltas (the incremental default), checkpoints
// after the first upload only the changed entries of every state kind and timers, and
// chunks of the next base, which then replaces the native one; some checkpoints are
// never confirmed, so the next delta repeats their changes and the next chunks are
// uploaded again. Every checkpoint restores to exactly the state it was taken at,
// whole and rescaled (clipped), and two subtasks' handles with deltas merge into one
// backend.
func TestDeltaSnapshotsRestoreExactly(t *testing.T) {
	defer rocksdb.SetMinChunk(rocksdb.SetMinChunk(4 << 10))
	for _, maxP := range []int{128, 1000} {
		t.Run(fmt.Sprintf("maxP=%d", maxP), func(t *testing.T) {
			store, _ := fileStore(t)
			cfg := rocksdb.Config{Incremental: true, BaseShare: 1}
			b := newBackend(t, cfg, opts(t, maxP, all(maxP)))
			want := content{}
			var (
				hs    []*sluicev1.KeyedStateHandle
				wants []content
			)
			switches := 0
			for id := int64(1); id <= 30; id++ {
				n := 400
				if id == 1 {
					n = 8000
				}
				mixed(t, b, want, uint64(100+id), 900, n)
				h := checkpoint(t, b, store, id)
				all, own := deltaFiles(h, id)
				if id > 1 && !nativeBase(h) && nativeBase(hs[len(hs)-1]) {
					switches++
				}
				t.Logf("checkpoint %d: %d deltas (%d new), native base %v, uploaded %d of %d bytes", id, all, own, nativeBase(h), h.GetIncrementalSize(), h.GetFullSize())
				if id > 1 && own == 0 {
					t.Fatalf("checkpoint %d wrote no delta", id)
				}
				if id > 1 && h.GetIncrementalSize()*2 > h.GetFullSize() {
					t.Fatalf("checkpoint %d uploaded %d of %d bytes", id, h.GetIncrementalSize(), h.GetFullSize())
				}
				if id%4 != 2 { // 2, 6, 10 never confirmed
					b.NotifyCheckpointComplete(id)
				}
				hs, wants = append(hs, h), append(wants, want.clone())
			}
			if switches == 0 || nativeBase(hs[len(hs)-1]) {
				t.Fatalf("no switch to a base of chunks (%d)", switches)
			}
			for i, h := range hs {
				if i%4 == 1 || i == len(hs)-1 {
					sameContent(t, fmt.Sprintf("checkpoint %d", i+1), contentOf(t, restore(t, cfg, opts(t, maxP, all(maxP)), store, h)), wants[i])
				}
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
// change of 1% of the keys, the uploads stay within about 1 + BaseShare times the
// bytes changed (plus the files' own overhead) in every window of 10 checkpoints,
// bases of chunks included, whatever compaction does (without deltas,
// TestIncrementalSteadyStateUploads, they are several times that); the last
// checkpoint restores every value.
func TestDeltaSteadyStateUploads(t *testing.T) {
	const keys, n = 50_000, 300
	r := newUploadRun(t, rocksdb.Config{Incremental: true, WriteBufferSize: 1 << 20}, keys)
	r.checkpoint()
	for range 20 {
		r.change(0.01)
		r.checkpoint()
	}
	var changed, uploaded, wc, wu int64
	var h *sluicev1.KeyedStateHandle
	switches, worst := 0, 0.0
	for i := range n {
		c := r.change(0.01)
		prev := h
		h = r.checkpoint()
		changed, uploaded = changed+c, uploaded+h.GetIncrementalSize()
		wc, wu = wc+c, wu+h.GetIncrementalSize()
		if i%10 == 9 {
			worst, wc, wu = max(worst, float64(wu)/float64(wc)), 0, 0
		}
		if prev != nil && !nativeBase(h) && nativeBase(prev) || prev != nil && !nativeBase(h) && firstChunk(h) != firstChunk(prev) {
			switches++
		}
	}
	ratio := float64(uploaded) / float64(changed)
	t.Logf("%d checkpoints: uploaded %d bytes for %d changed (%.2fx, windows of 10 at most %.2fx), %d switches to a new base", n, uploaded, changed, ratio, worst, switches)
	if switches == 0 || ratio > 1.8 || worst > 2 {
		t.Fatalf("uploaded/changed %.2f, windows of 10 at most %.2f, %d switches (want at most 1.8 and 2.0, and a switch)", ratio, worst, switches)
	}
	b := restore(t, rocksdb.Config{Incremental: true}, opts(t, 128, all(128)), r.store, h)
	for i, k := range r.keys {
		b.SetCurrentKey(k, r.kgs[i])
		v, ok, err := b.Get(r.id, nil)
		if err != nil || !ok || string(v) != r.want[i] {
			t.Fatalf("key %s restored as %x (present %v, %v), want %x", k, v, ok, err, r.want[i])
		}
	}
}

// firstChunk is the path of the first chunk h references ("" if none).
func firstChunk(h *sluicev1.KeyedStateHandle) string {
	for _, f := range h.GetSharedFiles() {
		if strings.Contains(f.GetPath(), "-base-") {
			return f.GetPath()
		}
	}
	return ""
}

// TestDeltaLocalRecovery: with local recovery, the copies of delta checkpoints hold
// the base (native, then after a switch the chunks) and every delta, so a new backend
// restores the latest one without reading an SST file remotely, whichever base it has.
func TestDeltaLocalRecovery(t *testing.T) {
	defer rocksdb.SetMinChunk(rocksdb.SetMinChunk(4 << 10))
	root := t.TempDir()
	cfg := lrConfig(root, true)
	cfg.BaseShare = 1
	store, _ := fileStore(t)
	b := newBackend(t, cfg, opts(t, 128, all(128)))
	m := newModel()
	rng := newRand(77)
	write(t, b, m, rng, 1000, 10000)
	sawNative, sawChunks := false, false
	for id := int64(1); id <= 25; id++ {
		write(t, b, m, rng, 1000, 300)
		h := checkpoint(t, b, store, id)
		b.NotifyCheckpointComplete(id)
		if id%6 != 0 && id != 25 {
			continue
		}
		native := nativeBase(h)
		sawNative, sawChunks = sawNative || native, sawChunks || !native
		r := newBackend(t, cfg, restoreOpts(t, all(128), id))
		cr := newCountingReader(store)
		must(t, r.Restore(context.Background(), []*sluicev1.KeyedStateHandle{h}, cr))
		st := r.LastRestore()
		if st.LocalCheckpointID != id || st.Fallback != "" || cr.read(sstPath) != 0 {
			t.Fatalf("checkpoint %d (native base %v): %+v, %d SST bytes read remotely", id, native, st, cr.read(sstPath))
		}
		check(t, fmt.Sprintf("checkpoint %d", id), r, m.clone())
		must(t, r.Close())
	}
	if !sawNative || !sawChunks {
		t.Fatalf("restored a native base %v, a base of chunks %v: want both", sawNative, sawChunks)
	}
}

// TestDeltaChainKeepsWhatItNeeds: after every confirmed checkpoint, every file of the
// checkpoint storage that the checkpoint does not reference is deleted (the chain
// retaining one checkpoint), through native bases, staged chunks and switches to bases
// of chunks; each checkpoint still restores exactly, and what the storage holds stays
// bounded.
func TestDeltaChainKeepsWhatItNeeds(t *testing.T) {
	defer rocksdb.SetMinChunk(rocksdb.SetMinChunk(4 << 10))
	store, dir := fileStore(t)
	cfg := rocksdb.Config{Incremental: true, BaseShare: 2}
	b := newBackend(t, cfg, opts(t, 128, all(128)))
	want := content{}
	mixed(t, b, want, 900, 900, 8000)
	switches, most := 0, 0
	var prev *sluicev1.KeyedStateHandle
	for id := int64(1); id <= 40; id++ {
		mixed(t, b, want, 900+uint64(id), 900, 300)
		h := checkpoint(t, b, store, id)
		b.NotifyCheckpointComplete(id)
		if prev != nil && !nativeBase(h) && (nativeBase(prev) || firstChunk(h) != firstChunk(prev)) {
			switches++
		}
		prev = h
		keep := map[string]bool{}
		for _, f := range append(h.GetSharedFiles(), h.GetPrivateFiles()...) {
			if f.GetPath() != "" {
				keep[filepath.ToSlash(f.GetPath())] = true
			}
		}
		n := 0
		must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			rel, err := filepath.Rel(dir, p)
			if err != nil {
				return err
			}
			if !keep[filepath.ToSlash(rel)] {
				return os.Remove(p)
			}
			n++
			return nil
		}))
		most = max(most, n)
		if id%8 == 0 || id == 40 {
			sameContent(t, fmt.Sprintf("checkpoint %d", id), contentOf(t, restore(t, cfg, opts(t, 128, all(128)), store, h)), want.clone())
		}
	}
	t.Logf("%d switches to a new base; at most %d files in the checkpoint storage", switches, most)
	if switches < 2 {
		t.Fatalf("%d switches, want at least 2", switches)
	}
}

// TestDeltaFewChanges: with very few changes per checkpoint, stages still end before
// maxDeltas deltas pile up (each checkpoint adds at least 1/256 of the state to its
// stage), so no checkpoint after the first is a native base, which would upload the
// whole state at once.
func TestDeltaFewChanges(t *testing.T) {
	r := newUploadRun(t, rocksdb.Config{Incremental: true}, 5000)
	first := r.checkpoint()
	switches, most := 0, 0
	prev := first
	for id := r.next + 1; id <= r.next+1100; id++ {
		r.put(r.rng.IntN(len(r.keys)))
		h := checkpoint(t, r.b, r.store, id)
		r.b.NotifyCheckpointComplete(id)
		if nativeBase(h) && !nativeBase(prev) {
			t.Fatalf("checkpoint %d is a native base (after %d switches)", id, switches)
		}
		if !nativeBase(h) && (nativeBase(prev) || firstChunk(h) != firstChunk(prev)) {
			switches++
		}
		all, _ := deltaFiles(h, id)
		most, prev = max(most, all), h
	}
	t.Logf("1100 checkpoints of one change each: %d switches, at most %d deltas and chunks", switches, most)
	if switches < 2 || most > 1024 {
		t.Fatalf("%d switches to a new base (want at least 2), at most %d deltas and chunks", switches, most)
	}
}

// TestDeltaHotKeys: keys written many times between two checkpoints count once, with
// their latest value, both in the delta and in what the checkpoint adds to the next
// base: the uploads follow the entries changed, not the writes.
func TestDeltaHotKeys(t *testing.T) {
	r := newUploadRun(t, rocksdb.Config{Incremental: true}, 20_000)
	r.checkpoint()
	var changed, uploaded int64
	for range 60 {
		hot := make([]int, 200)
		for i := range hot {
			hot[i] = r.rng.IntN(len(r.keys))
		}
		var c int64
		for range 50 {
			for _, i := range hot {
				c = r.put(i) // the same bytes every time: count the keys once
			}
		}
		changed += c * int64(len(hot))
		uploaded += r.checkpoint().GetIncrementalSize()
	}
	ratio := float64(uploaded) / float64(changed)
	t.Logf("60 checkpoints of 200 keys written 50 times each: uploaded %d bytes for %d changed (%.2fx)", uploaded, changed, ratio)
	if ratio > 2 {
		t.Fatalf("uploaded %.2fx the entries changed (want at most 2)", ratio)
	}
}
