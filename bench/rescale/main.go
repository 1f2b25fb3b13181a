//go:build cgo

// Command bench-rescale measures rescaling RocksDB keyed state by key groups: the time
// to restore a checkpoint at another parallelism against restoring it at the
// parallelism it was taken at, in the same run.
//
// The state is -keys keys (default 2M) of keyed value state with -value random bytes
// each (default 100), in 128 key groups, checkpointed into a file:// blob store by one
// subtask (for scale-out) and by two subtasks (for scale-in). A restore creates the new
// subtasks' backends and restores them one after the other, each timed alone: a job's
// subtasks restore at once on their own task managers, so the job's restore time is
// that of its slowest subtask, which is what is reported (restoring them concurrently
// on this one machine would make them share its cores and disk). Each figure is the
// median of -runs restores:
//
//   - scale-out 1 -> 2 against 2 -> 2 (the same subtasks restored without rescaling):
//     each new subtask downloads the one handle and deletes the key groups outside its
//     range (DeleteRange);
//   - scale-in 2 -> 1 against 1 -> 1: the new subtask opens the larger handle and
//     ingests the other's key groups (SST files written by RocksDB and ingested).
//
// So each ratio is what rescaling costs over a restore that ends with the same
// subtasks holding the same state.
// The floor is 3x, its goal 1.2x out and 1.5x in. Restored subtasks are checked:
// the keys of their range only, sampled values.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/bench/internal/figures"
	"github.com/sluice-stream/sluice/bench/internal/statedata"
	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

const (
	maxP      = keygroup.DefaultLowerBound
	uid       = "state"
	stateName = "value"
)

type options struct {
	keys  int
	value int
	runs  int
	dir   string
}

func main() {
	var o options
	flag.IntVar(&o.keys, "keys", 2_000_000, "keys of keyed value state")
	flag.IntVar(&o.value, "value", 100, "bytes of each value")
	flag.IntVar(&o.runs, "runs", 3, "restores of each kind; the median is reported")
	flag.StringVar(&o.dir, "dir", "", "parent of the temporary directory (default $TMPDIR)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		stop()
		fmt.Fprintf(os.Stderr, "bench-rescale: %v\n", err)
		os.Exit(1)
	}
}

// ranges are the key-group ranges of parallelism p.
func ranges(p int) []keygroup.Range {
	out := make([]keygroup.Range, p)
	for i := range p {
		out[i] = keygroup.RangeFor(i, p, maxP)
	}
	return out
}

func opts(subtask int, kgs keygroup.Range) state.KeyedOptions {
	return state.KeyedOptions{OperatorUID: uid, KeyGroups: kgs, MaxParallelism: maxP, Subtask: subtask}
}

type env struct {
	tmp   string
	store *blobstore.Store
	cfg   rocksdb.Config
	keys  int
	value int
}

func run(ctx context.Context, o options, out io.Writer) error {
	if o.keys < 1000 || o.value < 1 || o.runs < 1 {
		return errors.New("invalid flags: need -keys >= 1000, -value >= 1, -runs >= 1")
	}
	tmp, err := os.MkdirTemp(o.dir, "sluice-bench-rescale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root, err := blobstore.Open(ctx, "file://"+filepath.Join(tmp, "checkpoints"))
	if err != nil {
		return err
	}
	defer root.Close()
	store, err := root.Sub(blobstore.JobDir("bench-rescale"))
	if err != nil {
		return err
	}
	e := &env{tmp: tmp, store: store, keys: o.keys, value: o.value,
		cfg: rocksdb.Config{LocalDir: filepath.Join(tmp, "db"), TransferThreads: 4}}

	fmt.Fprintf(out, "rescale benchmark: %d CPUs, %s\n", runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(out, "== %d keys x (8 + %d) bytes of keyed value state, %d key groups, RocksDB, file:// checkpoint storage\n", o.keys, o.value, maxP)
	results := map[string]time.Duration{}
	for _, from := range []int{1, 2} {
		t0 := time.Now()
		hs, err := e.build(ctx, from)
		if err != nil {
			return fmt.Errorf("build at parallelism %d: %w", from, err)
		}
		var size int64
		for _, h := range hs {
			size += h.GetFullSize()
		}
		fmt.Fprintf(out, "  checkpoint at parallelism %d: %d handles, %.1f MB, written in %s\n", from, len(hs), float64(size)/1e6, figures.Dur(time.Since(t0)))
		for _, to := range []int{from, 3 - from} {
			var ds []time.Duration
			for range o.runs {
				d, err := e.restore(ctx, hs, to)
				if err != nil {
					return fmt.Errorf("restore %d -> %d: %w", from, to, err)
				}
				ds = append(ds, d)
			}
			slices.Sort(ds)
			results[fmt.Sprintf("%d->%d", from, to)] = ds[len(ds)/2]
			fmt.Fprintf(out, "  restore %d -> %d  median %s  (runs %v)\n", from, to, figures.Dur(ds[len(ds)/2]), figures.Durs(ds))
		}
	}
	out1 := results["1->2"].Seconds() / results["2->2"].Seconds()
	in1 := results["2->1"].Seconds() / results["1->1"].Seconds()
	fmt.Fprintf(out, "  ratio scale-out (1 -> 2) / (2 -> 2): %.2f (slowest subtask; floor 3, goal 1.2)\n", out1)
	fmt.Fprintf(out, "  ratio scale-in (2 -> 1) / (1 -> 1): %.2f (floor 3, goal 1.5)\n", in1)
	return nil
}

// build fills p backends (the key groups of each subtask at parallelism p), takes
// checkpoint 1 of each and returns the handles.
func (e *env) build(ctx context.Context, p int) ([]*sluicev1.KeyedStateHandle, error) {
	rs := ranges(p)
	bs := make([]*rocksdb.Backend, p)
	ids := make([]state.StateID, p)
	for i, r := range rs {
		b, err := rocksdb.New(opts(i, r), e.cfg, nil)
		if err != nil {
			return nil, err
		}
		defer b.Close()
		if ids[i], err = b.Register(state.StateDesc{Name: stateName, Kind: state.KindValue}); err != nil {
			return nil, err
		}
		bs[i] = b
	}
	kb, vb := []byte(nil), make([]byte, e.value)
	for k := range uint64(e.keys) {
		if k%1_000_000 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		kb = statedata.Key(kb, k)
		kg := keygroup.Of(kb, maxP)
		i := keygroup.OperatorIndex(kg, p, maxP)
		bs[i].SetCurrentKey(kb, kg)
		if err := bs[i].Put(ids[i], nil, statedata.Value(vb, k, 0x5ca1e)); err != nil {
			return nil, err
		}
	}
	var hs []*sluicev1.KeyedStateHandle
	for i, b := range bs {
		snap, err := b.Snapshot(1)
		if err != nil {
			return nil, err
		}
		h, err := snap.Run(ctx, blobstore.StateFiles{Store: e.store, ID: 1, Prefix: fmt.Sprintf("p%d-s%d-", p, i)})
		if err != nil {
			return nil, err
		}
		hs = append(hs, h)
	}
	return hs, nil
}

// restore restores hs at parallelism p, one subtask after the other, and returns the
// longest subtask restore; then it checks each.
func (e *env) restore(ctx context.Context, hs []*sluicev1.KeyedStateHandle, p int) (time.Duration, error) {
	rs := ranges(p)
	bs := make([]*rocksdb.Backend, p)
	for i, r := range rs {
		b, err := rocksdb.New(opts(i, r), e.cfg, nil)
		if err != nil {
			return 0, err
		}
		defer b.Close()
		bs[i] = b
	}
	runtime.GC()
	files := blobstore.StateFiles{Store: e.store, ID: 1}
	var longest time.Duration
	for i, b := range bs {
		var mine []*sluicev1.KeyedStateHandle
		for _, h := range hs {
			hr := keygroup.Range{Start: int(h.GetKeyGroupStart()), End: int(h.GetKeyGroupEnd())}
			if hr.Intersect(rs[i]).Len() > 0 {
				mine = append(mine, h)
			}
		}
		t0 := time.Now()
		if err := b.Restore(ctx, mine, files); err != nil {
			return 0, fmt.Errorf("subtask %d: %w", i, err)
		}
		longest = max(longest, time.Since(t0))
	}
	return longest, e.check(bs, rs)
}

// check samples keys: each is in the subtask owning its key group, with its value, and
// in no other.
func (e *env) check(bs []*rocksdb.Backend, rs []keygroup.Range) error {
	kb, want := []byte(nil), make([]byte, e.value)
	for i, b := range bs {
		id, err := b.Register(state.StateDesc{Name: stateName, Kind: state.KindValue})
		if err != nil {
			return err
		}
		for s := range uint64(2000) {
			k := s * uint64(e.keys/2000)
			kb = statedata.Key(kb, k)
			kg := keygroup.Of(kb, maxP)
			if !rs[i].Contains(kg) {
				continue
			}
			b.SetCurrentKey(kb, kg)
			v, ok, err := b.Get(id, nil)
			if err != nil || !ok || string(v) != string(statedata.Value(want, k, 0x5ca1e)) {
				return fmt.Errorf("subtask %d: key %d not restored (found %v, %v)", i, k, ok, err)
			}
		}
		n := 0
		if err := b.Keys(id, nil, func(k []byte, kg int) error {
			if !rs[i].Contains(kg) {
				return fmt.Errorf("subtask %d holds key group %d, outside %v", i, kg, rs[i])
			}
			n++
			return nil
		}); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("subtask %d restored no key", i)
		}
	}
	return nil
}
