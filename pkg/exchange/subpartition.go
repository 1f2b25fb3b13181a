package exchange

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ChannelKey names one channel: the data that producer subtask Producer sends to
// consumer subtask Consumer over job edge Edge in one execution attempt of a job. Keys of
// different attempts never collide, so a restarted job never reads a stale channel.
type ChannelKey struct {
	JobID    string
	Attempt  int64
	Edge     int32
	Producer int32
	Consumer int32
}

func (k ChannelKey) String() string {
	return fmt.Sprintf("%s/a%d/e%d/%d->%d", k.JobID, k.Attempt, k.Edge, k.Producer, k.Consumer)
}

// ErrReleased is returned to a producer whose subpartition was released (its consumer
// went away or the attempt was canceled).
var ErrReleased = errors.New("exchange: channel released")

// reader is the consumer end attached to a subpartition. Both methods are called with
// the subpartition's mutex held and must not block.
type reader interface {
	// available says the subpartition has a queued buffer and credit for it. A reader
	// that cannot take buffers under the lock returns true: the caller then calls drain
	// once it released the lock.
	available(sp *subpartition) bool
	// drain moves buffers out while there are some and credit for them. Only one drain
	// runs at a time per subpartition (see subpartition.draining), so order is kept.
	drain(sp *subpartition)
	// fail says the subpartition was released; no buffer follows.
	fail(err error)
}

// subpartition is the producer side of one channel: a bounded FIFO of finished buffers
// and the credit granted by the consumer.
type subpartition struct {
	key       ChannelKey
	reg       *Registry
	maxQueued int
	space     chan struct{} // signalled when a queued buffer leaves; one waiter (the producer)
	owner     *Partition    // the producer's partition, once it exists; counts full subpartitions
	full      bool          // counted in owner.full: maxQueued or more queued

	mu       sync.Mutex
	queue    []*Buffer
	credit   int
	reader   reader
	draining bool // a goroutine is in reader.drain
	released bool
	finished bool // end-of-partition was taken by the reader
	err      error
}

// add queues b. A producer that checks Partition.Available before producing never
// blocks here: the queue may then exceed maxQueued by a few buffers (an overdraft, so
// that a record is never cut off half way). Beyond twice maxQueued, add blocks
// (backpressure) until space frees up, the subpartition is released, or ctx ends. On
// error b is recycled.
func (sp *subpartition) add(ctx context.Context, b *Buffer) error {
	sp.mu.Lock()
	for len(sp.queue) >= 2*sp.maxQueued && !sp.released {
		sp.mu.Unlock()
		select {
		case <-sp.space:
		case <-ctx.Done():
			b.Recycle()
			return ctx.Err()
		}
		sp.mu.Lock()
	}
	if sp.released {
		err := sp.err
		sp.mu.Unlock()
		b.Recycle()
		return err
	}
	sp.queue = append(sp.queue, b)
	sp.updateFullLocked()
	r, drain := sp.notifyLocked()
	sp.mu.Unlock()
	if drain {
		r.drain(sp)
	}
	return nil
}

// updateFullLocked keeps the owner's count of full subpartitions true.
func (sp *subpartition) updateFullLocked() {
	full := len(sp.queue) >= sp.maxQueued && !sp.released
	if full == sp.full || sp.owner == nil {
		return
	}
	sp.full = full
	if full {
		sp.owner.full.Add(1)
	} else {
		sp.owner.full.Add(-1)
	}
}

// addPriority queues a priority buffer ahead of every ordinary buffer (behind earlier
// priority ones), and with it pending, the producer's partially filled buffer (may be
// nil), at the tail. It does not wait for room: a priority buffer must not wait behind
// backpressure. It returns copies of the data buffers it overtook, in order.
func (sp *subpartition) addPriority(b, pending *Buffer) ([][]byte, error) {
	sp.mu.Lock()
	if sp.released {
		err := sp.err
		sp.mu.Unlock()
		b.Recycle()
		if pending != nil {
			pending.Recycle()
		}
		return nil, err
	}
	if pending != nil {
		sp.queue = append(sp.queue, pending)
	}
	at := 0
	for at < len(sp.queue) && sp.queue[at].Kind == KindPriorityBarrier {
		at++
	}
	var overtaken [][]byte
	for _, q := range sp.queue[at:] {
		if q.Kind == KindData {
			overtaken = append(overtaken, append([]byte(nil), q.Data...))
		}
	}
	sp.queue = append(sp.queue, nil)
	copy(sp.queue[at+1:], sp.queue[at:])
	sp.queue[at] = b
	sp.updateFullLocked()
	r, drain := sp.notifyLocked()
	sp.mu.Unlock()
	if drain {
		r.drain(sp)
	}
	return overtaken, nil
}

// sendableLocked reports whether the head buffer may go to the reader: it needs credit
// unless it is a priority buffer.
func (sp *subpartition) sendableLocked() bool {
	if len(sp.queue) == 0 || sp.released {
		return false
	}
	return sp.credit > 0 || sp.queue[0].Kind == KindPriorityBarrier
}

// notifyLocked tells the reader, if there is something to take; it returns the reader
// when the caller must drain after unlocking.
func (sp *subpartition) notifyLocked() (reader, bool) {
	if sp.reader == nil || !sp.sendableLocked() {
		return nil, false
	}
	return sp.reader, sp.reader.available(sp)
}

func (sp *subpartition) pollLocked() *Buffer {
	if !sp.sendableLocked() {
		return nil
	}
	b := sp.queue[0]
	copy(sp.queue, sp.queue[1:])
	sp.queue[len(sp.queue)-1] = nil
	sp.queue = sp.queue[:len(sp.queue)-1]
	if b.Kind != KindPriorityBarrier {
		sp.credit--
	}
	sp.updateFullLocked()
	// Wake a blocked producer only once the queue drained to half, so that it fills
	// several buffers per wake-up rather than one.
	if len(sp.queue) <= sp.maxQueued/2 {
		select {
		case sp.space <- struct{}{}:
		default:
		}
	}
	if b.Kind == KindEndOfPartition {
		// The consumer will have everything once this buffer arrives.
		sp.finished = true
		sp.reg.remove(sp)
	}
	return b
}

// addCredit grants n more buffers.
func (sp *subpartition) addCredit(n int) {
	sp.mu.Lock()
	sp.credit += n
	r, drain := sp.notifyLocked()
	sp.mu.Unlock()
	if drain {
		r.drain(sp)
	}
}

// attach connects the consumer end with its initial credit. A subpartition has at most
// one reader.
func (sp *subpartition) attach(r reader, credit int) error {
	sp.mu.Lock()
	if sp.reader != nil {
		sp.mu.Unlock()
		return fmt.Errorf("exchange: channel %s already has a reader", sp.key)
	}
	sp.reader = r
	if sp.released {
		r.fail(sp.err)
		sp.mu.Unlock()
		return nil
	}
	sp.credit = credit
	dr, drain := sp.notifyLocked()
	sp.mu.Unlock()
	if drain {
		dr.drain(sp)
	}
	return nil
}

// release drops the queued buffers, fails the reader and wakes a blocked producer.
// Only the first call has an effect, and none after the reader took end-of-partition.
func (sp *subpartition) release(err error) {
	sp.mu.Lock()
	if sp.released || sp.finished {
		sp.mu.Unlock()
		return
	}
	sp.released = true
	sp.err = err
	for _, b := range sp.queue {
		b.Recycle()
	}
	sp.queue = nil
	sp.updateFullLocked()
	if sp.reader != nil {
		sp.reader.fail(err)
	}
	// Wake a producer waiting for space (blocked in add, or for availability): it
	// finds the subpartition released.
	select {
	case sp.space <- struct{}{}:
	default:
	}
	sp.mu.Unlock()
	sp.reg.remove(sp)
}

// Registry holds the subpartitions of one task manager. Either side may touch a channel
// first: the producer when its task is deployed, the consumer when it requests the
// channel; both get the same subpartition.
type Registry struct {
	pool      *Pool
	maxQueued int

	mu   sync.Mutex
	subs map[ChannelKey]*subpartition
}

// NewRegistry returns a registry whose buffers have bufferSize bytes and whose
// subpartitions queue at most maxQueued buffers.
func NewRegistry(bufferSize, maxQueued int) *Registry {
	return &Registry{pool: NewPool(bufferSize), maxQueued: max(1, maxQueued), subs: map[ChannelKey]*subpartition{}}
}

// Pool is the registry's buffer pool.
func (r *Registry) Pool() *Pool { return r.pool }

func (r *Registry) get(key ChannelKey) *subpartition {
	r.mu.Lock()
	defer r.mu.Unlock()
	sp := r.subs[key]
	if sp == nil {
		sp = &subpartition{key: key, reg: r, maxQueued: r.maxQueued, space: make(chan struct{}, 1)}
		r.subs[key] = sp
	}
	return sp
}

func (r *Registry) remove(sp *subpartition) {
	r.mu.Lock()
	if r.subs[sp.key] == sp {
		delete(r.subs, sp.key)
	}
	r.mu.Unlock()
}

// Len is the number of live subpartitions (for tests and metrics).
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.subs)
}

// ReleaseAttempt releases every channel of one execution attempt of a job, waking its
// blocked producers and failing its readers.
func (r *Registry) ReleaseAttempt(jobID string, attempt int64, err error) {
	r.mu.Lock()
	var victims []*subpartition
	for k, sp := range r.subs {
		if k.JobID == jobID && k.Attempt == attempt {
			victims = append(victims, sp)
		}
	}
	r.mu.Unlock()
	for _, sp := range victims {
		sp.release(err)
	}
}
