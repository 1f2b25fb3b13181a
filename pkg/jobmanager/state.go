package jobmanager

import (
	"context"
	"fmt"
	"time"

	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/config"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The keyed state of the running subtasks as their tasks report it: native metrics
// (heartbeats and checkpoint acknowledgements), restore statistics, the per-checkpoint
// aggregates the coordinator does not keep, and the compaction starvation warning.

// setMetrics takes a task's reported metrics. Its state metrics are kept when a report
// has none (the task ended and closed its backends).
func (t *task) setMetrics(m *sluicev1.TaskMetrics, now time.Time) {
	t.metrics = m
	t.setStateMetrics(m.GetState(), now)
}

// setStateMetrics takes the native metrics of a task's keyed state, if any.
func (t *task) setStateMetrics(s *sluicev1.StateMetrics, now time.Time) {
	if s != nil {
		t.stateMetrics, t.stateAt = s, now
	}
}

// restore returns what the task's restore read, nil if it reported no restore.
func (t *task) restore() *sluicev1.RestoreStats {
	m := t.metrics
	if !m.GetRestored() {
		return nil
	}
	return &sluicev1.RestoreStats{LocalBytes: m.GetRestoredLocalBytes(), RemoteBytes: m.GetRestoredRemoteBytes(),
		LocalCheckpointId: m.GetRestoredFromLocalCheckpoint(), Fallback: m.GetRestoreFallback()}
}

// stateStatus describes the task's keyed state; withMetrics adds the native metrics.
func (t *task) stateStatus(withMetrics bool) *sluicev1.SubtaskStateStatus {
	s := &sluicev1.SubtaskStateStatus{
		Vertex: t.id.GetVertex(), VertexName: t.vertex.Name, Subtask: t.id.GetSubtask(), Parallelism: int32(t.vertex.Parallelism),
		TaskManager: t.tm, TaskState: taskStateName(t.state), Restore: t.restore(),
	}
	if withMetrics && t.stateMetrics != nil {
		s.Metrics, s.MetricsUnixMs = t.stateMetrics, t.stateAt.UnixMilli()
	}
	return s
}

// restoredState sums what the visible attempt's tasks read at their restore and lists
// the tasks that reported one.
func (j *job) restoredState() (local, remote int64, subtasks []*sluicev1.SubtaskStateStatus) {
	for _, t := range j.visibleTasks() {
		if r := t.restore(); r != nil {
			local += r.GetLocalBytes()
			remote += r.GetRemoteBytes()
			subtasks = append(subtasks, t.stateStatus(false))
		}
	}
	return local, remote, subtasks
}

// GetStateMetrics returns the keyed state of every subtask of the job's current (or
// last) attempt.
func (jm *JobManager) GetStateMetrics(ctx context.Context, req *sluicev1.GetStateMetricsRequest) (*sluicev1.StateMetricsResponse, error) {
	var resp *sluicev1.StateMetricsResponse
	var lerr error
	err := jm.do(ctx, func() {
		j, err := jm.lookup(req.GetJobId())
		if err != nil {
			lerr = err
			return
		}
		resp = &sluicev1.StateMetricsResponse{JobId: j.id, Attempt: j.attempt}
		tasks := j.visibleTasks()
		if len(j.tasks) == 0 && len(tasks) > 0 {
			resp.Attempt = tasks[0].id.GetAttempt()
		}
		for _, t := range tasks {
			resp.Subtasks = append(resp.Subtasks, t.stateStatus(true))
		}
		resp.RestoredLocalBytes, resp.RestoredRemoteBytes, _ = j.restoredState()
		if j.cp != nil {
			resp.CompactionWarning = j.cp.compactionWarning()
		}
	})
	if err != nil {
		return nil, err
	}
	return resp, lerr
}

// ackStats aggregates the acknowledgements of one checkpoint beyond the coordinator's
// Stats: the longest snapshot phases, the state sizes, and the pending compaction bytes
// of the tasks that reported state metrics.
type ackStats struct {
	tasks             map[checkpoint.TaskID]bool
	maxSync, maxAsync time.Duration
	bytes, fullBytes  int64
	pending           int64
	// reporting counts the tasks that reported state metrics.
	reporting int
}

// addAck records a task's acknowledgement of checkpoint id (a repeated one is ignored,
// as the coordinator ignores it).
func (cp *jobCheckpoints) addAck(id int64, task checkpoint.TaskID, m *sluicev1.CheckpointTaskMetrics) {
	a := cp.acks[id]
	if a == nil {
		a = &ackStats{tasks: map[checkpoint.TaskID]bool{}}
		cp.acks[id] = a
	}
	if a.tasks[task] {
		return
	}
	a.tasks[task] = true
	a.maxSync = max(a.maxSync, time.Duration(m.GetSyncMs())*time.Millisecond)
	a.maxAsync = max(a.maxAsync, time.Duration(m.GetAsyncMs())*time.Millisecond)
	a.bytes += m.GetBytes()
	a.fullBytes += m.GetFullBytes()
	if s := m.GetState(); s != nil {
		a.pending += s.GetPendingCompactionBytes()
		a.reporting++
	}
}

// pruneAcks drops the aggregates of checkpoints the coordinator's history no longer
// lists (every triggered checkpoint enters it at once).
func (cp *jobCheckpoints) pruneAcks() {
	if len(cp.acks) == 0 {
		return
	}
	listed := map[int64]bool{}
	for _, s := range cp.coord.Summary().History {
		listed[s.ID] = true
	}
	for id := range cp.acks {
		if !listed[id] {
			delete(cp.acks, id)
		}
	}
}

// statsProto renders a checkpoint of the history with the acknowledgements' aggregates.
func (cp *jobCheckpoints) statsProto(s checkpoint.Stats) *sluicev1.CheckpointStats {
	p := statsProto(s)
	if a := cp.acks[s.ID]; a != nil {
		p.MaxSyncMs, p.MaxAsyncMs = a.maxSync.Milliseconds(), a.maxAsync.Milliseconds()
		p.FullSizeBytes, p.PendingCompactionBytes = a.fullBytes, a.pending
	}
	return p
}

// observeCompaction feeds a completed checkpoint to the starvation detector and logs
// the warning's onset and end. Savepoints and full checkpoints are left out (their
// size is the whole state, not what changed), as are checkpoints no task reported
// state metrics for.
func (jm *JobManager) observeCompaction(j *job, a checkpoint.NotifyComplete) {
	s := j.cp.acks[a.ID]
	if a.Kind != checkpoint.KindCheckpoint || j.cp.full[a.ID] || s == nil || s.reporting == 0 {
		return
	}
	st := j.cp.starvation.Observe(checkpoint.StarvationSample{CheckpointID: a.ID, PendingCompactionBytes: s.pending, IncrementalBytes: s.bytes})
	switch {
	case st.Onset:
		jm.log.Warn(compactionMessage(st), "job", j.id, "checkpoints", fmt.Sprintf("%d..%d", st.First.CheckpointID, st.Last.CheckpointID),
			"pending_compaction_bytes_first", st.First.PendingCompactionBytes, "pending_compaction_bytes_last", st.Last.PendingCompactionBytes,
			"incremental_bytes_first", st.First.IncrementalBytes, "incremental_bytes_last", st.Last.IncrementalBytes)
	case st.Ended:
		jm.log.Info("RocksDB compaction caught up: pending compaction bytes stopped growing", "job", j.id,
			"since_checkpoint", st.Since, "checkpoint", a.ID, "pending_compaction_bytes", st.Last.PendingCompactionBytes)
	}
}

// compactionWarning renders the starvation warning while it holds (nil otherwise).
func (cp *jobCheckpoints) compactionWarning() *sluicev1.CompactionWarning {
	st := cp.starvation.State()
	if !st.Active {
		return nil
	}
	return &sluicev1.CompactionWarning{
		SinceCheckpointId: st.Since, FirstCheckpointId: st.First.CheckpointID, LastCheckpointId: st.Last.CheckpointID,
		FirstPendingCompactionBytes: st.First.PendingCompactionBytes, LastPendingCompactionBytes: st.Last.PendingCompactionBytes,
		FirstIncrementalBytes: st.First.IncrementalBytes, LastIncrementalBytes: st.Last.IncrementalBytes,
		Message: compactionMessage(st),
	}
}

// compactionMessage says what the detector saw and what to do about it.
func compactionMessage(st checkpoint.Starvation) string {
	return fmt.Sprintf("RocksDB compaction falls behind the writes: pending compaction bytes grew from %s to %s over checkpoints %d..%d "+
		"while incremental checkpoints grew from %s to %s; RocksDB will slow and then stop writes. Raise the background jobs "+
		"(state.backend.rocksdb.thread.num) or the write buffers (state.backend.rocksdb.writebuffer.size, .count), "+
		"or checkpoint less often (execution.checkpointing.interval)",
		config.FormatBytes(st.First.PendingCompactionBytes), config.FormatBytes(st.Last.PendingCompactionBytes), st.First.CheckpointID, st.Last.CheckpointID,
		config.FormatBytes(st.First.IncrementalBytes), config.FormatBytes(st.Last.IncrementalBytes))
}
