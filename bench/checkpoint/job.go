package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	_ "github.com/sluice-stream/sluice/examples/jobs" // registers keyed-count
	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/cluster"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	"github.com/sluice-stream/sluice/pkg/rpc"
	"github.com/sluice-stream/sluice/pkg/taskmanager"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// jobOptions configure the keyed-count runs.
type jobOptions struct {
	dir          string // parent of the temporary directory
	keys         int
	perKey       int
	parallelism  int
	taskManagers int
	slots        int
	interval     time.Duration // checkpoint interval of the exactly-once run
	timeout      time.Duration // limit per run
	log          *slog.Logger
}

func (o jobOptions) records() int64 { return int64(o.keys) * int64(o.perKey) }

// jobRun is what one keyed-count run measured.
type jobRun struct {
	exactlyOnce bool
	records     int64 // records the sink consumed (JobStatus.records_out)
	lines       int64 // lines in the committed output files, checked exactly once
	elapsed     time.Duration
	// Checkpoints of the exactly-once run (from ListCheckpoints).
	completed      int
	failed         int
	medianDuration time.Duration
	medianSize     int64
}

func (r jobRun) recPerSec() float64 { return float64(r.records) / r.elapsed.Seconds() }

func (r jobRun) label() string {
	if r.exactlyOnce {
		return "exactly-once"
	}
	return "none"
}

// runJob runs keyed-count once on a fresh in-process cluster: with exactlyOnce,
// checkpoints every o.interval into a file:// store and the exactly-once file sink;
// otherwise checkpointing off and the file sink with guarantee none. The job reads an
// unthrottled sequence (rate 0) of o.keys × o.perKey records; the time is the
// jobmanager's, from submission to FINISHED. The committed output is then checked:
// every key has seq 1..perKey exactly once, with count == seq.
func runJob(ctx context.Context, o jobOptions, exactlyOnce bool) (r jobRun, err error) {
	r.exactlyOnce = exactlyOnce
	tmp, err := os.MkdirTemp(o.dir, "sluice-bench-checkpoint-job-")
	if err != nil {
		return r, err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "out")

	jmCfg := jobmanager.Config{} // no restart strategy: a failure fails the run
	guarantee := "none"
	if exactlyOnce {
		cc := checkpoint.DefaultConfig()
		cc.Interval = o.interval
		cc.HistorySize = 100_000 // keep every checkpoint of the run for the statistics
		jmCfg.Checkpoints = jobmanager.CheckpointConfig{Storage: "file://" + filepath.Join(tmp, "checkpoints"), Coordinator: cc, Retained: 3}
		guarantee = "exactly-once"
	}
	c, err := cluster.Start(cluster.Options{
		TaskManagers: o.taskManagers,
		JobManager:   jmCfg,
		// The buffer timeout of streamctl local.
		TaskManager: taskmanager.Config{Slots: o.slots, BufferTimeout: 100 * time.Millisecond},
		Log:         o.log,
		EtcdDir:     filepath.Join(tmp, "etcd"),
	})
	if err != nil {
		return r, err
	}
	defer func() {
		if serr := c.Stop(); serr != nil && err == nil {
			err = fmt.Errorf("cluster stop: %w", serr)
		}
	}()
	cc, err := rpc.Dial(c.JobManagerAddr)
	if err != nil {
		return r, err
	}
	defer cc.Close()
	js := sluicev1.NewJobServiceClient(cc)
	if err := cluster.WaitForSlots(ctx, js, o.taskManagers*o.slots); err != nil {
		return r, err
	}

	prog, err := api.BuildRegistered("keyed-count", map[string]string{
		"keys": strconv.Itoa(o.keys), "per-key": strconv.Itoa(o.perKey), "rate": "0",
		"out": out, "guarantee": guarantee,
	}, api.Defaults{Parallelism: o.parallelism}, o.log)
	if err != nil {
		return r, err
	}
	rctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	resp, err := js.SubmitJob(rctx, &sluicev1.SubmitJobRequest{JobGraph: prog.Graph})
	if err != nil {
		return r, fmt.Errorf("submit: %w", err)
	}
	id := resp.GetJobId()
	st, err := waitFinished(rctx, js, id)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("%w: the job did not finish within %v", err, o.timeout)
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _ = js.CancelJob(cctx, &sluicev1.CancelJobRequest{JobId: id})
		ccancel()
		return r, err
	}
	r.records = st.GetRecordsOut()
	r.elapsed = time.Duration(st.GetEndTimeUnixMs()-st.GetStartTimeUnixMs()) * time.Millisecond
	if r.records != o.records() {
		return r, fmt.Errorf("the sink consumed %d records, want %d", r.records, o.records())
	}
	if r.elapsed <= 0 {
		return r, fmt.Errorf("job times start %d end %d ms: no duration", st.GetStartTimeUnixMs(), st.GetEndTimeUnixMs())
	}
	if exactlyOnce {
		cps, err := js.ListCheckpoints(rctx, &sluicev1.ListCheckpointsRequest{JobId: id})
		if err != nil {
			return r, fmt.Errorf("list checkpoints: %w", err)
		}
		var durs []time.Duration
		var sizes []int64
		for _, cp := range cps.GetCheckpoints() {
			switch cp.GetStatus() {
			case "completed", "discarded": // discarded: completed, then subsumed
				r.completed++
				durs = append(durs, time.Duration(cp.GetDurationMs())*time.Millisecond)
				sizes = append(sizes, cp.GetSizeBytes())
			case "failed", "unknown":
				r.failed++
			}
		}
		if r.completed == 0 {
			return r, errors.New("no checkpoint completed")
		}
		slices.Sort(durs)
		slices.Sort(sizes)
		r.medianDuration, r.medianSize = durs[len(durs)/2], sizes[len(sizes)/2]
	}
	if r.lines, err = checkOutput(out, o.keys, o.perKey); err != nil {
		return r, fmt.Errorf("output: %w", err)
	}
	return r, nil
}

// waitFinished polls the job until it ends; anything but FINISHED is an error.
func waitFinished(ctx context.Context, js sluicev1.JobServiceClient, id string) (*sluicev1.JobStatus, error) {
	for {
		st, err := js.GetJob(ctx, &sluicev1.GetJobRequest{JobId: id})
		if err != nil {
			return nil, err
		}
		switch st.GetState() {
		case sluicev1.JobState_JOB_STATE_FINISHED:
			return st, nil
		case sluicev1.JobState_JOB_STATE_FAILED, sluicev1.JobState_JOB_STATE_CANCELED:
			return nil, fmt.Errorf("job %s ended %v: %s", id, st.GetState(), st.GetFailure())
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkOutput reads the committed files (part-*; transactions in progress are hidden
// dot files) of keyed-count's file sink: lines key-<k>,<seq>,<count>. Every key
// 0..keys-1 must have every seq 1..perKey exactly once, with count == seq. It returns
// the number of lines.
func checkOutput(dir string, keys, perKey int) (int64, error) {
	files, err := filepath.Glob(filepath.Join(dir, "part-*"))
	if err != nil {
		return 0, err
	}
	if len(files) == 0 && keys*perKey > 0 {
		return 0, fmt.Errorf("no output files in %s", dir)
	}
	seen := make([][]uint64, keys) // a bit per (key, seq)
	for k := range seen {
		seen[k] = make([]uint64, (perKey+64)/64)
	}
	var lines, dups int64
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return lines, err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 64<<10)
		for sc.Scan() {
			line := sc.Bytes()
			k, seq, count, ok := parseLine(line)
			if !ok || k < 0 || k >= keys || seq < 1 || seq > perKey {
				f.Close()
				return lines, fmt.Errorf("%s: unexpected line %q", filepath.Base(name), line)
			}
			if count != seq {
				f.Close()
				return lines, fmt.Errorf("%s: line %q has count != seq", filepath.Base(name), line)
			}
			w, bit := &seen[k][seq/64], uint64(1)<<(seq%64)
			if *w&bit != 0 {
				dups++
			}
			*w |= bit
			lines++
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return lines, fmt.Errorf("%s: %w", filepath.Base(name), err)
		}
	}
	want := int64(keys) * int64(perKey)
	if lines != want || dups != 0 {
		return lines, fmt.Errorf("%d lines, want %d (%d duplicated, %d lost)", lines, want, dups, want-(lines-dups))
	}
	return lines, nil
}

// parseLine parses key-<k>,<seq>,<count> (non-negative decimal numbers).
func parseLine(line []byte) (k, seq, count int, ok bool) {
	rest, found := bytes.CutPrefix(line, []byte("key-"))
	if !found {
		return 0, 0, 0, false
	}
	var nums [3]int
	for i := range nums {
		n, j := 0, 0
		for ; j < len(rest) && rest[j] >= '0' && rest[j] <= '9'; j++ {
			if n > (math.MaxInt-9)/10 {
				return 0, 0, 0, false
			}
			n = n*10 + int(rest[j]-'0')
		}
		if j == 0 {
			return 0, 0, 0, false
		}
		nums[i], rest = n, rest[j:]
		if i < 2 {
			if len(rest) == 0 || rest[0] != ',' {
				return 0, 0, 0, false
			}
			rest = rest[1:]
		}
	}
	return nums[0], nums[1], nums[2], len(rest) == 0
}
