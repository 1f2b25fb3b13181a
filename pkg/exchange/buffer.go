// Package exchange moves serialized records between subtasks: in memory inside a task
// manager, over one multiplexed gRPC stream per task-manager pair otherwise.
//
// Records travel in buffers of tens of KiB. Flow control is credit-based: a consumer's
// input channel grants one credit per free buffer it holds, and a producer sends a buffer
// only against a credit. A producer's subpartition queues a bounded number of buffers;
// when the queue is full the producing task blocks, so a slow consumer backpressures its
// producers all the way to the sources.
//
// The consumer side drives a channel: it requests the channel from the producer's task
// manager with its initial credit, then returns one credit per buffer it recycles.
package exchange

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Kind tells data buffers from in-band events. Events travel in the same channels as
// records, in order, so that markers such as end-of-partition, checkpoint barriers and
// watermarks follow exactly the records sent before them.
type Kind uint8

const (
	// KindData holds length-prefixed records.
	KindData Kind = 1
	// KindEndOfPartition says the producer subtask finished; nothing follows.
	KindEndOfPartition Kind = 2
	// KindBarrier carries a checkpoint barrier (encoded by the runtime) in Data.
	KindBarrier Kind = 3
	// KindWatermark carries a watermark or a change of watermark status (encoded by the
	// runtime) in Data. Like a barrier it follows the records sent before it and takes a
	// credit.
	KindWatermark Kind = 4
	// KindPriorityBarrier carries the barrier of an unaligned checkpoint. It overtakes
	// the buffers queued before it (the producer persists those as channel state),
	// needs no credit, and the consumer's gate hands it to the task ahead of the buffers
	// it already holds (see InputGate.Priority).
	KindPriorityBarrier Kind = 5
)

func (k Kind) String() string {
	switch k {
	case KindData:
		return "data"
	case KindEndOfPartition:
		return "end-of-partition"
	case KindBarrier:
		return "barrier"
	case KindWatermark:
		return "watermark"
	case KindPriorityBarrier:
		return "priority-barrier"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Buffer is the unit of transfer and of credit. A Buffer has one owner at a time: the
// producer filling it, the subpartition queue, the sender, then the consumer; the last
// owner returns it to its pool (if any) with Recycle.
type Buffer struct {
	Kind Kind
	Data []byte
	pool *Pool
}

// Recycle returns the buffer to its pool. The buffer must not be used afterwards.
func (b *Buffer) Recycle() {
	// Buffers grown for an oversized record are left to the garbage collector.
	if b.pool != nil && cap(b.Data) == b.pool.size {
		b.Data = b.Data[:0]
		b.pool.p.Put(b)
	}
}

// Pool hands out buffers of one capacity.
type Pool struct {
	size  int
	limit int // bytes of records a buffer is filled with
	p     sync.Pool
}

// frameHeadroom keeps a full buffer plus its frame and gRPC headers within size bytes,
// so that gRPC handles it in its size-sized tier rather than the next (far larger) one.
const frameHeadroom = 64

// NewPool returns a pool of buffers of size bytes.
func NewPool(size int) *Pool {
	p := &Pool{size: size, limit: size}
	if size > 4*frameHeadroom {
		p.limit = size - frameHeadroom
	}
	p.p.New = func() any { return &Buffer{Data: make([]byte, 0, size), pool: p} }
	return p
}

// Size is the capacity of the pool's buffers.
func (p *Pool) Size() int { return p.size }

// Limit is how many bytes of framed records a buffer is filled with: a little less than
// Size, leaving room for the frame headers.
func (p *Pool) Limit() int { return p.limit }

// Get returns an empty data buffer.
func (p *Pool) Get() *Buffer {
	b := p.p.Get().(*Buffer)
	b.Kind = KindData
	return b
}

// ErrCorruptBuffer means a data buffer's record framing is broken.
var ErrCorruptBuffer = errors.New("exchange: corrupt record framing in buffer")

// Records iterates over the length-prefixed records of a data buffer without copying:
// each record slice aliases the buffer and is valid only until the buffer is recycled.
type Records struct {
	data []byte
	err  error
}

// NewRecords starts iterating over data.
func NewRecords(data []byte) Records { return Records{data: data} }

// Next returns the next record, or false at the end or on corrupt framing (see Err).
func (r *Records) Next() ([]byte, bool) {
	if len(r.data) == 0 {
		return nil, false
	}
	n, w := binary.Uvarint(r.data)
	if w <= 0 || uint64(len(r.data)-w) < n {
		r.err = ErrCorruptBuffer
		r.data = nil
		return nil, false
	}
	rec := r.data[w : w+int(n)]
	r.data = r.data[w+int(n):]
	return rec, true
}

// Rest is the framed records Next has not returned yet (aliasing the buffer).
func (r *Records) Rest() []byte { return r.data }

// Err reports corrupt framing met by Next.
func (r *Records) Err() error { return r.err }

// appendRecord appends one length-prefixed record.
func appendRecord(dst, rec []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(rec)))
	return append(dst, rec...)
}

// framedLen is the number of bytes appendRecord adds for rec.
func framedLen(rec []byte) int {
	n := len(rec)
	w := 1
	for x := uint64(n); x >= 0x80; x >>= 7 {
		w++
	}
	return n + w
}
