// Command bench-checkpoint measures checkpointing, each figure beside a raw baseline
// measured in the same run:
//
//  1. state: a full checkpoint of keyed value state on the heap backend, by default
//     1,000,000 keys shaped like the keyed-count example's (int64 keys, int64 counts, 128
//     key groups), written to a file:// blob store in a temporary directory through the
//     task manager's code path (Backend.Snapshot, then the asynchronous phase writing
//     chk-<n>/... through the blob store's Writer, which hashes and fsyncs). It prints the
//     synchronous and asynchronous phase durations, their total, the bytes written, and
//     the duration of a restore of that checkpoint into a fresh backend (read back,
//     verified and decoded; the restored state is then checked key by key). The baseline
//     writes the same bytes to the same store with one Store.WriteFile and reads them with
//     one Store.ReadAll (same hashing, fsync and verification): the ratios are the
//     snapshot's and the restore's throughput over raw I/O. Median of -runs runs.
//  2. job: the keyed-count example job on an in-process cluster (pkg/cluster: a
//     jobmanager and task managers on loopback gRPC), twice: with checkpointing off and
//     the file sink's guarantee none, then with exactly-once checkpoints every -interval
//     and the exactly-once file sink. It prints records/s of both (records over the
//     jobmanager's submission-to-FINISHED time) and the ratio exactly-once/none, the
//     number of checkpoints completed and their median duration and size. The committed
//     output of both runs is checked: every key's seq 1..per-key exactly once, count ==
//     seq.
//
// Both parts use temporary directories under -dir (default $TMPDIR) and remove them.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/bench/internal/figures"
)

type options struct {
	keys  int
	runs  int
	parts string
	dir   string
	v     bool
	job   jobOptions
	// records of each job run (keys × per-key, rounded down to a multiple of keys).
	records int64
}

func main() {
	var o options
	flag.IntVar(&o.keys, "keys", 1_000_000, "state: keys of keyed value state in the checkpoint")
	flag.IntVar(&o.runs, "runs", 3, "state: checkpoints (and restores) measured; the median is reported")
	flag.IntVar(&o.job.keys, "job-keys", 64, "job: keys of the keyed-count job")
	flag.Int64Var(&o.records, "records", 48_000_000, "job: records of each keyed-count run (job-keys × per-key)")
	flag.DurationVar(&o.job.interval, "interval", time.Second, "job: checkpoint interval of the exactly-once run")
	flag.IntVar(&o.job.parallelism, "parallelism", 2, "job: parallelism of the keyed-count job")
	flag.IntVar(&o.job.taskManagers, "task-managers", 2, "job: task managers of the in-process cluster")
	flag.IntVar(&o.job.slots, "slots", 2, "job: slots per task manager")
	flag.DurationVar(&o.job.timeout, "timeout", 2*time.Minute, "job: limit per run")
	flag.StringVar(&o.parts, "parts", "state,job", "parts to run, comma-separated: state, job")
	flag.StringVar(&o.dir, "dir", "", "parent of the temporary directories (default $TMPDIR)")
	flag.BoolVar(&o.v, "v", false, "log the in-process cluster to stderr")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		stop()
		fmt.Fprintf(os.Stderr, "bench-checkpoint: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	var doState, doJob bool
	for p := range strings.SplitSeq(o.parts, ",") {
		switch strings.TrimSpace(p) {
		case "state":
			doState = true
		case "job":
			doJob = true
		default:
			return fmt.Errorf("unknown part %q in -parts (use state, job)", p)
		}
	}
	o.job.dir = o.dir
	if o.job.keys > 0 {
		o.job.perKey = int(o.records / int64(o.job.keys))
	}
	switch {
	case doState && (o.keys < 1 || o.runs < 1):
		return fmt.Errorf("invalid flags: need -keys >= 1 and -runs >= 1")
	case doJob && (o.job.keys < 1 || o.job.perKey < 1 || o.job.interval <= 0 || o.job.parallelism < 1 ||
		o.job.taskManagers < 1 || o.job.slots < 1 || o.job.timeout <= 0):
		return fmt.Errorf("invalid flags: need -job-keys >= 1, -records >= -job-keys, -interval > 0, -parallelism, -task-managers, -slots >= 1, -timeout > 0")
	}
	o.job.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	if o.v {
		o.job.log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	fmt.Fprintf(out, "checkpoint benchmark: %d CPUs, %s\n", runtime.NumCPU(), runtime.Version())
	if doState {
		if err := stateBench(ctx, o, out); err != nil {
			return fmt.Errorf("state: %w", err)
		}
	}
	if doJob {
		if doState {
			fmt.Fprintln(out)
		}
		if err := jobBench(ctx, o.job, out); err != nil {
			return fmt.Errorf("job: %w", err)
		}
	}
	return nil
}

func stateBench(ctx context.Context, o options, out io.Writer) error {
	fmt.Fprintf(out, "== full checkpoint of %d keys of keyed value state (int64 counts), heap backend, file:// store\n", o.keys)
	report := func(i int, r snapshotRun) {
		fmt.Fprintf(out, "  run %d  sync %s  async %s  total %s  %s  restore %s   raw write %s  raw read %s\n",
			i, figures.Dur(r.sync), figures.Dur(r.async), figures.Dur(r.total()), figures.MB(r.bytes), figures.Dur(r.restore), figures.Dur(r.rawWrite), figures.Dur(r.rawRead))
	}
	res, err := runSnapshots(ctx, o.dir, o.keys, o.runs, report)
	if err != nil {
		return err
	}
	m := res.median()
	fmt.Fprintf(out, "  state built in %s; %d entries in %d key groups; restored state checked key by key\n",
		figures.Dur(res.build), m.entries, stateMaxP)
	fmt.Fprintf(out, "median of %d runs:\n", len(res.runs))
	fmt.Fprintf(out, "  checkpoint  sync phase %s  async phase %s  total %s  written %d bytes (%s, %.1f bytes/key)  %s\n",
		figures.Dur(m.sync), figures.Dur(m.async), figures.Dur(m.total()), m.bytes, figures.MB(m.bytes), float64(m.bytes)/float64(res.keys), figures.Rate(m.bytes, m.total()))
	fmt.Fprintf(out, "  restore     %s  %s  %.2f M keys/s\n", figures.Dur(m.restore), figures.Rate(m.bytes, m.restore), float64(res.keys)/m.restore.Seconds()/1e6)
	fmt.Fprintf(out, "  raw write   %s  %s   (the same bytes, one Store.WriteFile: hashed, fsynced, renamed)\n", figures.Dur(m.rawWrite), figures.Rate(m.bytes, m.rawWrite))
	fmt.Fprintf(out, "  raw read    %s  %s   (one Store.ReadAll: verified)\n", figures.Dur(m.rawRead), figures.Rate(m.bytes, m.rawRead))
	fmt.Fprintf(out, "  ratio checkpoint/raw write %.2f (throughput; the checkpoint takes %.1fx the raw write)\n",
		m.rawWrite.Seconds()/m.total().Seconds(), m.total().Seconds()/m.rawWrite.Seconds())
	fmt.Fprintf(out, "  ratio restore/raw read %.2f (throughput; the restore takes %.1fx the raw read)\n",
		m.rawRead.Seconds()/m.restore.Seconds(), m.restore.Seconds()/m.rawRead.Seconds())
	return nil
}

func jobBench(ctx context.Context, o jobOptions, out io.Writer) error {
	fmt.Fprintf(out, "== keyed-count on an in-process cluster (%d task managers x %d slots, parallelism %d): %d keys x %d records, unthrottled\n",
		o.taskManagers, o.slots, o.parallelism, o.keys, o.perKey)
	var runs []jobRun
	for _, eo := range []bool{false, true} {
		r, err := runJob(ctx, o, eo)
		if err != nil {
			what := "checkpointing off"
			if eo {
				what = "exactly-once"
			}
			return fmt.Errorf("%s run: %w", what, err)
		}
		runs = append(runs, r)
		line := fmt.Sprintf("  %-12s  %d records in %s  %10.0f rec/s  output checked (%d lines exactly once)",
			r.label(), r.records, figures.Dur(r.elapsed), r.recPerSec(), r.lines)
		if eo {
			line += fmt.Sprintf("\n                %d checkpoints completed (every %s, %d failed), median duration %s, median size %s",
				r.completed, o.interval, r.failed, figures.Dur(r.medianDuration), figures.MB(r.medianSize))
		} else {
			line += "\n                checkpointing off, file sink guarantee none"
		}
		fmt.Fprintln(out, line)
	}
	fmt.Fprintf(out, "  ratio exactly-once/none %.2f (records/s)\n", runs[1].recPerSec()/runs[0].recPerSec())
	return nil
}
