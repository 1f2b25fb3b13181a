package runtime

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/sluice-stream/sluice/pkg/exchange"
)

// Watermarks are Flink's: a watermark t in a channel promises that no more records with
// an event timestamp <= t follow in it (records that do are late, and still processed).
// Timestamps and watermarks are Unix milliseconds. A channel may also be marked idle: it
// carries no records for a while, so the watermark of the task must not wait for it.

// MaxWatermark is the final watermark: every source emits it when its input ends, so
// that every event-time timer downstream fires before the end of input (and before the
// final checkpoint).
const MaxWatermark = math.MaxInt64

// Watermark events travel in buffers of kind exchange.KindWatermark:
//
//	u8 1, then the watermark as a big-endian int64   a watermark
//	u8 2                                             the channel became idle
//	u8 3                                             the channel became active again
const (
	wmEventWatermark = 1
	wmEventIdle      = 2
	wmEventActive    = 3
)

// AppendWatermark appends the encoding of watermark wm to dst.
func AppendWatermark(dst []byte, wm int64) []byte {
	dst = append(dst, wmEventWatermark)
	return binary.BigEndian.AppendUint64(dst, uint64(wm))
}

// AppendWatermarkStatus appends the encoding of a change of watermark status to dst.
func AppendWatermarkStatus(dst []byte, idle bool) []byte {
	if idle {
		return append(dst, wmEventIdle)
	}
	return append(dst, wmEventActive)
}

// WatermarkEvent is a decoded watermark buffer: a watermark, or (IsStatus) a change of
// the channel's watermark status.
type WatermarkEvent struct {
	Watermark int64
	IsStatus  bool
	Idle      bool
}

// ErrBadWatermark says a watermark buffer does not decode.
var ErrBadWatermark = errors.New("runtime: malformed watermark")

// DecodeWatermark decodes what AppendWatermark or AppendWatermarkStatus wrote.
func DecodeWatermark(data []byte) (WatermarkEvent, error) {
	switch {
	case len(data) == 9 && data[0] == wmEventWatermark:
		return WatermarkEvent{Watermark: int64(binary.BigEndian.Uint64(data[1:]))}, nil
	case len(data) == 1 && (data[0] == wmEventIdle || data[0] == wmEventActive):
		return WatermarkEvent{IsStatus: true, Idle: data[0] == wmEventIdle}, nil
	}
	return WatermarkEvent{}, fmt.Errorf("%w: %d bytes", ErrBadWatermark, len(data))
}

// Valve combines the watermarks of a task's input channels into the task's own, as
// Flink's StatusWatermarkValve does. It is a pure state machine: the task feeds it the
// watermark events and ends of its channels and applies what it returns.
//
// Contract:
//   - The output watermark is the minimum over the active channels that are aligned
//     (whose watermark reached the output), and it only ever rises.
//   - An idle channel does not hold the output back, and its watermarks are ignored
//     until it is active again. It rejoins the minimum once its watermark caught up with
//     the output, so an early-resuming channel never moves the output backwards.
//   - When every channel that has not ended is idle, the output becomes idle, after
//     rising to the highest watermark of those channels (nothing else will move it).
//   - An ended channel (end of partition) no longer counts. Once every channel ended the
//     valve emits nothing more: the end of input is the task's final watermark.
//
// Initially every channel is active at math.MinInt64, so a channel whose producer emits
// no watermarks holds the output back until it ends.
type Valve struct {
	chans []valveChannel
	out   int64
	idle  bool
}

type valveChannel struct {
	wm      int64
	idle    bool
	ended   bool
	aligned bool // active, not ended, and wm >= the output watermark
}

// ValveOutput is what one input made the valve emit. Apply it in this order: first the
// watermark (when Advanced), then the status change (when StatusChanged).
type ValveOutput struct {
	Advanced  bool
	Watermark int64
	// StatusChanged says the output became idle (Idle) or active again.
	StatusChanged bool
	Idle          bool
}

// NewValve returns the valve of a task with n input channels.
func NewValve(n int) *Valve {
	v := &Valve{chans: make([]valveChannel, n), out: math.MinInt64}
	for i := range v.chans {
		v.chans[i] = valveChannel{wm: math.MinInt64, aligned: true}
	}
	return v
}

// Watermark is the output watermark so far (math.MinInt64 before the first).
func (v *Valve) Watermark() int64 { return v.out }

// Idle reports whether the output is idle.
func (v *Valve) Idle() bool { return v.idle }

// Input applies watermark event e of channel ch.
func (v *Valve) Input(ch int, e WatermarkEvent) ValveOutput {
	switch {
	case !e.IsStatus:
		return v.InputWatermark(ch, e.Watermark)
	case e.Idle:
		return v.MarkIdle(ch)
	default:
		return v.MarkActive(ch)
	}
}

// InputWatermark applies watermark wm of channel ch. Watermarks of idle or ended
// channels, and those not above the channel's previous one, are ignored.
func (v *Valve) InputWatermark(ch int, wm int64) ValveOutput {
	c := &v.chans[ch]
	if c.idle || c.ended || wm <= c.wm {
		return ValveOutput{}
	}
	c.wm = wm
	if !c.aligned && wm >= v.out {
		c.aligned = true
	}
	return v.advanceToMin()
}

// MarkIdle marks channel ch idle.
func (v *Valve) MarkIdle(ch int) ValveOutput {
	c := &v.chans[ch]
	if c.idle || c.ended {
		return ValveOutput{}
	}
	c.idle = true
	wasAligned := c.aligned
	c.aligned = false
	if v.allIdle() {
		return v.goIdle()
	}
	if wasAligned {
		return v.advanceToMin()
	}
	return ValveOutput{}
}

// MarkActive marks channel ch active again. Its watermark counts once it reaches the
// output watermark.
func (v *Valve) MarkActive(ch int) ValveOutput {
	c := &v.chans[ch]
	if !c.idle || c.ended {
		return ValveOutput{}
	}
	c.idle = false
	c.aligned = c.wm >= v.out
	if v.idle {
		v.idle = false
		return ValveOutput{StatusChanged: true, Idle: false}
	}
	return ValveOutput{}
}

// End says channel ch ended (end of partition): it no longer counts.
func (v *Valve) End(ch int) ValveOutput {
	c := &v.chans[ch]
	if c.ended {
		return ValveOutput{}
	}
	c.ended, c.aligned = true, false
	open := false
	for i := range v.chans {
		open = open || !v.chans[i].ended
	}
	if !open {
		return ValveOutput{}
	}
	if !v.idle && v.allIdle() {
		return v.goIdle()
	}
	return v.advanceToMin()
}

// allIdle reports whether every channel that has not ended is idle (and one has not).
func (v *Valve) allIdle() bool {
	open := false
	for i := range v.chans {
		c := &v.chans[i]
		if c.ended {
			continue
		}
		if !c.idle {
			return false
		}
		open = true
	}
	return open
}

// goIdle raises the output to the highest watermark of the open channels, then makes
// it idle.
func (v *Valve) goIdle() ValveOutput {
	o := ValveOutput{StatusChanged: !v.idle, Idle: true}
	v.idle = true
	hi := int64(math.MinInt64)
	for i := range v.chans {
		if c := &v.chans[i]; !c.ended {
			hi = max(hi, c.wm)
		}
	}
	if hi > v.out {
		v.out = hi
		o.Advanced, o.Watermark = true, hi
	}
	return o
}

// advanceToMin raises the output to the minimum of the aligned channels, if that is
// higher.
func (v *Valve) advanceToMin() ValveOutput {
	lo, found := int64(math.MaxInt64), false
	for i := range v.chans {
		if c := &v.chans[i]; c.aligned {
			lo, found = min(lo, c.wm), true
		}
	}
	if !found || lo <= v.out {
		return ValveOutput{}
	}
	v.out = lo
	return ValveOutput{Advanced: true, Watermark: lo}
}

// onWatermarkBuffer applies a watermark buffer of channel d.Channel: decodes and
// recycles it, feeds the valve, and hands what the valve emits to the chain.
func (t *Task) onWatermarkBuffer(v *Valve, d exchange.Delivery) error {
	e, err := DecodeWatermark(d.Buf.Data)
	t.Gate.Recycle(d)
	if err != nil {
		return fmt.Errorf("input channel %d: %w", d.Channel, err)
	}
	return t.applyValve(v.Input(d.Channel, e))
}

// endWatermarkChannel tells the valve that channel ch ended.
func (t *Task) endWatermarkChannel(v *Valve, ch int) error {
	return t.applyValve(v.End(ch))
}

// applyValve passes a valve's output to the chain: the watermark first (event-time
// timers fire, then the chain forwards it), then the status change.
func (t *Task) applyValve(o ValveOutput) error {
	if o.Advanced {
		if err := t.Chain.ProcessWatermark(o.Watermark); err != nil {
			return fmt.Errorf("watermark %d: %w", o.Watermark, err)
		}
	}
	if o.StatusChanged {
		if err := t.Chain.ProcessWatermarkStatus(o.Idle); err != nil {
			return fmt.Errorf("watermark status: %w", err)
		}
	}
	if o.Advanced || o.StatusChanged {
		return t.afterBatch()
	}
	return nil
}
