package jobmanager

// Job records in etcd, and how a jobmanager that becomes the leader takes the jobs over.
//
// A job's record (sluicev1.JobRecord at jobs/<job-id>) holds what a new leader needs: the
// graph (with the program descriptor), the retained checkpoint it was submitted to start
// from, its state, counters and times, and the highest execution attempt a leader may
// have started. The leader writes it at submit, before every attempt (an attempt is
// deployed only once it is recorded) and when the job ends, each write fenced by its
// leadership. A new leader reads every record: ended jobs are listed as they ended, the
// others are scheduled again above the recorded attempt and restore the latest
// checkpoint recorded in etcd.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/graph"
	"github.com/sluice-stream/sluice/pkg/meta"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/protobuf/proto"
)

// recordSync is what the jobmanager knows of a job's record in etcd (loop goroutine).
type recordSync struct {
	// written is the record last written or read (nil: none).
	written *sluicev1.JobRecord
	// writing: a write is in flight; the next waits for its outcome, so an older record
	// never overwrites a newer one.
	writing bool
	// retryAt: after a failed write, the next try waits until then.
	retryAt  time.Time
	failures int
	// frozen: this jobmanager must not write the record (it could not recover the job,
	// which a jobmanager of another build may still run, or it no longer leads).
	frozen bool
}

func terminalState(s sluicev1.JobState) bool {
	switch s {
	case sluicev1.JobState_JOB_STATE_FINISHED, sluicev1.JobState_JOB_STATE_CANCELED, sluicev1.JobState_JOB_STATE_FAILED:
		return true
	}
	return false
}

// wantRecord is the record the job needs in etcd now: while it waits for its next
// attempt (CREATED, RESTARTING), that attempt, else the current one; its state, counters
// and times.
func (j *job) wantRecord() *sluicev1.JobRecord {
	attempt := j.attempt
	if j.state == sluicev1.JobState_JOB_STATE_CREATED || j.state == sluicev1.JobState_JOB_STATE_RESTARTING {
		attempt++
	}
	if w := j.rec.written; w != nil {
		attempt = max(attempt, w.GetAttempt()) // never lower the recorded bound
	}
	rec := &sluicev1.JobRecord{
		JobGraph: j.graph, RestorePath: j.restorePath, ClaimMode: j.claimMode, State: j.state, Attempt: attempt,
		Restarts: int32(j.restarts), StartTimeUnixMs: j.start.UnixMilli(), Failure: j.failure,
		SavepointPath: j.savepointPath, AllowNonRestoredState: j.allowNonRestored,
	}
	if j.cp != nil {
		rec.Restores = int32(j.cp.restores)
	}
	if !j.end.IsZero() {
		rec.EndTimeUnixMs = j.end.UnixMilli()
	}
	return rec
}

// recordStale reports whether etcd lacks something of want that matters: a higher
// attempt, the savepoint that ends the job, a cancel under way, or the end of the job.
// Other changes (counters) ride along with those writes.
func recordStale(written, want *sluicev1.JobRecord) bool {
	if written == nil {
		return true
	}
	if want.GetAttempt() > written.GetAttempt() || want.GetSavepointPath() != written.GetSavepointPath() {
		return true
	}
	final := terminalState(want.GetState()) || want.GetState() == sluicev1.JobState_JOB_STATE_CANCELLING
	return final && want.GetState() != written.GetState()
}

// persist writes the job's record when etcd lacks what matters (loop goroutine). One
// write per job is in flight at a time; a failed one is retried with a growing pause
// (from tick), so an etcd outage delays the job's next attempt and loses nothing. The
// attempt the record allows is started once the write succeeded.
func (jm *JobManager) persist(j *job) {
	if jm.meta == nil || jm.lead == nil || j.rec.frozen || j.rec.writing {
		return
	}
	want := j.wantRecord()
	if !recordStale(j.rec.written, want) || jm.now().Before(j.rec.retryAt) {
		return
	}
	data, err := proto.Marshal(want)
	if err != nil {
		jm.log.Error("cannot encode the job's record", "job", j.id, "err", err)
		j.rec.frozen = true
		return
	}
	j.rec.writing = true
	jm.io.Add(1)
	go func() {
		defer jm.io.Done()
		ctx, cancel := context.WithTimeout(jm.life, 30*time.Second)
		err := jm.meta.PutJob(ctx, jm.lead, j.id, data)
		cancel()
		jm.post(func() {
			j.rec.writing = false
			now := jm.now()
			if err != nil {
				j.rec.failures++
				j.rec.retryAt = now.Add(min(100*time.Millisecond<<min(j.rec.failures, 6), 5*time.Second))
				if errors.Is(err, meta.ErrNotLeader) {
					// This jobmanager is stepping down (Serve sees the lost leadership).
					jm.log.Error("cannot write the job's record: no longer the leader", "job", j.id, "err", err)
					j.rec.frozen = true
					return
				}
				if j.rec.failures == 1 || j.rec.failures%20 == 0 {
					jm.log.Warn("cannot write the job's record to etcd; retrying (its next attempt waits for it)",
						"job", j.id, "attempt", want.GetAttempt(), "failures", j.rec.failures, "err", err)
				}
				return
			}
			if j.rec.failures > 0 {
				jm.log.Info("job record written after etcd failures", "job", j.id, "attempt", want.GetAttempt(), "failures", j.rec.failures)
			}
			j.rec.failures = 0
			j.rec.written = want
			jm.maybeNotifyStop(j) // a stop's tasks are told once its savepoint is recorded
			if j.attemptLimit >= 0 && want.GetAttempt() > j.attemptLimit {
				j.attemptLimit = want.GetAttempt()
				jm.exec(j, j.trySchedule(jm.pool, now)) // persists again if needed
				return
			}
			jm.persist(j)
		})
	}()
}

// retryMeta calls f until it succeeds, fails for another reason than etcd being
// unavailable, or ctx ends, pausing between the tries.
func (jm *JobManager) retryMeta(ctx context.Context, what string, f func(context.Context) error) error {
	pause := 100 * time.Millisecond
	for try := 1; ; try++ {
		err := f(ctx)
		if err == nil || !meta.Unavailable(err) || ctx.Err() != nil {
			return err
		}
		if try == 1 || try%10 == 0 {
			jm.log.Warn("etcd unavailable; retrying", "what", what, "tries", try, "err", err)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, 2*time.Second)
	}
}

// recoverJobs takes over the jobs recorded in etcd; it runs once this jobmanager leads,
// before its loop starts. Ended jobs are listed as they ended. Every other job is
// scheduled again (CREATED) with an attempt above the recorded one, restoring the
// latest checkpoint recorded in etcd, else the retained checkpoint it was submitted
// with, else starting from scratch, as Flink does. It waits through etcd outages; it
// fails only when ctx ends (shutdown or lost leadership).
func (jm *JobManager) recoverJobs(ctx context.Context) error {
	var recs []meta.Job
	if err := jm.retryMeta(ctx, "list the jobs", func(ctx context.Context) (err error) {
		recs, err = jm.meta.ListJobs(ctx)
		return err
	}); err != nil {
		return fmt.Errorf("list the jobs in etcd: %w", err)
	}
	var jobs []*job
	for _, r := range recs {
		j, err := jm.recoverJob(ctx, r)
		if err != nil {
			return err
		}
		if j != nil {
			jobs = append(jobs, j)
		}
	}
	slices.SortStableFunc(jobs, func(a, b *job) int { return a.start.Compare(b.start) })
	for _, j := range jobs {
		jm.jobs[j.id] = j
		jm.order = append(jm.order, j.id)
	}
	if len(jobs) > 0 {
		jm.log.Info("jobs recovered from etcd", "jobs", len(jobs))
	}
	return nil
}

// recoverJob rebuilds one job from its record. It returns nil for a record it cannot
// read (logged, left in etcd), and an error only when ctx ends.
func (jm *JobManager) recoverJob(ctx context.Context, r meta.Job) (*job, error) {
	rec := &sluicev1.JobRecord{}
	if err := proto.Unmarshal(r.Record, rec); err != nil || rec.GetJobGraph() == nil {
		jm.log.Error("cannot recover a job: its record in etcd is not a job record; leaving it", "job", r.ID, "err", err)
		return nil, nil
	}
	g := rec.GetJobGraph()
	plan, err := graph.Build(g)
	if err != nil {
		jm.log.Error("cannot recover a job: its recorded graph is invalid; leaving it", "job", r.ID, "err", err)
		return nil, nil
	}
	now := jm.now()
	j := newJob(r.ID, g, plan, jm.cfg.NewRestartStrategy(), time.UnixMilli(rec.GetStartTimeUnixMs()))
	j.slotTimeout = jm.cfg.SlotRequestTimeout
	j.restorePath, j.claimMode, j.allowNonRestored = rec.GetRestorePath(), rec.GetClaimMode(), rec.GetAllowNonRestoredState()
	j.savepointPath = rec.GetSavepointPath()
	j.attempt = rec.GetAttempt()
	j.restarts = int(rec.GetRestarts())
	j.failure = rec.GetFailure()
	j.rec.written = rec

	if rec.GetState() == sluicev1.JobState_JOB_STATE_CANCELLING {
		// The user canceled it and the leader went before its tasks stopped (they stop
		// as the task managers leave that leader): it ends canceled, recorded so.
		jm.log.Info("job recovered: it was being canceled", "job", j.id, "name", g.GetName())
		j.state = sluicev1.JobState_JOB_STATE_CANCELED
		j.end = now
		return j, nil
	}
	if j.savepointPath != "" && !terminalState(rec.GetState()) && rec.GetState() != sluicev1.JobState_JOB_STATE_CANCELLING {
		// Stopped with a savepoint whose tasks had not all ended when the leader went:
		// its end was decided (the savepoint completed, the sinks may have committed
		// it), so it ends FINISHED, recorded so; it never runs again.
		jm.log.Info("job recovered: it was being stopped with a savepoint, which completed", "job", j.id, "name", g.GetName(), "savepoint", j.savepointPath)
		j.state = sluicev1.JobState_JOB_STATE_FINISHED
		j.end = now
		return j, nil
	}
	if terminalState(rec.GetState()) {
		j.state = rec.GetState()
		j.end = time.UnixMilli(rec.GetEndTimeUnixMs())
		j.loggedState, j.loggedAttempt = j.state, j.attempt
		if jm.checkpointsEnabled() && jm.initCheckpoints(j, 0) == nil {
			// For the listing only: the latest checkpoint's ID and time.
			j.cp.restores = int(rec.GetRestores())
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			if latest, err := jm.meta.LatestCheckpoint(cctx, j.id); err == nil {
				j.cp.latest = &sluicev1.CheckpointMetadata{JobId: j.id, JobName: g.GetName(), CheckpointId: latest.ID}
				j.latestCheckpointAt = latest.CompletionTime
			}
			cancel()
		}
		return j, nil
	}

	// The job had not ended: it runs again, above every attempt that may have run.
	j.attemptLimit = rec.GetAttempt()
	fail := func(cause string) (*job, error) {
		// Not recorded: a jobmanager that can run the job may take over later.
		jm.log.Error("cannot recover the job on this jobmanager; leaving its record for another", "job", j.id, "name", g.GetName(), "cause", cause)
		j.toFailed(now, "cannot recover the job on jobmanager "+jm.cfg.ID+": "+cause)
		j.rec.frozen = true
		return j, nil
	}
	if err := jm.checkProgram(g); err != nil {
		return fail(err.Error())
	}
	if !jm.checkpointsEnabled() {
		jm.log.Warn("checkpointing is off on this jobmanager: the recovered job starts from the beginning of its sources", "job", j.id)
		jm.log.Info("job recovered", "job", j.id, "name", g.GetName(), "last_attempt", j.attempt)
		return j, nil
	}
	var counter int64
	if err := jm.retryMeta(ctx, "read the checkpoint counter", func(ctx context.Context) (err error) {
		counter, err = jm.meta.CheckpointCounter(ctx, j.id)
		return err
	}); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return fail(err.Error())
	}
	if err := jm.initCheckpoints(j, counter); err != nil {
		return fail("checkpointing: " + err.Error())
	}
	j.cp.restores = int(rec.GetRestores())
	var recorded []meta.CompletedCheckpoint
	if err := jm.retryMeta(ctx, "read the completed checkpoints", func(ctx context.Context) (err error) {
		recorded, err = jm.meta.Checkpoints(ctx, j.id)
		return err
	}); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return fail(err.Error())
	}
	for _, c := range recorded {
		j.cp.recorded = append(j.cp.recorded, c.ID)
	}
	j.cp.chain.Load(retainedOf(recorded))
	if j.restorePath != "" && j.claimMode == sluicev1.ClaimMode_CLAIM_MODE_CLAIM {
		if cl, err := claimOf(j.restorePath); err == nil {
			// Disposed of already if the job has enough checkpoints of its own; doing it
			// again finds nothing.
			j.cp.claim = cl
		}
	}
	switch {
	case len(recorded) > 0:
		// The newest record, checkpoint or savepoint, is where recovery starts, if it is
		// intact: prepareRestore checks it before the first attempt and falls back to
		// an older one if not.
		latest := recorded[len(recorded)-1]
		md, err := jm.readCheckpoint(ctx, j.cp.store, latest)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			jm.log.Warn("cannot read the newest checkpoint; the restore will look for an intact one", "job", j.id, "checkpoint", latest.ID, "err", err)
			break
		}
		j.cp.latest = md
		j.latestCheckpointAt = latest.CompletionTime
	case j.restorePath != "":
		md, from, err := loadRestore(ctx, j.restorePath, g, j.allowNonRestored, jm.backend())
		if err != nil {
			return fail(err.Error())
		}
		j.cp.latest, j.cp.latestStorage = md, from
	}
	jm.log.Info("job recovered", "job", j.id, "name", g.GetName(), "last_attempt", j.attempt,
		"checkpoint", j.cp.latest.GetCheckpointId(), "checkpoint_counter", counter)
	return j, nil
}

// readCheckpoint reads and checks the _metadata of a recorded checkpoint from the job's
// directory, trying a few times (the blob store may hiccup).
func (jm *JobManager) readCheckpoint(ctx context.Context, store *blobstore.Store, c meta.CompletedCheckpoint) (*sluicev1.CheckpointMetadata, error) {
	var err error
	for try := 0; try < 3; try++ {
		if try > 0 {
			t := time.NewTimer(time.Duration(try) * 500 * time.Millisecond)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil, ctx.Err()
			case <-t.C:
			}
		}
		var md *sluicev1.CheckpointMetadata
		if md, err = readMetadata(ctx, store, c); err == nil {
			return md, nil
		}
		jm.log.Warn("cannot read a recorded checkpoint", "checkpoint", c.ID, "path", c.MetadataPath, "err", err)
	}
	return nil, err
}

func readMetadata(ctx context.Context, store *blobstore.Store, c meta.CompletedCheckpoint) (*sluicev1.CheckpointMetadata, error) {
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	data, err := store.Bucket().ReadAll(rctx, store.BucketKey(c.MetadataPath))
	if err != nil {
		return nil, fmt.Errorf("read checkpoint %d (%s): %w", c.ID, c.MetadataPath, err)
	}
	if c.MetadataSize > 0 && int64(len(data)) != c.MetadataSize {
		return nil, fmt.Errorf("checkpoint %d: %s has %d bytes, its record says %d", c.ID, c.MetadataPath, len(data), c.MetadataSize)
	}
	md, err := checkpoint.DecodeMetadata(data)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %d: %s: %w", c.ID, c.MetadataPath, err)
	}
	if md.GetCheckpointId() != c.ID {
		return nil, fmt.Errorf("checkpoint %d: %s holds checkpoint %d", c.ID, c.MetadataPath, md.GetCheckpointId())
	}
	return md, nil
}
