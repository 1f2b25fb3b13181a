//go:build cgo

package rocksdb

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/fullsnap"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

var _ state.SavepointSnapshotter = (*Backend)(nil)

// SnapshotSavepoint implements state.SavepointSnapshotter. The synchronous phase is a
// native checkpoint into a new directory of the instance, as Snapshot's (it costs the
// flush of the memtables), never into a local recovery copy. The savepoint is recorded
// nowhere in the incremental bookkeeping: its files are never reused, it does not
// consume a ForceFullSnapshot, and its completion is ignored (NotifyCheckpointComplete).
//
// FormatNative uploads the checkpoint's files as a full snapshot does, whatever
// Config.Incremental says: every file through StateWriter.Create (inlined below the
// inline threshold), none shared, none reused. The handle is a RocksDB handle (backend
// "rocksdb", no shared files), which Restore reads like any other, at any parallelism.
//
// FormatCanonical writes one pkg/state/fullsnap file, as the heap backend's snapshots:
// the asynchronous phase opens the checkpoint read-only and reads every column family
// in key order, key group by key group, decoding the keys back into key, namespace and
// user key (keys.go). The handle has backend fullsnap.HandleBackend ("heap"): both
// backends restore it.
func (b *Backend) SnapshotSavepoint(checkpointID int64, format state.SnapshotFormat) (state.AsyncSnapshot, error) {
	if b.closed {
		return nil, state.ErrClosed
	}
	if format != state.FormatNative && format != state.FormatCanonical {
		return nil, errorf("savepoint %d: unknown format %v", checkpointID, format)
	}
	var o *options
	if format == state.FormatCanonical {
		// The asynchronous phase opens the checkpoint with options of its own (the
		// backend destroys its options when it closes), all made here, on the task
		// goroutine, since Config.OptionsFactory is called for them.
		var err error
		if o, err = newOptions(b.cfg, b.mem); err != nil {
			return nil, errorf("savepoint %d: %w", checkpointID, err)
		}
		for _, n := range b.columnNames() {
			o.column(n)
		}
	}
	dir, ents, err := b.instanceCheckpoint(checkpointID)
	if err == nil {
		var files []localFile
		var empty bool
		if files, empty, err = checkpointFiles(checkpointID, ents); err == nil {
			b.inc.savepoint(checkpointID)
			s := b.newSnapshot(checkpointID, dir, files, empty)
			if format == state.FormatNative {
				return s, nil
			}
			return &canonicalSnapshot{snapshot: s, o: o, plen: b.plen, columns: b.columnNames()}, nil
		}
		os.RemoveAll(dir)
	}
	if o != nil {
		o.destroy()
	}
	return nil, err
}

// columnNames lists the column families: default, the timer domains', the states'.
func (b *Backend) columnNames() []string {
	names := []string{defaultColumn, eventColumn, processingColumn}
	for _, c := range b.states {
		names = append(names, c.name)
	}
	return names
}

// canonicalSnapshot is the asynchronous phase of a canonical savepoint: it writes the
// native checkpoint of snapshot (which it releases the same way) as a fullsnap file.
type canonicalSnapshot struct {
	*snapshot
	o       *options // to open the checkpoint; destroyed when done
	plen    int
	columns []string // of the checkpoint, as columnNames
}

// Release implements state.AsyncSnapshot.
func (s *canonicalSnapshot) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseIdle {
		s.done()
	}
}

// done removes the checkpoint and frees the options; s.mu is held.
func (s *canonicalSnapshot) done() {
	s.snapshot.done()
	s.o.destroy()
}

// Run implements state.AsyncSnapshot: one fullsnap file for the backend's key-group
// range, inlined below the inline threshold; a nil handle when the backend holds no
// entry and no timer.
func (s *canonicalSnapshot) Run(ctx context.Context, w state.StateWriter) (*sluicev1.KeyedStateHandle, error) {
	if err := s.claim(); err != nil {
		return nil, err
	}
	defer func() {
		s.mu.Lock()
		s.done()
		s.mu.Unlock()
	}()
	if err := ctx.Err(); err != nil {
		return nil, errorf("savepoint %d: %w", s.id, err)
	}
	if s.empty {
		return nil, nil
	}
	if w == nil {
		return nil, errors.New("rocksdb: nil StateWriter")
	}
	h, err := s.write(ctx, w)
	if err != nil {
		return nil, errorf("savepoint %d: %w", s.id, err)
	}
	return h, nil
}

// source is the iterator over one column family of the checkpoint and what its
// entries are.
type source struct {
	it     *iter
	st     int              // index in the state table (states)
	kind   state.Kind       // 0 for timers
	domain state.TimeDomain // timers
	name   string
	kg     int // key group of the current entry; past the range when done
}

func (s *canonicalSnapshot) write(ctx context.Context, w state.StateWriter) (*sluicev1.KeyedStateHandle, error) {
	db, hs, err := openDB(s.o, s.dir, s.columns, true, false)
	if err != nil {
		return nil, err
	}
	nat := newNative(db, s.o.ro, s.o.wo)
	lower, upper := keyGroupBound(s.kgs.Start, s.plen), keyGroupBound(s.kgs.End+1, s.plen)
	var srcs []*source
	defer func() {
		for _, src := range srcs {
			src.it.Close()
		}
		for _, h := range hs {
			h.Destroy()
		}
		db.Close()
	}()
	descs := make([]state.StateDesc, len(s.states))
	for i, st := range s.states {
		descs[i] = st.desc
		srcs = append(srcs, &source{it: nat.scan(cfPtr(hs[3+i]), lower, upper), st: i, kind: st.desc.Kind, name: fmt.Sprintf("state %q", st.desc.Name)})
	}
	for i, d := range []state.TimeDomain{state.EventTime, state.ProcessingTime} {
		srcs = append(srcs, &source{it: nat.scan(cfPtr(hs[1+i]), lower, upper), domain: d, name: d.String() + " timers"})
	}
	end := s.kgs.End + 1
	for _, src := range srcs {
		src.it.Seek(lower)
		if err := s.advance(src, end); err != nil {
			return nil, err
		}
	}

	sw := state.NewSpillWriter(ctx, w, s.opts.FileName(s.id, "keyed.full"), s.opts.InlineLimit())
	offsets, n, err := s.encode(ctx, sw, descs, srcs, end)
	if err != nil || n == 0 {
		// n == 0: every entry was deleted since the SST files were written.
		sw.Abort()
		return nil, err
	}
	f, err := sw.Close()
	if err != nil {
		return nil, err
	}
	return &sluicev1.KeyedStateHandle{
		KeyGroupStart:   int32(s.kgs.Start),
		KeyGroupEnd:     int32(s.kgs.End),
		File:            f,
		KeyGroupOffsets: offsets,
		Backend:         fullsnap.HandleBackend,
		IncrementalSize: f.GetSize(),
		FullSize:        f.GetSize(),
	}, nil
}

// advance sets src.kg to the key group of its current entry, or end when it has none.
func (s *canonicalSnapshot) advance(src *source, end int) error {
	if !src.it.Valid() {
		src.kg = end
		if err := src.it.Err(); err != nil {
			return fmt.Errorf("read the %s: %w", src.name, err)
		}
		return nil
	}
	k := src.it.Key()
	if len(k) < s.plen {
		return fmt.Errorf("%s: malformed key %x", src.name, k)
	}
	kg := keyGroupOf(k, s.plen)
	if kg < src.kg || kg >= end {
		return fmt.Errorf("%s: key %x out of order or range", src.name, k)
	}
	src.kg = kg
	return nil
}

// encode writes the entries of srcs, key group by key group, and returns the section
// offsets and the number of records.
func (s *canonicalSnapshot) encode(ctx context.Context, sw *state.SpillWriter, descs []state.StateDesc, srcs []*source, end int) ([]int64, int64, error) {
	enc, err := fullsnap.NewEncoder(sw, s.maxP, s.kgs, descs)
	if err != nil {
		return nil, 0, err
	}
	var n int64
	for {
		kg := end
		for _, src := range srcs {
			kg = min(kg, src.kg)
		}
		if kg == end {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		if err := enc.BeginKeyGroup(kg); err != nil {
			return nil, 0, err
		}
		for _, src := range srcs {
			for src.kg == kg {
				if err := s.record(enc, src); err != nil {
					return nil, 0, err
				}
				if n++; n%4096 == 0 {
					if err := ctx.Err(); err != nil {
						return nil, 0, err
					}
				}
				src.it.Next()
				if err := s.advance(src, end); err != nil {
					return nil, 0, err
				}
			}
		}
	}
	offsets, err := enc.Finish()
	return offsets, n, err
}

// record writes the current entry of src.
func (s *canonicalSnapshot) record(enc *fullsnap.Encoder, src *source) error {
	k, v := src.it.Key(), src.it.Value()
	if src.kind == 0 {
		ts, key, ns, ok := parseTimerID(k[s.plen:])
		if !ok {
			return fmt.Errorf("%s: malformed key %x", src.name, k)
		}
		return enc.Timer(src.domain, ts, key, ns)
	}
	_, key, ns, rest, ok := parseStateKey(k, s.plen)
	if !ok || (src.kind != state.KindMap && len(rest) > 0) {
		return fmt.Errorf("%s: malformed key %x", src.name, k)
	}
	switch src.kind {
	case state.KindMap:
		return enc.MapEntry(src.st, key, ns, rest, v)
	case state.KindList:
		if !state.ValidList(v) {
			return fmt.Errorf("%s: malformed list under key %x", src.name, k)
		}
		return enc.List(src.st, key, ns, v)
	}
	return enc.Value(src.st, key, ns, v)
}
