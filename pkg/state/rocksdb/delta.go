//go:build cgo

package rocksdb

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sync/errgroup"

	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Deltas (incremental mode, unless Config.DisableDeltas) keep what a checkpoint uploads
// close to what changed, whatever compaction does. A base is an incremental snapshot
// as without deltas: a native checkpoint whose SST files not yet uploaded are uploaded
// (with MANIFEST and CURRENT as shared files too). A delta snapshot takes no native
// checkpoint: its synchronous phase writes, for each column family, the current value
// of every key written since the latest confirmed checkpoint (a Delete where the key is
// gone) into one SST file, and its asynchronous phase uploads these files only; its
// handle references the base's files and the deltas since it, which a restore ingests
// in order after opening the base. Compaction output is uploaded only by the next base.
//
// The backend takes a base when it must (no confirmed snapshot to build on, a forced
// full snapshot, a restore, a state registered or changes not tracked since the
// confirmed one, maxDeltas deltas) and when the deltas since the confirmed base hold
// Config.DeltaRatio times what a base would upload now: the live SST files that no
// confirmed snapshot uploaded plus the memtables. Each base then costs at most 1/ratio
// of the deltas before it, so uploads stay within about 1 + 1/ratio of the delta bytes,
// and a restore reads the base plus at most ratio times what changed in it since.

const (
	// maxDeltas bounds the deltas on one base (each is one ingestion on restore).
	maxDeltas = 256
	// maxDirtyBytes bounds the memory of the keys tracked per backend between two
	// checkpoints; beyond it tracking stops and the next snapshot is a base, which
	// then costs about what a delta would (most of the state changed).
	maxDirtyBytes = 64 << 20
	// dirtyEntryOverhead is about what a map entry costs beyond its key's bytes.
	dirtyEntryOverhead = 48
)

// dirtySet is the keys written in one checkpoint interval, by column family name;
// complete is false when some change of the interval is not in it.
type dirtySet struct {
	cols     map[string]map[string]struct{}
	complete bool
}

// deltaPlan is what a delta snapshot builds on: the confirmed record and the dirty sets
// of every interval after it (the current one included).
type deltaPlan struct {
	rec  *chainRecord
	sets []*dirtySet
}

// deltasOn says whether snapshots may be deltas.
func (b *Backend) deltasOn() bool { return b.cfg.Incremental && !b.cfg.DisableDeltas }

// touch records that key k of column family c was written; the hot path. Keys are
// tracked only with deltas on (c.dirty is nil otherwise, or after an overflow).
func (b *Backend) touch(c *column, k []byte) {
	if c.dirty == nil {
		return
	}
	if _, ok := c.dirty[string(k)]; ok {
		return
	}
	c.dirty[string(k)] = struct{}{}
	b.dirtyBytes += len(k) + dirtyEntryOverhead
	if b.dirtyBytes > maxDirtyBytes {
		b.stopTracking()
	}
}

// startTracking starts a new interval with empty dirty sets.
func (b *Backend) startTracking() {
	b.dirtyBytes, b.dirtyUnknown = 0, false
	on := b.deltasOn()
	for _, c := range b.columns() {
		c.dirty = nil
		if on {
			c.dirty = map[string]struct{}{}
		}
	}
}

// stopTracking gives up tracking this interval: the next snapshot is a base.
func (b *Backend) stopTracking() {
	for _, c := range b.columns() {
		c.dirty = nil
	}
	b.dirtyBytes, b.dirtyUnknown = 0, true
}

// newColumnTracked sets up tracking for a column family created now: the snapshots
// on earlier bases know nothing of it, so the interval needs a base.
func (b *Backend) newColumnTracked(c *column) {
	if b.deltasOn() && !b.dirtyUnknown {
		c.dirty = map[string]struct{}{}
		b.dirtyUnknown = true
	}
}

// takeDirty ends the current interval and returns its dirty set.
func (b *Backend) takeDirty() *dirtySet {
	d := &dirtySet{cols: map[string]map[string]struct{}{}, complete: !b.dirtyUnknown}
	for _, c := range b.columns() {
		if len(c.dirty) > 0 {
			d.cols[c.name] = c.dirty
		}
	}
	if !d.complete {
		d.cols = nil
	}
	b.startTracking()
	return d
}

// planDelta records the dirty set of checkpoint id's interval and returns what a delta
// snapshot of id would build on, or nil when it must be a base.
func (i *incremental) planDelta(id int64, cur *dirtySet) *deltaPlan {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.dirty == nil {
		i.dirty = map[int64]*dirtySet{}
	}
	i.dirty[id] = cur
	for len(i.dirty) > maxPending {
		oldest := slices.Min(slices.Collect(maps.Keys(i.dirty)))
		delete(i.dirty, oldest)
		i.dirtyLost = max(i.dirtyLost, oldest)
	}
	rec := i.confirmed
	if i.forceFull || rec == nil || !rec.extendable || len(rec.deltas) >= maxDeltas || i.dirtyLost > i.confirmedID {
		return nil
	}
	p := &deltaPlan{rec: rec}
	for c, d := range i.dirty {
		if c <= i.confirmedID {
			continue
		}
		if !d.complete {
			return nil
		}
		p.sets = append(p.sets, d)
	}
	return p
}

// rebaseCost is about what a base snapshot would upload now on top of rec: the live SST
// files rec cannot reference, and the memtables (a native checkpoint flushes them).
func (b *Backend) rebaseCost(rec *chainRecord) int64 {
	var n int64
	for _, f := range b.db.GetLiveFilesMetaData() {
		name := filepath.Base(f.Name)
		if r, ok := rec.reuse[name]; ok && r.f.GetSize() == f.Size {
			continue
		}
		n += f.Size
	}
	for _, c := range b.columns() {
		v, _ := b.nat.intProperty(c.c, "rocksdb.cur-size-all-mem-tables")
		n += int64(v)
	}
	return n
}

// deltaWorthIt says whether a delta on rec is worth it rather than a base: while the
// deltas since the base hold less than DeltaRatio times what a base would upload.
func (b *Backend) deltaWorthIt(rec *chainRecord) bool {
	ratio := b.cfg.DeltaRatio
	if ratio <= 0 {
		ratio = DefaultDeltaRatio
	}
	return float64(rec.deltaBytes) < ratio*float64(b.rebaseCost(rec))
}

// deltaSnapshot is the synchronous phase of a delta snapshot: the delta files, written
// into the local recovery copy's directory when the confirmed checkpoint has a copy to
// build on, else into a directory of the instance.
func (b *Backend) deltaSnapshot(id int64, plan *deltaPlan) (state.AsyncSnapshot, error) {
	keys := map[string][]string{}
	for _, c := range b.columns() {
		union := map[string]struct{}{}
		for _, d := range plan.sets {
			for k := range d.cols[c.name] {
				union[k] = struct{}{}
			}
		}
		if len(union) > 0 {
			ks := make([]string, 0, len(union))
			for k := range union {
				ks = append(ks, k)
			}
			slices.Sort(ks)
			keys[c.name] = ks
		}
	}
	var (
		dir   string
		local *localCopies
	)
	if b.local != nil && b.local.hasCopy(plan.rec.id) {
		if d, ok := b.local.begin(id); ok {
			if err := os.MkdirAll(d, 0o755); err != nil {
				b.local.failed(id, "create the directory", err)
			} else {
				dir, local = d, b.local
			}
		}
	}
	if dir == "" {
		b.seq++
		dir = filepath.Join(b.inst.dir, fmt.Sprintf("snap-%d", b.seq))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, errorf("snapshot %d: %w", id, err)
		}
	}
	fail := func(err error) (state.AsyncSnapshot, error) {
		if local != nil {
			local.failed(id, "write the delta", err)
		} else {
			os.RemoveAll(dir)
		}
		return nil, errorf("snapshot %d: delta: %w", id, err)
	}
	var (
		files []localFile
		cols  []string
	)
	for _, c := range b.columns() {
		ks := keys[c.name]
		if len(ks) == 0 {
			continue
		}
		name := fmt.Sprintf("delta-%d-%s.sst", id, c.name)
		path := filepath.Join(dir, name)
		if _, err := b.nat.writeDelta(c.c, ks, b.o.column(c.name), path); err != nil {
			return fail(fmt.Errorf("column family %s: %w", c.name, err))
		}
		info, err := os.Stat(path)
		if err != nil {
			return fail(err)
		}
		files = append(files, localFile{name: name, size: info.Size(), sst: true})
		cols = append(cols, c.name)
	}
	s := b.newSnapshot(id, dir, files, false)
	s.incremental, s.local, s.delta, s.deltaCols = true, local, plan, cols
	return s, nil
}

// runDelta is the asynchronous phase of a delta snapshot: it uploads the new delta
// files as shared files and returns the handle of the base, the earlier deltas and
// these.
func (s *snapshot) runDelta(ctx context.Context, w state.StateWriter) (*sluicev1.KeyedStateHandle, error) {
	rec := s.delta.rec
	out := make([]*sluicev1.StateFile, len(s.files))
	crcs := make([]uint32, len(s.files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.transfer)
	for i, f := range s.files {
		g.Go(func() (err error) {
			out[i], crcs[i], err = s.upload(gctx, w, f, true)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, errorf("snapshot %d: %w", s.id, err)
	}
	next := &chainRecord{
		id: s.id, reuse: rec.reuse, base: rec.base, states: rec.states, extendable: true,
		deltas: slices.Clip(rec.deltas), deltaBytes: rec.deltaBytes,
	}
	for i, f := range s.files {
		next.deltas = append(next.deltas, deltaFile{column: s.deltaCols[i], namedFile: namedFile{name: f.name, sf: sharedFile{f: out[i], crc: crcs[i], hasCRC: true}}})
		next.deltaBytes += out[i].GetSize()
	}
	m := &snapshotMeta{maxP: s.maxP, kgs: s.kgs, states: rec.states}
	h := &sluicev1.KeyedStateHandle{KeyGroupStart: int32(s.kgs.Start), KeyGroupEnd: int32(s.kgs.End), Backend: Name}
	for _, f := range rec.base {
		m.shared = append(m.shared, f.name)
		h.SharedFiles = append(h.SharedFiles, f.sf.f)
	}
	for _, d := range next.deltas {
		m.deltas = append(m.deltas, metaDelta{column: d.column, name: d.name})
		h.SharedFiles = append(h.SharedFiles, d.sf.f)
	}
	metaFile, err := s.writeBytes(ctx, w, s.opts.FileName(s.id, "rocksdb.meta"), m.encode())
	if err != nil {
		return nil, errorf("snapshot %d: %w", s.id, err)
	}
	h.PrivateFiles = []*sluicev1.StateFile{metaFile}
	h.IncrementalSize, h.FullSize = metaFile.GetSize(), metaFile.GetSize()
	for _, f := range h.SharedFiles {
		h.FullSize += f.GetSize()
	}
	for _, f := range out {
		h.IncrementalSize += f.GetSize()
	}
	s.inc.uploaded(s.id, next)
	if s.local != nil {
		s.keepLocalDelta(ctx, h, next)
	}
	return h, nil
}

// keepLocalDelta completes the local recovery copy of delta snapshot h: the files of
// the confirmed copy it builds on (base and earlier deltas) are hard-linked next to the
// new deltas, and the manifest written. A failure is logged (the copy is then removed).
func (s *snapshot) keepLocalDelta(ctx context.Context, h *sluicev1.KeyedStateHandle, rec *chainRecord) {
	from := s.local.chkDir(s.delta.rec.id)
	m := &localManifest{checkpointID: s.id, maxP: s.maxP, kgs: s.kgs, metaSHA256: h.GetPrivateFiles()[0].GetSha256()}
	files := append(slices.Clone(rec.base), make([]namedFile, 0, len(rec.deltas))...)
	for _, d := range rec.deltas {
		files = append(files, d.namedFile)
	}
	written := map[string]bool{}
	for _, f := range s.files {
		written[f.name] = true
	}
	for _, f := range files {
		path := filepath.Join(s.dir, f.name)
		if !written[f.name] {
			if err := os.Link(filepath.Join(from, f.name), path); err != nil {
				s.local.failed(s.id, "link the files of checkpoint "+fmt.Sprint(s.delta.rec.id), err)
				return
			}
		}
		crc := f.sf.crc
		if !f.sf.hasCRC {
			c, n, err := fileCRC(ctx, path)
			if err == nil && n != f.sf.f.GetSize() {
				err = fmt.Errorf("%s has %d bytes, the checkpoint %d", f.name, n, f.sf.f.GetSize())
			}
			if err != nil {
				s.local.failed(s.id, "check the files of the local copy", err)
				return
			}
			crc = c
		}
		m.files = append(m.files, manifestFile{name: f.name, size: f.sf.f.GetSize(), sha256: f.sf.f.GetSha256(), crc: crc})
	}
	if err := writeLocalManifest(s.dir, m); err != nil {
		s.local.failed(s.id, "write the manifest", err)
		return
	}
	s.mu.Lock()
	s.kept = true
	s.mu.Unlock()
}

// ingestDeltas ingests the deltas of meta file m, downloaded into dir, in order, into
// the column families col finds (by name) of the database n.
func ingestDeltas(n native, col func(name string) (cfHandle, bool), dir string, m *snapshotMeta) error {
	for _, d := range m.deltas {
		cf, ok := col(d.column)
		if !ok {
			return fmt.Errorf("%w: delta %s is for column family %s, which the snapshot does not have", state.ErrCorrupt, d.name, d.column)
		}
		if err := n.ingestFile(cf, filepath.Join(dir, d.name)); err != nil {
			return fmt.Errorf("ingest delta %s: %w", d.name, err)
		}
	}
	return nil
}
