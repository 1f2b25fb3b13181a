//go:build cgo

// Command bench-restore measures local recovery: restoring RocksDB keyed state from the
// task manager's local copy of its latest confirmed checkpoint, against restoring the
// same checkpoint from the checkpoint storage, in the same run.
//
// It fills one RocksDB backend (one subtask, 128 key groups) with -size bytes of keyed
// value state, by default 1 GB of int64 keys with -value random (incompressible)
// bytes each, takes an incremental checkpoint into a file:// blob store with local
// recovery on, confirms it and closes the backend, as a task manager that is killed
// leaves it. Then, -runs times each, it restores that checkpoint into a new backend:
//
//   - remote: local recovery off: every file is downloaded from the blob store (copied,
//     and verified against its size and SHA-256), as a restore on another machine;
//   - local: local recovery on: the local copy is verified (sizes and CRC-32C) and its
//     SST files hard-linked into the database directory.
//
// Each restore ends with the database open and is checked: the backend's restore report
// must show the bytes read where expected (no remote byte for the local restore), and
// sampled keys must hold their values. It prints the median of each, and the ratio
// local/remote (the floor is 0.3, its goal a local restore under 1 s for 1 GB).
// The page cache holds the blob store's files as well as the local copy: the remote
// figure is a best case for the checkpoint storage.
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
	jobID     = "bench-restore"
	uid       = "state"
	stateName = "value"
)

type options struct {
	size  int64
	value int
	runs  int
	dir   string
}

func main() {
	var o options
	flag.Int64Var(&o.size, "size", 1<<30, "bytes of keys and values in the state")
	flag.IntVar(&o.value, "value", 100, "bytes of each value")
	flag.IntVar(&o.runs, "runs", 3, "restores of each kind; the median is reported")
	flag.StringVar(&o.dir, "dir", "", "parent of the temporary directory (default $TMPDIR); the state needs about 3x -size of disk")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		stop()
		fmt.Fprintf(os.Stderr, "bench-restore: %v\n", err)
		os.Exit(1)
	}
}

func opts(restoreID int64) state.KeyedOptions {
	// The default inline threshold, as task managers use it: the small private files
	// (the meta file, CURRENT, a small MANIFEST) travel inline in the handle.
	return state.KeyedOptions{OperatorUID: uid, KeyGroups: keygroup.Range{Start: 0, End: maxP - 1}, MaxParallelism: maxP,
		RestoreCheckpointID: restoreID}
}

func run(ctx context.Context, o options, out io.Writer) error {
	if o.size < 1<<20 || o.value < 1 || o.runs < 1 {
		return errors.New("invalid flags: need -size >= 1 MiB, -value >= 1, -runs >= 1")
	}
	tmp, err := os.MkdirTemp(o.dir, "sluice-bench-restore-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	root, err := blobstore.Open(ctx, "file://"+filepath.Join(tmp, "checkpoints"))
	if err != nil {
		return err
	}
	defer root.Close()
	store, err := root.Sub(blobstore.JobDir(jobID))
	if err != nil {
		return err
	}
	files := blobstore.StateFiles{Store: store, ID: 1, Prefix: "v0-s0-"}
	local := rocksdb.LocalRecovery{Dir: filepath.Join(tmp, "local"), JobID: jobID}
	cfg := rocksdb.Config{Incremental: true, LocalDir: filepath.Join(tmp, "db"), TransferThreads: 4, LocalRecovery: local}

	keys := uint64(o.size / int64(8+o.value))
	fmt.Fprintf(out, "local recovery benchmark: %d CPUs, %s\n", runtime.NumCPU(), runtime.Version())
	fmt.Fprintf(out, "== %d keys x (8 + %d) bytes = %s of keyed value state in one RocksDB backend, incremental checkpoint to file://\n",
		keys, o.value, figures.MB(int64(keys)*int64(8+o.value)))
	t0 := time.Now()
	h, err := build(ctx, cfg, files, keys, o.value)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  state written and checkpointed in %s: checkpoint full size %s in %d shared files\n",
		figures.Dur(time.Since(t0)), figures.MB(h.GetFullSize()), len(h.GetSharedFiles()))

	remoteCfg := cfg
	remoteCfg.LocalRecovery = rocksdb.LocalRecovery{}
	var remote, localD []time.Duration
	var rs, ls state.RestoreStats
	for i := 1; i <= o.runs; i++ {
		d, st, err := restore(ctx, remoteCfg, files, h, keys, o.value)
		if err != nil {
			return fmt.Errorf("remote restore %d: %w", i, err)
		}
		if st.LocalBytes != 0 || st.RemoteBytes < h.GetFullSize()/2 {
			return fmt.Errorf("remote restore %d read %d bytes locally and %d remotely, want all remote", i, st.LocalBytes, st.RemoteBytes)
		}
		remote, rs = append(remote, d), st
		d, st, err = restore(ctx, cfg, files, h, keys, o.value)
		if err != nil {
			return fmt.Errorf("local restore %d: %w", i, err)
		}
		if st.RemoteBytes != 0 || st.LocalCheckpointID != 1 {
			return fmt.Errorf("local restore %d read %d bytes remotely (local copy of checkpoint %d; %s), want none", i, st.RemoteBytes, st.LocalCheckpointID, st.Fallback)
		}
		localD, ls = append(localD, d), st
		fmt.Fprintf(out, "  run %d  remote %s  local %s\n", i, figures.Dur(remote[i-1]), figures.Dur(d))
	}
	mr, ml := median(remote), median(localD)
	fmt.Fprintf(out, "median of %d runs (each restore opens the database and checks sampled keys):\n", o.runs)
	fmt.Fprintf(out, "  remote restore  %s  %s downloaded, verified (SHA-256)      %s\n", figures.Dur(mr), figures.MB(rs.RemoteBytes), figures.Rate(rs.RemoteBytes, mr))
	fmt.Fprintf(out, "  local restore   %s  %s from the local copy (CRC-32C), 0 bytes remote  %s\n", figures.Dur(ml), figures.MB(ls.LocalBytes), figures.Rate(ls.LocalBytes, ml))
	fmt.Fprintf(out, "  ratio local/remote %.2f (time; floor 0.30, goal: local under 1 s for 1 GB)\n", ml.Seconds()/mr.Seconds())
	return nil
}

// build writes the state and takes checkpoint 1 with local recovery, confirms it and
// closes the backend; the local copy stays.
func build(ctx context.Context, cfg rocksdb.Config, files blobstore.StateFiles, keys uint64, valueLen int) (*sluicev1.KeyedStateHandle, error) {
	b, err := rocksdb.New(opts(0), cfg, nil)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	id, err := b.Register(state.StateDesc{Name: stateName, Kind: state.KindValue})
	if err != nil {
		return nil, err
	}
	kb, vb := []byte(nil), make([]byte, valueLen)
	for k := range keys {
		if k%1_000_000 == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
		}
		kb = statedata.Key(kb, k)
		b.SetCurrentKey(kb, keygroup.Of(kb, maxP))
		if err := b.Put(id, nil, statedata.Value(vb, k, 0xbe7c4)); err != nil {
			return nil, err
		}
	}
	snap, err := b.Snapshot(1)
	if err != nil {
		return nil, err
	}
	h, err := snap.Run(ctx, files)
	if err != nil {
		return nil, err
	}
	b.NotifyCheckpointComplete(1)
	return h, nil
}

// restore restores h into a new backend, checks sampled keys, and returns the time the
// Restore call took and what it read.
func restore(ctx context.Context, cfg rocksdb.Config, files blobstore.StateFiles, h *sluicev1.KeyedStateHandle, keys uint64, valueLen int) (time.Duration, state.RestoreStats, error) {
	b, err := rocksdb.New(opts(1), cfg, nil)
	if err != nil {
		return 0, state.RestoreStats{}, err
	}
	defer b.Close()
	runtime.GC()
	t0 := time.Now()
	err = b.Restore(ctx, []*sluicev1.KeyedStateHandle{h}, files)
	d := time.Since(t0)
	if err != nil {
		return 0, state.RestoreStats{}, err
	}
	id, err := b.Register(state.StateDesc{Name: stateName, Kind: state.KindValue})
	if err != nil {
		return 0, state.RestoreStats{}, err
	}
	kb, want := []byte(nil), make([]byte, valueLen)
	for i := range uint64(1000) {
		k := i * (keys / 1000)
		kb = statedata.Key(kb, k)
		b.SetCurrentKey(kb, keygroup.Of(kb, maxP))
		v, ok, err := b.Get(id, nil)
		if err != nil || !ok || string(v) != string(statedata.Value(want, k, 0xbe7c4)) {
			return 0, state.RestoreStats{}, fmt.Errorf("key %d not restored (found %v, %v)", k, ok, err)
		}
	}
	return d, b.LastRestore(), nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
