package exchange

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Delivery is one buffer that arrived on input channel Channel of a gate.
type Delivery struct {
	Channel int
	Buf     *Buffer
	// Seq numbers the channel's buffers in order from 1. A priority buffer, which
	// overtakes the others, carries the Seq of the last buffer that arrived before it:
	// the buffers of its channel up to that one precede it in the producer's order.
	Seq int64
}

// channelEnd is the consumer's handle on one input channel.
type channelEnd interface {
	// recycle returns one credit to the producer.
	recycle()
	// close tells the producer side the consumer is gone.
	close()
}

// InputGate collects the buffers of all input channels of one subtask into a single
// queue, so the task loop waits on one signal whatever its number of inputs. Credit
// bounds the ordinary buffers a gate holds; priority buffers (which need no credit) are
// few, one per unaligned checkpoint and channel.
//
// The queue is inspectable (Queued), so that an unaligned checkpoint can persist the
// buffers received but not yet processed without processing them first.
type InputGate struct {
	credits  int
	channels []channelEnd
	input    []int // logical input (edge of the task) of each channel

	mu    sync.Mutex
	q     []Delivery // ordinary buffers, in arrival order, from head
	head  int
	prio  []Delivery // priority buffers, in arrival order
	seq   []int64    // Seq of the last ordinary buffer per channel
	ready chan struct{}
	// prioN counts the priority buffers held, read without the lock between records.
	prioN     atomic.Int32
	prioReady chan struct{} // signalled when a priority buffer arrives

	failOnce sync.Once
	failed   chan struct{}
	err      error
}

// NewInputGate returns a gate of n channels, each granting credits buffers.
func NewInputGate(n, credits int) *InputGate {
	credits = max(1, credits)
	return &InputGate{
		q:         make([]Delivery, 0, n*credits),
		credits:   credits,
		channels:  make([]channelEnd, n),
		input:     make([]int, n),
		seq:       make([]int64, n),
		ready:     make(chan struct{}, 1),
		prioReady: make(chan struct{}, 1),
		failed:    make(chan struct{}),
	}
}

// Ready is signalled when a buffer arrived in an empty gate. A consumer takes buffers
// with Poll until it reports none, and only then waits on Ready: a signal may be stale
// but none is lost.
func (g *InputGate) Ready() <-chan struct{} { return g.ready }

// Poll takes the next buffer: priority buffers first, then ordinary ones in arrival
// order (per channel, the producer's order).
func (g *InputGate) Poll() (Delivery, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.prio) > 0 {
		d := g.prio[0]
		g.prio[0] = Delivery{}
		g.prio = g.prio[1:]
		g.prioN.Add(-1)
		return d, true
	}
	if g.head == len(g.q) {
		return Delivery{}, false
	}
	d := g.q[g.head]
	g.q[g.head] = Delivery{}
	g.head++
	if g.head == len(g.q) {
		g.q, g.head = g.q[:0], 0
	}
	return d, true
}

// PollPriority takes the oldest priority buffer, if any, leaving ordinary ones: a
// backpressured consumer still takes barriers.
func (g *InputGate) PollPriority() (Delivery, bool) {
	if !g.PriorityWaiting() {
		return Delivery{}, false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.prio) == 0 {
		return Delivery{}, false
	}
	d := g.prio[0]
	g.prio[0] = Delivery{}
	g.prio = g.prio[1:]
	g.prioN.Add(-1)
	return d, true
}

// PriorityReady is signalled when a priority buffer arrived (a signal may be stale).
func (g *InputGate) PriorityReady() <-chan struct{} { return g.prioReady }

// PriorityWaiting reports whether a priority buffer waits to be taken: a consumer in the
// middle of a buffer may stop there and take it first.
func (g *InputGate) PriorityWaiting() bool { return g.prioN.Load() > 0 }

// Queued calls fn for every buffer the gate holds, in the order Poll would return them
// (priority buffers first), under the gate's lock: fn must not call the gate, and may
// read d.Buf but not keep it.
func (g *InputGate) Queued(fn func(d Delivery)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, d := range g.prio {
		fn(d)
	}
	for _, d := range g.q[g.head:] {
		fn(d)
	}
}

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
	kind := d.Buf.Kind
	d.Buf.Recycle()
	if kind == KindPriorityBarrier {
		return // sent without credit
	}
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
	g.mu.Lock()
	empty := len(g.prio) == 0 && g.head == len(g.q)
	if b.Kind == KindPriorityBarrier {
		g.prio = append(g.prio, Delivery{Channel: ch, Buf: b, Seq: g.seq[ch]})
		g.prioN.Add(1)
		select {
		case g.prioReady <- struct{}{}:
		default:
		}
	} else {
		g.seq[ch]++
		if len(g.q) == cap(g.q) && g.head > 0 {
			// Reuse the taken slots rather than grow: credit bounds what is live.
			n := copy(g.q, g.q[g.head:])
			clear(g.q[n:])
			g.q, g.head = g.q[:n], 0
		}
		g.q = append(g.q, Delivery{Channel: ch, Buf: b, Seq: g.seq[ch]})
	}
	g.mu.Unlock()
	if empty {
		select {
		case g.ready <- struct{}{}:
		default:
		}
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
