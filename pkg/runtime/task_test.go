package runtime

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/exchange"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeChain is a source (emitting n records of 8 bytes, then optionally idling) or a
// consumer (counting records), writing to out.
type fakeChain struct {
	source        bool
	n             int
	idle          bool // after the records, report Wait instead of Done
	out           *exchange.Partition
	got           [][]byte
	panicOn       int
	ended, closed bool
}

func (c *fakeChain) Open(context.Context) error { return nil }
func (c *fakeChain) PollSource() (bool, time.Duration, error) {
	for i := 0; i < 10 && c.n > 0; i++ {
		c.n--
		if err := c.out.Emit(0, []byte("record-x")); err != nil {
			return false, 0, err
		}
	}
	if c.n == 0 {
		if c.idle {
			return false, time.Hour, nil
		}
		return true, 0, nil
	}
	return false, 0, nil
}
func (c *fakeChain) ProcessRecord(_ int, rec []byte) error {
	c.got = append(c.got, append([]byte(nil), rec...))
	if c.panicOn > 0 && len(c.got) == c.panicOn {
		panic("operator bug")
	}
	return nil
}
func (c *fakeChain) EndInput() error                     { c.ended = true; return nil }
func (c *fakeChain) Close() error                        { c.closed = true; return nil }
func (c *fakeChain) IsSource() bool                      { return c.source }
func (c *fakeChain) Counters() (source, sink, out int64) { return 0, int64(len(c.got)), 0 }
func (c *fakeChain) NextTimer() (time.Time, bool)        { return time.Time{}, false }
func (c *fakeChain) FireTimers(time.Time) error          { return nil }

// pipe wires a producer task to a consumer task through a local channel.
func pipe(t *testing.T, ctx context.Context, src *fakeChain, dst *fakeChain, timeout time.Duration) (*Task, *Task) {
	reg := exchange.NewRegistry(4096, 2)
	key := exchange.ChannelKey{JobID: "j", Attempt: 1}
	gate := exchange.NewInputGate(1, 2)
	if err := gate.ConnectLocal(reg, 0, 0, key); err != nil {
		t.Fatal(err)
	}
	src.out = reg.NewPartition(ctx, []exchange.ChannelKey{key})
	prod := &Task{Name: "src", Chain: src, Outputs: []*exchange.Partition{src.out}, Metrics: &Metrics{}, BufferTimeout: timeout}
	cons := &Task{Name: "dst", Chain: dst, Gate: gate, Metrics: &Metrics{}, BufferTimeout: timeout}
	return prod, cons
}

func TestRecordsFlowAndEndOfInput(t *testing.T) {
	ctx := context.Background()
	src, dst := &fakeChain{source: true, n: 10000}, &fakeChain{}
	prod, cons := pipe(t, ctx, src, dst, 50*time.Millisecond)
	errc := make(chan error, 1)
	go func() { errc <- prod.Run(ctx) }()
	if err := cons.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(dst.got) != 10000 || !dst.ended || !dst.closed || !src.closed {
		t.Fatalf("got %d records, ended %v, closed %v/%v", len(dst.got), dst.ended, dst.closed, src.closed)
	}
	if cons.Metrics.RecordsIn.Load() != 10000 || cons.Metrics.SinkRecords.Load() != 10000 {
		t.Fatalf("metrics in=%d sink=%d", cons.Metrics.RecordsIn.Load(), cons.Metrics.SinkRecords.Load())
	}
}

// TestBufferTimeoutFlushes: a few records that never fill a buffer still arrive.
func TestBufferTimeoutFlushes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src, dst := &fakeChain{source: true, n: 3, idle: true}, &fakeChain{}
	prod, cons := pipe(t, ctx, src, dst, 20*time.Millisecond)
	done := make(chan struct{}, 2)
	go func() { _ = prod.Run(ctx); done <- struct{}{} }()
	go func() { _ = cons.Run(ctx); done <- struct{}{} }()
	deadline := time.Now().Add(5 * time.Second)
	for cons.Metrics.RecordsIn.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("records did not arrive before the deadline (got %d)", cons.Metrics.RecordsIn.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	<-done
}

func TestCancelAndPanic(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	src, dst := &fakeChain{source: true, n: 1 << 30}, &fakeChain{panicOn: 5}
	prod, cons := pipe(t, ctx, src, dst, 10*time.Millisecond)
	errc := make(chan error, 1)
	go func() { errc <- prod.Run(ctx) }()
	err := cons.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("consumer error = %v, want a panic error", err)
	}
	// The consumer is gone: the producer blocks on backpressure until canceled (or
	// fails because its channel was released).
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("producer finished despite a dead consumer")
	} else if !errors.Is(err, context.Canceled) && !errors.Is(err, exchange.ErrReleased) {
		t.Fatalf("producer error = %v", err)
	}
}
