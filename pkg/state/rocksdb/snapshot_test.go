//go:build cgo

package rocksdb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/heap"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

const job = "job-1"

// fileStore opens a file:// blob store in a temporary directory and returns the job's
// view of it and the job directory on disk.
func fileStore(t testing.TB) (*blobstore.Store, string) {
	t.Helper()
	root := t.TempDir()
	s, err := blobstore.Open(context.Background(), "file://"+root)
	must(t, err)
	t.Cleanup(func() { s.Close() })
	js, err := s.Sub(blobstore.JobDir(job))
	must(t, err)
	return js, filepath.Join(root, job)
}

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed+1)) }

func blobstoreFiles(store *blobstore.Store, id int64) blobstore.StateFiles {
	return blobstore.StateFiles{Store: store, ID: id, Prefix: "v1-s0-"}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func opts(t testing.TB, maxP int, r keygroup.Range) state.KeyedOptions {
	return state.KeyedOptions{OperatorUID: "count", KeyGroups: r, MaxParallelism: maxP, LocalDir: t.TempDir()}
}

func all(maxP int) keygroup.Range { return keygroup.Range{Start: 0, End: maxP - 1} }

func newBackend(t testing.TB, cfg rocksdb.Config, o state.KeyedOptions) *rocksdb.Backend {
	t.Helper()
	b, err := rocksdb.New(o, cfg, nil)
	must(t, err)
	t.Cleanup(func() { b.Close() })
	return b
}

// checkpoint snapshots b for checkpoint id and uploads it the way a task manager does.
func checkpoint(t testing.TB, b state.KeyedBackend, store *blobstore.Store, id int64) *sluicev1.KeyedStateHandle {
	t.Helper()
	s, err := b.Snapshot(id)
	must(t, err)
	h, err := s.Run(context.Background(), blobstore.StateFiles{Store: store, ID: id, Prefix: "v1-s0-"})
	must(t, err)
	return h
}

func restore(t testing.TB, cfg rocksdb.Config, o state.KeyedOptions, store *blobstore.Store, hs ...*sluicev1.KeyedStateHandle) *rocksdb.Backend {
	t.Helper()
	b := newBackend(t, cfg, o)
	must(t, b.Restore(context.Background(), hs, blobstore.StateFiles{Store: store}))
	return b
}

// model is the expected content of the states "v" (value), "l" (list), "m" (map) and
// the event-time timers.
type model struct {
	v      map[string]string
	l      map[string][]string
	m      map[string]map[string]string
	timers map[string]bool // "<ts>/<key>"
}

func newModel() *model {
	return &model{v: map[string]string{}, l: map[string][]string{}, m: map[string]map[string]string{}, timers: map[string]bool{}}
}

func (m *model) clone() *model {
	c := newModel()
	for k, v := range m.v {
		c.v[k] = v
	}
	for k, v := range m.l {
		c.l[k] = slices.Clone(v)
	}
	for k, v := range m.m {
		c.m[k] = map[string]string{}
		for uk, uv := range v {
			c.m[k][uk] = uv
		}
	}
	for k := range m.timers {
		c.timers[k] = true
	}
	return c
}

type ids struct{ v, l, m state.StateID }

func register(t testing.TB, b state.KeyedBackend) ids {
	t.Helper()
	var r ids
	var err error
	r.v, err = b.Register(state.StateDesc{Name: "v", Kind: state.KindValue})
	must(t, err)
	r.l, err = b.Register(state.StateDesc{Name: "l", Kind: state.KindList})
	must(t, err)
	r.m, err = b.Register(state.StateDesc{Name: "m", Kind: state.KindMap})
	must(t, err)
	return r
}

func setKey(b state.KeyedBackend, k string) int {
	kg := keygroup.Of([]byte(k), b.MaxParallelism())
	b.SetCurrentKey([]byte(k), kg)
	return kg
}

// write applies n random updates to b and m, keys key-0..key-<keys-1> of b's key
// groups.
func write(t testing.TB, b state.KeyedBackend, m *model, rng *rand.Rand, keys, n int) {
	t.Helper()
	id := register(t, b)
	for range n {
		k := fmt.Sprintf("key-%d", rng.IntN(keys))
		if !b.KeyGroups().Contains(keygroup.Of([]byte(k), b.MaxParallelism())) {
			continue
		}
		kg := setKey(b, k)
		switch rng.IntN(10) {
		case 0, 1, 2, 3, 4:
			v := fmt.Sprintf("value-%d-%d", rng.IntN(1000), rng.Uint64())
			must(t, b.Put(id.v, nil, []byte(v)))
			m.v[k] = v
		case 5:
			must(t, b.Delete(id.v, nil))
			delete(m.v, k)
		case 6:
			e := fmt.Sprint("e", rng.IntN(100))
			must(t, b.ListAppend(id.l, nil, []byte(e)))
			m.l[k] = append(m.l[k], e)
		case 7:
			uk, uv := fmt.Sprint("uk", rng.IntN(5)), fmt.Sprint("uv", rng.IntN(100))
			must(t, b.MapPut(id.m, nil, []byte(uk), []byte(uv)))
			if m.m[k] == nil {
				m.m[k] = map[string]string{}
			}
			m.m[k][uk] = uv
		case 8:
			must(t, b.Delete(id.m, nil))
			delete(m.m, k)
		case 9:
			ts := int64(rng.IntN(1000))
			must(t, b.Timers().RegisterEventTimer(ts, []byte(k), kg, nil))
			m.timers[fmt.Sprintf("%d/%s", ts, k)] = true
		}
	}
}

// check compares b with m (restricted to the key groups of b).
func check(t testing.TB, what string, b state.KeyedBackend, m *model) {
	t.Helper()
	id := register(t, b)
	mine := func(k string) bool { return b.KeyGroups().Contains(keygroup.Of([]byte(k), b.MaxParallelism())) }
	got := newModel()
	keys := map[string]bool{}
	for _, sid := range []state.StateID{id.v, id.l, id.m} {
		must(t, b.Keys(sid, nil, func(k []byte, _ int) error { keys[string(k)] = true; return nil }))
	}
	for k := range keys {
		setKey(b, k)
		if v, ok, err := b.Get(id.v, nil); err != nil {
			t.Fatal(err)
		} else if ok {
			got.v[k] = string(v)
		}
		must(t, b.ListGet(id.l, nil, func(v []byte) error { got.l[k] = append(got.l[k], string(v)); return nil }))
		must(t, b.MapIterate(id.m, nil, func(uk, uv []byte) error {
			if got.m[k] == nil {
				got.m[k] = map[string]string{}
			}
			got.m[k][string(uk)] = string(uv)
			return nil
		}))
	}
	want := newModel()
	for k, v := range m.v {
		if mine(k) {
			want.v[k] = v
		}
	}
	for k, v := range m.l {
		if mine(k) {
			want.l[k] = v
		}
	}
	for k, v := range m.m {
		if mine(k) {
			want.m[k] = v
		}
	}
	for k := range m.timers {
		if mine(k[strings.IndexByte(k, '/')+1:]) {
			want.timers[k] = true
		}
	}
	// Timers: fire them all (on a backend the test discards afterwards).
	must(t, b.Timers().AdvanceWatermark(math.MaxInt64, func(tm state.Timer) error {
		got.timers[fmt.Sprintf("%d/%s", tm.Timestamp, tm.Key)] = true
		return nil
	}))
	if fmt.Sprint(got.v) != fmt.Sprint(want.v) || fmt.Sprint(got.l) != fmt.Sprint(want.l) ||
		fmt.Sprint(got.m) != fmt.Sprint(want.m) || fmt.Sprint(got.timers) != fmt.Sprint(want.timers) {
		t.Fatalf("%s: restored state differs: %d values (want %d), %d lists (%d), %d maps (%d), %d timers (%d)", what,
			len(got.v), len(want.v), len(got.l), len(want.l), len(got.m), len(want.m), len(got.timers), len(want.timers))
	}
}

func sharedPaths(h *sluicev1.KeyedStateHandle) map[string]bool {
	ps := map[string]bool{}
	for _, f := range h.GetSharedFiles() {
		ps[f.GetPath()] = true
	}
	return ps
}

// sstPaths are the paths of h's shared SST files (a base's MANIFEST and CURRENT are
// shared files too, but never referenced by a later base).
func sstPaths(h *sluicev1.KeyedStateHandle) map[string]bool {
	ps := map[string]bool{}
	for _, f := range h.GetSharedFiles() {
		if strings.HasSuffix(f.GetPath(), ".sst") {
			ps[f.GetPath()] = true
		}
	}
	return ps
}

// TestFileStoreRoundTrip: checkpoints to a file:// blob store and restores from them,
// full and incremental; the incremental chain references the first checkpoint's files.
func TestFileStoreRoundTrip(t *testing.T) {
	for _, inc := range []bool{false, true} {
		t.Run(fmt.Sprintf("incremental=%v", inc), func(t *testing.T) {
			cfg := rocksdb.Config{Incremental: inc}
			store, dir := fileStore(t)
			o := opts(t, 128, all(128))
			b := newBackend(t, cfg, o)
			m := newModel()
			rng := rand.New(rand.NewPCG(1, 2))
			write(t, b, m, rng, 2000, 20000)
			m1 := m.clone()
			h1 := checkpoint(t, b, store, 1)
			b.NotifyCheckpointComplete(1)
			write(t, b, m, rng, 2000, 2000)
			m2 := m.clone()
			h2 := checkpoint(t, b, store, 2)
			write(t, b, m, rng, 2000, 2000) // after the checkpoint: not restored

			for _, h := range []*sluicev1.KeyedStateHandle{h1, h2} {
				if h.GetBackend() != rocksdb.Name || len(h.GetPrivateFiles()) == 0 || h.GetFile() != nil {
					t.Fatalf("handle: %v", h)
				}
				for _, f := range h.GetSharedFiles() {
					if !strings.HasPrefix(f.GetPath(), "shared/") {
						t.Fatalf("shared file %q is not under shared/", f.GetPath())
					}
					if _, err := os.Stat(filepath.Join(dir, f.GetPath())); err != nil {
						t.Fatal(err)
					}
				}
			}
			if inc {
				if len(h1.GetSharedFiles()) == 0 {
					t.Fatal("incremental handle without shared files")
				}
				reused := 0
				old := sharedPaths(h1)
				for p := range sharedPaths(h2) {
					if old[p] {
						reused++
					}
				}
				if reused == 0 || h2.GetIncrementalSize() >= h2.GetFullSize() {
					t.Fatalf("second checkpoint reused %d files; uploaded %d of %d bytes", reused, h2.GetIncrementalSize(), h2.GetFullSize())
				}
				t.Logf("checkpoint 2 reuses %d of %d shared files: uploaded %d of %d bytes", reused, len(h2.GetSharedFiles()), h2.GetIncrementalSize(), h2.GetFullSize())
			} else if len(h1.GetSharedFiles()) != 0 || h2.GetIncrementalSize() != h2.GetFullSize() {
				t.Fatalf("full snapshots: %d shared files, %d of %d bytes", len(h1.GetSharedFiles()), h2.GetIncrementalSize(), h2.GetFullSize())
			}
			check(t, "checkpoint 2", restore(t, cfg, opts(t, 128, all(128)), store, h2), m2)
			check(t, "checkpoint 1", restore(t, cfg, opts(t, 128, all(128)), store, h1), m1)
			// Rescaled: two subtasks, each from the one handle.
			for i := range 2 {
				r := keygroup.RangeFor(i, 2, 128)
				check(t, fmt.Sprintf("subtask %d of 2", i), restore(t, cfg, opts(t, 128, r), store, h2), m2)
			}
		})
	}
}

// TestIncrementalUploadsChangedBytes: after a checkpoint of 100k keys, changing 1% of
// them makes the next checkpoint upload about the bytes changed, not the state. A
// checkpoint also uploads the files that background compactions wrote since the one
// before, whenever they finish (BenchmarkSnapshot measures that steady state).
func TestIncrementalUploadsChangedBytes(t *testing.T) {
	const keys, valueSize = 100_000, 100
	store, _ := fileStore(t)
	b := newBackend(t, rocksdb.Config{Incremental: true}, opts(t, 128, all(128)))
	id := register(t, b)
	rng := rand.New(rand.NewPCG(3, 4))
	val := make([]byte, valueSize)
	put := func(i int) int {
		k := fmt.Appendf(nil, "key-%08d", i)
		b.SetCurrentKey(k, keygroup.Of(k, 128))
		for j := range val {
			val[j] = byte(rng.Uint32()) // random: compression does not hide the bytes
		}
		must(t, b.Put(id.v, nil, val))
		return len(k) + len(val)
	}
	for i := range keys {
		put(i)
	}
	h1 := checkpoint(t, b, store, 1)
	b.NotifyCheckpointComplete(1)
	t.Logf("checkpoint 1: %d keys, uploaded %d bytes (full size %d)", keys, h1.GetIncrementalSize(), h1.GetFullSize())
	var totalChanged, totalUploaded int64
	for round := int64(2); round <= 12; round++ {
		changed := 0
		for range keys / 100 {
			changed += put(rng.IntN(keys))
		}
		h := checkpoint(t, b, store, round)
		b.NotifyCheckpointComplete(round)
		ratio := float64(h.GetIncrementalSize()) / float64(changed)
		totalChanged += int64(changed)
		totalUploaded += h.GetIncrementalSize()
		t.Logf("checkpoint %d: changed 1%% of the keys (%d bytes of keys and values): uploaded %d bytes (%.2fx the bytes changed), full size %d, %d shared files, %d at level 0",
			round, changed, h.GetIncrementalSize(), ratio, h.GetFullSize(), len(h.GetSharedFiles()), b.Properties().NumFilesAtLevel0)
		if round == 2 && (h.GetIncrementalSize()*10 > h1.GetIncrementalSize() || ratio > 2) {
			t.Fatalf("checkpoint 2 uploaded %d bytes for %d changed (checkpoint 1: %d)", h.GetIncrementalSize(), changed, h1.GetIncrementalSize())
		}
	}
	t.Logf("checkpoints 2-12: uploaded %d bytes for %d changed: %.2fx on average",
		totalUploaded, totalChanged, float64(totalUploaded)/float64(totalChanged))
}

// TestCorruptSharedFileFailsRestore: a flipped byte or a truncation in a shared file in
// the blob store fails the restore with ErrCorrupt naming the file.
func TestCorruptSharedFileFailsRestore(t *testing.T) {
	store, dir := fileStore(t)
	cfg := rocksdb.Config{Incremental: true}
	b := newBackend(t, cfg, opts(t, 128, all(128)))
	write(t, b, newModel(), rand.New(rand.NewPCG(5, 6)), 500, 5000)
	h := checkpoint(t, b, store, 1)
	f := h.GetSharedFiles()[len(h.GetSharedFiles())-1]
	path := filepath.Join(dir, f.GetPath())
	orig, err := os.ReadFile(path)
	must(t, err)
	for _, bad := range [][]byte{
		append(append(bytes.Clone(orig[:len(orig)/2]), orig[len(orig)/2]^1), orig[len(orig)/2+1:]...),
		orig[:len(orig)-10],
	} {
		must(t, os.WriteFile(path, bad, 0o644))
		r := newBackend(t, cfg, opts(t, 128, all(128)))
		err := r.Restore(context.Background(), []*sluicev1.KeyedStateHandle{h}, blobstore.StateFiles{Store: store})
		if !errors.Is(err, state.ErrCorrupt) || !strings.Contains(err.Error(), f.GetPath()) {
			t.Fatalf("restore with a corrupt shared file: %v", err)
		}
		// The backend is to be discarded; using it fails cleanly.
		setKey(r, "k")
		if _, _, err := r.Get(0, nil); !errors.Is(err, state.ErrClosed) {
			t.Fatalf("Get after a failed restore: %v", err)
		}
		if _, err := r.Register(state.StateDesc{Name: "x", Kind: state.KindValue}); !errors.Is(err, state.ErrClosed) {
			t.Fatalf("Register after a failed restore: %v", err)
		}
		if _, err := r.Snapshot(2); !errors.Is(err, state.ErrClosed) {
			t.Fatalf("Snapshot after a failed restore: %v", err)
		}
		if err := r.Timers().RegisterEventTimer(1, []byte("k"), 0, nil); !errors.Is(err, state.ErrClosed) {
			t.Fatalf("timer after a failed restore: %v", err)
		}
		if p := r.Properties(); p.ColumnFamilies != 0 {
			t.Fatalf("properties after a failed restore: %+v", p)
		}
	}
	must(t, os.WriteFile(path, orig, 0o644))
	restore(t, cfg, opts(t, 128, all(128)), store, h)
}

// TestReuseOnlyConfirmedFiles: an incremental snapshot references only files of the
// latest checkpoint it was told completed; a forced full snapshot references none.
func TestReuseOnlyConfirmedFiles(t *testing.T) {
	store, _ := fileStore(t)
	b := newBackend(t, rocksdb.Config{Incremental: true}, opts(t, 128, all(128)))
	m := newModel()
	rng := rand.New(rand.NewPCG(7, 8))
	step := func(id int64) *sluicev1.KeyedStateHandle {
		write(t, b, m, rng, 300, 300)
		return checkpoint(t, b, store, id)
	}
	overlap := func(a, b *sluicev1.KeyedStateHandle) int {
		n := 0
		pa := sharedPaths(a)
		for p := range sharedPaths(b) {
			if pa[p] {
				n++
			}
		}
		return n
	}
	h1 := step(1)
	h2 := step(2) // 1 not confirmed: nothing reused
	if n := overlap(h1, h2); n != 0 {
		t.Fatalf("checkpoint 2 reuses %d files of the unconfirmed checkpoint 1", n)
	}
	b.NotifyCheckpointComplete(2)
	h3 := step(3)
	if n := overlap(h2, h3); n == 0 {
		t.Fatal("checkpoint 3 reuses nothing of the confirmed checkpoint 2")
	}
	b.NotifyCheckpointComplete(3)
	b.ForceFullSnapshot()
	h4 := step(4)
	if n := overlap(h3, h4); n != 0 || h4.GetIncrementalSize() != h4.GetFullSize() {
		t.Fatalf("forced full checkpoint 4 reuses %d files; uploaded %d of %d bytes", n, h4.GetIncrementalSize(), h4.GetFullSize())
	}
	h5 := step(5) // the force applied once; 3 is still the confirmed one
	for p := range sharedPaths(h5) {
		if !sharedPaths(h3)[p] && !strings.Contains(p, "-0-5-") {
			t.Fatalf("checkpoint 5 references %s, neither its own nor one of checkpoint 3", p)
		}
	}
	// A completed checkpoint this backend has no record of (its snapshot failed, say)
	// subsumes 3: 3's files may be gone, so none is reused.
	b.NotifyCheckpointComplete(6)
	h7 := step(7)
	if n := overlap(h3, h7) + overlap(h5, h7); n != 0 {
		t.Fatalf("checkpoint 7 reuses %d files of checkpoints subsumed by 6", n)
	}
	check(t, "checkpoint 7", restore(t, rocksdb.Config{}, opts(t, 128, all(128)), store, h7), m)
}

// TestRestoreReusesRegisteredSharedFiles: after a restore the first incremental
// snapshot references the restored checkpoint's shared files (registered by the
// jobmanager), never its private ones, and none of them in NoClaim mode.
func TestRestoreReusesRegisteredSharedFiles(t *testing.T) {
	store, _ := fileStore(t)
	m := newModel()
	a := newBackend(t, rocksdb.Config{Incremental: true}, opts(t, 128, all(128)))
	write(t, a, m, rand.New(rand.NewPCG(9, 10)), 1000, 10000)
	h1 := checkpoint(t, a, store, 1)

	b := restore(t, rocksdb.Config{Incremental: true}, opts(t, 128, all(128)), store, h1)
	h2 := checkpoint(t, b, store, 2)
	if !maps(sstPaths(h1)).subsetOf(sharedPaths(h2)) || h2.GetIncrementalSize()*4 > h2.GetFullSize() {
		t.Fatalf("after a restore: %d of checkpoint 1's shared files reused, %d of %d bytes uploaded",
			len(sharedPaths(h1)), h2.GetIncrementalSize(), h2.GetFullSize())
	}
	privates := map[string]bool{}
	for _, f := range h1.GetPrivateFiles() {
		privates[f.GetPath()] = f.GetPath() != ""
	}
	for _, f := range append(h2.GetPrivateFiles(), h2.GetSharedFiles()...) {
		if privates[f.GetPath()] {
			t.Fatalf("checkpoint 2 references the private file %s of checkpoint 1", f.GetPath())
		}
	}
	check(t, "restored twice", restore(t, rocksdb.Config{}, opts(t, 128, all(128)), store, h2), m)

	c := restore(t, rocksdb.Config{Incremental: true, NoClaim: true}, opts(t, 128, all(128)), store, h1)
	h3 := checkpoint(t, c, store, 3)
	for p := range sharedPaths(h3) {
		if sharedPaths(h1)[p] {
			t.Fatalf("NoClaim: checkpoint 3 references %s of the restored checkpoint", p)
		}
	}
	// A full (all private) snapshot restored by an incremental backend: nothing reused.
	f := newBackend(t, rocksdb.Config{}, opts(t, 128, all(128)))
	write(t, f, newModel(), rand.New(rand.NewPCG(11, 12)), 100, 1000)
	hf := checkpoint(t, f, store, 4)
	d := restore(t, rocksdb.Config{Incremental: true}, opts(t, 128, all(128)), store, hf)
	if h5 := checkpoint(t, d, store, 5); h5.GetIncrementalSize() != h5.GetFullSize() {
		t.Fatalf("restored from a full snapshot: uploaded %d of %d bytes", h5.GetIncrementalSize(), h5.GetFullSize())
	}
}

type maps map[string]bool

func (a maps) subsetOf(b map[string]bool) bool {
	for k := range a {
		if !b[k] {
			return false
		}
	}
	return true
}

// TestRestoreMergesHandlesByStateName: handles whose states were registered in another
// order (so other column families) merge by state name; a heap full snapshot restores
// too (switching backends), clipped to the range.
func TestRestoreMergesHandlesByStateName(t *testing.T) {
	store, _ := fileStore(t)
	m := newModel()
	var hs []*sluicev1.KeyedStateHandle
	for i := range 2 {
		r := keygroup.RangeFor(i, 2, 128)
		b := newBackend(t, rocksdb.Config{Incremental: i == 1}, opts(t, 128, r))
		if i == 1 {
			// Registered in the reverse order: "m" gets state-0.
			for _, d := range []state.StateDesc{{Name: "m", Kind: state.KindMap}, {Name: "l", Kind: state.KindList}, {Name: "v", Kind: state.KindValue}} {
				_, err := b.Register(d)
				must(t, err)
			}
		}
		write(t, b, m, rand.New(rand.NewPCG(uint64(i), 13)), 1000, 12000)
		hs = append(hs, checkpoint(t, b, store, 1))
	}
	check(t, "merged", restore(t, rocksdb.Config{}, opts(t, 128, all(128)), store, hs...), m)
	check(t, "merged into a middle range", restore(t, rocksdb.Config{}, opts(t, 128, keygroup.Range{Start: 40, End: 90}), store, hs...), m)

	// From the heap backend's format.
	hb, err := heap.New(opts(t, 128, all(128)))
	must(t, err)
	hm := newModel()
	write(t, hb, hm, rand.New(rand.NewPCG(14, 15)), 1000, 10000)
	hh := checkpoint(t, hb, store, 2)
	check(t, "from heap", restore(t, rocksdb.Config{}, opts(t, 128, all(128)), store, hh), hm)
	check(t, "from heap, rescaled", restore(t, rocksdb.Config{}, opts(t, 128, keygroup.RangeFor(1, 3, 128)), store, hh), hm)
}
