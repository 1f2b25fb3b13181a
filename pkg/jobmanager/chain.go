package jobmanager

// The jobmanager's side of the incremental checkpoint chain (the decisions are
// checkpoint.Chain's, a pure state machine; this file performs them):
//
//   - deleteFiles runs the deletions the chain allows, off the loop, and tells the chain
//     which ran;
//   - tickChain sweeps each job's directory for orphans every SweepInterval, and, while
//     the chain is stale (an unknown commit outcome), re-reads the records from etcd;
//   - the claim of a retained checkpoint of another job (claim mode), disposed of once
//     the job's own checkpoints subsume it;
//   - prepareRestore chooses the checkpoint the next attempt restores: the newest
//     retained one whose files are all there, falling back to older ones (and forcing
//     the next checkpoint full) when it is broken;
//   - VerifyCheckpoints and GetCheckpointChain, for streamctl checkpoints verify and
//     --chain.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"
	"time"

	"gocloud.dev/gcerrors"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/meta"
	"github.com/sluice-stream/sluice/pkg/rpc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/protobuf/proto"
)

// deleteFiles deletes d from job j's directory off the loop (each file, or each
// chk-<n>/ directory with everything in it) and confirms to the chain the deletions
// that succeeded; one that failed leaves an orphan that a later sweep decides again.
func (jm *JobManager) deleteFiles(j *job, d checkpoint.Deletions, why string) {
	if d.Empty() {
		return
	}
	store := j.cp.store
	jm.io.Add(1)
	go func() {
		defer jm.io.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var done checkpoint.Deletions
		for _, n := range d.Checkpoints {
			if err := deleteCheckpointDir(ctx, store, n); err != nil {
				jm.log.Warn("cannot delete a checkpoint's files (a sweep tries again)", "job", j.id, "checkpoint", n, "why", why, "err", err)
				continue
			}
			done.Checkpoints = append(done.Checkpoints, n)
		}
		for _, p := range d.Shared {
			if err := store.Delete(ctx, p); err != nil {
				jm.log.Warn("cannot delete a shared file (a sweep tries again)", "job", j.id, "file", p, "why", why, "err", err)
				continue
			}
			done.Shared = append(done.Shared, p)
		}
		jm.log.Debug("deleted checkpoint files", "job", j.id, "why", why, "checkpoints", done.Checkpoints, "shared_files", len(done.Shared))
		jm.post(func() { j.cp.chain.Deleted(done) })
	}()
}

// deleteCheckpointDir deletes every object under chk-<id>/ of store.
func deleteCheckpointDir(ctx context.Context, store *blobstore.Store, id int64) error {
	return store.List(ctx, checkpoint.CheckpointDirName(id)+"/", func(key string, _ int64) error { return store.Delete(ctx, key) })
}

// tickChain runs on every loop tick: a stale chain re-reads the records from etcd (at
// most every second); otherwise the job's directory is listed and swept for orphans
// every SweepInterval (the first time when the job starts). Ended jobs are left alone.
func (jm *JobManager) tickChain(j *job, now time.Time) {
	c := j.cp
	if c == nil || j.terminal() || jm.lead == nil {
		return
	}
	if c.chain.Stale() {
		if !c.resyncing && !now.Before(c.resyncAt) {
			jm.resync(j)
		}
		return
	}
	if c.sweeping || now.Before(c.sweepAt) {
		return
	}
	c.sweeping, c.sweepAt = true, now.Add(jm.cfg.Checkpoints.sweepInterval())
	store := c.store
	jm.io.Add(1)
	go func() {
		defer jm.io.Done()
		ctx, cancel := context.WithTimeout(jm.life, time.Minute)
		l, err := listJobDir(ctx, store)
		cancel()
		jm.post(func() {
			c.sweeping = false
			if err != nil {
				jm.log.Warn("cannot list the job's checkpoint directory to sweep orphans; trying again later", "job", j.id, "err", err)
				return
			}
			d := c.chain.Sweep(jm.now(), l)
			if !d.Empty() {
				jm.log.Info("deleting orphaned checkpoint files (referenced by no checkpoint)", "job", j.id,
					"checkpoint_dirs", d.Checkpoints, "shared_files", len(d.Shared))
			}
			jm.deleteFiles(j, d, "orphan")
		})
	}()
}

// listJobDir lists the shared files and the checkpoint directories of a job directory.
func listJobDir(ctx context.Context, store *blobstore.Store) (checkpoint.Listing, error) {
	var l checkpoint.Listing
	seen := map[int64]bool{}
	err := store.List(ctx, "", func(key string, _ int64) error {
		dir, _, ok := strings.Cut(key, "/")
		if !ok {
			return nil
		}
		if dir == blobstore.SharedDirName {
			l.Shared = append(l.Shared, key)
		} else if n, ok := blobstore.ParseCheckpointDir(dir); ok && !seen[n] {
			seen[n] = true
			l.Checkpoints = append(l.Checkpoints, n)
		}
		return nil
	})
	return l, err
}

// resync re-reads the job's records from etcd for a stale chain.
func (jm *JobManager) resync(j *job) {
	c := j.cp
	c.resyncing, c.resyncAt = true, jm.now().Add(time.Second)
	epoch := c.chain.Epoch()
	jm.io.Add(1)
	go func() {
		defer jm.io.Done()
		ctx, cancel := context.WithTimeout(jm.life, 10*time.Second)
		recs, err := jm.meta.Checkpoints(ctx, j.id)
		cancel()
		jm.post(func() {
			c.resyncing = false
			now := jm.now()
			if err != nil {
				if now.Sub(c.resyncWarn) >= time.Minute {
					c.resyncWarn = now
					jm.log.Warn("cannot re-read the job's checkpoints from etcd; no shared file is deleted until then", "job", j.id, "err", err)
				}
				return
			}
			if !c.chain.Resync(epoch, retainedOf(recs)) {
				return // the records changed meanwhile: read again
			}
			c.recorded = c.recorded[:0]
			for _, r := range recs {
				c.recorded = append(c.recorded, r.ID)
			}
			jm.log.Info("re-read the job's checkpoints from etcd", "job", j.id, "retained", c.recorded)
		})
	}()
}

func retainedOf(recs []meta.CompletedCheckpoint) []checkpoint.RetainedCheckpoint {
	out := make([]checkpoint.RetainedCheckpoint, 0, len(recs))
	for _, r := range recs {
		out = append(out, checkpoint.RetainedCheckpoint{ID: r.ID, SharedFiles: r.SharedFiles})
	}
	return out
}

// ---- claim ----

// claimState is a retained checkpoint of another job, or a savepoint, that a job started
// from in claim mode: the job owns its files and deletes them once its own checkpoints
// subsume it.
type claimState struct {
	jobID     string // the other job (retained checkpoints)
	id        int64  // its checkpoint (retained checkpoints)
	jobDir    string // URL of the other job's directory, or of the savepoint's
	savepoint bool
	running   bool
	done      bool
}

// retainedLocation splits the URL of a retained checkpoint (.../<job-id>/chk-<n>, or
// its _metadata) into the URL of its job directory, the job ID and n.
func retainedLocation(path string) (jobDir, jobID string, id int64, err error) {
	src, err := parseRestorePath(path)
	if err == nil && src.savepoint {
		err = fmt.Errorf("%w: %q is not a checkpoint directory (want .../<job-id>/chk-<n>)", rpc.ErrInvalid, path)
	}
	if err != nil {
		return "", "", 0, err
	}
	return src.storage, src.jobID, src.id, nil
}

// claimOf is the claim of a job started from path in claim mode.
func claimOf(path string) (*claimState, error) {
	src, err := parseRestorePath(path)
	if err != nil {
		return nil, err
	}
	return &claimState{jobID: src.jobID, id: src.id, jobDir: src.storage, savepoint: src.savepoint}, nil
}

// checkClaim refuses to claim a checkpoint of a job that still runs here (it would
// delete files that job restores from), or a checkpoint or savepoint another job still
// restores from.
func (jm *JobManager) checkClaim(ctx context.Context, path string) (*claimState, error) {
	cl, err := claimOf(path)
	if err != nil {
		return nil, err
	}
	running, user := false, ""
	_ = jm.do(ctx, func() {
		if o := jm.jobs[cl.jobID]; !cl.savepoint && o != nil && !o.terminal() {
			running = true
		}
		// Another job of this jobmanager that still restores from the same checkpoint
		// (it has none of its own yet) would lose it too.
		for _, o := range jm.jobs {
			if o.terminal() || o.restorePath == "" || o.cp == nil || len(o.cp.recorded) > 0 {
				continue
			}
			if oc, err := claimOf(o.restorePath); err == nil && sameLocation(oc.jobDir, cl.jobDir) && oc.id == cl.id {
				user = o.id
			}
		}
	})
	what := fmt.Sprintf("checkpoint %d of job %s", cl.id, cl.jobID)
	if cl.savepoint {
		what = "savepoint " + cl.jobDir
	}
	if user != "" {
		return nil, fmt.Errorf("%w: job %s still restores from %s (it has no checkpoint of its own yet): claiming it would delete its files (use --claim-mode no-claim)", rpc.ErrFailedPrecondition, user, what)
	}
	if !running && !cl.savepoint && jm.meta != nil {
		if data, err := jm.meta.GetJob(ctx, cl.jobID); err == nil {
			rec := &sluicev1.JobRecord{}
			if proto.Unmarshal(data, rec) == nil && !terminalState(rec.GetState()) {
				running = true
			}
		}
	}
	if running {
		return nil, fmt.Errorf("%w: job %s, whose checkpoint %d this is, has not ended: claiming it would delete files that job may restore from (cancel it first, or use --claim-mode no-claim)", rpc.ErrFailedPrecondition, cl.jobID, cl.id)
	}
	return cl, nil
}

// maybeDisposeClaimed deletes the claimed checkpoint once retain checkpoints of the
// job's own are recorded (it would have been subsumed by then). When the other job's
// records are in this cluster's etcd, its record is removed there first (fenced) and
// only the shared files no other retained checkpoint of that job references are
// deleted; otherwise only its chk-<n>/ directory is, since its shared files may be
// referenced by checkpoints this cluster does not know.
func (jm *JobManager) maybeDisposeClaimed(j *job, retain int) {
	cl := j.cp.claim
	if cl == nil || cl.done || cl.running || len(j.cp.recorded) < retain {
		return
	}
	cl.running = true
	// The other job is one of this cluster's when its directory is where this
	// jobmanager keeps that job's checkpoints.
	ours := !cl.savepoint && sameLocation(cl.jobDir, joinURL(jm.cfg.Checkpoints.Storage, cl.jobID))
	jm.io.Add(1)
	go func() {
		defer jm.io.Done()
		ctx, cancel := context.WithTimeout(jm.life, time.Minute)
		defer cancel()
		err := jm.disposeClaimed(ctx, cl, ours)
		jm.post(func() {
			cl.running = false
			if err != nil {
				jm.log.Warn("cannot delete the claimed checkpoint yet; trying again after the next checkpoint", "job", j.id, "checkpoint", cl.id, "of_job", cl.jobID, "err", err)
				return
			}
			cl.done = true
			jm.log.Info("deleted the claimed checkpoint of another job: the job's own checkpoints subsume it", "job", j.id, "checkpoint", cl.id, "of_job", cl.jobID)
		})
	}()
}

func (jm *JobManager) disposeClaimed(ctx context.Context, cl *claimState, ours bool) error {
	store, err := blobstore.Open(ctx, readOnlyURL(cl.jobDir))
	if err != nil {
		return err
	}
	defer store.Close()
	if cl.savepoint {
		_, _, err := deleteSavepointFiles(ctx, store)
		return err
	}
	var shared []string
	if ours {
		// A job of this cluster: its registry decides.
		sub, err := jm.meta.RemoveCheckpoint(ctx, jm.lead, cl.jobID, cl.id)
		switch {
		case errors.Is(err, meta.ErrNotFound):
		case err != nil:
			return err // an unknown outcome deletes nothing: the next try finds it removed or not
		default:
			shared = sub.Unreferenced
		}
	}
	if err := deleteCheckpointDir(ctx, store, cl.id); err != nil {
		return err
	}
	for _, p := range shared {
		if err := store.Delete(ctx, p); err != nil {
			return err
		}
	}
	return nil
}

// ---- restore ----

// restorePrep is the choice of the checkpoint the next attempt restores.
type restorePrep struct {
	// forAttempt is the attempt the last choice was made for.
	forAttempt int64
	running    bool
	retryAt    time.Time
	// quickOnly: the attempt whose byte-by-byte check could not finish; it gets the
	// presence-and-size check.
	quickOnly int64
}

// restoreChoice is what prepareRestore found.
type restoreChoice struct {
	md      *sluicev1.CheckpointMetadata
	storage string // the other job's directory, for a retained checkpoint of another job
	at      time.Time
	// broken are the newer checkpoints skipped, with their first problem.
	broken map[int64]string
	note   string
}

// prepareRestore makes sure the checkpoint the next attempt restores is chosen and
// intact before the attempt starts (trySchedule waits for restore.forAttempt). It runs
// when the job waits for its next attempt (CREATED, RESTARTING): off the loop, it reads
// the records from etcd and checks the newest one's files (presence and size, or every
// byte after an attempt failed while restoring it); a broken one is skipped for the
// next older, then the retained checkpoint the job was submitted with. When one is
// skipped, the next checkpoint is forced full. If none is intact, the job fails: it
// would otherwise start from nothing and lose its state. A blob store or etcd that does
// not answer is waited for (a byte-by-byte check that cannot finish is given up for the
// presence-and-size one).
func (jm *JobManager) prepareRestore(j *job) {
	c := j.cp
	if c == nil || (j.state != sluicev1.JobState_JOB_STATE_CREATED && j.state != sluicev1.JobState_JOB_STATE_RESTARTING) {
		return
	}
	next := j.attempt + 1
	if c.restore.forAttempt == next || c.restore.running || jm.now().Before(c.restore.retryAt) {
		return
	}
	if len(c.recorded) == 0 && j.restorePath == "" && !c.chain.Stale() {
		// Nothing to restore: start from the beginning at once.
		c.restore.forAttempt = next
		return
	}
	// An attempt that restored a checkpoint and failed before all its tasks ran may
	// have failed on a file whose size is right and whose bytes are not.
	deep := c.restoredID > 0 && c.startedAttempt != j.attempt && j.attempt > 0 && c.restore.quickOnly != next
	c.restore.running = true
	// A checkpoint of the previous attempt may still complete meanwhile: then the
	// choice is stale (it may even be subsumed) and is made again.
	epoch := c.chain.Epoch()
	claimed := c.claim != nil && c.claim.done
	store := c.store
	jm.io.Add(1)
	go func() {
		defer jm.io.Done()
		// No bound on the whole: each read and verification is bounded by what it reads
		// (verifyTimeout), so a large state is never cut off by a fixed timeout.
		choice, err := jm.chooseRestore(jm.life, j.id, store, j.restorePath, claimed, deep)
		jm.post(func() {
			c.restore.running = false
			now := jm.now()
			if j.state != sluicev1.JobState_JOB_STATE_CREATED && j.state != sluicev1.JobState_JOB_STATE_RESTARTING || j.attempt+1 != next || c.chain.Epoch() != epoch {
				jm.prepareRestore(j)
				return
			}
			var none *noIntactError
			switch {
			case errors.As(err, &none):
				jm.log.Error("no intact checkpoint to restore: failing the job", "job", j.id, "err", err)
				mergeBroken(c.broken, none.broken)
				j.toFailed(now, err.Error())
				jm.exec(j, nil)
				return
			case err != nil:
				c.restore.retryAt = now.Add(time.Second)
				if deep {
					c.restore.quickOnly = next
				}
				jm.log.Warn("cannot check the checkpoint to restore yet; retrying", "job", j.id, "deep", deep, "err", err)
				return
			}
			mergeBroken(c.broken, choice.broken)
			c.restore.forAttempt = next
			c.restoreNote = choice.note
			if choice.md != nil {
				c.latest, c.latestStorage = choice.md, choice.storage
				c.restoredID = choice.md.GetCheckpointId()
				if !choice.at.IsZero() {
					j.latestCheckpointAt = choice.at
				}
			}
			if choice.note != "" {
				jm.log.Warn("falling back to an older checkpoint", "job", j.id, "checkpoint", c.restoredID, "why", choice.note)
				c.chain.ForceFull(choice.note)
			} else if choice.storage != "" {
				// File references are relative to the job directory: the new chain cannot
				// reuse the other job's files, whatever the claim mode.
				c.chain.ForceFull(fmt.Sprintf("restored checkpoint %d of another job, or a savepoint", c.restoredID))
			}
			jm.exec(j, j.trySchedule(jm.pool, now))
		})
	}()
}

func mergeBroken(dst, src map[int64]string) {
	for k, v := range src {
		dst[k] = v
	}
}

// noIntactError: every candidate checkpoint is broken.
type noIntactError struct {
	broken map[int64]string
	msg    string
}

func (e *noIntactError) Error() string { return e.msg }

// chooseRestore finds the newest intact checkpoint (see prepareRestore): of the
// records in etcd, else (claimed: unless the job disposed of it) the retained
// checkpoint at restorePath.
func (jm *JobManager) chooseRestore(ctx context.Context, jobID string, store *blobstore.Store, restorePath string, claimed, deep bool) (restoreChoice, error) {
	ch := restoreChoice{broken: map[int64]string{}}
	recs, err := jm.meta.Checkpoints(ctx, jobID)
	if err != nil {
		return ch, err
	}
	var problems []string
	skip := func(id int64, where, problem string) {
		ch.broken[id] = problem
		problems = append(problems, fmt.Sprintf("checkpoint %d (%s): %s", id, where, problem))
		jm.log.Warn("checkpoint is broken", "job", jobID, "checkpoint", id, "where", where, "problem", problem)
	}
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		md, problem, err := readRecorded(ctx, store, r)
		if err != nil {
			return ch, err
		}
		if problem == "" {
			vctx, cancel := context.WithTimeout(ctx, verifyTimeout(md, deep))
			_, _, problem, err = verifyFiles(vctx, store, md, !deep, nil)
			cancel()
			if err != nil {
				return ch, err
			}
		}
		if problem != "" {
			skip(r.ID, r.MetadataPath, problem)
			continue
		}
		ch.md, ch.at = md, r.CompletionTime
		break
	}
	if ch.md == nil && restorePath != "" && !claimed {
		md, jobDir, problem, err := readRetained(ctx, restorePath)
		if err != nil {
			return ch, err
		}
		if problem == "" {
			other, _, err := openSource(ctx, restoreSource{storage: jobDir})
			if err != nil {
				return ch, err
			}
			vctx, cancel := context.WithTimeout(ctx, verifyTimeout(md, deep))
			_, _, problem, err = verifyFiles(vctx, other, md, !deep, nil)
			cancel()
			other.Close()
			if err != nil {
				return ch, err
			}
		}
		if problem != "" {
			what := "retained checkpoint"
			if src, _ := parseRestorePath(restorePath); src.savepoint {
				what = "savepoint"
			}
			problems = append(problems, fmt.Sprintf("%s %s: %s", what, restorePath, problem))
		} else {
			ch.md, ch.storage = md, jobDir
		}
	}
	switch {
	case ch.md == nil && len(problems) > 0:
		return ch, &noIntactError{broken: ch.broken, msg: "no intact checkpoint to restore: " + strings.Join(problems, "; ")}
	case len(problems) > 0:
		// Not silent: what the sinks committed after the older checkpoint is produced
		// again (the newer one's side effects were committed when it completed).
		ch.note = fmt.Sprintf("fell back to checkpoint %d, records after it are replayed and output committed since may repeat: %s",
			ch.md.GetCheckpointId(), strings.Join(problems, "; "))
	}
	return ch, nil
}

// readRecorded reads and checks the _metadata of a record: its size and SHA-256 as
// recorded, its own checksum and ID. problem says why it is broken; err that it could
// not be read (try again).
func readRecorded(ctx context.Context, store *blobstore.Store, r meta.CompletedCheckpoint) (md *sluicev1.CheckpointMetadata, problem string, err error) {
	rctx, cancel := context.WithTimeout(ctx, restoreBase)
	defer cancel()
	data, err := store.Bucket().ReadAll(rctx, store.BucketKey(r.MetadataPath))
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return nil, r.MetadataPath + ": not found", nil
		}
		return nil, "", fmt.Errorf("read %s: %w", r.MetadataPath, err)
	}
	if r.MetadataSize > 0 && int64(len(data)) != r.MetadataSize {
		return nil, fmt.Sprintf("%s: %d bytes, its record says %d", r.MetadataPath, len(data), r.MetadataSize), nil
	}
	if r.MetadataSHA256 != "" {
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != r.MetadataSHA256 {
			return nil, fmt.Sprintf("%s: sha256 %x, its record says %s", r.MetadataPath, sum, r.MetadataSHA256), nil
		}
	}
	md, err = checkpoint.DecodeMetadata(data)
	if err != nil {
		return nil, fmt.Sprintf("%s: %v", r.MetadataPath, err), nil
	}
	if r.ID != 0 && md.GetCheckpointId() != r.ID {
		return nil, fmt.Sprintf("%s holds checkpoint %d", r.MetadataPath, md.GetCheckpointId()), nil
	}
	return md, "", nil
}

// readRetained reads the _metadata of the retained checkpoint or savepoint a job was
// submitted to start from (see loadRestore, which also checks it fits the job), and
// returns it with the URL its files are relative to.
func readRetained(ctx context.Context, path string) (md *sluicev1.CheckpointMetadata, storage, problem string, err error) {
	src, err := parseRestorePath(path)
	if err != nil {
		return nil, "", err.Error(), nil
	}
	md, problem, err = readSource(ctx, src)
	return md, src.storage, problem, err
}

// verifyFiles checks every file md references in store: with quick, that it is listed
// with its size; otherwise that its bytes have its size and SHA-256 (inline data is
// always hashed). It returns the files and bytes checked, and the first problem (""
// when intact); err when the store could not be read (not a verdict). progress, if not
// nil, is called after each file.
func verifyFiles(ctx context.Context, store *blobstore.Store, md *sluicev1.CheckpointMetadata, quick bool, progress func(files int, bytes int64)) (files int, size int64, problem string, err error) {
	fs := checkpoint.FilesOf(md)
	all := slices.Clone(fs.PrivateFiles)
	for _, p := range fs.SharedPaths() {
		all = append(all, fs.Shared[p])
	}
	// Inline data lives in _metadata: hash it too.
	for _, op := range md.GetOperators() {
		for _, st := range op.GetSubtasks() {
			for _, h := range st.GetKeyed() {
				if f := h.GetFile(); f != nil && f.GetPath() == "" && len(f.GetInlineData()) > 0 {
					all = append(all, f)
				}
			}
		}
	}
	var listed map[string]int64
	if quick {
		listed = map[string]int64{}
		for _, dir := range []string{checkpoint.CheckpointDirName(md.GetCheckpointId()) + "/", blobstore.SharedDirName + "/"} {
			if err := store.List(ctx, dir, func(key string, n int64) error { listed[key] = n; return nil }); err != nil {
				return files, size, "", err
			}
		}
	}
	for _, f := range all {
		if quick && f.GetPath() != "" {
			n, ok := listed[f.GetPath()]
			switch {
			case !ok:
				return files, size, f.GetPath() + ": not found", nil
			case n != f.GetSize():
				return files, size, fmt.Sprintf("%s: %d bytes, expected %d", f.GetPath(), n, f.GetSize()), nil
			}
		} else {
			r, err := store.Open(ctx, f)
			if err == nil {
				_, err = io.Copy(io.Discard, r)
				r.Close()
			}
			switch {
			case errors.Is(err, blobstore.ErrNotFound):
				return files, size, f.GetPath() + ": not found", nil
			case errors.Is(err, blobstore.ErrCorrupt):
				return files, size, strings.TrimPrefix(err.Error(), "blobstore: "), nil
			case err != nil:
				return files, size, "", err
			}
		}
		files++
		size += f.GetSize()
		if progress != nil {
			progress(files, size)
		}
	}
	return files, size, "", nil
}

// ---- RPCs ----

// jobFiles is what the RPCs below need of a job, read on the loop.
type jobFiles struct {
	id          string
	store       *blobstore.Store
	restorePath string
	hasOwn      bool
}

func (jm *JobManager) jobFilesOf(ctx context.Context, jobID string) (jobFiles, error) {
	var jf jobFiles
	var lerr error
	err := jm.do(ctx, func() {
		j, err := jm.lookup(jobID)
		if err != nil {
			lerr = err
			return
		}
		if j.cp == nil {
			lerr = fmt.Errorf("%w: checkpointing is off: set execution.checkpointing.dir on the jobmanager", rpc.ErrFailedPrecondition)
			return
		}
		jf = jobFiles{id: j.id, store: j.cp.store, restorePath: j.restorePath}
		if j.cp.claim != nil && j.cp.claim.done {
			jf.restorePath = ""
		}
	})
	if err == nil {
		err = lerr
	}
	return jf, err
}

// VerifyCheckpoints checks every retained checkpoint of a job (and, while it has none
// of its own, the retained checkpoint it was submitted with): its _metadata against
// the record in etcd, and every file against the size and SHA-256 in the handles.
func (jm *JobManager) VerifyCheckpoints(ctx context.Context, req *sluicev1.VerifyCheckpointsRequest) (*sluicev1.VerifyCheckpointsResponse, error) {
	jf, err := jm.jobFilesOf(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	recs, err := jm.meta.Checkpoints(ctx, jf.id)
	if err != nil {
		return nil, fmt.Errorf("%w: read the job's checkpoints from etcd: %v", rpc.ErrUnavailable, err)
	}
	resp := &sluicev1.VerifyCheckpointsResponse{}
	jm.log.Info("verifying checkpoints", "job", jf.id, "retained", len(recs), "quick", req.GetQuick())
	progress := func(id int64) func(int, int64) {
		last := time.Now()
		return func(files int, n int64) {
			if time.Since(last) >= 5*time.Second {
				last = time.Now()
				jm.log.Info("verifying checkpoint", "job", jf.id, "checkpoint", id, "files", files, "bytes", n)
			}
		}
	}
	verify := func(store *blobstore.Store, v *sluicev1.CheckpointVerification, md *sluicev1.CheckpointMetadata, problem string) error {
		if problem == "" {
			files, n, p, err := verifyFiles(ctx, store, md, req.GetQuick(), progress(v.GetId()))
			if err != nil {
				return fmt.Errorf("%w: checkpoint %d: %v", rpc.ErrUnavailable, v.GetId(), err)
			}
			v.Files, v.Bytes, problem = int32(files)+1, n, p
		}
		v.Intact, v.Problem = problem == "", problem
		jm.log.Info("checkpoint verified", "job", jf.id, "checkpoint", v.GetId(), "intact", v.GetIntact(), "files", v.GetFiles(), "bytes", v.GetBytes(), "problem", problem)
		resp.Checkpoints = append(resp.Checkpoints, v)
		return nil
	}
	for _, r := range recs {
		md, problem, err := readRecorded(ctx, jf.store, r)
		if err != nil {
			return nil, fmt.Errorf("%w: checkpoint %d: %v", rpc.ErrUnavailable, r.ID, err)
		}
		if err := verify(jf.store, &sluicev1.CheckpointVerification{Id: r.ID, MetadataPath: r.MetadataPath}, md, problem); err != nil {
			return nil, err
		}
	}
	if len(recs) == 0 && jf.restorePath != "" {
		md, jobDir, problem, err := readRetained(ctx, jf.restorePath)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", rpc.ErrUnavailable, jf.restorePath, err)
		}
		src, _ := parseRestorePath(jf.restorePath)
		id := src.id
		if md != nil {
			id = md.GetCheckpointId()
		}
		store := jf.store
		if problem == "" {
			if store, _, err = openSource(ctx, restoreSource{storage: jobDir}); err != nil {
				return nil, fmt.Errorf("%w: %v", rpc.ErrUnavailable, err)
			}
			defer store.Close()
		}
		if err := verify(store, &sluicev1.CheckpointVerification{Id: id, MetadataPath: jf.restorePath}, md, problem); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// GetCheckpointChain lists the shared files each retained checkpoint references, and the
// bytes it pins: its private files and the shared files no newer retained checkpoint
// references, which go when it is subsumed.
func (jm *JobManager) GetCheckpointChain(ctx context.Context, req *sluicev1.GetCheckpointChainRequest) (*sluicev1.CheckpointChain, error) {
	jf, err := jm.jobFilesOf(ctx, req.GetJobId())
	if err != nil {
		return nil, err
	}
	recs, err := jm.meta.Checkpoints(ctx, jf.id)
	if err != nil {
		return nil, fmt.Errorf("%w: read the job's checkpoints from etcd: %v", rpc.ErrUnavailable, err)
	}
	resp := &sluicev1.CheckpointChain{}
	first := map[string]int64{} // oldest retained checkpoint referencing each file
	var files []checkpoint.Files
	for _, r := range recs {
		cc := &sluicev1.ChainCheckpoint{Id: r.ID}
		md, problem, err := readRecorded(ctx, jf.store, r)
		if err != nil {
			return nil, fmt.Errorf("%w: checkpoint %d: %v", rpc.ErrUnavailable, r.ID, err)
		}
		cc.Problem = problem
		var fs checkpoint.Files
		if md != nil {
			fs = checkpoint.FilesOf(md)
		} else {
			// Without _metadata only the record's names are known.
			fs = checkpoint.Files{Shared: map[string]*sluicev1.StateFile{}}
			for _, p := range r.SharedFiles {
				fs.Shared[p] = &sluicev1.StateFile{Path: p}
			}
		}
		for _, f := range fs.PrivateFiles {
			cc.PrivateBytes += f.GetSize()
		}
		for _, p := range fs.SharedPaths() {
			if _, ok := first[p]; !ok {
				first[p] = r.ID
			}
			cc.SharedBytes += fs.Shared[p].GetSize()
		}
		files = append(files, fs)
		resp.Checkpoints = append(resp.Checkpoints, cc)
	}
	newer := map[string]bool{} // referenced by a newer retained checkpoint
	for i := len(resp.Checkpoints) - 1; i >= 0; i-- {
		cc, fs := resp.Checkpoints[i], files[i]
		cc.PinnedBytes = cc.PrivateBytes
		for _, p := range fs.SharedPaths() {
			f := fs.Shared[p]
			cc.SharedFiles = append(cc.SharedFiles, &sluicev1.SharedFileRef{Path: p, Size: f.GetSize(), FirstCheckpointId: first[p]})
			if !newer[p] {
				cc.PinnedBytes += f.GetSize()
			}
		}
		for p := range fs.Shared {
			newer[p] = true
		}
	}
	sort.SliceStable(resp.Checkpoints, func(a, b int) bool { return resp.Checkpoints[a].GetId() < resp.Checkpoints[b].GetId() })
	return resp, nil
}
