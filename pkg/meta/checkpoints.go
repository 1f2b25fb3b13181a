package meta

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Kind tells checkpoints from savepoints.
type Kind string

const (
	KindCheckpoint Kind = "checkpoint"
	KindSavepoint  Kind = "savepoint"
)

// CompletedCheckpoint is the record of a completed checkpoint or savepoint, stored as
// JSON at jobs/<id>/checkpoints/<n>. It points to the _metadata file in the blob store,
// which holds the state handles; the record holds what the store needs (the shared
// files it references) and small facts for listings. Unknown JSON fields are ignored
// when reading, so fields can be added.
type CompletedCheckpoint struct {
	ID   int64 `json:"id"`
	Kind Kind  `json:"kind"`
	// MetadataPath locates the _metadata file (a blob URL or a path under the
	// checkpoint directory, as the caller chooses).
	MetadataPath   string `json:"metadataPath"`
	MetadataSize   int64  `json:"metadataSize,omitempty"`
	MetadataSHA256 string `json:"metadataSHA256,omitempty"` // hex
	// StateSize is the full size of the state; IncrementalSize what this checkpoint
	// uploaded.
	StateSize       int64     `json:"stateSize"`
	IncrementalSize int64     `json:"incrementalSize"`
	TriggerTime     time.Time `json:"triggerTime"`
	CompletionTime  time.Time `json:"completionTime"`
	// SharedFiles are the names of the shared (incremental) files the checkpoint
	// references, as keyed in the registry; stored sorted and without duplicates.
	SharedFiles []string `json:"sharedFiles,omitempty"`

	// NewSharedFiles optionally tells which of SharedFiles this checkpoint uploaded
	// itself; it is not stored. When non-nil, every other file of SharedFiles is a reuse
	// of a file of an earlier checkpoint and must still be registered when this one is
	// recorded: if a concurrent change (a checkpoint subsumed by a newer one that
	// completed first, a disposed savepoint) unregistered it, its blob may be deleted
	// already, and AddCheckpoint fails with ErrSharedFileMissing instead of recording a
	// checkpoint that points to it. When nil, a file missing from the registry is taken
	// as new. Set it whenever checkpoints can overlap (max-concurrent-checkpoints > 1).
	NewSharedFiles []string `json:"-"`
}

// SharedFile is a shared-file registry entry, stored as JSON at jobs/<id>/shared/<file>.
type SharedFile struct {
	// CreatedBy is the ID of the first recorded checkpoint that referenced the file.
	CreatedBy int64 `json:"createdBy"`
	// LastUsed is the highest ID of a recorded checkpoint that referenced the file.
	LastUsed int64 `json:"lastUsed"`
}

// Subsumed is what a change of the completed-checkpoint store removed. The caller may
// delete the blobs of Removed checkpoints (their private files and _metadata) and the
// Unreferenced shared files, but only after the call that returned it succeeded.
type Subsumed struct {
	Removed      []CompletedCheckpoint // sorted by ID
	Unreferenced []string              // shared files no retained record references; sorted
}

// NextCheckpointID hands out the next checkpoint ID of job jobID: 1 first, then strictly
// increasing across calls, leaders and restarts (the counter lives in etcd and every
// increment is a fenced compare-and-swap). The job record must exist (ErrNotFound).
// An ID whose write returned ErrOutcomeUnknown is burnt: ask again.
func (s *Store) NextCheckpointID(ctx context.Context, l *Leadership, jobID string) (int64, error) {
	return s.updateCounter(ctx, l, jobID, "next checkpoint ID", func(cur int64) (int64, bool) { return cur + 1, true })
}

// RaiseCheckpointCounter makes sure that the next ID handed out is greater than min:
// a job restored from a savepoint or checkpoint continues after its ID. It never lowers
// the counter.
func (s *Store) RaiseCheckpointCounter(ctx context.Context, l *Leadership, jobID string, min int64) error {
	_, err := s.updateCounter(ctx, l, jobID, "raise checkpoint counter", func(cur int64) (int64, bool) {
		return min, min > cur
	})
	return err
}

// CheckpointCounter reads the last checkpoint ID handed out (0 if none).
func (s *Store) CheckpointCounter(ctx context.Context, jobID string) (int64, error) {
	if err := validJobID(jobID); err != nil {
		return 0, err
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.counterKey(jobID))
	if err != nil {
		return 0, readErr("checkpoint counter", err)
	}
	cur, _, err := parseCounter(resp.Kvs)
	return cur, err
}

func parseCounter(kvs []*mvccKV) (cur, modRev int64, err error) {
	if len(kvs) == 0 {
		return 0, 0, nil
	}
	cur, err = strconv.ParseInt(string(kvs[0].Value), 10, 64)
	if err != nil || cur < 0 {
		return 0, 0, fmt.Errorf("meta: corrupt checkpoint counter %q at %s", kvs[0].Value, kvs[0].Key)
	}
	return cur, kvs[0].ModRevision, nil
}

func (s *Store) updateCounter(ctx context.Context, l *Leadership, jobID, op string, f func(cur int64) (int64, bool)) (int64, error) {
	if err := validJobID(jobID); err != nil {
		return 0, err
	}
	if l == nil {
		return 0, fmt.Errorf("meta: %s: nil leadership: %w", op, ErrNotLeader)
	}
	key := s.counterKey(jobID)
	for attempt := 0; attempt < conflictRetries; attempt++ {
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Get(rctx, key)
		cancel()
		if err != nil {
			return 0, readStepErr(op+" of job "+jobID, err)
		}
		cur, modRev, err := parseCounter(resp.Kvs)
		if err != nil {
			return 0, err
		}
		next, write := f(cur)
		if !write {
			return cur, nil
		}
		rctx, cancel = s.reqCtx(ctx)
		tresp, err := s.cli.Txn(rctx).
			If(s.fence(l), s.jobExists(jobID), clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).
			Then(clientv3.OpPut(key, strconv.FormatInt(next, 10))).
			Else(clientv3.OpGet(s.leaderKey()), clientv3.OpGet(s.jobKey(jobID), clientv3.WithCountOnly())).
			Commit()
		cancel()
		if err != nil {
			return 0, writeErr(op+" of job "+jobID, err)
		}
		if tresp.Succeeded {
			return next, nil
		}
		if isNotLeader(l, tresp) {
			return 0, fmt.Errorf("meta: %s of job %s: %w", op, jobID, ErrNotLeader)
		}
		if jobMissing(tresp) {
			return 0, fmt.Errorf("meta: %s: job %s: %w", op, jobID, ErrNotFound)
		}
		// The counter moved under us (another writer of the same leadership): retry.
		if err := s.conflictPause(ctx, attempt); err != nil {
			return 0, fmt.Errorf("meta: %s of job %s: %w", op, jobID, err)
		}
	}
	return 0, fmt.Errorf("meta: %s of job %s: %w", op, jobID, ErrConflict)
}

func (s *Store) jobExists(jobID string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(s.jobKey(jobID)), ">", 0)
}

// AddCheckpoint records the completed checkpoint or savepoint cp of job jobID, in ONE
// fenced etcd transaction that also
//   - updates the shared-file registry for cp.SharedFiles (a file new to the registry
//     gets CreatedBy = cp.ID; every one gets LastUsed = cp.ID, or keeps a higher one);
//   - deletes the records of checkpoints subsumed by it: of the records of kind
//     KindCheckpoint (cp included) the newest retain are kept and older ones removed,
//     oldest first; savepoint records are never removed here (see RemoveCheckpoint);
//   - deletes the registry entries of shared files that no retained record references.
//
// It returns the removed records and the unreferenced files. Only after it returned
// without error may the caller delete their blobs: a file referenced by any retained
// checkpoint is never in Unreferenced. On ErrOutcomeUnknown the caller must delete
// nothing (neither cp's files nor the would-be unreferenced ones): the record may exist.
// Retrying the same cp then returns ErrCheckpointExists if the first try committed
// (the files it made unreferenced are then not reported again; they are garbage that a
// sweep of blobs absent from the registry and from retained records may collect).
//
// The job record must exist (ErrNotFound). retain must be at least 1. cp.ID must not be
// recorded yet (ErrCheckpointExists), and a KindCheckpoint must be newer than every
// recorded KindCheckpoint (ErrCheckpointOrder). Reused shared files must still be
// registered if cp.NewSharedFiles is set (ErrSharedFileMissing). If the transaction
// exceeds the etcd server's limits it fails with ErrTxnTooLarge and nothing is written.
func (s *Store) AddCheckpoint(ctx context.Context, l *Leadership, jobID string, cp CompletedCheckpoint, retain int) (Subsumed, error) {
	if err := validJobID(jobID); err != nil {
		return Subsumed{}, err
	}
	cp, uploaded, err := prepareAdd(cp, retain)
	if err != nil {
		return Subsumed{}, err
	}
	op := fmt.Sprintf("add checkpoint %d of job %s", cp.ID, jobID)
	return s.changeCheckpoints(ctx, l, jobID, op, func(st *cpState) (*cpChange, error) {
		return planAdd(st.recordMap(), st.registry, cp, uploaded, retain, op)
	})
}

// prepareAdd checks and normalizes the arguments of AddCheckpoint: cp with its shared
// files sorted and without duplicates and NewSharedFiles cleared, and the set of files
// it uploaded (nil: not told).
func prepareAdd(cp CompletedCheckpoint, retain int) (CompletedCheckpoint, map[string]bool, error) {
	if retain < 1 {
		return cp, nil, fmt.Errorf("meta: add checkpoint: retain must be at least 1, got %d", retain)
	}
	if cp.ID < 1 {
		return cp, nil, fmt.Errorf("meta: add checkpoint: invalid checkpoint ID %d", cp.ID)
	}
	if cp.Kind != KindCheckpoint && cp.Kind != KindSavepoint {
		return cp, nil, fmt.Errorf("meta: add checkpoint %d: invalid kind %q", cp.ID, cp.Kind)
	}
	if cp.MetadataPath == "" {
		return cp, nil, fmt.Errorf("meta: add checkpoint %d: empty metadata path", cp.ID)
	}
	files, err := normalizeFiles(cp.SharedFiles)
	if err != nil {
		return cp, nil, err
	}
	cp.SharedFiles = files
	var uploaded map[string]bool // nil: not told
	if cp.NewSharedFiles != nil {
		all := make(map[string]bool, len(files))
		for _, f := range files {
			all[f] = true
		}
		uploaded = make(map[string]bool, len(cp.NewSharedFiles))
		for _, f := range cp.NewSharedFiles {
			if !all[f] {
				return cp, nil, fmt.Errorf("meta: add checkpoint %d: new shared file %q is not among its shared files", cp.ID, f)
			}
			uploaded[f] = true
		}
	}
	cp.NewSharedFiles = nil
	return cp, uploaded, nil
}

// planAdd decides what recording cp changes in a store holding records and registry
// (see AddCheckpoint). It is the whole decision of the transaction, and has no I/O, so
// that Registry (the model of the store) makes exactly the same one.
func planAdd(records map[int64]CompletedCheckpoint, registry map[string]SharedFile, cp CompletedCheckpoint, uploaded map[string]bool, retain int, op string) (*cpChange, error) {
	if _, ok := records[cp.ID]; ok {
		return nil, fmt.Errorf("meta: %s: %w", op, ErrCheckpointExists)
	}
	// Retained records after the change: all savepoints and the newest retain
	// checkpoints.
	all := make([]CompletedCheckpoint, 0, len(records)+1)
	for _, r := range records {
		if cp.Kind == KindCheckpoint && r.Kind == KindCheckpoint && r.ID > cp.ID {
			return nil, fmt.Errorf("meta: %s: checkpoint %d is newer: %w", op, r.ID, ErrCheckpointOrder)
		}
		all = append(all, r)
	}
	all = append(all, cp)
	sort.Slice(all, func(i, j int) bool { return all[i].ID > all[j].ID })
	ch := &cpChange{put: &cp, registry: map[string]SharedFile{}}
	var retained []CompletedCheckpoint
	kept := 0
	for _, r := range all {
		if r.Kind == KindCheckpoint {
			if kept == retain {
				ch.removed = append(ch.removed, r)
				continue
			}
			kept++
		}
		retained = append(retained, r)
	}
	for _, f := range cp.SharedFiles {
		e, ok := registry[f]
		if !ok {
			if uploaded != nil && !uploaded[f] {
				return nil, fmt.Errorf("meta: %s: reused shared file %q is no longer registered (its blob may be deleted): %w", op, f, ErrSharedFileMissing)
			}
			e = SharedFile{CreatedBy: cp.ID}
		}
		e.LastUsed = max(e.LastUsed, cp.ID)
		ch.registry[f] = e
	}
	sort.Slice(ch.removed, func(i, j int) bool { return ch.removed[i].ID < ch.removed[j].ID })
	ch.unreferenced = unreferenced(registry, retained)
	return ch, nil
}

// RemoveCheckpoint deletes the record of checkpoint or savepoint id of job jobID (e.g.
// when a savepoint is disposed, or a job that claimed a checkpoint of another job no
// longer needs it) in one fenced transaction, with the registry entries of shared files
// that no remaining record references. Like AddCheckpoint, the caller may delete the
// returned blobs only after it succeeded. ErrNotFound if there is no such record (or
// no such job).
func (s *Store) RemoveCheckpoint(ctx context.Context, l *Leadership, jobID string, id int64) (Subsumed, error) {
	if err := validJobID(jobID); err != nil {
		return Subsumed{}, err
	}
	op := fmt.Sprintf("remove checkpoint %d of job %s", id, jobID)
	return s.changeCheckpoints(ctx, l, jobID, op, func(st *cpState) (*cpChange, error) {
		return planRemove(st.recordMap(), st.registry, id, op)
	})
}

// planRemove decides what removing record id changes (see RemoveCheckpoint).
func planRemove(records map[int64]CompletedCheckpoint, registry map[string]SharedFile, id int64, op string) (*cpChange, error) {
	r, ok := records[id]
	if !ok {
		return nil, fmt.Errorf("meta: %s: %w", op, ErrNotFound)
	}
	ch := &cpChange{removed: []CompletedCheckpoint{r}}
	var retained []CompletedCheckpoint
	for n, o := range records {
		if n != id {
			retained = append(retained, o)
		}
	}
	ch.unreferenced = unreferenced(registry, retained)
	return ch, nil
}

// Registry is a model of one job's completed-checkpoint store without etcd: the
// retained records and the shared-file registry, as etcd holds them. Add and Remove
// make exactly the decisions of AddCheckpoint and RemoveCheckpoint (the same code
// plans both), so simulations of the incremental chain (pkg/checkpoint's model test)
// run against the store's real rules at memory speed. Not safe for concurrent use.
type Registry struct {
	Records map[int64]CompletedCheckpoint
	Files   map[string]SharedFile
}

// NewRegistry returns an empty store model.
func NewRegistry() *Registry {
	return &Registry{Records: map[int64]CompletedCheckpoint{}, Files: map[string]SharedFile{}}
}

// Add is AddCheckpoint on the model: same arguments, result and errors (minus those of
// etcd and leadership).
func (r *Registry) Add(cp CompletedCheckpoint, retain int) (Subsumed, error) {
	cp, uploaded, err := prepareAdd(cp, retain)
	if err != nil {
		return Subsumed{}, err
	}
	ch, err := planAdd(r.Records, r.Files, cp, uploaded, retain, fmt.Sprintf("add checkpoint %d", cp.ID))
	if err != nil {
		return Subsumed{}, err
	}
	return r.apply(ch), nil
}

// Remove is RemoveCheckpoint on the model.
func (r *Registry) Remove(id int64) (Subsumed, error) {
	ch, err := planRemove(r.Records, r.Files, id, fmt.Sprintf("remove checkpoint %d", id))
	if err != nil {
		return Subsumed{}, err
	}
	return r.apply(ch), nil
}

func (r *Registry) apply(ch *cpChange) Subsumed {
	if ch.put != nil {
		r.Records[ch.put.ID] = *ch.put
	}
	for f, e := range ch.registry {
		r.Files[f] = e
	}
	for _, c := range ch.removed {
		delete(r.Records, c.ID)
	}
	for _, f := range ch.unreferenced {
		delete(r.Files, f)
	}
	return Subsumed{Removed: ch.removed, Unreferenced: ch.unreferenced}
}

// unreferenced lists the registry's files that no record in retained references.
func unreferenced(registry map[string]SharedFile, retained []CompletedCheckpoint) []string {
	used := make(map[string]bool)
	for _, r := range retained {
		for _, f := range r.SharedFiles {
			used[f] = true
		}
	}
	var out []string
	for f := range registry {
		if !used[f] {
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out
}

func normalizeFiles(in []string) ([]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(in))
	seen := make(map[string]bool, len(in))
	for _, f := range in {
		if err := validFileName(f); err != nil {
			return nil, err
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out, nil
}

// testHookBeforeCommit, set by tests only, runs between the read and the transaction
// of changeCheckpoints.
var testHookBeforeCommit func(op string)

// cpState is a consistent read of one job's checkpoint records and registry.
type cpState struct {
	rev      int64
	records  map[int64]recordKV
	registry map[string]SharedFile
}

// recordMap returns the records by ID.
func (st *cpState) recordMap() map[int64]CompletedCheckpoint {
	out := make(map[int64]CompletedCheckpoint, len(st.records))
	for n, r := range st.records {
		out[n] = r.cp
	}
	return out
}

type recordKV struct {
	cp     CompletedCheckpoint
	modRev int64
}

// cpChange is what one change of the completed-checkpoint store writes.
type cpChange struct {
	put          *CompletedCheckpoint
	registry     map[string]SharedFile // entries to write
	removed      []CompletedCheckpoint
	unreferenced []string
}

// changeCheckpoints reads the job's checkpoint state, lets plan compute a change, and
// writes it in one transaction that is fenced by l and conditioned on the state being
// unchanged since the read; it retries when the state changed.
func (s *Store) changeCheckpoints(ctx context.Context, l *Leadership, jobID, op string, plan func(*cpState) (*cpChange, error)) (Subsumed, error) {
	if l == nil {
		return Subsumed{}, fmt.Errorf("meta: %s: nil leadership: %w", op, ErrNotLeader)
	}
	for attempt := 0; attempt < conflictRetries; attempt++ {
		st, err := s.readCheckpointState(ctx, l, jobID, op)
		if err != nil {
			return Subsumed{}, err
		}
		ch, err := plan(st)
		if err != nil {
			return Subsumed{}, err
		}
		if testHookBeforeCommit != nil {
			testHookBeforeCommit(op)
		}
		cmps := []clientv3.Cmp{
			s.fence(l),
			s.jobExists(jobID),
			// Nothing created or modified since the read...
			clientv3.Compare(clientv3.ModRevision(s.cpPrefix(jobID)), "<", st.rev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(s.sharedPrefix(jobID)), "<", st.rev+1).WithPrefix(),
		}
		// ...and no record deleted (registry entries are only deleted together with
		// records, by this function).
		for n, r := range st.records {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.cpKey(jobID, n)), "=", r.modRev))
		}
		var ops []clientv3.Op
		if ch.put != nil {
			b, err := json.Marshal(ch.put)
			if err != nil {
				return Subsumed{}, fmt.Errorf("meta: %s: %w", op, err)
			}
			ops = append(ops, clientv3.OpPut(s.cpKey(jobID, ch.put.ID), string(b)))
		}
		files := make([]string, 0, len(ch.registry))
		for f := range ch.registry {
			files = append(files, f)
		}
		sort.Strings(files)
		for _, f := range files {
			b, err := json.Marshal(ch.registry[f])
			if err != nil {
				return Subsumed{}, fmt.Errorf("meta: %s: %w", op, err)
			}
			ops = append(ops, clientv3.OpPut(s.sharedKey(jobID, f), string(b)))
		}
		sort.Slice(ch.removed, func(i, j int) bool { return ch.removed[i].ID < ch.removed[j].ID })
		for _, r := range ch.removed {
			ops = append(ops, clientv3.OpDelete(s.cpKey(jobID, r.ID)))
		}
		for _, f := range ch.unreferenced {
			ops = append(ops, clientv3.OpDelete(s.sharedKey(jobID, f)))
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Txn(rctx).If(cmps...).Then(ops...).
			Else(clientv3.OpGet(s.leaderKey()), clientv3.OpGet(s.jobKey(jobID), clientv3.WithCountOnly())).
			Commit()
		cancel()
		if err != nil {
			return Subsumed{}, writeErr(fmt.Sprintf("%s (%d operations)", op, len(ops)), err)
		}
		if resp.Succeeded {
			return Subsumed{Removed: ch.removed, Unreferenced: ch.unreferenced}, nil
		}
		if isNotLeader(l, resp) {
			return Subsumed{}, fmt.Errorf("meta: %s: %w", op, ErrNotLeader)
		}
		if jobMissing(resp) {
			return Subsumed{}, fmt.Errorf("meta: %s: job: %w", op, ErrNotFound)
		}
		s.log.Debug("meta: concurrent change of checkpoint store, retrying", "op", op)
		if err := s.conflictPause(ctx, attempt); err != nil {
			return Subsumed{}, fmt.Errorf("meta: %s: %w", op, err)
		}
	}
	return Subsumed{}, fmt.Errorf("meta: %s: %w", op, ErrConflict)
}

// readCheckpointState reads, at one revision, the leader key, the job key and the
// job's subtree. It fails early with ErrNotLeader or ErrNotFound.
func (s *Store) readCheckpointState(ctx context.Context, l *Leadership, jobID, op string) (*cpState, error) {
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Txn(rctx).Then(
		clientv3.OpGet(s.leaderKey()),
		clientv3.OpGet(s.jobKey(jobID), clientv3.WithCountOnly()),
		clientv3.OpGet(s.cpPrefix(jobID), clientv3.WithPrefix()),
		clientv3.OpGet(s.sharedPrefix(jobID), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, readStepErr(op, err)
	}
	if isNotLeader(l, resp) {
		return nil, fmt.Errorf("meta: %s: %w", op, ErrNotLeader)
	}
	if jobMissing(resp) {
		return nil, fmt.Errorf("meta: %s: job: %w", op, ErrNotFound)
	}
	st := &cpState{
		rev:      resp.Header.Revision,
		records:  make(map[int64]recordKV),
		registry: make(map[string]SharedFile),
	}
	recs, err := s.parseRecords(jobID, resp.Responses[2].GetResponseRange().Kvs)
	if err != nil {
		return nil, err
	}
	for _, r := range recs {
		st.records[r.cp.ID] = r
	}
	reg, err := s.parseRegistry(jobID, resp.Responses[3].GetResponseRange().Kvs)
	if err != nil {
		return nil, err
	}
	st.registry = reg
	return st, nil
}

func (s *Store) parseRecords(jobID string, kvs []*mvccKV) ([]recordKV, error) {
	pfx := s.cpPrefix(jobID)
	out := make([]recordKV, 0, len(kvs))
	for _, kv := range kvs {
		n, err := strconv.ParseInt(strings.TrimPrefix(string(kv.Key), pfx), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("meta: unexpected key %s", kv.Key)
		}
		var cp CompletedCheckpoint
		if err := json.Unmarshal(kv.Value, &cp); err != nil {
			return nil, fmt.Errorf("meta: corrupt checkpoint record %s: %w", kv.Key, err)
		}
		if cp.ID != n {
			return nil, fmt.Errorf("meta: corrupt checkpoint record %s: holds ID %d", kv.Key, cp.ID)
		}
		out = append(out, recordKV{cp: cp, modRev: kv.ModRevision})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].cp.ID < out[j].cp.ID })
	return out, nil
}

func (s *Store) parseRegistry(jobID string, kvs []*mvccKV) (map[string]SharedFile, error) {
	pfx := s.sharedPrefix(jobID)
	out := make(map[string]SharedFile, len(kvs))
	for _, kv := range kvs {
		var e SharedFile
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return nil, fmt.Errorf("meta: corrupt shared-file registry entry %s: %w", kv.Key, err)
		}
		out[strings.TrimPrefix(string(kv.Key), pfx)] = e
	}
	return out, nil
}

// Checkpoints reads the records of job jobID's retained checkpoints and savepoints,
// sorted by ID (empty if none, or no such job).
func (s *Store) Checkpoints(ctx context.Context, jobID string) ([]CompletedCheckpoint, error) {
	if err := validJobID(jobID); err != nil {
		return nil, err
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.cpPrefix(jobID), clientv3.WithPrefix())
	if err != nil {
		return nil, readErr("checkpoints of job "+jobID, err)
	}
	recs, err := s.parseRecords(jobID, resp.Kvs)
	if err != nil {
		return nil, err
	}
	out := make([]CompletedCheckpoint, len(recs))
	for i, r := range recs {
		out[i] = r.cp
	}
	return out, nil
}

// LatestCheckpoint reads the record with the highest ID, checkpoint or savepoint (a
// savepoint newer than every checkpoint is where recovery must start: ARCHITECTURE rule
// 8). ErrNotFound if there is none.
func (s *Store) LatestCheckpoint(ctx context.Context, jobID string) (CompletedCheckpoint, error) {
	if err := validJobID(jobID); err != nil {
		return CompletedCheckpoint{}, err
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.cpPrefix(jobID), clientv3.WithLastKey()...)
	if err != nil {
		return CompletedCheckpoint{}, readErr("latest checkpoint of job "+jobID, err)
	}
	recs, err := s.parseRecords(jobID, resp.Kvs)
	if err != nil {
		return CompletedCheckpoint{}, err
	}
	if len(recs) == 0 {
		return CompletedCheckpoint{}, fmt.Errorf("meta: latest checkpoint of job %s: %w", jobID, ErrNotFound)
	}
	return recs[len(recs)-1].cp, nil
}

// SharedFiles reads job jobID's shared-file registry.
func (s *Store) SharedFiles(ctx context.Context, jobID string) (map[string]SharedFile, error) {
	if err := validJobID(jobID); err != nil {
		return nil, err
	}
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.sharedPrefix(jobID), clientv3.WithPrefix())
	if err != nil {
		return nil, readErr("shared files of job "+jobID, err)
	}
	return s.parseRegistry(jobID, resp.Kvs)
}
