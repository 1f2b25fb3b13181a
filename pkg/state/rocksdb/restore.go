//go:build cgo

package rocksdb

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/linxGnu/grocksdb"
	"golang.org/x/sync/errgroup"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/fullsnap"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// part is a handle that has key groups of the backend's range.
type part struct {
	i  int // index in the handles
	h  *sluicev1.KeyedStateHandle
	hr keygroup.Range // the handle's key groups
	in keygroup.Range // those in the backend's range
}

func (p part) rocks() bool { return p.h.GetBackend() == Name }

// Restore implements state.KeyedBackend. A handle whose backend is Name ("rocksdb":
// checkpoints and native savepoints, incremental or not) holds RocksDB files; any
// other must have a file, read as a full snapshot (pkg/state/fullsnap: the heap
// backend's snapshots and canonical savepoints, backend fullsnap.HandleBackend).
//
// The RocksDB handle with the most key groups in range becomes the database: its files
// are downloaded (verified against their size and SHA-256, whatever the reader does)
// into the instance directory and opened (a base of chunks: into a new database), its
// deltas (delta.go) ingested in order, and the key groups outside the range are
// deleted with range deletions (rescaling). Every other RocksDB handle is downloaded
// into a temporary directory and opened (read-only unless it has deltas to ingest
// first), and its key groups in range are
// ingested as SST files written from it (see merge); full-snapshot handles are decoded
// and written with batched writes.
//
// With local recovery (Config.LocalRecovery) the database's handle is restored from
// this machine's copy of checkpoint KeyedOptions.RestoreCheckpointID when there is one
// that matches it (see findLocalCopy): SST files are hard-linked (copied across file
// systems), the others copied, each verified against the size and CRC-32C of the
// copy's manifest; a file that fails is downloaded instead, and so is every file when
// the copy does not match. LastRestore reports what came from where, and why not
// locally.
//
// In incremental mode the shared SST files of the database's native base count as
// uploaded: the first snapshot, a native base, references them instead of uploading
// them again (unless Config.NoClaim). Private files, deltas and chunks are never reused.
func (b *Backend) Restore(ctx context.Context, handles []*sluicev1.KeyedStateHandle, r state.StateReader) error {
	if b.closed {
		return state.ErrClosed
	}
	cnt := &restoreCount{}
	err := b.restore(ctx, handles, r, cnt)
	b.lastRestore = cnt.stats()
	if err != nil && b.db == nil {
		// The database is gone: the backend is unusable (as the contract allows), and
		// says so rather than crash.
		b.closed = true
		b.keyErr = state.ErrClosed
	}
	return err
}

func (b *Backend) restore(ctx context.Context, handles []*sluicev1.KeyedStateHandle, r state.StateReader, cnt *restoreCount) error {
	var parts []part
	covered := make([]int, b.kgs.Len()) // 1 + index of the handle restoring the key group
	for i, h := range handles {
		if h == nil {
			continue
		}
		hr := keygroup.Range{Start: int(h.GetKeyGroupStart()), End: int(h.GetKeyGroupEnd())}
		if hr.Len() == 0 || hr.Start < 0 || hr.End >= b.maxP {
			return errorf("restore: handle %d has key-group range %v, invalid for max parallelism %d", i, hr, b.maxP)
		}
		in := hr.Intersect(b.kgs)
		if in.Len() == 0 {
			continue
		}
		for kg := in.Start; kg <= in.End; kg++ {
			if c := covered[kg-b.kgs.Start]; c != 0 {
				return errorf("restore: key group %d is covered by handles %d and %d", kg, c-1, i)
			}
			covered[kg-b.kgs.Start] = i + 1
		}
		if h.GetBackend() != Name && h.GetFile() == nil {
			return errorf("restore key groups %v: handle written by %q has no file this backend can read", hr, h.GetBackend())
		}
		parts = append(parts, part{i: i, h: h, hr: hr, in: in})
	}
	if len(parts) == 0 {
		return nil
	}
	base := -1
	for i, p := range parts {
		if p.rocks() && (base < 0 || p.in.Len() > parts[base].in.Len()) {
			base = i
		}
	}
	var (
		m   *snapshotMeta
		src *localSource
	)
	if base >= 0 {
		// Check the database's handle before dropping the empty database.
		var err error
		if m, err = b.readMeta(ctx, parts[base], r, cnt); err != nil {
			return err
		}
		if b.local != nil {
			var why string
			if src, why = b.findLocalCopy(parts[base], m); src == nil {
				cnt.fallback("%s", why)
			}
		}
	} else if b.local != nil {
		cnt.fallback("no RocksDB handle (the heap backend's format is read from the checkpoint storage)")
	}
	b.closeDB()
	dir := b.dbDir()
	if err := os.RemoveAll(dir); err != nil {
		return errorf("restore: %w", err)
	}
	var reuse map[string]sharedFile
	if base < 0 {
		if err := b.open(dir, nil, false, true); err != nil {
			return err
		}
	} else {
		p := parts[base]
		crcs, err := b.download(ctx, p, m, r, dir, src, cnt)
		if err != nil {
			return err
		}
		// A base of chunks (no shared names) is ingested into a new database.
		if err := b.open(dir, m.states, false, len(m.shared) == 0); err != nil {
			return err
		}
		if err := ingestDeltas(b.nat, b.columnByName, dir, m); err != nil {
			return errorf("restore key groups %v: %w", p.hr, err)
		}
		if err := b.clip(p.hr); err != nil {
			return err
		}
		if !b.cfg.NoClaim {
			reuse = map[string]sharedFile{}
			for i, name := range m.shared {
				if strings.HasSuffix(name, ".sst") {
					reuse[name] = sharedFile{f: p.h.GetSharedFiles()[i], crc: crcs[name], hasCRC: true}
				}
			}
		}
	}
	for i, p := range parts {
		if i == base {
			continue
		}
		if b.local != nil && base >= 0 {
			cnt.fallback("key groups %v of another handle are read from the checkpoint storage", p.in)
		}
		var err error
		if p.rocks() {
			err = b.merge(ctx, p, r, cnt)
		} else {
			err = b.importFull(ctx, p, r, cnt)
		}
		if err != nil {
			return err
		}
	}
	if err := b.timers.init(b); err != nil {
		return err
	}
	b.inc.restored(reuse)
	b.startTracking()
	b.dropStage()
	b.baseBytes = b.liveSSTSize()
	if src != nil && parts[base].hr == b.kgs && cnt.local.Load() > 0 {
		// The copy restored from is this backend's own: it stays as the confirmed one.
		b.local.restoredFrom(src.id)
	}
	return nil
}

// readMeta reads and checks the meta file of a RocksDB handle.
func (b *Backend) readMeta(ctx context.Context, p part, r state.StateReader, cnt *restoreCount) (*snapshotMeta, error) {
	h := p.h
	if len(h.GetPrivateFiles()) == 0 {
		return nil, errorf("restore key groups %v: %w: RocksDB handle without a meta file", p.hr, state.ErrCorrupt)
	}
	f := h.GetPrivateFiles()[0]
	var buf bytes.Buffer
	if err := fetch(ctx, f, r, &buf, &cnt.remote); err != nil {
		return nil, errorf("restore: %w", err)
	}
	label := state.FileLabel(f)
	m, err := decodeMeta(buf.Bytes(), label)
	if err != nil {
		return nil, errorf("restore: %w", err)
	}
	if m.maxP != b.maxP {
		return nil, errorf("restore: state file %s was written with max parallelism %d, the backend has %d (max parallelism is fixed for the life of keyed state)",
			label, m.maxP, b.maxP)
	}
	if m.kgs != p.hr {
		return nil, errorf("restore: state file %s: %w: it covers key groups %v, the handle says %v", label, state.ErrCorrupt, m.kgs, p.hr)
	}
	if shared := len(m.shared) + len(m.deltas) + len(m.staged); shared != len(h.GetSharedFiles()) || len(m.private) != len(h.GetPrivateFiles())-1 {
		return nil, errorf("restore: state file %s: %w: it names %d shared and %d private files, the handle has %d and %d",
			label, state.ErrCorrupt, shared, len(m.private), len(h.GetSharedFiles()), len(h.GetPrivateFiles())-1)
	}
	return m, nil
}

// download writes the files of p but its meta file m into dir, at most TransferThreads
// at a time, taking those it can from the local copy src (nil: none), and returns the
// CRC-32C of every file by local name.
func (b *Backend) download(ctx context.Context, p part, m *snapshotMeta, r state.StateReader, dir string, src *localSource, cnt *restoreCount) (map[string]uint32, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, errorf("restore: %w", err)
	}
	files := handleFiles(p.h, m)
	names := slices.Sorted(maps.Keys(files))
	crcs := make([]uint32, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.cfg.TransferThreads)
	for i, name := range names {
		f := files[name]
		path := filepath.Join(dir, name)
		g.Go(func() error {
			if src != nil {
				e, ok := src.files[name]
				if !ok {
					cnt.fallback("%s: not in the local copy", name)
				} else if err := restoreLocalFile(gctx, filepath.Join(src.dir, name), path, e); err != nil {
					if gctx.Err() != nil {
						return gctx.Err()
					}
					cnt.fallback("%s: %v", name, err)
				} else {
					crcs[i] = e.crc
					cnt.local.Add(e.size)
					return nil
				}
			}
			out, err := os.Create(path)
			if err != nil {
				return err
			}
			h := crc32.New(castagnoli)
			err = fetch(gctx, f, r, io.MultiWriter(out, h), &cnt.remote)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			crcs[i] = h.Sum32()
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, errorf("restore key groups %v: %w", p.hr, err)
	}
	if src != nil && cnt.local.Load() > 0 {
		cnt.localID = src.id
	}
	byName := make(map[string]uint32, len(names))
	for i, name := range names {
		byName[name] = crcs[i]
	}
	return byName, nil
}

// fetch copies f (inline or read through r) to w, verifying its size and SHA-256, and
// adds the bytes read through r to remote.
func fetch(ctx context.Context, f *sluicev1.StateFile, r state.StateReader, w io.Writer, remote *atomic.Int64) error {
	var src io.Reader
	switch so, ok := r.(state.StreamOpener); {
	case f.GetPath() == "":
		src = bytes.NewReader(f.GetInlineData())
	case r == nil:
		return fmt.Errorf("state file %s: no StateReader to open it", f.GetPath())
	case ok:
		rc, err := so.OpenStream(ctx, f)
		if err != nil {
			return err
		}
		defer rc.Close()
		src = rc
	default:
		fr, err := r.Open(ctx, f)
		if err != nil {
			return err
		}
		defer fr.Close()
		src = io.NewSectionReader(fr, 0, fr.Size())
	}
	if f.GetPath() != "" {
		src = countingReader{src, remote}
	}
	_, err := io.Copy(w, state.NewVerifyingReader(f, ctxReader{ctx, src}))
	return err
}

// countingReader adds the bytes read to n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// clip deletes the key groups of hr outside the backend's range.
func (b *Backend) clip(hr keygroup.Range) error {
	var ranges [][2][]byte
	if hr.Start < b.kgs.Start {
		ranges = append(ranges, [2][]byte{{}, keyGroupBound(b.kgs.Start, b.plen)})
	}
	if hr.End > b.kgs.End {
		ranges = append(ranges, [2][]byte{keyGroupBound(b.kgs.End+1, b.plen), keyGroupBound(b.maxP, b.plen)})
	}
	for _, c := range b.columns() {
		for _, rg := range ranges {
			if err := b.db.DeleteRangeCF(b.o.wo, c.h, rg[0], rg[1]); err != nil {
				return errorf("restore: clip column family %s to %v: %w", c.name, b.kgs, err)
			}
		}
	}
	return nil
}

// batch writes into the backend's database in chunks.
type batch struct {
	b  *Backend
	wb *grocksdb.WriteBatch
}

func (w *batch) put(c *column, k, v []byte) error {
	w.wb.PutCF(c.h, k, v)
	if w.wb.Count() >= 4096 {
		return w.flush()
	}
	return nil
}

func (w *batch) flush() error {
	if w.wb.Count() == 0 {
		return nil
	}
	err := w.b.db.Write(w.b.o.wo, w.wb)
	w.wb.Clear()
	if err != nil {
		return errorf("restore: write: %w", err)
	}
	return nil
}

// merge brings the key groups p.in of another RocksDB handle into the database by SST
// ingestion. The handle is downloaded into a temporary directory of the instance and
// opened read-only; for every column family, its keys of p.in are written into SST
// files (exportRange: RocksDB's SstFileWriter in a loop that runs in C++, no cgo call
// per key; list values are written merged), one per chunk of key groups of about
// exportChunkKeys keys, at most TransferThreads, written concurrently. They are then
// ingested, in one call per column family, into the column family of the same state
// (or timer domain), moved rather than copied: the directory is on the database's file
// system.
//
// Ingestion cannot reorder versions of a key: no key of an ingested file exists
// anywhere else in the column family. A key-group range is one byte range of keys
// (the key-group prefix comes first), restore refuses two handles with a key group in
// common, and the file holds only key groups of p.in: the database's handle holds other
// key groups (what it has beyond the backend's range is deleted by clip's range
// deletions, which lie outside that range too), and every other merged or imported
// handle others again. Were they to overlap, RocksDB would still keep the versions
// ordered, giving the file a sequence number newer than everything in the column
// family (and flushing an overlapping memtable first).
func (b *Backend) merge(ctx context.Context, p part, r state.StateReader, cnt *restoreCount) error {
	dir := filepath.Join(b.inst.dir, fmt.Sprintf("restore-%d", p.i))
	defer os.RemoveAll(dir)
	m, err := b.readMeta(ctx, p, r, cnt)
	if err != nil {
		return err
	}
	dbDir, sstDir := filepath.Join(dir, "db"), filepath.Join(dir, "ingest")
	if _, err := b.download(ctx, p, m, r, dbDir, nil, cnt); err != nil {
		return err
	}
	if err := os.MkdirAll(sstDir, 0o755); err != nil {
		return errorf("restore: %w", err)
	}
	names := []string{defaultColumn, eventColumn, processingColumn}
	targets := []*column{nil, b.timerCols[0], b.timerCols[1]}
	for _, s := range m.states {
		id, err := b.register(s.desc)
		if err != nil {
			return errorf("restore: %w", err)
		}
		names = append(names, s.column)
		targets = append(targets, b.states[id])
	}
	// Read-only, unless deltas are to be ingested first (into a new database when the
	// base is of chunks).
	db, hs, err := openDB(b.o, dbDir, names, len(m.deltas) == 0 && len(m.shared) > 0, len(m.shared) == 0)
	if err != nil {
		return err
	}
	defer func() {
		for _, h := range hs {
			h.Destroy()
		}
		db.Close()
	}()
	src := newNative(db, b.o.ro, b.o.wo)
	err = ingestDeltas(src, func(name string) (cfHandle, bool) {
		i := slices.Index(names, name)
		if i < 0 {
			return nil, false
		}
		return cfPtr(hs[i]), true
	}, dbDir, m)
	if err != nil {
		return errorf("restore key groups %v: %w", p.in, err)
	}
	// The files of each column family, by chunk of key groups; written concurrently,
	// at most TransferThreads at a time.
	type export struct {
		col    int // index in hs
		kgs    keygroup.Range
		opts   *grocksdb.Options
		path   string
		exists bool
	}
	var exports []*export
	for i, h := range hs {
		t := targets[i]
		if t == nil {
			continue // the default column family is empty
		}
		keys, _ := src.intProperty(cfPtr(h), "rocksdb.estimate-num-keys")
		for j, kgs := range splitRange(p.in, int(min(keys/exportChunkKeys+1, uint64(b.cfg.TransferThreads)))) {
			exports = append(exports, &export{col: i, kgs: kgs, opts: b.o.column(t.name), path: filepath.Join(sstDir, fmt.Sprintf("%d-%d.sst", i, j))})
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(b.cfg.TransferThreads)
	for _, e := range exports {
		g.Go(func() error {
			if err := gctx.Err(); err != nil {
				return err
			}
			lower, upper := keyGroupBound(e.kgs.Start, b.plen), keyGroupBound(e.kgs.End+1, b.plen)
			n, err := src.exportRange(cfPtr(hs[e.col]), lower, upper, e.opts, e.path)
			if err != nil {
				return errorf("restore: key groups %v of column family %s: write an SST file: %w", e.kgs, names[e.col], err)
			}
			e.exists = n > 0
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	ingest := grocksdb.NewDefaultIngestExternalFileOptions()
	defer ingest.Destroy()
	ingest.SetMoveFiles(true)
	for i := 0; i < len(exports); {
		col := exports[i].col
		var paths []string
		for ; i < len(exports) && exports[i].col == col; i++ {
			if exports[i].exists {
				paths = append(paths, exports[i].path)
			}
		}
		if len(paths) == 0 {
			continue
		}
		// One ingestion per column family: its files hold disjoint key ranges.
		if err := b.db.IngestExternalFileCF(targets[col].h, paths, ingest); err != nil {
			return errorf("restore: key groups %v of column family %s: ingest: %w", p.in, names[col], err)
		}
	}
	return nil
}

// exportChunkKeys is about the number of keys per SST file merge writes (by RocksDB's
// estimate of the column family's keys): larger column families are split by key
// groups into up to TransferThreads files written concurrently.
const exportChunkKeys = 64 << 10

// splitRange splits r into n (at most r.Len()) contiguous ranges of nearly equal
// length, in order.
func splitRange(r keygroup.Range, n int) []keygroup.Range {
	n = max(1, min(n, r.Len()))
	out := make([]keygroup.Range, 0, n)
	start := r.Start
	for i := range n {
		end := r.Start + (i+1)*r.Len()/n - 1
		out = append(out, keygroup.Range{Start: start, End: end})
		start = end + 1
	}
	return out
}

// importFull decodes a full-snapshot file (pkg/state/fullsnap, the heap backend's
// format) and writes the key groups p.in of it. The StateReader reads the whole file.
func (b *Backend) importFull(ctx context.Context, p part, r state.StateReader, cnt *restoreCount) error {
	h := p.h
	label := state.FileLabel(h.GetFile())
	if len(h.GetKeyGroupOffsets()) != p.hr.Len() {
		return errorf("restore: state file %s: %w: handle has %d key-group offsets for %d key groups",
			label, state.ErrCorrupt, len(h.GetKeyGroupOffsets()), p.hr.Len())
	}
	fr, err := state.OpenStateFile(ctx, h.GetFile(), r)
	if err != nil {
		return errorf("restore key groups %v: %w", p.in, err)
	}
	defer fr.Close()
	if h.GetFile().GetPath() != "" {
		cnt.remote.Add(fr.Size())
	}
	f, err := fullsnap.Open(fr, fr.Size())
	if err != nil {
		return errorf("restore: state file %s: %w", label, err)
	}
	if f.Header.MaxParallelism != b.maxP {
		return errorf("restore: state file %s was written with max parallelism %d, the backend has %d (max parallelism is fixed for the life of keyed state)",
			label, f.Header.MaxParallelism, b.maxP)
	}
	if f.Header.KeyGroups != p.hr {
		return errorf("restore: state file %s: %w: file covers key groups %v, handle says %v", label, state.ErrCorrupt, f.Header.KeyGroups, p.hr)
	}
	if err := f.CheckOffsets(h.GetKeyGroupOffsets()); err != nil {
		return errorf("restore: state file %s: %w", label, err)
	}
	v := &importer{b: b, w: &batch{b: b, wb: grocksdb.NewWriteBatch()}}
	defer v.w.wb.Destroy()
	for _, d := range f.Header.States {
		id, err := b.register(d)
		if err != nil {
			return errorf("restore: state file %s: %w", label, err)
		}
		v.cols = append(v.cols, b.states[id])
	}
	for kg := p.in.Start; kg <= p.in.End; kg++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		v.kg = kg
		if err := f.ReadKeyGroup(kg, v); err != nil {
			return errorf("restore: state file %s: %w", label, err)
		}
	}
	return v.w.flush()
}

// importer writes the records of a full-snapshot file.
type importer struct {
	b    *Backend
	w    *batch
	cols []*column
	kg   int
	k    []byte
}

func (v *importer) stateKey(key, ns []byte) []byte {
	v.k = appendKeyGroup(v.k[:0], v.kg, v.b.plen)
	v.k = binary.AppendUvarint(v.k, uint64(len(key)))
	v.k = append(v.k, key...)
	v.k = binary.AppendUvarint(v.k, uint64(len(ns)))
	return append(v.k, ns...)
}

func (v *importer) Value(st int, key, ns, val []byte) error {
	return v.w.put(v.cols[st], v.stateKey(key, ns), val)
}

func (v *importer) List(st int, key, ns, list []byte) error {
	return v.w.put(v.cols[st], v.stateKey(key, ns), list)
}

func (v *importer) MapEntry(st int, key, ns, uk, uv []byte) error {
	return v.w.put(v.cols[st], append(v.stateKey(key, ns), uk...), uv)
}

func (v *importer) Timer(d state.TimeDomain, ts int64, key, ns []byte) error {
	c := v.b.timerCols[0]
	if d == state.ProcessingTime {
		c = v.b.timerCols[1]
	}
	v.k = appendTimerID(appendKeyGroup(v.k[:0], v.kg, v.b.plen), ts, key, ns)
	return v.w.put(c, v.k, nil)
}
