//go:build cgo

package rocksdb

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Deltas (incremental mode, unless Config.DisableDeltas) keep what a checkpoint uploads
// close to what changed, whatever compaction does. A native base is an incremental
// snapshot as without deltas: a native checkpoint whose SST files not yet uploaded are
// uploaded (with MANIFEST and CURRENT as shared files too). A delta snapshot takes no
// native checkpoint: its synchronous phase writes, for each column family, the current
// value of every key written since the latest confirmed checkpoint (a Delete where the
// key is gone) into one SST file, and its asynchronous phase uploads these files; its
// handle references the base's files and the deltas since it, which a restore
// ingests in order after opening the base. Compaction output is never uploaded.
//
// Deltas pile up, so each delta snapshot also writes and uploads a share of the next
// base (a stage), Config.BaseShare of its deltas' bytes: every column family's
// entries, in key order, exported into SST files ("chunks") from the database as it is
// at that synchronous phase, resuming where the previous chunk ended. Once every chunk
// is written and confirmed uploaded, the next delta snapshot switches: its base is the
// chunks, ingested into an empty database, followed by the deltas since the stage
// started (ingesting a delta after a chunk exported later only rewrites a key with a
// value that a later delta rewrites again, since every change after the start is in a
// delta after it), and a new stage starts. Every checkpoint then uploads about
// 1 + BaseShare times its delta, and a restore reads the base plus at most the deltas
// of two stages (about 2/BaseShare times the state). Until then the chunks are staged
// files of the handles: referenced, so that they are kept, but not restored.
//
// A native base is taken when it must: no confirmed snapshot to build on, a forced full
// snapshot, a restore, a state registered or changes not tracked (more than
// maxDirtyBytes of keys) since the confirmed one, or maxDeltas deltas.

const (
	// maxDeltas bounds the deltas (chunks included) of a handle: each is one ingestion
	// on restore.
	maxDeltas = 1024
	// maxDirtyBytes bounds the memory of the keys tracked per backend between two
	// checkpoints; beyond it tracking stops and the next snapshot is a native base,
	// which then costs about what a delta would (most of the state changed).
	maxDirtyBytes = 64 << 20
	// dirtyEntryOverhead is about what a map entry costs beyond its key's bytes.
	dirtyEntryOverhead = 48
	// A chunk is written of at most maxChunk bytes.
	maxChunk = 64 << 20
)

// A chunk is written once the stage's credit reaches three delta snapshots' share (by
// a moving average of their bytes), at least minChunk: small enough that no ten
// checkpoints upload much more than their share, large enough to keep the chunks few.
// A variable for tests.
var minChunk float64 = 64 << 10

// stage is the next base being written: chunks of the column families cols, in order,
// exported a share per delta snapshot. The task goroutine writes it; the asynchronous
// phases read the chunk files in dir, which is removed once the stage is dropped and
// no snapshot references it.
type stage struct {
	start  int64 // the checkpoint whose synchronous phase started it
	dir    string
	cols   []string
	col    int    // the column family being exported
	next   []byte // where its export resumes; nil: at its start
	done   bool
	chunks []chunkFile
	credit float64 // bytes it may export now

	mu      sync.Mutex
	refs    int
	dropped bool
}

// chunkFile is a chunk's local file (its name: metaDelta.name).
type chunkFile struct {
	metaDelta
	size int64
}

func (st *stage) acquire() {
	st.mu.Lock()
	st.refs++
	st.mu.Unlock()
}

func (st *stage) release() {
	st.mu.Lock()
	st.refs--
	rm := st.dropped && st.refs == 0
	st.mu.Unlock()
	if rm {
		os.RemoveAll(st.dir)
	}
}

// dropStage forgets the stage; its files go once no snapshot uses them.
func (b *Backend) dropStage() {
	st := b.stage
	if st == nil {
		return
	}
	b.stage = nil
	st.mu.Lock()
	st.dropped = true
	rm := st.refs == 0
	st.mu.Unlock()
	if rm {
		os.RemoveAll(st.dir)
	}
}

// newStage starts a stage at checkpoint id.
func (b *Backend) newStage(id int64) (*stage, error) {
	st := &stage{start: id, dir: filepath.Join(b.inst.dir, fmt.Sprintf("stage-%d", id))}
	for _, c := range b.columns() {
		st.cols = append(st.cols, c.name)
	}
	if err := os.RemoveAll(st.dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(st.dir, 0o755); err != nil {
		return nil, err
	}
	return st, nil
}

// export writes chunks while the stage has credit for one of at least least bytes.
func (b *Backend) export(st *stage, least float64) error {
	least = min(max(least, minChunk), maxChunk)
	for !st.done && st.credit >= least {
		col := st.cols[st.col]
		cf, ok := b.columnByName(col)
		if !ok {
			return fmt.Errorf("stage %d: column family %s is gone", st.start, col)
		}
		md := metaDelta{column: col, ckpt: st.start, chunk: true, seq: len(st.chunks)}
		path := filepath.Join(st.dir, md.name())
		n, next, err := b.nat.exportChunk(cf, st.next, int64(min(st.credit, maxChunk)), b.o.column(col), path)
		if err != nil {
			return fmt.Errorf("stage %d: column family %s: %w", st.start, col, err)
		}
		if n > 0 {
			info, err := os.Stat(path)
			if err != nil {
				return err
			}
			st.chunks = append(st.chunks, chunkFile{metaDelta: md, size: info.Size()})
			st.credit -= float64(info.Size())
		}
		if st.next = next; next == nil {
			if st.col++; st.col == len(st.cols) {
				st.done = true
			}
		}
	}
	return nil
}

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

// deltaSnapshot is the synchronous phase of a delta snapshot: the delta files, written
// into the local recovery copy's directory when the confirmed checkpoint has a copy to
// build on, else into a directory of the instance; then the stage's share (a new stage
// when there is none, or when the confirmed checkpoint switched to the current one), or
// the switch to the stage when every chunk is written and confirmed.
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
			keys[c.name] = slices.Sorted(maps.Keys(union))
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
		bytes int64
	)
	for _, c := range b.columns() {
		ks := keys[c.name]
		if len(ks) == 0 {
			continue
		}
		name := metaDelta{column: c.name, ckpt: id}.name()
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
		bytes += info.Size()
	}

	rec := plan.rec
	if st := b.stage; st != nil && rec.switched && rec.stage == st {
		b.dropStage() // the confirmed checkpoint's base is this stage: done with it
	}
	var confirmed []deltaFile // chunks of the stage that the confirmed checkpoint references
	if b.stage != nil && rec.stage == b.stage && !rec.switched {
		confirmed = rec.staged
	}
	st := b.stage
	switchNow := st != nil && st.done && len(confirmed) == len(st.chunks)
	if !switchNow {
		if st == nil {
			var err error
			if st, err = b.newStage(id); err != nil {
				return fail(err)
			}
			b.stage = st
		}
		share := b.cfg.BaseShare
		if share <= 0 {
			share = DefaultBaseShare
		}
		if b.deltaAvg == 0 {
			b.deltaAvg = float64(bytes)
		}
		b.deltaAvg = 0.8*b.deltaAvg + 0.2*float64(bytes)
		st.credit += share * float64(bytes)
		if err := b.export(st, 3*share*b.deltaAvg); err != nil {
			b.dropStage()
			return fail(err)
		}
	}
	s := b.newSnapshot(id, dir, files, false)
	s.incremental, s.local, s.delta, s.deltaCols = true, local, plan, cols
	s.stage, s.switchStage, s.staged = st, switchNow, confirmed
	st.acquire()
	if !switchNow {
		have := map[int]bool{}
		for _, c := range confirmed {
			have[c.seq] = true
		}
		for _, c := range st.chunks {
			if !have[c.seq] {
				s.chunks = append(s.chunks, c)
			}
		}
	}
	return s, nil
}

// runDelta is the asynchronous phase of a delta snapshot: it uploads the new delta
// files and the stage's chunks not yet confirmed uploaded, as shared files, and returns
// the handle: the base, the deltas since it and these, and the staged chunks; or, on a
// switch, the stage's chunks, the deltas since it started and these.
func (s *snapshot) runDelta(ctx context.Context, w state.StateWriter) (*sluicev1.KeyedStateHandle, error) {
	rec := s.delta.rec
	out := make([]*sluicev1.StateFile, len(s.files))
	crcs := make([]uint32, len(s.files))
	chunks := make([]deltaFile, len(s.chunks))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.transfer)
	for i, f := range s.files {
		g.Go(func() (err error) {
			out[i], crcs[i], err = s.upload(gctx, s.dir, w, f, true)
			return err
		})
	}
	for i, c := range s.chunks {
		g.Go(func() error {
			sf, crc, err := s.upload(gctx, s.stage.dir, w, localFile{name: c.name(), size: c.size, sst: true}, true)
			chunks[i] = deltaFile{metaDelta: c.metaDelta, sf: sharedFile{f: sf, crc: crc, hasCRC: true}}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, errorf("snapshot %d: %w", s.id, err)
	}
	next := &chainRecord{id: s.id, states: rec.states, extendable: true, stage: s.stage}
	if s.switchStage {
		next.switched = true
		next.deltas = slices.Clone(s.staged)
		for _, d := range rec.deltas {
			if d.ckpt > s.stage.start {
				next.deltas = append(next.deltas, d)
			}
		}
	} else {
		next.reuse, next.base = rec.reuse, rec.base
		next.deltas = slices.Clone(rec.deltas)
		next.staged = append(slices.Clone(s.staged), chunks...)
	}
	for i := range s.files {
		next.deltas = append(next.deltas, deltaFile{metaDelta: metaDelta{column: s.deltaCols[i], ckpt: s.id}, sf: sharedFile{f: out[i], crc: crcs[i], hasCRC: true}})
	}
	m := &snapshotMeta{maxP: s.maxP, kgs: s.kgs, states: rec.states}
	h := &sluicev1.KeyedStateHandle{KeyGroupStart: int32(s.kgs.Start), KeyGroupEnd: int32(s.kgs.End), Backend: Name}
	for _, f := range next.base {
		m.shared = append(m.shared, f.name)
		h.SharedFiles = append(h.SharedFiles, f.sf.f)
	}
	for _, d := range next.deltas {
		m.deltas = append(m.deltas, d.metaDelta)
		h.SharedFiles = append(h.SharedFiles, d.sf.f)
		next.deltaBytes += d.sf.f.GetSize()
	}
	for _, c := range next.staged {
		m.staged = append(m.staged, c.metaDelta)
		h.SharedFiles = append(h.SharedFiles, c.sf.f)
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
	for _, c := range chunks {
		h.IncrementalSize += c.sf.f.GetSize()
	}
	s.inc.uploaded(s.id, next)
	if s.local != nil {
		s.keepLocalDelta(ctx, h, next)
	}
	return h, nil
}

// keepLocalDelta completes the local recovery copy of delta snapshot h (record rec):
// next to the new deltas it hard-links the other files a restore needs, from the
// confirmed copy it builds on or, for a switch, the stage's chunks from the stage's
// directory, and writes the manifest. A failure is logged (the copy is then removed).
func (s *snapshot) keepLocalDelta(ctx context.Context, h *sluicev1.KeyedStateHandle, rec *chainRecord) {
	from := s.local.chkDir(s.delta.rec.id)
	m := &localManifest{checkpointID: s.id, maxP: s.maxP, kgs: s.kgs, metaSHA256: h.GetPrivateFiles()[0].GetSha256()}
	files := slices.Clone(rec.base)
	for _, d := range rec.deltas {
		files = append(files, d.named())
	}
	written, chunks := map[string]bool{}, map[string]bool{}
	for _, f := range s.files {
		written[f.name] = true
	}
	if s.switchStage {
		for _, c := range s.staged {
			chunks[c.name()] = true
		}
	}
	for _, f := range files {
		path := filepath.Join(s.dir, f.name)
		if !written[f.name] {
			src := filepath.Join(from, f.name)
			if chunks[f.name] {
				src = filepath.Join(s.stage.dir, f.name)
			}
			if err := os.Link(src, path); err != nil {
				s.local.failed(s.id, "link the files it shares with checkpoint "+fmt.Sprint(s.delta.rec.id), err)
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
// the column families col finds (by name) of the database n. Consecutive chunks of a
// column family (disjoint key ranges, in key order) are ingested together.
func ingestDeltas(n native, col func(name string) (cfHandle, bool), dir string, m *snapshotMeta) error {
	for i := 0; i < len(m.deltas); {
		d := m.deltas[i]
		cf, ok := col(d.column)
		if !ok {
			return fmt.Errorf("%w: %s is for column family %s, which the snapshot does not have", state.ErrCorrupt, d.name(), d.column)
		}
		paths := []string{filepath.Join(dir, d.name())}
		for i++; d.chunk && i < len(m.deltas) && m.deltas[i].chunk && m.deltas[i].column == d.column && m.deltas[i].ckpt == d.ckpt; i++ {
			paths = append(paths, filepath.Join(dir, m.deltas[i].name()))
		}
		if err := n.ingestFiles(cf, paths); err != nil {
			return fmt.Errorf("ingest %s (%d files): %w", d.name(), len(paths), err)
		}
	}
	return nil
}
