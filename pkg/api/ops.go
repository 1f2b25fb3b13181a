package api

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
)

// FromSource adds a source; newSource is called once per subtask. Its records carry no
// event timestamp and it emits no watermarks (see FromSourceWithWatermarks) except the
// final one when its input ends.
func FromSource[T any](env *Env, newSource func() Source[T]) Stream[T] {
	n := env.add("source", "", typeName[T]())
	n.instantiate = func(cs *chainState, next any) (any, instance) {
		return nil, &sourceInst[T]{src: newSource(), out: countingEmitter[T]{next.(Emitter[T]), &cs.m.source}, cs: cs}
	}
	return newStream[T](n)
}

// FromSourceWithWatermarks adds a source whose records get their event timestamps and
// watermarks from ws, as Flink's env.fromSource(source, watermarkStrategy, name):
// every subtask runs its own generator, which emits periodically (see
// Env.SetAutoWatermarkInterval) and on events as it decides.
func FromSourceWithWatermarks[T any](env *Env, newSource func() Source[T], ws WatermarkStrategy[T]) Stream[T] {
	if ws.err != nil {
		env.fail(fmt.Errorf("source: %w", ws.err))
	}
	n := env.add("source", "", typeName[T]())
	n.instantiate = func(cs *chainState, next any) (any, instance) {
		s := &sourceInst[T]{src: newSource(), out: countingEmitter[T]{next.(Emitter[T]), &cs.m.source}, cs: cs}
		s.ts = newTimestamper(ws, cs)
		return nil, s
	}
	return newStream[T](n)
}

type countingEmitter[T any] struct {
	e Emitter[T]
	n *int64
}

func (c countingEmitter[T]) Emit(v T) { *c.n++; c.e.Emit(v) }

type sourceInst[T any] struct {
	src Source[T]
	out Emitter[T]
	cs  *chainState
	ts  *timestamper[T] // nil without a watermark strategy
}

func (s *sourceInst[T]) open(ctx context.Context, rc *RuntimeContext) error {
	return s.src.Open(ctx, rc)
}

func (s *sourceInst[T]) poll() (PollResult, error) {
	s.cs.ts = recordTime{}
	if s.ts == nil {
		return s.src.Poll(s.out)
	}
	return s.src.Poll(s)
}

// Emit is the emitter a source with a watermark strategy polls into: the record gets
// its timestamp, goes downstream, then the generator sees it (and may emit a
// watermark, which then follows the record).
func (s *sourceInst[T]) Emit(v T) {
	ts := s.ts.assign(v)
	s.out.Emit(v)
	s.ts.onEvent(v, ts)
}
func (s *sourceInst[T]) endInput() error { return nil }
func (s *sourceInst[T]) close() error    { return s.src.Close() }

// Map applies f to every record.
func Map[IN, OUT any](s Stream[IN], f func(IN) OUT) Stream[OUT] {
	n := s.n.env.add("map", typeName[IN](), typeName[OUT](), s.edge())
	n.instantiate = func(cs *chainState, next any) (any, instance) {
		out := next.(Emitter[OUT])
		return EmitterFunc[IN](func(v IN) { out.Emit(f(v)) }), nopInst{}
	}
	return newStream[OUT](n)
}

// Filter keeps the records for which keep returns true.
func Filter[T any](s Stream[T], keep func(T) bool) Stream[T] {
	n := s.n.env.add("filter", typeName[T](), typeName[T](), s.edge())
	n.instantiate = func(cs *chainState, next any) (any, instance) {
		out := next.(Emitter[T])
		return EmitterFunc[T](func(v T) {
			if keep(v) {
				out.Emit(v)
			}
		}), nopInst{}
	}
	return newStream[T](n)
}

// FlatMap calls f for every record; f emits zero or more records.
func FlatMap[IN, OUT any](s Stream[IN], f func(IN, Emitter[OUT]) error) Stream[OUT] {
	n := s.n.env.add("flatmap", typeName[IN](), typeName[OUT](), s.edge())
	n.instantiate = func(cs *chainState, next any) (any, instance) {
		out := next.(Emitter[OUT])
		return EmitterFunc[IN](func(v IN) {
			if err := f(v, out); err != nil {
				cs.ft.fail(err)
			}
		}), nopInst{}
	}
	return newStream[OUT](n)
}

// Process runs a ProcessFunction; newFn is called once per subtask.
func Process[IN, OUT any](s Stream[IN], newFn func() ProcessFunction[IN, OUT]) Stream[OUT] {
	n := s.n.env.add("process", typeName[IN](), typeName[OUT](), s.edge())
	n.instantiate = func(cs *chainState, next any) (any, instance) {
		p := &processInst[IN, OUT]{fn: newFn(), out: next.(Emitter[OUT]), ft: &cs.ft}
		return p, p
	}
	return newStream[OUT](n)
}

type processInst[IN, OUT any] struct {
	fn  ProcessFunction[IN, OUT]
	out Emitter[OUT]
	ft  *failure
}

func (p *processInst[IN, OUT]) Emit(v IN) {
	if err := p.fn.Process(v, p.out); err != nil {
		p.ft.fail(err)
	}
}
func (p *processInst[IN, OUT]) open(ctx context.Context, rc *RuntimeContext) error {
	return p.fn.Open(ctx, rc)
}
func (p *processInst[IN, OUT]) endInput() error { return p.fn.Finish(p.out) }
func (p *processInst[IN, OUT]) close() error    { return p.fn.Close() }

// ProcessKeyed runs a KeyedProcessFunction on a keyed stream; newFn is called once per
// subtask. The function sees the record's key and that key's state.
func ProcessKeyed[K, IN, OUT any](ks KeyedStream[K, IN], newFn func() KeyedProcessFunction[K, IN, OUT]) Stream[OUT] {
	n := ks.s.n.env.add("keyed-process", typeName[IN](), typeName[OUT](), ks.s.edge())
	n.keyed = true
	n.instantiate = func(cs *chainState, next any) (any, instance) {
		p := &keyedInst[K, IN, OUT]{fn: newFn(), out: next.(Emitter[OUT]), cs: cs, ft: &cs.ft, keyFn: ks.keyFn, codec: ks.codec}
		return p, p
	}
	return newStream[OUT](n)
}

type keyedInst[K, IN, OUT any] struct {
	fn    KeyedProcessFunction[K, IN, OUT]
	out   Emitter[OUT]
	cs    *chainState
	ft    *failure
	keyFn func(IN) K
	codec Codec[K]
	kc    KeyedContext
	buf   []byte
}

func (p *keyedInst[K, IN, OUT]) Emit(v IN) {
	k := p.keyFn(v)
	p.buf = p.codec.Append(p.buf[:0], k)
	kg := keygroup.Of(p.buf, p.kc.MaxParallelism)
	if !p.kc.KeyGroups.Contains(kg) {
		p.ft.fail(fmt.Errorf("operator %s subtask %d got a key of key group %d outside its range %v",
			p.kc.OperatorUID, p.kc.Subtask, kg, p.kc.KeyGroups))
		return
	}
	p.kc.setKey(p.buf, kg)
	if err := p.fn.Process(&p.kc, k, v, p.out); err != nil {
		p.ft.fail(err)
	}
}
func (p *keyedInst[K, IN, OUT]) open(ctx context.Context, rc *RuntimeContext) error {
	p.kc = KeyedContext{RuntimeContext: rc, backend: rc.keyed}
	if err := p.fn.Open(ctx, &p.kc); err != nil {
		return err
	}
	return errors.Join(p.kc.errs...)
}

// endInput fires every event-time timer: the end of input is the final watermark
// (usually they fired already, when the sources' final watermark arrived).
func (p *keyedInst[K, IN, OUT]) endInput() error {
	p.kc.watermark = math.MaxInt64
	return p.kc.backend.Timers().AdvanceWatermark(math.MaxInt64, p.onTimer)
}

// processWatermark fires the event-time timers up to wm, in timestamp order, also those
// registered for times the watermark had already passed (Flink's behaviour for late
// records); their output goes downstream before the watermark.
func (p *keyedInst[K, IN, OUT]) processWatermark(wm int64) (bool, error) {
	return true, p.kc.backend.Timers().AdvanceWatermark(wm, p.onTimer)
}

func (p *keyedInst[K, IN, OUT]) processWatermarkStatus(bool) bool { return true }

func (p *keyedInst[K, IN, OUT]) nextTimer() (int64, bool) {
	return p.kc.backend.Timers().NextProcessingTimer()
}

func (p *keyedInst[K, IN, OUT]) fireTimers(now int64) error {
	return p.kc.backend.Timers().FireProcessingTimers(now, p.onTimer)
}

func (p *keyedInst[K, IN, OUT]) onTimer(t state.Timer) error {
	h, ok := p.fn.(TimerHandler[K, OUT])
	if !ok {
		return nil
	}
	k, err := p.codec.Decode(t.Key)
	if err != nil {
		return fmt.Errorf("timer key: %w", err)
	}
	p.kc.keyBytes, p.kc.keyGroup = t.Key, t.KeyGroup
	// Flink's timestamps of timer output: the timer's time in event time, none in
	// processing time.
	p.cs.ts = recordTime{}
	if t.Domain == state.EventTime {
		p.cs.ts = recordTime{ts: t.Timestamp, ok: true}
	}
	if err := h.OnTimer(&p.kc, k, t.Timestamp, p.out); err != nil {
		return err
	}
	return p.ft.err
}
func (p *keyedInst[K, IN, OUT]) close() error { return p.fn.Close() }

// Union merges streams of one type; the result reads all of them.
func Union[T any](first Stream[T], more ...Stream[T]) Stream[T] {
	edges := []inEdge{first.edge()}
	for _, s := range more {
		edges = append(edges, s.edge())
	}
	n := first.n.env.add("union", typeName[T](), typeName[T](), edges...)
	n.instantiate = func(cs *chainState, next any) (any, instance) {
		return next.(Emitter[T]), nopInst{}
	}
	return newStream[T](n)
}

// SinkTo adds a sink; newSink is called once per subtask. It returns the sink's handle
// for setting its UID, name and parallelism.
func SinkTo[T any](s Stream[T], newSink func() Sink[T]) Stream[struct{}] {
	n := s.n.env.add("sink", typeName[T](), "", s.edge())
	n.instantiate = func(cs *chainState, next any) (any, instance) {
		si := &sinkInst[T]{sink: newSink(), ft: &cs.ft, n: &cs.m.sink}
		return si, si
	}
	st := newStream[struct{}](n)
	return st
}

type sinkInst[T any] struct {
	sink Sink[T]
	ft   *failure
	n    *int64
}

func (s *sinkInst[T]) Emit(v T) {
	*s.n++
	if err := s.sink.Write(v); err != nil {
		s.ft.fail(err)
	}
}
func (s *sinkInst[T]) open(ctx context.Context, rc *RuntimeContext) error {
	return s.sink.Open(ctx, rc)
}
func (s *sinkInst[T]) endInput() error { return s.sink.Finish() }
func (s *sinkInst[T]) close() error    { return s.sink.Close() }

type nopInst struct{}

func (nopInst) open(context.Context, *RuntimeContext) error { return nil }
func (nopInst) endInput() error                             { return nil }
func (nopInst) close() error                                { return nil }

func (s *sourceInst[T]) user() any        { return s.src }
func (p *processInst[IN, OUT]) user() any { return p.fn }
func (p *keyedInst[K, IN, OUT]) user() any {
	return p.fn
}
func (s *sinkInst[T]) user() any { return s.sink }
func (nopInst) user() any        { return nil }
