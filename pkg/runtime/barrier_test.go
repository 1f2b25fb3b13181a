package runtime

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/exchange"
)

// recChain records the records it processed.
type recChain struct {
	fakeChain
	seen []string
	// hold, if set, is waited on after processing the record of that name.
	hold     map[string]chan struct{}
	holdSeen chan string
}

func (c *recChain) ProcessRecord(_ int, rec []byte) error {
	c.seen = append(c.seen, string(rec))
	if ch := c.hold[string(rec)]; ch != nil {
		c.holdSeen <- string(rec)
		<-ch
	}
	return nil
}

// recCheckpoints records, per checkpoint, what the chain had seen at the snapshot.
type recCheckpoints struct {
	chain     *recChain
	snapshots map[int64][]string
	barriers  map[int64]Barrier
	channels  map[int64]ChannelState
	aborted   []int64
}

func (r *recCheckpoints) Snapshot(b Barrier, _ Alignment) error {
	r.snapshots[b.ID] = slices.Clone(r.chain.seen)
	r.barriers[b.ID] = b
	return nil
}
func (r *recCheckpoints) ChannelState(id int64, cs ChannelState) { r.channels[id] = cs }
func (r *recCheckpoints) Abort(id int64, _ error)                { r.aborted = append(r.aborted, id) }
func (r *recCheckpoints) SourceEnded()                           {}

type alignHarness struct {
	t        *testing.T
	ctx      context.Context
	prods    []*exchange.Partition
	task     *Task
	chain    *recChain
	cps      *recCheckpoints
	out      *exchange.InputGate // downstream of the task, to see forwarded barriers
	errc     chan error
	outItems chan string
}

// newAlignHarness: n producer partitions (driven by the test) feed one task whose output
// goes to a gate the harness drains.
func newAlignHarness(t *testing.T, n int) *alignHarness { return newAlignHarnessWith(t, n, nil) }

// newAlignHarnessWith starts the task restoring inFlight.
func newAlignHarnessWith(t *testing.T, n int, inFlight *ChannelState) *alignHarness {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg := exchange.NewRegistry(1024, 4)
	h := &alignHarness{t: t, ctx: ctx, errc: make(chan error, 1), outItems: make(chan string, 1000)}
	gate := exchange.NewInputGate(n, 4)
	for i := 0; i < n; i++ {
		key := exchange.ChannelKey{JobID: "j", Attempt: 1, Edge: 0, Producer: int32(i)}
		if err := gate.ConnectLocal(reg, i, 0, key); err != nil {
			t.Fatal(err)
		}
		h.prods = append(h.prods, reg.NewPartition(ctx, []exchange.ChannelKey{key}))
	}
	outKey := exchange.ChannelKey{JobID: "j", Attempt: 1, Edge: 1}
	h.out = exchange.NewInputGate(1, 1000)
	if err := h.out.ConnectLocal(reg, 0, 0, outKey); err != nil {
		t.Fatal(err)
	}
	h.chain = &recChain{hold: map[string]chan struct{}{}, holdSeen: make(chan string, 10)}
	h.cps = &recCheckpoints{chain: h.chain, snapshots: map[int64][]string{}, barriers: map[int64]Barrier{}, channels: map[int64]ChannelState{}}
	h.task = &Task{Name: "t", Chain: h.chain, Gate: gate, Outputs: []*exchange.Partition{reg.NewPartition(ctx, []exchange.ChannelKey{outKey})},
		Metrics: &Metrics{}, BufferTimeout: -1, Checkpoints: h.cps, InFlight: inFlight}
	go func() { h.errc <- h.task.Run(ctx) }()
	go func() {
		for {
			d, ok := h.out.Poll()
			if !ok {
				select {
				case <-h.out.Ready():
					continue
				case <-ctx.Done():
					return
				}
			}
			switch d.Buf.Kind {
			case exchange.KindPriorityBarrier:
				b, _ := DecodeBarrier(d.Buf.Data)
				h.outItems <- fmt.Sprintf("priority barrier %d", b.ID)
			case exchange.KindBarrier:
				b, _ := DecodeBarrier(d.Buf.Data)
				h.outItems <- fmt.Sprintf("barrier %d", b.ID)
			case exchange.KindData:
				recs := exchange.NewRecords(d.Buf.Data)
				for r, ok := recs.Next(); ok; r, ok = recs.Next() {
					h.outItems <- "data " + string(r)
				}
			case exchange.KindEndOfPartition:
				h.outItems <- "end"
			}
			h.out.Recycle(d)
		}
	}()
	return h
}

func (h *alignHarness) records(p int, prefix string, from, to int) {
	for i := from; i <= to; i++ {
		if err := h.prods[p].Emit(0, []byte(fmt.Sprintf("%s%d", prefix, i))); err != nil {
			h.t.Fatal(err)
		}
	}
	if err := h.prods[p].Flush(); err != nil {
		h.t.Fatal(err)
	}
}

func (h *alignHarness) barrier(p int, id int64, mode Mode) {
	b := Barrier{ID: id, TriggerUnixMilli: time.Now().UnixMilli(), Mode: mode}
	if err := h.prods[p].BroadcastEvent(exchange.KindBarrier, b.Encode()); err != nil {
		h.t.Fatal(err)
	}
}

func (h *alignHarness) finish() []string {
	for _, p := range h.prods {
		if err := p.Finish(); err != nil {
			h.t.Fatal(err)
		}
	}
	select {
	case err := <-h.errc:
		if err != nil {
			h.t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("task did not finish")
	}
	var out []string
	for {
		item := <-h.outItems
		out = append(out, item)
		if item == "end" {
			return out
		}
	}
}

// waitSeen polls until the task processed n records.
func (h *alignHarness) waitSeen(n int) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := int(h.task.Metrics.RecordsIn.Load())
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("task processed %d records, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestExactlyOnceAlignment(t *testing.T) {
	h := newAlignHarness(t, 2)
	h.records(0, "a", 1, 5)
	h.barrier(0, 1, ExactlyOnce)
	h.records(0, "a", 6, 10) // must wait: channel 0 is past the barrier
	h.records(1, "b", 1, 5)
	h.waitSeen(10)
	if got := h.task.Metrics.RecordsIn.Load(); got != 10 {
		t.Fatalf("processed %d records before channel 1's barrier, want 10 (a6..a10 held)", got)
	}
	h.barrier(1, 1, ExactlyOnce)
	h.records(1, "b", 6, 10)
	out := h.finish()
	snap := h.cps.snapshots[1]
	slices.Sort(snap)
	want := []string{"a1", "a2", "a3", "a4", "a5", "b1", "b2", "b3", "b4", "b5"}
	slices.Sort(want)
	if !slices.Equal(snap, want) {
		t.Fatalf("snapshot 1 saw %v, want exactly %v", snap, want)
	}
	if len(h.chain.seen) != 20 {
		t.Fatalf("processed %d records, want 20", len(h.chain.seen))
	}
	if strings.Join(out, ",") != "barrier 1,end" {
		t.Fatalf("downstream got %v, want the barrier then the end", out)
	}
}

func TestAtLeastOnceDoesNotBlock(t *testing.T) {
	h := newAlignHarness(t, 2)
	h.records(0, "a", 1, 5)
	h.barrier(0, 1, AtLeastOnce)
	h.records(0, "a", 6, 10)
	h.waitSeen(10) // a6..a10 pass although channel 1 has not delivered the barrier
	h.barrier(1, 1, AtLeastOnce)
	out := h.finish()
	if len(h.cps.snapshots[1]) != 10 {
		t.Fatalf("snapshot saw %d records, want 10", len(h.cps.snapshots[1]))
	}
	if strings.Join(out, ",") != "barrier 1,end" {
		t.Fatalf("downstream got %v", out)
	}
}

func TestNewerBarrierAbortsAlignment(t *testing.T) {
	h := newAlignHarness(t, 2)
	h.barrier(0, 1, ExactlyOnce)
	h.records(0, "a", 1, 3)
	h.barrier(1, 2, ExactlyOnce) // channel 1 skipped checkpoint 1
	h.barrier(0, 2, ExactlyOnce)
	out := h.finish()
	if !slices.Equal(h.cps.aborted, []int64{1}) {
		t.Fatalf("aborted %v, want [1]", h.cps.aborted)
	}
	if _, ok := h.cps.snapshots[2]; !ok {
		t.Fatal("checkpoint 2 was not taken")
	}
	if strings.Join(out, ",") != "barrier 2,end" {
		t.Fatalf("downstream got %v", out)
	}
}

func TestFinishedChannelCountsAsAligned(t *testing.T) {
	h := newAlignHarness(t, 2)
	h.barrier(0, 1, ExactlyOnce)
	h.records(0, "a", 1, 2)
	if err := h.prods[1].Finish(); err != nil {
		t.Fatal(err)
	}
	if err := h.prods[0].Finish(); err != nil {
		t.Fatal(err)
	}
	if err := <-h.errc; err != nil {
		t.Fatal(err)
	}
	if _, ok := h.cps.snapshots[1]; !ok {
		t.Fatal("checkpoint 1 was not taken after the other channel ended")
	}
}

func TestBarrierEncoding(t *testing.T) {
	for _, b := range []Barrier{
		{ID: 42, TriggerUnixMilli: 1700000000000, Mode: AtLeastOnce, Savepoint: true, Unaligned: true, AlignedTimeoutMs: 30000},
		{ID: 7, TriggerUnixMilli: 1700000000000, Mode: ExactlyOnce, Full: true},
		{ID: 8, Mode: ExactlyOnce, Savepoint: true, Unaligned: true, Full: true},
		{ID: 9, Mode: ExactlyOnce, Savepoint: true, Native: true, Stop: true, Target: "file:///sp/savepoint-0a1b2c-0123456789ab"},
		{ID: 10, Mode: ExactlyOnce, Savepoint: true, Target: "s3://bucket/sp/savepoint-0a1b2c-0123456789ab?region=eu-west-1&endpoint=" + strings.Repeat("x", 200)},
	} {
		data := b.Encode()
		got, err := DecodeBarrier(data)
		if err != nil || got != b {
			t.Fatalf("round trip: %+v, %v", got, err)
		}
		if full := data[17]&4 != 0; full != b.Full {
			t.Fatalf("%+v: flags byte %#x, want bit 2 = full", b, data[17])
		}
	}
	if _, err := DecodeBarrier([]byte{1, 2}); err == nil {
		t.Fatal("short barrier decoded")
	}
	bad := Barrier{ID: 1, Mode: ExactlyOnce}.Encode()
	bad[17] = 64 // no flag bit 6
	if _, err := DecodeBarrier(bad); !errors.Is(err, ErrBadBarrier) {
		t.Fatalf("unknown flag bit: %v", err)
	}
	sp := Barrier{ID: 2, Mode: ExactlyOnce, Savepoint: true, Stop: true, Target: "file:///sp/x"}.Encode()
	for name, data := range map[string][]byte{
		"savepoint flags without the savepoint bit": func() []byte { b := slices.Clone(sp); b[17] &^= 1; return b }(),
		"target flag without target":                Barrier{ID: 1, Mode: ExactlyOnce, Savepoint: true}.Encode(),
		"truncated target":                          sp[:len(sp)-1],
		"trailing byte after the target":            append(slices.Clone(sp), 0),
		"trailing byte without target":              append(Barrier{ID: 1, Mode: ExactlyOnce}.Encode(), 0),
		"empty target": func() []byte {
			b := Barrier{ID: 1, Mode: ExactlyOnce, Savepoint: true}.Encode()
			b[17] |= 32
			return append(b, 0)
		}(),
		"target too long":  Barrier{ID: 1, Mode: ExactlyOnce, Savepoint: true, Target: strings.Repeat("x", MaxBarrierTarget+1)}.Encode(),
		"non-minimal size": append(append(Barrier{ID: 1, Mode: ExactlyOnce, Savepoint: true, Target: "ab"}.Encode()[:barrierLen], 0x82, 0x00), 'a', 'b'),
	} {
		if name == "target flag without target" {
			data[17] |= 32
		}
		if _, err := DecodeBarrier(data); !errors.Is(err, ErrBadBarrier) {
			t.Errorf("%s: decoded (%v)", name, err)
		}
	}
}

func FuzzDecodeBarrier(f *testing.F) {
	f.Add(Barrier{ID: 1, Mode: ExactlyOnce}.Encode())
	f.Add(Barrier{ID: 2, Mode: AtLeastOnce, Full: true, Unaligned: true}.Encode())
	f.Add(Barrier{ID: 3, Mode: ExactlyOnce, Savepoint: true, Native: true, Stop: true, Target: "file:///sp/savepoint-0a1b2c-0123456789ab"}.Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBarrier(data)
		if err == nil && string(b.Encode()) != string(data) {
			t.Fatalf("decoded %+v does not re-encode to the input", b)
		}
	})
}
