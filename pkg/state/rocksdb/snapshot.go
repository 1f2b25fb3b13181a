//go:build cgo

package rocksdb

import (
	"context"
	"errors"
	"fmt"
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

// incremental is what a backend knows of its shared files: those of the latest
// checkpoint it was told completed (the only ones a new snapshot may reference), and
// those of snapshots uploaded but not yet confirmed. The task goroutine and the
// asynchronous phases share it.
type incremental struct {
	mu          sync.Mutex
	confirmedID int64
	confirmed   map[string]*sluicev1.StateFile // local SST name -> its shared file
	pending     map[int64]map[string]*sluicev1.StateFile
	forceFull   bool
}

// maxPending bounds the unconfirmed snapshots remembered (notifications may be lost);
// forgetting one only means uploading its files again.
const maxPending = 16

// base is the set of files a new snapshot may reference, nil when it must be full. The
// maps are never modified once published, so snapshots share them.
func (i *incremental) base() map[string]*sluicev1.StateFile {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.forceFull {
		i.forceFull = false
		return nil
	}
	return i.confirmed
}

// uploaded records the shared files of snapshot id (all it references).
func (i *incremental) uploaded(id int64, files map[string]*sluicev1.StateFile) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if id <= i.confirmedID {
		return
	}
	if i.pending == nil {
		i.pending = map[int64]map[string]*sluicev1.StateFile{}
	}
	i.pending[id] = files
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
}

// restored sets the confirmed files to those of a restored snapshot.
func (i *incremental) restored(files map[string]*sluicev1.StateFile) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.confirmedID, i.confirmed, i.pending = 0, files, nil
}

// NotifyCheckpointComplete implements state.CheckpointListener: the files of checkpoint
// id may be referenced by later incremental snapshots.
func (b *Backend) NotifyCheckpointComplete(id int64) { b.inc.complete(id) }

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
// modifies, and removes it when done. It holds nothing else of the backend.
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
	reuse       map[string]*sluicev1.StateFile // nil: upload everything
	inc         *incremental
	inst        *instance
	transfer    int
	stats       state.SnapshotStats
	empty       bool

	mu    sync.Mutex
	phase int
}

const (
	phaseIdle = iota
	phaseRunning
	phaseDone
)

// Snapshot implements state.KeyedBackend. The synchronous phase is a native RocksDB
// checkpoint: the memtables are flushed (the cost is writing them as SST files: up to
// writebuffer.size per state and timer domain that has unflushed writes), then the SST
// files are hard-linked and the small metadata files copied into a directory of the
// instance. The asynchronous phase uploads that directory.
func (b *Backend) Snapshot(checkpointID int64) (state.AsyncSnapshot, error) {
	if b.closed {
		return nil, state.ErrClosed
	}
	b.seq++
	dir := filepath.Join(b.inst.dir, fmt.Sprintf("snap-%d", b.seq))
	if err := b.cp.CreateCheckpoint(dir, 0); err != nil {
		os.RemoveAll(dir)
		return nil, errorf("snapshot %d: native checkpoint: %w", checkpointID, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, errorf("snapshot %d: %w", checkpointID, err)
	}
	s := &snapshot{
		id: checkpointID, opts: b.opts, kgs: b.kgs, maxP: b.maxP, instanceID: b.id, dir: dir,
		incremental: b.cfg.Incremental, inc: &b.inc, inst: b.inst, transfer: b.cfg.TransferThreads, empty: true,
	}
	for _, e := range ents {
		info, err := e.Info()
		if err != nil || !info.Mode().IsRegular() {
			os.RemoveAll(dir)
			return nil, errorf("snapshot %d: native checkpoint file %s: not a regular file (%v)", checkpointID, e.Name(), err)
		}
		if strings.HasPrefix(e.Name(), "OPTIONS-") {
			// RocksDB opens a database without its OPTIONS file (the options come from
			// the configuration, and opening writes a new one); uploading it would add
			// some 4.5 KiB per column family to every checkpoint of every subtask.
			continue
		}
		f := localFile{name: e.Name(), size: info.Size(), sst: strings.HasSuffix(e.Name(), ".sst")}
		if f.sst {
			s.empty = false
		}
		s.files = append(s.files, f)
	}
	slices.SortFunc(s.files, func(a, b localFile) int { return strings.Compare(a.name, b.name) })
	for _, c := range b.states {
		s.states = append(s.states, metaState{desc: c.desc, column: c.name})
	}
	if s.incremental {
		s.reuse = b.inc.base()
	}
	s.stats = state.SnapshotStats{CheckpointID: checkpointID, Entries: int64(b.estimateEntries()), Timers: int64(b.timers.count())}
	b.inst.acquire()
	return s, nil
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

// done removes the native checkpoint; s.mu is held.
func (s *snapshot) done() {
	s.phase = phaseDone
	os.RemoveAll(s.dir)
	s.inst.release()
}

// Run implements state.AsyncSnapshot: it uploads the files, at most TransferThreads at
// a time, and returns a handle whose private_files start with the meta file. In
// incremental mode the SST files are shared files, and those the latest confirmed
// checkpoint references are referenced again rather than uploaded. When Run fails, the
// files being written are aborted; files it completed before stay behind, unreferenced
// (like every file of a checkpoint that is aborted later).
func (s *snapshot) Run(ctx context.Context, w state.StateWriter) (*sluicev1.KeyedStateHandle, error) {
	s.mu.Lock()
	if s.phase != phaseIdle {
		s.mu.Unlock()
		return nil, errors.New("rocksdb: snapshot already run or released")
	}
	s.phase = phaseRunning
	s.mu.Unlock()
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
	h, shared, err := s.write(ctx, w)
	if err != nil {
		return nil, errorf("snapshot %d: %w", s.id, err)
	}
	if s.incremental {
		s.inc.uploaded(s.id, shared)
	}
	return h, nil
}

func (s *snapshot) write(ctx context.Context, w state.StateWriter) (*sluicev1.KeyedStateHandle, map[string]*sluicev1.StateFile, error) {
	var sharedIdx, privateIdx []int // into s.files
	for i, f := range s.files {
		if s.incremental && f.sst {
			sharedIdx = append(sharedIdx, i)
		} else {
			privateIdx = append(privateIdx, i)
		}
	}
	out := make([]*sluicev1.StateFile, len(s.files))
	uploaded := make([]bool, len(s.files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.transfer)
	for _, i := range sharedIdx {
		f := s.files[i]
		if r := s.reuse[f.name]; r != nil && r.GetSize() == f.size {
			out[i] = r
			continue
		}
		uploaded[i] = true
		g.Go(func() (err error) {
			out[i], err = s.upload(gctx, w, f, true)
			return err
		})
	}
	for _, i := range privateIdx {
		f := s.files[i]
		uploaded[i] = true
		g.Go(func() (err error) {
			out[i], err = s.private(gctx, w, f)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	m := &snapshotMeta{maxP: s.maxP, kgs: s.kgs, states: s.states}
	h := &sluicev1.KeyedStateHandle{KeyGroupStart: int32(s.kgs.Start), KeyGroupEnd: int32(s.kgs.End), Backend: Name}
	shared := map[string]*sluicev1.StateFile{}
	for _, i := range sharedIdx {
		m.shared = append(m.shared, s.files[i].name)
		h.SharedFiles = append(h.SharedFiles, out[i])
		shared[s.files[i].name] = out[i]
	}
	for _, i := range privateIdx {
		m.private = append(m.private, s.files[i].name)
	}
	metaFile, err := s.writeBytes(ctx, w, s.opts.FileName(s.id, "rocksdb.meta"), m.encode())
	if err != nil {
		return nil, nil, err
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
	return h, shared, nil
}

// sharedName names an SST file in shared/: unique across the job because it carries
// the operator, subtask, checkpoint and the random instance ID, so that concurrent
// checkpoints uploading the same SST never write the same shared file.
func (s *snapshot) sharedName(local string) string {
	return s.opts.FileName(s.id, s.instanceID+"-"+local)
}

// private writes a private file, inlined below the inline threshold.
func (s *snapshot) private(ctx context.Context, w state.StateWriter, f localFile) (*sluicev1.StateFile, error) {
	if f.size >= int64(s.opts.InlineLimit()) {
		return s.upload(ctx, w, f, false)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, f.name))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) != f.size {
		return nil, fmt.Errorf("native checkpoint file %s changed size (%d, then %d bytes)", f.name, f.size, len(b))
	}
	return s.writeBytes(ctx, w, s.opts.FileName(s.id, f.name), b)
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

// upload copies a file of the native checkpoint to a new shared or private file.
func (s *snapshot) upload(ctx context.Context, w state.StateWriter, f localFile, shared bool) (*sluicev1.StateFile, error) {
	in, err := os.Open(filepath.Join(s.dir, f.name))
	if err != nil {
		return nil, err
	}
	defer in.Close()
	var fw state.FileWriter
	if shared {
		name := s.sharedName(f.name)
		if fw, err = w.CreateShared(ctx, name); err != nil {
			return nil, fmt.Errorf("create shared file %s: %w", name, err)
		}
	} else {
		name := s.opts.FileName(s.id, f.name)
		if fw, err = w.Create(ctx, name); err != nil {
			return nil, fmt.Errorf("create %s: %w", name, err)
		}
	}
	n, err := io.Copy(fw, ctxReader{ctx, in})
	if err == nil && n != f.size {
		err = fmt.Errorf("native checkpoint file %s changed size (%d, then %d bytes)", f.name, f.size, n)
	}
	if err != nil {
		fw.Abort()
		return nil, fmt.Errorf("upload %s: %w", f.name, err)
	}
	sf, err := fw.Close()
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", f.name, err)
	}
	return sf, nil
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
