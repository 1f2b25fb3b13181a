package api

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/sluice-stream/sluice/pkg/exchange"
	"github.com/sluice-stream/sluice/pkg/runtime"
)

// Event time follows Flink. A record may carry an event timestamp (Unix milliseconds),
// given by a WatermarkStrategy's timestamp assigner at a source or at
// AssignTimestampsAndWatermarks; records derived from it inherit it, and what an
// event-time timer emits carries the timer's time. A watermark t says that no record with
// a timestamp <= t should follow: it travels in-band behind the records, a task
// forwards the minimum over its inputs (runtime.Valve), and keyed operators fire their
// event-time timers up to it. Records behind the watermark (late records) are processed
// as any other; a timer they register for a time already passed fires at the next
// watermark. Every source emits a final watermark, math.MaxInt64, when its input ends.

// DefaultAutoWatermarkInterval is the interval of periodic watermarks when neither the
// job nor the cluster (pipeline.auto-watermark-interval) sets one.
const DefaultAutoWatermarkInterval = 200 * time.Millisecond

// recordTime is a record's optional event timestamp.
type recordTime struct {
	ts int64
	ok bool
}

// A record leaving its chain is framed by the api as a flag byte, then the timestamp
// when the flag is 1 (a zigzag varint, as encoding/binary.AppendVarint), then the
// codec's bytes:
//
//	u8 0                        codec bytes    no timestamp
//	u8 1  varint(timestamp)     codec bytes
const (
	recordNoTimestamp = 0
	recordTimestamp   = 1
)

var errRecordHeader = errors.New("malformed record header")

// appendRecordHeader appends the flag and timestamp of t to dst.
func appendRecordHeader(dst []byte, t recordTime) []byte {
	if !t.ok {
		return append(dst, recordNoTimestamp)
	}
	dst = append(dst, recordTimestamp)
	return binary.AppendVarint(dst, t.ts)
}

// splitRecord splits a framed record into its timestamp and its codec bytes.
func splitRecord(b []byte) (recordTime, []byte, error) {
	if len(b) > 0 && b[0] == recordNoTimestamp {
		return recordTime{}, b[1:], nil
	}
	if len(b) == 0 || b[0] != recordTimestamp {
		return recordTime{}, nil, errRecordHeader
	}
	ts, n := binary.Varint(b[1:])
	if n <= 0 {
		return recordTime{}, nil, errRecordHeader
	}
	return recordTime{ts: ts, ok: true}, b[1+n:], nil
}

// Timestamp is the event timestamp of the record being processed, or of the event-time
// timer firing, and false when it has none. Call it from Process or OnTimer.
func (rc *RuntimeContext) Timestamp() (int64, bool) {
	if rc.cs == nil {
		return 0, false
	}
	return rc.cs.ts.ts, rc.cs.ts.ok
}

// CurrentWatermark is the last watermark that reached this operator, math.MinInt64
// before the first. While event-time timers fire it is the watermark firing them.
func (rc *RuntimeContext) CurrentWatermark() int64 { return rc.watermark }

// WatermarkOutput receives what a WatermarkGenerator decides. Watermarks that do not
// rise are dropped. A generator marks its subtask idle when it sees no records, so that
// the watermarks downstream do not wait for it; a higher watermark (or MarkActive)
// makes it active again.
type WatermarkOutput interface {
	EmitWatermark(wm int64)
	MarkIdle()
	MarkActive()
}

// WatermarkGenerator makes the watermarks of one subtask from the timestamps it sees, as
// Flink's. OnEvent runs after each record went downstream; OnPeriodicEmit every
// auto-watermark interval. Both run on the task goroutine.
type WatermarkGenerator[T any] interface {
	OnEvent(v T, ts int64, out WatermarkOutput)
	OnPeriodicEmit(out WatermarkOutput)
}

// WatermarkStrategy says how records get their event timestamps and how watermarks are
// made from them. Build one with ForBoundedOutOfOrderness, ForMonotonousTimestamps,
// ForGenerator or NoWatermarks, then refine it with WithTimestampAssigner and
// WithIdleness; the zero value is NoWatermarks.
type WatermarkStrategy[T any] struct {
	newGenerator func() WatermarkGenerator[T]
	assigner     func(v T, recordTimestamp int64) int64
	idleness     time.Duration
	err          error
}

// ForBoundedOutOfOrderness expects records at most d behind the highest timestamp seen:
// the periodic watermark is that timestamp minus d, minus 1 ms.
func ForBoundedOutOfOrderness[T any](d time.Duration) WatermarkStrategy[T] {
	var err error
	if d < 0 {
		err = fmt.Errorf("bounded out-of-orderness %v is negative", d)
	}
	delay := d.Milliseconds()
	return WatermarkStrategy[T]{err: err, newGenerator: func() WatermarkGenerator[T] {
		return &boundedOutOfOrderness[T]{delay: delay, maxTS: math.MinInt64 + delay + 1}
	}}
}

// ForMonotonousTimestamps expects ascending timestamps: the periodic watermark is the
// highest timestamp seen minus 1 ms.
func ForMonotonousTimestamps[T any]() WatermarkStrategy[T] {
	return ForBoundedOutOfOrderness[T](0)
}

// ForGenerator uses a generator of one's own; newGenerator is called once per subtask.
func ForGenerator[T any](newGenerator func() WatermarkGenerator[T]) WatermarkStrategy[T] {
	return WatermarkStrategy[T]{newGenerator: newGenerator}
}

// NoWatermarks emits no watermarks; with WithTimestampAssigner it only assigns
// timestamps.
func NoWatermarks[T any]() WatermarkStrategy[T] { return WatermarkStrategy[T]{} }

// WithTimestampAssigner sets how a record's event timestamp (Unix ms) is extracted;
// recordTimestamp is the timestamp it carries, math.MinInt64 when none. Without an
// assigner records keep the timestamp they carry (none, at a source).
func (s WatermarkStrategy[T]) WithTimestampAssigner(f func(v T, recordTimestamp int64) int64) WatermarkStrategy[T] {
	s.assigner = f
	return s
}

// WithIdleness marks a subtask idle once it saw no record for d (checked at the
// periodic emission), so that downstream watermarks advance without it; its next
// record makes it active again. Records it sends while idle may be late downstream.
func (s WatermarkStrategy[T]) WithIdleness(d time.Duration) WatermarkStrategy[T] {
	if d <= 0 && s.err == nil {
		s.err = fmt.Errorf("idleness %v is not positive", d)
	}
	s.idleness = d
	return s
}

type boundedOutOfOrderness[T any] struct {
	delay int64
	maxTS int64
}

func (g *boundedOutOfOrderness[T]) OnEvent(_ T, ts int64, _ WatermarkOutput) {
	g.maxTS = max(g.maxTS, ts)
}

func (g *boundedOutOfOrderness[T]) OnPeriodicEmit(out WatermarkOutput) {
	out.EmitWatermark(g.maxTS - g.delay - 1)
}

type noWatermarks[T any] struct{}

func (noWatermarks[T]) OnEvent(T, int64, WatermarkOutput) {}
func (noWatermarks[T]) OnPeriodicEmit(WatermarkOutput)    {}

// AssignTimestampsAndWatermarks gives the records of s new event timestamps and
// watermarks from ws, as Flink's operator of the same name: watermarks from upstream
// stop here (except the final one, which ends event time), replaced by those ws makes.
func (s Stream[T]) AssignTimestampsAndWatermarks(ws WatermarkStrategy[T]) Stream[T] {
	if ws.err != nil {
		s.n.env.fail(fmt.Errorf("timestamps: %w", ws.err))
	}
	n := s.n.env.add("timestamps", typeName[T](), typeName[T](), s.edge())
	n.instantiate = func(cs *chainState, next any) (any, instance) {
		a := &assignerInst[T]{out: next.(Emitter[T]), ts: newTimestamper(ws, cs)}
		return a, a
	}
	return newStream[T](n)
}

type assignerInst[T any] struct {
	nopInst
	out Emitter[T]
	ts  *timestamper[T]
}

func (a *assignerInst[T]) Emit(v T) {
	prev := a.ts.cs.ts
	ts := a.ts.assign(v)
	a.out.Emit(v)
	// An upstream operator may emit more records for the same input record.
	a.ts.cs.ts = prev
	a.ts.onEvent(v, ts)
}

func (a *assignerInst[T]) processWatermark(wm int64) (bool, error) {
	if wm == runtime.MaxWatermark {
		a.ts.EmitWatermark(wm)
	}
	return false, nil
}

func (a *assignerInst[T]) processWatermarkStatus(bool) bool { return false }

// timestamper runs a WatermarkStrategy in one subtask: it assigns timestamps, feeds the
// generator, and sends its watermarks to the operators after it in the chain.
type timestamper[T any] struct {
	gen      WatermarkGenerator[T]
	assigner func(T, int64) int64
	idleness int64 // ms; 0: never idle
	cs       *chainState

	c        *Chain
	pos      int   // index in the chain
	interval int64 // ms between periodic emissions; 0: none
	next     int64 // next periodic emission, Unix ms
	last     int64 // highest watermark emitted
	idle     bool
	events   int64 // records seen
	seen     int64 // events at the last periodic emission
	activeAt int64 // when events last changed, Unix ms
}

func newTimestamper[T any](ws WatermarkStrategy[T], cs *chainState) *timestamper[T] {
	t := &timestamper[T]{assigner: ws.assigner, idleness: ws.idleness.Milliseconds(), cs: cs, last: math.MinInt64}
	if ws.newGenerator != nil {
		t.gen = ws.newGenerator()
	} else {
		t.gen = noWatermarks[T]{}
	}
	return t
}

// generatorInst is implemented by operators that run a watermark strategy.
type generatorInst interface {
	attach(c *Chain, pos int)
}

func (s *sourceInst[T]) attach(c *Chain, pos int) {
	if s.ts != nil {
		s.ts.attach(c, pos)
	}
}

func (a *assignerInst[T]) attach(c *Chain, pos int) { a.ts.attach(c, pos) }

func (s *sourceInst[T]) nextTimer() (int64, bool) {
	if s.ts == nil {
		return 0, false
	}
	return s.ts.nextTimer()
}

func (s *sourceInst[T]) fireTimers(now int64) error {
	if s.ts == nil {
		return nil
	}
	return s.ts.fireTimers(now)
}

func (a *assignerInst[T]) nextTimer() (int64, bool)   { return a.ts.nextTimer() }
func (a *assignerInst[T]) fireTimers(now int64) error { return a.ts.fireTimers(now) }

// attach binds the timestamper to its place in the chain once the chain is open; the
// periodic emission starts one interval later.
func (t *timestamper[T]) attach(c *Chain, pos int) {
	t.c, t.pos = c, pos
	t.interval = c.interval.Milliseconds()
	if c.interval > 0 && t.interval == 0 {
		t.interval = 1
	}
	now := c.now().UnixMilli()
	t.next, t.activeAt = now+t.interval, now
}

// assign sets the timestamp of record v as the chain's current one and returns it
// (math.MinInt64 when the record has none).
func (t *timestamper[T]) assign(v T) int64 {
	ts := int64(math.MinInt64)
	if t.cs.ts.ok {
		ts = t.cs.ts.ts
	}
	if t.assigner != nil {
		ts = t.assigner(v, ts)
		t.cs.ts = recordTime{ts: ts, ok: true}
	}
	t.events++
	return ts
}

func (t *timestamper[T]) onEvent(v T, ts int64) { t.gen.OnEvent(v, ts, t) }

func (t *timestamper[T]) nextTimer() (int64, bool) {
	if t.interval <= 0 {
		return 0, false
	}
	return t.next, true
}

// fireTimers makes the periodic emission when it is due: idleness first (no record
// since idleness: idle; records again: active), then the generator's OnPeriodicEmit.
func (t *timestamper[T]) fireTimers(now int64) error {
	if t.interval <= 0 || now < t.next {
		return nil
	}
	t.next = now + t.interval
	if t.idleness > 0 {
		if t.events != t.seen {
			t.seen, t.activeAt = t.events, now
			t.MarkActive()
		} else if now-t.activeAt >= t.idleness {
			t.MarkIdle()
			return t.cs.ft.err
		}
	}
	t.gen.OnPeriodicEmit(t)
	return t.cs.ft.err
}

// EmitWatermark sends wm to the operators after the generator, if it rises.
func (t *timestamper[T]) EmitWatermark(wm int64) {
	if wm <= t.last {
		return
	}
	t.last, t.idle = wm, false
	if err := t.c.advanceWatermark(t.pos+1, wm); err != nil {
		t.cs.ft.fail(err)
	}
}

// MarkIdle tells the operators after the generator that it is idle.
func (t *timestamper[T]) MarkIdle() {
	if t.idle {
		return
	}
	t.idle = true
	if err := t.c.advanceStatus(t.pos+1, true); err != nil {
		t.cs.ft.fail(err)
	}
}

// MarkActive tells the operators after the generator that it is active again.
func (t *timestamper[T]) MarkActive() {
	if !t.idle {
		return
	}
	t.idle = false
	if err := t.c.advanceStatus(t.pos+1, false); err != nil {
		t.cs.ft.fail(err)
	}
}

// watermarkInst is implemented by operators that act on watermarks.
type watermarkInst interface {
	// processWatermark advances the operator's event time to wm (firing its event-time
	// timers); forward says whether wm goes on to the next operator.
	processWatermark(wm int64) (forward bool, err error)
	// processWatermarkStatus reports whether a status change goes on.
	processWatermarkStatus(idle bool) (forward bool)
}

// ProcessWatermark advances the chain's event time to wm (the task's valve made it).
func (c *Chain) ProcessWatermark(wm int64) error { return c.advanceWatermark(0, wm) }

// EmitFinalWatermark gives the final watermark (the maximum) to the chain's operators
// and outputs, so every event-time timer fires: what a source chain does when its input
// ends, and when it drains for a savepoint that stops the job (a source itself takes no
// watermark).
func (c *Chain) EmitFinalWatermark() error {
	from := 0
	if c.source != nil {
		from = 1
	}
	return c.advanceWatermark(from, runtime.MaxWatermark)
}

// ProcessWatermarkStatus passes the task's change of watermark status on.
func (c *Chain) ProcessWatermarkStatus(idle bool) error { return c.advanceStatus(0, idle) }

// advanceWatermark gives wm to the operators from index from on, head first, so that
// what an operator's timers emit reaches the next operators before wm does, then sends
// it on every output.
func (c *Chain) advanceWatermark(from int, wm int64) error {
	for i := from; i < len(c.insts); i++ {
		c.rcs[i].watermark = max(c.rcs[i].watermark, wm)
		wi, ok := c.insts[i].(watermarkInst)
		if !ok {
			continue
		}
		fwd, err := wi.processWatermark(wm)
		if err != nil {
			return fmt.Errorf("operator %s: watermark %d: %w", c.uids[i], wm, err)
		}
		if c.cs.ft.err != nil {
			return c.cs.ft.err
		}
		if !fwd {
			return nil
		}
	}
	if wm <= c.outWM {
		return nil
	}
	c.outWM = wm
	if c.outIdle {
		if err := c.broadcastStatus(false); err != nil {
			return err
		}
	}
	c.eventBuf = runtime.AppendWatermark(c.eventBuf[:0], wm)
	return c.broadcast(c.eventBuf)
}

// advanceStatus gives a status change to the operators from index from on, then to the
// outputs when it changes theirs.
func (c *Chain) advanceStatus(from int, idle bool) error {
	for i := from; i < len(c.insts); i++ {
		if wi, ok := c.insts[i].(watermarkInst); ok && !wi.processWatermarkStatus(idle) {
			return nil
		}
	}
	if idle == c.outIdle {
		return nil
	}
	return c.broadcastStatus(idle)
}

func (c *Chain) broadcastStatus(idle bool) error {
	c.outIdle = idle
	c.eventBuf = runtime.AppendWatermarkStatus(c.eventBuf[:0], idle)
	return c.broadcast(c.eventBuf)
}

// broadcast sends a watermark event on every channel of every output, behind the
// records emitted before it.
func (c *Chain) broadcast(event []byte) error {
	for _, p := range c.spec.Outputs {
		if err := p.BroadcastEvent(exchange.KindWatermark, event); err != nil {
			return err
		}
	}
	return nil
}
