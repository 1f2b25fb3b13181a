package api

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/exchange"
	"github.com/sluice-stream/sluice/pkg/runtime"
	"github.com/sluice-stream/sluice/pkg/state/heap"
)

func TestRecordHeader(t *testing.T) {
	for _, rt := range []recordTime{{}, {ts: 0, ok: true}, {ts: -5, ok: true}, {ts: 1_700_000_000_123, ok: true}, {ts: math.MinInt64, ok: true}, {ts: math.MaxInt64, ok: true}} {
		b := appendRecordHeader(nil, rt)
		b = append(b, "body"...)
		got, body, err := splitRecord(b)
		if err != nil || got != rt || string(body) != "body" {
			t.Errorf("%+v: got %+v %q %v", rt, got, body, err)
		}
	}
	if n := len(appendRecordHeader(nil, recordTime{})); n != 1 {
		t.Errorf("a record without timestamp costs %d bytes, want 1", n)
	}
	for _, bad := range [][]byte{nil, {2}, {1}, {1, 0x80}} {
		if _, _, err := splitRecord(bad); !errors.Is(err, errRecordHeader) {
			t.Errorf("%v: %v, want errRecordHeader", bad, err)
		}
	}
	buf := make([]byte, 0, 64)
	allocs := testing.AllocsPerRun(100, func() {
		b := appendRecordHeader(buf[:0], recordTime{ts: 1_700_000_000_123, ok: true})
		if _, _, err := splitRecord(b); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per record header, want 0", allocs)
	}
}

// listSource emits one batch per Poll: an empty batch reports Idle(time.Second).
type listSource struct {
	Base
	batches [][]int64
}

func (s *listSource) Poll(out Emitter[int64]) (PollResult, error) {
	if len(s.batches) == 0 {
		return End, nil
	}
	b := s.batches[0]
	s.batches = s.batches[1:]
	if len(b) == 0 {
		return Idle(time.Second), nil
	}
	for _, v := range b {
		out.Emit(v)
	}
	return More, nil
}

// testOutput is one output partition of one channel, read through a local gate.
type testOutput struct {
	t    *testing.T
	part *exchange.Partition
	gate *exchange.InputGate
}

func newTestOutput(t *testing.T, ctx context.Context) *testOutput {
	reg := exchange.NewRegistry(4096, 1000)
	key := exchange.ChannelKey{JobID: "j", Attempt: 1}
	gate := exchange.NewInputGate(1, 1000)
	if err := gate.ConnectLocal(reg, 0, 0, key); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gate.Close)
	return &testOutput{t: t, part: reg.NewPartition(ctx, []exchange.ChannelKey{key}), gate: gate}
}

// drain flushes the partition and returns what arrived: "rec <ts or -> <value>" for an
// int64 record, "wm <n>", "idle" and "active".
func (o *testOutput) drain() []string {
	o.t.Helper()
	if err := o.part.Flush(); err != nil {
		o.t.Fatal(err)
	}
	var got []string
	for {
		d, ok := o.gate.Poll()
		if !ok {
			return got
		}
		switch d.Buf.Kind {
		case exchange.KindData:
			recs := exchange.NewRecords(d.Buf.Data)
			for r, ok := recs.Next(); ok; r, ok = recs.Next() {
				rt, body, err := splitRecord(r)
				if err != nil {
					o.t.Fatal(err)
				}
				v, err := Int64Codec{}.Decode(body)
				if err != nil {
					o.t.Fatal(err)
				}
				ts := "-"
				if rt.ok {
					ts = fmt.Sprint(rt.ts)
				}
				got = append(got, fmt.Sprintf("rec %s %d", ts, v))
			}
		case exchange.KindWatermark:
			e, err := runtime.DecodeWatermark(d.Buf.Data)
			if err != nil {
				o.t.Fatal(err)
			}
			switch {
			case !e.IsStatus:
				got = append(got, fmt.Sprintf("wm %d", e.Watermark))
			case e.Idle:
				got = append(got, "idle")
			default:
				got = append(got, "active")
			}
		default:
			got = append(got, d.Buf.Kind.String())
		}
		o.gate.Recycle(d)
	}
}

func (o *testOutput) expect(want ...string) {
	o.t.Helper()
	if got := o.drain(); !slices.Equal(got, want) {
		o.t.Fatalf("output:\n  got  %q\n  want %q", got, want)
	}
}

// fakeClock is a chain's clock that the test moves.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time      { return c.now }
func (c *fakeClock) add(d time.Duration) { c.now = c.now.Add(d) }
func newFakeClock() *fakeClock           { return &fakeClock{now: time.UnixMilli(1_000_000)} }
func identityTS(v int64, _ int64) int64  { return v }
func intSink() func() Sink[int64]        { return func() Sink[int64] { return nopSink[int64]{} } }
func maxWM() string                      { return fmt.Sprintf("wm %d", int64(math.MaxInt64)) }
func poll(t *testing.T, c *Chain) (bool, time.Duration) {
	t.Helper()
	done, wait, err := c.PollSource()
	if err != nil {
		t.Fatal(err)
	}
	return done, wait
}

// newTestChain builds the chain of vertex v with one output (if the vertex has one).
func newTestChain(t *testing.T, ctx context.Context, prog *Program, v int, clock *fakeClock) (*Chain, *testOutput) {
	t.Helper()
	vx := prog.Plan.Vertices[v]
	spec := ChainSpec{Vertex: vx, Log: quiet(), State: heap.Factory{}, LocalDir: t.TempDir()}
	var out *testOutput
	if len(vx.Outputs) > 0 {
		out = newTestOutput(t, ctx)
		spec.Outputs, spec.ConsumerParallelism = []*exchange.Partition{out.part}, []int{1}
	}
	c, err := prog.NewChain(spec)
	if err != nil {
		t.Fatal(err)
	}
	if clock != nil {
		c.now = clock.Now
	}
	if err := c.Open(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, out
}

// TestSourceWatermarks follows one source subtask with a bounded-out-of-orderness
// strategy and idleness: timestamps on the wire, periodic watermarks, idleness and the
// final watermark.
func TestSourceWatermarks(t *testing.T) {
	ctx := context.Background()
	env := NewEnv("wm", quiet())
	env.SetAutoWatermarkInterval(100 * time.Millisecond)
	src := &listSource{batches: [][]int64{{10, 12, 11}, {20}, {}, {}, {}, {30}}}
	ws := ForBoundedOutOfOrderness[int64](5 * time.Millisecond).WithTimestampAssigner(identityTS).WithIdleness(time.Second)
	s := FromSourceWithWatermarks(env, func() Source[int64] { return src }, ws).UID("src")
	SinkTo(s.Rebalance(), intSink())
	prog, err := env.Compile()
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	c, out := newTestChain(t, ctx, prog, 0, clock)

	poll(t, c)
	out.expect("rec 10 10", "rec 12 12", "rec 11 11") // no watermark before the interval
	clock.add(100 * time.Millisecond)
	poll(t, c)
	out.expect("rec 20 20", "wm 14") // 20 - 5 - 1
	if _, wait := poll(t, c); wait != 100*time.Millisecond {
		t.Fatalf("an idle source waits %v, want the 100ms to the next periodic watermark", wait)
	}
	clock.add(100 * time.Millisecond)
	poll(t, c)
	out.expect() // the same watermark is not sent again; not idle for a second yet
	clock.add(time.Second)
	poll(t, c)
	out.expect("idle")
	clock.add(100 * time.Millisecond)
	poll(t, c)
	out.expect("rec 30 30", "active", "wm 24")
	if done, _ := poll(t, c); !done {
		t.Fatal("source not done")
	}
	out.expect(maxWM())
}

// TestAssignerReplacesWatermarks: an assigner chained to a source without a strategy
// gives the records timestamps and its own watermarks; the source's final watermark
// still passes, once.
func TestAssignerReplacesWatermarks(t *testing.T) {
	ctx := context.Background()
	env := NewEnv("assign", quiet())
	env.SetAutoWatermarkInterval(50 * time.Millisecond)
	src := &listSource{batches: [][]int64{{7, 9}, {8}}}
	s := FromSource(env, func() Source[int64] { return src }).
		AssignTimestampsAndWatermarks(ForMonotonousTimestamps[int64]().WithTimestampAssigner(func(v, prev int64) int64 {
			if prev != math.MinInt64 {
				t.Errorf("a source record without timestamp came with %d", prev)
			}
			return v * 100
		})).UID("ts")
	SinkTo(s.Rebalance(), intSink())
	prog, err := env.Compile()
	if err != nil {
		t.Fatal(err)
	}
	if got := prog.Plan.Vertices[0].Name; !strings.Contains(got, "ts") {
		t.Fatalf("the assigner is not chained to the source: vertex %q", got)
	}
	clock := newFakeClock()
	c, out := newTestChain(t, ctx, prog, 0, clock)
	clock.add(50 * time.Millisecond)
	poll(t, c)
	out.expect("rec 700 7", "rec 900 9", "wm 899")
	clock.add(50 * time.Millisecond)
	poll(t, c)
	out.expect("rec 800 8") // late: the watermark does not go back
	poll(t, c)
	out.expect(maxWM())
	// An upstream watermark other than the final one stops at the assigner.
	if err := c.advanceWatermark(1, 5000); err != nil {
		t.Fatal(err)
	}
	out.expect()
}

// timerLog registers an event-time timer at every record's timestamp and reports, for
// every timer, the key, its time and the watermark firing it.
type timerLog struct {
	KeyedBase
	t *testing.T
}

func (f *timerLog) Process(kc *KeyedContext, key string, v int64, out Emitter[string]) error {
	ts, ok := kc.Timestamp()
	if !ok || ts != v {
		f.t.Errorf("record %s/%d has timestamp %d %v", key, v, ts, ok)
	}
	if v <= kc.CurrentWatermark() {
		out.Emit(fmt.Sprintf("late %s %d", key, v))
	}
	return kc.RegisterEventTimer(ts)
}

func (f *timerLog) OnTimer(kc *KeyedContext, key string, ts int64, out Emitter[string]) error {
	out.Emit(fmt.Sprintf("timer %s %d at %d", key, ts, kc.CurrentWatermark()))
	return nil
}

type collectSink struct {
	Base
	rc  *RuntimeContext
	got *[]string
}

func (s *collectSink) Open(_ context.Context, rc *RuntimeContext) error { s.rc = rc; return nil }
func (s *collectSink) Finish() error                                    { return nil }
func (s *collectSink) Write(v string) error {
	if ts, ok := s.rc.Timestamp(); ok {
		v += fmt.Sprintf(" (ts %d)", ts)
	}
	*s.got = append(*s.got, v)
	return nil
}

// TestEventTimeTimers drives a keyed chain with records and watermarks as its task
// would: timers fire in order when the watermark passes them, their output carries the
// timer's time, late records are processed and their timers fire at the next watermark.
func TestEventTimeTimers(t *testing.T) {
	ctx := context.Background()
	env := NewEnv("timers", quiet())
	src := FromSource(env, func() Source[tsRec] { return nopSource[tsRec]{} })
	fired := ProcessKeyed(KeyBy(src, func(r tsRec) string { return r.Key }),
		func() KeyedProcessFunction[string, tsRec, string] { return &adaptTimerLog{timerLog{t: t}} })
	var got []string
	SinkTo(fired, func() Sink[string] { return &collectSink{got: &got} })
	prog, err := env.Compile()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := newTestChain(t, ctx, prog, 1, nil)
	codec, _ := CodecFor[tsRec]()
	send := func(key string, ts int64) {
		t.Helper()
		b := appendRecordHeader(nil, recordTime{ts: ts, ok: true})
		if err := c.ProcessRecord(0, codec.Append(b, tsRec{key, ts})); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want ...string) {
		t.Helper()
		if !slices.Equal(got, want) {
			t.Fatalf("sink got\n  %q\nwant\n  %q", got, want)
		}
		got = got[:0]
	}
	send("a", 10)
	send("b", 5)
	send("a", 20)
	expect()
	if err := c.ProcessWatermark(10); err != nil {
		t.Fatal(err)
	}
	expect("timer b 5 at 10 (ts 5)", "timer a 10 at 10 (ts 10)")
	send("c", 3) // late
	expect("late c 3 (ts 3)")
	if err := c.ProcessWatermark(15); err != nil {
		t.Fatal(err)
	}
	expect("timer c 3 at 15 (ts 3)")
	if err := c.EndInput(); err != nil {
		t.Fatal(err)
	}
	expect(fmt.Sprintf("timer a 20 at %d (ts 20)", int64(math.MaxInt64)))
}

type tsRec struct {
	Key string
	TS  int64
}

// adaptTimerLog runs timerLog on tsRec records.
type adaptTimerLog struct{ timerLog }

func (a *adaptTimerLog) Process(kc *KeyedContext, key string, r tsRec, out Emitter[string]) error {
	return a.timerLog.Process(kc, key, r.TS, out)
}

func TestWatermarkStrategyErrors(t *testing.T) {
	env := NewEnv("bad", quiet())
	FromSourceWithWatermarks(env, func() Source[int64] { return &listSource{} }, ForBoundedOutOfOrderness[int64](-time.Second))
	FromSource(env, func() Source[int64] { return &listSource{} }).AssignTimestampsAndWatermarks(NoWatermarks[int64]().WithIdleness(0))
	env.SetAutoWatermarkInterval(-time.Millisecond)
	_, err := env.Compile()
	for _, want := range []string{"out-of-orderness -1s is negative", "idleness 0s is not positive", "interval -1ms is negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("compile error %v, want it to say %q", err, want)
		}
	}
}
