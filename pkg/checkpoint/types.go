package checkpoint

import (
	"fmt"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TaskID names one subtask of the running job: the index of its vertex (operator chain)
// in the execution plan and its subtask index. The attempt is not part of it: a
// checkpoint belongs to one attempt, and a restart is Stop then Start.
type TaskID struct {
	Vertex  int32
	Subtask int32
}

func (t TaskID) String() string { return fmt.Sprintf("vertex %d subtask %d", t.Vertex, t.Subtask) }

// RequestID identifies a trigger request (periodic or manual) from the moment it is made
// until it has a checkpoint ID. It is never 0 and never reused by a Coordinator.
type RequestID uint64

// Kind is what a checkpoint is taken for.
type Kind int8

const (
	// KindCheckpoint is a checkpoint: owned by the system, used for failover.
	KindCheckpoint Kind = iota + 1
	// KindSavepoint is a savepoint: self-contained, owned by the user. Its failures never
	// count towards TolerableFailures, and it is always aligned.
	KindSavepoint
)

func (k Kind) String() string {
	switch k {
	case KindCheckpoint:
		return "checkpoint"
	case KindSavepoint:
		return "savepoint"
	}
	return fmt.Sprintf("Kind(%d)", int8(k))
}

// Proto returns the kind as it is recorded in the metadata.
func (k Kind) Proto() sluicev1.SnapshotKind {
	switch k {
	case KindCheckpoint:
		return sluicev1.SnapshotKind_SNAPSHOT_KIND_CHECKPOINT
	case KindSavepoint:
		return sluicev1.SnapshotKind_SNAPSHOT_KIND_SAVEPOINT
	}
	return sluicev1.SnapshotKind_SNAPSHOT_KIND_UNSPECIFIED
}

func (k Kind) valid() bool { return k == KindCheckpoint || k == KindSavepoint }

// Mode is the consistency of checkpoints (execution.checkpointing.mode).
type Mode int8

const (
	// ExactlyOnce aligns barriers over the inputs of every operator (or persists
	// in-flight data, when unaligned).
	ExactlyOnce Mode = iota
	// AtLeastOnce does not align: records after a barrier may be in the snapshot and
	// replayed again after a restore.
	AtLeastOnce
)

func (m Mode) String() string {
	switch m {
	case ExactlyOnce:
		return "exactly-once"
	case AtLeastOnce:
		return "at-least-once"
	}
	return fmt.Sprintf("Mode(%d)", int8(m))
}

// Status is where a checkpoint is in its life.
type Status int8

const (
	// StatusInProgress: triggered, collecting acknowledgements or being finalized.
	StatusInProgress Status = iota
	// StatusCompleted: the metadata is written and committed; the tasks were notified.
	StatusCompleted
	// StatusFailed: aborted (declined, expired, subsumed, stopped, finalize failed).
	StatusFailed
	// StatusUnknown: finalizing ended with an unknown outcome (the etcd transaction may
	// or may not have committed). The completed-checkpoint store knows the truth.
	StatusUnknown
)

func (s Status) String() string {
	switch s {
	case StatusInProgress:
		return "in-progress"
	case StatusCompleted:
		return "completed"
	case StatusFailed:
		return "failed"
	case StatusUnknown:
		return "unknown"
	}
	return fmt.Sprintf("Status(%d)", int8(s))
}

// Config is the checkpointing configuration of a job, with Flink's semantics (the keys
// execution.checkpointing.*).
type Config struct {
	// Interval between periodic checkpoints; 0 turns periodic checkpoints off (manual
	// checkpoints and savepoints still work). The first periodic checkpoint is due
	// Interval after Start, the next Interval after the previous one was triggered.
	Interval time.Duration
	// Timeout: a checkpoint not acknowledged by all tasks this long after its trigger is
	// aborted as expired. Must be positive. A checkpoint being finalized never expires:
	// its outcome is the driver's.
	Timeout time.Duration
	// MinPause is the least time between the end (completion or failure) of one
	// checkpoint and the trigger of the next periodic one. When positive it implies that
	// periodic checkpoints are never concurrent (as in Flink); manual triggers ignore it.
	MinPause time.Duration
	// MaxConcurrent (>= 1) bounds the checkpoints in progress, counting trigger requests
	// still waiting for their ID. It applies to periodic and manual triggers.
	MaxConcurrent int
	// TolerableFailures (>= 0) is the number of consecutive checkpoint failures
	// tolerated; one more fails the job over. See Coordinator for what counts.
	TolerableFailures int
	// Mode, Unaligned and AlignedTimeout are passed through to the tasks in Trigger.
	Mode           Mode
	Unaligned      bool
	AlignedTimeout time.Duration
	// HistorySize is how many checkpoints Summary lists; 0 means 10.
	HistorySize int
}

// DefaultConfig returns Flink's defaults: periodic checkpoints off, a 10-minute timeout,
// no pause, one checkpoint at a time, no failure tolerated, exactly-once, aligned.
func DefaultConfig() Config {
	return Config{Timeout: 10 * time.Minute, MaxConcurrent: 1, Mode: ExactlyOnce, HistorySize: 10}
}

func (c *Config) validate() error {
	switch {
	case c.Interval < 0:
		return fmt.Errorf("checkpoint: interval must not be negative, got %v", c.Interval)
	case c.Timeout <= 0:
		return fmt.Errorf("checkpoint: timeout must be positive, got %v", c.Timeout)
	case c.MinPause < 0:
		return fmt.Errorf("checkpoint: min pause must not be negative, got %v", c.MinPause)
	case c.MaxConcurrent < 1:
		return fmt.Errorf("checkpoint: max concurrent checkpoints must be at least 1, got %d", c.MaxConcurrent)
	case c.TolerableFailures < 0:
		return fmt.Errorf("checkpoint: tolerable failed checkpoints must not be negative, got %d", c.TolerableFailures)
	case c.Mode != ExactlyOnce && c.Mode != AtLeastOnce:
		return fmt.Errorf("checkpoint: unknown mode %v", c.Mode)
	case c.AlignedTimeout < 0:
		return fmt.Errorf("checkpoint: aligned checkpoint timeout must not be negative, got %v", c.AlignedTimeout)
	case c.HistorySize < 0:
		return fmt.Errorf("checkpoint: history size must not be negative, got %d", c.HistorySize)
	}
	if c.HistorySize == 0 {
		c.HistorySize = 10
	}
	return nil
}

// Job is what the coordinator records about the job in the metadata.
type Job struct {
	ID   string
	Name string
	// MaxParallelism of the job's keyed state, recorded for every operator.
	MaxParallelism int32
	// LastCheckpointID is the highest checkpoint ID known to be used (a new leader reads
	// it from the completed-checkpoint store): allocated IDs must exceed it.
	LastCheckpointID int64
}

// SubtaskAck is what a task acknowledges for a checkpoint: the state of each operator of
// its chain and how the snapshot went.
type SubtaskAck struct {
	// Operators holds the state of the chain's operators, head first; operators without
	// state may be left out. Ack takes ownership of the SubtaskState messages and sets
	// their subtask to the acknowledging task's.
	Operators []OperatorSubtaskState
	// SyncDuration and AsyncDuration are the synchronous and asynchronous snapshot
	// phases; AlignmentDuration how long barrier alignment blocked inputs; StartDelay the
	// time from the trigger to the first barrier reaching the task.
	SyncDuration      time.Duration
	AsyncDuration     time.Duration
	AlignmentDuration time.Duration
	StartDelay        time.Duration
	// Bytes persisted for this checkpoint (the incremental size, plus channel state).
	Bytes int64
}

// OperatorSubtaskState is one operator's state in a subtask's acknowledgement.
type OperatorSubtaskState struct {
	UID   string
	State *sluicev1.SubtaskState
}

// Stats describes one checkpoint for `streamctl checkpoints`.
type Stats struct {
	ID       int64
	Kind     Kind
	Periodic bool
	Status   Status
	// TriggerTime is when the checkpoint got its ID and was triggered; EndTime is zero
	// while it is in progress.
	TriggerTime time.Time
	EndTime     time.Time
	// Duration is EndTime-TriggerTime, and while in progress the time to the latest
	// acknowledgement.
	Duration time.Duration
	// Size is the sum of the acknowledged Bytes.
	Size       int64
	AckedTasks int
	TotalTasks int
	// Alignment and StartDelay are the maxima over the acknowledgements.
	Alignment     time.Duration
	StartDelay    time.Duration
	FailureReason string
}

// Summary is the checkpoint history of a job.
type Summary struct {
	// Counts since the coordinator was created. InProgress includes checkpoints being
	// finalized; trigger requests still waiting for an ID are in Queued.
	Queued, InProgress, Completed, Failed, Unknown int
	// LatestCompleted is the last checkpoint or savepoint that completed (nil if none).
	LatestCompleted *Stats
	// History lists the most recent checkpoints, newest first (at most HistorySize).
	History []Stats
}

// Action is something the driver must do for the coordinator. Every method of the
// Coordinator returns the actions to perform, in order. The types are AllocateID,
// Trigger, Finalize, NotifyComplete, NotifyAborted, OutcomeUnknown, RequestAborted and
// FailJob.
type Action interface{ isAction() }

// AllocateID asks for the next value of the job's checkpoint ID counter (in etcd). The
// driver must answer exactly once, with IDAllocated or IDFailed (also after Stop); at
// most one AllocateID is unanswered at a time, so answers arrive in order.
type AllocateID struct {
	Request RequestID
}

// Trigger starts checkpoint ID: the driver sends it to the source tasks, which snapshot
// and emit barrier ID. Timestamp is the checkpoint's time. Mode, Unaligned and
// AlignedTimeout come from the Config (a savepoint is never unaligned).
type Trigger struct {
	ID             int64
	Request        RequestID
	Kind           Kind
	Periodic       bool
	Timestamp      time.Time
	Mode           Mode
	Unaligned      bool
	AlignedTimeout time.Duration
}

// Finalize: every task acknowledged checkpoint ID. The driver writes
// EncodeMetadata(Metadata) to <checkpoint-dir>/<job>/chk-<ID>/_metadata (never visible
// half-written), then records the checkpoint in etcd in one fenced transaction, and
// answers Finalized, or FinalizeFailed saying whether the transaction's outcome is
// unknown. At most one Finalize is unanswered at a time, and checkpoints complete in
// increasing ID order.
type Finalize struct {
	ID       int64
	Request  RequestID
	Kind     Kind
	Metadata *sluicev1.CheckpointMetadata
}

// NotifyComplete: checkpoint ID is committed. The driver notifies the tasks (two-phase
// commit sinks commit every transaction up to ID) and may now release what only older
// checkpoints needed, following the completed-checkpoint store. Ends the checkpoint.
type NotifyComplete struct {
	ID      int64
	Request RequestID
	Kind    Kind
}

// NotifyAborted: checkpoint ID failed and will never complete; Reason says why. The
// driver notifies the tasks (which may drop what they prepared for it, but must not roll
// back anything a later checkpoint includes) and may delete the checkpoint's private
// files. Ends the checkpoint.
type NotifyAborted struct {
	ID      int64
	Request RequestID
	Kind    Kind
	Reason  string
}

// OutcomeUnknown: finalizing checkpoint ID ended with an unknown outcome; it may or may
// not be in the completed-checkpoint store. The driver must not notify the tasks and must
// delete nothing the checkpoint references: the truth is re-read from etcd by the next
// restore or the next leader. It may report Reason to a waiting user. Ends the
// checkpoint.
type OutcomeUnknown struct {
	ID      int64
	Request RequestID
	Kind    Kind
	Reason  string
}

// RequestAborted: a trigger request ended before it got a checkpoint ID (Stop, FailJob,
// or an ID that was rejected). Nothing was triggered for it.
type RequestAborted struct {
	Request RequestID
	Kind    Kind
	Reason  string
}

// FailJob: checkpointing failed too often (or the ID counter misbehaved). The
// coordinator has stopped itself as if by Stop (the actions before this one abort what
// was in progress); the driver fails the job over as its restart strategy says, and
// calls Start for the next attempt.
type FailJob struct {
	Reason string
}

func (AllocateID) isAction()     {}
func (Trigger) isAction()        {}
func (Finalize) isAction()       {}
func (NotifyComplete) isAction() {}
func (NotifyAborted) isAction()  {}
func (OutcomeUnknown) isAction() {}
func (RequestAborted) isAction() {}
func (FailJob) isAction()        {}
