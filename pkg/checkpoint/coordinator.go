package checkpoint

import (
	"errors"
	"fmt"
	"slices"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The errors of the Coordinator's methods, wrapped with details.
var (
	// ErrNotRunning: a manual trigger while checkpointing is stopped (the job is not
	// running).
	ErrNotRunning = errors.New("checkpointing is not running")
	// ErrTooManyCheckpoints: a manual trigger while MaxConcurrent checkpoints are in
	// progress.
	ErrTooManyCheckpoints = errors.New("too many checkpoints in progress")
	// ErrIDNotIncreasing: the ID counter returned an ID not above every earlier one.
	ErrIDNotIncreasing = errors.New("checkpoint ID not increasing")
)

// Coordinator is the checkpoint coordinator of one job: a state machine without
// goroutines, I/O or clock. The jobmanager's event loop calls its methods with the
// current time (which must never decrease) and performs the actions they return. It is
// not safe for concurrent use.
//
// Lifecycle: New, then Start when the job's tasks run, Stop when the attempt ends
// (failover, cancel, finish), Start again for the next attempt. Tick is called
// periodically (every 100 ms, say): it triggers periodic checkpoints, expires late ones
// and retries failed ID allocations.
//
// A checkpoint goes: trigger request -> AllocateID -> IDAllocated -> Trigger -> Ack from
// every task -> Finalize -> Finalized -> NotifyComplete. It ends exactly once, with
// NotifyComplete, NotifyAborted or OutcomeUnknown, and nothing is emitted for it after
// that. A request ends with Trigger or RequestAborted.
//
// Failure accounting (Flink's): a checkpoint that is declined, expires, has a malformed
// acknowledgement, or fails to finalize (also with an unknown outcome) counts as a
// failure; more than TolerableFailures consecutive failures emit FailJob, and the count
// starts again. Not counted: savepoints, aborts because the job stopped or its tasks
// changed, checkpoints subsumed by a newer completed one, failures of checkpoints older
// than the latest completed one, failures of a previous attempt's checkpoint reported
// after Stop, and ID allocation failures (they only delay). A completed checkpoint or
// savepoint resets the count; a restart (Stop, Start) does not.
type Coordinator struct {
	job Job
	cfg Config

	running bool
	epoch   uint64 // incremented by Start; checkpoints remember theirs
	tasks   *taskSet

	nextDue time.Time // when the next periodic checkpoint is due (zero: none scheduled)
	lastEnd time.Time // when the last checkpoint ended (for MinPause)
	paused  bool      // PausePeriodic: no periodic checkpoint is triggered

	lastRequest RequestID
	queue       []*request // waiting for an ID, oldest first; only queue[0] may be allocating
	allocating  RequestID  // the request of the unanswered AllocateID (0: none)
	lastID      int64      // the highest ID allocated

	pending    []*pending // triggered and not ended, by increasing ID
	finalizing *pending   // the one with an unanswered Finalize

	failures        int   // consecutive counted failures
	lastCompletedID int64 // the highest completed ID

	history                    []*Stats // by increasing ID, at most HistorySize
	latestCompleted            *Stats
	completed, failed, unknown int
}

type request struct {
	id       RequestID
	kind     Kind
	periodic bool
	retry    bool  // its ID allocation failed: retry at the next Tick
	lastErr  error // of the last failed ID allocation
}

type phase int8

const (
	collecting phase = iota // waiting for acknowledgements
	acked                   // all acknowledged, waiting for its turn to finalize
	finalizing              // Finalize emitted, not answered
)

type pending struct {
	id       int64
	req      RequestID
	kind     Kind
	periodic bool
	epoch    uint64
	trigger  time.Time
	deadline time.Time
	phase    phase

	tasks   *taskSet
	acks    []*SubtaskAck // by task index
	nacked  int
	uidVert map[string]int32 // operator UID -> vertex that reported it
	stats   *Stats
}

// taskSet is an immutable set of tasks, shared by the checkpoints triggered with it.
type taskSet struct {
	ids         []TaskID // sorted by vertex, then subtask
	index       map[TaskID]int
	parallelism map[int32]int32 // vertex -> number of its subtasks
}

func newTaskSet(tasks []TaskID) (*taskSet, error) {
	if len(tasks) == 0 {
		return nil, errors.New("checkpoint: the job has no tasks")
	}
	ids := slices.Clone(tasks)
	slices.SortFunc(ids, func(a, b TaskID) int {
		if a.Vertex != b.Vertex {
			return int(a.Vertex) - int(b.Vertex)
		}
		return int(a.Subtask) - int(b.Subtask)
	})
	ts := &taskSet{ids: ids, index: make(map[TaskID]int, len(ids)), parallelism: map[int32]int32{}}
	for i, t := range ids {
		if t.Vertex < 0 || t.Subtask < 0 {
			return nil, fmt.Errorf("checkpoint: invalid task %v", t)
		}
		if i > 0 && ids[i-1] == t {
			return nil, fmt.Errorf("checkpoint: task %v listed twice", t)
		}
		ts.index[t] = i
		ts.parallelism[t.Vertex]++
	}
	return ts, nil
}

// New returns a stopped coordinator for job.
func New(job Job, cfg Config) (*Coordinator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if job.LastCheckpointID < 0 {
		return nil, fmt.Errorf("checkpoint: negative last checkpoint ID %d", job.LastCheckpointID)
	}
	return &Coordinator{job: job, cfg: cfg, lastID: job.LastCheckpointID, lastCompletedID: job.LastCheckpointID}, nil
}

// Config returns the configuration (with defaults filled in).
func (c *Coordinator) Config() Config { return c.cfg }

// Running reports whether checkpointing is started.
func (c *Coordinator) Running() bool { return c.running }

// LastID returns the highest checkpoint ID allocated so far (or Job.LastCheckpointID).
func (c *Coordinator) LastID() int64 { return c.lastID }

// Start starts checkpointing for an attempt of the job whose tasks are tasks, or, when
// tasks is nil, the tasks given to the previous Start or SetTasks. The first periodic
// checkpoint is due Interval after now. (Flink draws the initial delay at random between
// MinPause and Interval to spread the checkpoints of many jobs; Sluice keeps it
// deterministic: a restarted job runs a whole interval before its first checkpoint.)
// Start does not reset the failure count.
func (c *Coordinator) Start(now time.Time, tasks []TaskID) error {
	if c.running {
		return errors.New("checkpoint: Start: already running (Stop first)")
	}
	if tasks != nil {
		ts, err := newTaskSet(tasks)
		if err != nil {
			return err
		}
		c.tasks = ts
	}
	if c.tasks == nil {
		return errors.New("checkpoint: Start: no tasks given")
	}
	c.running = true
	c.paused = false
	c.epoch++
	c.nextDue = time.Time{}
	if c.cfg.Interval > 0 {
		c.nextDue = now.Add(c.cfg.Interval)
	}
	return nil
}

// SetTasks replaces the tasks that must acknowledge the checkpoints triggered from now
// on. While running, the checkpoints still collecting acknowledgements are aborted (their
// barriers did not reach the new tasks; not counted as failures); fully acknowledged
// ones go on. When stopped, it sets the tasks for a Start with nil tasks.
func (c *Coordinator) SetTasks(now time.Time, tasks []TaskID) ([]Action, error) {
	ts, err := newTaskSet(tasks)
	if err != nil {
		return nil, err
	}
	if c.tasks != nil && slices.Equal(c.tasks.ids, ts.ids) {
		return nil, nil
	}
	c.tasks = ts
	if !c.running {
		return nil, nil
	}
	var acts []Action
	for _, p := range slices.Clone(c.pending) {
		if p.phase == collecting {
			acts = c.abort(acts, now, p, "the job's tasks changed")
		}
	}
	return acts, nil
}

// Stop stops checkpointing: the attempt is over (failing, canceled, finished); reason
// says why. It aborts the trigger requests and the checkpoints in progress (not counted
// as failures) and returns the notifications. A checkpoint being finalized is the
// driver's: it ends with the answer to its Finalize, which the driver still gives. An
// unanswered AllocateID must be answered too; its ID is then discarded. Stop when
// stopped does nothing.
func (c *Coordinator) Stop(now time.Time, reason string) []Action {
	if reason == "" {
		reason = "the job stopped"
	}
	return c.stop(nil, now, "checkpointing stopped: "+reason)
}

func (c *Coordinator) stop(acts []Action, now time.Time, reason string) []Action {
	if !c.running {
		return acts
	}
	c.running = false
	c.nextDue = time.Time{}
	for _, r := range c.queue {
		why := reason
		if r.lastErr != nil {
			why += fmt.Sprintf(" (allocating its ID last failed: %v)", r.lastErr)
		}
		acts = append(acts, RequestAborted{Request: r.id, Kind: r.kind, Reason: why})
	}
	c.queue = nil
	for _, p := range slices.Clone(c.pending) {
		if p.phase != finalizing {
			acts = c.abort(acts, now, p, reason)
		}
	}
	return acts
}

// Tick advances time: it aborts checkpoints that expired (counted as failures), triggers
// a periodic checkpoint when one is due and allowed, and retries a failed ID allocation.
// A periodic checkpoint is allowed when fewer than MaxConcurrent are in progress and,
// with a MinPause, none is in progress and MinPause passed since the last one ended. A
// due checkpoint that is not allowed is triggered by the first Tick that allows it; the
// next is due Interval after that trigger.
func (c *Coordinator) Tick(now time.Time) []Action {
	if !c.running {
		return nil
	}
	var acts []Action
	for _, p := range slices.Clone(c.pending) {
		if p.phase == collecting && !now.Before(p.deadline) {
			acts = c.fail(acts, now, p, fmt.Sprintf("expired: not acknowledged by all tasks within the timeout of %v (%d of %d acknowledged)",
				c.cfg.Timeout, p.nacked, len(p.tasks.ids)))
			if !c.running { // FailJob
				return acts
			}
		}
	}
	if !c.paused && !c.nextDue.IsZero() && !now.Before(c.nextDue) && c.periodicAllowed(now) {
		c.enqueue(KindCheckpoint, true)
		c.nextDue = now.Add(c.cfg.Interval)
	}
	return c.allocate(acts, true)
}

// PausePeriodic stops triggering periodic checkpoints until ResumePeriodic or the next
// Start; manual triggers still go and what is in progress goes on. The jobmanager
// pauses them while a savepoint that stops the job is under way (its sources emit
// nothing, and nothing may complete after it), or while a savepoint waits for
// MaxConcurrent to let it in.
func (c *Coordinator) PausePeriodic() { c.paused = true }

// ResumePeriodic ends PausePeriodic: the next periodic checkpoint is due Interval after
// now.
func (c *Coordinator) ResumePeriodic(now time.Time) {
	if !c.paused {
		return
	}
	c.paused = false
	if c.running && c.cfg.Interval > 0 {
		c.nextDue = now.Add(c.cfg.Interval)
	}
}

// PeriodicPaused reports whether PausePeriodic holds.
func (c *Coordinator) PeriodicPaused() bool { return c.paused }

func (c *Coordinator) periodicAllowed(now time.Time) bool {
	if c.inProgress() >= c.cfg.MaxConcurrent {
		return false
	}
	if c.cfg.MinPause > 0 {
		if c.inProgress() > 0 {
			return false
		}
		if !c.lastEnd.IsZero() && now.Before(c.lastEnd.Add(c.cfg.MinPause)) {
			return false
		}
	}
	return true
}

// inProgress counts the checkpoints in progress and the requests waiting for an ID.
func (c *Coordinator) inProgress() int { return len(c.queue) + len(c.pending) }

// TriggerManual requests a checkpoint or savepoint now (streamctl checkpoint, savepoint).
// It ignores Interval and MinPause but not MaxConcurrent: when the job is not running or
// MaxConcurrent checkpoints are in progress it fails (ErrNotRunning,
// ErrTooManyCheckpoints) and nothing changes. The request's outcome comes as
// RequestAborted, or Trigger (which gives its checkpoint ID) and then one of
// NotifyComplete, NotifyAborted and OutcomeUnknown.
func (c *Coordinator) TriggerManual(now time.Time, kind Kind) (RequestID, []Action, error) {
	if !kind.valid() {
		return 0, nil, fmt.Errorf("checkpoint: cannot trigger a snapshot of kind %v", kind)
	}
	if !c.running {
		return 0, nil, fmt.Errorf("cannot trigger a %v: %w (the job is not running)", kind, ErrNotRunning)
	}
	if n := c.inProgress(); n >= c.cfg.MaxConcurrent {
		return 0, nil, fmt.Errorf("cannot trigger a %v now: %w: %d in progress, and at most %d may be (execution.checkpointing.max-concurrent-checkpoints); try again when one has ended",
			kind, ErrTooManyCheckpoints, n, c.cfg.MaxConcurrent)
	}
	r := c.enqueue(kind, false)
	return r.id, c.allocate(nil, false), nil
}

func (c *Coordinator) enqueue(kind Kind, periodic bool) *request {
	c.lastRequest++
	r := &request{id: c.lastRequest, kind: kind, periodic: periodic}
	c.queue = append(c.queue, r)
	return r
}

// allocate emits AllocateID for the oldest request when no allocation is unanswered;
// a request whose allocation failed is retried only by a Tick.
func (c *Coordinator) allocate(acts []Action, tick bool) []Action {
	if c.allocating != 0 || len(c.queue) == 0 || (c.queue[0].retry && !tick) {
		return acts
	}
	r := c.queue[0]
	r.retry = false
	c.allocating = r.id
	return append(acts, AllocateID{Request: r.id})
}

// IDAllocated answers AllocateID{req} with the counter's value id. The checkpoint is
// triggered. An answer to anything but the unanswered AllocateID is ignored; an answer
// for a request that was aborted meanwhile discards the ID. An id not above every ID
// allocated before means the counter went backwards (lost etcd data, a bug): it is never
// used, IDAllocated returns an error wrapping ErrIDNotIncreasing, and, while running,
// aborts the request and emits FailJob.
func (c *Coordinator) IDAllocated(now time.Time, req RequestID, id int64) ([]Action, error) {
	if req == 0 || req != c.allocating {
		return nil, nil
	}
	c.allocating = 0
	var r *request
	if len(c.queue) > 0 && c.queue[0].id == req {
		r = c.queue[0]
	}
	if id <= c.lastID {
		err := fmt.Errorf("checkpoint: %w: the counter returned %d after %d had been allocated", ErrIDNotIncreasing, id, c.lastID)
		if r == nil {
			return c.allocate(nil, false), err
		}
		return c.failJob(nil, now, fmt.Sprintf("the checkpoint ID counter went backwards (returned %d after %d); refusing to reuse checkpoint IDs", id, c.lastID)), err
	}
	c.lastID = id
	if r == nil {
		return c.allocate(nil, false), nil
	}
	c.queue = c.queue[1:]
	p := &pending{
		id: id, req: r.id, kind: r.kind, periodic: r.periodic, epoch: c.epoch,
		trigger: now, deadline: now.Add(c.cfg.Timeout), phase: collecting,
		tasks: c.tasks, acks: make([]*SubtaskAck, len(c.tasks.ids)),
		stats: &Stats{ID: id, Kind: r.kind, Periodic: r.periodic, Status: StatusInProgress, TriggerTime: now, TotalTasks: len(c.tasks.ids)},
	}
	c.pending = append(c.pending, p)
	c.record(p.stats)
	t := Trigger{ID: id, Request: r.id, Kind: r.kind, Periodic: r.periodic, Timestamp: now,
		Mode: c.cfg.Mode, Unaligned: c.cfg.Unaligned, AlignedTimeout: c.cfg.AlignedTimeout}
	if r.kind == KindSavepoint {
		t.Unaligned, t.AlignedTimeout = false, 0
	}
	return c.allocate([]Action{t}, false), nil
}

// IDFailed answers AllocateID{req} with a failure (etcd unavailable, say). The request
// keeps its place and is retried at the next Tick: an outage delays checkpoints and loses
// nothing. Answers to anything but the unanswered AllocateID are ignored.
func (c *Coordinator) IDFailed(now time.Time, req RequestID, err error) []Action {
	if req == 0 || req != c.allocating {
		return nil
	}
	c.allocating = 0
	if len(c.queue) > 0 && c.queue[0].id == req {
		c.queue[0].retry = true
		c.queue[0].lastErr = err
		return nil
	}
	return c.allocate(nil, false)
}

func (c *Coordinator) find(id int64) *pending {
	for _, p := range c.pending {
		if p.id == id {
			return p
		}
	}
	return nil
}

// Ack records task's acknowledgement of checkpoint id, with its state (nil for a task
// without state). Acknowledgements of unknown or ended checkpoints, of tasks the
// checkpoint does not expect, and repeated ones are ignored. A malformed one (an operator
// without UID, listed twice, or reported by two vertices) fails the checkpoint. When
// every task has acknowledged, the checkpoint is finalized (Finalize) as soon as no other
// is being finalized.
func (c *Coordinator) Ack(now time.Time, id int64, task TaskID, state *SubtaskAck) []Action {
	p := c.find(id)
	if p == nil || p.phase != collecting {
		return nil
	}
	i, ok := p.tasks.index[task]
	if !ok || p.acks[i] != nil {
		return nil
	}
	if state == nil {
		state = &SubtaskAck{}
	}
	if err := p.checkAck(task, state); err != nil {
		return c.fail(nil, now, p, fmt.Sprintf("malformed acknowledgement from task %v: %v", task, err))
	}
	for j := range state.Operators {
		o := &state.Operators[j]
		if o.State == nil {
			o.State = &sluicev1.SubtaskState{}
		}
		o.State.Subtask = task.Subtask
		if p.uidVert == nil {
			p.uidVert = map[string]int32{}
		}
		p.uidVert[o.UID] = task.Vertex
	}
	p.acks[i] = state
	p.nacked++
	st := p.stats
	st.AckedTasks = p.nacked
	st.Size += state.Bytes
	st.Duration = now.Sub(p.trigger)
	st.Alignment = max(st.Alignment, state.AlignmentDuration)
	st.StartDelay = max(st.StartDelay, state.StartDelay)
	if p.nacked < len(p.acks) {
		return nil
	}
	p.phase = acked
	return c.finalizeNext(nil, now)
}

func (p *pending) checkAck(task TaskID, a *SubtaskAck) error {
	seen := make(map[string]bool, len(a.Operators))
	for _, o := range a.Operators {
		if o.UID == "" {
			return errors.New("an operator state without UID")
		}
		if seen[o.UID] {
			return fmt.Errorf("operator %q listed twice", o.UID)
		}
		seen[o.UID] = true
		if v, ok := p.uidVert[o.UID]; ok && v != task.Vertex {
			return fmt.Errorf("operator %q also reported by vertex %d", o.UID, v)
		}
	}
	return nil
}

// Decline records that task cannot take checkpoint id (reason says why): the checkpoint
// is aborted and counts as a failure. Declines of unknown or ended checkpoints, of tasks
// the checkpoint does not expect or that already acknowledged it are ignored.
func (c *Coordinator) Decline(now time.Time, id int64, task TaskID, reason string) []Action {
	p := c.find(id)
	if p == nil || p.phase != collecting {
		return nil
	}
	i, ok := p.tasks.index[task]
	if !ok || p.acks[i] != nil {
		return nil
	}
	return c.fail(nil, now, p, fmt.Sprintf("declined by task %v: %s", task, reason))
}

// finalizeNext emits Finalize for the oldest fully acknowledged checkpoint, unless one is
// being finalized.
func (c *Coordinator) finalizeNext(acts []Action, now time.Time) []Action {
	if c.finalizing != nil {
		return acts
	}
	for _, p := range c.pending {
		if p.phase == acked {
			p.phase = finalizing
			c.finalizing = p
			return append(acts, Finalize{ID: p.id, Request: p.req, Kind: p.kind, Metadata: c.metadata(p, now)})
		}
	}
	return acts
}

// metadata builds the metadata of a fully acknowledged checkpoint. Operators are ordered
// by vertex and then as the vertex's lowest subtask listed them; subtasks by index.
func (c *Coordinator) metadata(p *pending, now time.Time) *sluicev1.CheckpointMetadata {
	md := &sluicev1.CheckpointMetadata{
		JobId: c.job.ID, JobName: c.job.Name, CheckpointId: p.id, Kind: p.kind.Proto(),
		TriggerTimeUnixMs: p.trigger.UnixMilli(), CompletionTimeUnixMs: now.UnixMilli(),
	}
	ops := map[string]*sluicev1.OperatorState{}
	for i, t := range p.tasks.ids {
		for _, o := range p.acks[i].Operators {
			os := ops[o.UID]
			if os == nil {
				os = &sluicev1.OperatorState{Uid: o.UID, Parallelism: p.tasks.parallelism[t.Vertex], MaxParallelism: c.job.MaxParallelism}
				ops[o.UID] = os
				md.Operators = append(md.Operators, os)
			}
			os.Subtasks = append(os.Subtasks, o.State)
		}
	}
	return md
}

// Finalized answers Finalize{id}: the metadata is written and the checkpoint committed.
// The checkpoint completes (NotifyComplete), the failure count is reset, and every older
// checkpoint in progress is aborted as subsumed (not counted). Answers to anything but
// the unanswered Finalize are ignored.
func (c *Coordinator) Finalized(now time.Time, id int64) []Action {
	p := c.finalizing
	if p == nil || p.id != id {
		return nil
	}
	c.finalizing = nil
	c.end(p, now, StatusCompleted, "")
	c.lastCompletedID = id
	c.failures = 0
	acts := []Action{NotifyComplete{ID: id, Request: p.req, Kind: p.kind}}
	acts = c.subsume(acts, now, id, fmt.Sprintf("subsumed by %v %d, which completed", p.kind, id))
	return c.finalizeNext(acts, now)
}

// FinalizeFailed answers Finalize{id} with a failure, counted as a checkpoint failure.
// If the outcome is known (nothing was committed), the checkpoint is aborted
// (NotifyAborted). If it is unknown (the etcd transaction may have committed: a timeout,
// a lost leadership), the checkpoint ends with OutcomeUnknown: neither completed nor
// aborted, so nothing it references may be deleted, and the next restore or leader
// re-reads the truth from etcd; older checkpoints in progress are aborted as subsumed,
// since a newer one may have completed. Answers to anything but the unanswered Finalize
// are ignored.
func (c *Coordinator) FinalizeFailed(now time.Time, id int64, err error, outcomeUnknown bool) []Action {
	p := c.finalizing
	if p == nil || p.id != id {
		return nil
	}
	c.finalizing = nil
	var acts []Action
	if outcomeUnknown {
		reason := fmt.Sprintf("finalizing: outcome unknown (it may or may not have been committed; its files are kept, the completed-checkpoint store decides): %v", err)
		c.end(p, now, StatusUnknown, reason)
		acts = append(acts, OutcomeUnknown{ID: id, Request: p.req, Kind: p.kind, Reason: reason})
		acts = c.subsume(acts, now, id, fmt.Sprintf("subsumed by %v %d, which may have completed", p.kind, id))
		acts = c.count(acts, now, p, reason)
	} else {
		reason := fmt.Sprintf("finalizing failed: %v", err)
		c.end(p, now, StatusFailed, reason)
		acts = append(acts, NotifyAborted{ID: id, Request: p.req, Kind: p.kind, Reason: reason})
		acts = c.count(acts, now, p, reason)
	}
	return c.finalizeNext(acts, now)
}

// subsume aborts the checkpoints in progress older than id (not counted).
func (c *Coordinator) subsume(acts []Action, now time.Time, id int64, reason string) []Action {
	for _, q := range slices.Clone(c.pending) {
		if q.id < id {
			acts = c.abort(acts, now, q, reason)
		}
	}
	return acts
}

// abort ends p as failed without counting it.
func (c *Coordinator) abort(acts []Action, now time.Time, p *pending, reason string) []Action {
	c.end(p, now, StatusFailed, reason)
	return append(acts, NotifyAborted{ID: p.id, Request: p.req, Kind: p.kind, Reason: reason})
}

// fail ends p as failed and counts it.
func (c *Coordinator) fail(acts []Action, now time.Time, p *pending, reason string) []Action {
	return c.count(c.abort(acts, now, p, reason), now, p, reason)
}

// count counts the failure of p if it counts, and fails the job once too many
// consecutive failures were counted.
func (c *Coordinator) count(acts []Action, now time.Time, p *pending, reason string) []Action {
	if !c.running || p.epoch != c.epoch || p.kind != KindCheckpoint || p.id <= c.lastCompletedID {
		return acts
	}
	c.failures++
	if c.failures <= c.cfg.TolerableFailures {
		return acts
	}
	return c.failJob(acts, now, fmt.Sprintf("%d consecutive checkpoints failed, more than the %d tolerated (execution.checkpointing.tolerable-failed-checkpoints); the last, %d: %s",
		c.failures, c.cfg.TolerableFailures, p.id, reason))
}

// failJob stops checkpointing and asks for the job to fail over.
func (c *Coordinator) failJob(acts []Action, now time.Time, reason string) []Action {
	c.failures = 0
	acts = c.stop(acts, now, "the job is failing: "+reason)
	return append(acts, FailJob{Reason: reason})
}

// end records the end of p.
func (c *Coordinator) end(p *pending, now time.Time, status Status, reason string) {
	if i := slices.Index(c.pending, p); i >= 0 {
		c.pending = slices.Delete(c.pending, i, i+1)
	}
	c.lastEnd = now
	st := p.stats
	st.Status = status
	st.EndTime = now
	st.Duration = now.Sub(p.trigger)
	st.FailureReason = reason
	switch status {
	case StatusCompleted:
		c.completed++
		c.latestCompleted = st
	case StatusFailed:
		c.failed++
	case StatusUnknown:
		c.unknown++
	}
}

func (c *Coordinator) record(st *Stats) {
	c.history = append(c.history, st)
	if n := len(c.history) - c.cfg.HistorySize; n > 0 {
		c.history = slices.Delete(c.history, 0, n)
	}
}

// Summary returns the checkpoint history (copies).
func (c *Coordinator) Summary() Summary {
	s := Summary{Queued: len(c.queue), InProgress: len(c.pending), Completed: c.completed, Failed: c.failed, Unknown: c.unknown}
	if c.latestCompleted != nil {
		st := *c.latestCompleted
		s.LatestCompleted = &st
	}
	s.History = make([]Stats, 0, len(c.history))
	for i := len(c.history) - 1; i >= 0; i-- {
		s.History = append(s.History, *c.history[i])
	}
	return s
}
