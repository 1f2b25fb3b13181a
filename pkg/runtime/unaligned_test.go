package runtime

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/exchange"
)

// priorityBarrier sends an unaligned barrier from producer p and returns the records it
// overtook there (the producer's output channel state).
func (h *alignHarness) priorityBarrier(p int, id int64) []string {
	b := Barrier{ID: id, TriggerUnixMilli: time.Now().UnixMilli(), Mode: ExactlyOnce, Unaligned: true}
	over, err := h.prods[p].BroadcastPriority(b.Encode())
	if err != nil {
		h.t.Fatal(err)
	}
	return recordsOf(over[0])
}

func recordsOf(bufs [][]byte) []string {
	var out []string
	for _, b := range bufs {
		recs := exchange.NewRecords(b)
		for r, ok := recs.Next(); ok; r, ok = recs.Next() {
			out = append(out, string(r))
		}
	}
	return out
}

func names(prefix string, from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, fmt.Sprintf("%s%d", prefix, i))
	}
	return out
}

// assertCut checks the unaligned invariant: the snapshot, the task's recorded input and
// the producers' overtaken output together hold every record before the barrier exactly
// once, and nothing after it.
func assertCut(t *testing.T, parts map[string][]string, want []string) {
	t.Helper()
	var all []string
	for _, p := range parts {
		all = append(all, p...)
	}
	slices.Sort(all)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(all, want) {
		t.Fatalf("snapshot + in-flight data = %v\nwant exactly %v\nparts: %v", all, want, parts)
	}
}

func TestUnalignedBarrierOvertakesInFlightData(t *testing.T) {
	h := newAlignHarness(t, 2)
	release := make(chan struct{})
	h.chain.hold["a1"] = release
	// Channel 0: eight buffers of five records; the task stops inside the first, so the
	// gate fills with its four credited buffers and the producer's queue (of four) with
	// the rest.
	for i := 0; i < 8; i++ {
		h.records(0, "a", 5*i+1, 5*i+5)
	}
	<-h.chain.holdSeen
	over0 := h.priorityBarrier(0, 1)
	h.records(1, "b", 1, 5)
	over1 := h.priorityBarrier(1, 1)
	h.records(1, "b", 6, 10)
	close(release)
	h.records(0, "a", 41, 45) // after the barrier
	out := h.finish()

	if len(over0) == 0 {
		t.Fatal("the barrier overtook nothing in producer 0's queue; the test did not build up in-flight data")
	}
	b := h.cps.barriers[1]
	if !b.Unaligned {
		t.Fatalf("snapshot barrier %+v is not marked unaligned", b)
	}
	cs, ok := h.cps.channels[1]
	if !ok {
		t.Fatal("no channel state for checkpoint 1")
	}
	// The barrier did not wait for the rest of the buffer being processed: a2..a5 are
	// in-flight data.
	if got := strings.Join(h.cps.snapshots[1], ","); got != "a1" {
		t.Fatalf("snapshot saw %s, want a1 only (taken between two records of a buffer)", got)
	}
	in := recordsOf(slices.Concat(cs.Input...))
	if len(recordsOf(cs.Input[0])) == 0 {
		t.Fatal("no input channel state recorded on channel 0, though the gate held its buffers")
	}
	assertCut(t, map[string][]string{"snapshot": h.cps.snapshots[1], "input": in, "out0": over0, "out1": over1},
		slices.Concat(names("a", 1, 40), names("b", 1, 5)))
	if len(h.chain.seen) != 55 {
		t.Fatalf("processed %d records, want 55", len(h.chain.seen))
	}
	// The barrier went downstream as a priority barrier, ahead of the task's output.
	if strings.Join(out, ",") != "priority barrier 1,end" {
		t.Fatalf("downstream got %v", out)
	}
	if len(h.cps.aborted) != 0 {
		t.Fatalf("aborted %v", h.cps.aborted)
	}
}

func TestAlignedTimeoutSwitchesToUnaligned(t *testing.T) {
	h := newAlignHarness(t, 2)
	h.records(0, "a", 1, 5)
	b := Barrier{ID: 1, TriggerUnixMilli: time.Now().UnixMilli(), Mode: ExactlyOnce, AlignedTimeoutMs: 100}
	if err := h.prods[0].BroadcastEvent(exchange.KindBarrier, b.Encode()); err != nil {
		t.Fatal(err)
	}
	h.records(0, "a", 6, 10) // held while aligned, released by the switch
	h.records(1, "b", 1, 5)
	// After the timeout the task goes unaligned: a6..a10 are processed without channel
	// 1's barrier.
	h.waitSeen(15)
	if _, ok := h.cps.snapshots[1]; !ok {
		t.Fatal("no snapshot after the aligned timeout")
	}
	h.records(1, "b", 6, 10) // still before channel 1's barrier: in-flight data
	if err := h.prods[1].BroadcastEvent(exchange.KindBarrier, b.Encode()); err != nil {
		t.Fatal(err)
	}
	h.records(1, "b", 11, 15)
	out := h.finish()
	cs, ok := h.cps.channels[1]
	if !ok {
		t.Fatal("no channel state for checkpoint 1")
	}
	if got := recordsOf(cs.Input[1]); !slices.Contains(got, "b6") {
		t.Fatalf("channel 1's in-flight data %v lacks b6..b10", got)
	}
	if len(cs.Input[0]) != 0 {
		t.Fatalf("channel 0 recorded %v after its barrier", recordsOf(cs.Input[0]))
	}
	assertCut(t, map[string][]string{"snapshot": h.cps.snapshots[1], "input": recordsOf(slices.Concat(cs.Input...))},
		slices.Concat(names("a", 1, 5), names("b", 1, 10)))
	if strings.Join(out, ",") != "priority barrier 1,end" {
		t.Fatalf("downstream got %v", out)
	}
}

func TestStaleBarrierIgnored(t *testing.T) {
	h := newAlignHarness(t, 2)
	h.priorityBarrier(0, 2)
	h.priorityBarrier(1, 2)
	h.barrier(0, 1, ExactlyOnce) // overtaken by 2, arrives later
	h.barrier(1, 1, ExactlyOnce)
	h.records(0, "a", 1, 3)
	out := h.finish()
	if _, ok := h.cps.snapshots[1]; ok {
		t.Fatal("a stale barrier started checkpoint 1")
	}
	if _, ok := h.cps.channels[2]; !ok {
		t.Fatal("checkpoint 2 has no channel state")
	}
	if strings.Join(out, ",") != "priority barrier 2,end" {
		t.Fatalf("downstream got %v", out)
	}
}

func TestRestoreInFlightReplaysBeforeNewInput(t *testing.T) {
	enc := func(recs ...string) []byte {
		var b []byte
		for _, r := range recs {
			b = append(b, byte(len(r)))
			b = append(b, r...)
		}
		return b
	}
	h2 := newAlignHarnessWith(t, 1, &ChannelState{
		Input:  [][][]byte{{enc("i1", "i2"), enc("i3")}},
		Output: [][][][]byte{{{enc("o1")}}},
	})
	h2.records(0, "n", 1, 2)
	out := h2.finish()
	if got := strings.Join(h2.chain.seen, ","); got != "i1,i2,i3,n1,n2" {
		t.Fatalf("processed %s, want the restored input first", got)
	}
	if strings.Join(out, ",") != "data o1,end" {
		t.Fatalf("downstream got %v, want the restored output first", out)
	}
}
