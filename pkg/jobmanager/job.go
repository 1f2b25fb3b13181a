package jobmanager

import (
	"fmt"
	"time"

	"github.com/sluice-stream/sluice/pkg/graph"
	"github.com/sluice-stream/sluice/pkg/restart"
	"github.com/sluice-stream/sluice/pkg/scheduler"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The job's state machine. It holds no locks and does no I/O: the jobmanager's loop
// calls its methods with the current time and performs the actions they return.

type actionKind int

const (
	actDeploy actionKind = iota
	actCancel
)

type action struct {
	kind actionKind
	task *task
	tm   *scheduler.TaskManager
}

type task struct {
	id      *sluicev1.ExecutionId
	vertex  *graph.Vertex
	tm      string
	state   sluicev1.TaskState
	metrics *sluicev1.TaskMetrics
	failure string
	// stateMetrics are the latest native metrics of the task's keyed state (from a
	// heartbeat, a state report or a checkpoint acknowledgement), received at stateAt.
	stateMetrics *sluicev1.StateMetrics
	stateAt      time.Time
}

func (t *task) terminal() bool {
	switch t.state {
	case sluicev1.TaskState_TASK_STATE_FINISHED, sluicev1.TaskState_TASK_STATE_CANCELED, sluicev1.TaskState_TASK_STATE_FAILED:
		return true
	}
	return false
}

type job struct {
	id       string
	graph    *sluicev1.JobGraph
	plan     *graph.Plan
	strategy restart.Strategy
	// slotTimeout bounds how long a job waits for enough free slots.
	slotTimeout time.Duration
	// cancelTimeout bounds how long canceled tasks may take to confirm.
	cancelTimeout time.Duration

	state    sluicev1.JobState
	attempt  int64
	restarts int
	failure  string
	start    time.Time
	end      time.Time

	tasks []*task // of the current attempt
	slots []string
	// lastSlots is the previous attempt's placement, preferred by the next one.
	lastSlots []string
	// waitingSince is when the job started waiting for slots (zero when not waiting).
	waitingSince time.Time
	// restartAt is when the next attempt may be scheduled (RESTARTING).
	restartAt time.Time
	// cancelDeadline: tasks not confirmed canceled by then count as gone.
	cancelDeadline time.Time

	// cp is the job's checkpointing (nil: off).
	cp                 *jobCheckpoints
	latestCheckpointAt time.Time

	// loggedState and loggedAttempt are what the loop last logged.
	loggedState   sluicev1.JobState
	loggedAttempt int64

	// lastTasks are the tasks of the last attempt that ended, for status after the end.
	lastTasks []*task

	// restorePath is the retained checkpoint or savepoint the job was submitted to start
	// from, claimMode who owns it, and allowNonRestored whether its state of operators
	// the job lacks is left out.
	restorePath      string
	claimMode        sluicev1.ClaimMode
	allowNonRestored bool
	// stop is the stop (or cancel) with savepoint under way (savepoints.go);
	// savepointPath the savepoint the job ended with. stopped: the savepoint that stops
	// the job completed, so its end is decided: a failure from then on ends it FINISHED
	// (the savepoint holds its state; its sinks commit it, or a restore from it does).
	stop          *savepointOp
	savepointPath string
	stopped       bool
	// cancelTo is the state a cancel ends in (CANCELED; FINISHED once stopped).
	cancelTo sluicev1.JobState
	// attemptLimit is the highest attempt that may start, the one recorded in etcd (-1:
	// no limit, without a metadata store). Recording an attempt before deploying it lets
	// a jobmanager that takes over start above every attempt whose tasks may still run.
	attemptLimit int64
	// rec is the job's record in etcd, written by the jobmanager (see records.go).
	rec recordSync
}

func newJob(id string, g *sluicev1.JobGraph, plan *graph.Plan, strategy restart.Strategy, now time.Time) *job {
	return &job{id: id, graph: g, plan: plan, strategy: strategy, state: sluicev1.JobState_JOB_STATE_CREATED,
		start: now, slotTimeout: 5 * time.Minute, cancelTimeout: 30 * time.Second, attemptLimit: -1}
}

func (j *job) terminal() bool {
	switch j.state {
	case sluicev1.JobState_JOB_STATE_FINISHED, sluicev1.JobState_JOB_STATE_CANCELED, sluicev1.JobState_JOB_STATE_FAILED:
		return true
	}
	return false
}

// trySchedule starts the next attempt when the pool has enough free slots.
func (j *job) trySchedule(pool *scheduler.Pool, now time.Time) []action {
	if j.state != sluicev1.JobState_JOB_STATE_CREATED && j.state != sluicev1.JobState_JOB_STATE_RESTARTING {
		return nil
	}
	if len(j.tasks) > 0 || now.Before(j.restartAt) {
		return nil
	}
	if j.attemptLimit >= 0 && j.attempt >= j.attemptLimit {
		return nil // the next attempt is not recorded in etcd yet
	}
	if j.cp != nil && j.cp.restore.forAttempt != j.attempt+1 {
		return nil // the checkpoint it restores is being chosen (prepareRestore)
	}
	need := j.plan.Slots()
	// Put each subtask back where it ran before, when that task manager is still there
	// (its local files make recovery cheaper); the pool ignores gone task managers.
	var preferred map[int]string
	for i, id := range j.lastSlots {
		if id != "" {
			if preferred == nil {
				preferred = map[int]string{}
			}
			preferred[i] = id
		}
	}
	slots, err := pool.Allocate(need, preferred)
	if err != nil {
		if j.waitingSince.IsZero() {
			j.waitingSince = now
		}
		if now.Sub(j.waitingSince) >= j.slotTimeout {
			j.toFailed(now, fmt.Sprintf("could not get %d slots within %s: %v (start more task managers or lower the parallelism)", need, j.slotTimeout, err))
		}
		return nil
	}
	j.waitingSince = time.Time{}
	j.attempt++
	j.slots = slots
	j.state = sluicev1.JobState_JOB_STATE_RUNNING
	var acts []action
	for vi := range j.plan.Vertices {
		v := &j.plan.Vertices[vi]
		for s := 0; s < v.Parallelism; s++ {
			t := &task{
				id:     &sluicev1.ExecutionId{JobId: j.id, Attempt: j.attempt, Vertex: int32(vi), Subtask: int32(s)},
				vertex: v, tm: slots[s], state: sluicev1.TaskState_TASK_STATE_DEPLOYING,
			}
			j.tasks = append(j.tasks, t)
			acts = append(acts, action{kind: actDeploy, task: t, tm: pool.Get(slots[s])})
		}
	}
	return acts
}

func (j *job) find(id *sluicev1.ExecutionId) *task {
	if id.GetAttempt() != j.attempt {
		return nil
	}
	for _, t := range j.tasks {
		if t.id.GetVertex() == id.GetVertex() && t.id.GetSubtask() == id.GetSubtask() {
			return t
		}
	}
	return nil
}

// taskUpdate applies a task's reported state.
func (j *job) taskUpdate(pool *scheduler.Pool, id *sluicev1.ExecutionId, state sluicev1.TaskState, failure string, m *sluicev1.TaskMetrics, now time.Time) []action {
	t := j.find(id)
	if t == nil || t.terminal() {
		return nil
	}
	if m != nil {
		t.setMetrics(m, now)
	}
	if t.state == sluicev1.TaskState_TASK_STATE_CANCELING {
		switch state {
		case sluicev1.TaskState_TASK_STATE_RUNNING, sluicev1.TaskState_TASK_STATE_ENDING:
			return nil // a late report; the cancel is on its way
		case sluicev1.TaskState_TASK_STATE_FAILED:
			// A task being canceled fails when its neighbours go first (a released
			// channel, a canceled producer): that is the cancel, not a failure.
			state = sluicev1.TaskState_TASK_STATE_CANCELED
		}
	}
	t.state = state
	switch state {
	case sluicev1.TaskState_TASK_STATE_FAILED:
		t.failure = failure
		return j.failover(pool, fmt.Sprintf("task %s (%d/%d) failed on %s: %s", t.vertex.Name, t.id.GetSubtask()+1, t.vertex.Parallelism, t.tm, failure), now)
	case sluicev1.TaskState_TASK_STATE_CANCELED:
		if j.state == sluicev1.JobState_JOB_STATE_RUNNING {
			return j.failover(pool, fmt.Sprintf("task %s (%d/%d) on %s was canceled unexpectedly", t.vertex.Name, t.id.GetSubtask()+1, t.vertex.Parallelism, t.tm), now)
		}
	}
	return j.settle(pool, now)
}

// taskManagerLost fails the tasks that ran on a task manager that is gone (why says how
// it was found out). A loss found only by deploying onto the task manager (unreachable)
// does not count against the restart strategy: the failure that made the job restart
// (the same crash, seen by its peers) already did, and the job restarts at once on the
// task managers that are left.
func (j *job) taskManagerLost(pool *scheduler.Pool, tmID, why string, atDeploy bool, now time.Time) []action {
	// Its slots went with it: never release them later, a task manager registering
	// again under the same ID offers fresh slots.
	for i, id := range j.slots {
		if id == tmID {
			j.slots[i] = ""
		}
	}
	for i, id := range j.lastSlots {
		if id == tmID {
			j.lastSlots[i] = ""
		}
	}
	lost := false
	for _, t := range j.tasks {
		if t.tm == tmID && !t.terminal() {
			t.state = sluicev1.TaskState_TASK_STATE_FAILED
			t.failure = "task manager " + tmID + " lost: " + why
			lost = true
		}
	}
	if !lost {
		return nil
	}
	if j.state != sluicev1.JobState_JOB_STATE_RUNNING {
		return j.settle(pool, now)
	}
	cause := fmt.Sprintf("task manager %s lost: %s", tmID, why)
	if atDeploy && j.restarts > 0 {
		j.failure = cause
		j.state = sluicev1.JobState_JOB_STATE_RESTARTING
		j.restartAt = now
		return append(j.cancelRunning(pool, now), j.settle(pool, now)...)
	}
	return j.failover(pool, cause, now)
}

// deployFailed treats a failed deployment as a task failure.
func (j *job) deployFailed(pool *scheduler.Pool, id *sluicev1.ExecutionId, err error, now time.Time) []action {
	return j.taskUpdate(pool, id, sluicev1.TaskState_TASK_STATE_FAILED, "deploy: "+err.Error(), nil, now)
}

// cancelFailed: a cancel that could not be delivered counts as done; the heartbeat
// reconciliation stops the task if its task manager comes back.
func (j *job) cancelFailed(pool *scheduler.Pool, id *sluicev1.ExecutionId, now time.Time) []action {
	if t := j.find(id); t != nil && !t.terminal() {
		t.state = sluicev1.TaskState_TASK_STATE_CANCELED
	}
	return j.settle(pool, now)
}

// failover handles a failure of the running attempt: restart (after canceling the rest)
// or fail the job, as the restart strategy says.
func (j *job) failover(pool *scheduler.Pool, cause string, now time.Time) []action {
	if j.state != sluicev1.JobState_JOB_STATE_RUNNING {
		return j.settle(pool, now)
	}
	j.failure = cause
	if j.stopped {
		// After the savepoint that stops the job completed nothing restarts: the tasks
		// left are canceled and the job ends FINISHED, with its savepoint.
		j.failure = cause + " (after the savepoint that stops the job completed; the job ends with it)"
		j.state, j.cancelTo = sluicev1.JobState_JOB_STATE_CANCELLING, sluicev1.JobState_JOB_STATE_FINISHED
		return append(j.cancelRunning(pool, now), j.settle(pool, now)...)
	}
	// One call per failover: the job leaves RUNNING here, so the other tasks' failures
	// of the same failover never reach the strategy.
	j.strategy.NotifyFailure(now)
	if j.strategy.CanRestart() {
		j.state = sluicev1.JobState_JOB_STATE_RESTARTING
		j.restartAt = now.Add(j.strategy.Delay())
	} else {
		j.failure = cause + " (restart strategy exhausted)"
		j.state = sluicev1.JobState_JOB_STATE_FAILED
		j.end = now
	}
	return append(j.cancelRunning(pool, now), j.settle(pool, now)...)
}

// cancel is the user's cancel.
func (j *job) cancel(pool *scheduler.Pool, now time.Time) []action {
	if j.terminal() {
		return nil
	}
	j.state, j.cancelTo = sluicev1.JobState_JOB_STATE_CANCELLING, sluicev1.JobState_JOB_STATE_CANCELED
	if len(j.tasks) == 0 {
		return j.settle(pool, now)
	}
	return append(j.cancelRunning(pool, now), j.settle(pool, now)...)
}

func (j *job) cancelRunning(pool *scheduler.Pool, now time.Time) []action {
	var acts []action
	j.cancelDeadline = now.Add(j.cancelTimeout)
	for _, t := range j.tasks {
		if t.terminal() || t.state == sluicev1.TaskState_TASK_STATE_CANCELING {
			continue
		}
		t.state = sluicev1.TaskState_TASK_STATE_CANCELING
		if tm := pool.Get(t.tm); tm != nil && tm.Alive {
			acts = append(acts, action{kind: actCancel, task: t, tm: tm})
		} else {
			t.state = sluicev1.TaskState_TASK_STATE_CANCELED
		}
	}
	return acts
}

// settle moves the job on once its tasks reached terminal states: it finishes the job,
// frees the slots, completes a cancel, or schedules the restart.
func (j *job) settle(pool *scheduler.Pool, now time.Time) []action {
	if len(j.tasks) == 0 {
		if j.state == sluicev1.JobState_JOB_STATE_CANCELLING {
			j.state = j.canceledState()
			j.end = now
		}
		return j.trySchedule(pool, now)
	}
	allTerminal, allFinished := true, true
	for _, t := range j.tasks {
		if !t.terminal() {
			allTerminal = false
		}
		if t.state != sluicev1.TaskState_TASK_STATE_FINISHED {
			allFinished = false
		}
	}
	if !allTerminal {
		return nil
	}
	// The attempt is over: free its slots.
	if allFinished && j.state == sluicev1.JobState_JOB_STATE_RUNNING {
		j.state = sluicev1.JobState_JOB_STATE_FINISHED
		j.end = now
	}
	pool.Release(j.slots)
	j.lastSlots = j.slots
	j.slots = nil
	j.lastTasks = j.tasks
	j.tasks = nil
	switch j.state {
	case sluicev1.JobState_JOB_STATE_CANCELLING:
		j.state = j.canceledState()
		j.end = now
	case sluicev1.JobState_JOB_STATE_RESTARTING:
		j.restarts++
		return j.trySchedule(pool, now)
	}
	return nil
}

// tick advances time-based transitions: restart delays, slot waits, cancel timeouts.
func (j *job) tick(pool *scheduler.Pool, now time.Time) []action {
	if len(j.tasks) > 0 && !j.cancelDeadline.IsZero() && now.After(j.cancelDeadline) &&
		(j.state == sluicev1.JobState_JOB_STATE_CANCELLING || j.state == sluicev1.JobState_JOB_STATE_RESTARTING || j.state == sluicev1.JobState_JOB_STATE_FAILED) {
		for _, t := range j.tasks {
			if !t.terminal() {
				t.state = sluicev1.TaskState_TASK_STATE_CANCELED
			}
		}
		return j.settle(pool, now)
	}
	return j.trySchedule(pool, now)
}

// visibleTasks are the current attempt's tasks, or the last attempt's after the end.
func (j *job) visibleTasks() []*task {
	if len(j.tasks) > 0 {
		return j.tasks
	}
	return j.lastTasks
}

// records sums the visible attempt's source and sink counters.
func (j *job) records() (in, out int64) {
	for _, t := range j.visibleTasks() {
		in += t.metrics.GetSourceRecords()
		out += t.metrics.GetSinkRecords()
	}
	return in, out
}

// canceledState is the state a cancel ends in.
func (j *job) canceledState() sluicev1.JobState {
	if j.cancelTo != sluicev1.JobState_JOB_STATE_UNSPECIFIED {
		return j.cancelTo
	}
	return sluicev1.JobState_JOB_STATE_CANCELED
}

func (j *job) toFailed(now time.Time, cause string) {
	j.state = sluicev1.JobState_JOB_STATE_FAILED
	j.failure = cause
	j.end = now
}

// status renders the job for the API.
func (j *job) status() *sluicev1.JobStatus {
	st := &sluicev1.JobStatus{
		JobId: j.id, Name: j.graph.GetName(), State: j.state, Attempt: j.attempt, Restarts: int32(j.restarts),
		StartTimeUnixMs: j.start.UnixMilli(), Failure: j.failure, MaxParallelism: j.graph.GetMaxParallelism(),
		SavepointPath: j.savepointPath, RestorePath: j.restorePath,
	}
	if !j.end.IsZero() {
		st.EndTimeUnixMs = j.end.UnixMilli()
	}
	st.RecordsIn, st.RecordsOut = j.records()
	if j.cp != nil {
		if md := j.cp.latest; md != nil {
			st.LatestCheckpointId = md.GetCheckpointId()
			st.LatestCheckpointUnixMs = j.latestCheckpointAt.UnixMilli()
		}
		st.Restores = int32(j.cp.restores)
		st.RestoredCheckpointId, st.RestoreNote = j.cp.restoredID, j.cp.restoreNote
	}
	st.RestoredLocalBytes, st.RestoredRemoteBytes, st.RestoredSubtasks = j.restoredState()
	tasks := j.visibleTasks()
	for vi, v := range j.plan.Vertices {
		vs := &sluicev1.VertexStatus{Name: v.Name, OperatorUids: v.Operators, Parallelism: int32(v.Parallelism), TaskStates: map[string]int32{}}
		for _, t := range tasks {
			if int(t.id.GetVertex()) != vi {
				continue
			}
			vs.TaskStates[taskStateName(t.state)]++
			vs.RecordsIn += t.metrics.GetRecordsIn()
			vs.RecordsOut += t.metrics.GetRecordsOut()
		}
		st.Vertices = append(st.Vertices, vs)
	}
	return st
}

// taskStateName is the short name of a task state, e.g. "running".
func taskStateName(s sluicev1.TaskState) string {
	switch s {
	case sluicev1.TaskState_TASK_STATE_DEPLOYING:
		return "deploying"
	case sluicev1.TaskState_TASK_STATE_RUNNING:
		return "running"
	case sluicev1.TaskState_TASK_STATE_FINISHED:
		return "finished"
	case sluicev1.TaskState_TASK_STATE_CANCELING:
		return "canceling"
	case sluicev1.TaskState_TASK_STATE_CANCELED:
		return "canceled"
	case sluicev1.TaskState_TASK_STATE_FAILED:
		return "failed"
	case sluicev1.TaskState_TASK_STATE_ENDING:
		return "ending"
	}
	return "unknown"
}
