package jobmanager

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/graph"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/meta"
	"github.com/sluice-stream/sluice/pkg/rpc"
	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/protobuf/proto"
)

// CheckpointConfig configures checkpointing for every job of the jobmanager.
type CheckpointConfig struct {
	// Storage is the blob store URL of checkpoint files (execution.checkpointing.dir);
	// empty turns checkpointing off.
	Storage string
	// SavepointDir is the default directory of savepoints
	// (execution.checkpointing.savepoint-dir); empty: every request names one.
	SavepointDir string
	// Coordinator holds interval, timeout, min pause, max concurrent, tolerable failures
	// and the mode.
	Coordinator checkpoint.Config
	// Retained is how many completed checkpoints are kept (num-retained).
	Retained int
	// FullEvery > 0 asks for a full checkpoint every FullEvery checkpoints
	// (execution.checkpointing.incremental.full-every); see checkpoint.ChainConfig.
	FullEvery int
	// OrphanGrace is how long a file no checkpoint references must have been seen before
	// the sweep deletes it (default 10 minutes), and SweepInterval how often each job's
	// directory is swept (default 5 minutes; the first sweep runs when the job starts).
	OrphanGrace   time.Duration
	SweepInterval time.Duration
	// Starvation tunes the warning that RocksDB compaction falls behind (zero fields:
	// the defaults of checkpoint.StarvationConfig).
	Starvation checkpoint.StarvationConfig
}

func (c CheckpointConfig) orphanGrace() time.Duration {
	if c.OrphanGrace > 0 {
		return c.OrphanGrace
	}
	return 10 * time.Minute
}

func (c CheckpointConfig) sweepInterval() time.Duration {
	if c.SweepInterval > 0 {
		return c.SweepInterval
	}
	return 5 * time.Minute
}

// jobCheckpoints is one job's checkpointing state, owned by the jobmanager's loop.
type jobCheckpoints struct {
	coord   *checkpoint.Coordinator
	store   *blobstore.Store // the job's directory
	started bool             // the coordinator runs for the current attempt
	// latest is the newest completed checkpoint: what a restart restores.
	latest *sluicev1.CheckpointMetadata
	// latestStorage is the URL latest's files are relative to when it is not this
	// job's own checkpoint directory (a job started from a retained checkpoint).
	latestStorage   string
	restores        int
	restoredAttempt int64
	// finalRequest is the request of the latest final checkpoint (sources released by it).
	finalRequest checkpoint.RequestID
	// discarded are completed checkpoints no longer retained (their files deleted).
	discarded map[int64]bool
	waiters   map[checkpoint.RequestID]chan checkpointResult
	// recorded are the IDs of the job's checkpoint records in etcd as far as this
	// jobmanager knows, ascending: what a record write that committed on a retry may
	// have subsumed.
	recorded []int64
	// idWarned is when a failed checkpoint ID allocation was last logged.
	idWarned time.Time

	// chain decides which files of the job's checkpoints may be deleted, and when a
	// checkpoint must be full (see chain.go).
	chain *checkpoint.Chain
	// full are the checkpoints triggered full, for the history.
	full map[int64]bool
	// broken are retained checkpoints a restore found broken, with the first problem.
	broken map[int64]string
	// restore is the state of the restore of the next attempt (chain.go).
	restore restorePrep
	// restoredID is the checkpoint the current attempt restored, restoreNote why it is
	// not the newest retained one (a fallback).
	restoredID  int64
	restoreNote string
	// startedAttempt is the last attempt whose tasks all ran (checkpointing started).
	startedAttempt int64
	// claim: the job owns the retained checkpoint of another job it started from.
	claim *claimState
	// sweepAt is when the job's directory is swept next; sweeping and resyncing say a
	// listing or a read of etcd is under way.
	sweepAt    time.Time
	sweeping   bool
	resyncing  bool
	resyncAt   time.Time
	resyncWarn time.Time
	// acks aggregates what the acknowledgements of the checkpoints in the coordinator's
	// history reported beyond its Stats (state.go).
	acks map[int64]*ackStats
	// starvation watches the pending compaction bytes of the completed checkpoints of
	// the current attempt.
	starvation *checkpoint.StarvationDetector

	// savepoints are the savepoints the coordinator took and that have not ended, by
	// request and, once triggered, by ID; spWaiting those waiting for a free slot
	// (savepoints.go). spPaths are the directories of the completed ones, for the
	// history.
	savepoints map[checkpoint.RequestID]*savepointOp
	spByID     map[int64]*savepointOp
	spWaiting  []*savepointOp
	spPaths    map[int64]string
}

type checkpointResult struct {
	id  int64
	err error
}

// enabled reports whether the jobmanager can checkpoint.
func (jm *JobManager) checkpointsEnabled() bool {
	return jm.cfg.Checkpoints.Storage != "" && jm.meta != nil
}

// initCheckpoints sets up a job's coordinator and storage; lastID is the job's
// checkpoint counter in etcd (0 for a new job), which every new ID must exceed.
func (jm *JobManager) initCheckpoints(j *job, lastID int64) error {
	if !jm.checkpointsEnabled() {
		return nil
	}
	store, err := jm.blobs.Sub(blobstore.JobDir(j.id))
	if err != nil {
		return err
	}
	coord, err := checkpoint.New(checkpoint.Job{ID: j.id, Name: j.graph.GetName(), MaxParallelism: j.graph.GetMaxParallelism(), LastCheckpointID: lastID}, jm.cfg.Checkpoints.Coordinator)
	if err != nil {
		return err
	}
	chain := checkpoint.NewChain(checkpoint.ChainConfig{FullEvery: jm.cfg.Checkpoints.FullEvery, OrphanGrace: jm.cfg.Checkpoints.orphanGrace()})
	j.cp = &jobCheckpoints{coord: coord, store: store, waiters: map[checkpoint.RequestID]chan checkpointResult{}, discarded: map[int64]bool{},
		chain: chain, full: map[int64]bool{}, broken: map[int64]string{}, sweepAt: jm.now(),
		acks: map[int64]*ackStats{}, starvation: checkpoint.NewStarvationDetector(jm.cfg.Checkpoints.Starvation),
		savepoints: map[checkpoint.RequestID]*savepointOp{}, spByID: map[int64]*savepointOp{}, spPaths: map[int64]string{}}
	return nil
}

// tasksOf lists the checkpoint task IDs of the job's current attempt.
func tasksOf(j *job) []checkpoint.TaskID {
	var out []checkpoint.TaskID
	for _, t := range j.tasks {
		out = append(out, checkpoint.TaskID{Vertex: t.id.GetVertex(), Subtask: t.id.GetSubtask()})
	}
	return out
}

// syncCheckpoints starts the coordinator once every task of the attempt runs, and
// stops it when the attempt ends (loop goroutine).
func (jm *JobManager) syncCheckpoints(j *job) {
	if j.cp == nil {
		return
	}
	jm.prepareRestore(j)
	now := jm.now()
	running := j.state == sluicev1.JobState_JOB_STATE_RUNNING && len(j.tasks) > 0
	sourcesEnded := running
	for _, t := range j.tasks {
		switch {
		case t.state == sluicev1.TaskState_TASK_STATE_ENDING:
		case t.state != sluicev1.TaskState_TASK_STATE_RUNNING:
			running, sourcesEnded = false, false
		case t.vertex.IsSource():
			sourcesEnded = false
		}
	}
	defer func() {
		// Every source waits at its end for a checkpoint to complete: trigger one
		// whenever none is under way (a failed one is replaced on the next tick).
		if sum := j.cp.coord.Summary(); j.cp.started && sourcesEnded && j.stop == nil && sum.InProgress == 0 && sum.Queued == 0 {
			req, acts, err := j.cp.coord.TriggerManual(now, checkpoint.KindCheckpoint)
			if err == nil {
				j.cp.finalRequest = req
				jm.log.Info("all sources ended: triggering the final checkpoint", "job", j.id, "request", req)
				jm.performCheckpoint(j, acts)
			}
		}
	}()
	switch {
	case running && !j.cp.started:
		if j.cp.restoredAttempt == j.attempt {
			// Counted once every task runs: an attempt whose deployment failed did not
			// restore anything.
			j.cp.restores++
		}
		if err := j.cp.coord.Start(now, tasksOf(j)); err != nil {
			jm.log.Error("cannot start checkpointing", "job", j.id, "err", err)
			return
		}
		// The attempt's backends are new instances: their compaction starts anew.
		j.cp.starvation.Reset()
		j.cp.started = true
		j.cp.startedAttempt = j.attempt
	case !running && j.cp.started && (j.state != sluicev1.JobState_JOB_STATE_RUNNING || len(j.tasks) == 0 || anyEnded(j)):
		j.cp.started = false
		jm.performCheckpoint(j, j.cp.coord.Stop(now, "job attempt "+fmt.Sprint(j.attempt)+" is "+jobStateName(j.state)))
	}
}

func anyEnded(j *job) bool {
	for _, t := range j.tasks {
		if t.terminal() {
			return true
		}
	}
	return false
}

// performCheckpoint carries out the coordinator's actions (loop goroutine); I/O runs on
// goroutines whose outcome comes back through post.
func (jm *JobManager) performCheckpoint(j *job, acts []checkpoint.Action) {
	for _, a := range acts {
		switch a := a.(type) {
		case checkpoint.AllocateID:
			jm.io.Add(1)
			go func() {
				defer jm.io.Done()
				ctx, cancel := context.WithTimeout(jm.life, 30*time.Second)
				id, err := jm.meta.NextCheckpointID(ctx, jm.lead, j.id)
				cancel()
				jm.post(func() {
					now := jm.now()
					if err != nil {
						// Retried at the next tick without counting as a failed checkpoint:
						// an etcd outage delays checkpoints. Logged every few seconds only.
						if now.Sub(j.cp.idWarned) >= 5*time.Second {
							j.cp.idWarned = now
							jm.log.Warn("cannot allocate a checkpoint ID; retrying", "job", j.id, "err", err)
						}
						jm.performCheckpoint(j, j.cp.coord.IDFailed(now, a.Request, err))
						return
					}
					if !j.cp.idWarned.IsZero() {
						j.cp.idWarned = time.Time{}
						jm.log.Info("checkpoint ID allocated again", "job", j.id, "checkpoint", id)
					}
					acts, err := j.cp.coord.IDAllocated(now, a.Request, id)
					if err != nil {
						jm.log.Error("checkpoint ID did not increase", "job", j.id, "id", id, "err", err)
					}
					jm.performCheckpoint(j, acts)
				})
			}()
		case checkpoint.Trigger:
			var sp *savepointOp
			if a.Kind == checkpoint.KindSavepoint {
				sp = jm.savepointTriggered(j, a)
			}
			jm.triggerSources(j, a, sp)
		case checkpoint.Finalize:
			if a.Kind == checkpoint.KindSavepoint {
				jm.finalizeSavepoint(j, a)
				continue
			}
			jm.finalize(j, a)
		case checkpoint.NotifyComplete:
			if a.Kind == checkpoint.KindSavepoint {
				jm.savepointCompleted(j, a)
				continue
			}
			jm.notifyTasks(j, a.ID, true, "")
			jm.observeCompaction(j, a)
			if w := j.cp.waiters[a.Request]; w != nil {
				w <- checkpointResult{id: a.ID}
				delete(j.cp.waiters, a.Request)
			}
		case checkpoint.NotifyAborted:
			if a.Kind == checkpoint.KindSavepoint {
				jm.savepointAborted(j, a.Request, a.ID, a.Reason)
				continue
			}
			jm.log.Info("checkpoint aborted", "job", j.id, "checkpoint", a.ID, "reason", a.Reason)
			jm.answer(j, a.Request, a.ID, fmt.Errorf("checkpoint %d aborted: %s", a.ID, a.Reason))
			// Nothing records an aborted checkpoint (its etcd write, if any, was refused
			// for certain), so its files are garbage: its directory now, the shared files
			// it uploaded once the checkpoints in progress beside it ended.
			jm.deleteFiles(j, j.cp.chain.Aborted(a.ID), "aborted checkpoint")
		case checkpoint.OutcomeUnknown:
			if a.Kind == checkpoint.KindSavepoint {
				jm.savepointAborted(j, a.Request, a.ID, a.Reason)
				continue
			}
			jm.log.Warn("checkpoint outcome unknown: deleting nothing until etcd is read again", "job", j.id, "checkpoint", a.ID, "reason", a.Reason)
			jm.deleteFiles(j, j.cp.chain.Unknown(a.ID), "checkpoint ended")
			jm.answer(j, a.Request, a.ID, fmt.Errorf("checkpoint %d: outcome unknown: %s", a.ID, a.Reason))
		case checkpoint.RequestAborted:
			if a.Kind == checkpoint.KindSavepoint {
				jm.savepointAborted(j, a.Request, 0, a.Reason)
				continue
			}
			jm.answer(j, a.Request, 0, fmt.Errorf("checkpoint not started: %s", a.Reason))
		case checkpoint.FailJob:
			jm.log.Warn("too many failed checkpoints: failing the job over", "job", j.id, "reason", a.Reason)
			j.cp.started = false
			jm.exec(j, j.failover(jm.pool, "checkpointing: "+a.Reason, jm.now()))
		}
	}
}

func (jm *JobManager) answer(j *job, req checkpoint.RequestID, id int64, err error) {
	if w := j.cp.waiters[req]; w != nil {
		w <- checkpointResult{id: id, err: err}
		delete(j.cp.waiters, req)
	}
}

// triggerSources asks every source task to start checkpoint a; sp is the savepoint it
// is, if it is one.
func (jm *JobManager) triggerSources(j *job, a checkpoint.Trigger, sp *savepointOp) {
	mode := sluicev1.CheckpointMode_CHECKPOINT_MODE_EXACTLY_ONCE
	if a.Mode == checkpoint.AtLeastOnce {
		mode = sluicev1.CheckpointMode_CHECKPOINT_MODE_AT_LEAST_ONCE
	}
	full := false
	if a.Kind == checkpoint.KindCheckpoint {
		// Savepoints are not part of the chain: self-contained, in their own directory.
		var why string
		if full, why = j.cp.chain.Trigger(a.ID, jm.now()); full {
			j.cp.full[a.ID] = true
			jm.log.Info("full checkpoint", "job", j.id, "checkpoint", a.ID, "why", why)
		}
	}
	for _, t := range j.tasks {
		if !t.vertex.IsSource() {
			continue
		}
		tm := jm.pool.Get(t.tm)
		if tm == nil {
			continue // its loss fails the attempt; the checkpoint times out or stops
		}
		final := a.Request == j.cp.finalRequest && j.cp.finalRequest != 0
		req := &sluicev1.TriggerCheckpointRequest{Execution: t.id, CheckpointId: a.ID, TriggerTimeUnixMs: a.Timestamp.UnixMilli(),
			Mode: mode, Savepoint: a.Kind == checkpoint.KindSavepoint, Final: final, Full: full}
		if !final {
			// The final checkpoint is always aligned: every record is then processed
			// before it completes, so what sinks commit at the end of their input is
			// all covered by it, and a restore from it replays nothing.
			req.Unaligned, req.AlignedTimeoutMs = a.Unaligned, a.AlignedTimeout.Milliseconds()
		}
		if sp != nil {
			// A savepoint is always aligned, whatever the checkpointing mode: its
			// snapshot reflects exactly the records before its barrier.
			req.Mode = sluicev1.CheckpointMode_CHECKPOINT_MODE_EXACTLY_ONCE
			req.SavepointDir, req.SavepointFormat = sp.dir, sp.format
			req.Stop, req.Drain = sp.kind == savepointStop, sp.kind == savepointStop && sp.drain
		}
		task := checkpoint.TaskID{Vertex: t.id.GetVertex(), Subtask: t.id.GetSubtask()}
		addr := tm.Address
		jm.io.Add(1)
		go func() {
			defer jm.io.Done()
			err := jm.callTM(addr, func(ctx context.Context, c sluicev1.TaskServiceClient) error {
				_, err := c.TriggerCheckpoint(ctx, req)
				return err
			})
			if err != nil {
				jm.post(func() {
					jm.performCheckpoint(j, j.cp.coord.Decline(jm.now(), a.ID, task, "trigger: "+rpc.Message(err, "task manager", addr)))
				})
			}
		}()
	}
}

// finalize writes _metadata, then records the checkpoint in etcd in one fenced
// transaction with the shared files it references; only after that commits are the
// files it made unreferenced (decided by the chain) deleted.
func (jm *JobManager) finalize(j *job, a checkpoint.Finalize) {
	md := a.Metadata
	files := checkpoint.FilesOf(md)
	rec, err := j.cp.chain.Prepare(a.ID, files)
	if err != nil {
		jm.log.Warn("checkpoint refused", "job", j.id, "checkpoint", a.ID, "err", err)
		jm.performCheckpoint(j, j.cp.coord.FinalizeFailed(jm.now(), a.ID, err, false))
		return
	}
	store := j.cp.store
	retain := max(1, jm.cfg.Checkpoints.Retained)
	prev := slices.Clone(j.cp.recorded)
	limit := j.cp.coord.Config().Timeout
	jm.io.Add(1)
	go func() {
		defer jm.io.Done()
		res, err := jm.commitCheckpoint(store, j.id, md, retain, prev, limit, commitFiles{record: rec, files: files})
		jm.post(func() {
			now := jm.now()
			if err != nil {
				unknown := errors.Is(err, meta.ErrOutcomeUnknown)
				jm.log.Warn("checkpoint finalization failed", "job", j.id, "checkpoint", a.ID, "outcome_unknown", unknown, "err", err)
				if errors.Is(err, errMissingShared) || errors.Is(err, meta.ErrSharedFileMissing) {
					// A task reused a file that is gone (it missed that the checkpoint it
					// took it from was subsumed): a full checkpoint starts a new chain.
					j.cp.chain.ForceFull(fmt.Sprintf("checkpoint %d was refused: %v", a.ID, err))
				}
				jm.performCheckpoint(j, j.cp.coord.FinalizeFailed(now, a.ID, err, unknown))
				return
			}
			j.cp.latest, j.cp.latestStorage = md, ""
			j.latestCheckpointAt = now
			var removed []int64
			for _, r := range res.sub.Removed {
				removed = append(removed, r.ID)
				j.cp.discarded[r.ID] = true
				j.cp.recorded = slices.DeleteFunc(j.cp.recorded, func(id int64) bool { return id == r.ID })
			}
			j.cp.recorded = append(j.cp.recorded, a.ID)
			jm.log.Info("checkpoint completed", "job", j.id, "checkpoint", a.ID, "subsumed", len(removed),
				"shared_files", len(rec.SharedFiles), "new_shared_files", len(rec.NewSharedFiles))
			// Files the transaction left unreferenced by every retained checkpoint may go
			// now that it committed (rule 2).
			jm.deleteFiles(j, j.cp.chain.Committed(a.ID, removed, res.sub.Unreferenced, res.exact), "subsumed")
			jm.maybeDisposeClaimed(j, retain)
			jm.performCheckpoint(j, j.cp.coord.Finalized(now, a.ID))
		})
	}()
}

// errMissingShared: a new shared file of a checkpoint is not in the blob store.
var errMissingShared = errors.New("shared file missing")

// commitFiles is what the chain prepared for a checkpoint's record.
type commitFiles struct {
	record checkpoint.Record
	files  checkpoint.Files
}

// commitResult is what recording a checkpoint changed: the records and registry entries
// it removed; exact is false when a retry found the record already written (the files
// it left unreferenced are then unknown).
type commitResult struct {
	sub   meta.Subsumed
	exact bool
}

// commitCheckpoint writes the checkpoint's _metadata, checks that the shared files it
// uploaded are in the blob store, and records it in etcd with the shared files it
// references. It returns what the etcd transaction removed (subsumed records and
// unreferenced shared files), which may now be deleted.
//
// A record write that fails because etcd is unavailable (no answer, a timeout: possibly
// committed) is retried while this jobmanager leads, for at most limit (the checkpoint
// timeout): an etcd outage shorter than the leadership lease delays the checkpoint
// instead of failing it, so it neither counts towards tolerable-failed-checkpoints nor
// fails the job. A retry that finds the record (ErrCheckpointExists) learns that an
// earlier try committed. The error of a checkpoint given up on after a possibly
// committed try wraps meta.ErrOutcomeUnknown.
func (jm *JobManager) commitCheckpoint(store *blobstore.Store, jobID string, md *sluicev1.CheckpointMetadata, retain int, prev []int64, limit time.Duration, cf commitFiles) (commitResult, error) {
	data, err := checkpoint.EncodeMetadata(md)
	if err != nil {
		return commitResult{}, fmt.Errorf("encode metadata: %w", err)
	}
	key := blobstore.CheckpointPath(md.GetCheckpointId(), blobstore.MetadataName)
	wctx, cancel := context.WithTimeout(jm.life, 60*time.Second)
	f, err := store.WriteFile(wctx, key, data)
	if err == nil {
		err = checkNewShared(wctx, store, cf)
	}
	cancel()
	if err != nil {
		return commitResult{}, err
	}
	var full, incremental int64
	for _, op := range md.GetOperators() {
		for _, st := range op.GetSubtasks() {
			for _, k := range st.GetKeyed() {
				full += k.GetFullSize()
				incremental += k.GetIncrementalSize()
			}
		}
	}
	rec := meta.CompletedCheckpoint{
		ID: md.GetCheckpointId(), Kind: meta.KindCheckpoint, MetadataPath: key, MetadataSize: f.GetSize(),
		MetadataSHA256: hex.EncodeToString(f.GetSha256()), StateSize: full, IncrementalSize: incremental,
		TriggerTime: time.UnixMilli(md.GetTriggerTimeUnixMs()), CompletionTime: time.UnixMilli(md.GetCompletionTimeUnixMs()),
		SharedFiles: cf.record.SharedFiles, NewSharedFiles: cf.record.NewSharedFiles,
	}
	if rec.NewSharedFiles == nil {
		rec.NewSharedFiles = []string{} // told: every shared file is a reuse
	}
	giveUp := time.Now().Add(limit)
	unknown := false // a try may have committed
	pause := 100 * time.Millisecond
	for try := 1; ; try++ {
		sub, err := addCheckpoint(jm.meta, jm.life, jm.lead, jobID, rec, retain)
		switch {
		case err == nil:
			if try > 1 {
				jm.log.Info("checkpoint recorded in etcd after retries", "job", jobID, "checkpoint", rec.ID, "tries", try)
			}
			return commitResult{sub: sub, exact: true}, nil
		case unknown && errors.Is(err, meta.ErrCheckpointExists):
			jm.log.Info("checkpoint recorded in etcd by an earlier try", "job", jobID, "checkpoint", rec.ID, "tries", try)
			return commitResult{sub: meta.Subsumed{Removed: jm.removedSince(jobID, prev, rec.ID)}}, nil
		case !meta.Unavailable(err):
			return commitResult{}, outcome(err, unknown)
		}
		unknown = unknown || errors.Is(err, meta.ErrOutcomeUnknown)
		if try == 1 {
			jm.log.Warn("etcd unavailable: retrying the checkpoint's record while this jobmanager leads", "job", jobID, "checkpoint", rec.ID, "err", err)
		}
		if time.Now().After(giveUp) {
			return commitResult{}, outcome(fmt.Errorf("gave up after %d tries within the checkpoint timeout of %s: %w", try, limit, err), unknown)
		}
		t := time.NewTimer(pause)
		select {
		case <-jm.life.Done():
			t.Stop()
			return commitResult{}, outcome(fmt.Errorf("jobmanager stopping: %w", err), unknown)
		case <-jm.lead.Done():
			t.Stop()
			return commitResult{}, outcome(fmt.Errorf("leadership lost: %w", err), unknown)
		case <-t.C:
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// checkNewShared checks that every shared file a checkpoint uploaded (by the chain's
// account) is in the blob store with its size: a task that reused a file of a
// checkpoint it believed confirmed, after that file was deleted, would otherwise get a
// checkpoint recorded that cannot be restored.
func checkNewShared(ctx context.Context, store *blobstore.Store, cf commitFiles) error {
	for _, p := range cf.record.NewSharedFiles {
		size, err := store.Size(ctx, p)
		switch {
		case errors.Is(err, blobstore.ErrNotFound):
			return fmt.Errorf("%w: %s is not in the blob store (a task reused a deleted file)", errMissingShared, p)
		case err != nil:
			return fmt.Errorf("check %s: %w", p, err)
		case size != cf.files.Shared[p].GetSize():
			return fmt.Errorf("%w: %s has %d bytes, its handle says %d", errMissingShared, p, size, cf.files.Shared[p].GetSize())
		}
	}
	return nil
}

// addCheckpoint is meta.Store.AddCheckpoint; tests replace it to lose etcd's answers.
var addCheckpoint = (*meta.Store).AddCheckpoint

// outcome makes err say the outcome is unknown when an earlier try may have committed.
func outcome(err error, unknown bool) error {
	if unknown && !errors.Is(err, meta.ErrOutcomeUnknown) {
		return fmt.Errorf("%w: an earlier try may have committed: %w", meta.ErrOutcomeUnknown, err)
	}
	return err
}

// removedSince returns the records of prev, older than id, that etcd no longer holds: the
// ones a record write of id that committed on an earlier try subsumed. Best effort: if
// etcd cannot tell, their files stay as orphans.
func (jm *JobManager) removedSince(jobID string, prev []int64, id int64) []meta.CompletedCheckpoint {
	ctx, cancel := context.WithTimeout(jm.life, 10*time.Second)
	defer cancel()
	cps, err := jm.meta.Checkpoints(ctx, jobID)
	if err != nil {
		jm.log.Warn("cannot tell which checkpoints were subsumed: their files stay", "job", jobID, "checkpoint", id, "err", err)
		return nil
	}
	kept := map[int64]bool{}
	for _, c := range cps {
		kept[c.ID] = true
	}
	var out []meta.CompletedCheckpoint
	for _, p := range prev {
		if p < id && !kept[p] {
			out = append(out, meta.CompletedCheckpoint{ID: p})
		}
	}
	return out
}

// notifyTasks tells every task manager running the job's attempt about a checkpoint.
func (jm *JobManager) notifyTasks(j *job, id int64, complete bool, reason string) {
	seen := map[string]bool{}
	for _, t := range j.tasks {
		tm := jm.pool.Get(t.tm)
		if tm == nil || seen[tm.ID] {
			continue
		}
		seen[tm.ID] = true
		addr := tm.Address
		req := &sluicev1.NotifyCheckpointRequest{JobId: j.id, Attempt: j.attempt, CheckpointId: id, Complete: complete, Reason: reason}
		jm.io.Add(1)
		go func() {
			defer jm.io.Done()
			// A lost notification is covered by the next one (rule 7).
			_ = jm.callTM(addr, func(ctx context.Context, c sluicev1.TaskServiceClient) error {
				_, err := c.NotifyCheckpoint(ctx, req)
				return err
			})
		}()
	}
}

// restoreFor computes the state one subtask of a vertex restores from md: for each of
// its operators, the keyed handles whose key groups intersect the subtask's range and its
// share of the operator state (split or union), so it also serves a changed parallelism.
func restoreFor(md *sluicev1.CheckpointMetadata, v *graph.Vertex, subtask int, maxP int) []*sluicev1.OperatorRestore {
	if md == nil {
		return nil
	}
	byUID := map[string]*sluicev1.OperatorState{}
	for _, op := range md.GetOperators() {
		byUID[op.GetUid()] = op
	}
	mine := keygroup.RangeFor(subtask, v.Parallelism, maxP)
	var out []*sluicev1.OperatorRestore
	for _, uid := range v.Operators {
		op := byUID[uid]
		if op == nil {
			continue
		}
		r := &sluicev1.OperatorRestore{Uid: uid}
		old := make([][]*sluicev1.OperatorListState, op.GetParallelism())
		for _, st := range op.GetSubtasks() {
			if int(st.GetSubtask()) < len(old) {
				old[st.GetSubtask()] = st.GetOperatorState()
			}
			if int(op.GetParallelism()) == v.Parallelism && int(st.GetSubtask()) == subtask {
				// Same parallelism: each subtask gets back exactly its own operator state
				// and in-flight data (which exists only at the same parallelism: see
				// checkInFlight).
				r.OperatorState = st.GetOperatorState()
				r.ChannelState = st.GetChannelState()
			}
			for _, h := range st.GetKeyed() {
				hr := keygroup.Range{Start: int(h.GetKeyGroupStart()), End: int(h.GetKeyGroupEnd())}
				if hr.Intersect(mine).Len() > 0 {
					r.Keyed = append(r.Keyed, proto.Clone(h).(*sluicev1.KeyedStateHandle))
				}
			}
		}
		if int(op.GetParallelism()) != v.Parallelism {
			if shares := state.Redistribute(old, v.Parallelism); subtask < len(shares) {
				r.OperatorState = shares[subtask]
			}
		}
		if len(r.Keyed) > 0 || len(r.OperatorState) > 0 || len(r.ChannelState) > 0 {
			out = append(out, r)
		}
	}
	return out
}

// ack applies a task's acknowledgement (loop goroutine).
func (jm *JobManager) ack(j *job, req *sluicev1.AcknowledgeCheckpointRequest) {
	if j.cp == nil || req.GetExecution().GetAttempt() != j.attempt {
		return
	}
	m := req.GetMetrics()
	ack := &checkpoint.SubtaskAck{
		SyncDuration: time.Duration(m.GetSyncMs()) * time.Millisecond, AsyncDuration: time.Duration(m.GetAsyncMs()) * time.Millisecond,
		AlignmentDuration: time.Duration(m.GetAlignmentMs()) * time.Millisecond, StartDelay: time.Duration(m.GetStartDelayMs()) * time.Millisecond,
		Bytes: m.GetBytes(),
	}
	for _, op := range req.GetOperators() {
		ack.Operators = append(ack.Operators, checkpoint.OperatorSubtaskState{UID: op.GetUid(), State: op.GetState()})
	}
	var shared []string
	for _, op := range req.GetOperators() {
		for _, h := range op.GetState().GetKeyed() {
			for _, f := range h.GetSharedFiles() {
				shared = append(shared, f.GetPath())
			}
		}
	}
	// First the chain: while the checkpoint is in progress no deletion touches the
	// shared files the task reported (the ack may finalize it at once). A savepoint is
	// not the chain's (its files are in its own directory).
	if j.cp.spByID[req.GetCheckpointId()] == nil {
		j.cp.chain.Ack(req.GetCheckpointId(), shared)
	}
	task := checkpoint.TaskID{Vertex: req.GetExecution().GetVertex(), Subtask: req.GetExecution().GetSubtask()}
	now := jm.now()
	if t := j.find(req.GetExecution()); t != nil {
		t.setStateMetrics(m.GetState(), now)
	}
	j.cp.addAck(req.GetCheckpointId(), task, m)
	jm.performCheckpoint(j, j.cp.coord.Ack(now, req.GetCheckpointId(), task, ack))
	j.cp.pruneAcks()
}

// AcknowledgeCheckpoint takes a task's part of a checkpoint.
func (jm *JobManager) AcknowledgeCheckpoint(ctx context.Context, req *sluicev1.AcknowledgeCheckpointRequest) (*sluicev1.AcknowledgeCheckpointResponse, error) {
	err := jm.do(ctx, func() {
		if j := jm.jobs[req.GetExecution().GetJobId()]; j != nil {
			jm.ack(j, req)
		}
	})
	return &sluicev1.AcknowledgeCheckpointResponse{}, err
}

// DeclineCheckpoint records that a task could not take its part of a checkpoint.
func (jm *JobManager) DeclineCheckpoint(ctx context.Context, req *sluicev1.DeclineCheckpointRequest) (*sluicev1.DeclineCheckpointResponse, error) {
	err := jm.do(ctx, func() {
		j := jm.jobs[req.GetExecution().GetJobId()]
		if j == nil || j.cp == nil || req.GetExecution().GetAttempt() != j.attempt {
			return
		}
		task := checkpoint.TaskID{Vertex: req.GetExecution().GetVertex(), Subtask: req.GetExecution().GetSubtask()}
		jm.performCheckpoint(j, j.cp.coord.Decline(jm.now(), req.GetCheckpointId(), task, req.GetReason()))
	})
	return &sluicev1.DeclineCheckpointResponse{}, err
}

// TriggerCheckpoint starts a checkpoint now and waits for its outcome.
func (jm *JobManager) TriggerCheckpoint(ctx context.Context, req *sluicev1.TriggerJobCheckpointRequest) (*sluicev1.CheckpointStats, error) {
	var wait chan checkpointResult
	var lerr error
	var j *job
	err := jm.do(ctx, func() {
		var err error
		if j, err = jm.lookup(req.GetJobId()); err != nil {
			lerr = err
			return
		}
		if j.cp == nil {
			lerr = fmt.Errorf("%w: checkpointing is off: set execution.checkpointing.dir on the jobmanager", rpc.ErrFailedPrecondition)
			return
		}
		if !j.cp.started {
			lerr = fmt.Errorf("%w: job %s is %s, not running with all tasks", rpc.ErrFailedPrecondition, j.id, jobStateName(j.state))
			return
		}
		if j.stop != nil && j.stop.kind == savepointStop {
			lerr = fmt.Errorf("%w: job %s is being stopped with a savepoint: no checkpoint may follow it", rpc.ErrFailedPrecondition, j.id)
			return
		}
		reqID, acts, err := j.cp.coord.TriggerManual(jm.now(), checkpoint.KindCheckpoint)
		if err != nil {
			lerr = fmt.Errorf("%w: %v", rpc.ErrFailedPrecondition, err)
			return
		}
		wait = make(chan checkpointResult, 1)
		j.cp.waiters[reqID] = wait
		jm.performCheckpoint(j, acts)
	})
	if err != nil {
		return nil, err
	}
	if lerr != nil {
		return nil, lerr
	}
	select {
	case res := <-wait:
		if res.err != nil {
			return nil, fmt.Errorf("%w: %v", rpc.ErrFailedPrecondition, res.err)
		}
		var st *sluicev1.CheckpointStats
		_ = jm.do(ctx, func() {
			for _, s := range j.cp.coord.Summary().History {
				if s.ID == res.id {
					st = j.cp.statsProto(s)
				}
			}
		})
		if st == nil {
			st = &sluicev1.CheckpointStats{Id: res.id, Status: "completed"}
		}
		return st, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// ListCheckpoints returns the job's checkpoint history, newest first.
func (jm *JobManager) ListCheckpoints(ctx context.Context, req *sluicev1.ListCheckpointsRequest) (*sluicev1.ListCheckpointsResponse, error) {
	resp := &sluicev1.ListCheckpointsResponse{}
	var lerr error
	err := jm.do(ctx, func() {
		j, err := jm.lookup(req.GetJobId())
		if err != nil {
			lerr = err
			return
		}
		if j.cp == nil {
			return
		}
		resp.CompactionWarning = j.cp.compactionWarning()
		for _, s := range j.cp.coord.Summary().History {
			p := j.cp.statsProto(s)
			p.Full = j.cp.full[s.ID]
			switch {
			case s.Kind == checkpoint.KindSavepoint:
				// The user's: never discarded by the job; its path is its directory.
				p.ExternalPath = j.cp.spPaths[s.ID]
			case s.Status == checkpoint.StatusCompleted && j.cp.discarded[s.ID]:
				p.Status = "discarded" // completed, then subsumed: its files are gone
			case s.Status == checkpoint.StatusCompleted:
				p.ExternalPath = blobstore.MetadataKey(j.id, s.ID)
			}
			if why, ok := j.cp.broken[s.ID]; ok {
				p.Status, p.Failure = "broken", why
			}
			resp.Checkpoints = append(resp.Checkpoints, p)
		}
		// Broken checkpoints older than the history (e.g. recorded by an earlier leader)
		// are listed too: a restore skipped them.
		for id, why := range j.cp.broken {
			if !slices.ContainsFunc(resp.Checkpoints, func(p *sluicev1.CheckpointStats) bool { return p.GetId() == id }) {
				resp.Checkpoints = append(resp.Checkpoints, &sluicev1.CheckpointStats{Id: id, Status: "broken", Failure: why,
					ExternalPath: blobstore.MetadataKey(j.id, id)})
			}
		}
		slices.SortStableFunc(resp.Checkpoints, func(a, b *sluicev1.CheckpointStats) int { return compareInt64(b.GetId(), a.GetId()) })
	})
	if err != nil {
		return nil, err
	}
	return resp, lerr
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func statsProto(s checkpoint.Stats) *sluicev1.CheckpointStats {
	p := &sluicev1.CheckpointStats{
		Id: s.ID, Status: s.Status.String(), Savepoint: s.Kind == checkpoint.KindSavepoint,
		TriggerTimeUnixMs: s.TriggerTime.UnixMilli(), DurationMs: s.Duration.Milliseconds(),
		SizeBytes: s.Size, FullSizeBytes: s.Size, AckedTasks: int32(s.AckedTasks), TotalTasks: int32(s.TotalTasks),
		MaxAlignmentMs: s.Alignment.Milliseconds(), MaxStartDelayMs: s.StartDelay.Milliseconds(), Failure: s.FailureReason,
	}
	if !s.EndTime.IsZero() {
		p.EndTimeUnixMs = s.EndTime.UnixMilli()
	}
	return p
}

// checkInFlight refuses to restore the in-flight data of an unaligned checkpoint into a
// job whose parallelism differs anywhere: its buffers belong to channels between
// particular subtasks, and records in them were routed by the old parallelism.
func checkInFlight(md *sluicev1.CheckpointMetadata, g *sluicev1.JobGraph) error {
	inFlight := false
	for _, op := range md.GetOperators() {
		for _, st := range op.GetSubtasks() {
			inFlight = inFlight || len(st.GetChannelState()) > 0
		}
	}
	if !inFlight {
		return nil
	}
	was := map[string]int32{}
	for _, op := range md.GetOperators() {
		was[op.GetUid()] = op.GetParallelism()
	}
	for _, op := range g.GetOperators() {
		if p, ok := was[op.GetUid()]; ok && p != op.GetParallelism() {
			return fmt.Errorf("%w: checkpoint %d is unaligned and holds in-flight data; it restores only at the parallelism it was taken at (operator %q had %d, the job has %d): resubmit with that parallelism, or restore a savepoint or an aligned checkpoint to rescale",
				rpc.ErrFailedPrecondition, md.GetCheckpointId(), op.GetUid(), p, op.GetParallelism())
		}
	}
	return nil
}

func hasState(op *sluicev1.OperatorState) bool {
	for _, st := range op.GetSubtasks() {
		if len(st.GetKeyed()) > 0 || len(st.GetOperatorState()) > 0 || len(st.GetChannelState()) > 0 {
			return true
		}
	}
	return false
}
