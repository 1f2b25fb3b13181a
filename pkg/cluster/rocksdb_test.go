package cluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/cluster"
	"github.com/sluice-stream/sluice/pkg/config"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	"github.com/sluice-stream/sluice/pkg/restart"
	"github.com/sluice-stream/sluice/pkg/rpc"
	"github.com/sluice-stream/sluice/pkg/taskmanager"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// startRocksDB starts a cluster like startWith whose jobmanager deploys tasks with
// the RocksDB backend and incremental checkpoints, and whose task managers keep their
// RocksDB instances in a test directory and share a small memory budget.
func startRocksDB(t *testing.T, tms, slots int, cps jobmanager.CheckpointConfig, attempts int) (*cluster.Cluster, sluicev1.JobServiceClient) {
	t.Helper()
	return startRocksDBWith(t, tms, slots, cps, attempts, "")
}

// startRocksDBWith is startRocksDB, with local recovery when localState is set: the
// task managers keep their local recovery copies under <localState>/<tm ID>.
func startRocksDBWith(t *testing.T, tms, slots int, cps jobmanager.CheckpointConfig, attempts int, localState string) (*cluster.Cluster, sluicev1.JobServiceClient) {
	t.Helper()
	tmState, err := config.FromMap(map[string]string{
		config.RocksDBLocalDir:         t.TempDir(),
		config.RocksDBMemoryFixedPerTM: "64 mb",
	})
	if err != nil {
		t.Fatal(err)
	}
	taskConfig := map[string]string{
		config.StateBackendType:        "rocksdb",
		config.StateBackendIncremental: "true",
	}
	if localState != "" {
		taskConfig[config.StateBackendLocalRecovery] = "true"
	}
	c, err := cluster.Start(cluster.Options{
		TaskManagers: tms,
		JobManager: jobmanager.Config{
			HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: time.Second,
			NewRestartStrategy: func() restart.Strategy {
				s, _ := restart.NewFixedDelay(attempts, 100*time.Millisecond)
				return s
			},
			Checkpoints: cps,
			TaskConfig:  taskConfig,
		},
		TaskManager: taskmanager.Config{Slots: slots, BufferTimeout: 10 * time.Millisecond, State: tmState, LocalStateDir: localState},
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

// checkRocksDBCheckpoints checks that the job's checkpoints are RocksDB's, incremental:
// SST files in shared/, and the latest checkpoint's keyed handles of the counter name
// them.
func checkRocksDBCheckpoints(t *testing.T, dir, id string) {
	t.Helper()
	ssts, _ := filepath.Glob(filepath.Join(dir, id, blobstore.SharedDirName, "*.sst"))
	if len(ssts) == 0 {
		t.Fatalf("no SST file in %s", filepath.Join(dir, id, blobstore.SharedDirName))
	}
	var latest int64 = -1
	chks, _ := filepath.Glob(filepath.Join(dir, id, "chk-*", "_metadata"))
	for _, p := range chks {
		if n, ok := blobstore.ParseCheckpointDir(filepath.Base(filepath.Dir(p))); ok && n > latest {
			latest = n
		}
	}
	if latest < 0 {
		t.Fatalf("no retained checkpoint in %s", filepath.Join(dir, id))
	}
	b, err := os.ReadFile(filepath.Join(dir, id, "chk-"+strconv.FormatInt(latest, 10), "_metadata"))
	if err != nil {
		t.Fatal(err)
	}
	md, err := checkpoint.DecodeMetadata(b)
	if err != nil {
		t.Fatal(err)
	}
	handles, shared := 0, 0
	for _, op := range md.GetOperators() {
		for _, st := range op.GetSubtasks() {
			for _, h := range st.GetKeyed() {
				if h.GetBackend() != "rocksdb" {
					t.Fatalf("operator %s: keyed state written by %q", op.GetUid(), h.GetBackend())
				}
				handles++
				for _, f := range h.GetSharedFiles() {
					if !strings.HasPrefix(f.GetPath(), "shared/") {
						t.Fatalf("shared file %q", f.GetPath())
					}
					if _, err := os.Stat(filepath.Join(dir, id, f.GetPath())); err != nil {
						t.Fatalf("checkpoint %d references a missing file: %v", latest, err)
					}
					shared++
				}
			}
		}
	}
	if handles == 0 || shared == 0 {
		t.Fatalf("checkpoint %d: %d RocksDB handles with %d shared files", latest, handles, shared)
	}
	t.Logf("%d SST files in shared/; checkpoint %d: %d RocksDB handles referencing %d of them", len(ssts), latest, handles, shared)
}

// TestRocksDBIncrementalExactlyOnce: the exactly-once keyed count with the RocksDB
// backend and incremental checkpoints. A snapshot failure fails the job over; it
// restores the latest completed checkpoint (RocksDB files downloaded from the blob
// store, timers and counts included) and finishes with exact output; the checkpoints
// share SST files.
func TestRocksDBIncrementalExactlyOnce(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 100 * time.Millisecond
	dir := t.TempDir()
	_, js := startRocksDB(t, 2, 2, jobmanager.CheckpointConfig{Storage: "file://" + dir, Coordinator: cc, Retained: 2}, 5)
	failSnapshotAt.Store(4)
	t.Cleanup(func() { failSnapshotAt.Store(0) })
	out := t.TempDir()
	id := submit(t, js, "faulty-count", 2, map[string]string{"keys": "20", "per-key": "400", "rate": "2000", "out": out})
	waitCheckpointFailure(t, js, id, "injected failure in the snapshot of checkpoint 4")
	st := waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	if failSnapshotAt.Load() != 0 {
		t.Fatal("the snapshot failure was not injected")
	}
	if st.GetRestarts() < 1 || st.GetRestores() < 1 {
		t.Errorf("restarts %d restores %d, want a failover that restored a checkpoint", st.GetRestarts(), st.GetRestores())
	}
	verifyCounts(t, out, 20, 400)
	checkRocksDBCheckpoints(t, dir, id)
}

// TestRocksDBTaskManagerLoss: losing a task manager restarts the RocksDB job on the
// survivors from the latest incremental checkpoint; the output stays exactly once.
func TestRocksDBTaskManagerLoss(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 150 * time.Millisecond
	dir := t.TempDir()
	c, js := startRocksDB(t, 3, 1, jobmanager.CheckpointConfig{Storage: "file://" + dir, Coordinator: cc, Retained: 2}, 5)
	out := t.TempDir()
	id := submit(t, js, "faulty-count", 2, map[string]string{"keys": "20", "per-key": "300", "rate": "3000", "out": out})
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetLatestCheckpointId() > 2 {
			break
		}
		if time.Now().After(deadline) || st.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
			t.Fatalf("no third checkpoint: job %v %s", st.GetState(), st.GetFailure())
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopBusyTaskManager(t, c, js)
	st := waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	if st.GetRestores() < 1 {
		t.Errorf("restores = %d, want >= 1", st.GetRestores())
	}
	verifyCounts(t, out, 20, 300)
	checkRocksDBCheckpoints(t, dir, id)
}
