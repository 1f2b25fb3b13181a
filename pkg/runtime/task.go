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
	// ProcessWatermark advances the chain's event time to wm, which only rises: the
	// operators' event-time timers up to wm fire, then wm goes to every output.
	ProcessWatermark(wm int64) error
	// ProcessWatermarkStatus says the task's inputs all became idle (or one became
	// active again); the chain tells its outputs.
	ProcessWatermarkStatus(idle bool) error
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
	// InFlight is the in-flight data of the unaligned checkpoint the task restores from,
	// if any: its output buffers are sent, then its input buffers processed, before
	// anything else.
	InFlight *ChannelState
	Log      *slog.Logger
	// OnRunning, if set, is called on the task goroutine once the chain is open (its
	// state restored) and the restored in-flight data replayed, before anything else:
	// the task manager reports the task running then, so a long restore is not counted
	// against the checkpoint timeout.
	OnRunning func()

	canceled  atomic.Bool // the task's context ended: stop between two records
	ended     bool        // the source's input ended
	finalID   int64       // first checkpoint triggered after the end
	finalDone bool        // it completed
	// stopID is the savepoint that stops the job, from its barrier at this task until it
	// completed (stopDone) or was aborted (0 again): a source emits nothing meanwhile,
	// and once it completed every task ends without ending its input.
	stopID   int64
	stopDone bool
}

// errStopped ends a source's loop once the savepoint that stops the job completed.
var errStopped = errors.New("runtime: stopped with a savepoint")

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
	stop := context.AfterFunc(ctx, func() { t.canceled.Store(true) })
	defer stop()
	if err := t.Chain.Open(ctx); err != nil {
		return fmt.Errorf("open: %w", err)
	}
	if err := t.restoreInFlight(); err != nil {
		return fmt.Errorf("restore in-flight data: %w", err)
	}
	if t.OnRunning != nil {
		t.OnRunning()
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
	stopped := errors.Is(err, errStopped)
	if stopped {
		err = nil
	}
	if err != nil {
		return err
	}
	if !stopped && t.stopID != 0 {
		// The input ended after the barrier of a savepoint that stops the job: its
		// sources ended because it completed. Wait for this task's own notification
		// (sinks commit), then end like them.
		if stopped, err = t.awaitStop(ctx, tick); err != nil {
			return err
		}
	}
	if stopped {
		// Stopped, not ended: no end of input for the operators (no event-time timer
		// fires, nothing is flushed), since the savepoint holds their state as it is
		// and a job restored from it goes on from there.
		t.logger().Info("stopped with a savepoint", "savepoint", t.stopID)
	} else if err := t.Chain.EndInput(); err != nil {
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

// restoreInFlight replays the restored channel state: first what the outputs had in
// flight (it was emitted before the snapshot), then the input the task had received but
// not processed (its effects came after the snapshot).
func (t *Task) restoreInFlight() error {
	cs := t.InFlight
	if cs == nil {
		return nil
	}
	t.InFlight = nil
	for i, chans := range cs.Output {
		if i >= len(t.Outputs) {
			return fmt.Errorf("in-flight data for output %d of %d", i, len(t.Outputs))
		}
		for ch, bufs := range chans {
			if ch >= t.Outputs[i].NumChannels() {
				return fmt.Errorf("in-flight data for channel %d of output %d, which has %d", ch, i, t.Outputs[i].NumChannels())
			}
			for _, b := range bufs {
				if err := t.Outputs[i].EmitBuffer(ch, b); err != nil {
					return err
				}
			}
		}
	}
	for ch, bufs := range cs.Input {
		if len(bufs) == 0 {
			continue
		}
		if t.Gate == nil || ch >= t.Gate.NumChannels() {
			return fmt.Errorf("in-flight data for input channel %d, which the task does not have", ch)
		}
		input := t.Gate.Input(ch)
		for _, b := range bufs {
			recs := exchange.NewRecords(b)
			n := int64(0)
			for rec, ok := recs.Next(); ok; rec, ok = recs.Next() {
				n++
				if err := t.Chain.ProcessRecord(input, rec); err != nil {
					return err
				}
			}
			if err := recs.Err(); err != nil {
				return err
			}
			t.Metrics.RecordsIn.Add(n)
		}
	}
	t.publish()
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

// sourceControl runs a due mailbox action or buffer-timeout flush, waiting for one or
// for wake.
func (t *Task) sourceControl(ctx context.Context, tick <-chan time.Time, wake <-chan struct{}) error {
	select {
	case <-wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-tick:
		return t.flush()
	case f := <-t.Mailbox:
		return f()
	}
}

func (t *Task) runSource(ctx context.Context, tick <-chan time.Time) error {
	idle := time.NewTimer(time.Hour)
	defer idle.Stop()
	for {
		if err := t.sourceControl(ctx, tick, closedC); err != nil {
			return err
		}
		if t.stopID != 0 {
			// At a savepoint that stops the job: emit nothing, wait for its outcome.
			if t.stopDone {
				return errStopped
			}
			if err := t.sourceControl(ctx, tick, nil); err != nil {
				return err
			}
			continue
		}
		if !t.outputsAvailable() {
			// Backpressured: emit nothing until the outputs have room, but keep
			// serving the mailbox, so checkpoints are still triggered here.
			if err := t.sourceControl(ctx, tick, t.outputSpace()); err != nil {
				return err
			}
			continue
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
	wv := NewValve(open)
	defer a.stopTimeout()
	timers := newTimerArm()
	defer timers.stop()
	for open > 0 || a.hasPartial {
		timers.arm(t.Chain)
		// Control actions and timers take turns with input, which may never run dry.
		// They run before a buffer is taken: one taken is processed before anything else
		// (an alignment timeout, say, must find it either processed or in the gate).
		if err := t.control(ctx, a, tick, timers, closedC, nil); err != nil {
			return err
		}
		if !t.outputsAvailable() {
			// Backpressured: produce nothing until the outputs have room, but take
			// unaligned barriers, which need no room.
			if d, ok := t.Gate.PollPriority(); ok {
				if err := t.onPriorityBarrier(a, d); err != nil {
					return err
				}
				continue
			}
			if err := t.control(ctx, a, tick, timers, t.outputSpace(), t.Gate.PriorityReady()); err != nil {
				return err
			}
			continue
		}
		if a.hasPartial && !t.Gate.PriorityWaiting() {
			// Resume the buffer a priority barrier interrupted.
			if err := t.processBuffer(a, a.partial, a.rest); err != nil {
				return err
			}
			if err := t.afterBatch(); err != nil {
				return err
			}
			continue
		}
		var d exchange.Delivery
		var ok bool
		if len(a.pending) > 0 {
			// Buffers released by an alignment come first, before anything newer.
			d, ok = a.pending[0], true
			a.pending = a.pending[1:]
		} else if d, ok = t.Gate.Poll(); ok && d.Buf.Kind != exchange.KindPriorityBarrier {
			a.last[d.Channel] = d.Seq
		}
		if !ok {
			// Nothing to read: wait for input or for a control action.
			if err := t.control(ctx, a, tick, timers, t.Gate.Ready(), nil); err != nil {
				return err
			}
			continue
		}
		if d.Buf.Kind == exchange.KindPriorityBarrier {
			if err := t.onPriorityBarrier(a, d); err != nil {
				return err
			}
			continue
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
			if err := t.endWatermarkChannel(wv, d.Channel); err != nil {
				return err
			}
			if err := t.maybeCompleteAlignment(a); err != nil {
				return err
			}
		case exchange.KindWatermark:
			if err := t.onWatermarkBuffer(wv, d); err != nil {
				return err
			}
			// It may have been the last in-flight buffer an unaligned checkpoint waited for.
			if err := t.maybeCompleteAlignment(a); err != nil {
				return err
			}
		case exchange.KindBarrier:
			b, err := DecodeBarrier(d.Buf.Data)
			t.Gate.Recycle(d)
			if err != nil {
				return err
			}
			if err := t.onBarrier(a, d.Channel, b, d.Seq-1, false); err != nil {
				return err
			}
		default:
			recorded := a.recording(d.Channel, d.Seq)
			if recorded {
				// In-flight data of an unaligned checkpoint: processed now, after the
				// snapshot, and replayed from the checkpoint after a restore.
				a.record(d)
			}
			if err := t.processBuffer(a, d, d.Buf.Data); err != nil {
				return err
			}
			if err := t.afterBatch(); err != nil {
				return err
			}
			if recorded {
				if err := t.maybeCompleteAlignment(a); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// onPriorityBarrier handles an unaligned barrier: it overtook everything the gate holds.
func (t *Task) onPriorityBarrier(a *aligner, d exchange.Delivery) error {
	b, err := DecodeBarrier(d.Buf.Data)
	t.Gate.Recycle(d)
	if err != nil {
		return err
	}
	return t.onBarrier(a, d.Channel, b, d.Seq, true)
}

// outputsAvailable reports whether every output has room (see Partition.Available).
func (t *Task) outputsAvailable() bool {
	for _, p := range t.Outputs {
		if !p.Available() {
			return false
		}
	}
	return true
}

// outputSpace is signalled when an output that has no room may have some again.
func (t *Task) outputSpace() <-chan struct{} {
	for _, p := range t.Outputs {
		if !p.Available() {
			return p.Space()
		}
	}
	return closedC
}

// closedC is always ready: with it, control does not wait.
var closedC = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// control runs one control action, timer firing, buffer-timeout flush or alignment
// timeout that is due, waiting for one or for wake or wake2 (nil: never).
func (t *Task) control(ctx context.Context, a *aligner, tick <-chan time.Time, timers *timerArm, wake, wake2 <-chan struct{}) error {
	select {
	case <-wake:
		return nil
	case <-wake2:
		return nil
	case <-a.timeoutC():
		return t.onAlignmentTimeout(a)
	case <-t.Gate.Failed():
		return t.Gate.Err()
	case <-tick:
		return t.flush()
	case f := <-t.Mailbox:
		return f()
	case now := <-timers.c():
		timers.fired()
		if err := t.Chain.FireTimers(now); err != nil {
			return err
		}
		return t.afterBatch()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// processBuffer runs data, the records of data buffer d not processed yet, through the
// chain and recycles d. It stops after a record when a priority barrier waits (a slow
// operator must not hold up an unaligned checkpoint for a whole buffer): d and the rest
// of its records are then kept in a as the partial buffer, to resume.
func (t *Task) processBuffer(a *aligner, d exchange.Delivery, data []byte) error {
	a.hasPartial, a.rest = false, nil
	input := t.Gate.Input(d.Channel)
	recs := exchange.NewRecords(data)
	n := int64(0)
	defer func() { t.Metrics.RecordsIn.Add(n) }()
	for rec, ok := recs.Next(); ok; rec, ok = recs.Next() {
		n++
		if err := t.Chain.ProcessRecord(input, rec); err != nil {
			t.Gate.Recycle(d)
			return err
		}
		if (t.Gate.PriorityWaiting() || !t.outputsAvailable() || t.canceled.Load()) && len(recs.Rest()) > 0 {
			a.partial, a.rest, a.hasPartial = d, recs.Rest(), true
			return nil
		}
	}
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

func (t *Task) logger() *slog.Logger {
	if t.Log != nil {
		return t.Log
	}
	return slog.New(slog.DiscardHandler)
}
