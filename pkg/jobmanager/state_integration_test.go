package jobmanager_test

import (
	"context"
	"strings"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestCheckpointStatsAndCompactionWarning: the jobmanager aggregates what the tasks
// acknowledge (longest snapshot phases, full size, pending compaction bytes), keeps the
// latest state metrics per subtask, and raises the compaction warning while the pending
// compaction bytes and the incremental sizes grow over five checkpoints, in the RPCs and
// in streamctl's output; it ends once the pending bytes fall.
func TestCheckpointStatsAndCompactionWarning(t *testing.T) {
	e := startChainEnv(t, 0)
	const mib = 1 << 20
	pending := func(id int64) int64 {
		if id <= 5 {
			return id * 100 * mib
		}
		return mib // compaction caught up
	}
	e.tm.mu.Lock()
	e.tm.ackMetrics = func(id int64, task *sluicev1.ExecutionId) *sluicev1.CheckpointTaskMetrics {
		if task.GetVertex() != 1 {
			return &sluicev1.CheckpointTaskMetrics{SyncMs: 1, AsyncMs: 1}
		}
		sub := int64(task.GetSubtask())
		return &sluicev1.CheckpointTaskMetrics{SyncMs: 3 + sub, AsyncMs: 10 * id, Bytes: id * 1000, FullBytes: 100_000,
			State: &sluicev1.StateMetrics{Backends: 1, EstimatedKeys: 10 + sub, PendingCompactionBytes: pending(id), LiveSstBytes: 4096}}
	}
	e.tm.mu.Unlock()
	job := e.submit(&sluicev1.SubmitJobRequest{})
	list := func() *sluicev1.ListCheckpointsResponse {
		t.Helper()
		cps, err := e.js.ListCheckpoints(context.Background(), &sluicev1.ListCheckpointsRequest{JobId: job})
		if err != nil {
			t.Fatal(err)
		}
		return cps
	}
	for want := int64(1); want <= 5; want++ {
		if id := e.checkpoint(job); id != want {
			t.Fatalf("checkpoint %d, want %d", id, want)
		}
		if w := list().GetCompactionWarning(); w != nil && want < 5 {
			t.Fatalf("warning after checkpoint %d: %v", want, w)
		}
	}
	cps := list()
	for _, cp := range cps.GetCheckpoints() {
		id := cp.GetId()
		if cp.GetMaxSyncMs() != 4 || cp.GetMaxAsyncMs() != 10*id || cp.GetSizeBytes() != 2*id*1000 || cp.GetFullSizeBytes() != 200_000 ||
			cp.GetPendingCompactionBytes() != 2*pending(id) {
			t.Errorf("checkpoint %d: %v", id, cp)
		}
	}
	w := cps.GetCompactionWarning()
	if w.GetSinceCheckpointId() != 5 || w.GetFirstCheckpointId() != 1 || w.GetLastCheckpointId() != 5 ||
		w.GetFirstPendingCompactionBytes() != 200*mib || w.GetLastPendingCompactionBytes() != 1000*mib ||
		w.GetFirstIncrementalBytes() != 2000 || w.GetLastIncrementalBytes() != 10000 ||
		!strings.Contains(w.GetMessage(), "state.backend.rocksdb.thread.num") {
		t.Fatalf("warning after checkpoint 5: %v", w)
	}
	out, err := e.ctl("checkpoints", job)
	if err != nil || !strings.HasPrefix(out, "WARNING (since checkpoint 5): RocksDB compaction falls behind") {
		t.Fatalf("streamctl checkpoints: %v\n%s", err, out)
	}
	if r := row(out, "3", "discarded"); !strings.Contains(strings.Join(strings.Fields(r), " "), "4ms 30ms") {
		t.Errorf("row of checkpoint 3: %q\n%s", r, out)
	}

	// The latest state metrics per subtask came with the acknowledgements.
	sm, err := e.js.GetStateMetrics(context.Background(), &sluicev1.GetStateMetricsRequest{JobId: job})
	if err != nil {
		t.Fatal(err)
	}
	if len(sm.GetSubtasks()) != 4 || sm.GetCompactionWarning() == nil || sm.GetAttempt() != 1 {
		t.Fatalf("state metrics: %v", sm)
	}
	for _, s := range sm.GetSubtasks() {
		m := s.GetMetrics()
		switch {
		case s.GetVertex() == 0 && m != nil:
			t.Errorf("source subtask %d reports %v", s.GetSubtask(), m)
		case s.GetVertex() == 1 && (m.GetPendingCompactionBytes() != 500*mib || m.GetEstimatedKeys() != 10+int64(s.GetSubtask()) || s.GetMetricsUnixMs() == 0):
			t.Errorf("keyed subtask %d: %v", s.GetSubtask(), s)
		}
	}
	out, err = e.ctl("state", job)
	if err != nil || !strings.HasPrefix(out, "WARNING (since checkpoint 5):") || !strings.Contains(out, "500.0 MiB") || !strings.Contains(out, "2 more subtasks") {
		t.Fatalf("streamctl state: %v\n%s", err, out)
	}

	// Compaction catches up: the warning ends.
	e.checkpoint(job)
	if w := list().GetCompactionWarning(); w != nil {
		t.Fatalf("warning after the pending bytes fell: %v", w)
	}
	if out, err := e.ctl("checkpoints", job); err != nil || strings.Contains(out, "WARNING") {
		t.Fatalf("streamctl checkpoints: %v\n%s", err, out)
	}
}
