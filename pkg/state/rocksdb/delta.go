//go:build cgo

package rocksdb

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/linxGnu/grocksdb"
	"golang.org/x/sync/errgroup"

	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Deltas (incremental mode, unless Config.DisableDeltas) keep what a checkpoint uploads
// close to what changed, whatever compaction does. A native base is an incremental
// snapshot as without deltas: a native checkpoint whose SST files not yet uploaded are
// uploaded (with MANIFEST and CURRENT as shared files too). A delta snapshot takes no
// native checkpoint: the backend records every write, key and value (dirtyKeys), and
// the synchronous phase ends the interval; the asynchronous phase writes, for each
// column family, the latest write of every key since the latest confirmed checkpoint
// (a Delete where the key is gone) into one SST file, from those records alone, and
// uploads these files; its handle references the base's files and the deltas since
// it, which a restore ingests in order after opening the base. Compaction output is
// never uploaded.
//
// Deltas pile up, so each delta snapshot also writes and uploads a share of the next
// base (a stage), Config.BaseShare of the bytes of the keys and latest values its
// interval changed: every column family's entries, in key order, exported into SST
// files ("chunks") from the database as it is at that synchronous phase, resuming where
// the previous chunk ended. Once every chunk is written and confirmed uploaded, the
// next delta snapshot switches: its base is the chunks, ingested into an empty
// database, followed by the deltas since the stage started (ingesting a delta after a
// chunk exported later only rewrites a key with a value that a later delta rewrites
// again, since every change after the start is in a delta after it), and a new stage
// starts. Every checkpoint then uploads about 1 + BaseShare times its delta, and a
// restore reads the base plus at most the deltas of two stages (about 2/BaseShare
// times the state). Until then the chunks are staged files of the handles: referenced,
// so that they are kept, but not restored.
//
// So that a stage ends before maxDeltas deltas pile up, a delta snapshot adds at least
// 4/maxDeltas of the state's size (its latest stage's chunks, or the SST files right
// after the latest native base flushed the memtables) to the stage's credit: with very
// few changes per checkpoint, a checkpoint uploads that rather than its share.
//
// A native base is taken when it must: no confirmed snapshot to build on, a forced full
// snapshot, a restore, a state registered or changes not tracked (more than
// maxDirtyBytes of keys and values) since the confirmed one, or maxDeltas deltas.

const (
	// maxDeltas bounds the deltas of a handle, chunks aside: what a restore reads and
	// ingests.
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

// A delta snapshot writes its share as one chunk, or, when the stage's credit is below
// minChunk, leaves it for a later one: small deltas do not make tiny chunks. A variable
// for tests.
var minChunk float64 = 64 << 10

// stage is the next base being written: chunks of the column families cols, in order,
// exported a share per delta snapshot. The task goroutine writes it; the asynchronous
// phases read the chunk files in files.dir, which is removed once the backend dropped
// the stage (its own reference) and no snapshot holds one.
type stage struct {
	start  int64 // the checkpoint whose synchronous phase started it
	files  *instance
	cols   []string
	col    int    // the column family being exported
	next   []byte // where its export resumes; nil: at its start
	done   bool
	chunks []chunkFile
	credit float64 // bytes it may export now
}

// chunkFile is a chunk's local file (its name: metaDelta.name).
type chunkFile struct {
	metaDelta
	size int64
}

// dropStage forgets the stage; its files go once no snapshot uses them.
func (b *Backend) dropStage() {
	if st := b.stage; st != nil {
		b.stage = nil
		st.files.release()
	}
}

// newStage starts a stage at checkpoint id.
func (b *Backend) newStage(id int64) (*stage, error) {
	st := &stage{start: id, files: &instance{dir: filepath.Join(b.inst.dir, fmt.Sprintf("stage-%d", id)), refs: 1}}
	for _, c := range b.columns() {
		st.cols = append(st.cols, c.name)
	}
	if err := os.RemoveAll(st.files.dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(st.files.dir, 0o755); err != nil {
		return nil, err
	}
	return st, nil
}

// liveSSTSize is the size of the SST files of the current version (overwritten and
// deleted entries not yet compacted away included).
func (b *Backend) liveSSTSize() int64 {
	var n uint64
	for _, c := range b.columns() {
		v, _ := b.nat.intProperty(c.c, "rocksdb.live-sst-files-size")
		n += v
	}
	return int64(n)
}

// export writes chunks while the stage has credit for one.
func (b *Backend) export(st *stage) error {
	for !st.done && st.credit >= minChunk {
		col := st.cols[st.col]
		cf, ok := b.columnByName(col)
		if !ok {
			return fmt.Errorf("stage %d: column family %s is gone", st.start, col)
		}
		md := metaDelta{column: col, ckpt: st.start, chunk: true, seq: len(st.chunks)}
		path := filepath.Join(st.files.dir, md.name())
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

// dirtySet is what was written in one checkpoint interval, by column family name and
// key; complete is false when some change of the interval is not in it. bytes counts
// the keys and values. Handed over at the interval's end, it is never modified again.
type dirtySet struct {
	cols     map[string]*dirtyKeys
	complete bool
	bytes    int64 // keys and values
}

// dirtyKeys is the last write of each key of a column family in an interval: a value,
// a deletion, or a merge (a list append), whose value is read at the interval's end.
// The values live in one arena, so that tracking allocates nothing per write but the
// key's string the first time, and the collector has no per-key object to scan.
type dirtyKeys struct {
	idx    map[string]int32
	ents   []dirtyEntry
	arena  []byte
	merged bool // some entry was a merge once: its value may have to be read
}

type dirtyEntry struct {
	off, n uint32 // the value: arena[off:off+n]
	kind   uint8
}

func newDirtyKeys() *dirtyKeys { return &dirtyKeys{idx: map[string]int32{}} }

// value is entry i's value.
func (d *dirtyKeys) value(i int32) []byte {
	e := d.ents[i]
	return d.arena[e.off : e.off+e.n]
}

// set records v (nil for a deletion or a merge) as key k's write. It returns the bytes
// of memory it added, and by how much it changed the bytes of the keys and latest
// values (what a delta holds).
func (d *dirtyKeys) set(k, v []byte, kind uint8) (mem, data int) {
	i, ok := d.idx[string(k)]
	if !ok {
		i = int32(len(d.ents))
		d.idx[string(k)] = i
		d.ents = append(d.ents, dirtyEntry{})
		mem, data = len(k)+dirtyEntryOverhead, len(k)
	}
	e := &d.ents[i]
	data += len(v) - int(e.n)
	if uint32(len(v)) <= e.n { // in place: a counter's update, say
		copy(d.arena[e.off:], v)
	} else {
		e.off = uint32(len(d.arena))
		d.arena = append(d.arena, v...)
		mem += len(v)
	}
	e.n, e.kind = uint32(len(v)), kind
	d.merged = d.merged || kind == dirtyMerge
	return mem, data
}

const (
	dirtyPut = iota
	dirtyDelete
	dirtyMerge
)

// deltaPlan is what a delta snapshot builds on: the confirmed record and the dirty sets
// of every interval after it (the current one included), oldest first.
type deltaPlan struct {
	rec  *chainRecord
	sets []*dirtySet
}

// deltasOn says whether snapshots may be deltas.
func (b *Backend) deltasOn() bool { return b.cfg.Incremental && !b.cfg.DisableDeltas }

// trackPut, trackDelete and trackMerge record a write of key k of column family c; the
// hot path. Keys are tracked only with deltas on (c.dirty is nil otherwise, or after
// an overflow). A key already written in the interval costs a map lookup and a copy of
// the value into its entry's buffer; a new one allocates its entry.
func (b *Backend) trackPut(c *column, k, v []byte) { b.track(c, k, v, dirtyPut) }
func (b *Backend) trackDelete(c *column, k []byte) { b.track(c, k, nil, dirtyDelete) }
func (b *Backend) trackMerge(c *column, k []byte)  { b.track(c, k, nil, dirtyMerge) }

func (b *Backend) track(c *column, k, v []byte, kind uint8) {
	if c.dirty == nil {
		return
	}
	mem, data := c.dirty.set(k, v, kind)
	b.dirtyBytes += mem
	b.dirtyData += data
	if b.dirtyBytes > maxDirtyBytes || len(c.dirty.arena) > math.MaxUint32/2 {
		b.stopTracking()
	}
}

// startTracking starts a new interval with empty dirty sets.
func (b *Backend) startTracking() {
	b.dirtyBytes, b.dirtyData, b.dirtyUnknown = 0, 0, false
	on := b.deltasOn()
	for _, c := range b.columns() {
		c.dirty = nil
		if on {
			c.dirty = newDirtyKeys()
		}
	}
}

// stopTracking gives up tracking this interval: the next snapshot is a native base.
func (b *Backend) stopTracking() {
	for _, c := range b.columns() {
		c.dirty = nil
	}
	b.dirtyBytes, b.dirtyData, b.dirtyUnknown = 0, 0, true
}

// newColumnTracked sets up tracking for a column family created now: the snapshots
// on earlier bases know nothing of it, so the interval needs a native base.
func (b *Backend) newColumnTracked(c *column) {
	if b.deltasOn() && !b.dirtyUnknown {
		c.dirty = newDirtyKeys()
		b.dirtyUnknown = true
	}
}

// takeDirty ends the current interval and returns its dirty set, the merged keys'
// values read now (a list append's value is its operands merged with what was there).
func (b *Backend) takeDirty() (*dirtySet, error) {
	d := &dirtySet{cols: map[string]*dirtyKeys{}, complete: !b.dirtyUnknown, bytes: int64(b.dirtyData)}
	if d.complete {
		for _, c := range b.columns() {
			if c.dirty == nil || len(c.dirty.ents) == 0 {
				continue
			}
			dk := c.dirty
			d.cols[c.name] = dk
			if !dk.merged {
				continue
			}
			for k, i := range dk.idx {
				if dk.ents[i].kind != dirtyMerge {
					continue
				}
				v, ok, err := b.nat.get(c.c, []byte(k), b.val[:0])
				b.val = v
				if err != nil {
					b.stopTracking()
					b.startTracking()
					return &dirtySet{}, errorf("read the list %x for the delta: %w", k, err)
				}
				kind := uint8(dirtyPut)
				if !ok {
					kind = dirtyDelete
				}
				_, data := dk.set([]byte(k), v, kind)
				d.bytes += int64(data)
			}
		}
	} else {
		d.cols = nil
	}
	b.startTracking()
	return d, nil
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
	if i.forceFull || rec == nil || !rec.extendable || i.dirtyLost > i.confirmedID {
		return nil
	}
	deltas := 0
	for _, d := range rec.deltas {
		if !d.chunk {
			deltas++
		}
	}
	if deltas >= maxDeltas {
		return nil
	}
	p := &deltaPlan{rec: rec}
	for _, c := range slices.Sorted(maps.Keys(i.dirty)) {
		if c <= i.confirmedID {
			continue
		}
		if d := i.dirty[c]; !d.complete {
			return nil
		} else {
			p.sets = append(p.sets, d)
		}
	}
	return p
}

// deltaSnapshot is the synchronous phase of a delta snapshot, after the interval ended
// (cur, takeDirty): it picks the directory of the delta files, the local recovery
// copy's when the confirmed checkpoint has a copy to build on, else one of the
// instance, and writes the stage's share (a new stage when there is none, or when the
// confirmed checkpoint switched to the current one), or decides the switch to the stage
// when every chunk is written and confirmed. The delta files are written by the
// asynchronous phase, from the dirty sets alone.
func (b *Backend) deltaSnapshot(id int64, plan *deltaPlan, cur *dirtySet) (state.AsyncSnapshot, error) {
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
		dir = b.snapDir()
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
	bytes := cur.bytes

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
		st.credit += max(share*float64(bytes), float64(b.baseBytes)*4/maxDeltas)
		if err := b.export(st); err != nil {
			b.dropStage()
			return fail(err)
		}
		if st.done {
			b.baseBytes = 0
			for _, c := range st.chunks {
				b.baseBytes += c.size
			}
		}
	}
	s := b.newSnapshot(id, dir, nil, false)
	s.incremental, s.local, s.delta = true, local, plan
	s.stage, s.switchStage, s.staged = st, switchNow, confirmed
	st.files.acquire()
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
	if err := s.writeDeltas(); err != nil {
		return nil, errorf("snapshot %d: delta: %w", s.id, err)
	}
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
			sf, crc, err := s.upload(gctx, s.stage.files.dir, w, localFile{name: c.name(), size: c.size, sst: true}, true)
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

// writeDeltas writes the delta files into s.dir, one per column family written to in
// the intervals of s.delta (the latest write of each key, in key order, a deletion as
// a deletion), and lists them in s.files and s.deltaCols. It reads only the dirty
// sets, never the database, and uses options of its own: the backend may be gone.
func (s *snapshot) writeDeltas() error {
	cols := map[string]bool{}
	for _, d := range s.delta.sets {
		for c, m := range d.cols {
			if len(m.ents) > 0 {
				cols[c] = true
			}
		}
	}
	if len(cols) == 0 {
		return nil
	}
	o, eo, done := deltaWriterOptions()
	defer done()
	for _, col := range slices.Sorted(maps.Keys(cols)) {
		latest := map[string]dirtyRef{}
		for _, d := range s.delta.sets { // oldest first: the latest write wins
			if dk := d.cols[col]; dk != nil {
				for k, i := range dk.idx {
					latest[k] = dirtyRef{dk, i}
				}
			}
		}
		md := metaDelta{column: col, ckpt: s.id}
		path := filepath.Join(s.dir, md.name())
		if err := writeDeltaFile(o, eo, path, latest); err != nil {
			return fmt.Errorf("column family %s: %w", col, err)
		}
		info, err := os.Stat(path)
		if err != nil {
			return err
		}
		s.files = append(s.files, localFile{name: md.name(), size: info.Size(), sst: true})
		s.deltaCols = append(s.deltaCols, col)
	}
	return nil
}

// deltaWriterOptions are the options delta files are written with: RocksDB's defaults
// with a bloom filter (10 bits per key), so that reads skip an ingested delta without
// the key. done destroys them.
func deltaWriterOptions() (*grocksdb.Options, *grocksdb.EnvOptions, func()) {
	t := grocksdb.NewDefaultBlockBasedTableOptions()
	t.SetFilterPolicy(grocksdb.NewBloomFilterFull(10)) // the table options own it
	o := grocksdb.NewDefaultOptions()
	o.SetBlockBasedTableFactory(t)
	setNoSync(o)
	eo := grocksdb.NewDefaultEnvOptions()
	return o, eo, func() {
		eo.Destroy()
		o.Destroy()
		t.Destroy()
	}
}

// dirtyRef is entry i of a dirtyKeys.
type dirtyRef struct {
	d *dirtyKeys
	i int32
}

// writeDeltaFile writes entries in key order into a new SST file at path.
func writeDeltaFile(o *grocksdb.Options, eo *grocksdb.EnvOptions, path string, entries map[string]dirtyRef) (err error) {
	w := grocksdb.NewSSTFileWriter(eo, o)
	defer w.Destroy()
	if err := w.Open(path); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.Remove(path)
		}
	}()
	for _, k := range slices.Sorted(maps.Keys(entries)) {
		if r := entries[k]; r.d.ents[r.i].kind == dirtyDelete {
			err = w.Delete([]byte(k))
		} else {
			err = w.Put([]byte(k), r.d.value(r.i))
		}
		if err != nil {
			return err
		}
	}
	return w.Finish()
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
				src = filepath.Join(s.stage.files.dir, f.name)
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
	s.keepManifest(m)
}

// ingestDeltas ingests the deltas of meta file m, downloaded into dir, into the column
// families col finds (by name) of the database n: one ingestion per column family, of
// its deltas in order, which RocksDB gives increasing sequence numbers when they
// overlap (a later delta's write wins), chunks included.
func ingestDeltas(n native, col func(name string) (cfHandle, bool), dir string, m *snapshotMeta) error {
	var order []string
	paths := map[string][]string{}
	for _, d := range m.deltas {
		if _, ok := paths[d.column]; !ok {
			order = append(order, d.column)
		}
		paths[d.column] = append(paths[d.column], filepath.Join(dir, d.name()))
	}
	for _, c := range order {
		cf, ok := col(c)
		if !ok {
			return fmt.Errorf("%w: deltas for column family %s, which the snapshot does not have", state.ErrCorrupt, c)
		}
		if err := n.ingestFiles(cf, paths[c]); err != nil {
			return fmt.Errorf("ingest %d deltas into column family %s: %w", len(paths[c]), c, err)
		}
	}
	return nil
}
