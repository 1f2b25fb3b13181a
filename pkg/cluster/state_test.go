package cluster_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/cli"
	"github.com/sluice-stream/sluice/pkg/cluster"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// streamctl runs streamctl against the cluster and returns its output.
func streamctl(t *testing.T, c *cluster.Cluster, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	root := cli.Streamctl(&out, &errOut)
	root.SetArgs(append([]string{"--jobmanager", c.JobManagerAddr}, args...))
	if err := root.Execute(); err != nil {
		t.Fatalf("streamctl %s: %v (%s)", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

// TestRocksDBStateMetrics: the native metrics of every keyed subtask of a RocksDB job
// reach the jobmanager (heartbeats and checkpoint acknowledgements) and `streamctl
// state`; checkpoint stats carry the snapshot phases and the full size. After a
// failover, the restored subtasks' statistics reach the job status.
func TestRocksDBStateMetrics(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 100 * time.Millisecond
	c, js := startRocksDB(t, 2, 2, jobmanager.CheckpointConfig{Storage: "file://" + t.TempDir(), Coordinator: cc, Retained: 2}, 3)
	t.Cleanup(func() { failSnapshotAt.Store(0) })
	out := t.TempDir()
	id := submit(t, js, "faulty-count", 2, map[string]string{"keys": "200", "per-key": "40", "rate": "1600", "out": out})
	ctx := context.Background()

	// Every subtask of the keyed chain reports RocksDB's metrics once a checkpoint
	// flushed its memtables; the source reports none.
	var sm *sluicev1.StateMetricsResponse
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		if sm, err = js.GetStateMetrics(ctx, &sluicev1.GetStateMetricsRequest{JobId: id}); err != nil {
			t.Fatal(err)
		}
		st := getJob(t, js, id)
		if st.GetLatestCheckpointId() >= 2 && keyedMetricsReported(sm) {
			break
		}
		if time.Now().After(deadline) || st.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
			t.Fatalf("no state metrics of every keyed subtask after checkpoint %d (job %v %s): %v", st.GetLatestCheckpointId(), st.GetState(), st.GetFailure(), sm)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, s := range sm.GetSubtasks() {
		m := s.GetMetrics()
		switch {
		case strings.HasPrefix(s.GetVertexName(), "count"):
			if m.GetBackends() != 1 || m.GetBlockCacheCapacityBytes() == 0 || m.GetTotalSstBytes() < m.GetLiveSstBytes() || s.GetMetricsUnixMs() == 0 {
				t.Errorf("subtask %s (%d): metrics %v", s.GetVertexName(), s.GetSubtask(), m)
			}
		case m != nil:
			t.Errorf("subtask %s (%d) without keyed state reports metrics %v", s.GetVertexName(), s.GetSubtask(), m)
		}
		if s.GetRestore() != nil {
			t.Errorf("subtask %s (%d) reports a restore in the first attempt: %v", s.GetVertexName(), s.GetSubtask(), s.GetRestore())
		}
	}
	table := streamctl(t, c, "state", id)
	if !strings.Contains(table, "PENDING COMPACTION") || !strings.Contains(table, "count -> sink (1/2)") || !strings.Contains(table, "count -> sink (2/2)") {
		t.Errorf("streamctl state:\n%s", table)
	}
	t.Logf("streamctl state:\n%s", table)

	// The checkpoint stats: full sizes, and the snapshot phases (milliseconds, so at
	// least one of a few checkpoints takes one).
	deadline = time.Now().Add(20 * time.Second)
	for {
		cps, err := js.ListCheckpoints(ctx, &sluicev1.ListCheckpointsRequest{JobId: id})
		if err != nil {
			t.Fatal(err)
		}
		phases, completed := false, 0
		for _, cp := range cps.GetCheckpoints() {
			if cp.GetStatus() != "completed" && cp.GetStatus() != "discarded" {
				continue
			}
			completed++
			if cp.GetFullSizeBytes() < cp.GetSizeBytes() || cp.GetFullSizeBytes() == 0 {
				t.Fatalf("checkpoint %d: size %d, full size %d", cp.GetId(), cp.GetSizeBytes(), cp.GetFullSizeBytes())
			}
			phases = phases || cp.GetMaxSyncMs() > 0 || cp.GetMaxAsyncMs() > 0
		}
		if phases {
			if cps.GetCompactionWarning() != nil {
				t.Errorf("compaction warning for a small job: %v", cps.GetCompactionWarning())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot phase in %d completed checkpoints: %v", completed, cps.GetCheckpoints())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if table := streamctl(t, c, "checkpoints", id); !strings.Contains(table, "SYNC") || !strings.Contains(table, "STATE SIZE") {
		t.Errorf("streamctl checkpoints:\n%s", table)
	}

	// A failed snapshot fails the job over; the next attempt restores the latest
	// checkpoint from the checkpoint storage (no local recovery here).
	failSnapshotAt.Store(getJob(t, js, id).GetLatestCheckpointId() + 2)
	st := waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	if st.GetRestores() < 1 {
		t.Fatalf("restores %d, want a failover that restored a checkpoint", st.GetRestores())
	}
	verifyCounts(t, out, 200, 40)
	if len(st.GetRestoredSubtasks()) != 2 || st.GetRestoredRemoteBytes() == 0 {
		t.Fatalf("after the restore: remote %d local %d bytes, subtasks %v", st.GetRestoredRemoteBytes(), st.GetRestoredLocalBytes(), st.GetRestoredSubtasks())
	}
	for _, s := range st.GetRestoredSubtasks() {
		if !strings.HasPrefix(s.GetVertexName(), "count") || s.GetRestore().GetRemoteBytes() == 0 {
			t.Errorf("restored subtask %v", s)
		}
	}
	status := streamctl(t, c, "status", id)
	if !strings.Contains(status, "RESTORED") || !strings.Contains(status, "remote") {
		t.Errorf("streamctl status:\n%s", status)
	}
	t.Logf("streamctl status:\n%s", status)
}

// keyedMetricsReported: every subtask of the keyed chain reported keys in SST files.
func keyedMetricsReported(sm *sluicev1.StateMetricsResponse) bool {
	n := 0
	for _, s := range sm.GetSubtasks() {
		if !strings.HasPrefix(s.GetVertexName(), "count") {
			continue
		}
		if m := s.GetMetrics(); m.GetEstimatedKeys() == 0 || m.GetLiveSstBytes() == 0 {
			return false
		}
		n++
	}
	return n == 2
}
