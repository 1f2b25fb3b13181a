package heap

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/fullsnap"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func (b *Backend) restore(ctx context.Context, handles []*sluicev1.KeyedStateHandle, r state.StateReader) error {
	covered := make([]int, b.kgs.Len()) // 1 + index of the handle that restored the key group
	for hi, h := range handles {
		if h == nil {
			continue
		}
		hr := keygroup.Range{Start: int(h.GetKeyGroupStart()), End: int(h.GetKeyGroupEnd())}
		if hr.Len() == 0 || hr.Start < 0 || hr.End >= b.maxP {
			return fmt.Errorf("heap: restore: handle %d has key-group range %v, invalid for max parallelism %d", hi, hr, b.maxP)
		}
		in := hr.Intersect(b.kgs)
		if in.Len() == 0 {
			continue
		}
		for kg := in.Start; kg <= in.End; kg++ {
			if c := covered[kg-b.kgs.Start]; c != 0 {
				return fmt.Errorf("heap: restore: key group %d is covered by handles %d and %d", kg, c-1, hi)
			}
			covered[kg-b.kgs.Start] = hi + 1
		}
		if err := b.restoreHandle(ctx, h, hr, in, r); err != nil {
			return err
		}
	}
	b.timers.event.heapify()
	b.timers.proc.heapify()
	return nil
}

func (b *Backend) restoreHandle(ctx context.Context, h *sluicev1.KeyedStateHandle, hr, in keygroup.Range, r state.StateReader) error {
	if h.GetFile() == nil {
		if len(h.GetSharedFiles())+len(h.GetPrivateFiles()) > 0 {
			return fmt.Errorf("heap: restore key groups %v: handle written by %q is incremental; the heap backend restores full snapshots", hr, h.GetBackend())
		}
		return fmt.Errorf("heap: restore key groups %v: handle has no file", hr)
	}
	label := state.FileLabel(h.GetFile())
	if len(h.GetKeyGroupOffsets()) != hr.Len() {
		return fmt.Errorf("heap: restore: state file %s: %w: handle has %d key-group offsets for %d key groups",
			label, state.ErrCorrupt, len(h.GetKeyGroupOffsets()), hr.Len())
	}
	fr, err := state.OpenStateFile(ctx, h.GetFile(), r)
	if err != nil {
		return fmt.Errorf("heap: restore key groups %v: %w", in, err)
	}
	defer fr.Close()
	f, err := fullsnap.Open(fr, fr.Size())
	if err != nil {
		return fmt.Errorf("heap: restore: state file %s: %w", label, err)
	}
	if f.Header.MaxParallelism != b.maxP {
		return fmt.Errorf("heap: restore: state file %s was written with max parallelism %d, the backend has %d (max parallelism is fixed for the life of keyed state)",
			label, f.Header.MaxParallelism, b.maxP)
	}
	if f.Header.KeyGroups != hr {
		return fmt.Errorf("heap: restore: state file %s: %w: file covers key groups %v, handle says %v", label, state.ErrCorrupt, f.Header.KeyGroups, hr)
	}
	if err := f.CheckOffsets(h.GetKeyGroupOffsets()); err != nil {
		return fmt.Errorf("heap: restore: state file %s: %w", label, err)
	}
	v := &restorer{b: b, ids: make([]state.StateID, len(f.Header.States))}
	for i, d := range f.Header.States {
		if v.ids[i], err = b.registerRestored(d); err != nil {
			return fmt.Errorf("heap: restore: state file %s: %w", label, err)
		}
	}
	for kg := in.Start; kg <= in.End; kg++ {
		if err := ctx.Err(); err != nil {
			return err
		}
		v.gi = kg - b.kgs.Start
		if err := f.ReadKeyGroup(kg, v); err != nil {
			return fmt.Errorf("heap: restore: state file %s: %w", label, err)
		}
	}
	return nil
}

// restorer inserts decoded records into the backend.
type restorer struct {
	b   *Backend
	ids []state.StateID
	gi  int
	ck  []byte
}

func (v *restorer) group(st int, key, ns []byte) (*group, []byte) {
	b := v.b
	v.ck = binary.AppendUvarint(v.ck[:0], uint64(len(key)))
	v.ck = append(append(v.ck, key...), ns...)
	return b.writable(b.states[v.ids[st]].groups, v.gi, b.ep.required.Load()), v.ck
}

func (v *restorer) Value(st int, key, ns, val []byte) error {
	g, ck := v.group(st, key, ns)
	g.m[string(ck)] = &entry{epoch: v.b.epoch, val: append(make([]byte, 0, len(val)), val...)}
	return nil
}

func (v *restorer) List(st int, key, ns, list []byte) error {
	return v.Value(st, key, ns, list)
}

func (v *restorer) MapEntry(st int, key, ns, uk, uv []byte) error {
	g, ck := v.group(st, key, ns)
	e := g.m[string(ck)]
	switch {
	case e == nil:
		e = &entry{epoch: v.b.epoch, m: map[string][]byte{}}
		g.m[string(ck)] = e
	case e.epoch <= v.b.ep.required.Load():
		e = &entry{epoch: v.b.epoch, m: maps.Clone(e.m)}
		g.m[string(ck)] = e
	}
	e.m[string(uk)] = append(make([]byte, 0, len(uv)), uv...)
	return nil
}

func (v *restorer) Timer(d state.TimeDomain, ts int64, key, ns []byte) error {
	t := &v.b.timers
	q := &t.event
	if d == state.ProcessingTime {
		q = &t.proc
	}
	t.idBuf = appendTimerID(t.idBuf[:0], ts, key, ns)
	g := v.b.writable(q.sets, v.gi, v.b.ep.required.Load())
	if _, dup := g.m[string(t.idBuf)]; dup {
		return nil
	}
	id := string(t.idBuf)
	g.m[id] = nil
	q.live++
	q.heap = append(q.heap, timerItem{id: id, gi: int32(v.gi)})
	return nil
}
