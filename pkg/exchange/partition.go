package exchange

import (
	"context"
	"sync/atomic"
)

// Partition is the producer side of one output edge of one subtask: one subpartition per
// channel. It is owned by the task goroutine and is not safe for concurrent use.
type Partition struct {
	ctx       context.Context
	pool      *Pool
	subs      []*subpartition
	cur       []*Buffer // buffer being filled, per channel
	unflushed int       // channels whose cur holds records
	bytes     int64
	// full counts the subpartitions with maxQueued buffers or more queued; space is
	// signalled when one of them drains to half.
	full  atomic.Int32
	space chan struct{}
}

// NewPartition registers the subpartitions for keys (one per channel, in channel order).
// ctx bounds every blocking write: cancel it to cancel the task.
func (r *Registry) NewPartition(ctx context.Context, keys []ChannelKey) *Partition {
	p := &Partition{ctx: ctx, pool: r.pool, subs: make([]*subpartition, len(keys)), cur: make([]*Buffer, len(keys)), space: make(chan struct{}, 1)}
	for i, k := range keys {
		sp := r.get(k)
		sp.mu.Lock()
		sp.owner, sp.space = p, p.space
		sp.updateFullLocked()
		sp.mu.Unlock()
		p.subs[i] = sp
	}
	return p
}

// Available reports whether every channel has room for more buffers: a task produces
// only then, so that it never blocks inside a record and stays responsive to control
// actions and checkpoint barriers under backpressure. It is one atomic load.
func (p *Partition) Available() bool { return p.full.Load() == 0 }

// Space is signalled when a full channel drained to half; check Available again.
func (p *Partition) Space() <-chan struct{} { return p.space }

// NumChannels is the number of consumer channels.
func (p *Partition) NumChannels() int { return len(p.subs) }

// Bytes is the number of record bytes (with framing) written so far.
func (p *Partition) Bytes() int64 { return p.bytes }

// Emit appends one serialized record to channel ch, sending the channel's buffer when it
// is full. It blocks while the channel is backpressured. rec is copied.
func (p *Partition) Emit(ch int, rec []byte) error {
	need := framedLen(rec)
	b := p.cur[ch]
	if b != nil && len(b.Data)+need > p.pool.limit {
		if err := p.flush(ch); err != nil {
			return err
		}
		b = nil
	}
	if b == nil {
		b = p.pool.Get()
		if need > p.pool.limit {
			// A record larger than a buffer travels alone in a buffer of its own size.
			b.Data = make([]byte, 0, need)
		}
		p.cur[ch] = b
		p.unflushed++
	}
	b.Data = appendRecord(b.Data, rec)
	p.bytes += int64(need)
	return nil
}

// Broadcast appends rec to every channel.
func (p *Partition) Broadcast(rec []byte) error {
	for ch := range p.subs {
		if err := p.Emit(ch, rec); err != nil {
			return err
		}
	}
	return nil
}

func (p *Partition) flush(ch int) error {
	b := p.cur[ch]
	p.cur[ch] = nil
	p.unflushed--
	return p.subs[ch].add(p.ctx, b)
}

// HasUnflushed reports whether some channel holds records not yet sent.
func (p *Partition) HasUnflushed() bool { return p.unflushed > 0 }

// Flush sends every partially filled buffer (the buffer timeout calls it).
func (p *Partition) Flush() error {
	if p.unflushed == 0 {
		return nil
	}
	for ch, b := range p.cur {
		if b != nil {
			if err := p.flush(ch); err != nil {
				return err
			}
		}
	}
	return nil
}

// BroadcastEvent flushes every channel, so that the event follows all records written
// before it, then sends a buffer of kind with a copy of data on every channel.
func (p *Partition) BroadcastEvent(kind Kind, data []byte) error {
	if err := p.Flush(); err != nil {
		return err
	}
	for _, sp := range p.subs {
		b := p.pool.Get()
		b.Kind = kind
		b.Data = append(b.Data, data...)
		if err := sp.add(p.ctx, b); err != nil {
			return err
		}
	}
	return nil
}

// BroadcastPriority sends a priority buffer of kind KindPriorityBarrier with a copy of
// data on every channel, ahead of the buffers queued there; the partially filled
// buffers are queued behind it. It never blocks on backpressure. It returns, per
// channel, copies of the data buffers the event overtook (including those partially
// filled ones): the in-flight data an unaligned checkpoint persists.
func (p *Partition) BroadcastPriority(data []byte) ([][][]byte, error) {
	out := make([][][]byte, len(p.subs))
	for ch, sp := range p.subs {
		b := p.pool.Get()
		b.Kind = KindPriorityBarrier
		b.Data = append(b.Data, data...)
		pending := p.cur[ch]
		if pending != nil {
			p.cur[ch] = nil
			p.unflushed--
		}
		over, err := sp.addPriority(b, pending)
		if err != nil {
			return nil, err
		}
		out[ch] = over
	}
	return out, nil
}

// EmitBuffer sends a copy of a data buffer of already framed records to channel ch, after
// what was written before. It restores an output channel's in-flight data.
func (p *Partition) EmitBuffer(ch int, data []byte) error {
	if p.cur[ch] != nil {
		if err := p.flush(ch); err != nil {
			return err
		}
	}
	b := p.pool.Get()
	if len(data) > cap(b.Data) {
		b.Data = make([]byte, 0, len(data))
	}
	b.Data = append(b.Data, data...)
	p.bytes += int64(len(data))
	return p.subs[ch].add(p.ctx, b)
}

// Finish flushes and sends end-of-partition on every channel. The partition must not be
// written afterwards.
func (p *Partition) Finish() error {
	if err := p.Flush(); err != nil {
		return err
	}
	for _, sp := range p.subs {
		if err := sp.add(p.ctx, &Buffer{Kind: KindEndOfPartition}); err != nil {
			return err
		}
	}
	return nil
}

// Abort drops partially filled buffers and releases the channels with err, so that
// consumers learn the producer failed.
func (p *Partition) Abort(err error) {
	for ch, b := range p.cur {
		if b != nil {
			b.Recycle()
			p.cur[ch] = nil
		}
	}
	p.unflushed = 0
	for _, sp := range p.subs {
		sp.release(err)
	}
}
