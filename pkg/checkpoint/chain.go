package checkpoint

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The incremental chain: which files a job's checkpoints reference, which of them may be
// deleted and when, and when a checkpoint must be full.
//
// An incremental backend (RocksDB) uploads each checkpoint's new SST files once, under
// shared/<name> of the job directory, and later checkpoints reference them again instead
// of uploading them anew; its other files (and every file of the heap backend) are
// private, under chk-<n>/. A checkpoint's KeyedStateHandles list every shared file it
// needs, reused ones included. The completed-checkpoint store in etcd (pkg/meta) keeps,
// in the same fenced transaction as each checkpoint's record, a registry of the shared
// files the retained records reference; its answer says which files the commit left
// unreferenced.
//
// Chain is the jobmanager's side of that: a pure state machine (no I/O, no goroutines,
// no clock: the caller passes the time), driven by the jobmanager's loop with the
// outcomes of its I/O, and answering with what may be deleted. The rules it enforces:
//
//   - Nothing a retained checkpoint references is deleted: shared files only once etcd
//     reported them unreferenced after a commit (and the chain's own view agrees), or,
//     for files etcd never registered, once no checkpoint that may reference them is
//     in progress (ARCHITECTURE rule 2).
//   - Nothing is deleted on behalf of a commit whose outcome is unknown, and no shared
//     file that is not known to be unregistered is deleted until the chain has re-read
//     the truth from etcd (Resync) (rule 5).
//   - A checkpoint that references a shared file the chain decided to delete (a task
//     reused a file of a checkpoint it believed confirmed, but which was subsumed
//     meanwhile: FLINK-29913's bug) is refused at Prepare, and the next checkpoint is
//     forced full.
//   - Files that no record points to (those of aborted checkpoints, uploads that came
//     after their checkpoint was aborted, those of a commit whose outcome was unknown
//     and that did not commit) are collected: at abort, and by Sweep, which compares a
//     listing of the job directory with what the chain knows, waiting a grace period
//     and for every checkpoint that was in progress when a file was first seen.
//
// The contract with the backends: a shared file's name is never uploaded twice (a
// random or content-derived unique name per upload), and a new checkpoint reuses only
// files of checkpoints the task was notified as complete (rule 3). The chain stays safe
// if a task breaks the second (such checkpoints are refused or their files kept); the
// first guarantees that a file deleted as unreferenced is never referenced again.
//
// Chain is not safe for concurrent use.
type Chain struct {
	cfg ChainConfig

	// retained are the checkpoints recorded in etcd as far as the chain knows, each
	// with its shared files; refs counts, per shared file, the retained checkpoints that
	// reference it: the chain's mirror of the registry.
	retained map[int64][]string
	refs     map[string]int
	// pending are the checkpoints triggered and not ended.
	pending map[int64]*pendingFiles
	// unknown are checkpoints whose commit outcome is unknown: their files are kept
	// until a Resync tells whether they were recorded.
	unknown map[int64][]string
	// stale: the mirror may differ from etcd (an unknown outcome, an inconsistency):
	// only deletions etcd itself reports are made until Resync.
	stale bool
	// epoch changes with every change of the mirror; Resync applies a read of etcd only
	// if none happened since the read started.
	epoch uint64
	// tombstones are the shared files (and, by CheckpointDirName, the directories) the
	// chain decided to delete and whose deletion was not confirmed (Deleted), with the
	// time it last knew then: a checkpoint referencing such a file is refused, and Sweep
	// decides a deletion again only after a grace period (the first one may have failed).
	tombstones map[string]time.Time
	// clock is the latest time the chain was given.
	clock time.Time
	// deferred are shared files of aborted checkpoints, waiting until the checkpoints
	// in progress at the abort have ended.
	deferred []deferredFiles
	// seen: orphan candidates of Sweep, by shared path or checkpoint directory.
	seen map[string]seenOrphan

	lastTriggered int64
	// force, when not empty, is why the next checkpoints are full, until a full one
	// triggered after it was set (forceGen) completes.
	force     string
	forceGen  uint64
	sinceFull int // incremental checkpoints completed since the last full one
}

// ChainConfig configures a Chain.
type ChainConfig struct {
	// FullEvery > 0 makes every FullEvery-th checkpoint full, bounding the chain of
	// incremental checkpoints a restore depends on (1: every checkpoint is full). 0
	// forces full checkpoints only after restores that need them and fallbacks.
	FullEvery int
	// OrphanGrace is how long a file that no checkpoint references must have been seen
	// by Sweep before it is deleted. Sweep also waits for every checkpoint that was in
	// progress when it first saw the file, so this is a second margin (for clocks and
	// stragglers), not what safety rests on.
	OrphanGrace time.Duration
}

type pendingFiles struct {
	full     bool
	forceGen uint64
	// shared are the shared files acknowledged so far (and, once prepared, all).
	shared   map[string]bool
	prepared []string // the record's shared files, set by Prepare
}

type deferredFiles struct {
	files   []string
	waitFor []int64 // checkpoints in progress at the abort
}

type seenOrphan struct {
	first time.Time
	// after: the highest checkpoint triggered when the file was first seen; it is an
	// orphan only once every checkpoint up to it has ended.
	after int64
}

// Deletions are what the caller may delete now, relative to the job directory: the
// whole chk-<n>/ directory of each of Checkpoints, and each of Shared (paths
// shared/<name>). Deleting is idempotent; a deletion that fails leaves an orphan for a
// later Sweep.
type Deletions struct {
	Checkpoints []int64
	Shared      []string
}

// Empty reports whether there is nothing to delete.
func (d Deletions) Empty() bool { return len(d.Checkpoints) == 0 && len(d.Shared) == 0 }

func (d *Deletions) add(o Deletions) {
	d.Checkpoints = append(d.Checkpoints, o.Checkpoints...)
	d.Shared = append(d.Shared, o.Shared...)
}

// RetainedCheckpoint is a checkpoint record as etcd holds it: its ID and the shared
// files it references.
type RetainedCheckpoint struct {
	ID          int64
	SharedFiles []string
}

// Record is what the completed-checkpoint store needs from a prepared checkpoint: every
// shared file it references (sorted), and which of them it uploaded itself (the others
// are reuses that must still be registered when the record is written).
type Record struct {
	SharedFiles    []string
	NewSharedFiles []string
}

// ErrDeletedFile: a checkpoint references a shared file that was (or is being) deleted.
var ErrDeletedFile = errors.New("references a deleted shared file")

// ErrBadReference: a checkpoint references a file outside its own chk-<n>/ directory
// and shared/ (its deletion could not be decided).
var ErrBadReference = errors.New("references a file outside its directory and shared/")

// NewChain returns an empty chain (a new job).
func NewChain(cfg ChainConfig) *Chain {
	return &Chain{
		cfg: cfg, retained: map[int64][]string{}, refs: map[string]int{}, pending: map[int64]*pendingFiles{},
		unknown: map[int64][]string{}, tombstones: map[string]time.Time{}, seen: map[string]seenOrphan{},
	}
}

// Load sets the retained checkpoints, read from etcd when a jobmanager takes a job over
// (before any other call). The chain is then in sync with etcd.
func (c *Chain) Load(retained []RetainedCheckpoint) {
	c.setRetained(retained)
}

func (c *Chain) setRetained(retained []RetainedCheckpoint) {
	c.retained = map[int64][]string{}
	c.refs = map[string]int{}
	for _, r := range retained {
		files := slices.Clone(r.SharedFiles)
		slices.Sort(files)
		files = slices.Compact(files)
		c.retained[r.ID] = files
		for _, f := range files {
			c.refs[f]++
		}
	}
	c.epoch++
}

// ForceFull makes the next checkpoints full until one triggered after this call
// completes; reason is logged with them (e.g. "restored checkpoint 7 of another job").
func (c *Chain) ForceFull(reason string) {
	c.force = reason
	c.forceGen++
}

// Trigger registers checkpoint id (triggered at now) and says whether it must be full,
// and why.
func (c *Chain) Trigger(id int64, now time.Time) (full bool, reason string) {
	switch {
	case c.force != "":
		full, reason = true, c.force
	case c.cfg.FullEvery > 0 && c.sinceFull >= c.cfg.FullEvery-1:
		full, reason = true, fmt.Sprintf("a full checkpoint every %d (%d incremental since the last full one)", c.cfg.FullEvery, c.sinceFull)
	}
	c.clock = maxTime(c.clock, now)
	c.pending[id] = &pendingFiles{full: full, forceGen: c.forceGen, shared: map[string]bool{}}
	c.lastTriggered = max(c.lastTriggered, id)
	return full, reason
}

// Ack adds the shared files of one task's acknowledgement of checkpoint id: while the
// checkpoint is in progress nothing deletes them. Acks of checkpoints not in progress
// are ignored.
func (c *Chain) Ack(id int64, shared []string) {
	p := c.pending[id]
	if p == nil || p.prepared != nil {
		return
	}
	for _, f := range shared {
		p.shared[f] = true
	}
}

// Prepare is called when checkpoint id is about to be finalized, with all the files its
// metadata references (FilesOf). It returns the record's shared files, or an error (the
// checkpoint must fail, nothing of it is recorded): a file of another checkpoint's
// directory or outside the job's layout (ErrBadReference), or a shared file the chain
// decided to delete (ErrDeletedFile; the next checkpoints are forced full). The caller
// should check that the new shared files exist before it records the checkpoint.
func (c *Chain) Prepare(id int64, files Files) (Record, error) {
	p := c.pending[id]
	if p == nil {
		return Record{}, fmt.Errorf("checkpoint %d is not in progress", id)
	}
	dir := CheckpointDirName(id) + "/"
	for _, f := range files.Private {
		if !strings.HasPrefix(f, dir) {
			return Record{}, fmt.Errorf("checkpoint %d %w: private file %q", id, ErrBadReference, f)
		}
	}
	var rec Record
	for _, f := range files.SharedPaths() {
		if !strings.HasPrefix(f, SharedDirName+"/") {
			return Record{}, fmt.Errorf("checkpoint %d %w: shared file %q", id, ErrBadReference, f)
		}
		if _, deleted := c.tombstones[f]; deleted {
			c.ForceFull(fmt.Sprintf("checkpoint %d referenced the deleted shared file %s", id, f))
			return Record{}, fmt.Errorf("checkpoint %d %w: %s is no longer referenced by any retained checkpoint (a task reused a file of a subsumed checkpoint)", id, ErrDeletedFile, f)
		}
		rec.SharedFiles = append(rec.SharedFiles, f)
		if c.refs[f] == 0 {
			rec.NewSharedFiles = append(rec.NewSharedFiles, f)
		}
	}
	sort.Strings(rec.SharedFiles)
	sort.Strings(rec.NewSharedFiles)
	for _, f := range rec.SharedFiles {
		p.shared[f] = true
	}
	p.prepared = rec.SharedFiles
	if p.prepared == nil {
		p.prepared = []string{}
	}
	return rec, nil
}

// Committed says checkpoint id's record was written: etcd removed the records removed
// and the registry entries of unreferenced, in the same transaction. exact is false
// when that answer was lost (a retry found the record already written): unreferenced is
// then unknown, and the files stay for Sweep after a Resync. It returns what may be
// deleted now: the directories of the removed checkpoints and the unreferenced shared
// files, except any that the chain still sees referenced (then it goes stale) or that a
// checkpoint in progress uses (it registers them again if it completes, or they go when
// it aborts).
func (c *Chain) Committed(id int64, removed []int64, unreferenced []string, exact bool) Deletions {
	var del Deletions
	p := c.pending[id]
	files, wasUnknown := c.unknown[id]
	if p == nil && !wasUnknown {
		c.stale = true // a record the chain knows nothing of: re-read them
	}
	if p != nil {
		files = p.prepared
		if files == nil { // not prepared: the chain cannot know all its files
			for f := range p.shared {
				files = append(files, f)
			}
			c.stale = true
		}
		if p.full {
			c.sinceFull = 0
			if p.forceGen == c.forceGen {
				c.force = ""
			}
		} else {
			c.sinceFull++
		}
	}
	delete(c.pending, id)
	delete(c.unknown, id)
	if _, ok := c.retained[id]; !ok {
		c.retained[id] = files
		for _, f := range files {
			c.refs[f]++
		}
	}
	dropped := map[string]bool{}
	for _, m := range removed {
		if m == id {
			continue
		}
		for _, f := range c.retained[m] {
			if c.refs[f]--; c.refs[f] <= 0 {
				delete(c.refs, f)
				dropped[f] = true
			}
		}
		delete(c.retained, m)
		delete(c.unknown, m)
		del.Checkpoints = append(del.Checkpoints, m)
	}
	for _, f := range unreferenced {
		delete(dropped, f)
		switch {
		case c.refs[f] > 0 || c.unknownRef(f):
			c.stale = true // etcd and the chain disagree: delete nothing more until Resync
		case c.pendingRef(f):
		default:
			del.Shared = append(del.Shared, f)
			c.tombstones[f] = c.clock
		}
	}
	if len(dropped) > 0 || !exact {
		c.stale = true // files the chain sees unreferenced and etcd did not report
	}
	c.epoch++
	del.add(c.ended())
	return del
}

// Aborted says checkpoint id ended without being recorded (for certain). Its directory
// may be deleted now; the shared files it uploaded are deleted once every checkpoint in
// progress now has ended, unless one of them was recorded with them.
func (c *Chain) Aborted(id int64) Deletions {
	var del Deletions
	if _, ok := c.retained[id]; ok {
		return del // cannot be: it was recorded
	}
	if _, ok := c.unknown[id]; ok {
		return del
	}
	del.Checkpoints = append(del.Checkpoints, id)
	p := c.pending[id]
	delete(c.pending, id)
	if p != nil && len(p.shared) > 0 {
		d := deferredFiles{}
		for f := range p.shared {
			if _, deleted := c.tombstones[f]; c.refs[f] == 0 && !deleted {
				d.files = append(d.files, f)
			}
		}
		for q := range c.pending {
			d.waitFor = append(d.waitFor, q)
		}
		if len(d.files) > 0 {
			sort.Strings(d.files)
			c.deferred = append(c.deferred, d)
		}
	}
	del.add(c.ended())
	return del
}

// Unknown says checkpoint id's commit outcome is unknown: it may be recorded. Nothing it
// references is deleted, and the chain is stale until Resync.
func (c *Chain) Unknown(id int64) Deletions {
	var files []string
	if p := c.pending[id]; p != nil {
		for f := range p.shared {
			files = append(files, f)
		}
	}
	delete(c.pending, id)
	c.unknown[id] = files
	c.stale = true
	c.epoch++
	return c.ended()
}

// ended releases deferred files whose waits are over (called when a checkpoint ended).
func (c *Chain) ended() Deletions {
	var del Deletions
	kept := c.deferred[:0]
	for _, d := range c.deferred {
		d.waitFor = slices.DeleteFunc(d.waitFor, func(q int64) bool { return c.pending[q] == nil })
		if len(d.waitFor) > 0 {
			kept = append(kept, d)
			continue
		}
		if c.stale {
			continue // Sweep collects them after Resync
		}
		for _, f := range d.files {
			if _, deleted := c.tombstones[f]; c.refs[f] == 0 && !c.pendingRef(f) && !c.unknownRef(f) && !deleted {
				del.Shared = append(del.Shared, f)
				c.tombstones[f] = c.clock
			}
		}
	}
	c.deferred = kept
	return del
}

func (c *Chain) pendingRef(f string) bool {
	for _, p := range c.pending {
		if p.shared[f] {
			return true
		}
	}
	return false
}

func (c *Chain) unknownRef(f string) bool {
	for _, files := range c.unknown {
		if slices.Contains(files, f) {
			return true
		}
	}
	return false
}

// Deleted says the caller ran deletions d (decided by this chain) successfully. Until
// then their files stay tombstoned: a checkpoint that references one is refused, since
// the file may vanish under it; afterwards such a checkpoint fails the caller's check
// that its new shared files exist.
func (c *Chain) Deleted(d Deletions) {
	for _, f := range d.Shared {
		delete(c.tombstones, f)
	}
	for _, n := range d.Checkpoints {
		delete(c.tombstones, CheckpointDirName(n))
	}
}

// Stale reports whether the chain waits for a Resync: it may not know every record in
// etcd, so it deletes only what etcd reports.
func (c *Chain) Stale() bool { return c.stale }

// Epoch identifies the chain's view of the records: pass it to Resync.
func (c *Chain) Epoch() uint64 { return c.epoch }

// Resync replaces the chain's view of the records with retained, read from etcd after
// Epoch returned epoch. It is refused (false: read again later) if the view changed
// since, or a checkpoint is being recorded (its commit may or may not be in the read).
func (c *Chain) Resync(epoch uint64, retained []RetainedCheckpoint) bool {
	if epoch != c.epoch {
		return false
	}
	for _, p := range c.pending {
		if p.prepared != nil {
			return false
		}
	}
	c.setRetained(retained)
	// A checkpoint with an unknown outcome is now either recorded (retained) or not
	// (its files are orphans for Sweep).
	c.unknown = map[int64][]string{}
	c.stale = false
	return true
}

// Retained lists the retained checkpoints as the chain knows them, by increasing ID.
func (c *Chain) Retained() []RetainedCheckpoint {
	out := make([]RetainedCheckpoint, 0, len(c.retained))
	for id, files := range c.retained {
		out = append(out, RetainedCheckpoint{ID: id, SharedFiles: slices.Clone(files)})
	}
	slices.SortFunc(out, func(a, b RetainedCheckpoint) int { return compareID(a.ID, b.ID) })
	return out
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func compareID(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Listing is what a listing of the job directory found: the shared files (paths
// shared/<name>) and the IDs of the chk-<n>/ directories.
type Listing struct {
	Shared      []string
	Checkpoints []int64
}

// Sweep looks for orphans in a listing of the job directory taken before the call: a
// shared file that no retained or in-progress checkpoint references, or a checkpoint
// directory of no retained or in-progress checkpoint, is deleted once it was seen so by
// sweeps at least OrphanGrace apart and every checkpoint in progress at the first of
// them has ended. A stale chain sweeps nothing (Resync first).
func (c *Chain) Sweep(now time.Time, l Listing) Deletions {
	var del Deletions
	c.clock = maxTime(c.clock, now)
	if c.stale {
		return del
	}
	listed := make(map[string]bool, len(l.Shared)+len(l.Checkpoints))
	candidate := func(key string) bool {
		listed[key] = true
		if t, ok := c.tombstones[key]; ok && now.Sub(t) < c.cfg.OrphanGrace {
			return false // its deletion was decided lately and may still run
		}
		s, ok := c.seen[key]
		if !ok {
			c.seen[key] = seenOrphan{first: now, after: c.lastTriggered}
			return false
		}
		if now.Sub(s.first) < c.cfg.OrphanGrace {
			return false
		}
		for q := range c.pending {
			if q <= s.after {
				return false
			}
		}
		delete(c.seen, key)
		c.tombstones[key] = now
		return true
	}
	for _, f := range l.Shared {
		if c.refs[f] > 0 || c.pendingRef(f) || c.unknownRef(f) {
			delete(c.seen, f)
			continue
		}
		if candidate(f) {
			del.Shared = append(del.Shared, f)
		}
	}
	for _, n := range l.Checkpoints {
		key := CheckpointDirName(n)
		_, retained := c.retained[n]
		_, unknown := c.unknown[n]
		if retained || unknown || c.pending[n] != nil {
			delete(c.seen, key)
			continue
		}
		if candidate(key) {
			del.Checkpoints = append(del.Checkpoints, n)
		}
	}
	for k := range c.seen {
		if !listed[k] {
			delete(c.seen, k)
		}
	}
	return del
}

// SharedDirName and CheckpointDirName name the job directory's layout (as
// pkg/blobstore's layout does; repeated here to keep this package free of I/O).
const SharedDirName = "shared"

// CheckpointDirName returns "chk-<id>".
func CheckpointDirName(id int64) string { return "chk-" + strconv.FormatInt(id, 10) }

// Files are the files a checkpoint's metadata references, by path relative to the job
// directory (inline data has none): the shared files of incremental backends with their
// sizes, and every other (private) file.
type Files struct {
	Shared  map[string]*sluicev1.StateFile
	Private []string
	// PrivateFiles are the private StateFiles, in the order of Private.
	PrivateFiles []*sluicev1.StateFile
}

// FilesOf collects the files of md: of every keyed handle its file, shared files and
// private files, and the in-flight data files.
func FilesOf(md *sluicev1.CheckpointMetadata) Files {
	fs := Files{Shared: map[string]*sluicev1.StateFile{}}
	seen := map[string]bool{}
	private := func(f *sluicev1.StateFile) {
		if p := f.GetPath(); p != "" && !seen[p] {
			seen[p] = true
			fs.Private = append(fs.Private, p)
			fs.PrivateFiles = append(fs.PrivateFiles, f)
		}
	}
	for _, op := range md.GetOperators() {
		for _, st := range op.GetSubtasks() {
			for _, h := range st.GetKeyed() {
				private(h.GetFile())
				for _, f := range h.GetPrivateFiles() {
					private(f)
				}
				for _, f := range h.GetSharedFiles() {
					if f.GetPath() != "" {
						fs.Shared[f.GetPath()] = f
					}
				}
			}
			for _, cs := range st.GetChannelState() {
				private(cs.GetFile())
			}
		}
	}
	return fs
}

// SharedPaths returns the paths of fs.Shared, sorted.
func (fs Files) SharedPaths() []string {
	out := make([]string, 0, len(fs.Shared))
	for p := range fs.Shared {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
