package runtime

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/exchange"
)

func (c *fakeChain) ProcessWatermark(int64) error      { return nil }
func (c *fakeChain) ProcessWatermarkStatus(bool) error { return nil }

const minWM = math.MinInt64

// step is one input to the valve: a watermark, idle, active or end of channel ch.
type step struct {
	op string // "wm", "idle", "active", "end"
	ch int
	wm int64
}

func wm(ch int, w int64) step { return step{op: "wm", ch: ch, wm: w} }
func idle(ch int) step        { return step{op: "idle", ch: ch} }
func active(ch int) step      { return step{op: "active", ch: ch} }
func end(ch int) step         { return step{op: "end", ch: ch} }

// render is what a valve output means to the chain, "" for nothing.
func render(o ValveOutput) string {
	var parts []string
	if o.Advanced {
		parts = append(parts, fmt.Sprintf("wm %d", o.Watermark))
	}
	if o.StatusChanged {
		if o.Idle {
			parts = append(parts, "idle")
		} else {
			parts = append(parts, "active")
		}
	}
	return strings.Join(parts, ", ")
}

func TestValve(t *testing.T) {
	tests := []struct {
		name  string
		n     int
		steps []step
		want  []string // output after each step
	}{
		{"one channel passes rising watermarks", 1,
			[]step{wm(0, 5), wm(0, 5), wm(0, 3), wm(0, 9)},
			[]string{"wm 5", "", "", "wm 9"}},
		{"minimum over channels", 3,
			[]step{wm(0, 10), wm(1, 20), wm(2, 5), wm(2, 15), wm(0, 30), wm(2, 40)},
			[]string{"", "", "wm 5", "wm 10", "wm 15", "wm 20"}},
		{"a channel without watermarks holds the output back", 2,
			[]step{wm(0, 10), wm(0, 20)},
			[]string{"", ""}},
		{"an idle channel is left out", 2,
			[]step{wm(0, 10), idle(1), wm(0, 20)},
			[]string{"", "wm 10", "wm 20"}},
		{"an idle channel's watermarks are ignored", 2,
			[]step{idle(1), wm(1, 100), wm(0, 10)},
			[]string{"", "", "wm 10"}},
		{"all idle: the highest watermark, then idle", 2,
			[]step{wm(0, 10), wm(1, 20), idle(0), idle(1)},
			[]string{"", "wm 10", "wm 20", "idle"}},
		{"all idle at the start", 2,
			[]step{idle(0), idle(1)},
			[]string{"", "idle"}},
		{"active again after all idle", 2,
			[]step{idle(0), idle(1), active(1), wm(1, 7)},
			[]string{"", "idle", "active", "wm 7"}},
		{"a resumed channel behind the output does not move it back", 2,
			[]step{wm(0, 10), wm(1, 50), idle(0), active(0), wm(1, 60), wm(0, 20), wm(0, 55), wm(0, 70), wm(1, 80)},
			// After active(0) channel 0 (at 10) is not aligned: channel 1 alone drives the
			// output until channel 0 catches up with it (70 >= 60).
			[]string{"", "wm 10", "wm 50", "", "wm 60", "", "", "", "wm 70"}},
		{"an ended channel is left out", 2,
			[]step{wm(0, 10), wm(1, 20), end(0), wm(1, 30)},
			[]string{"", "wm 10", "wm 20", "wm 30"}},
		{"the last channel ending emits nothing", 2,
			[]step{wm(0, 10), end(0), end(1)},
			[]string{"", "", ""}},
		{"ending leaves only idle channels: idle", 2,
			[]step{wm(0, 10), wm(1, 20), idle(1), end(0)},
			[]string{"", "wm 10", "", "wm 20, idle"}},
		{"events of an ended channel are ignored", 2,
			[]step{end(0), wm(0, 100), idle(0), wm(1, 5)},
			[]string{"", "", "", "wm 5"}},
		{"the final watermark", 2,
			[]step{wm(0, math.MaxInt64), wm(1, 3), wm(1, math.MaxInt64)},
			[]string{"", "wm 3", fmt.Sprintf("wm %d", int64(math.MaxInt64))}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := NewValve(tt.n)
			if v.Watermark() != minWM || v.Idle() {
				t.Fatalf("new valve at %d, idle %v", v.Watermark(), v.Idle())
			}
			last := int64(minWM)
			for i, s := range tt.steps {
				var o ValveOutput
				switch s.op {
				case "wm":
					o = v.Input(s.ch, WatermarkEvent{Watermark: s.wm})
				case "idle":
					o = v.Input(s.ch, WatermarkEvent{IsStatus: true, Idle: true})
				case "active":
					o = v.Input(s.ch, WatermarkEvent{IsStatus: true})
				case "end":
					o = v.End(s.ch)
				}
				if got := render(o); got != tt.want[i] {
					t.Fatalf("step %d (%s %d %d): got %q, want %q", i, s.op, s.ch, s.wm, got, tt.want[i])
				}
				if o.Advanced {
					if o.Watermark <= last {
						t.Fatalf("step %d: output %d after %d", i, o.Watermark, last)
					}
					last = o.Watermark
				}
				if v.Watermark() != last {
					t.Fatalf("step %d: Watermark() = %d, want %d", i, v.Watermark(), last)
				}
			}
		})
	}
}

func TestWatermarkEncoding(t *testing.T) {
	for _, w := range []int64{math.MinInt64, -1, 0, 1700000000000, math.MaxInt64} {
		e, err := DecodeWatermark(AppendWatermark(nil, w))
		if err != nil || e.IsStatus || e.Watermark != w {
			t.Errorf("watermark %d: %+v %v", w, e, err)
		}
	}
	for _, idle := range []bool{true, false} {
		e, err := DecodeWatermark(AppendWatermarkStatus(nil, idle))
		if err != nil || !e.IsStatus || e.Idle != idle {
			t.Errorf("status idle=%v: %+v %v", idle, e, err)
		}
	}
	for _, bad := range [][]byte{nil, {1, 0}, {2, 0}, {9}, make([]byte, 9)} {
		if _, err := DecodeWatermark(bad); !errors.Is(err, ErrBadWatermark) {
			t.Errorf("%v: %v, want ErrBadWatermark", bad, err)
		}
	}
}

// wmChain records the records, watermarks and status changes that reach it, in order.
type wmChain struct {
	fakeChain
	events chan string
}

func (c *wmChain) ProcessRecord(_ int, rec []byte) error {
	c.events <- "rec " + string(rec)
	return nil
}

func (c *wmChain) ProcessWatermark(wm int64) error {
	c.events <- fmt.Sprintf("wm %d", wm)
	return nil
}

func (c *wmChain) ProcessWatermarkStatus(idle bool) error {
	if idle {
		c.events <- "idle"
	} else {
		c.events <- "active"
	}
	return nil
}

// TestTaskWatermarks runs the valve inside a task: two producers send records and
// watermark events, in order with the records; the chain sees the combined watermark.
// Every channel grants one credit, so the test also shows that watermark buffers are
// recycled (the producers could not send a second buffer otherwise).
func TestTaskWatermarks(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := exchange.NewRegistry(1024, 4)
	gate := exchange.NewInputGate(2, 1)
	var prods []*exchange.Partition
	for i := 0; i < 2; i++ {
		key := exchange.ChannelKey{JobID: "j", Attempt: 1, Producer: int32(i)}
		if err := gate.ConnectLocal(reg, i, 0, key); err != nil {
			t.Fatal(err)
		}
		prods = append(prods, reg.NewPartition(ctx, []exchange.ChannelKey{key}))
	}
	chain := &wmChain{events: make(chan string, 100)}
	task := &Task{Name: "t", Chain: chain, Gate: gate, Metrics: &Metrics{}, BufferTimeout: -1}
	errc := make(chan error, 1)
	go func() { errc <- task.Run(ctx) }()

	expect := func(want ...string) {
		t.Helper()
		for _, w := range want {
			select {
			case got := <-chain.events:
				if got != w {
					t.Fatalf("chain saw %q, want %q", got, w)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("chain saw nothing, want %q", w)
			}
		}
	}
	send := func(p int, events ...any) {
		t.Helper()
		for _, e := range events {
			var err error
			switch e := e.(type) {
			case string:
				if err = prods[p].Emit(0, []byte(e)); err == nil {
					err = prods[p].Flush()
				}
			case int64:
				err = prods[p].BroadcastEvent(exchange.KindWatermark, AppendWatermark(nil, e))
			case bool:
				err = prods[p].BroadcastEvent(exchange.KindWatermark, AppendWatermarkStatus(nil, e))
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	send(0, int64(10), int64(20), "a")
	expect("rec a")
	send(1, int64(15), "b")
	expect("wm 15", "rec b")
	send(1, true) // channel 1 idle: channel 0 alone (at 20)
	expect("wm 20")
	send(0, true) // all idle
	expect("idle")
	send(0, false, int64(30))
	expect("active", "wm 30")
	send(1, false, int64(25), int64(40), "c") // 25 is behind the output: channel 1 rejoins at 40
	expect("rec c")
	send(0, int64(50))
	expect("wm 40")
	if err := prods[1].Finish(); err != nil { // channel 1 ends: channel 0 (at 50) alone
		t.Fatal(err)
	}
	expect("wm 50")
	send(0, int64(math.MaxInt64))
	expect(fmt.Sprintf("wm %d", int64(math.MaxInt64)))
	if err := prods[0].Finish(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-chain.events:
		t.Fatalf("unexpected %q after the end", e)
	default:
	}
}

func TestTaskFailsOnMalformedWatermark(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := exchange.NewRegistry(1024, 4)
	gate := exchange.NewInputGate(1, 2)
	key := exchange.ChannelKey{JobID: "j", Attempt: 1}
	if err := gate.ConnectLocal(reg, 0, 0, key); err != nil {
		t.Fatal(err)
	}
	prod := reg.NewPartition(ctx, []exchange.ChannelKey{key})
	task := &Task{Name: "t", Chain: &fakeChain{}, Gate: gate, Metrics: &Metrics{}, BufferTimeout: -1}
	if err := prod.BroadcastEvent(exchange.KindWatermark, []byte{7}); err != nil {
		t.Fatal(err)
	}
	if err := task.Run(ctx); !errors.Is(err, ErrBadWatermark) {
		t.Fatalf("task error = %v, want ErrBadWatermark", err)
	}
}
