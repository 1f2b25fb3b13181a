package exchange

import (
	"fmt"
	"sync"
)

// Delivery is one buffer that arrived on input channel Channel of a gate.
type Delivery struct {
	Channel int
	Buf     *Buffer
}

// channelEnd is the consumer's handle on one input channel.
type channelEnd interface {
	// recycle returns one credit to the producer.
	recycle()
	// close tells the producer side the consumer is gone.
	close()
}

// InputGate collects the buffers of all input channels of one subtask into a single
// queue, so the task loop waits on one Go channel whatever its number of inputs.
// Capacity equals the credits granted in total, so producers never block on it.
type InputGate struct {
	c        chan Delivery
	credits  int
	channels []channelEnd
	input    []int // logical input (edge of the task) of each channel

	failOnce sync.Once
	failed   chan struct{}
	err      error
}

// NewInputGate returns a gate of n channels, each granting credits buffers.
func NewInputGate(n, credits int) *InputGate {
	credits = max(1, credits)
	return &InputGate{
		c:        make(chan Delivery, n*credits),
		credits:  credits,
		channels: make([]channelEnd, n),
		input:    make([]int, n),
		failed:   make(chan struct{}),
	}
}

// C delivers the buffers in arrival order; per channel the order is the producer's.
func (g *InputGate) C() <-chan Delivery { return g.c }

// Failed is closed when a channel broke (its producer or the connection failed); Err
// says why.
func (g *InputGate) Failed() <-chan struct{} { return g.failed }

// Err is the first channel failure.
func (g *InputGate) Err() error {
	select {
	case <-g.failed:
		return g.err
	default:
		return nil
	}
}

// NumChannels is the number of input channels.
func (g *InputGate) NumChannels() int { return len(g.channels) }

// Input is the logical input index that channel ch belongs to.
func (g *InputGate) Input(ch int) int { return g.input[ch] }

// Recycle gives back a delivered buffer: the buffer returns to its pool and the
// channel's producer gets its credit back.
func (g *InputGate) Recycle(d Delivery) {
	d.Buf.Recycle()
	if end := g.channels[d.Channel]; end != nil {
		end.recycle()
	}
}

// Close detaches every channel. Call it once the task stops reading.
func (g *InputGate) Close() {
	for i, end := range g.channels {
		if end != nil {
			end.close()
			g.channels[i] = nil
		}
	}
}

func (g *InputGate) deliver(ch int, b *Buffer) {
	select {
	case g.c <- Delivery{Channel: ch, Buf: b}:
	default:
		// Credit accounting guarantees room; reaching here is a bug, not backpressure.
		g.fail(fmt.Errorf("exchange: input gate overflow on channel %d", ch))
	}
}

func (g *InputGate) fail(err error) {
	g.failOnce.Do(func() {
		g.err = err
		close(g.failed)
	})
}

// localReader connects a subpartition and an input gate in the same task manager:
// buffers move from the producer's queue into the gate directly, with no copy.
type localReader struct {
	gate *InputGate
	ch   int
	sp   *subpartition
}

func (r *localReader) available(sp *subpartition) bool {
	for b := sp.pollLocked(); b != nil; b = sp.pollLocked() {
		r.gate.deliver(r.ch, b)
	}
	return false
}

func (r *localReader) drain(*subpartition) {}

func (r *localReader) fail(err error) {
	r.gate.fail(fmt.Errorf("input channel %s: %w", r.sp.key, err))
}

func (r *localReader) recycle() { r.sp.addCredit(1) }

func (r *localReader) close() {
	// A channel closed before end-of-partition releases the producer side.
	r.sp.release(fmt.Errorf("%w: consumer of %s closed", ErrReleased, r.sp.key))
}

// ConnectLocal attaches input channel ch (of logical input) to a subpartition of this
// task manager's registry.
func (g *InputGate) ConnectLocal(reg *Registry, ch, input int, key ChannelKey) error {
	sp := reg.get(key)
	r := &localReader{gate: g, ch: ch, sp: sp}
	g.channels[ch] = r
	g.input[ch] = input
	return sp.attach(r, g.credits)
}
