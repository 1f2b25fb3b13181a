//go:build cgo

package rocksdb_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/fullsnap"
	"github.com/sluice-stream/sluice/pkg/state/heap"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// entry is one item of a backend's content: a value ('V', also reducing states), an
// encoded list ('L'), a map entry ('M'), or an event ('E') or processing ('P') timer.
type entry struct {
	kind  byte
	state string
	kg    int
	key   string
	ns    string
	uk    string
	ts    int64
}

// content is what a backend holds: entry -> value (empty for timers).
type content map[entry]string

func (c content) clone() content {
	d := make(content, len(c))
	for k, v := range c {
		d[k] = v
	}
	return d
}

func (c content) in(r keygroup.Range) content {
	d := content{}
	for k, v := range c {
		if r.Contains(k.kg) {
			d[k] = v
		}
	}
	return d
}

var (
	spStates = []state.StateDesc{
		{Name: "v", Kind: state.KindValue},
		{Name: "r", Kind: state.KindReducing},
		{Name: "l", Kind: state.KindList},
		{Name: "m", Kind: state.KindMap},
	}
	spNamespaces = []string{"", "w1"}
)

// mixed applies n random updates to every state kind, in two namespaces, and registers
// and deletes timers of both domains, on b and on c.
func mixed(t testing.TB, b state.KeyedBackend, c content, seed uint64, keys, n int) {
	t.Helper()
	rng := newRand(seed)
	ids := make([]state.StateID, len(spStates))
	for i, d := range spStates {
		var err error
		ids[i], err = b.Register(d)
		must(t, err)
	}
	for range n {
		k := fmt.Sprintf("key-%d", rng.IntN(keys))
		if rng.IntN(7) == 0 {
			k = string([]byte{0, byte(rng.IntN(keys)), 0xff}) // binary keys
		}
		kg := keygroup.Of([]byte(k), b.MaxParallelism())
		if !b.KeyGroups().Contains(kg) {
			continue
		}
		b.SetCurrentKey([]byte(k), kg)
		ns := spNamespaces[rng.IntN(len(spNamespaces))]
		e := entry{kg: kg, key: k, ns: ns}
		v := fmt.Sprintf("v%d", rng.Uint64()%1000)
		switch op := rng.IntN(12); op {
		case 0, 1:
			st := op // v or r
			must(t, b.Put(ids[st], []byte(ns), []byte(v)))
			e.kind, e.state = 'V', spStates[st].Name
			c[e] = v
		case 2:
			must(t, b.Delete(ids[0], []byte(ns)))
			e.kind, e.state = 'V', "v"
			delete(c, e)
		case 3, 4:
			must(t, b.ListAppend(ids[2], []byte(ns), []byte(v)))
			e.kind, e.state = 'L', "l"
			c[e] = string(state.AppendListElem([]byte(c[e]), []byte(v)))
		case 5:
			must(t, b.ListUpdate(ids[2], []byte(ns), [][]byte{[]byte(v), nil}))
			e.kind, e.state = 'L', "l"
			c[e] = string(state.EncodeList(nil, [][]byte{[]byte(v), nil}))
		case 6, 7:
			uk := fmt.Sprint("uk", rng.IntN(4))
			must(t, b.MapPut(ids[3], []byte(ns), []byte(uk), []byte(v)))
			e.kind, e.state, e.uk = 'M', "m", uk
			c[e] = v
		case 8:
			uk := fmt.Sprint("uk", rng.IntN(4))
			must(t, b.MapDelete(ids[3], []byte(ns), []byte(uk)))
			e.kind, e.state, e.uk = 'M', "m", uk
			delete(c, e)
		case 9:
			e.kind, e.ts = 'E', int64(rng.IntN(2000))-1000
			must(t, b.Timers().RegisterEventTimer(e.ts, []byte(k), kg, []byte(ns)))
			c[e] = ""
		case 10:
			e.kind, e.ts = 'P', int64(rng.IntN(2000))
			must(t, b.Timers().RegisterProcessingTimer(e.ts, []byte(k), kg, []byte(ns)))
			c[e] = ""
		case 11:
			e.kind, e.ts = 'E', int64(rng.IntN(2000))-1000
			must(t, b.Timers().DeleteEventTimer(e.ts, []byte(k), kg, []byte(ns)))
			delete(c, e)
		}
	}
}

// contentOf reads everything b holds; it fires the timers, so b is spent afterwards.
func contentOf(t testing.TB, b state.KeyedBackend) content {
	t.Helper()
	c := content{}
	for _, d := range spStates {
		id, err := b.Register(d)
		must(t, err)
		for _, ns := range spNamespaces {
			type kk struct {
				key string
				kg  int
			}
			var keys []kk
			must(t, b.Keys(id, []byte(ns), func(k []byte, kg int) error { keys = append(keys, kk{string(k), kg}); return nil }))
			for _, k := range keys {
				b.SetCurrentKey([]byte(k.key), k.kg)
				e := entry{state: d.Name, kg: k.kg, key: k.key, ns: ns}
				switch d.Kind {
				case state.KindValue, state.KindReducing:
					v, ok, err := b.Get(id, []byte(ns))
					must(t, err)
					if ok {
						e.kind = 'V'
						c[e] = string(v)
					}
				case state.KindList:
					var enc []byte
					must(t, b.ListGet(id, []byte(ns), func(v []byte) error { enc = state.AppendListElem(enc, v); return nil }))
					e.kind = 'L'
					c[e] = string(enc)
				case state.KindMap:
					must(t, b.MapIterate(id, []byte(ns), func(uk, v []byte) error {
						me := e
						me.kind, me.uk = 'M', string(uk)
						c[me] = string(v)
						return nil
					}))
				}
			}
		}
	}
	timer := func(kind byte) func(state.Timer) error {
		return func(tm state.Timer) error {
			c[entry{kind: kind, kg: tm.KeyGroup, key: string(tm.Key), ns: string(tm.Namespace), ts: tm.Timestamp}] = ""
			return nil
		}
	}
	must(t, b.Timers().AdvanceWatermark(math.MaxInt64, timer('E')))
	must(t, b.Timers().FireProcessingTimers(math.MaxInt64, timer('P')))
	return c
}

func sameContent(t testing.TB, what string, got, want content) {
	t.Helper()
	var diffs []string
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			diffs = append(diffs, fmt.Sprintf("%+v: got %q (present %v), want %q", k, g, ok, w))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("%+v: unexpected %q", k, g))
		}
	}
	if len(diffs) > 0 {
		slices.Sort(diffs)
		t.Fatalf("%s: %d differences (%d entries, want %d), e.g.:\n  %s", what, len(diffs), len(got), len(want), strings.Join(diffs[:min(len(diffs), 8)], "\n  "))
	}
	kinds := map[byte]int{}
	for k := range want {
		kinds[k.kind]++
	}
	if len(want) > 0 && len(kinds) < 5 {
		t.Fatalf("%s: the test covers too little: %v", what, kinds)
	}
}

// savepoint takes a savepoint of b in format and writes it as checkpoint id.
func savepoint(t testing.TB, b *rocksdb.Backend, store *blobstore.Store, id int64, format state.SnapshotFormat) *sluicev1.KeyedStateHandle {
	t.Helper()
	s, err := b.SnapshotSavepoint(id, format)
	must(t, err)
	h, err := s.Run(context.Background(), blobstoreFiles(store, id))
	must(t, err)
	return h
}

// handleFiles lists every file of h.
func handleFiles(h *sluicev1.KeyedStateHandle) []*sluicev1.StateFile {
	fs := append(slices.Clone(h.GetSharedFiles()), h.GetPrivateFiles()...)
	if h.GetFile() != nil {
		fs = append(fs, h.GetFile())
	}
	return fs
}

// checkSavepointHandle checks what a savepoint's handle of id references: nothing
// shared, every stored file a file of its own directory.
func checkSavepointHandle(t testing.TB, h *sluicev1.KeyedStateHandle, id int64, format state.SnapshotFormat) {
	t.Helper()
	if h == nil {
		t.Fatal("nil savepoint handle")
	}
	if len(h.GetSharedFiles()) != 0 {
		t.Fatalf("savepoint references %d shared files", len(h.GetSharedFiles()))
	}
	for _, f := range handleFiles(h) {
		if f.GetPath() != "" && !strings.HasPrefix(f.GetPath(), fmt.Sprintf("chk-%d/", id)) {
			t.Fatalf("savepoint %d references %s", id, f.GetPath())
		}
	}
	if h.GetIncrementalSize() != h.GetFullSize() {
		t.Fatalf("savepoint wrote %d of %d bytes", h.GetIncrementalSize(), h.GetFullSize())
	}
	switch format {
	case state.FormatCanonical:
		n := int(h.GetKeyGroupEnd() - h.GetKeyGroupStart() + 1)
		if h.GetBackend() != fullsnap.HandleBackend || h.GetFile() == nil || len(h.GetKeyGroupOffsets()) != n || len(h.GetPrivateFiles()) != 0 {
			t.Fatalf("canonical handle: backend %q, file %v, %d offsets for %d key groups, %d private files",
				h.GetBackend(), h.GetFile() != nil, len(h.GetKeyGroupOffsets()), n, len(h.GetPrivateFiles()))
		}
	case state.FormatNative:
		if h.GetBackend() != rocksdb.Name || h.GetFile() != nil || len(h.GetPrivateFiles()) < 3 {
			t.Fatalf("native handle: backend %q, file %v, %d private files", h.GetBackend(), h.GetFile() != nil, len(h.GetPrivateFiles()))
		}
	}
}

func heapRestore(t testing.TB, maxP int, r keygroup.Range, store *blobstore.Store, hs ...*sluicev1.KeyedStateHandle) *heap.Backend {
	t.Helper()
	b, err := heap.New(opts(t, maxP, r))
	must(t, err)
	t.Cleanup(func() { b.Close() })
	must(t, b.Restore(context.Background(), hs, blobstoreFiles(store, 0)))
	return b
}

// TestSavepointRoundTrips: savepoints in both formats restore into the backends that
// read them, at the same parallelism, split (1 -> 2) and merged (2 -> 1), with both
// key-group prefix lengths, taken by full and incremental backends.
func TestSavepointRoundTrips(t *testing.T) {
	type restorer struct {
		name    string
		restore func(t *testing.T, maxP int, r keygroup.Range, store *blobstore.Store, hs []*sluicev1.KeyedStateHandle) state.KeyedBackend
	}
	rocks := restorer{"rocksdb", func(t *testing.T, maxP int, r keygroup.Range, store *blobstore.Store, hs []*sluicev1.KeyedStateHandle) state.KeyedBackend {
		return restore(t, rocksdb.Config{}, opts(t, maxP, r), store, hs...)
	}}
	heapR := restorer{"heap", func(t *testing.T, maxP int, r keygroup.Range, store *blobstore.Store, hs []*sluicev1.KeyedStateHandle) state.KeyedBackend {
		return heapRestore(t, maxP, r, store, hs...)
	}}
	for _, tc := range []struct {
		format state.SnapshotFormat
		into   []restorer
	}{
		{state.FormatCanonical, []restorer{heapR, rocks}},
		{state.FormatNative, []restorer{rocks}},
	} {
		for _, maxP := range []int{128, 1000} {
			for _, inc := range []bool{false, true} {
				t.Run(fmt.Sprintf("%v/maxP=%d/incremental=%v", tc.format, maxP, inc), func(t *testing.T) {
					store, _ := fileStore(t)
					cfg := rocksdb.Config{Incremental: inc}
					// One subtask, and two (each half of the key groups).
					want := content{}
					one := newBackend(t, cfg, opts(t, maxP, all(maxP)))
					mixed(t, one, want, 1, 800, 12000)
					if inc {
						checkpoint(t, one, store, 1)
						one.NotifyCheckpointComplete(1)
					}
					h1 := savepoint(t, one, store, 2, tc.format)
					checkSavepointHandle(t, h1, 2, tc.format)
					mixed(t, one, want.clone(), 2, 800, 2000) // after the savepoint: not in it

					want2 := content{}
					var halves []*sluicev1.KeyedStateHandle
					for i := range 2 {
						o := opts(t, maxP, keygroup.RangeFor(i, 2, maxP))
						o.Subtask = i
						b := newBackend(t, cfg, o)
						mixed(t, b, want2, uint64(3+i), 800, 8000)
						h := savepoint(t, b, store, 3, tc.format)
						checkSavepointHandle(t, h, 3, tc.format)
						halves = append(halves, h)
					}
					for _, into := range tc.into {
						t.Run(into.name, func(t *testing.T) {
							sameContent(t, "same parallelism", contentOf(t, into.restore(t, maxP, all(maxP), store, []*sluicev1.KeyedStateHandle{h1})), want)
							for i := range 2 {
								r := keygroup.RangeFor(i, 2, maxP)
								sameContent(t, fmt.Sprintf("split, subtask %d", i), contentOf(t, into.restore(t, maxP, r, store, []*sluicev1.KeyedStateHandle{h1})), want.in(r))
							}
							sameContent(t, "merged", contentOf(t, into.restore(t, maxP, all(maxP), store, halves)), want2)
							mid := keygroup.Range{Start: maxP / 4, End: maxP * 3 / 4}
							sameContent(t, "merged into a middle range", contentOf(t, into.restore(t, maxP, mid, store, halves)), want2.in(mid))
						})
					}
				})
			}
		}
	}
}

// TestHeapSnapshotRestoresIntoRocksDB: the heap backend's snapshot (its savepoints)
// restores into RocksDB, with every state kind and timers of both domains, at both
// key-group prefix lengths, whole and split.
func TestHeapSnapshotRestoresIntoRocksDB(t *testing.T) {
	for _, maxP := range []int{128, 1000} {
		t.Run(fmt.Sprintf("maxP=%d", maxP), func(t *testing.T) {
			store, _ := fileStore(t)
			hb, err := heap.New(opts(t, maxP, all(maxP)))
			must(t, err)
			defer hb.Close()
			want := content{}
			mixed(t, hb, want, 7, 800, 12000)
			h := checkpoint(t, hb, store, 1)
			sameContent(t, "whole", contentOf(t, restore(t, rocksdb.Config{}, opts(t, maxP, all(maxP)), store, h)), want)
			r := keygroup.RangeFor(1, 3, maxP)
			sameContent(t, "a third", contentOf(t, restore(t, rocksdb.Config{}, opts(t, maxP, r), store, h)), want.in(r))
		})
	}
}

// TestSavepointLeavesTheIncrementalChain: savepoints between checkpoints of an
// incremental backend reference no shared file; the next checkpoint reuses the files
// of the latest confirmed checkpoint as if there had been no savepoint (the
// savepoint's completion notwithstanding), is not full, and no later checkpoint
// references a savepoint's file. A savepoint does not consume a forced full snapshot.
func TestSavepointLeavesTheIncrementalChain(t *testing.T) {
	for _, format := range []state.SnapshotFormat{state.FormatNative, state.FormatCanonical} {
		t.Run(format.String(), func(t *testing.T) {
			store, _ := fileStore(t)
			b := newBackend(t, rocksdb.Config{Incremental: true}, opts(t, 128, all(128)))
			want := content{}
			mixed(t, b, want, 11, 2000, 20000)
			h1 := checkpoint(t, b, store, 1)
			b.NotifyCheckpointComplete(1)
			mixed(t, b, want, 12, 2000, 300)

			sp := savepoint(t, b, store, 2, format)
			checkSavepointHandle(t, sp, 2, format)
			spFiles := map[string]bool{}
			for _, f := range handleFiles(sp) {
				if f.GetPath() != "" {
					spFiles[f.GetPath()] = true
				}
			}
			if len(spFiles) == 0 {
				t.Fatal("the savepoint wrote no file: the test is too small")
			}
			spWant := want.clone()
			b.NotifyCheckpointComplete(2) // the savepoint completed

			mixed(t, b, want, 13, 2000, 300)
			h3 := checkpoint(t, b, store, 3)
			if n := len(overlapping(h1, h3)); n == 0 || h3.GetIncrementalSize()*2 > h3.GetFullSize() {
				t.Fatalf("checkpoint 3 after the savepoint reuses %d files of checkpoint 1 and uploads %d of %d bytes",
					n, h3.GetIncrementalSize(), h3.GetFullSize())
			}
			b.NotifyCheckpointComplete(3)
			b.ForceFullSnapshot()
			savepoint(t, b, store, 4, format)
			b.NotifyCheckpointComplete(4)
			h5 := checkpoint(t, b, store, 5) // full: the savepoint did not take the force
			if n := len(overlapping(h3, h5)); n != 0 || h5.GetIncrementalSize() != h5.GetFullSize() {
				t.Fatalf("forced full checkpoint 5 reuses %d files of checkpoint 3; uploads %d of %d bytes", n, h5.GetIncrementalSize(), h5.GetFullSize())
			}
			b.NotifyCheckpointComplete(5)
			mixed(t, b, want, 14, 2000, 300)
			h6 := checkpoint(t, b, store, 6)
			for _, h := range []*sluicev1.KeyedStateHandle{h3, h5, h6} {
				for _, f := range handleFiles(h) {
					if spFiles[f.GetPath()] {
						t.Fatalf("a checkpoint references the savepoint's file %s", f.GetPath())
					}
				}
			}
			sameContent(t, "checkpoint 6", contentOf(t, restore(t, rocksdb.Config{}, opts(t, 128, all(128)), store, h6)), want)
			sameContent(t, "the savepoint", contentOf(t, restore(t, rocksdb.Config{Incremental: true}, opts(t, 128, all(128)), store, sp)), spWant)
		})
	}
}

func overlapping(a, b *sluicev1.KeyedStateHandle) []string {
	var common []string
	in := sharedPaths(a)
	for p := range sharedPaths(b) {
		if in[p] {
			common = append(common, p)
		}
	}
	return common
}

// TestSavepointWithLocalRecovery: a savepoint makes no local recovery copy, and its
// completion removes none.
func TestSavepointWithLocalRecovery(t *testing.T) {
	root := t.TempDir()
	store, _ := fileStore(t)
	cfg := lrConfig(root, true)
	b := newBackend(t, cfg, opts(t, 128, all(128)))
	mixed(t, b, content{}, 21, 500, 3000)
	checkpoint(t, b, store, 1)
	b.NotifyCheckpointComplete(1)
	for id, format := range map[int64]state.SnapshotFormat{2: state.FormatNative, 3: state.FormatCanonical} {
		savepoint(t, b, store, id, format)
		b.NotifyCheckpointComplete(id)
	}
	if got := localCopies(t, kgDir(root, all(128))); !slices.Equal(got, []int64{1}) {
		t.Fatalf("local copies after two savepoints: %v, want [1]", got)
	}
}

// TestSavepointIsolationAndRelease: a savepoint holds the state as of its synchronous
// phase, even when the backend changes and closes before its asynchronous phase; a
// released or cancelled one leaves nothing behind; an empty backend's is nil.
func TestSavepointIsolationAndRelease(t *testing.T) {
	for _, format := range []state.SnapshotFormat{state.FormatNative, state.FormatCanonical} {
		t.Run(format.String(), func(t *testing.T) {
			store, dir := fileStore(t)
			b, err := rocksdb.New(opts(t, 128, all(128)), rocksdb.Config{}, nil)
			must(t, err)
			want := content{}
			mixed(t, b, want, 31, 500, 5000)
			s, err := b.SnapshotSavepoint(1, format)
			must(t, err)
			snapWant := want.clone()
			mixed(t, b, want, 32, 500, 5000)
			released, err := b.SnapshotSavepoint(2, format)
			must(t, err)
			released.Release()
			cancelled, err := b.SnapshotSavepoint(3, format)
			must(t, err)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := cancelled.Run(ctx, blobstoreFiles(store, 3)); err == nil {
				t.Fatal("a cancelled savepoint succeeded")
			}
			inst := b.Dir()
			must(t, b.Close())
			h, err := s.Run(context.Background(), blobstoreFiles(store, 1))
			must(t, err)
			if _, err := os.Stat(inst); !os.IsNotExist(err) {
				t.Fatalf("instance directory left behind: %v", err)
			}
			for _, id := range []int{2, 3} {
				if ents, _ := os.ReadDir(filepath.Join(dir, fmt.Sprintf("chk-%d", id))); len(ents) != 0 {
					t.Fatalf("savepoint %d left %d files", id, len(ents))
				}
			}
			sameContent(t, "savepoint of a closed backend", contentOf(t, restore(t, rocksdb.Config{}, opts(t, 128, all(128)), store, h)), snapWant)

			empty := newBackend(t, rocksdb.Config{}, opts(t, 128, all(128)))
			register(t, empty)
			if h := savepoint(t, empty, store, 4, format); h != nil {
				t.Fatalf("savepoint of an empty backend: %v", h)
			}
		})
	}
}
