// Package runtime runs one subtask: an operator chain in a single-threaded task loop
// (a mailbox) that reads its input gate, runs its source, flushes its outputs on the
// buffer timeout and handles control actions, all on one goroutine, so operator code
// needs no locks.
package runtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/sluice-stream/sluice/pkg/exchange"
)

// Chain is one subtask's instance of an operator chain, built by the user API.
// All methods are called from the task goroutine.
type Chain interface {
	// Open prepares every operator; ctx ends with the task.
	Open(ctx context.Context) error
	// PollSource, for a chain headed by a source, emits one bounded batch of records.
	// done reports the end of the source's input; wait > 0 that nothing is available
	// for about that long.
	PollSource() (done bool, wait time.Duration, err error)
	// ProcessRecord processes one serialized record of logical input `input`.
	ProcessRecord(input int, rec []byte) error
	// EndInput says every input ended; operators emit what they buffered.
	EndInput() error
	// Close releases the operators' resources; it is called once, also after failures.
	Close() error
	// IsSource reports whether the chain is headed by a source (and has no inputs).
	IsSource() bool
	// Counters are the records the source emitted, the sinks consumed and the chain
	// wrote to its outputs so far; the task publishes them into Metrics after batches.
	Counters() (source, sink, out int64)
	// NextTimer is the earliest processing-time timer, if any.
	NextTimer() (time.Time, bool)
	// FireTimers fires the processing-time timers due at now.
	FireTimers(now time.Time) error
}

// Metrics are the live counters of one task, read by the heartbeat.
type Metrics struct {
	RecordsIn     atomic.Int64 // records read from input channels
	RecordsOut    atomic.Int64 // records written to output channels
	SourceRecords atomic.Int64 // records emitted by a source operator
	SinkRecords   atomic.Int64 // records consumed by a sink operator
}

// Task is one running subtask.
type Task struct {
	Name    string
	Chain   Chain
	Gate    *exchange.InputGate // nil for source chains
	Outputs []*exchange.Partition
	Metrics *Metrics
	// BufferTimeout bounds how long a record waits in a partially filled buffer; 0 flushes
	// after every batch, a negative value only when buffers fill.
	BufferTimeout time.Duration
	// Mailbox carries control actions run between records on the task goroutine.
	Mailbox chan func() error
	// Checkpoints takes snapshots at barriers; nil forwards barriers without one.
	Checkpoints Checkpointing
	// AwaitFinalCheckpoint holds a source back at the end of its input until a
	// checkpoint triggered after that completed (see awaitFinal).
	AwaitFinalCheckpoint bool
	Log                  *slog.Logger

	ended     bool  // the source's input ended
	finalID   int64 // first checkpoint triggered after the end
	finalDone bool  // it completed
}

// Run runs the task until its input ends (nil), it fails, or ctx is canceled. On any
// error the outputs are aborted so consumers learn of it.
func (t *Task) Run(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("task %s panicked: %v", t.Name, r)
		}
		if err != nil {
			for _, p := range t.Outputs {
				p.Abort(fmt.Errorf("producer task %s failed: %w", t.Name, err))
			}
		}
		if cerr := t.Chain.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close: %w", cerr)
		}
		if t.Gate != nil {
			t.Gate.Close()
		}
	}()
	if err := t.Chain.Open(ctx); err != nil {
		return fmt.Errorf("open: %w", err)
	}
	var tick <-chan time.Time
	if t.BufferTimeout > 0 {
		ticker := time.NewTicker(t.BufferTimeout)
		defer ticker.Stop()
		tick = ticker.C
	}
	if t.Chain.IsSource() {
		err = t.runSource(ctx, tick)
	} else {
		err = t.runInputs(ctx, tick)
	}
	if err != nil {
		return err
	}
	if err := t.Chain.EndInput(); err != nil {
		return fmt.Errorf("end of input: %w", err)
	}
	t.publish()
	for _, p := range t.Outputs {
		if err := p.Finish(); err != nil {
			return fmt.Errorf("finish output: %w", err)
		}
	}
	return nil
}

func (t *Task) flush() error {
	for _, p := range t.Outputs {
		if err := p.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func (t *Task) publish() {
	src, sink, out := t.Chain.Counters()
	t.Metrics.SourceRecords.Store(src)
	t.Metrics.SinkRecords.Store(sink)
	t.Metrics.RecordsOut.Store(out)
}

func (t *Task) afterBatch() error {
	t.publish()
	if t.BufferTimeout == 0 {
		return t.flush()
	}
	return nil
}

func (t *Task) runSource(ctx context.Context, tick <-chan time.Time) error {
	idle := time.NewTimer(time.Hour)
	defer idle.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
			if err := t.flush(); err != nil {
				return err
			}
		case f := <-t.Mailbox:
			if err := f(); err != nil {
				return err
			}
		default:
		}
		done, wait, err := t.Chain.PollSource()
		if err != nil {
			return err
		}
		if done {
			if t.AwaitFinalCheckpoint && t.Checkpoints != nil {
				return t.awaitFinal(ctx, tick)
			}
			return nil
		}
		if err := t.afterBatch(); err != nil {
			return err
		}
		if wait <= 0 {
			continue
		}
		// Nothing to read for a while: send what is buffered now rather than on the tick.
		if err := t.flush(); err != nil {
			return err
		}
		idle.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case f := <-t.Mailbox:
			if err := f(); err != nil {
				return err
			}
		case <-idle.C:
		}
	}
}

func (t *Task) runInputs(ctx context.Context, tick <-chan time.Time) error {
	open := t.Gate.NumChannels()
	if open == 0 {
		return errors.New("task has neither a source nor inputs")
	}
	a := newAligner(open)
	timers := newTimerArm()
	defer timers.stop()
	for open > 0 {
		timers.arm(t.Chain)
		var d exchange.Delivery
		if len(a.pending) > 0 {
			// Buffers released by an alignment come first, before anything newer.
			d = a.pending[0]
			a.pending = a.pending[1:]
		} else {
			select {
			case d = <-t.Gate.C():
			case <-t.Gate.Failed():
				return t.Gate.Err()
			case <-tick:
				if err := t.flush(); err != nil {
					return err
				}
				continue
			case f := <-t.Mailbox:
				if err := f(); err != nil {
					return err
				}
				continue
			case now := <-timers.c():
				timers.fired()
				if err := t.Chain.FireTimers(now); err != nil {
					return err
				}
				if err := t.afterBatch(); err != nil {
					return err
				}
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if a.blocked[d.Channel] {
			// Exactly-once alignment: this channel is past the barrier; hold its buffers
			// (and their credit) until every channel delivered it.
			a.held[d.Channel] = append(a.held[d.Channel], d)
			continue
		}
		switch d.Buf.Kind {
		case exchange.KindEndOfPartition:
			open--
			a.finished[d.Channel] = true
			t.Gate.Recycle(d)
			if err := t.maybeCompleteAlignment(a); err != nil {
				return err
			}
		case exchange.KindBarrier:
			b, err := DecodeBarrier(d.Buf.Data)
			t.Gate.Recycle(d)
			if err != nil {
				return err
			}
			if err := t.onBarrier(a, d.Channel, b); err != nil {
				return err
			}
		default:
			if err := t.processBuffer(d); err != nil {
				return err
			}
			if err := t.afterBatch(); err != nil {
				return err
			}
		}
	}
	return nil
}

// processBuffer runs the records of one data buffer through the chain and recycles it.
func (t *Task) processBuffer(d exchange.Delivery) error {
	input := t.Gate.Input(d.Channel)
	recs := exchange.NewRecords(d.Buf.Data)
	n := int64(0)
	for rec, ok := recs.Next(); ok; rec, ok = recs.Next() {
		n++
		if err := t.Chain.ProcessRecord(input, rec); err != nil {
			t.Gate.Recycle(d)
			return err
		}
	}
	t.Metrics.RecordsIn.Add(n)
	t.Gate.Recycle(d)
	return recs.Err()
}

// timerArm keeps one wall-clock timer armed for the chain's earliest processing-time
// timer; it is re-armed between batches, when state code may have registered earlier
// ones.
type timerArm struct {
	t     *time.Timer
	at    time.Time
	armed bool
}

func newTimerArm() *timerArm {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &timerArm{t: t}
}

func (a *timerArm) arm(c Chain) {
	next, ok := c.NextTimer()
	if !ok || (a.armed && !next.Before(a.at)) {
		return
	}
	a.t.Reset(max(0, time.Until(next)))
	a.at, a.armed = next, true
}

func (a *timerArm) c() <-chan time.Time { return a.t.C }

func (a *timerArm) fired() { a.armed = false }

func (a *timerArm) stop() { a.t.Stop() }
