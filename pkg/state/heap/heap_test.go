package heap_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/heap"
	"github.com/sluice-stream/sluice/pkg/state/statetest"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestConformance(t *testing.T) { statetest.Run(t, heap.Factory{}) }

func newBackend(tb testing.TB, maxP int) *heap.Backend {
	tb.Helper()
	b, err := heap.New(state.KeyedOptions{OperatorUID: "op", KeyGroups: keygroup.Range{Start: 0, End: maxP - 1}, MaxParallelism: maxP})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Close() })
	return b
}

func must(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

type keyRef struct {
	key []byte
	kg  int
}

func makeKeys(n, maxP int) []keyRef {
	keys := make([]keyRef, n)
	for i := range keys {
		k := fmt.Appendf(nil, "key-%08d", i)
		keys[i] = keyRef{k, keygroup.Of(k, maxP)}
	}
	return keys
}

// TestGetPutDoNotAllocate: Get and Put of existing keys are allocation-free, also after
// a snapshot has been released.
func TestGetPutDoNotAllocate(t *testing.T) {
	b := newBackend(t, 128)
	id, err := b.Register(state.StateDesc{Name: "v", Kind: state.KindValue})
	must(t, err)
	keys := makeKeys(1000, 128)
	val := bytes.Repeat([]byte("v"), 100)
	for _, k := range keys {
		b.SetCurrentKey(k.key, k.kg)
		must(t, b.Put(id, nil, val))
		must(t, b.Put(id, []byte("ns"), val))
	}
	s, err := b.Snapshot(1)
	must(t, err)
	s.Release()
	// The first write after a snapshot copies; the second does not.
	for _, k := range keys {
		b.SetCurrentKey(k.key, k.kg)
		must(t, b.Put(id, nil, val))
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		k := keys[i%len(keys)]
		i++
		b.SetCurrentKey(k.key, k.kg)
		v, ok, err := b.Get(id, nil)
		if err != nil || !ok {
			t.Fatal("missing")
		}
		v[0]++ // read-modify-write of the returned value is the caller's business
		if err := b.Put(id, nil, v); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.Get(id, []byte("ns")); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Get/Put allocate %.1f times per op", allocs)
	}
}

// TestCopyOnWriteIsolation exercises every write path against a live snapshot and
// checks that the snapshot is unchanged and that only what was written got copied.
func TestCopyOnWriteIsolation(t *testing.T) {
	b := newBackend(t, 4)
	v, _ := b.Register(state.StateDesc{Name: "v", Kind: state.KindValue})
	l, _ := b.Register(state.StateDesc{Name: "l", Kind: state.KindList})
	m, _ := b.Register(state.StateDesc{Name: "m", Kind: state.KindMap})
	keys := makeKeys(50, 4)
	for _, k := range keys {
		b.SetCurrentKey(k.key, k.kg)
		must(t, b.Put(v, nil, []byte("old")))
		must(t, b.ListAppend(l, nil, []byte("old")))
		must(t, b.MapPut(m, nil, []byte("a"), []byte("old")))
		must(t, b.MapPut(m, nil, []byte("b"), []byte("old")))
		must(t, b.Timers().RegisterEventTimer(1, k.key, k.kg, nil))
	}
	s, err := b.Snapshot(1)
	must(t, err)
	for i, k := range keys {
		b.SetCurrentKey(k.key, k.kg)
		switch i % 5 {
		case 0:
			must(t, b.Put(v, nil, []byte("NEW")))
			must(t, b.Put(v, nil, []byte("NEWER"))) // in place now
		case 1:
			must(t, b.ListAppend(l, nil, []byte("NEW")))
			must(t, b.ListUpdate(l, nil, [][]byte{[]byte("X")}))
		case 2:
			must(t, b.MapPut(m, nil, []byte("a"), []byte("NEW")))
			must(t, b.MapDelete(m, nil, []byte("b")))
		case 3:
			must(t, b.Delete(v, nil))
			must(t, b.Delete(m, nil))
		case 4:
			must(t, b.Timers().DeleteEventTimer(1, k.key, k.kg, nil))
			must(t, b.Timers().RegisterEventTimer(2, k.key, k.kg, nil))
		}
	}
	must(t, b.Timers().AdvanceWatermark(1, func(state.Timer) error { return nil }))
	store := statetest.NewMemStore()
	h, err := s.Run(context.Background(), store)
	must(t, err)
	r := newBackend(t, 4)
	must(t, r.Restore(context.Background(), []*sluicev1.KeyedStateHandle{h}, store))
	v, _ = r.Register(state.StateDesc{Name: "v", Kind: state.KindValue})
	l, _ = r.Register(state.StateDesc{Name: "l", Kind: state.KindList})
	m, _ = r.Register(state.StateDesc{Name: "m", Kind: state.KindMap})
	for _, k := range keys {
		r.SetCurrentKey(k.key, k.kg)
		if got, ok, _ := r.Get(v, nil); !ok || string(got) != "old" {
			t.Fatalf("value %q", got)
		}
		var elems []string
		must(t, r.ListGet(l, nil, func(e []byte) error { elems = append(elems, string(e)); return nil }))
		if len(elems) != 1 || elems[0] != "old" {
			t.Fatalf("list %q", elems)
		}
		for _, uk := range []string{"a", "b"} {
			if got, ok, _ := r.MapGet(m, nil, []byte(uk)); !ok || string(got) != "old" {
				t.Fatalf("map %s = %q", uk, got)
			}
		}
	}
	n := 0
	must(t, r.Timers().AdvanceWatermark(10, func(tm state.Timer) error {
		if tm.Timestamp != 1 {
			t.Fatalf("timer at %d", tm.Timestamp)
		}
		n++
		return nil
	}))
	if n != len(keys) {
		t.Fatalf("%d timers, want %d", n, len(keys))
	}
}

// FuzzRestore: the snapshot decoder never panics, and input that is not a snapshot is
// an error (the file is handed over inline with a matching SHA-256, so only the format's
// own checks stand between the bytes and the backend).
func FuzzRestore(f *testing.F) {
	// A small seed (every record type, two keys, four key groups): Go's minimizer is
	// quadratic in the input size, and large seeds stall the fuzzer.
	b := newBackend(f, 4)
	v, _ := b.Register(state.StateDesc{Name: "v", Kind: state.KindValue})
	l, _ := b.Register(state.StateDesc{Name: "l", Kind: state.KindList})
	m, _ := b.Register(state.StateDesc{Name: "m", Kind: state.KindMap})
	for i, k := range makeKeys(2, 4) {
		b.SetCurrentKey(k.key, k.kg)
		switch i {
		case 0:
			must(f, b.Put(v, []byte("n"), []byte("x")))
			must(f, b.ListAppend(l, nil, []byte("y")))
			must(f, b.Timers().RegisterEventTimer(7, k.key, k.kg, nil))
		case 1:
			must(f, b.MapPut(m, nil, []byte("u"), []byte("z")))
			must(f, b.Timers().RegisterProcessingTimer(-5, k.key, k.kg, []byte("p")))
		}
	}
	s, err := b.Snapshot(1)
	must(f, err)
	h, err := s.Run(context.Background(), statetest.NewMemStore())
	must(f, err)
	good := h.GetFile().GetInlineData()
	if len(good) == 0 {
		f.Fatal("expected inline data")
	}
	f.Add(good, false)
	f.Add(good, true)
	f.Add(good[:len(good)/2], false)
	f.Add([]byte("SLUICEKS"), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, data []byte, offsetsFromFile bool) {
		sum := sha256.Sum256(data)
		hh := &sluicev1.KeyedStateHandle{
			KeyGroupStart:   0,
			KeyGroupEnd:     3,
			File:            &sluicev1.StateFile{Size: int64(len(data)), Sha256: sum[:], InlineData: data},
			KeyGroupOffsets: h.GetKeyGroupOffsets(),
		}
		if offsetsFromFile {
			// Offsets from the file's own footer, as a tool verifying a file would.
			hh.KeyGroupOffsets = footerOffsets(data)
		}
		r, err := heap.New(state.KeyedOptions{OperatorUID: "op", KeyGroups: keygroup.Range{Start: 0, End: 3}, MaxParallelism: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		err = r.Restore(context.Background(), []*sluicev1.KeyedStateHandle{hh}, nil)
		if bytes.Equal(data, good) {
			if err != nil {
				t.Fatalf("good snapshot rejected: %v", err)
			}
			return
		}
		if err == nil {
			// Accepted input must be a well-formed snapshot: it snapshots again and
			// restores to the same thing.
			s2, err := r.Snapshot(2)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s2.Run(context.Background(), statetest.NewMemStore()); err != nil {
				t.Fatalf("accepted input does not snapshot: %v", err)
			}
			return
		}
		if !errors.Is(err, state.ErrCorrupt) && !bytes.Contains([]byte(err.Error()), []byte("max parallelism")) &&
			!bytes.Contains([]byte(err.Error()), []byte("unsupported format")) {
			t.Fatalf("rejected with an error that is not ErrCorrupt: %v", err)
		}
	})
}

// footerOffsets parses the offsets of a fullsnap footer without validation (the fuzz
// target's handle); garbage in, garbage out.
func footerOffsets(data []byte) []int64 {
	if len(data) < 20 {
		return nil
	}
	fs := int64(0)
	for _, c := range data[len(data)-20 : len(data)-12] {
		fs = fs<<8 | int64(c)
	}
	if fs < 0 || fs+4 > int64(len(data)) {
		return nil
	}
	n := 0
	for _, c := range data[fs : fs+4] {
		n = n<<8 | int(c)
	}
	var offs []int64
	for i := 0; i < n && i < 64 && fs+4+int64(8*i)+8 <= int64(len(data)); i++ {
		var o int64
		for _, c := range data[fs+4+int64(8*i) : fs+4+int64(8*i)+8] {
			o = o<<8 | int64(c)
		}
		offs = append(offs, o)
	}
	return offs
}

func BenchmarkValueGetPut(b *testing.B) {
	be := newBackend(b, 128)
	id, _ := be.Register(state.StateDesc{Name: "v", Kind: state.KindValue})
	keys := makeKeys(100_000, 128)
	val := bytes.Repeat([]byte("v"), 100)
	for _, k := range keys {
		be.SetCurrentKey(k.key, k.kg)
		must(b, be.Put(id, nil, val))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := keys[i%len(keys)]
		i++
		be.SetCurrentKey(k.key, k.kg)
		v, _, err := be.Get(id, nil)
		if err != nil {
			b.Fatal(err)
		}
		v[0]++
		if err := be.Put(id, nil, v); err != nil {
			b.Fatal(err)
		}
	}
}

// discardStore hashes and drops what is written: it measures the backend's side of the
// asynchronous phase (encoding, checksums, SHA-256), not a file system's.
type discardStore struct{}

func (discardStore) Create(context.Context, string) (state.FileWriter, error) {
	return &discardFile{h: sha256.New()}, nil
}

func (discardStore) CreateShared(context.Context, string) (state.FileWriter, error) {
	return &discardFile{h: sha256.New()}, nil
}

type discardFile struct {
	h hash.Hash
	n int64
}

func (d *discardFile) Write(p []byte) (int, error) {
	d.h.Write(p)
	d.n += int64(len(p))
	return len(p), nil
}
func (d *discardFile) Close() (*sluicev1.StateFile, error) {
	return &sluicev1.StateFile{Path: "x", Size: d.n, Sha256: d.h.Sum(nil)}, nil
}
func (d *discardFile) Abort() error { return nil }

const benchKeys = 1_000_000

func loadBench(b *testing.B) (*heap.Backend, state.StateID, []keyRef) {
	b.Helper()
	be := newBackend(b, 128)
	id, _ := be.Register(state.StateDesc{Name: "v", Kind: state.KindValue})
	keys := makeKeys(benchKeys, 128)
	val := bytes.Repeat([]byte("v"), 100)
	for _, k := range keys {
		be.SetCurrentKey(k.key, k.kg)
		must(b, be.Put(id, nil, val))
	}
	runtime.GC() // do not bill the loading's garbage to the measured phases
	return be, id, keys
}

// BenchmarkSnapshot: 1M keys with 100-byte values; one op is a whole snapshot. Reports
// the synchronous and asynchronous phases and the file size.
func BenchmarkSnapshot(b *testing.B) {
	be, _, _ := loadBench(b)
	var syncT, asyncT time.Duration
	var size int64
	n := 0
	for b.Loop() {
		t0 := time.Now()
		s, err := be.Snapshot(int64(n))
		syncT += time.Since(t0)
		must(b, err)
		t1 := time.Now()
		h, err := s.Run(context.Background(), discardStore{})
		asyncT += time.Since(t1)
		must(b, err)
		size = h.GetFile().GetSize()
		n++
	}
	b.ReportMetric(float64(syncT.Microseconds())/float64(n)/1000, "sync-ms")
	b.ReportMetric(float64(asyncT.Microseconds())/float64(n)/1000, "async-ms")
	b.ReportMetric(float64(size), "bytes")
	b.Logf("%d keys: sync %.3f ms, async %.1f ms, %d bytes", benchKeys,
		float64(syncT.Microseconds())/float64(n)/1000, float64(asyncT.Microseconds())/float64(n)/1000, size)
}

// BenchmarkSnapshotSync: the synchronous phase alone for 1M keys.
func BenchmarkSnapshotSync(b *testing.B) {
	be, _, _ := loadBench(b)
	n := 0
	for b.Loop() {
		s, err := be.Snapshot(int64(n))
		must(b, err)
		s.Release()
		n++
	}
}

// BenchmarkPutDuringSnapshot: updating every one of 1M keys while a snapshot is live
// (copy-on-write: table clones and entry copies) against the same without a snapshot.
func BenchmarkPutDuringSnapshot(b *testing.B) {
	for _, live := range []bool{false, true} {
		b.Run(fmt.Sprintf("live=%v", live), func(b *testing.B) {
			be, id, keys := loadBench(b)
			val := bytes.Repeat([]byte("w"), 100)
			for b.Loop() {
				var s state.AsyncSnapshot
				if live {
					var err error
					s, err = be.Snapshot(1)
					must(b, err)
				}
				for _, k := range keys {
					be.SetCurrentKey(k.key, k.kg)
					if err := be.Put(id, nil, val); err != nil {
						b.Fatal(err)
					}
				}
				if s != nil {
					s.Release()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchKeys, "ns/put")
		})
	}
}
