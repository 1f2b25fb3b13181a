package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/heap"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The keyed state of the keyed-count example's "count" operator as one subtask holds it
// at parallelism 1: value state "count" (int64, api.Int64Codec) under int64 keys
// (api.Int64Codec, as api.KeyBy serializes them), all 128 key groups of the default max
// parallelism.
const (
	stateOperatorUID = "count"
	stateName        = "count"
	stateMaxP        = keygroup.DefaultLowerBound
	benchJobID       = "bench-checkpoint"
	// The prefix the task manager gives a subtask's files (vertex 1, subtask 0).
	filePrefix = "v1-s0-"
)

// countOf is the count stored under key k: deterministic, so that a restore can be
// checked key by key.
func countOf(k int) int64 { return int64(k%1000 + 1) }

func stateOptions() state.KeyedOptions {
	return state.KeyedOptions{
		OperatorUID:    stateOperatorUID,
		KeyGroups:      keygroup.Range{Start: 0, End: stateMaxP - 1},
		MaxParallelism: stateMaxP,
		// Always write a file, even for the tiny state of the smoke test (the default
		// inlines snapshots below 16 KiB into the handle; 1M keys are far above it).
		InlineThreshold: -1,
	}
}

// buildState returns a heap backend holding keys keys of value state "count".
func buildState(keys int) (*heap.Backend, error) {
	b, err := heap.New(stateOptions())
	if err != nil {
		return nil, err
	}
	id, err := b.Register(state.StateDesc{Name: stateName, Kind: state.KindValue})
	if err != nil {
		return nil, err
	}
	var kb, vb []byte
	for k := range keys {
		kb = api.Int64Codec{}.Append(kb[:0], int64(k))
		b.SetCurrentKey(kb, keygroup.Of(kb, stateMaxP))
		vb = api.Int64Codec{}.Append(vb[:0], countOf(k))
		if err := b.Put(id, nil, vb); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// checkState checks that b holds exactly keys keys of state "count", each with countOf.
func checkState(b *heap.Backend, keys int) error {
	id, err := b.Register(state.StateDesc{Name: stateName, Kind: state.KindValue})
	if err != nil {
		return err
	}
	n := 0
	if err := b.Keys(id, nil, func([]byte, int) error { n++; return nil }); err != nil {
		return err
	}
	if n != keys {
		return fmt.Errorf("restored %d keys, want %d", n, keys)
	}
	var kb []byte
	for k := range keys {
		kb = api.Int64Codec{}.Append(kb[:0], int64(k))
		b.SetCurrentKey(kb, keygroup.Of(kb, stateMaxP))
		v, ok, err := b.Get(id, nil)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("key %d: not restored", k)
		}
		if got, err := (api.Int64Codec{}).Decode(v); err != nil || got != countOf(k) {
			return fmt.Errorf("key %d: restored count %d (%v), want %d", k, got, err, countOf(k))
		}
	}
	return nil
}

// snapshotRun is one full checkpoint of the state and its restore.
type snapshotRun struct {
	sync, async, restore time.Duration
	bytes                int64
	entries              int64
	// The raw baseline: the same bytes written to the same store with one WriteFile,
	// and read back with one ReadAll (both hash and verify like the checkpoint path).
	rawWrite, rawRead time.Duration
}

func (r snapshotRun) total() time.Duration { return r.sync + r.async }

// snapshotResult is what the state benchmark measured.
type snapshotResult struct {
	keys  int
	build time.Duration
	runs  []snapshotRun
}

// median returns the run with the median total duration, and the medians of the raw
// baseline and of the restore separately.
func (s snapshotResult) median() snapshotRun {
	med := func(f func(snapshotRun) time.Duration) time.Duration {
		ds := make([]time.Duration, len(s.runs))
		for i, r := range s.runs {
			ds[i] = f(r)
		}
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	m := s.runs[0]
	m.sync = med(func(r snapshotRun) time.Duration { return r.sync })
	m.async = med(func(r snapshotRun) time.Duration { return r.async })
	m.restore = med(func(r snapshotRun) time.Duration { return r.restore })
	m.rawWrite = med(func(r snapshotRun) time.Duration { return r.rawWrite })
	m.rawRead = med(func(r snapshotRun) time.Duration { return r.rawRead })
	return m
}

// runSnapshots builds the state of keys keys, then runs runs full checkpoints of it into
// a file:// store under a temporary directory in dir (removed at the end), restoring
// each into a fresh backend and checking it, and measures the raw baseline after each.
// report is called after each run.
func runSnapshots(ctx context.Context, dir string, keys, runs int, report func(int, snapshotRun)) (snapshotResult, error) {
	res := snapshotResult{keys: keys}
	tmp, err := os.MkdirTemp(dir, "sluice-bench-checkpoint-state-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)
	root, err := blobstore.Open(ctx, "file://"+tmp)
	if err != nil {
		return res, err
	}
	defer root.Close()
	store, err := root.Sub(blobstore.JobDir(benchJobID))
	if err != nil {
		return res, err
	}

	start := time.Now()
	b, err := buildState(keys)
	if err != nil {
		return res, fmt.Errorf("build state: %w", err)
	}
	defer b.Close()
	res.build = time.Since(start)

	for i := 1; i <= runs; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		r, err := checkpointOnce(ctx, store, b, int64(i), keys)
		if err != nil {
			return res, fmt.Errorf("checkpoint %d: %w", i, err)
		}
		res.runs = append(res.runs, r)
		if report != nil {
			report(i, r)
		}
	}
	return res, nil
}

// checkpointOnce takes checkpoint id of b as the task manager does (synchronous phase,
// then the asynchronous phase writing through blobstore.StateFiles), restores it into a new backend
// and checks that, then times the raw baseline on the same bytes.
func checkpointOnce(ctx context.Context, store *blobstore.Store, b *heap.Backend, id int64, keys int) (snapshotRun, error) {
	var r snapshotRun
	files := blobstore.StateFiles{Store: store, ID: id, Prefix: filePrefix}
	runtime.GC()

	t0 := time.Now()
	snap, err := b.Snapshot(id)
	r.sync = time.Since(t0)
	if err != nil {
		return r, fmt.Errorf("synchronous phase: %w", err)
	}
	r.entries = snap.Stats().Entries
	t1 := time.Now()
	h, err := snap.Run(ctx, files)
	r.async = time.Since(t1)
	if err != nil {
		return r, fmt.Errorf("asynchronous phase: %w", err)
	}
	if h == nil || h.GetFile().GetPath() == "" {
		return r, errors.New("the snapshot wrote no file")
	}
	r.bytes = h.GetFile().GetSize()

	runtime.GC()
	nb, err := heap.New(stateOptions())
	if err != nil {
		return r, err
	}
	t2 := time.Now()
	err = nb.Restore(ctx, []*sluicev1.KeyedStateHandle{h}, files)
	r.restore = time.Since(t2)
	if err != nil {
		nb.Close()
		return r, fmt.Errorf("restore: %w", err)
	}
	err = checkState(nb, keys)
	nb.Close()
	if err != nil {
		return r, fmt.Errorf("restored state: %w", err)
	}

	// The baseline: the same bytes, one write and one read through the same store.
	data, err := store.ReadAll(ctx, h.GetFile())
	if err != nil {
		return r, err
	}
	runtime.GC()
	rawKey := blobstore.CheckpointPath(id, filePrefix+"raw")
	t3 := time.Now()
	f, err := store.WriteFile(ctx, rawKey, data)
	r.rawWrite = time.Since(t3)
	if err != nil {
		return r, fmt.Errorf("raw write: %w", err)
	}
	data = nil
	runtime.GC()
	t4 := time.Now()
	back, err := store.ReadAll(ctx, f)
	r.rawRead = time.Since(t4)
	if err != nil {
		return r, fmt.Errorf("raw read: %w", err)
	}
	if int64(len(back)) != r.bytes {
		return r, fmt.Errorf("raw read %d bytes, want %d", len(back), r.bytes)
	}
	return r, nil
}
