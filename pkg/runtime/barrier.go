package runtime

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
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
	// Unaligned: the barrier overtakes in-flight buffers, which become channel state.
	// At a task, it also says the snapshot was taken unaligned there: its in-flight
	// input follows through Checkpointing.ChannelState.
	Unaligned bool
	// AlignedTimeoutMs, for an aligned exactly-once checkpoint: once the barrier is this
	// old, a task still aligning switches to unaligned (0: never).
	AlignedTimeoutMs int64
	// Full: every task snapshots its keyed state in full, reusing no file of an earlier
	// checkpoint (the jobmanager bounds the incremental chain, or starts a new one after
	// a restore that needs it).
	Full bool
	// Savepoints only (with Savepoint set):
	//
	// Native asks for the keyed state in the backend's own format rather than the
	// canonical one (state.FormatNative).
	Native bool
	// Stop: the savepoint stops the job (stop with savepoint). The sources emit nothing
	// after its barrier; every task ends once it completed, without ending its input
	// (no final watermark, no end of input for the operators), or goes on when it was
	// aborted.
	Stop bool
	// Target is the URL of the savepoint's directory, where every task writes its
	// files.
	Target string
}

// barrierLen is the length of a barrier without a target; a target follows as a
// uvarint length and its bytes.
const barrierLen = 8 + 8 + 1 + 1 + 8

// MaxBarrierTarget bounds the length of a savepoint's target URL in a barrier.
const MaxBarrierTarget = 4096

const (
	flagSavepoint = 1 << iota
	flagUnaligned
	flagFull
	flagNative
	flagStop
	flagTarget

	flagsKnown     = flagSavepoint | flagUnaligned | flagFull | flagNative | flagStop | flagTarget
	flagsSavepoint = flagNative | flagStop | flagTarget // only with flagSavepoint
)

// Encode is the barrier's wire form inside a buffer of kind exchange.KindBarrier or
// exchange.KindPriorityBarrier.
// Target must be at most MaxBarrierTarget bytes (the task manager refuses longer
// ones before a barrier is encoded).
func (b Barrier) Encode() []byte {
	buf := make([]byte, 0, barrierLen+len(b.Target)+2)
	buf = binary.BigEndian.AppendUint64(buf, uint64(b.ID))
	buf = binary.BigEndian.AppendUint64(buf, uint64(b.TriggerUnixMilli))
	flags := byte(0)
	if b.Savepoint {
		flags |= flagSavepoint
	}
	if b.Unaligned {
		flags |= flagUnaligned
	}
	if b.Full {
		flags |= flagFull
	}
	if b.Native {
		flags |= flagNative
	}
	if b.Stop {
		flags |= flagStop
	}
	if b.Target != "" {
		flags |= flagTarget
	}
	buf = append(buf, byte(b.Mode), flags)
	buf = binary.BigEndian.AppendUint64(buf, uint64(b.AlignedTimeoutMs))
	if b.Target != "" {
		buf = binary.AppendUvarint(buf, uint64(len(b.Target)))
		buf = append(buf, b.Target...)
	}
	return buf
}

// ErrBadBarrier says a barrier buffer does not decode.
var ErrBadBarrier = errors.New("runtime: malformed barrier")

// DecodeBarrier decodes what Encode wrote.
// It accepts only what Encode writes: any other length, mode or flag bit, a savepoint
// flag without the savepoint bit, a negative timeout, or a target that is empty, longer
// than MaxBarrierTarget, not minimally encoded or followed by anything is an error
// wrapping ErrBadBarrier.
func DecodeBarrier(data []byte) (Barrier, error) {
	if len(data) < barrierLen {
		return Barrier{}, fmt.Errorf("%w: %d bytes", ErrBadBarrier, len(data))
	}
	flags := data[17]
	b := Barrier{
		ID:               int64(binary.BigEndian.Uint64(data)),
		TriggerUnixMilli: int64(binary.BigEndian.Uint64(data[8:])),
		Mode:             Mode(data[16]),
		Savepoint:        flags&flagSavepoint != 0,
		Unaligned:        flags&flagUnaligned != 0,
		Full:             flags&flagFull != 0,
		Native:           flags&flagNative != 0,
		Stop:             flags&flagStop != 0,
		AlignedTimeoutMs: int64(binary.BigEndian.Uint64(data[18:])),
	}
	if b.Mode != ExactlyOnce && b.Mode != AtLeastOnce {
		return Barrier{}, fmt.Errorf("%w: mode %d", ErrBadBarrier, b.Mode)
	}
	if flags&^flagsKnown != 0 || (flags&flagsSavepoint != 0 && !b.Savepoint) {
		return Barrier{}, fmt.Errorf("%w: flags %#x", ErrBadBarrier, flags)
	}
	if b.AlignedTimeoutMs < 0 {
		return Barrier{}, fmt.Errorf("%w: aligned timeout %d", ErrBadBarrier, b.AlignedTimeoutMs)
	}
	rest := data[barrierLen:]
	if flags&flagTarget == 0 {
		if len(rest) != 0 {
			return Barrier{}, fmt.Errorf("%w: %d bytes", ErrBadBarrier, len(data))
		}
		return b, nil
	}
	n, w := binary.Uvarint(rest)
	if w <= 0 || n == 0 || n > MaxBarrierTarget || uint64(len(rest)-w) != n || w != uvarintLen(n) {
		return Barrier{}, fmt.Errorf("%w: bad savepoint target (%d bytes)", ErrBadBarrier, len(rest))
	}
	b.Target = string(rest[w:])
	return b, nil
}

// uvarintLen is the length of n's minimal uvarint encoding.
func uvarintLen(n uint64) int {
	l := 1
	for n >= 0x80 {
		n >>= 7
		l++
	}
	return l
}

// Alignment describes how a checkpoint's barriers arrived at one task.
type Alignment struct {
	// StartDelay is the time from the trigger to the first barrier at this task.
	StartDelay time.Duration
	// Duration is the time from the first to the last barrier (zero for sources), or,
	// unaligned, to the switch.
	Duration time.Duration
}

// ChannelState is the in-flight data of one unaligned checkpoint at one task: buffers of
// serialized records, in order, per channel.
type ChannelState struct {
	// Input holds, per input gate channel, the buffers that arrived before the
	// channel's barrier and were processed after the snapshot.
	Input [][][]byte
	// Output holds, per output partition and channel, the buffers the barrier
	// overtook.
	Output [][][][]byte
}

// Bytes is the total size of the buffers.
func (c ChannelState) Bytes() int64 {
	var n int64
	for _, ch := range c.Input {
		for _, b := range ch {
			n += int64(len(b))
		}
	}
	for _, p := range c.Output {
		for _, ch := range p {
			for _, b := range ch {
				n += int64(len(b))
			}
		}
	}
	return n
}

// Checkpointing is the task's side of checkpoints, provided by the task manager. Its
// methods are called on the task goroutine.
type Checkpointing interface {
	// Snapshot takes the synchronous part of checkpoint b once the task's inputs are
	// aligned (or, at a source, when triggered). The task forwards the barrier after it
	// returns; an error declines the checkpoint but does not fail the task. When
	// b.Unaligned, ChannelState follows once the in-flight data is complete (or Abort).
	Snapshot(b Barrier, a Alignment) error
	// ChannelState hands over the in-flight data of unaligned checkpoint id. The task
	// gives up ownership of cs.
	ChannelState(id int64, cs ChannelState)
	// Abort says checkpoint id was given up at this task (a newer barrier overtook it);
	// the task manager declines it to the coordinator.
	Abort(id int64, reason error)
	// SourceEnded says a source's input ended; it now waits for a final checkpoint
	// (the task manager reports the task as ending, and the jobmanager triggers one).
	SourceEnded()
}

// aligner tracks one checkpoint's barriers over a task's input channels. Exactly-once,
// a channel that delivered the barrier is blocked (its buffers held) until every channel
// did. Unaligned (from the first priority barrier, or after the aligned timeout), the
// snapshot is taken at once and nothing is blocked; the buffers each channel delivered
// before its barrier that the snapshot does not reflect are recorded as channel state:
// those waiting in the gate are copied from it (without processing them first), those
// arriving later as the task reads them. It is complete once every channel's barrier
// arrived and everything before it was recorded.
type aligner struct {
	cur      *Barrier
	lastID   int64 // newest checkpoint completed or given up here: older barriers are stale
	seen     []bool
	held     [][]exchange.Delivery // exactly-once: buffers of channels whose barrier came
	blocked  []bool
	finished []bool
	first    time.Time
	// pending are released buffers to process before reading the gate again.
	pending []exchange.Delivery

	// last is the Seq of the last ordinary buffer read from each channel.
	last []int64
	// recTo is, per channel, the Seq up to which the current unaligned checkpoint's
	// in-flight data is recorded.
	recTo []int64
	// before is, per channel whose barrier came, the Seq of the last buffer before it.
	before    []int64
	unaligned bool // the current checkpoint's snapshot was taken unaligned
	input     [][][]byte
	output    [][][][]byte
	timeout   *time.Timer // aligned checkpoint timeout; nil when not armed

	// partial is a data buffer whose processing stopped part way for a priority
	// barrier; rest are its records not processed yet.
	partial    exchange.Delivery
	rest       []byte
	hasPartial bool
}

func newAligner(n int) *aligner {
	return &aligner{seen: make([]bool, n), held: make([][]exchange.Delivery, n), blocked: make([]bool, n), finished: make([]bool, n),
		last: make([]int64, n), recTo: make([]int64, n), before: make([]int64, n)}
}

// timeoutC fires when the aligned checkpoint timeout of the current checkpoint expires.
func (a *aligner) timeoutC() <-chan time.Time {
	if a.timeout == nil {
		return nil
	}
	return a.timeout.C
}

func (a *aligner) stopTimeout() {
	if a.timeout != nil {
		a.timeout.Stop()
		a.timeout = nil
	}
}

// unblock releases every blocked channel: its held buffers are processed next, in order.
func (a *aligner) unblock() {
	for ch := range a.held {
		a.pending = append(a.pending, a.held[ch]...)
		a.held[ch] = nil
		a.blocked[ch] = false
	}
}

// release ends the current checkpoint here.
func (a *aligner) release() {
	a.unblock()
	for ch := range a.seen {
		a.seen[ch] = false
	}
	a.stopTimeout()
	if a.cur != nil {
		a.lastID = max(a.lastID, a.cur.ID)
	}
	a.cur = nil
	a.unaligned = false
	a.input, a.output = nil, nil
}

// complete reports whether every channel that has not finished delivered the barrier
// and, unaligned, everything before it was read.
func (a *aligner) complete() bool {
	for ch := range a.seen {
		if a.finished[ch] {
			continue
		}
		if !a.seen[ch] || (a.unaligned && max(a.last[ch], a.recTo[ch]) < a.before[ch]) {
			return false
		}
	}
	return true
}

// recording reports whether a data buffer read from channel ch is in-flight data of the
// current unaligned checkpoint.
func (a *aligner) recording(ch int, seq int64) bool {
	return a.unaligned && seq > a.recTo[ch] && (!a.seen[ch] || seq <= a.before[ch])
}

// record adds a data buffer to the current checkpoint's in-flight data.
func (a *aligner) record(d exchange.Delivery) {
	a.input[d.Channel] = append(a.input[d.Channel], slices.Clone(d.Buf.Data))
	a.recTo[d.Channel] = d.Seq
}

// captureQueued records the in-flight data waiting in the gate. A barrier of the current
// checkpoint or an end of partition found there ends its channel's in-flight data as if
// it had been read (the barrier is ignored when it is).
func (t *Task) captureQueued(a *aligner) {
	t.Gate.Queued(func(d exchange.Delivery) {
		ch := d.Channel
		if d.Buf.Kind == exchange.KindPriorityBarrier {
			// Seen before the ordinary buffers: it bounds its channel's in-flight data.
			if b, err := DecodeBarrier(d.Buf.Data); err == nil && b.ID == a.cur.ID && !a.seen[ch] {
				a.seen[ch], a.before[ch] = true, d.Seq
			}
			return
		}
		if d.Seq <= a.recTo[ch] || (a.seen[ch] && d.Seq > a.before[ch]) {
			return
		}
		switch d.Buf.Kind {
		case exchange.KindData:
			a.record(d)
			return
		case exchange.KindBarrier:
			if b, err := DecodeBarrier(d.Buf.Data); err == nil && b.ID == a.cur.ID {
				a.seen[ch], a.before[ch] = true, d.Seq-1
				return
			}
		case exchange.KindEndOfPartition:
			a.seen[ch], a.before[ch] = true, d.Seq-1
			return
		}
		a.recTo[ch] = d.Seq // an event before the barrier: nothing to record
	})
}

// onBarrier handles barrier b from channel ch; seq is the Seq of the last ordinary buffer
// before it, and priority says it overtook the buffers in the gate.
func (t *Task) onBarrier(a *aligner, ch int, b Barrier, seq int64, priority bool) error {
	switch {
	case b.ID <= a.lastID || (a.cur != nil && b.ID < a.cur.ID):
		return nil // of a checkpoint already done or given up here
	case a.cur != nil && b.ID > a.cur.ID:
		// A newer checkpoint overtook the one being aligned: that one cannot complete.
		if t.Checkpoints != nil {
			t.Checkpoints.Abort(a.cur.ID, fmt.Errorf("barrier of checkpoint %d arrived before alignment of %d completed", b.ID, a.cur.ID))
		}
		a.release()
	}
	if a.cur == nil {
		bb := b
		bb.Unaligned = false
		a.cur = &bb
		a.first = time.Now()
		if b.Mode == ExactlyOnce && !priority && b.AlignedTimeoutMs > 0 {
			deadline := time.UnixMilli(b.TriggerUnixMilli + b.AlignedTimeoutMs)
			a.timeout = time.NewTimer(max(0, time.Until(deadline)))
		}
	}
	if a.seen[ch] {
		if a.unaligned {
			return nil // found in the gate when the checkpoint went unaligned
		}
		return fmt.Errorf("channel %d delivered the barrier of checkpoint %d twice", ch, b.ID)
	}
	a.seen[ch] = true
	a.before[ch] = seq
	switch {
	case priority && !a.unaligned:
		if err := t.goUnaligned(a); err != nil {
			return err
		}
	case priority:
		t.captureQueued(a) // the rest of this channel's in-flight data
	case b.Mode == ExactlyOnce && !a.unaligned:
		a.blocked[ch] = true
	}
	return t.maybeCompleteAlignment(a)
}

// goUnaligned switches the current checkpoint to unaligned: the snapshot is taken now,
// the barrier overtakes the outputs' queued buffers, and every channel is unblocked.
func (t *Task) goUnaligned(a *aligner) error {
	a.stopTimeout()
	a.unaligned = true
	a.unblock()
	b := *a.cur
	b.Unaligned = true
	al := Alignment{Duration: time.Since(a.first), StartDelay: a.first.Sub(time.UnixMilli(b.TriggerUnixMilli))}
	out, err := t.checkpointUnaligned(b, al)
	if err != nil {
		return err
	}
	a.output = out
	a.input = make([][][]byte, len(a.seen))
	for ch := range a.recTo {
		a.recTo[ch] = a.last[ch] // what was read before is in the snapshot
	}
	if ch := a.partial.Channel; a.hasPartial && (!a.seen[ch] || a.partial.Seq <= a.before[ch]) {
		// The part of the buffer the snapshot does not reflect.
		a.input[ch] = append(a.input[ch], slices.Clone(a.rest))
	}
	t.captureQueued(a)
	return nil
}

// onAlignmentTimeout switches a checkpoint whose alignment took too long to unaligned.
func (t *Task) onAlignmentTimeout(a *aligner) error {
	a.timeout = nil
	if a.cur == nil || a.unaligned || a.cur.Mode != ExactlyOnce {
		return nil
	}
	if err := t.goUnaligned(a); err != nil {
		return err
	}
	return t.maybeCompleteAlignment(a)
}

// maybeCompleteAlignment finishes the current checkpoint once complete: aligned, it
// snapshots and forwards the barrier; unaligned, it hands over the channel state.
func (t *Task) maybeCompleteAlignment(a *aligner) error {
	if a.cur == nil || !a.complete() {
		return nil
	}
	b := *a.cur
	if a.unaligned {
		cs := ChannelState{Input: a.input, Output: a.output}
		a.release()
		if t.Checkpoints != nil {
			t.Checkpoints.ChannelState(b.ID, cs)
		}
		return nil
	}
	al := Alignment{Duration: time.Since(a.first), StartDelay: a.first.Sub(time.UnixMilli(b.TriggerUnixMilli))}
	a.release()
	return t.checkpoint(b, al)
}

// checkpoint takes the snapshot and forwards the barrier to every output. A barrier
// that stops the job starts the stop here; a newer one ends a stop that did not
// complete (the jobmanager triggers nothing newer while a stop is under way).
func (t *Task) checkpoint(b Barrier, al Alignment) error {
	switch {
	case b.Stop:
		t.stopID, t.stopDone = b.ID, false
	case t.stopID != 0 && b.ID > t.stopID:
		t.stopID, t.stopDone = 0, false
	}
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

// checkpointUnaligned takes the snapshot and sends the barrier ahead of the outputs'
// queued buffers; it returns those, per output and channel.
func (t *Task) checkpointUnaligned(b Barrier, al Alignment) ([][][][]byte, error) {
	if t.Checkpoints != nil {
		if err := t.Checkpoints.Snapshot(b, al); err != nil {
			t.Checkpoints.Abort(b.ID, err)
		}
	}
	data := b.Encode()
	out := make([][][][]byte, len(t.Outputs))
	for i, p := range t.Outputs {
		over, err := p.BroadcastPriority(data)
		if err != nil {
			return nil, err
		}
		out[i] = over
	}
	return out, nil
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
		al := Alignment{StartDelay: max(0, delay)}
		if !b.Unaligned || b.Mode != ExactlyOnce {
			b.Unaligned = false
			return t.checkpoint(b, al)
		}
		out, err := t.checkpointUnaligned(b, al)
		if err != nil {
			return err
		}
		if t.Checkpoints != nil {
			t.Checkpoints.ChannelState(b.ID, ChannelState{Output: out})
		}
		return nil
	}
}

// TriggerStop returns the mailbox action that makes a source task take savepoint b,
// which stops the job (b.Stop), and then emit nothing until it completed. With drain the
// source first emits the final watermark, so every event-time timer downstream fires
// before the barrier. Post it to the task's Mailbox.
func (t *Task) TriggerStop(b Barrier, drain bool) func() error {
	trigger := t.TriggerCheckpoint(b, false)
	return func() error {
		if drain {
			if err := t.emitFinalWatermark(); err != nil {
				return fmt.Errorf("drain: %w", err)
			}
		}
		return trigger()
	}
}

// finalWatermarker is implemented by chains that emit the final watermark themselves
// (a source chain gives it to the operators after its source).
type finalWatermarker interface{ EmitFinalWatermark() error }

func (t *Task) emitFinalWatermark() error {
	if fw, ok := t.Chain.(finalWatermarker); ok {
		return fw.EmitFinalWatermark()
	}
	return t.Chain.ProcessWatermark(MaxWatermark)
}

// NotifyCheckpointComplete returns the mailbox action that passes checkpoint id's
// completion to the chain (notify), releases a source waiting for its final
// checkpoint, and ends a stop: once the savepoint that stops the job completed, the
// task ends.
func (t *Task) NotifyCheckpointComplete(id int64, notify func(int64) error) func() error {
	return func() error {
		if t.ended && t.finalID > 0 && id >= t.finalID {
			t.finalDone = true
		}
		if err := notify(id); err != nil {
			return err
		}
		if t.stopID != 0 && id >= t.stopID {
			t.stopDone = true
		}
		return nil
	}
}

// NotifyCheckpointAborted returns the mailbox action that ends a stop whose savepoint id
// was aborted: a source emits again.
func (t *Task) NotifyCheckpointAborted(id int64) func() error {
	return func() error {
		if t.stopID == id && !t.stopDone {
			t.logger().Info("the savepoint stopping the job was aborted: going on", "savepoint", id)
			t.stopID = 0
		}
		return nil
	}
}

// awaitStop waits, serving the mailbox, until the savepoint that stops the job
// completed (true) or was aborted (false).
func (t *Task) awaitStop(ctx context.Context, tick <-chan time.Time) (bool, error) {
	if err := t.flush(); err != nil {
		return false, err
	}
	t.publish()
	for t.stopID != 0 && !t.stopDone {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-tick:
		case f := <-t.Mailbox:
			if err := f(); err != nil {
				return false, err
			}
		}
	}
	return t.stopID != 0, nil
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
		if t.stopID != 0 && t.stopDone {
			return errStopped
		}
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
