//go:build cgo

package rocksdb_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/linxGnu/grocksdb"

	"github.com/sluice-stream/sluice/pkg/config"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	"github.com/sluice-stream/sluice/pkg/state/statetest"
)

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

// TestGetPutDoNotAllocate: the value-state hot path (SetCurrentKey, Get, Put of existing
// keys, with and without a namespace) allocates nothing in Go.
func TestGetPutDoNotAllocate(t *testing.T) {
	b := newBackend(t, rocksdb.Config{}, opts(t, 128, all(128)))
	id, err := b.Register(state.StateDesc{Name: "v", Kind: state.KindValue})
	must(t, err)
	keys := makeKeys(1000, 128)
	val := bytes.Repeat([]byte("v"), 100)
	for _, k := range keys {
		b.SetCurrentKey(k.key, k.kg)
		must(t, b.Put(id, nil, val))
	}
	i := 0
	allocs := testing.AllocsPerRun(2000, func() {
		k := keys[i%len(keys)]
		i++
		b.SetCurrentKey(k.key, k.kg)
		v, ok, err := b.Get(id, nil)
		if err != nil || !ok || len(v) != 100 {
			t.Fatalf("Get: %d bytes %v %v", len(v), ok, err)
		}
		if err := b.Put(id, nil, v); err != nil {
			t.Fatal(err)
		}
		if err := b.Put(id, []byte("window"), v); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per SetCurrentKey+Get+Put+Put", allocs)
	}
}

// TestSnapshotIsolation: the asynchronous phase uploads the state as of Snapshot, even
// when the backend is changed, compacted and closed before it runs.
func TestSnapshotIsolation(t *testing.T) {
	store, _ := fileStore(t)
	o := opts(t, 128, all(128))
	b, err := rocksdb.New(o, rocksdb.Config{Incremental: true}, nil)
	must(t, err)
	m := newModel()
	rng := newRand(21)
	write(t, b, m, rng, 1000, 10000)
	want := m.clone()
	s, err := b.Snapshot(1)
	must(t, err)
	for range 5 { // flushes and compactions replace every SST file
		write(t, b, m, rng, 1000, 5000)
		s2, err := b.Snapshot(99)
		must(t, err)
		s2.Release()
	}
	dir := b.Dir()
	must(t, b.Close())
	h, err := s.Run(context.Background(), blobstoreFiles(store, 1))
	must(t, err)
	check(t, "snapshot of a closed backend", restore(t, rocksdb.Config{}, opts(t, 128, all(128)), store, h), want)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("instance directory %s left behind: %v", dir, err)
	}
}

// TestInstanceDirectories: each backend has its own directory under the local
// directory, removed on Close; the configured directory wins over the task's.
func TestInstanceDirectories(t *testing.T) {
	local := t.TempDir()
	o := opts(t, 128, all(128))
	a, err := rocksdb.New(o, rocksdb.Config{LocalDir: local}, nil)
	must(t, err)
	b, err := rocksdb.New(o, rocksdb.Config{LocalDir: local}, nil)
	must(t, err)
	if filepath.Dir(a.Dir()) != local || a.Dir() == b.Dir() {
		t.Fatalf("instance directories %s and %s, want two under %s", a.Dir(), b.Dir(), local)
	}
	must(t, a.Close())
	must(t, b.Close())
	if ents, _ := os.ReadDir(local); len(ents) != 0 {
		t.Fatalf("left behind in %s: %v", local, ents)
	}
}

// TestPropertiesAndMemory: native properties are readable (from another goroutine
// too), and backends sharing a Memory share its cache and write-buffer manager.
func TestPropertiesAndMemory(t *testing.T) {
	mc := rocksdb.MemoryConfig{Size: 32 << 20}
	mem, err := rocksdb.NewMemory(mc)
	must(t, err)
	defer mem.Close()
	if u := mem.Usage(); u.WriteBufferLimit != uint64(mc.WriteBufferLimit()) || u.BlockCacheCapacity != uint64(mc.CacheCapacity()) {
		t.Fatalf("memory %+v, want cache %d and write buffers %d", u, mc.CacheCapacity(), mc.WriteBufferLimit())
	}
	var bs []*rocksdb.Backend
	for i := range 4 {
		b, err := rocksdb.New(opts(t, 128, keygroup.RangeFor(i, 4, 128)), rocksdb.Config{}, mem)
		must(t, err)
		defer b.Close()
		bs = append(bs, b)
		write(t, b, newModel(), newRand(uint64(i)), 2000, 20000)
	}
	if u := mem.Usage(); u.WriteBufferUsage == 0 || u.BlockCacheUsage < u.WriteBufferUsage {
		t.Fatalf("memtables not charged to the shared cache: %+v", u)
	}
	var wg sync.WaitGroup
	wg.Go(func() { // concurrently with the task goroutine's snapshot below
		for range 10 {
			bs[0].Properties()
		}
	})
	_, err = bs[0].Snapshot(1)
	must(t, err)
	wg.Wait()
	p := bs[0].Properties()
	if p.LiveSSTFilesSize == 0 || p.TotalSSTFilesSize < p.LiveSSTFilesSize || p.EstimateNumKeys == 0 ||
		p.NumFilesAtLevel0 == 0 || p.BlockCacheCapacity != uint64(mc.CacheCapacity()) || p.ColumnFamilies != 6 || p.IsWriteStopped {
		t.Fatalf("properties after a flush: %+v", p)
	}
	t.Logf("properties: %+v; shared memory: %+v", p, mem.Usage())
	// Backends opened after Close of the memory fail; open ones keep working.
	mem.Close()
	if _, err := rocksdb.New(opts(t, 128, all(128)), rocksdb.Config{}, mem); err == nil {
		t.Fatal("backend created with closed memory")
	}
	write(t, bs[1], newModel(), newRand(9), 2000, 1000)
	if p := bs[0].Properties(); p.ColumnFamilies != 6 {
		t.Fatalf("properties after the memory closed: %+v", p)
	}
}

// TestOptionsFactory: the hook sees the database options and every column family's.
func TestOptionsFactory(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	cfg := rocksdb.Config{
		Predefined: rocksdb.SpinningDiskOptimizedHighMem,
		OptionsFactory: func(column string, o *grocksdb.Options) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, column)
			if column != "" {
				o.SetWriteBufferSize(1 << 20)
			}
		},
	}
	b := newBackend(t, cfg, opts(t, 128, all(128)))
	register(t, b)
	slices.Sort(seen)
	want := []string{"", "default", "state-0", "state-1", "state-2", "timers-event", "timers-processing"}
	if !slices.Equal(seen, want) {
		t.Fatalf("options factory called for %q, want %q", seen, want)
	}
	statetest.Run(t, rocksdb.Factory{Config: cfg})
}

func TestConfigFrom(t *testing.T) {
	c, err := config.FromMap(map[string]string{
		config.StateBackendType:        "rocksdb",
		config.StateBackendIncremental: "true",
		config.RocksDBPredefined:       "flash_ssd_optimized",
		config.RocksDBWriteBufferSize:  "16 mb",
		config.RocksDBMemoryFixedPerTM: "1 gb",
		config.RocksDBWriteBufferRatio: "0.25",
		config.RocksDBTransferThreads:  "8",
		config.RocksDBLocalDir:         "/var/sluice",
		config.RocksDBWriteBufferCount: "3",
		config.RocksDBMemoryManaged:    "false",
		config.RocksDBHighPrioRatio:    "0.2",
		config.RocksDBThreads:          "6",
		config.RocksDBBlockCacheSize:   "32 mb",
		config.RocksDBBaseShare:        "0.25",
	})
	must(t, err)
	cfg, err := rocksdb.ConfigFrom(c)
	must(t, err)
	want := rocksdb.Config{Predefined: rocksdb.FlashSSDOptimized, BlockCacheSize: 32 << 20, WriteBufferSize: 16 << 20, WriteBufferCount: 3,
		BackgroundJobs: 6, TransferThreads: 8, Incremental: true, BaseShare: 0.25, LocalDir: "/var/sluice"}
	if fmt.Sprint(cfg) != fmt.Sprint(want) {
		t.Fatalf("ConfigFrom = %+v, want %+v", cfg, want)
	}
	mc, managed := rocksdb.MemoryConfigFrom(c)
	if managed || mc != (rocksdb.MemoryConfig{Size: 1 << 30, WriteBufferRatio: 0.25, HighPriorityPoolRatio: 0.2}) {
		t.Fatalf("MemoryConfigFrom = %+v %v", mc, managed)
	}
	// heap is hashmap.
	h, err := config.FromMap(map[string]string{config.StateBackendType: "Heap"})
	must(t, err)
	if v := h.String(config.StateBackendType); v != "hashmap" {
		t.Fatalf("state.backend.type heap reads as %q", v)
	}
	// Unset tuning keys leave the predefined options alone.
	cfg, err = rocksdb.ConfigFrom(config.New())
	must(t, err)
	if fmt.Sprint(cfg) != fmt.Sprint(rocksdb.Config{TransferThreads: 4, BaseShare: rocksdb.DefaultBaseShare}) {
		t.Fatalf("defaults: %+v", cfg)
	}
}
