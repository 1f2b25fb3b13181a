//go:build cgo

package rocksdb_test

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/linxGnu/grocksdb"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/config"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestConfigFromCompactionKeys(t *testing.T) {
	c := config.New()
	cfg, err := rocksdb.ConfigFrom(c)
	must(t, err)
	if cfg.CompactionStyle != rocksdb.CompactionAuto || cfg.DynamicLevelBytes != nil || cfg.TargetFileSizeBase != 0 ||
		cfg.MaxBytesForLevelBase != 0 || cfg.UniversalSortedRuns != 0 {
		t.Fatalf("unset keys set fields: %+v", cfg)
	}
	for k, v := range map[string]string{
		config.RocksDBCompactionStyle:    "universal",
		config.RocksDBDynamicLevelSize:   "true",
		config.RocksDBTargetFileSizeBase: "32 mb",
		config.RocksDBMaxSizeLevelBase:   "512 mb",
		config.RocksDBUniversalRuns:      "48",
	} {
		must(t, c.Set(k, v))
	}
	cfg, err = rocksdb.ConfigFrom(c)
	must(t, err)
	if cfg.CompactionStyle != rocksdb.CompactionUniversal || cfg.DynamicLevelBytes == nil || !*cfg.DynamicLevelBytes ||
		cfg.TargetFileSizeBase != 32<<20 || cfg.MaxBytesForLevelBase != 512<<20 || cfg.UniversalSortedRuns != 48 {
		t.Fatalf("ConfigFrom: %+v", cfg)
	}
	if err := config.New().Set(config.RocksDBCompactionStyle, "FIFO"); err == nil {
		t.Error("compaction style FIFO accepted")
	}
	if err := config.New().Set(config.RocksDBUniversalRuns, "1"); err == nil {
		t.Error("1 sorted run accepted")
	}
}

// TestCompactionAuto: CompactionAuto is universal compaction for incremental snapshots
// under the predefined options that choose no style, level compaction otherwise; an
// explicit style wins.
func TestCompactionAuto(t *testing.T) {
	for _, c := range []struct {
		cfg  rocksdb.Config
		want rocksdb.CompactionStyle
	}{
		{rocksdb.Config{}, rocksdb.CompactionLevel},
		{rocksdb.Config{Incremental: true}, rocksdb.CompactionUniversal},
		{rocksdb.Config{Incremental: true, Predefined: rocksdb.FlashSSDOptimized}, rocksdb.CompactionUniversal},
		{rocksdb.Config{Incremental: true, Predefined: rocksdb.SpinningDiskOptimized}, rocksdb.CompactionLevel},
		{rocksdb.Config{Incremental: true, Predefined: rocksdb.SpinningDiskOptimizedHighMem}, rocksdb.CompactionLevel},
		{rocksdb.Config{Incremental: true, CompactionStyle: rocksdb.CompactionLevel}, rocksdb.CompactionLevel},
		{rocksdb.Config{CompactionStyle: rocksdb.CompactionUniversal}, rocksdb.CompactionUniversal},
		{rocksdb.Config{Predefined: rocksdb.SpinningDiskOptimized, CompactionStyle: rocksdb.CompactionUniversal}, rocksdb.CompactionUniversal},
	} {
		if got := c.cfg.Compaction(); got != c.want {
			t.Errorf("%+v: %v, want %v", c.cfg, got, c.want)
		}
	}
	for _, s := range []string{"LEVEL", "Universal"} {
		if st, err := rocksdb.ParseCompactionStyle(s); err != nil || !strings.EqualFold(st.String(), s) {
			t.Errorf("ParseCompactionStyle(%q) = %v, %v", s, st, err)
		}
	}
	for _, s := range []string{"", "AUTO", "FIFO"} {
		if _, err := rocksdb.ParseCompactionStyle(s); err == nil {
			t.Errorf("ParseCompactionStyle(%q) succeeded", s)
		}
	}
}

// uploadRun drives one backend through checkpoints after random changes of 112-byte
// entries (a 12-byte key, 100 random bytes), as bench/incremental does.
type uploadRun struct {
	t     testing.TB
	b     *rocksdb.Backend
	store *blobstore.Store
	id    state.StateID
	keys  [][]byte
	kgs   []int
	rng   *rand.Rand
	val   []byte
	next  int64
	want  []string // each key's value
}

func newUploadRun(t testing.TB, cfg rocksdb.Config, keys int) *uploadRun {
	store, _ := fileStore(t)
	r := &uploadRun{t: t, b: newBackend(t, cfg, opts(t, 128, all(128))), store: store, rng: newRand(5), val: make([]byte, 100)}
	var err error
	r.id, err = r.b.Register(state.StateDesc{Name: "v", Kind: state.KindValue})
	must(t, err)
	r.keys, r.kgs, r.want = make([][]byte, keys), make([]int, keys), make([]string, keys)
	for i := range r.keys {
		r.keys[i] = fmt.Appendf(nil, "key-%08d", i)
		r.kgs[i] = keygroup.Of(r.keys[i], 128)
		r.put(i)
	}
	return r
}

// put writes key i with a random value (incompressible: compression hides nothing)
// and returns the bytes of key and value.
func (r *uploadRun) put(i int) int64 {
	for j := 0; j < len(r.val); j += 8 {
		w := r.rng.Uint64()
		for k := j; k < min(j+8, len(r.val)); k++ {
			r.val[k] = byte(w)
			w >>= 8
		}
	}
	r.b.SetCurrentKey(r.keys[i], r.kgs[i])
	must(r.t, r.b.Put(r.id, nil, r.val))
	r.want[i] = string(r.val)
	return int64(len(r.keys[i]) + len(r.val))
}

// change rewrites a share of the keys, chosen at random, and returns the bytes written.
func (r *uploadRun) change(share float64) int64 {
	var n int64
	for range int(float64(len(r.keys)) * share) {
		n += r.put(r.rng.IntN(len(r.keys)))
	}
	return n
}

// checkpoint waits until no flush or compaction runs (for 10 ms: a compaction a flush
// triggers starts at once), then takes and confirms the next
// checkpoint.
func (r *uploadRun) checkpoint() *sluicev1.KeyedStateHandle {
	r.t.Helper()
	for quiet := 0; quiet < 5; time.Sleep(2 * time.Millisecond) {
		if p := r.b.Properties(); p.NumRunningCompactions == 0 && p.NumRunningFlushes == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	r.next++
	h := checkpoint(r.t, r.b, r.store, r.next)
	r.b.NotifyCheckpointComplete(r.next)
	return h
}

// TestIncrementalOnePercentOfMillionKeys: with the default configuration of incremental
// checkpoints, changing 1% of 1M keys makes the next checkpoint upload less than twice
// the bytes changed (keys and values). (-short: 100k keys.) The steady state over many
// checkpoints, with compactions, is TestIncrementalSteadyStateUploads'.
func TestIncrementalOnePercentOfMillionKeys(t *testing.T) {
	keys := 1_000_000
	if testing.Short() {
		keys = 100_000
	}
	r := newUploadRun(t, rocksdb.Config{Incremental: true}, keys)
	h := r.checkpoint()
	t.Logf("checkpoint 1: %d keys, uploaded %d bytes", keys, h.GetIncrementalSize())
	for range 3 {
		changed := r.change(0.01)
		h := r.checkpoint()
		ratio := float64(h.GetIncrementalSize()) / float64(changed)
		t.Logf("checkpoint %d: changed 1%% of the keys (%d bytes): uploaded %d bytes, %.2fx", r.next, changed, h.GetIncrementalSize(), ratio)
		if ratio >= 2 {
			t.Fatalf("checkpoint %d uploaded %.2fx the bytes changed", r.next, ratio)
		}
	}
}

// TestIncrementalSteadyStateUploads: without deltas (every checkpoint a base), over
// many checkpoints that each follow a change of 1% of the keys, with compactions
// running between them, universal compaction uploads a few times the bytes changed,
// level compaction many times more: each of its level-0 compactions rewrites all of
// level 1. The bounds are loose; bench/incremental measures the figures, and
// TestDeltaSteadyStateUploads the default, with deltas.
func TestIncrementalSteadyStateUploads(t *testing.T) {
	const keys = 50_000
	measure := func(style rocksdb.CompactionStyle, warmup, n int) (ratio float64, compactions int64) {
		r := newUploadRun(t, rocksdb.Config{Incremental: true, DisableDeltas: true, CompactionStyle: style}, keys)
		r.checkpoint()
		for range warmup {
			r.change(0.01)
			r.checkpoint()
		}
		before := r.b.CompactionStats()
		var changed, uploaded int64
		for range n {
			changed += r.change(0.01)
			uploaded += r.checkpoint().GetIncrementalSize()
		}
		s := r.b.CompactionStats()
		t.Logf("%v: %d checkpoints after %d: uploaded %d bytes for %d changed (%.2fx); %d compactions wrote %d bytes; %d sorted runs, %d write stalls",
			style, n, warmup, uploaded, changed, float64(uploaded)/float64(changed), s.Compactions-before.Compactions,
			s.CompactionBytes-before.CompactionBytes, s.SortedRuns, s.WriteStalls)
		if s.Flushes-before.Flushes < int64(n) || s.FlushBytes <= before.FlushBytes {
			t.Errorf("%v: %d flushes counted for %d checkpoints", style, s.Flushes-before.Flushes, n)
		}
		return float64(uploaded) / float64(changed), s.Compactions - before.Compactions
	}
	// About one cycle of universal compaction (a full merge every ~150 checkpoints).
	u, uc := measure(rocksdb.CompactionUniversal, 100, 160)
	l, lc := measure(rocksdb.CompactionLevel, 10, 40)
	if uc == 0 || lc == 0 {
		t.Fatalf("no compaction ran: universal %d, level %d", uc, lc)
	}
	if u > 4.5 || l < 3*u {
		t.Errorf("uploaded/changed: universal %.2f (want at most 4.5), level %.2f (want at least 3 times more)", u, l)
	}
}

// TestManifestStaysSmall: every base uploads the MANIFEST whole; RocksDB starts a new
// one past 16 KiB instead of appending every flush's and compaction's edit for the
// life of the job.
func TestManifestStaysSmall(t *testing.T) {
	r := newUploadRun(t, rocksdb.Config{Incremental: true, DisableDeltas: true}, 2000)
	var most int64
	for id := int64(1); id <= 200; id++ {
		r.change(0.01)
		h := checkpoint(t, r.b, r.store, id)
		r.b.NotifyCheckpointComplete(id)
		var private int64
		for _, f := range h.GetPrivateFiles() {
			private += f.GetSize()
		}
		most = max(most, private)
	}
	if most > 24<<10 {
		t.Errorf("over 200 checkpoints the private files (meta, CURRENT, MANIFEST) reached %d bytes", most)
	}
}

// TestCompactionStats: the counters see flushes and compactions (level compaction
// compacts level 0 at 4 files), the sorted runs are counted, and a closed backend
// reports nothing.
func TestCompactionStats(t *testing.T) {
	r := newUploadRun(t, rocksdb.Config{Incremental: true, DisableDeltas: true, CompactionStyle: rocksdb.CompactionLevel}, 2000)
	for range 6 {
		r.change(0.1)
		r.checkpoint()
	}
	r.checkpoint() // waits for the last compaction
	s := r.b.CompactionStats()
	if s.Flushes < 6 || s.FlushBytes <= 0 || s.Compactions < 1 || s.CompactionBytes <= 0 || s.SortedRuns < 1 || s.WriteStalls != 0 {
		t.Fatalf("stats %+v", s)
	}
	must(t, r.b.Close())
	if s := r.b.CompactionStats(); s != (rocksdb.CompactionStats{}) {
		t.Fatalf("closed backend: %+v", s)
	}
}

// TestCompactionStyleSwitchRestores: a snapshot taken under one compaction style
// restores under the other, at the same and at another parallelism, incremental
// snapshots keep working after the restore, and everything written is there.
func TestCompactionStyleSwitchRestores(t *testing.T) {
	styles := []rocksdb.CompactionStyle{rocksdb.CompactionUniversal, rocksdb.CompactionLevel}
	for i, from := range styles {
		to := styles[1-i]
		t.Run(fmt.Sprintf("%v to %v", from, to), func(t *testing.T) {
			store, _ := fileStore(t)
			cfg := rocksdb.Config{Incremental: true, CompactionStyle: from, UniversalSortedRuns: 4}
			b := newBackend(t, cfg, opts(t, 128, all(128)))
			m, rng := newModel(), newRand(9)
			var h *sluicev1.KeyedStateHandle
			for id := int64(1); id <= 8; id++ {
				write(t, b, m, rng, 3000, 2000)
				h = checkpoint(t, b, store, id)
				b.NotifyCheckpointComplete(id)
			}
			cfg.CompactionStyle = to
			nb := restore(t, cfg, opts(t, 128, all(128)), store, h)
			write(t, nb, m, rng, 3000, 2000)
			h2 := checkpoint(t, nb, store, 9)
			nb.NotifyCheckpointComplete(9)
			for id := int64(10); id <= 14; id++ {
				write(t, nb, m, rng, 3000, 2000)
				h2 = checkpoint(t, nb, store, id)
				nb.NotifyCheckpointComplete(id)
			}
			check(t, "same parallelism", restore(t, cfg, opts(t, 128, all(128)), store, h2), m)
			for s := range 2 {
				r := keygroup.RangeFor(s, 2, 128)
				check(t, fmt.Sprintf("subtask %d of 2", s), restore(t, cfg, opts(t, 128, r), store, h2), m)
			}
			if st := nb.CompactionStats(); st.Compactions == 0 {
				t.Errorf("no compaction ran after the restore: %+v", st)
			}
		})
	}
}

// TestUniversalBacklogMetric: under universal compaction RocksDB reports no pending
// compaction bytes, so the backend reports the live bytes of the sorted runs beyond the
// trigger instead; the compaction-starvation warning watches that figure.
func TestUniversalBacklogMetric(t *testing.T) {
	cfg := rocksdb.Config{CompactionStyle: rocksdb.CompactionUniversal, UniversalSortedRuns: 2,
		// Compaction stopped: the runs pile up as when it falls behind.
		OptionsFactory: func(_ string, o *grocksdb.Options) { o.SetDisableAutoCompactions(true) }}
	b := newBackend(t, cfg, opts(t, 128, all(128)))
	store, _ := fileStore(t)
	m, rng := newModel(), newRand(5)
	var last int64
	for id := int64(1); id <= 5; id++ {
		write(t, b, m, rng, 1000, 500)
		checkpoint(t, b, store, id) // flushes one run per column family written
		got := b.NativeMetrics().PendingCompactionBytes
		t.Logf("after %d flushes: %d sorted runs in all column families, pending compaction bytes %d", id, b.CompactionStats().SortedRuns, got)
		switch {
		case id <= 2 && got != 0:
			t.Fatalf("%d runs per column family, at most the trigger of 2, yet %d pending bytes", id, got)
		case id > 2 && got <= last:
			t.Fatalf("%d runs per column family over a trigger of 2: pending compaction bytes %d, after %d", id, got, last)
		}
		last = got
	}
}
