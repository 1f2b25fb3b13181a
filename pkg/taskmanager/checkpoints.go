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

// blobFiles writes and reads one job's checkpoint files in the blob store: files of
// checkpoint n go to chk-<n>/<prefix><name> under the job's directory.
type blobFiles struct {
	store  *blobstore.Store // scoped to the job directory
	id     int64
	prefix string
}

func (b blobFiles) Create(ctx context.Context, name string) (state.FileWriter, error) {
	w, err := b.store.Create(ctx, blobstore.CheckpointPath(b.id, b.prefix+name))
	if err != nil {
		return nil, err
	}
	return fileWriter{w}, nil
}

type fileWriter struct{ *blobstore.Writer }

func (f fileWriter) Abort() error { f.Writer.Abort(); return nil }

// Open reads a state file whole, verifying its size and checksum. Heap state is held in
// memory anyway; backends that keep files on disk download them themselves.
func (b blobFiles) Open(ctx context.Context, f *sluicev1.StateFile) (state.FileReader, error) {
	data, err := b.store.ReadAll(ctx, f)
	if err != nil {
		return nil, err
	}
	return state.BytesReader(data), nil
}

// taskCheckpoints is a task's checkpointing: synchronous snapshots on the task
// goroutine, the asynchronous part on a goroutine owned by the task manager, and the
// acknowledgement (or decline) to the jobmanager.
type taskCheckpoints struct {
	tm    *TaskManager
	rt    *runningTask
	chain *api.Chain
	store *blobstore.Store // job directory; nil: checkpointing is off
	log   *slog.Logger

	mu      sync.Mutex
	running map[int64]context.CancelFunc // async parts in flight
}

// Snapshot takes the synchronous part of checkpoint b and starts the asynchronous one.
func (c *taskCheckpoints) Snapshot(b runtime.Barrier, al runtime.Alignment) error {
	if c.store == nil {
		return fmt.Errorf("checkpoint %d: this job has no checkpoint storage", b.ID)
	}
	snap, err := c.chain.Snapshot(b.ID)
	if err != nil {
		return err
	}
	id := c.rt.id
	ctx, cancel := context.WithCancel(c.tm.base)
	c.mu.Lock()
	c.running[b.ID] = cancel
	c.mu.Unlock()
	files := blobFiles{store: c.store, id: b.ID, prefix: fmt.Sprintf("v%d-s%d-", id.GetVertex(), id.GetSubtask())}
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
		c.ack(b.ID, ops, &sluicev1.CheckpointTaskMetrics{
			SyncMs: snap.Stats().Sync.Milliseconds(), AsyncMs: time.Since(start).Milliseconds(),
			AlignmentMs: al.Duration.Milliseconds(), StartDelayMs: al.StartDelay.Milliseconds(),
			Bytes: bytes, FullBytes: full,
		})
	}()
	return nil
}

// Abort declines a checkpoint this task gave up.
func (c *taskCheckpoints) Abort(id int64, reason error) {
	c.mu.Lock()
	if cancel := c.running[id]; cancel != nil {
		cancel()
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
	for _, cancel := range c.running {
		cancel()
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
