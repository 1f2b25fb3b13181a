//go:build cgo

package rocksdb

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// incremental is what a backend knows of its shared files: what the latest checkpoint
// it was told completed uploaded (the only files a new snapshot may reference), and
// what snapshots uploaded but not yet confirmed did. With deltas (delta.go) it also
// keeps the keys each checkpoint's interval changed until a checkpoint at or after it
// is confirmed. It also remembers the IDs of the savepoints it took, whose completion
// changes none of it. The task goroutine and the asynchronous phases share it.
type incremental struct {
	mu          sync.Mutex
	confirmedID int64
	confirmed   *chainRecord
	pending     map[int64]*chainRecord
	forceFull   bool
	savepoints  map[int64]bool // not yet notified, at most maxPending
	dirty       map[int64]*dirtySet
	dirtyLost   int64 // newest checkpoint whose dirty set was forgotten unconfirmed
}

// chainRecord is what one snapshot uploaded, for later snapshots to build on.
type chainRecord struct {
	id int64
	// reuse maps local SST names to their shared files: what a base may reference.
	reuse map[string]sharedFile
	// With deltas: the native base's shared files (SST, MANIFEST, CURRENT) in the order
	// of its meta file (none when the base is a stage's chunks, the first deltas), its
	// states, and the deltas since it, in order. extendable says a delta snapshot may
	// add to it.
	base       []namedFile
	states     []metaState
	deltas     []deltaFile
	deltaBytes int64
	extendable bool
	// The stage (the next base) it uploaded chunks of, and those chunks; or, switched,
	// the stage whose chunks became its base.
	stage    *stage
	staged   []deltaFile
	switched bool
}

type namedFile struct {
	name string
	sf   sharedFile
}

// deltaFile is an uploaded delta or chunk of a stage.
type deltaFile struct {
	metaDelta
	sf sharedFile
}

func (d deltaFile) named() namedFile { return namedFile{name: d.name(), sf: d.sf} }

// sharedFile is a shared file and, when known, the CRC-32C of the local SST file it
// was uploaded from (what the manifest of a local recovery copy records).
type sharedFile struct {
	f      *sluicev1.StateFile
	crc    uint32
	hasCRC bool
}

// maxPending bounds the unconfirmed snapshots remembered (notifications may be lost);
// forgetting one only means uploading its files again.
const maxPending = 16

// base is the set of files a new snapshot may reference, nil when it must be full. The
// maps are never modified once published, so snapshots share them.
func (i *incremental) base() map[string]sharedFile {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.forceFull {
		i.forceFull = false
		return nil
	}
	if i.confirmed == nil {
		return nil
	}
	return i.confirmed.reuse
}

// uploaded records what snapshot id uploaded (nil: nothing, the state is empty).
func (i *incremental) uploaded(id int64, rec *chainRecord) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if id <= i.confirmedID {
		return
	}
	if i.pending == nil {
		i.pending = map[int64]*chainRecord{}
	}
	i.pending[id] = rec
	for len(i.pending) > maxPending {
		delete(i.pending, slices.Min(slices.Collect(maps.Keys(i.pending))))
	}
}

// complete: checkpoint id completed, and with it every earlier one was either
// completed or will never be. Its files replace the confirmed ones, even when this
// backend has no record of it: files of an older checkpoint may be deleted once id
// subsumes it.
func (i *incremental) complete(id int64) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if id <= i.confirmedID {
		return
	}
	i.confirmedID = id
	i.confirmed = i.pending[id]
	for p := range i.pending {
		if p <= id {
			delete(i.pending, p)
		}
	}
	for p := range i.dirty {
		if p <= id {
			delete(i.dirty, p)
		}
	}
}

// savepoint records that id is a savepoint (SnapshotSavepoint).
func (i *incremental) savepoint(id int64) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.savepoints == nil {
		i.savepoints = map[int64]bool{}
	}
	i.savepoints[id] = true
	for len(i.savepoints) > maxPending {
		delete(i.savepoints, slices.Min(slices.Collect(maps.Keys(i.savepoints))))
	}
}

// savepointDone reports whether id is a savepoint this backend took, and forgets it.
func (i *incremental) savepointDone(id int64) bool {
	i.mu.Lock()
	defer i.mu.Unlock()
	if !i.savepoints[id] {
		return false
	}
	delete(i.savepoints, id)
	return true
}

// restored sets the confirmed files to those of a restored snapshot (nil: none may be
// referenced); the next snapshot is a base.
func (i *incremental) restored(files map[string]sharedFile) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.confirmedID, i.confirmed, i.pending, i.dirty, i.dirtyLost = 0, nil, nil, nil, 0
	if files != nil {
		i.confirmed = &chainRecord{reuse: files}
	}
}

// NotifyCheckpointComplete implements state.CheckpointListener: the files of checkpoint
// id may be referenced by later incremental snapshots, and with local recovery the
// local copies of earlier checkpoints are removed. The completion of a savepoint this
// backend took (SnapshotSavepoint) changes nothing: a savepoint subsumes no checkpoint,
// so the files of the latest confirmed checkpoint stay referenced and its local copy
// stays; a checkpoint still pending waits for its own notification.
func (b *Backend) NotifyCheckpointComplete(id int64) {
	if b.inc.savepointDone(id) {
		return
	}
	b.inc.complete(id)
	if b.local != nil {
		b.local.complete(id)
	}
}

// ForceFullSnapshot implements state.FullSnapshotForcer: the next snapshot uploads
// every file (as shared files in incremental mode, so later ones may reference them).
func (b *Backend) ForceFullSnapshot() {
	b.inc.mu.Lock()
	b.inc.forceFull = true
	b.inc.mu.Unlock()
}

// localFile is a file of a native checkpoint.
type localFile struct {
	name string
	size int64
	sst  bool
}

// snapshot is the asynchronous phase: it uploads the files of a native checkpoint (a
// directory of hard links to the SST files and copies of the small ones), which nothing
// modifies, and removes it when done, unless it is a local recovery copy: then it
// writes the copy's manifest once the upload succeeded and keeps it. It holds nothing
// else of the backend.
type snapshot struct {
	id          int64
	opts        state.KeyedOptions
	kgs         keygroup.Range
	maxP        int
	instanceID  string
	dir         string
	files       []localFile // sorted by name
	states      []metaState
	incremental bool
	reuse       map[string]sharedFile // nil: upload everything
	sharedMeta  bool                  // MANIFEST and CURRENT are shared files too (a base for deltas)
	delta       *deltaPlan            // non-nil: a delta snapshot (delta.go)
	deltaCols   []string              // the column family of each of files, for a delta
	stage       *stage                // a delta's stage, referenced until done
	switchStage bool                  // the stage's chunks become the base
	staged      []deltaFile           // chunks of stage confirmed uploaded
	chunks      []chunkFile           // chunks of stage to upload
	inc         *incremental
	inst        *instance
	transfer    int
	stats       state.SnapshotStats
	empty       bool
	local       *localCopies // non-nil: dir is a local recovery copy

	mu    sync.Mutex
	phase int
	kept  bool // the local copy has its manifest
}

const (
	phaseIdle = iota
	phaseRunning
	phaseDone
)

// Snapshot implements state.KeyedBackend. The synchronous phase is a native RocksDB
// checkpoint: the memtables are flushed (the cost is writing them as SST files: up to
// writebuffer.size per state and timer domain that has unflushed writes), then the SST
// files are hard-linked and the small metadata files copied into a directory: the
// local recovery copy's with local recovery (copied rather than linked if it is on
// another file system), else, or when that fails, one of the instance. The
// asynchronous phase uploads that directory.
func (b *Backend) Snapshot(checkpointID int64) (state.AsyncSnapshot, error) {
	if b.closed {
		return nil, state.ErrClosed
	}
	if b.deltasOn() {
		cur, err := b.takeDirty()
		if plan := b.inc.planDelta(checkpointID, cur); plan != nil && err == nil {
			return b.deltaSnapshot(checkpointID, plan, cur)
		}
		// Without the interval's changes (err: a list could not be read, the set is
		// incomplete), a native base.
	}
	b.dropStage() // a native base starts the chain over
	dir, ents, local := b.localCheckpoint(checkpointID)
	if dir == "" {
		var err error
		if dir, ents, err = b.instanceCheckpoint(checkpointID); err != nil {
			return nil, err
		}
	}
	b.baseBytes = b.liveSSTSize() // the native checkpoint flushed the memtables
	files, empty, err := checkpointFiles(checkpointID, ents)
	if err != nil {
		if local != nil {
			local.finish(checkpointID, false)
		} else {
			os.RemoveAll(dir)
		}
		return nil, err
	}
	s := b.newSnapshot(checkpointID, dir, files, empty)
	s.incremental, s.local = b.cfg.Incremental, local
	if s.incremental {
		s.reuse = b.inc.base()
		s.sharedMeta = b.deltasOn()
	}
	return s, nil
}

// instanceCheckpoint takes a native checkpoint into a new directory of the instance and
// lists it.
func (b *Backend) instanceCheckpoint(id int64) (string, []os.DirEntry, error) {
	dir := b.snapDir()
	if err := b.cp.CreateCheckpoint(dir, 0); err != nil {
		os.RemoveAll(dir)
		return "", nil, errorf("snapshot %d: native checkpoint: %w", id, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, errorf("snapshot %d: %w", id, err)
	}
	return dir, ents, nil
}

// snapDir names a new directory of the instance for a snapshot's files.
func (b *Backend) snapDir() string {
	b.seq++
	return filepath.Join(b.inst.dir, fmt.Sprintf("snap-%d", b.seq))
}

// checkpointFiles lists the files of a native checkpoint to upload, sorted by name;
// empty means it has no SST file (the database holds nothing).
func checkpointFiles(id int64, ents []os.DirEntry) (files []localFile, empty bool, err error) {
	empty = true
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			return nil, false, errorf("snapshot %d: native checkpoint file %s: not a regular file (%v)", id, e.Name(), err)
		}
		if strings.HasPrefix(e.Name(), "OPTIONS-") {
			// RocksDB opens a database without its OPTIONS file (the options come from
			// the configuration, and opening writes a new one); uploading it would add
			// some 4.5 KiB per column family to every checkpoint of every subtask.
			continue
		}
		f := localFile{name: e.Name(), size: info.Size(), sst: strings.HasSuffix(e.Name(), ".sst")}
		if f.sst {
			empty = false
		}
		files = append(files, f)
	}
	slices.SortFunc(files, func(a, b localFile) int { return strings.Compare(a.name, b.name) })
	return files, empty, nil
}

// newSnapshot returns the asynchronous phase uploading the native checkpoint in dir as
// a full snapshot (every file private), without a local recovery copy; it holds a
// reference to the instance.
func (b *Backend) newSnapshot(id int64, dir string, files []localFile, empty bool) *snapshot {
	s := &snapshot{
		id: id, opts: b.opts, kgs: b.kgs, maxP: b.maxP, instanceID: b.id, dir: dir, files: files,
		states: b.metaStates(), inc: &b.inc, inst: b.inst, transfer: b.cfg.TransferThreads, empty: empty,
		stats: state.SnapshotStats{CheckpointID: id, Entries: int64(b.estimateEntries()), Timers: int64(b.timers.count())},
	}
	b.inst.acquire()
	return s
}

// metaStates lists the registered states and their column families.
func (b *Backend) metaStates() []metaState {
	states := make([]metaState, 0, len(b.states))
	for _, c := range b.states {
		states = append(states, metaState{desc: c.desc, column: c.name})
	}
	return states
}

// localCheckpoint takes the native checkpoint into the local recovery copy's directory
// and lists it; dir is empty when local recovery is off or that failed (logged).
func (b *Backend) localCheckpoint(id int64) (string, []os.DirEntry, *localCopies) {
	if b.local == nil {
		return "", nil, nil
	}
	dir, ok := b.local.begin(id)
	if !ok {
		return "", nil, nil
	}
	if err := b.cp.CreateCheckpoint(dir, 0); err != nil {
		b.local.failed(id, "native checkpoint", err)
		return "", nil, nil
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		b.local.failed(id, "list the native checkpoint", err)
		return "", nil, nil
	}
	return dir, ents, b.local
}

// estimateEntries is RocksDB's estimate of the state entries (not exact: deletions and
// overwrites not yet compacted distort it).
func (b *Backend) estimateEntries() uint64 {
	var n uint64
	for _, c := range b.states {
		v, _ := b.nat.intProperty(c.c, "rocksdb.estimate-num-keys")
		n += v
	}
	return n
}

func (s *snapshot) Stats() state.SnapshotStats { return s.stats }

// Release implements state.AsyncSnapshot. During Run it does nothing: Run releases when
// it returns (cancel its context to stop it early).
func (s *snapshot) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseIdle {
		s.done()
	}
}

// done removes the native checkpoint, unless it became a local recovery copy; s.mu is
// held.
func (s *snapshot) done() {
	s.phase = phaseDone
	if s.local != nil {
		s.local.finish(s.id, s.kept)
	} else {
		os.RemoveAll(s.dir)
	}
	if s.stage != nil {
		s.stage.files.release()
	}
	s.inst.release()
}

// claim starts a Run: only one, and none after Release.
func (s *snapshot) claim() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase != phaseIdle {
		return errors.New("rocksdb: snapshot already run or released")
	}
	s.phase = phaseRunning
	return nil
}

// Run implements state.AsyncSnapshot: it uploads the files, at most TransferThreads at
// a time, and returns a handle whose private_files start with the meta file. In
// incremental mode the SST files are shared files, and those the latest confirmed
// checkpoint references are referenced again rather than uploaded. When Run fails, the
// files being written are aborted; files it completed before stay behind, unreferenced
// (like every file of a checkpoint that is aborted later).
func (s *snapshot) Run(ctx context.Context, w state.StateWriter) (*sluicev1.KeyedStateHandle, error) {
	if err := s.claim(); err != nil {
		return nil, err
	}
	defer func() {
		s.mu.Lock()
		s.done()
		s.mu.Unlock()
	}()
	if err := ctx.Err(); err != nil {
		return nil, errorf("snapshot %d: %w", s.id, err)
	}
	if s.empty {
		// No SST file: nothing was ever written, or everything is gone.
		if s.incremental {
			s.inc.uploaded(s.id, nil)
		}
		return nil, nil
	}
	if w == nil {
		return nil, errors.New("rocksdb: nil StateWriter")
	}
	if s.delta != nil {
		return s.runDelta(ctx, w)
	}
	h, rec, crcs, err := s.write(ctx, w)
	if err != nil {
		return nil, errorf("snapshot %d: %w", s.id, err)
	}
	if s.incremental {
		s.inc.uploaded(s.id, rec)
	}
	if s.local != nil {
		s.keepLocal(h, crcs)
	}
	return h, nil
}

// keepLocal writes the manifest of the local recovery copy of the uploaded snapshot h;
// crcs are those of s.files. A failure is logged (the copy is then removed).
func (s *snapshot) keepLocal(h *sluicev1.KeyedStateHandle, crcs []uint32) {
	m := &localManifest{checkpointID: s.id, maxP: s.maxP, kgs: s.kgs, metaSHA256: h.GetPrivateFiles()[0].GetSha256()}
	shared, private := h.GetSharedFiles(), h.GetPrivateFiles()[1:]
	for i, f := range s.files {
		var sf *sluicev1.StateFile
		if s.isShared(f) {
			sf, shared = shared[0], shared[1:]
		} else {
			sf, private = private[0], private[1:]
		}
		m.files = append(m.files, manifestFile{name: f.name, size: f.size, sha256: sf.GetSha256(), crc: crcs[i]})
	}
	s.keepManifest(m)
}

// keepManifest writes the manifest of the local recovery copy, which keeps it; a
// failure is logged (the copy is then removed).
func (s *snapshot) keepManifest(m *localManifest) {
	if err := writeLocalManifest(s.dir, m); err != nil {
		s.local.failed(s.id, "write the manifest", err)
		return
	}
	s.mu.Lock()
	s.kept = true
	s.mu.Unlock()
}

// isShared says whether a file of a base snapshot is a shared file: SST files in
// incremental mode, and with deltas MANIFEST and CURRENT too, which every delta
// snapshot on the base references.
func (s *snapshot) isShared(f localFile) bool {
	return s.incremental && (f.sst || s.sharedMeta)
}

// write uploads the files and returns the handle, the record of what it uploaded and
// the CRC-32C of every file of s.files.
func (s *snapshot) write(ctx context.Context, w state.StateWriter) (*sluicev1.KeyedStateHandle, *chainRecord, []uint32, error) {
	var sharedIdx, privateIdx []int // into s.files
	for i, f := range s.files {
		if s.isShared(f) {
			sharedIdx = append(sharedIdx, i)
		} else {
			privateIdx = append(privateIdx, i)
		}
	}
	out := make([]*sluicev1.StateFile, len(s.files))
	crcs := make([]uint32, len(s.files))
	uploaded := make([]bool, len(s.files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.transfer)
	for _, i := range sharedIdx {
		f := s.files[i]
		if r, ok := s.reuse[f.name]; ok && f.sst && r.f.GetSize() == f.size {
			out[i], crcs[i] = r.f, r.crc
			if !r.hasCRC && s.local != nil {
				// Reused from a snapshot whose CRC is unknown: the local copy's manifest
				// needs it.
				g.Go(func() error {
					crc, n, err := fileCRC(gctx, filepath.Join(s.dir, f.name))
					if err == nil && n != f.size {
						err = fmt.Errorf("native checkpoint file %s changed size (%d, then %d bytes)", f.name, f.size, n)
					}
					crcs[i] = crc
					return err
				})
			}
			continue
		}
		uploaded[i] = true
		g.Go(func() (err error) {
			out[i], crcs[i], err = s.upload(gctx, s.dir, w, f, true)
			return err
		})
	}
	for _, i := range privateIdx {
		f := s.files[i]
		uploaded[i] = true
		g.Go(func() (err error) {
			out[i], crcs[i], err = s.private(gctx, w, f)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, nil, err
	}
	m := &snapshotMeta{maxP: s.maxP, kgs: s.kgs, states: s.states}
	h := &sluicev1.KeyedStateHandle{KeyGroupStart: int32(s.kgs.Start), KeyGroupEnd: int32(s.kgs.End), Backend: Name}
	rec := &chainRecord{id: s.id, reuse: map[string]sharedFile{}, states: s.states, extendable: s.sharedMeta}
	for _, i := range sharedIdx {
		f := s.files[i]
		m.shared = append(m.shared, f.name)
		h.SharedFiles = append(h.SharedFiles, out[i])
		r, reused := s.reuse[f.name]
		sf := sharedFile{f: out[i], crc: crcs[i], hasCRC: !reused || !f.sst || r.hasCRC || s.local != nil}
		if f.sst {
			rec.reuse[f.name] = sf
		}
		if s.sharedMeta {
			rec.base = append(rec.base, namedFile{name: f.name, sf: sf})
		}
	}
	for _, i := range privateIdx {
		m.private = append(m.private, s.files[i].name)
	}
	metaFile, err := s.writeBytes(ctx, w, s.opts.FileName(s.id, "rocksdb.meta"), m.encode())
	if err != nil {
		return nil, nil, nil, err
	}
	h.PrivateFiles = append(h.PrivateFiles, metaFile)
	h.IncrementalSize, h.FullSize = metaFile.GetSize(), metaFile.GetSize()
	for _, i := range privateIdx {
		h.PrivateFiles = append(h.PrivateFiles, out[i])
	}
	for i, f := range out {
		h.FullSize += f.GetSize()
		if uploaded[i] {
			h.IncrementalSize += f.GetSize()
		}
	}
	return h, rec, crcs, nil
}

// sharedName names an SST file in shared/: unique across the job because it carries
// the operator, subtask, checkpoint and the random instance ID, so that concurrent
// checkpoints uploading the same SST never write the same shared file.
func (s *snapshot) sharedName(local string) string {
	return s.opts.FileName(s.id, s.instanceID+"-"+local)
}

// private writes a private file, inlined below the inline threshold, and returns it
// with the CRC-32C of its bytes.
func (s *snapshot) private(ctx context.Context, w state.StateWriter, f localFile) (*sluicev1.StateFile, uint32, error) {
	if f.size >= int64(s.opts.InlineLimit()) {
		return s.upload(ctx, s.dir, w, f, false)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, f.name))
	if err != nil {
		return nil, 0, err
	}
	if int64(len(b)) != f.size {
		return nil, 0, fmt.Errorf("native checkpoint file %s changed size (%d, then %d bytes)", f.name, f.size, len(b))
	}
	sf, err := s.writeBytes(ctx, w, s.opts.FileName(s.id, f.name), b)
	return sf, crc32.Checksum(b, castagnoli), err
}

// writeBytes writes a private file from memory, inlined below the inline threshold.
func (s *snapshot) writeBytes(ctx context.Context, w state.StateWriter, name string, b []byte) (*sluicev1.StateFile, error) {
	sw := state.NewSpillWriter(ctx, w, name, s.opts.InlineLimit())
	if _, err := sw.Write(b); err != nil {
		sw.Abort()
		return nil, err
	}
	return sw.Close()
}

// upload copies a file of dir (the native checkpoint's, or a stage's) to a new shared or private file and
// returns it with the CRC-32C of the bytes read.
func (s *snapshot) upload(ctx context.Context, dir string, w state.StateWriter, f localFile, shared bool) (*sluicev1.StateFile, uint32, error) {
	in, err := os.Open(filepath.Join(dir, f.name))
	if err != nil {
		return nil, 0, err
	}
	defer in.Close()
	var fw state.FileWriter
	if shared {
		name := s.sharedName(f.name)
		if fw, err = w.CreateShared(ctx, name); err != nil {
			return nil, 0, fmt.Errorf("create shared file %s: %w", name, err)
		}
	} else {
		name := s.opts.FileName(s.id, f.name)
		if fw, err = w.Create(ctx, name); err != nil {
			return nil, 0, fmt.Errorf("create %s: %w", name, err)
		}
	}
	h := crc32.New(castagnoli)
	n, err := io.Copy(fw, io.TeeReader(ctxReader{ctx, in}, h))
	if err == nil && n != f.size {
		err = fmt.Errorf("native checkpoint file %s changed size (%d, then %d bytes)", f.name, f.size, n)
	}
	if err != nil {
		fw.Abort()
		return nil, 0, fmt.Errorf("upload %s: %w", f.name, err)
	}
	sf, err := fw.Close()
	if err != nil {
		return nil, 0, fmt.Errorf("upload %s: %w", f.name, err)
	}
	return sf, h.Sum32(), nil
}

// ctxReader stops reading once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
