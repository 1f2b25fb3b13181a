package taskmanager

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/runtime"
	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// taskCheckpoints is a task's checkpointing: synchronous snapshots on the task
// goroutine, the asynchronous part on a goroutine owned by the task manager, and the
// acknowledgement (or decline) to the jobmanager.
type taskCheckpoints struct {
	tm    *TaskManager
	rt    *runningTask
	chain *api.Chain
	store *blobstore.Store // job directory; nil: checkpointing is off
	log   *slog.Logger
	// head is the UID of the chain's first operator: the task's channel state is kept
	// with it.
	head string
	keys channelKeys

	mu      sync.Mutex
	running map[int64]*asyncPart // async parts in flight
}

// asyncPart is one checkpoint's asynchronous part in flight.
type asyncPart struct {
	cancel context.CancelFunc
	// channels receives the in-flight data of an unaligned checkpoint (nil: aligned).
	channels chan runtime.ChannelState
}

// Snapshot takes the synchronous part of checkpoint b and starts the asynchronous one.
func (c *taskCheckpoints) Snapshot(b runtime.Barrier, al runtime.Alignment) error {
	if c.store == nil {
		return fmt.Errorf("checkpoint %d: this job has no checkpoint storage", b.ID)
	}
	if b.Full {
		// The jobmanager wants a snapshot that reuses no file of an earlier checkpoint
		// (a bounded chain, or a new one after a restore); backends that take only full
		// snapshots have nothing to do.
		if f, ok := any(c.chain).(interface{ ForceFullSnapshot() }); ok {
			f.ForceFullSnapshot()
		}
	}
	var snap *api.ChainSnapshot
	var err error
	if b.Savepoint {
		// A savepoint's files go to its own directory (opened by the asynchronous part),
		// in the format asked for, self-contained.
		if b.Target == "" {
			return fmt.Errorf("savepoint %d: its barrier names no directory", b.ID)
		}
		format := state.FormatCanonical
		if b.Native {
			format = state.FormatNative
		}
		snap, err = c.chain.SnapshotSavepoint(b.ID, format)
	} else {
		snap, err = c.chain.Snapshot(b.ID)
	}
	if err != nil {
		return err
	}
	id := c.rt.id
	ctx, cancel := context.WithCancel(c.tm.base)
	part := &asyncPart{cancel: cancel}
	if b.Unaligned {
		part.channels = make(chan runtime.ChannelState, 1)
	}
	c.mu.Lock()
	c.running[b.ID] = part
	c.mu.Unlock()
	files := blobstore.StateFiles{Store: c.store, ID: b.ID, Prefix: fmt.Sprintf("v%d-s%d-", id.GetVertex(), id.GetSubtask())}
	c.tm.wg.Add(1)
	go func() {
		defer c.tm.wg.Done()
		defer func() {
			cancel()
			c.mu.Lock()
			delete(c.running, b.ID)
			c.mu.Unlock()
		}()
		start := time.Now()
		if b.Savepoint {
			sp, err := blobstore.Open(ctx, b.Target)
			if err != nil {
				snap.Release()
				c.decline(b.ID, fmt.Errorf("savepoint directory: %w", err))
				return
			}
			defer sp.Close()
			files.Store, files.Savepoint = sp, true
		}
		ops, err := snap.Run(ctx, files)
		if err != nil {
			c.decline(b.ID, fmt.Errorf("asynchronous snapshot: %w", err))
			return
		}
		var bytes, full int64
		for _, op := range ops {
			for _, k := range op.GetState().GetKeyed() {
				bytes += k.GetIncrementalSize()
				full += k.GetFullSize()
			}
		}
		if part.channels != nil {
			// Unaligned: the acknowledgement waits for the in-flight data, complete once
			// every input channel delivered the barrier (or an abort cancels ctx).
			var cs runtime.ChannelState
			select {
			case cs = <-part.channels:
			case <-ctx.Done():
				return
			}
			entries, err := writeChannelState(ctx, files, c.keys, cs)
			if err != nil {
				c.decline(b.ID, fmt.Errorf("write in-flight data: %w", err))
				return
			}
			if len(entries) > 0 {
				ops = withChannelState(ops, c.head, int32(id.GetSubtask()), entries)
				n := cs.Bytes()
				bytes += n
				full += n
			}
		}
		c.ack(b.ID, ops, &sluicev1.CheckpointTaskMetrics{
			SyncMs: snap.Stats().Sync.Milliseconds(), AsyncMs: time.Since(start).Milliseconds(),
			AlignmentMs: al.Duration.Milliseconds(), StartDelayMs: al.StartDelay.Milliseconds(),
			Bytes: bytes, FullBytes: full,
			// The jobmanager's series of pending compaction bytes per checkpoint.
			State: stateMetricsProto(c.chain.StateMetrics()),
		})
	}()
	return nil
}

// ChannelState passes the in-flight data of unaligned checkpoint id to its asynchronous
// part; it is dropped when that part is gone (the snapshot failed or was aborted).
func (c *taskCheckpoints) ChannelState(id int64, cs runtime.ChannelState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p := c.running[id]; p != nil && p.channels != nil {
		select {
		case p.channels <- cs:
		default:
		}
	}
}

// withChannelState adds a subtask's channel state to its first operator's state.
func withChannelState(ops []*sluicev1.OperatorSubtaskState, head string, subtask int32, entries []*sluicev1.ChannelState) []*sluicev1.OperatorSubtaskState {
	for _, op := range ops {
		if op.GetUid() == head {
			if op.State == nil {
				op.State = &sluicev1.SubtaskState{Subtask: subtask}
			}
			op.State.ChannelState = append(op.State.ChannelState, entries...)
			return ops
		}
	}
	return append(ops, &sluicev1.OperatorSubtaskState{Uid: head, State: &sluicev1.SubtaskState{Subtask: subtask, ChannelState: entries}})
}

// Abort declines a checkpoint this task gave up.
func (c *taskCheckpoints) Abort(id int64, reason error) {
	c.mu.Lock()
	if p := c.running[id]; p != nil {
		p.cancel()
	}
	c.mu.Unlock()
	c.tm.wg.Add(1)
	go func() {
		defer c.tm.wg.Done()
		c.decline(id, reason)
	}()
}

// SourceEnded reports the source task as ending: the jobmanager then triggers the
// checkpoint it waits for.
func (c *taskCheckpoints) SourceEnded() {
	c.log.Info("source input ended: waiting for a final checkpoint")
	c.tm.wg.Add(1)
	go func() {
		defer c.tm.wg.Done()
		c.tm.report(c.rt, sluicev1.TaskState_TASK_STATE_ENDING, "")
	}()
}

// cancelAll stops the asynchronous parts in flight (the task ended).
func (c *taskCheckpoints) cancelAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.running {
		p.cancel()
	}
}

func (c *taskCheckpoints) ack(id int64, ops []*sluicev1.OperatorSubtaskState, m *sluicev1.CheckpointTaskMetrics) {
	ctx, cancel := context.WithTimeout(c.tm.base, 30*time.Second)
	defer cancel()
	_, err := c.tm.jm.AcknowledgeCheckpoint(ctx, &sluicev1.AcknowledgeCheckpointRequest{
		TaskManagerId: c.tm.cfg.ID, Execution: c.rt.id, CheckpointId: id, Operators: ops, Metrics: m,
	})
	if err != nil {
		// The checkpoint times out at the coordinator; nothing else to do.
		c.log.Warn("cannot acknowledge checkpoint", "checkpoint", id, "err", err)
	}
}

func (c *taskCheckpoints) decline(id int64, reason error) {
	c.log.Info("declining checkpoint", "checkpoint", id, "reason", reason)
	ctx, cancel := context.WithTimeout(c.tm.base, 10*time.Second)
	defer cancel()
	_, err := c.tm.jm.DeclineCheckpoint(ctx, &sluicev1.DeclineCheckpointRequest{
		TaskManagerId: c.tm.cfg.ID, Execution: c.rt.id, CheckpointId: id, Reason: reason.Error(),
	})
	if err != nil {
		c.log.Warn("cannot decline checkpoint", "checkpoint", id, "err", err)
	}
}
