//go:build cgo

package rocksdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/sluice-stream/sluice/pkg/atomicfile"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// localCopies keeps the local recovery copies of one backend: the chk-<n> directories
// of its key-group directory. The copy of the latest checkpoint the backend was told
// completed (or restored from) is the confirmed one and outlives the backend; copies of
// later checkpoints are pending until confirmed, bounded by maxPending; both outlive
// the backend (see close). Every problem is logged and otherwise ignored: local
// recovery never fails a snapshot. The task goroutine and the asynchronous phases
// share it.
type localCopies struct {
	dir string // <Dir>/<job>/<uid>/kg-<first>-<last>
	kgs keygroup.Range
	log *slog.Logger

	mu        sync.Mutex
	confirmed int64          // 0: none known
	running   map[int64]bool // copies whose asynchronous phase has not ended
	pending   map[int64]bool // copies written and not confirmed
	closed    bool
	failing   bool // the latest copy failed: further failures are logged at debug level
}

func newLocalCopies(lr LocalRecovery, uid string, kgs keygroup.Range, log *slog.Logger) *localCopies {
	return &localCopies{
		dir: localKGDir(lr, uid, kgs), kgs: kgs, log: log,
		running: map[int64]bool{}, pending: map[int64]bool{},
	}
}

func (l *localCopies) chkDir(id int64) string { return filepath.Join(l.dir, chkDirName(id)) }

// begin returns the directory of a new copy of checkpoint id, which does not exist (a
// native checkpoint creates it): any leftover of an earlier attempt is removed. ok is
// false when there can be no copy (logged).
func (l *localCopies) begin(id int64) (dir string, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return "", false
	}
	if l.running[id] {
		// Snapshot twice for one checkpoint: the first attempt's copy stays its own.
		l.report(id, "create the directory", fmt.Errorf("a copy of checkpoint %d is being written", id))
		return "", false
	}
	dir = l.chkDir(id)
	err := os.MkdirAll(l.dir, 0o755)
	// A native checkpoint stages in "<dir>.tmp" and renames it.
	for _, d := range []string{dir, dir + ".tmp"} {
		if err == nil {
			err = os.RemoveAll(d)
		}
	}
	delete(l.pending, id)
	if err != nil {
		l.remove(id)
		l.report(id, "create the directory", err)
		return "", false
	}
	l.running[id] = true
	return dir, true
}

// hasCopy says whether checkpoint id has a copy with its manifest written.
func (l *localCopies) hasCopy(id int64) bool {
	_, err := os.Stat(filepath.Join(l.chkDir(id), localManifestName))
	return err == nil
}

// failed ends a copy that could not be written: it is removed and the failure logged.
func (l *localCopies) failed(id int64, what string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.running, id)
	l.remove(id)
	l.report(id, what, err)
}

// report logs a copy that could not be written: a warning, or at debug level while
// copies keep failing; l.mu is held.
func (l *localCopies) report(id int64, what string, err error) {
	level := slog.LevelWarn
	if l.failing {
		level = slog.LevelDebug
	}
	l.failing = true
	l.log.Log(context.Background(), level, "local recovery: no local copy of this checkpoint; a restore will read it from the checkpoint storage",
		"checkpoint", id, "step", what, "error", err)
}

// finish ends the asynchronous phase of copy id: kept (it is the local copy of an
// uploaded checkpoint) or removed.
func (l *localCopies) finish(id int64, kept bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.running, id)
	switch {
	case !kept || l.closed || id < l.confirmed:
		l.remove(id)
		return
	case id > l.confirmed:
		l.pending[id] = true
		for len(l.pending) > maxPending {
			oldest := slices.Min(slices.Collect(maps.Keys(l.pending)))
			delete(l.pending, oldest)
			l.remove(oldest)
		}
	}
	if l.failing {
		l.failing = false
		l.log.Info("local recovery: local copies are written again", "checkpoint", id)
	}
}

// complete: checkpoint id completed. Copies of earlier checkpoints are removed (those
// still being written when theirs end), as are the copies of key-group ranges that
// overlap this backend's but differ (left by an earlier parallelism).
func (l *localCopies) complete(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || id <= l.confirmed {
		return
	}
	l.confirmed = id
	for p := range l.pending {
		if p <= id {
			delete(l.pending, p)
		}
	}
	l.prune(func(c int64) bool { return c < id })
	l.pruneOverlapping()
}

// restoredFrom: the backend restored from its copy of checkpoint id, which becomes the
// confirmed one; every other copy of the key-group directory is removed.
func (l *localCopies) restoredFrom(id int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.confirmed = id
	clear(l.pending)
	l.prune(func(c int64) bool { return c != id })
}

// close keeps the confirmed copy and the pending ones for a restore, also by another
// process: a pending copy may be of a checkpoint that completed without this backend
// hearing of it (a failover right after the completion), the very one the next attempt
// restores. The next backend of the key-group range prunes them when it restores or
// confirms a checkpoint. Copies still being written are removed when their phase ends.
func (l *localCopies) close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	clear(l.pending)
	os.Remove(l.dir) // only when empty
}

// remove deletes the copy of checkpoint id; l.mu is held.
func (l *localCopies) remove(id int64) {
	dir := l.chkDir(id)
	for _, d := range []string{dir, dir + ".tmp"} {
		// ENOTDIR: a path under the root is not a directory, so there is no copy.
		if err := os.RemoveAll(d); err != nil && !errors.Is(err, syscall.ENOTDIR) {
			l.log.Warn("local recovery: cannot remove a local copy", "dir", d, "error", err)
		}
	}
}

// prune removes the copies (and staging directories) of the key-group directory whose
// checkpoint drop selects, except those still being written; l.mu is held.
func (l *localCopies) prune(drop func(id int64) bool) {
	ents, err := os.ReadDir(l.dir)
	if err != nil {
		// Creating copies failed too, and said so.
		l.log.Debug("local recovery: cannot list the local copies", "dir", l.dir, "error", err)
		return
	}
	for _, e := range ents {
		id, ok := parseChkDirName(strings.TrimSuffix(e.Name(), ".tmp"))
		if !ok || !drop(id) || l.running[id] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(l.dir, e.Name())); err != nil {
			l.log.Warn("local recovery: cannot remove a local copy", "dir", filepath.Join(l.dir, e.Name()), "error", err)
		}
	}
}

// pruneOverlapping removes the key-group directories of the operator that overlap
// this backend's range without being it; l.mu is held. The subtasks of an operator
// own disjoint ranges, so such a directory belongs to an earlier parallelism.
func (l *localCopies) pruneOverlapping() {
	parent := filepath.Dir(l.dir)
	ents, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range ents {
		r, ok := parseKGDirName(e.Name())
		if !ok || r == l.kgs || r.Intersect(l.kgs).Len() == 0 {
			continue
		}
		if err := os.RemoveAll(filepath.Join(parent, e.Name())); err != nil {
			l.log.Warn("local recovery: cannot remove the local copies of an earlier parallelism", "dir", filepath.Join(parent, e.Name()), "error", err)
		}
	}
}

// writeLocalManifest writes m into dir atomically. A copy whose manifest is lost in a
// crash is only not used.
func writeLocalManifest(dir string, m *localManifest) error {
	return atomicfile.Write(filepath.Join(dir, localManifestName), m.encode())
}

// fileCRC is the CRC-32C and size of a file's content.
func fileCRC(ctx context.Context, path string) (uint32, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	h := crc32.New(castagnoli)
	n, err := io.Copy(h, ctxReader{ctx, f})
	return h.Sum32(), n, err
}

// localSource is a local copy that matches the handle being restored.
type localSource struct {
	id    int64
	dir   string
	files map[string]manifestFile
}

// findLocalCopy returns the local copy of checkpoint opts.RestoreCheckpointID for the
// database's handle p, or why there is none to use. The copy matches when its
// manifest is intact and records the checkpoint, max parallelism and key groups of the
// handle, the SHA-256 of its meta file, and for every file of both the same size and
// SHA-256.
func (b *Backend) findLocalCopy(p part, m *snapshotMeta) (*localSource, string) {
	id := b.opts.RestoreCheckpointID
	if id <= 0 {
		return nil, "the checkpoint to restore is unknown"
	}
	dir := filepath.Join(localKGDir(b.cfg.LocalRecovery, b.opts.OperatorUID, p.hr), chkDirName(id))
	f, err := os.Open(filepath.Join(dir, localManifestName))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Sprintf("no local copy of checkpoint %d", id)
	}
	if err != nil {
		return nil, fmt.Sprintf("local copy of checkpoint %d: %v", id, err)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxLocalManifest+1))
	f.Close()
	if err != nil {
		return nil, fmt.Sprintf("local copy of checkpoint %d: %v", id, err)
	}
	if len(raw) > maxLocalManifest {
		return nil, fmt.Sprintf("local copy of checkpoint %d: manifest too large", id)
	}
	lm, err := decodeLocalManifest(raw)
	if err != nil {
		return nil, fmt.Sprintf("local copy of checkpoint %d: %v", id, err)
	}
	metaSHA := p.h.GetPrivateFiles()[0].GetSha256()
	switch {
	case lm.checkpointID != id:
		return nil, fmt.Sprintf("local copy of checkpoint %d: its manifest is of checkpoint %d", id, lm.checkpointID)
	case lm.maxP != b.maxP || lm.kgs != p.hr:
		return nil, fmt.Sprintf("local copy of checkpoint %d: key groups %v of %d, the handle has %v of %d", id, lm.kgs, lm.maxP, p.hr, b.maxP)
	case len(metaSHA) == 0 || !bytes.Equal(lm.metaSHA256, metaSHA):
		return nil, fmt.Sprintf("local copy of checkpoint %d: written for another snapshot (meta file differs)", id)
	}
	src := &localSource{id: id, dir: dir, files: map[string]manifestFile{}}
	for _, e := range lm.files {
		src.files[e.name] = e
	}
	for name, sf := range handleFiles(p.h, m) {
		if e, ok := src.files[name]; ok && (e.size != sf.GetSize() || !bytes.Equal(e.sha256, sf.GetSha256())) {
			return nil, fmt.Sprintf("local copy of checkpoint %d: %s differs from the handle's", id, name)
		}
	}
	return src, ""
}

// handleFiles maps the local names of a RocksDB handle's files (its meta file m) to
// their StateFiles.
func handleFiles(h *sluicev1.KeyedStateHandle, m *snapshotMeta) map[string]*sluicev1.StateFile {
	files := map[string]*sluicev1.StateFile{}
	for i, name := range m.shared {
		files[name] = h.GetSharedFiles()[i]
	}
	for i, name := range m.private {
		files[name] = h.GetPrivateFiles()[i+1]
	}
	for i, d := range m.deltas {
		files[d.name()] = h.GetSharedFiles()[len(m.shared)+i]
	}
	return files
}

// restoreLocalFile puts the local copy's file src at dst, verified against its
// manifest entry e: an SST file is hard-linked (RocksDB never modifies one) when
// possible, any other file copied (RocksDB appends to MANIFEST). On error dst does not
// exist.
func restoreLocalFile(ctx context.Context, src, dst string, e manifestFile) error {
	info, err := os.Stat(src)
	if err != nil {
		return err
	}
	if !info.Mode().IsRegular() || info.Size() != e.size {
		return fmt.Errorf("%d bytes, the manifest says %d", info.Size(), e.size)
	}
	if strings.HasSuffix(e.name, ".sst") && os.Link(src, dst) == nil {
		crc, n, err := fileCRC(ctx, dst)
		if err == nil {
			err = checkLocal(e, n, crc)
		}
		if err != nil {
			os.Remove(dst)
		}
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	h := crc32.New(castagnoli)
	n, err := io.Copy(io.MultiWriter(out, h), ctxReader{ctx, in})
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = checkLocal(e, n, h.Sum32())
	}
	if err != nil {
		os.Remove(dst)
	}
	return err
}

func checkLocal(e manifestFile, n int64, crc uint32) error {
	if n != e.size {
		return fmt.Errorf("read %d bytes, the manifest says %d", n, e.size)
	}
	if crc != e.crc {
		return fmt.Errorf("CRC-32C %08x, the manifest says %08x", crc, e.crc)
	}
	return nil
}

// restoreCount gathers what a restore read, and from where; downloads update it
// concurrently.
type restoreCount struct {
	local, remote atomic.Int64
	localID       int64

	mu      sync.Mutex
	reasons []string
}

// fallback records why something was read from the checkpoint storage.
func (c *restoreCount) fallback(format string, args ...any) {
	c.mu.Lock()
	c.reasons = append(c.reasons, fmt.Sprintf(format, args...))
	c.mu.Unlock()
}

// maxReasons bounds the reasons RestoreStats.Fallback lists.
const maxReasons = 4

func (c *restoreCount) stats() state.RestoreStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	rs := c.reasons
	more := ""
	if len(rs) > maxReasons {
		more = fmt.Sprintf("; and %d more", len(rs)-maxReasons)
		rs = rs[:maxReasons]
	}
	s := state.RestoreStats{LocalBytes: c.local.Load(), RemoteBytes: c.remote.Load(), Fallback: strings.Join(rs, "; ") + more}
	if s.LocalBytes > 0 {
		s.LocalCheckpointID = c.localID
	}
	return s
}

// LastRestore implements state.RestoreReporter: what the latest Restore read from the
// local recovery copy and from the checkpoint storage.
func (b *Backend) LastRestore() state.RestoreStats { return b.lastRestore }
