package runtime

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/sluice-stream/sluice/pkg/exchange"
)

// Mode is a checkpoint's processing guarantee.
type Mode uint8

const (
	// ExactlyOnce aligns barriers: a channel that delivered the barrier is held until
	// every channel has, so the snapshot reflects exactly the records before it.
	ExactlyOnce Mode = 1
	// AtLeastOnce does not block channels: records after the barrier on an early channel
	// are processed before the snapshot, and replayed after a restore.
	AtLeastOnce Mode = 2
)

// Barrier marks, in every channel, the cut of checkpoint ID: records before it belong to
// the checkpoint, records after it to the next.
type Barrier struct {
	ID int64
	// TriggerUnixMilli is when the coordinator triggered the checkpoint.
	TriggerUnixMilli int64
	Mode             Mode
	Savepoint        bool
}

const barrierLen = 8 + 8 + 1 + 1

// Encode is the barrier's wire form inside a buffer of kind exchange.KindBarrier.
func (b Barrier) Encode() []byte {
	buf := make([]byte, 0, barrierLen)
	buf = binary.BigEndian.AppendUint64(buf, uint64(b.ID))
	buf = binary.BigEndian.AppendUint64(buf, uint64(b.TriggerUnixMilli))
	sp := byte(0)
	if b.Savepoint {
		sp = 1
	}
	return append(buf, byte(b.Mode), sp)
}

// ErrBadBarrier says a barrier buffer does not decode.
var ErrBadBarrier = errors.New("runtime: malformed barrier")

// DecodeBarrier decodes what Encode wrote.
func DecodeBarrier(data []byte) (Barrier, error) {
	if len(data) != barrierLen {
		return Barrier{}, fmt.Errorf("%w: %d bytes", ErrBadBarrier, len(data))
	}
	b := Barrier{
		ID:               int64(binary.BigEndian.Uint64(data)),
		TriggerUnixMilli: int64(binary.BigEndian.Uint64(data[8:])),
		Mode:             Mode(data[16]),
		Savepoint:        data[17] == 1,
	}
	if b.Mode != ExactlyOnce && b.Mode != AtLeastOnce {
		return Barrier{}, fmt.Errorf("%w: mode %d", ErrBadBarrier, b.Mode)
	}
	if data[17] > 1 {
		return Barrier{}, fmt.Errorf("%w: savepoint flag %d", ErrBadBarrier, data[17])
	}
	return b, nil
}

// Alignment describes how a checkpoint's barriers arrived at one task.
type Alignment struct {
	// StartDelay is the time from the trigger to the first barrier at this task.
	StartDelay time.Duration
	// Duration is the time from the first to the last barrier (zero for sources).
	Duration time.Duration
}

// Checkpointing is the task's side of checkpoints, provided by the task manager. Its
// methods are called on the task goroutine.
type Checkpointing interface {
	// Snapshot takes the synchronous part of checkpoint b once the task's inputs are
	// aligned (or, at a source, when triggered). The task forwards the barrier after it
	// returns; an error declines the checkpoint but does not fail the task.
	Snapshot(b Barrier, a Alignment) error
	// Abort says checkpoint id was given up at this task (a newer barrier overtook it);
	// the task manager declines it to the coordinator.
	Abort(id int64, reason error)
	// SourceEnded says a source's input ended; it now waits for a final checkpoint
	// (the task manager reports the task as ending, and the jobmanager triggers one).
	SourceEnded()
}

// aligner tracks one checkpoint's barriers over a task's input channels.
type aligner struct {
	cur      *Barrier
	seen     []bool
	held     [][]exchange.Delivery // exactly-once: buffers of channels whose barrier came
	blocked  []bool
	finished []bool
	first    time.Time
	// pending are released buffers to process before reading the gate again.
	pending []exchange.Delivery
}

func newAligner(n int) *aligner {
	return &aligner{seen: make([]bool, n), held: make([][]exchange.Delivery, n), blocked: make([]bool, n), finished: make([]bool, n)}
}

// release unblocks every channel: its held buffers are processed next, in order.
func (a *aligner) release() {
	for ch := range a.held {
		a.pending = append(a.pending, a.held[ch]...)
		a.held[ch] = nil
		a.blocked[ch] = false
		a.seen[ch] = false
	}
	a.cur = nil
}

// complete reports whether every channel that has not finished delivered the barrier.
func (a *aligner) complete() bool {
	for ch := range a.seen {
		if !a.seen[ch] && !a.finished[ch] {
			return false
		}
	}
	return true
}

// onBarrier handles barrier b from channel ch.
func (t *Task) onBarrier(a *aligner, ch int, b Barrier) error {
	switch {
	case a.cur != nil && b.ID < a.cur.ID:
		return nil // of a checkpoint already given up here
	case a.cur != nil && b.ID > a.cur.ID:
		// A newer checkpoint overtook the one being aligned: that one cannot complete.
		if t.Checkpoints != nil {
			t.Checkpoints.Abort(a.cur.ID, fmt.Errorf("barrier of checkpoint %d arrived before alignment of %d completed", b.ID, a.cur.ID))
		}
		a.release()
	}
	if a.cur == nil {
		bb := b
		a.cur = &bb
		a.first = time.Now()
	}
	if a.seen[ch] {
		return fmt.Errorf("channel %d delivered the barrier of checkpoint %d twice", ch, b.ID)
	}
	a.seen[ch] = true
	if b.Mode == ExactlyOnce {
		a.blocked[ch] = true
	}
	return t.maybeCompleteAlignment(a)
}

// maybeCompleteAlignment snapshots and forwards the barrier once every open channel
// delivered it.
func (t *Task) maybeCompleteAlignment(a *aligner) error {
	if a.cur == nil || !a.complete() {
		return nil
	}
	b := *a.cur
	al := Alignment{Duration: time.Since(a.first), StartDelay: a.first.Sub(time.UnixMilli(b.TriggerUnixMilli))}
	a.release()
	return t.checkpoint(b, al)
}

// checkpoint takes the snapshot and forwards the barrier to every output.
func (t *Task) checkpoint(b Barrier, al Alignment) error {
	if t.Checkpoints != nil {
		if err := t.Checkpoints.Snapshot(b, al); err != nil {
			t.Checkpoints.Abort(b.ID, err)
		}
	}
	data := b.Encode()
	for _, p := range t.Outputs {
		if err := p.BroadcastEvent(exchange.KindBarrier, data); err != nil {
			return err
		}
	}
	return nil
}

// TriggerCheckpoint returns the mailbox action that makes a source task snapshot and
// emit barrier b. Post it to the task's Mailbox. final marks the checkpoint the
// jobmanager triggered once every source had ended: its completion releases the source.
func (t *Task) TriggerCheckpoint(b Barrier, final bool) func() error {
	return func() error {
		if final && t.ended && t.finalID == 0 {
			t.finalID = b.ID
		}
		delay := time.Since(time.UnixMilli(b.TriggerUnixMilli))
		return t.checkpoint(b, Alignment{StartDelay: max(0, delay)})
	}
}

// NotifyCheckpointComplete returns the mailbox action that passes checkpoint id's
// completion to the chain (notify) and releases a source waiting for its final
// checkpoint.
func (t *Task) NotifyCheckpointComplete(id int64, notify func(int64) error) func() error {
	return func() error {
		if t.ended && t.finalID > 0 && id >= t.finalID {
			t.finalDone = true
		}
		return notify(id)
	}
}

// awaitFinal holds a source whose input ended until a checkpoint triggered after the end
// completed: every record it emitted is then in a completed checkpoint, so sinks may
// commit at end of input and a failure from here on restores a checkpoint whose sources
// are at their end, replaying nothing.
func (t *Task) awaitFinal(ctx context.Context, tick <-chan time.Time) error {
	t.ended = true
	if err := t.flush(); err != nil {
		return err
	}
	t.publish()
	t.Checkpoints.SourceEnded()
	for !t.finalDone {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick:
		case f := <-t.Mailbox:
			if err := f(); err != nil {
				return err
			}
		}
	}
	return nil
}
