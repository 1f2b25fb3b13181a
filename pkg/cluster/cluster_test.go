package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "github.com/sluice-stream/sluice/examples/jobs"
	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/cluster"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	"github.com/sluice-stream/sluice/pkg/program"
	"github.com/sluice-stream/sluice/pkg/restart"
	"github.com/sluice-stream/sluice/pkg/rpc"
	"github.com/sluice-stream/sluice/pkg/taskmanager"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startCluster(t *testing.T, tms, slots int) (*cluster.Cluster, sluicev1.JobServiceClient) {
	t.Helper()
	return startWith(t, tms, slots, jobmanager.CheckpointConfig{}, 3)
}

// startWith starts an in-process cluster of tms task managers with slots each, fast
// heartbeats, a fixed-delay restart strategy of the given attempts and checkpointing as
// given; it stops with the test.
func startWith(t *testing.T, tms, slots int, cps jobmanager.CheckpointConfig, attempts int) (*cluster.Cluster, sluicev1.JobServiceClient) {
	t.Helper()
	c, err := cluster.Start(cluster.Options{
		TaskManagers: tms,
		JobManager: jobmanager.Config{
			HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: time.Second,
			NewRestartStrategy: func() restart.Strategy {
				s, _ := restart.NewFixedDelay(attempts, 100*time.Millisecond)
				return s
			},
			Checkpoints: cps,
		},
		TaskManager: taskmanager.Config{Slots: slots, BufferTimeout: 10 * time.Millisecond},
		Log:         testLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := rpc.Dial(c.JobManagerAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		if err := c.Stop(); err != nil {
			t.Errorf("cluster stop: %v", err)
		}
	})
	return c, sluicev1.NewJobServiceClient(cc)
}

// waitState polls the job until it reaches want (or a terminal state), failing on timeout.
func waitState(t *testing.T, js sluicev1.JobServiceClient, id string, want sluicev1.JobState, timeout time.Duration) *sluicev1.JobStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var st *sluicev1.JobStatus
	for time.Now().Before(deadline) {
		var err error
		st, err = js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetState() == want {
			return st
		}
		switch st.GetState() {
		case sluicev1.JobState_JOB_STATE_FAILED, sluicev1.JobState_JOB_STATE_CANCELED, sluicev1.JobState_JOB_STATE_FINISHED:
			t.Fatalf("job ended %v (failure: %s), want %v", st.GetState(), st.GetFailure(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("job still %v after %s (failure: %s), want %v", st.GetState(), timeout, st.GetFailure(), want)
	return nil
}

func submit(t *testing.T, js sluicev1.JobServiceClient, name string, p int, args map[string]string) string {
	t.Helper()
	prog, err := api.BuildRegistered(name, args, api.Defaults{Parallelism: p}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := js.SubmitJob(context.Background(), &sluicev1.SubmitJobRequest{JobGraph: prog.Graph})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetJobId()
}

// verifyCounts reads key,seq,count lines and checks that every key has exactly
// seq 1..perKey once, in order per file, with count == seq.
func verifyCounts(t *testing.T, dir string, keys, perKey int) {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "part-*"))
	if len(files) == 0 {
		t.Fatalf("no output files in %s", dir)
	}
	seen := map[string][]int{}
	total := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			parts := strings.Split(line, ",")
			if len(parts) != 3 {
				t.Fatalf("%s: bad line %q", f, line)
			}
			seq, _ := strconv.Atoi(parts[1])
			count, _ := strconv.Atoi(parts[2])
			if seq != count {
				t.Fatalf("%s: inconsistent line %q (count != seq)", f, line)
			}
			seen[parts[0]] = append(seen[parts[0]], seq)
			total++
		}
	}
	lost, dup := 0, 0
	for k := 0; k < keys; k++ {
		seqs := seen[fmt.Sprintf("key-%d", k)]
		sort.Ints(seqs)
		got := map[int]int{}
		for _, s := range seqs {
			got[s]++
		}
		for s := 1; s <= perKey; s++ {
			switch got[s] {
			case 0:
				lost++
			case 1:
			default:
				dup += got[s] - 1
			}
		}
	}
	if lost != 0 || dup != 0 || total != keys*perKey {
		t.Fatalf("output: %d records, want %d; lost %d, duplicated %d", total, keys*perKey, lost, dup)
	}
}

func TestKeyedCountAcrossTaskManagers(t *testing.T) {
	_, js := startCluster(t, 3, 2)
	out := t.TempDir()
	id := submit(t, js, "keyed-count", 3, map[string]string{"keys": "50", "per-key": "200", "out": out, "source-parallelism": "2"})
	st := waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 30*time.Second)
	verifyCounts(t, out, 50, 200)
	if st.GetRecordsIn() != 50*200 || st.GetRecordsOut() != 50*200 {
		t.Errorf("status counts in=%d out=%d, want %d", st.GetRecordsIn(), st.GetRecordsOut(), 50*200)
	}
}

func TestCancelFreesSlots(t *testing.T) {
	_, js := startCluster(t, 2, 1)
	id := submit(t, js, "keyed-count", 2, map[string]string{"keys": "10", "per-key": "0", "rate": "1000", "out": t.TempDir()})
	waitState(t, js, id, sluicev1.JobState_JOB_STATE_RUNNING, 10*time.Second)
	if _, err := js.CancelJob(context.Background(), &sluicev1.CancelJobRequest{JobId: id}); err != nil {
		t.Fatal(err)
	}
	waitState(t, js, id, sluicev1.JobState_JOB_STATE_CANCELED, 10*time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for {
		tms, err := js.ListTaskManagers(context.Background(), &sluicev1.ListTaskManagersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		free := 0
		for _, tm := range tms.GetTaskManagers() {
			free += int(tm.GetFreeSlots())
		}
		if free == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("free slots %d after cancel, want 2", free)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestTaskManagerLossRestartsOnSurvivors(t *testing.T) {
	c, js := startCluster(t, 3, 1)
	out := t.TempDir()
	id := submit(t, js, "keyed-count", 2, map[string]string{"keys": "20", "per-key": "300", "rate": "3000", "out": out})
	st := waitState(t, js, id, sluicev1.JobState_JOB_STATE_RUNNING, 10*time.Second)
	_ = st
	// Stop one task manager that runs a task of the job.
	time.Sleep(300 * time.Millisecond)
	stopBusyTaskManager(t, c, js)
	st = waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	if st.GetRestarts() < 1 {
		t.Errorf("restarts = %d, want >= 1", st.GetRestarts())
	}
	verifyCounts(t, out, 20, 300)
}

func TestSpecJobExactOutput(t *testing.T) {
	_, js := startCluster(t, 2, 2)
	out := t.TempDir()
	yaml := fmt.Sprintf(`name: spec-test
parallelism: 2
operators:
  - uid: numbers
    type: sequence
    keys: 30
    perKey: 100
  - uid: doubled
    type: map
    input: numbers
    expr: '{"key": key, "seq": seq, "value": seq * 2}'
  - uid: odd
    type: filter
    input: doubled
    expr: 'seq %% 2 == 1'
    parallelism: 3
  - uid: sums
    type: aggregate
    input: odd
    keyBy: key
    function: sum
    field: value
  - uid: out
    type: file
    input: sums
    path: %s
    format: csv
    fields: [key, seq, sum]
`, out)
	prog, err := program.CompileSpec("test.yaml", []byte(yaml), api.Defaults{}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := js.SubmitJob(context.Background(), &sluicev1.SubmitJobRequest{JobGraph: prog.Graph})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, js, resp.GetJobId(), sluicev1.JobState_JOB_STATE_FINISHED, 30*time.Second)
	// For odd seq s of a key the running sum of 2*seq over odd seqs up to s is
	// 2 * ((s+1)/2)^2.
	files, _ := filepath.Glob(filepath.Join(out, "part-*"))
	lines := 0
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			parts := strings.Split(line, ",")
			seq, _ := strconv.Atoi(parts[1])
			sum, _ := strconv.Atoi(parts[2])
			n := (seq + 1) / 2
			if seq%2 != 1 || sum != 2*n*n {
				t.Fatalf("%s: line %q: want odd seq and sum %d", f, line, 2*n*n)
			}
			lines++
		}
	}
	if lines != 30*50 {
		t.Fatalf("%d lines, want %d", lines, 30*50)
	}
}

// TestBroadcastRebalanceUnion: a broadcast edge delivers every record to every subtask, a
// rebalance edge every record to one, and a union reads both.
func TestBroadcastRebalanceUnion(t *testing.T) {
	_, js := startCluster(t, 2, 3)
	out := t.TempDir()
	yaml := fmt.Sprintf(`name: partitioners
parallelism: 1
operators:
  - uid: numbers
    type: sequence
    keys: 5
    perKey: 20
  - uid: everywhere
    type: map
    input: numbers
    partition: broadcast
    parallelism: 3
    expr: '{"key": key, "seq": seq, "via": "broadcast"}'
  - uid: spread
    type: map
    input: numbers
    partition: rebalance
    parallelism: 3
    expr: '{"key": key, "seq": seq, "via": "rebalance"}'
  - uid: out
    type: file
    inputs: [everywhere, spread]
    parallelism: 2
    path: %s
    format: csv
    fields: [via, key, seq]
`, out)
	prog, err := program.CompileSpec("partitioners.yaml", []byte(yaml), api.Defaults{}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := js.SubmitJob(context.Background(), &sluicev1.SubmitJobRequest{JobGraph: prog.Graph})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, js, resp.GetJobId(), sluicev1.JobState_JOB_STATE_FINISHED, 30*time.Second)
	counts := map[string]int{}
	files, _ := filepath.Glob(filepath.Join(out, "part-*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			counts[line]++
		}
	}
	for k := 0; k < 5; k++ {
		for s := 1; s <= 20; s++ {
			if n := counts[fmt.Sprintf("broadcast,key-%d,%d", k, s)]; n != 3 {
				t.Fatalf("broadcast record key-%d/%d arrived %d times, want 3 (once per subtask)", k, s, n)
			}
			if n := counts[fmt.Sprintf("rebalance,key-%d,%d", k, s)]; n != 1 {
				t.Fatalf("rebalanced record key-%d/%d arrived %d times, want 1", k, s, n)
			}
		}
	}
	if len(counts) != 200 {
		t.Fatalf("%d distinct lines, want 200", len(counts))
	}
}

// TestCheckpointedRestartIsExactlyOnce: with checkpoints, a task manager loss restarts
// the job from the latest completed checkpoint: state restored, sources rewound, sinks'
// open transactions aborted; the output stays exactly once with count == seq.
func TestCheckpointedRestartIsExactlyOnce(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 150 * time.Millisecond
	c, js := startWith(t, 3, 1, jobmanager.CheckpointConfig{Storage: "file://" + t.TempDir(), Coordinator: cc, Retained: 2}, 5)
	out := t.TempDir()
	id := submit(t, js, "keyed-count", 2, map[string]string{"keys": "20", "per-key": "300", "rate": "3000", "out": out})
	// Wait for a completed checkpoint, then take a task manager away.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetLatestCheckpointId() > 0 {
			break
		}
		if time.Now().After(deadline) || st.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			cps, _ := js.ListCheckpoints(context.Background(), &sluicev1.ListCheckpointsRequest{JobId: id})
			t.Fatalf("no checkpoint completed: job %v %s; checkpoints %v", st.GetState(), st.GetFailure(), cps)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopBusyTaskManager(t, c, js)
	st := waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	if st.GetRestores() < 1 {
		t.Errorf("restores = %d, want >= 1 (restarted from a checkpoint)", st.GetRestores())
	}
	verifyCounts(t, out, 20, 300)
}

// stopBusyTaskManager stops a task manager whose slots are all in use (one that runs
// tasks of the job under test).
func stopBusyTaskManager(t *testing.T, c *cluster.Cluster, js sluicev1.JobServiceClient) {
	t.Helper()
	tms, err := js.ListTaskManagers(context.Background(), &sluicev1.ListTaskManagersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tm := range tms.GetTaskManagers() {
		if tm.GetFreeSlots() == 0 {
			if err := c.StopTaskManager(tm.GetId()); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no task manager runs tasks: %v", tms.GetTaskManagers())
}
