package jobmanager

// Savepoints, Flink's: taken when the user asks (streamctl savepoint, stop, cancel
// --with-savepoint), always aligned, self-contained (no file of the job's checkpoint
// chain; every task writes its files into the savepoint's own directory, which the
// barrier names) and relocatable (every path in the _metadata is relative to that
// directory). They are owned by the user: never recorded as checkpoints in etcd, never
// restored by a failover, never deleted by the chain's cleanup, never referenced by a
// later checkpoint. A plain savepoint does not make two-phase-commit sinks commit (its
// tasks are not notified, as in Flink >= 1.15): the transaction it pre-committed is
// committed by the next checkpoint that completes, or by a restore from it, so a
// failover to an earlier checkpoint replays nothing that was committed.
//
// Stop with savepoint: the sources stop emitting at the savepoint's barrier (its Stop
// flag; with drain they first emit the final watermark). Once the savepoint's _metadata
// is written, the job's record in etcd names it; only then are the tasks notified: the
// sinks commit exactly the records before it, and every task ends without ending its
// input. The job ends FINISHED with the savepoint's path, whatever happens to its
// tasks from then on (a new leader ends it FINISHED too). If the savepoint fails, the
// tasks are told (the sources go on) and the job keeps running; after a drain, whose
// final watermark already fired every event-time timer, it restarts from its latest
// checkpoint instead.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/rpc"
	"github.com/sluice-stream/sluice/pkg/runtime"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// savepointKind is what a savepoint is taken for.
type savepointKind int8

const (
	savepointPlain  savepointKind = iota // the job goes on
	savepointStop                        // stop with savepoint: the job ends FINISHED with it
	savepointCancel                      // cancel with savepoint: canceled once it completed
)

func (k savepointKind) String() string {
	switch k {
	case savepointStop:
		return "stop"
	case savepointCancel:
		return "cancel"
	}
	return "savepoint"
}

// savepointOp is one savepoint asked for, from the request to its answer (loop
// goroutine).
type savepointOp struct {
	kind   savepointKind
	dir    string // URL of its directory, <target>/savepoint-<job>-<random>
	format sluicev1.SavepointFormat
	drain  bool
	// waitUntil: while MaxConcurrent checkpoints are in progress the request waits, the
	// periodic checkpoints paused, until a slot frees up or this time.
	waitUntil time.Time
	request   checkpoint.RequestID // set once the coordinator took the request
	id        int64                // set once triggered
	triggered time.Time
	size      int64
	// A stop: completed once the savepoint completed, notified once the tasks were told
	// (after the job's record named it); it is answered when the job ended.
	completed  bool
	notified   bool
	notifiedAt time.Time
	done       chan savepointResult // capacity 1, answered once
	answered   bool
}

type savepointResult struct {
	resp *sluicev1.SavepointResponse
	err  error
}

func (op *savepointOp) answer(resp *sluicev1.SavepointResponse, err error) {
	if op.answered {
		return
	}
	op.answered = true
	op.done <- savepointResult{resp: resp, err: err}
}

// savepointRequest is what an RPC asks for.
type savepointRequest struct {
	jobID  string
	kind   savepointKind
	target string // the directory under which the savepoint's goes; "" for the default
	format sluicev1.SavepointFormat
	drain  bool
}

// runSavepoint takes a savepoint and waits for its answer: for a plain one its
// completion, for a stop the end of the job, for a cancel the cancel's start.
func (jm *JobManager) runSavepoint(ctx context.Context, r savepointRequest) (*sluicev1.SavepointResponse, error) {
	switch r.format {
	case sluicev1.SavepointFormat_SAVEPOINT_FORMAT_UNSPECIFIED, sluicev1.SavepointFormat_SAVEPOINT_FORMAT_CANONICAL, sluicev1.SavepointFormat_SAVEPOINT_FORMAT_NATIVE:
	default:
		return nil, fmt.Errorf("%w: unknown savepoint format %v", rpc.ErrInvalid, r.format)
	}
	var jobID string
	var lerr error
	if err := jm.do(ctx, func() {
		j, err := jm.lookup(r.jobID)
		if err == nil {
			err = jm.savepointAllowed(j, r.kind)
		}
		if err != nil {
			lerr = err
			return
		}
		jobID = j.id
	}); err != nil {
		return nil, err
	}
	if lerr != nil {
		return nil, lerr
	}
	target := r.target
	if target == "" {
		target = jm.cfg.Checkpoints.SavepointDir
	}
	if target == "" {
		return nil, fmt.Errorf("%w: no savepoint directory: give one (streamctl savepoint JOB DIR, stop --savepoint-dir DIR, cancel --with-savepoint DIR) or set %s on the jobmanager",
			rpc.ErrFailedPrecondition, "execution.checkpointing.savepoint-dir")
	}
	// The directory must open (a file:// one is created): a wrong URL is refused before
	// the job is touched.
	store, err := blobstore.Open(ctx, target)
	if err != nil {
		return nil, fmt.Errorf("%w: savepoint directory: %v", rpc.ErrInvalid, err)
	}
	store.Close()
	op := &savepointOp{kind: r.kind, dir: joinURL(target, blobstore.SavepointDir(jobID)), format: r.format, drain: r.drain, done: make(chan savepointResult, 1)}
	if len(op.dir) > runtime.MaxBarrierTarget {
		return nil, fmt.Errorf("%w: savepoint directory URL %q is longer than %d bytes", rpc.ErrInvalid, target, runtime.MaxBarrierTarget)
	}
	if err := jm.do(ctx, func() {
		j := jm.jobs[jobID]
		if lerr = jm.savepointAllowed(j, r.kind); lerr != nil {
			return
		}
		lerr = jm.startSavepoint(j, op)
	}); err != nil {
		return nil, err
	}
	if lerr != nil {
		return nil, lerr
	}
	select {
	case res := <-op.done:
		return res.resp, res.err
	case <-ctx.Done():
		// The caller gave up; the savepoint goes on.
		return nil, ctx.Err()
	case <-jm.done:
		return nil, fmt.Errorf("%w: jobmanager is shutting down", rpc.ErrUnavailable)
	}
}

// savepointAllowed says why job j cannot take a savepoint of kind k now (loop goroutine).
func (jm *JobManager) savepointAllowed(j *job, k savepointKind) error {
	switch {
	case j == nil:
		return fmt.Errorf("%w: the job is gone", rpc.ErrNotFound)
	case j.cp == nil:
		return fmt.Errorf("%w: checkpointing is off: savepoints need execution.checkpointing.dir on the jobmanager", rpc.ErrFailedPrecondition)
	case j.stop != nil:
		return fmt.Errorf("%w: job %s is already being stopped (%s with savepoint %s, asked %s ago): wait for it to end", rpc.ErrFailedPrecondition,
			j.id, j.stop.kind, j.stop.dir, jm.now().Sub(j.stop.triggered).Round(time.Millisecond))
	case j.terminal():
		return fmt.Errorf("%w: job %s already %s", rpc.ErrFailedPrecondition, j.id, jobStateName(j.state))
	case !j.cp.started:
		return fmt.Errorf("%w: job %s is %s, not running with all tasks: try again once it runs", rpc.ErrFailedPrecondition, j.id, jobStateName(j.state))
	}
	return nil
}

// startSavepoint asks the coordinator for op's savepoint; while MaxConcurrent
// checkpoints are in progress it waits for a slot, periodic checkpoints paused.
func (jm *JobManager) startSavepoint(j *job, op *savepointOp) error {
	now := jm.now()
	op.triggered = now
	op.waitUntil = now.Add(j.cp.coord.Config().Timeout)
	if op.kind != savepointPlain {
		j.stop = op
	}
	if op.kind == savepointStop {
		// Nothing may complete after the savepoint that stops the job.
		j.cp.coord.PausePeriodic()
	}
	jm.log.Info("savepoint asked for", "job", j.id, "kind", op.kind.String(), "dir", op.dir, "format", formatName(op.format), "drain", op.drain)
	if err := jm.trySavepoint(j, op, now); err != nil {
		if j.stop == op {
			j.stop = nil
		}
		jm.resumePeriodic(j, now)
		return fmt.Errorf("%w: %v", rpc.ErrFailedPrecondition, err)
	}
	return nil
}

// trySavepoint hands op to the coordinator, or queues it while MaxConcurrent
// checkpoints are in progress.
func (jm *JobManager) trySavepoint(j *job, op *savepointOp, now time.Time) error {
	req, acts, err := j.cp.coord.TriggerManual(now, checkpoint.KindSavepoint)
	if errors.Is(err, checkpoint.ErrTooManyCheckpoints) {
		if !containsOp(j.cp.spWaiting, op) {
			j.cp.spWaiting = append(j.cp.spWaiting, op)
			j.cp.coord.PausePeriodic()
		}
		return nil
	}
	if err != nil {
		return err
	}
	op.request = req
	j.cp.savepoints[req] = op
	jm.performCheckpoint(j, acts)
	return nil
}

func containsOp(ops []*savepointOp, op *savepointOp) bool {
	for _, o := range ops {
		if o == op {
			return true
		}
	}
	return false
}

// resumePeriodic lets periodic checkpoints go again unless a savepoint still waits for
// a slot or a stop is under way.
func (jm *JobManager) resumePeriodic(j *job, now time.Time) {
	if len(j.cp.spWaiting) == 0 && (j.stop == nil || j.stop.kind != savepointStop) {
		j.cp.coord.ResumePeriodic(now)
	}
}

// tickSavepoints runs on every loop tick, before the coordinator's: savepoints waiting
// for a slot are retried (they go before a periodic checkpoint), and a stop whose
// savepoint completed notifies the tasks once its record is written, and again every
// second until the job ended (a lost notification would keep a task waiting).
func (jm *JobManager) tickSavepoints(j *job, now time.Time) {
	if len(j.cp.spWaiting) > 0 {
		waiting := j.cp.spWaiting
		j.cp.spWaiting = nil
		for _, op := range waiting {
			switch {
			case !j.cp.started:
				jm.savepointEnded(j, op, fmt.Errorf("savepoint not started: job %s is %s", j.id, jobStateName(j.state)))
			case !now.Before(op.waitUntil):
				jm.savepointEnded(j, op, fmt.Errorf("savepoint not started: other checkpoints kept every slot (execution.checkpointing.max-concurrent-checkpoints) for %s", j.cp.coord.Config().Timeout))
			default:
				if err := jm.trySavepoint(j, op, now); err != nil {
					jm.savepointEnded(j, op, fmt.Errorf("savepoint not started: %v", err))
				}
			}
		}
		if len(j.cp.spWaiting) == 0 && j.cp.started {
			jm.resumePeriodic(j, now)
		}
	}
	if op := j.stop; op != nil && op.notified && !j.terminal() && now.Sub(op.notifiedAt) >= time.Second {
		op.notifiedAt = now
		jm.notifyTasks(j, op.id, true, "")
	}
	jm.maybeNotifyStop(j)
}

// savepointEnded answers op with err: it failed or never started.
func (jm *JobManager) savepointEnded(j *job, op *savepointOp, err error) {
	if j.stop == op {
		j.stop = nil
	}
	if op.kind != savepointPlain {
		err = fmt.Errorf("%v; the job keeps running", err)
	}
	jm.log.Warn("savepoint failed", "job", j.id, "kind", op.kind.String(), "savepoint", op.id, "dir", op.dir, "err", err)
	op.answer(nil, fmt.Errorf("%w: %v", rpc.ErrFailedPrecondition, err))
}

// savepointTriggered records the checkpoint ID of a savepoint request.
func (jm *JobManager) savepointTriggered(j *job, a checkpoint.Trigger) *savepointOp {
	op := j.cp.savepoints[a.Request]
	if op != nil {
		op.id, op.triggered = a.ID, a.Timestamp
		j.cp.spByID[a.ID] = op
		jm.log.Info("savepoint triggered", "job", j.id, "savepoint", a.ID, "kind", op.kind.String(), "dir", op.dir)
	}
	return op
}

// finalizeSavepoint writes a fully acknowledged savepoint's _metadata into its directory.
// Nothing goes to etcd: a savepoint is the user's, never a checkpoint to recover from.
func (jm *JobManager) finalizeSavepoint(j *job, a checkpoint.Finalize) {
	op := j.cp.spByID[a.ID]
	md := a.Metadata
	err := checkSelfContained(md)
	if op == nil {
		err = errors.New("no directory is known for it")
	}
	if err != nil {
		jm.performCheckpoint(j, j.cp.coord.FinalizeFailed(jm.now(), a.ID, err, false))
		return
	}
	dir := op.dir
	jm.io.Add(1)
	go func() {
		defer jm.io.Done()
		err := writeSavepointMetadata(jm.life, dir, md)
		jm.post(func() {
			now := jm.now()
			if err != nil {
				jm.performCheckpoint(j, j.cp.coord.FinalizeFailed(now, a.ID, err, false))
				return
			}
			for _, o := range md.GetOperators() {
				for _, st := range o.GetSubtasks() {
					for _, k := range st.GetKeyed() {
						op.size += k.GetFullSize()
					}
				}
			}
			jm.performCheckpoint(j, j.cp.coord.Finalized(now, a.ID))
		})
	}()
}

// writeSavepointMetadata writes md as dir's _metadata, atomically.
func writeSavepointMetadata(ctx context.Context, dir string, md *sluicev1.CheckpointMetadata) error {
	data, err := checkpoint.EncodeMetadata(md)
	if err != nil {
		return fmt.Errorf("encode metadata: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, restoreBase)
	defer cancel()
	store, err := blobstore.Open(wctx, dir)
	if err != nil {
		return err
	}
	defer store.Close()
	if _, err := store.WriteFile(wctx, blobstore.MetadataName, data); err != nil {
		return fmt.Errorf("write %s/%s: %w", dir, blobstore.MetadataName, err)
	}
	return nil
}

// checkSelfContained refuses a savepoint that references a file outside its own
// chk-<n>/ directory (a shared file of the job's chain, say): it could not be moved,
// nor outlive the job's checkpoints.
func checkSelfContained(md *sluicev1.CheckpointMetadata) error {
	fs := checkpoint.FilesOf(md)
	if len(fs.Shared) > 0 {
		return fmt.Errorf("savepoint %d references %d shared files (e.g. %s): a state backend broke the savepoint contract", md.GetCheckpointId(), len(fs.Shared), fs.SharedPaths()[0])
	}
	dir := checkpoint.CheckpointDirName(md.GetCheckpointId()) + "/"
	for _, p := range fs.Private {
		if !strings.HasPrefix(p, dir) {
			return fmt.Errorf("savepoint %d references %s, outside its directory %s", md.GetCheckpointId(), p, dir)
		}
	}
	return nil
}

// savepointCompleted: a savepoint's _metadata is written.
func (jm *JobManager) savepointCompleted(j *job, a checkpoint.NotifyComplete) {
	op := j.cp.spByID[a.ID]
	delete(j.cp.spByID, a.ID)
	delete(j.cp.savepoints, a.Request)
	if op == nil {
		return
	}
	now := jm.now()
	j.cp.spPaths[a.ID] = op.dir
	jm.log.Info("savepoint completed", "job", j.id, "savepoint", a.ID, "kind", op.kind.String(), "dir", op.dir,
		"bytes", op.size, "duration", now.Sub(op.triggered).Round(time.Millisecond))
	resp := func() *sluicev1.SavepointResponse {
		return &sluicev1.SavepointResponse{JobId: j.id, SavepointId: a.ID, Path: op.dir, State: j.state, SizeBytes: op.size,
			DurationMs: now.Sub(op.triggered).Milliseconds()}
	}
	switch op.kind {
	case savepointPlain:
		// No notification: two-phase-commit sinks commit the savepoint's transaction with
		// the next checkpoint (or a restore from it).
		op.answer(resp(), nil)
	case savepointCancel:
		j.stop = nil
		j.savepointPath = op.dir
		jm.log.Info("canceling job after its savepoint", "job", j.id, "savepoint", a.ID)
		jm.exec(j, j.cancel(jm.pool, now))
		op.answer(resp(), nil)
	case savepointStop:
		// The job's end is decided: record it, then let the tasks commit and end
		// (maybeNotifyStop, once the record is written).
		op.completed = true
		j.savepointPath, j.stopped = op.dir, true
		jm.persist(j)
		jm.maybeNotifyStop(j)
	}
}

// maybeNotifyStop tells the tasks that the savepoint stopping the job completed, once
// the job's record in etcd names it (a new leader then ends the job rather than run it
// again from an older checkpoint, replaying what the sinks commit now).
func (jm *JobManager) maybeNotifyStop(j *job) {
	op := j.stop
	if op == nil || op.kind != savepointStop || !op.completed || op.notified {
		return
	}
	if jm.meta != nil && j.rec.written.GetSavepointPath() != op.dir {
		return
	}
	op.notified, op.notifiedAt = true, jm.now()
	jm.log.Info("stopping job: its savepoint is recorded; the tasks commit and end", "job", j.id, "savepoint", op.id, "dir", op.dir)
	jm.notifyTasks(j, op.id, true, "")
}

// settleStop answers a stop once the job ended (from exec, after every transition).
func (jm *JobManager) settleStop(j *job) {
	op := j.stop
	if op == nil || op.kind != savepointStop || !j.terminal() {
		return
	}
	j.stop = nil
	if !op.completed {
		// Its savepoint's abort answers it (the coordinator stopped with the job).
		return
	}
	op.answer(&sluicev1.SavepointResponse{JobId: j.id, SavepointId: op.id, Path: op.dir, State: j.state, SizeBytes: op.size,
		DurationMs: jm.now().Sub(op.triggered).Milliseconds()}, nil)
}

// savepointAborted: a savepoint failed (id > 0) or its request never got an ID.
func (jm *JobManager) savepointAborted(j *job, req checkpoint.RequestID, id int64, reason string) {
	op := j.cp.savepoints[req]
	if op == nil && id > 0 {
		op = j.cp.spByID[id]
	}
	delete(j.cp.savepoints, req)
	if id > 0 {
		delete(j.cp.spByID, id)
	}
	if op == nil {
		return
	}
	now := jm.now()
	err := fmt.Errorf("savepoint %d failed: %s", id, reason)
	if id == 0 {
		err = fmt.Errorf("savepoint not started: %s", reason)
	} else {
		jm.deleteSavepointDir(j, op.dir)
	}
	if op.kind == savepointStop && j.stop == op {
		j.stop = nil
		if id > 0 {
			// The sources that stopped at its barrier go on.
			jm.notifyTasks(j, id, false, reason)
		}
		jm.resumePeriodic(j, now)
		if op.drain && id > 0 && j.state == sluicev1.JobState_JOB_STATE_RUNNING {
			// The final watermark has fired every event-time timer: the job cannot go on
			// from here; it restarts from its latest checkpoint.
			cause := fmt.Sprintf("stop with drain: savepoint %d failed after the sources emitted the final watermark: %s", id, reason)
			jm.exec(j, j.failover(jm.pool, cause, now))
			op.answer(nil, fmt.Errorf("%w: %v; the job restarts from its latest checkpoint", rpc.ErrFailedPrecondition, err))
			return
		}
	}
	jm.savepointEnded(j, op, err)
}

// deleteSavepointDir deletes what a failed savepoint wrote into its directory.
func (jm *JobManager) deleteSavepointDir(j *job, dir string) {
	jm.io.Add(1)
	go func() {
		defer jm.io.Done()
		ctx, cancel := context.WithTimeout(jm.life, restoreBase)
		defer cancel()
		store, err := blobstore.Open(ctx, readOnlyURL(dir))
		if err == nil {
			_, _, err = deleteSavepointFiles(ctx, store)
			store.Close()
		}
		if err != nil {
			jm.log.Warn("cannot delete the files of a failed savepoint", "job", j.id, "dir", dir, "err", err)
		}
	}()
}

// deleteSavepointFiles deletes every file of the savepoint store is the directory of,
// its _metadata last (so a deletion cut short leaves a savepoint that is seen broken,
// and a dispose that runs again), then the emptied directories (file://).
func deleteSavepointFiles(ctx context.Context, store *blobstore.Store) (files int, bytes int64, err error) {
	var keys []string
	var sizes []int64
	if err := store.List(ctx, "", func(key string, size int64) error {
		keys = append(keys, key)
		sizes = append(sizes, size)
		return nil
	}); err != nil {
		return 0, 0, err
	}
	meta := -1
	for i, k := range keys {
		if k == blobstore.MetadataName {
			meta = i
			continue
		}
		if err := store.Delete(ctx, k); err != nil {
			return files, bytes, err
		}
		files, bytes = files+1, bytes+sizes[i]
	}
	if meta >= 0 {
		if err := store.Delete(ctx, keys[meta]); err != nil {
			return files, bytes, err
		}
		files, bytes = files+1, bytes+sizes[meta]
	}
	return files, bytes, store.RemoveEmptyDirs()
}

func formatName(f sluicev1.SavepointFormat) string {
	if f == sluicev1.SavepointFormat_SAVEPOINT_FORMAT_NATIVE {
		return "native"
	}
	return "canonical"
}

// ---- RPCs ----

// TriggerSavepoint takes a savepoint of a running job; the job goes on.
func (jm *JobManager) TriggerSavepoint(ctx context.Context, req *sluicev1.TriggerSavepointRequest) (*sluicev1.SavepointResponse, error) {
	return jm.runSavepoint(ctx, savepointRequest{jobID: req.GetJobId(), kind: savepointPlain, target: req.GetTargetDir(), format: req.GetFormat()})
}

// StopJob stops a job with a savepoint and waits until it ended.
func (jm *JobManager) StopJob(ctx context.Context, req *sluicev1.StopJobRequest) (*sluicev1.SavepointResponse, error) {
	return jm.runSavepoint(ctx, savepointRequest{jobID: req.GetJobId(), kind: savepointStop, target: req.GetTargetDir(), format: req.GetFormat(), drain: req.GetDrain()})
}

// DisposeSavepoint deletes a savepoint's directory. It refuses anything that is not a
// savepoint directory (a checkpoint, a directory without _metadata or with other
// files), and a savepoint a running job of this jobmanager still restores from.
func (jm *JobManager) DisposeSavepoint(ctx context.Context, req *sluicev1.DisposeSavepointRequest) (*sluicev1.DisposeSavepointResponse, error) {
	src, err := parseRestorePath(req.GetPath())
	if err != nil {
		return nil, err
	}
	if !src.savepoint {
		return nil, fmt.Errorf("%w: %s is a checkpoint directory (chk-<n>), not a savepoint: the jobmanager deletes checkpoints itself", rpc.ErrInvalid, req.GetPath())
	}
	md, problem, err := readSource(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("%w: cannot read %s: %v", rpc.ErrFailedPrecondition, src.storage, err)
	}
	if problem != "" {
		return nil, fmt.Errorf("%w: %s", rpc.ErrInvalid, problem)
	}
	if md.GetKind() != sluicev1.SnapshotKind_SNAPSHOT_KIND_SAVEPOINT {
		return nil, fmt.Errorf("%w: %s holds a checkpoint (%d of job %s), not a savepoint: refusing to delete it", rpc.ErrInvalid, src.storage, md.GetCheckpointId(), md.GetJobId())
	}
	var user string
	if err := jm.do(ctx, func() {
		for _, o := range jm.jobs {
			if o.terminal() || o.restorePath == "" || (o.cp != nil && len(o.cp.recorded) > 0) {
				continue
			}
			if os, err := parseRestorePath(o.restorePath); err == nil && os.savepoint && sameLocation(os.storage, src.storage) {
				user = o.id
			}
		}
	}); err != nil {
		return nil, err
	}
	if user != "" {
		return nil, fmt.Errorf("%w: job %s still restores from %s (it has no checkpoint of its own yet): dispose of it once that job has a checkpoint or ended", rpc.ErrFailedPrecondition, user, src.storage)
	}
	store, _, err := openSource(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", rpc.ErrFailedPrecondition, err)
	}
	defer store.Close()
	// Only a savepoint's own files: anything else means this is not (only) one.
	own := checkpoint.CheckpointDirName(md.GetCheckpointId()) + "/"
	var stray string
	if err := store.List(ctx, "", func(key string, _ int64) error {
		if key != blobstore.MetadataName && !strings.HasPrefix(key, own) {
			stray = key
			return errStopList
		}
		return nil
	}); err != nil && !errors.Is(err, errStopList) {
		return nil, fmt.Errorf("%w: list %s: %v", rpc.ErrFailedPrecondition, src.storage, err)
	}
	if stray != "" {
		return nil, fmt.Errorf("%w: %s holds %s, which is not part of savepoint %d: refusing to delete the directory", rpc.ErrFailedPrecondition, src.storage, stray, md.GetCheckpointId())
	}
	files, bytes, err := deleteSavepointFiles(ctx, store)
	if err != nil {
		return nil, fmt.Errorf("%w: deleted %d files of %s, then: %v (run it again)", rpc.ErrFailedPrecondition, files, src.storage, err)
	}
	jm.log.Info("savepoint disposed of", "dir", src.storage, "savepoint", md.GetCheckpointId(), "of_job", md.GetJobId(), "files", files, "bytes", bytes)
	return &sluicev1.DisposeSavepointResponse{Files: int32(files), Bytes: bytes}, nil
}
