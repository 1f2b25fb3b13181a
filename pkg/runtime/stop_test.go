package runtime

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// stopChain is a fakeChain whose records and final watermark can be counted from other
// goroutines.
type stopChain struct {
	fakeChain
	records atomic.Int64
	final   atomic.Bool
}

func (c *stopChain) ProcessRecord(i int, rec []byte) error {
	c.records.Add(1)
	return c.fakeChain.ProcessRecord(i, rec)
}

func (c *stopChain) EmitFinalWatermark() error { c.final.Store(true); return nil }

// snapCps records, per checkpoint, the records the chain had processed at its snapshot.
type snapCps struct {
	chain *stopChain
	mu    sync.Mutex
	at    map[int64]int64
}

func (s *snapCps) Snapshot(b Barrier, _ Alignment) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.at[b.ID] = s.chain.records.Load()
	return nil
}
func (s *snapCps) ChannelState(int64, ChannelState) {}
func (s *snapCps) Abort(int64, error)               {}
func (s *snapCps) SourceEnded()                     {}

func (s *snapCps) snapshot(t *testing.T, id int64) int64 {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n, ok := s.at[id]
		s.mu.Unlock()
		if ok {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot of checkpoint %d", id)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestStopWithSavepoint: a source that takes a savepoint stopping the job emits nothing
// after its barrier; an aborted stop lets it go on; a completed one ends the source and
// its consumer without ending their input (no EndInput), the consumer having processed
// exactly the records before the barrier.
func TestStopWithSavepoint(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := &stopChain{fakeChain: fakeChain{source: true, n: 1 << 40}}
	dst := &stopChain{}
	prod, cons := pipe(t, ctx, &src.fakeChain, &dst.fakeChain, 5*time.Millisecond)
	prod.Chain, cons.Chain = src, dst
	prod.Mailbox, cons.Mailbox = make(chan func() error, 16), make(chan func() error, 16)
	cps := &snapCps{chain: dst, at: map[int64]int64{}}
	prod.Checkpoints = &snapCps{chain: src, at: map[int64]int64{}}
	cons.Checkpoints = cps
	running := make(chan struct{})
	cons.OnRunning = func() { close(running) }
	errs := make(chan error, 2)
	go func() { errs <- prod.Run(ctx) }()
	go func() { errs <- cons.Run(ctx) }()
	<-running
	for dst.records.Load() < 1000 {
		time.Sleep(time.Millisecond)
	}

	stop := func(id int64, drain bool) int64 {
		t.Helper()
		b := Barrier{ID: id, TriggerUnixMilli: time.Now().UnixMilli(), Mode: ExactlyOnce, Savepoint: true, Stop: true, Target: "mem://sp"}
		prod.Mailbox <- prod.TriggerStop(b, drain)
		at := cps.snapshot(t, id)
		time.Sleep(50 * time.Millisecond)
		if n := dst.records.Load(); n != at {
			t.Fatalf("savepoint %d: the consumer processed %d records, %d at the savepoint: the source emitted after the barrier", id, n, at)
		}
		return at
	}
	at := stop(1, false)
	// Aborted: the source goes on.
	prod.Mailbox <- prod.NotifyCheckpointAborted(1)
	cons.Mailbox <- cons.NotifyCheckpointAborted(1)
	deadline := time.Now().Add(5 * time.Second)
	for dst.records.Load() <= at {
		if time.Now().After(deadline) {
			t.Fatal("the source did not go on after the stop was aborted")
		}
		time.Sleep(time.Millisecond)
	}
	if src.final.Load() {
		t.Fatal("final watermark emitted without drain")
	}

	at = stop(2, true)
	if !src.final.Load() {
		t.Fatal("drain: no final watermark before the barrier")
	}
	notified := make(chan int64, 2)
	notify := func(id int64) error { notified <- id; return nil }
	// The consumer's notification comes after the source ended: it waits for it.
	prod.Mailbox <- prod.NotifyCheckpointComplete(2, notify)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	cons.Mailbox <- cons.NotifyCheckpointComplete(2, notify)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if <-notified != 2 || <-notified != 2 {
		t.Fatal("the completion did not reach both chains")
	}
	if src.ended || dst.ended {
		t.Fatalf("stopped tasks ended their input (source %v, consumer %v)", src.ended, dst.ended)
	}
	if n := dst.records.Load(); n != at {
		t.Fatalf("the consumer processed %d records, %d at the savepoint", n, at)
	}
}
