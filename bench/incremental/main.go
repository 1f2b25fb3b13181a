//go:build cgo

// Command bench-incremental measures what incremental checkpoints of the RocksDB
// backend upload while compaction runs, against the bytes the job changed: the raw
// baseline, counted in the same run.
//
// One backend (one subtask, all 128 key groups) holds -keys keys of keyed value state,
// each a 12-byte key and -value random (incompressible) bytes. After a first checkpoint
// of everything, each checkpoint follows a change of -change of the keys (1%: 2,000 of
// 200,000), chosen at random, written while RocksDB flushes and compacts in the
// background. A checkpoint is taken as a task manager takes it (synchronous phase,
// then the asynchronous phase uploading to a file:// blob store in a temporary
// directory) and confirmed. Before each checkpoint the program waits until no flush or
// compaction runs, as with a checkpoint interval longer than compactions take, so
// that every file a compaction writes is uploaded by the next checkpoint and none is
// lost between runs. Warm-up checkpoints bring the database into its steady state
// (-warmup, -level-warmup); then more are measured (-checkpoints, -level-checkpoints:
// several compaction cycles of the style).
//
// Memtables are -writebuffer bytes (1 MiB), so that they flush every few checkpoints
// and compactions run in every mode, as with state much larger than memory.
//
// For each mode (-modes: DELTAS, the default for incremental checkpoints: universal
// compaction, deltas between bases; UNIVERSAL and LEVEL: every checkpoint a base, with
// that compaction style) it prints, for the first 10 measured checkpoints and for all
// of them: the bytes changed (keys and values written: the baseline), the bytes
// uploaded (the handles' incremental size: deltas, new SST files, the MANIFEST, CURRENT
// and the meta file) and the ratio uploaded/changed; the compactions that ran during
// them and the SST bytes they wrote, from the backend's event counters; the bases
// taken; the most and mean sorted runs; the most live SST bytes over the logical bytes
// (space amplification); and write stalls. A 10-checkpoint ratio depends on where the
// window falls in the compaction cycle (and, with deltas, on whether it holds a base),
// so it also prints the lowest, median and highest ratio of the consecutive
// 10-checkpoint windows and how many exceed 2.0. The floor for the ratio is
// 2.0, its goal 1.2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/bench/internal/figures"
	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

const (
	maxP      = keygroup.DefaultLowerBound
	jobID     = "bench-incremental"
	uid       = "state"
	stateName = "value"
	keyLen    = 12 // "key-%08d"
	window    = 10 // checkpoints of the figure
)

type options struct {
	keys        int
	value       int
	change      float64
	warmup      int
	checkpoints int
	levelWarmup int
	levelCps    int
	sortedRuns  int
	writeBuffer int64
	baseShare   float64
	modes       string
	dir         string
}

// mode is a configuration measured: a compaction style, with or without deltas.
type mode struct {
	name   string
	style  rocksdb.CompactionStyle
	deltas bool
}

var modes = map[string]mode{
	"DELTAS":    {"DELTAS", rocksdb.CompactionUniversal, true},
	"UNIVERSAL": {"UNIVERSAL", rocksdb.CompactionUniversal, false},
	"LEVEL":     {"LEVEL", rocksdb.CompactionLevel, false},
}

func main() {
	var o options
	flag.IntVar(&o.keys, "keys", 200_000, "keys of keyed value state")
	flag.IntVar(&o.value, "value", 100, "bytes of each value (random)")
	flag.Float64Var(&o.change, "change", 0.01, "share of the keys changed between two checkpoints")
	flag.IntVar(&o.warmup, "warmup", 150, "UNIVERSAL: checkpoints before the measured ones (steady state)")
	flag.IntVar(&o.checkpoints, "checkpoints", 300, "UNIVERSAL: checkpoints measured, a multiple of 10 (its compaction cycle is about 150)")
	flag.IntVar(&o.levelWarmup, "level-warmup", 20, "LEVEL: checkpoints before the measured ones (steady state)")
	flag.IntVar(&o.levelCps, "level-checkpoints", 100, "LEVEL: checkpoints measured, a multiple of 10 (its compaction cycle is about 4)")
	flag.IntVar(&o.sortedRuns, "sorted-runs", 0, "UNIVERSAL: state.backend.rocksdb.compaction.universal.sorted-runs (0: the default, 24)")
	flag.Int64Var(&o.writeBuffer, "writebuffer", 1<<20, "bytes of a memtable (state.backend.rocksdb.writebuffer.size)")
	flag.Float64Var(&o.baseShare, "base-share", rocksdb.DefaultBaseShare, "DELTAS: state.backend.rocksdb.incremental.base-share")
	flag.StringVar(&o.modes, "modes", "DELTAS,UNIVERSAL,LEVEL", "what to measure, comma-separated: DELTAS (universal compaction, deltas between bases: the default), UNIVERSAL or LEVEL (every checkpoint a base)")
	flag.StringVar(&o.dir, "dir", "", "parent of the temporary directory (default $TMPDIR)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		stop()
		fmt.Fprintf(os.Stderr, "bench-incremental: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	if o.keys < 1000 || o.value < 1 || o.change <= 0 || o.change > 1 || o.warmup < 0 || o.levelWarmup < 0 ||
		o.checkpoints < window || o.checkpoints%window != 0 || o.levelCps < window || o.levelCps%window != 0 || o.writeBuffer < 64<<10 || o.baseShare < 0.05 || o.baseShare > 10 {
		return errors.New("invalid flags: need -keys >= 1000, -value >= 1, 0 < -change <= 1, warm-ups >= 0, measured checkpoints positive multiples of 10, -writebuffer >= 65536, 0.05 <= -base-share <= 10")
	}
	var ms []mode
	for s := range strings.SplitSeq(o.modes, ",") {
		m, ok := modes[strings.ToUpper(strings.TrimSpace(s))]
		if !ok {
			return fmt.Errorf("unknown mode %q: want DELTAS, UNIVERSAL or LEVEL", s)
		}
		ms = append(ms, m)
	}
	fmt.Fprintf(out, "incremental checkpoint benchmark: %d CPUs, %s\n", runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(out, "== %d keys of keyed value state (%d-byte keys, %d random bytes each: %s), %.4g%% of the keys changed between checkpoints,\n",
		o.keys, keyLen, o.value, figures.MB(int64(o.keys)*int64(keyLen+o.value)), 100*o.change)
	fmt.Fprintf(out, "   one RocksDB backend, %s memtables, incremental checkpoints to file://, each after compactions finished\n", figures.MB(o.writeBuffer))
	var results []result
	for _, m := range ms {
		r, err := measure(ctx, o, m)
		if err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		results = append(results, r)
		r.print(out)
	}
	fmt.Fprintf(out, "ratio uploaded/changed (raw baseline: the bytes of keys and values written), floor 2.0, goal 1.2:\n")
	for _, r := range results {
		first := r.span(0, window)
		all := r.span(0, len(r.cps))
		ws := r.windows()
		fmt.Fprintf(out, "  %-9s over 10 checkpoints while compaction runs %.2f (%d compactions); steady state over %d checkpoints %.2f (%d compactions, %d bases); windows of 10 highest %.2f\n",
			r.mode.name, first.ratio(), first.compactions, len(r.cps), all.ratio(), all.compactions, all.bases, ws[len(ws)-1])
	}
	return nil
}

// cp is what one measured checkpoint did.
type cp struct {
	changed, uploaded           int64
	flushes, compactions        int64
	flushBytes, compactionBytes int64
	stalls                      int64
	sortedRuns                  int
	liveSST                     int64
	base                        bool
}

type result struct {
	mode    mode
	logical int64
	warmup  time.Duration
	warmCps int
	warmCmp int64
	runs    int // UNIVERSAL: sorted runs that start a compaction
	share   float64
	elapsed time.Duration
	cps     []cp
	// restoring the last checkpoint
	restore      time.Duration
	restoreBytes int64
	restoreFiles int
}

// totals is the sum over consecutive checkpoints.
type totals struct {
	changed, uploaded, compactions, compactionBytes, flushes, stalls, bases int64
	maxRuns                                                                 int
	sumRuns                                                                 int
	maxLive                                                                 int64
	n                                                                       int
}

func (t totals) ratio() float64 { return float64(t.uploaded) / float64(t.changed) }

func (r result) span(from, to int) totals {
	var t totals
	for _, c := range r.cps[from:to] {
		t.changed += c.changed
		t.uploaded += c.uploaded
		t.compactions += c.compactions
		t.compactionBytes += c.compactionBytes
		t.flushes += c.flushes
		t.stalls += c.stalls
		if c.base {
			t.bases++
		}
		t.maxRuns = max(t.maxRuns, c.sortedRuns)
		t.sumRuns += c.sortedRuns
		t.maxLive = max(t.maxLive, c.liveSST)
		t.n++
	}
	return t
}

// windows are the ratios of the consecutive 10-checkpoint windows, sorted.
func (r result) windows() []float64 {
	var ws []float64
	for i := 0; i+window <= len(r.cps); i += window {
		ws = append(ws, r.span(i, i+window).ratio())
	}
	slices.Sort(ws)
	return ws
}

func (r result) print(out io.Writer) {
	var what string
	switch {
	case r.mode.deltas:
		what = fmt.Sprintf("universal compaction at %d sorted runs, deltas, base share %.2g; the default for incremental checkpoints", r.runs, r.share)
	case r.mode.style == rocksdb.CompactionUniversal:
		what = fmt.Sprintf("universal compaction at %d sorted runs, every checkpoint a base", r.runs)
	default:
		what = "level compaction, RocksDB's default, every checkpoint a base"
	}
	fmt.Fprintf(out, "  %s (%s): %d warm-up checkpoints in %s, %d compactions\n", r.mode.name, what, r.warmCps, figures.Dur(r.warmup), r.warmCmp)
	line := func(label string, t totals) {
		fmt.Fprintf(out, "    %-16s changed %9s  uploaded %9s  ratio %6.2f   %4d compactions wrote %9s, %d flushes, %d bases\n",
			label, figures.MB(t.changed), figures.MB(t.uploaded), t.ratio(), t.compactions, figures.MB(t.compactionBytes), t.flushes, t.bases)
	}
	line("10 checkpoints", r.span(0, window))
	all := r.span(0, len(r.cps))
	line(fmt.Sprintf("%d checkpoints", len(r.cps)), all)
	ws := r.windows()
	busy, over := 0, 0
	for i := 0; i+window <= len(r.cps); i += window {
		if r.span(i, i+window).compactions > 0 {
			busy++
		}
	}
	for _, w := range ws {
		if w > 2 {
			over++
		}
	}
	fmt.Fprintf(out, "    10-checkpoint windows: ratio lowest %.2f, median %.2f, highest %.2f; %d of %d windows ran compactions, %d above 2.0\n",
		ws[0], ws[len(ws)/2], ws[len(ws)-1], busy, len(ws), over)
	fmt.Fprintf(out, "    sorted runs most %d, mean %.1f; live SST files at most %.2fx the logical bytes; %d write stalls; %s for the measured checkpoints\n",
		all.maxRuns, float64(all.sumRuns)/float64(all.n), float64(all.maxLive)/float64(r.logical), all.stalls, figures.Dur(r.elapsed))
	fmt.Fprintf(out, "    restoring the last checkpoint read %s (%.2fx the logical bytes) from %d files in %s\n",
		figures.MB(r.restoreBytes), float64(r.restoreBytes)/float64(r.logical), r.restoreFiles, figures.Dur(r.restore))
}

// measure runs the warm-up and the measured checkpoints in mode m.
func measure(ctx context.Context, o options, m mode) (result, error) {
	st := m.style
	r := result{mode: m, logical: int64(o.keys) * int64(keyLen+o.value), warmCps: o.warmup, share: o.baseShare}
	measured := o.checkpoints
	if r.runs = o.sortedRuns; r.runs == 0 {
		r.runs = 24 // Config.UniversalSortedRuns's default
	}
	if st == rocksdb.CompactionLevel {
		r.warmCps, measured = o.levelWarmup, o.levelCps
	}
	tmp, err := os.MkdirTemp(o.dir, "sluice-bench-incremental-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(tmp)
	root, err := blobstore.Open(ctx, "file://"+tmp+"/checkpoints")
	if err != nil {
		return r, err
	}
	defer root.Close()
	store, err := root.Sub(blobstore.JobDir(jobID))
	if err != nil {
		return r, err
	}
	cfg := rocksdb.Config{
		Incremental: true, DisableDeltas: !m.deltas, CompactionStyle: st, UniversalSortedRuns: o.sortedRuns,
		WriteBufferSize: o.writeBuffer, BaseShare: o.baseShare, LocalDir: tmp + "/db",
	}
	opts := state.KeyedOptions{OperatorUID: uid, KeyGroups: keygroup.Range{Start: 0, End: maxP - 1}, MaxParallelism: maxP}
	b, err := rocksdb.New(opts, cfg, nil)
	if err != nil {
		return r, err
	}
	defer b.Close()
	id, err := b.Register(state.StateDesc{Name: stateName, Kind: state.KindValue})
	if err != nil {
		return r, err
	}

	keys := make([][]byte, o.keys)
	kgs := make([]int, o.keys)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "key-%08d", i)
		kgs[i] = keygroup.Of(keys[i], maxP)
	}
	rng := rand.New(rand.NewPCG(7, 11))
	val := make([]byte, o.value)
	put := func(i int) (int64, error) {
		for j := 0; j < len(val); j += 8 {
			w := rng.Uint64()
			for k := j; k < min(j+8, len(val)); k++ {
				val[k] = byte(w)
				w >>= 8
			}
		}
		b.SetCurrentKey(keys[i], kgs[i])
		return int64(len(keys[i]) + len(val)), b.Put(id, nil, val)
	}
	for i := range keys {
		if _, err := put(i); err != nil {
			return r, err
		}
	}
	var next int64
	// checkpoint waits for the background work, then takes and confirms a checkpoint.
	// The statistics are those before it: the compactions counted since the previous
	// ones are those whose files it uploads.
	// base says whether it started a new base: every checkpoint without deltas; with
	// them, a native base or a switch to a base of chunks (the first file it references
	// changed).
	var (
		first string
		last  *sluicev1.KeyedStateHandle
	)
	checkpoint := func() (uploaded int64, before rocksdb.CompactionStats, base bool, err error) {
		if err := idle(ctx, b); err != nil {
			return 0, rocksdb.CompactionStats{}, false, err
		}
		before = b.CompactionStats()
		next++
		s, err := b.Snapshot(next)
		if err != nil {
			return 0, before, false, err
		}
		h, err := s.Run(ctx, blobstore.StateFiles{Store: store, ID: next, Prefix: "v0-s0-"})
		if err != nil {
			return 0, before, false, err
		}
		b.NotifyCheckpointComplete(next)
		last = h
		if fs := h.GetSharedFiles(); len(fs) > 0 {
			base = !m.deltas || fs[0].GetPath() != first
			first = fs[0].GetPath()
		}
		return h.GetIncrementalSize(), before, base, nil
	}
	change := func() (int64, error) {
		var n int64
		for range max(1, int(float64(o.keys)*o.change)) {
			c, err := put(rng.IntN(o.keys))
			if err != nil {
				return 0, err
			}
			n += c
		}
		return n, nil
	}

	start := time.Now()
	var prev rocksdb.CompactionStats
	if _, prev, _, err = checkpoint(); err != nil {
		return r, err
	}
	for range r.warmCps {
		if _, err := change(); err != nil {
			return r, err
		}
		if _, prev, _, err = checkpoint(); err != nil {
			return r, err
		}
	}
	r.warmup = time.Since(start)
	r.warmCmp = prev.Compactions
	start = time.Now()
	for range measured {
		var c cp
		if c.changed, err = change(); err != nil {
			return r, err
		}
		var s rocksdb.CompactionStats
		if c.uploaded, s, c.base, err = checkpoint(); err != nil {
			return r, err
		}
		// The previous checkpoint's flush, and the compactions it triggered, which ran
		// while the changes were written: their files are what this checkpoint uploads
		// besides its own flush.
		c.flushes, c.flushBytes = s.Flushes-prev.Flushes, s.FlushBytes-prev.FlushBytes
		c.compactions, c.compactionBytes = s.Compactions-prev.Compactions, s.CompactionBytes-prev.CompactionBytes
		c.stalls = s.WriteStalls - prev.WriteStalls
		c.sortedRuns = s.SortedRuns
		c.liveSST = int64(b.Properties().LiveSSTFilesSize)
		prev = s
		r.cps = append(r.cps, c)
	}
	r.elapsed = time.Since(start)

	// What restoring the last checkpoint reads and costs: with deltas, the base and the
	// deltas since the stage it came from started.
	rb, err := rocksdb.New(opts, cfg, nil)
	if err != nil {
		return r, err
	}
	defer rb.Close()
	start = time.Now()
	if err := rb.Restore(ctx, []*sluicev1.KeyedStateHandle{last}, blobstore.StateFiles{Store: store, ID: next}); err != nil {
		return r, fmt.Errorf("restore checkpoint %d: %w", next, err)
	}
	r.restore, r.restoreBytes, r.restoreFiles = time.Since(start), rb.LastRestore().RemoteBytes, len(last.GetSharedFiles())+len(last.GetPrivateFiles())
	return r, nil
}

// idle waits until b runs no flush or compaction, and has run none for 20 ms (a
// compaction a flush triggers starts at once).
func idle(ctx context.Context, b *rocksdb.Backend) error {
	quiet := 0
	for quiet < 10 {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := b.Properties()
		if p.NumRunningCompactions == 0 && p.NumRunningFlushes == 0 {
			quiet++
		} else {
			quiet = 0
		}
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}
