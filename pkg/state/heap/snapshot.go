package heap

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/fullsnap"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// snapshot is the asynchronous phase of a heap snapshot. It holds the maps captured in
// the synchronous phase, which no one modifies until it is released, and nothing else
// of the backend.
type snapshot struct {
	id       int64
	opts     state.KeyedOptions
	descs    []state.StateDesc
	groups   [][]map[string]*entry // [state][key group - start]; nil when empty
	event    []map[string]*entry   // [key group - start]
	proc     []map[string]*entry
	stats    state.SnapshotStats
	epoch    uint64
	ep       *epochs
	mu       sync.Mutex
	phase    int    // phaseIdle, phaseRunning, phaseDone
	nonEmpty []bool // per key group: anything to write
	anyData  bool
	kgs      keygroup.Range
}

const (
	phaseIdle = iota
	phaseRunning
	phaseDone
)

// Snapshot implements state.KeyedBackend. Its cost is O(states × key groups): it copies
// one map pointer per non-empty (state, key group) table and timer set.
func (b *Backend) Snapshot(checkpointID int64) (state.AsyncSnapshot, error) {
	if b.closed {
		return nil, state.ErrClosed
	}
	n := b.kgs.Len()
	s := &snapshot{
		id:       checkpointID,
		opts:     b.opts,
		descs:    make([]state.StateDesc, len(b.states)),
		groups:   make([][]map[string]*entry, len(b.states)),
		event:    make([]map[string]*entry, n),
		proc:     make([]map[string]*entry, n),
		nonEmpty: make([]bool, n),
		epoch:    b.epoch,
		ep:       b.ep,
		kgs:      b.kgs,
	}
	s.stats.CheckpointID = checkpointID
	for i, t := range b.states {
		s.descs[i] = t.desc
		gs := make([]map[string]*entry, n)
		for gi, g := range t.groups {
			if g != nil && len(g.m) > 0 {
				gs[gi] = g.m
				s.nonEmpty[gi] = true
				s.stats.Entries += int64(len(g.m))
			}
		}
		s.groups[i] = gs
	}
	for gi := range n {
		if g := b.timers.event.sets[gi]; g != nil && len(g.m) > 0 {
			s.event[gi] = g.m
			s.nonEmpty[gi] = true
		}
		if g := b.timers.proc.sets[gi]; g != nil && len(g.m) > 0 {
			s.proc[gi] = g.m
			s.nonEmpty[gi] = true
		}
	}
	s.stats.Timers = int64(b.timers.count())
	s.anyData = s.stats.Entries > 0 || s.stats.Timers > 0
	// From now on everything captured is shared: writes copy it first.
	b.ep.add(b.epoch)
	b.epoch++
	return s, nil
}

func (s *snapshot) Stats() state.SnapshotStats { return s.stats }

// Release implements state.AsyncSnapshot. During Run it does nothing: Run releases
// when it returns (cancel its context to stop it early).
func (s *snapshot) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.phase == phaseIdle {
		s.done()
	}
}

// done releases the epoch; s.mu is held.
func (s *snapshot) done() {
	s.phase = phaseDone
	s.ep.release(s.epoch)
	s.groups, s.event, s.proc = nil, nil, nil
}

// Run implements state.AsyncSnapshot: it writes one fullsnap file for the backend's
// key-group range, inlined when small.
func (s *snapshot) Run(ctx context.Context, w state.StateWriter) (*sluicev1.KeyedStateHandle, error) {
	s.mu.Lock()
	if s.phase != phaseIdle {
		s.mu.Unlock()
		return nil, errors.New("heap: snapshot already run or released")
	}
	s.phase = phaseRunning
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.done()
		s.mu.Unlock()
	}()
	if !s.anyData {
		return nil, nil
	}
	if w == nil {
		return nil, errors.New("heap: nil StateWriter")
	}
	name := s.opts.FileName(s.id, "keyed.full")
	sw := state.NewSpillWriter(ctx, w, name, s.opts.InlineLimit())
	offsets, err := s.write(ctx, sw)
	if err != nil {
		sw.Abort()
		return nil, fmt.Errorf("heap: snapshot %d: %w", s.id, err)
	}
	f, err := sw.Close()
	if err != nil {
		return nil, fmt.Errorf("heap: snapshot %d: %w", s.id, err)
	}
	return &sluicev1.KeyedStateHandle{
		KeyGroupStart:   int32(s.kgs.Start),
		KeyGroupEnd:     int32(s.kgs.End),
		File:            f,
		KeyGroupOffsets: offsets,
		Backend:         Name,
		IncrementalSize: f.GetSize(),
		FullSize:        f.GetSize(),
	}, nil
}

func (s *snapshot) write(ctx context.Context, sw *state.SpillWriter) ([]int64, error) {
	enc, err := fullsnap.NewEncoder(sw, s.opts.MaxParallelism, s.kgs, s.descs)
	if err != nil {
		return nil, err
	}
	var kb, nb, ub []byte
	for gi := range s.nonEmpty {
		if !s.nonEmpty[gi] {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := enc.BeginKeyGroup(s.kgs.Start + gi); err != nil {
			return nil, err
		}
		for si, gs := range s.groups {
			kind := s.descs[si].Kind
			for ck, e := range gs[gi] {
				key, ns, ok := splitKey(ck)
				if !ok {
					return nil, fmt.Errorf("malformed key in state %q", s.descs[si].Name)
				}
				kb, nb = append(kb[:0], key...), append(nb[:0], ns...)
				switch {
				case kind.IsValue():
					err = enc.Value(si, kb, nb, e.val)
				case kind == state.KindList:
					err = enc.List(si, kb, nb, e.val)
				default:
					for uk, uv := range e.m {
						ub = append(ub[:0], uk...)
						if err = enc.MapEntry(si, kb, nb, ub, uv); err != nil {
							break
						}
					}
				}
				if err != nil {
					return nil, err
				}
			}
		}
		for _, q := range []struct {
			m map[string]*entry
			d state.TimeDomain
		}{{s.event[gi], state.EventTime}, {s.proc[gi], state.ProcessingTime}} {
			for id := range q.m {
				ts, key, ns, ok := parseTimerID(id)
				if !ok {
					return nil, fmt.Errorf("malformed timer id")
				}
				kb, nb = append(kb[:0], key...), append(nb[:0], ns...)
				if err := enc.Timer(q.d, ts, kb, nb); err != nil {
					return nil, err
				}
			}
		}
	}
	return enc.Finish()
}
