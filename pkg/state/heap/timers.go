package heap

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/sluice-stream/sluice/pkg/state"
)

// A timer is identified by its ID: the timestamp as 8 bytes big-endian with the sign bit
// flipped (so byte order is numeric order), uvarint(len(key)), the key and the namespace.
// Ordering IDs as strings orders timers by timestamp, then deterministically by key and
// namespace.

func appendTimerID(dst []byte, ts int64, key, ns []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(ts)^(1<<63))
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	return append(dst, ns...)
}

func timerTS(id string) int64 {
	_ = id[7]
	u := uint64(id[0])<<56 | uint64(id[1])<<48 | uint64(id[2])<<40 | uint64(id[3])<<32 |
		uint64(id[4])<<24 | uint64(id[5])<<16 | uint64(id[6])<<8 | uint64(id[7])
	return int64(u ^ (1 << 63))
}

// parseTimerID splits an ID; ok is false for a malformed ID (never produced here).
func parseTimerID(id string) (ts int64, key, ns string, ok bool) {
	if len(id) < 9 {
		return 0, "", "", false
	}
	key, ns, ok = splitKey(id[8:])
	return timerTS(id), key, ns, ok
}

type timerItem struct {
	id string
	gi int32 // key group - range start
}

// timerQueue holds the timers of one time domain: a copy-on-write set per key group
// (what snapshots capture) and a min-heap of IDs for firing order. Deletion is lazy: a
// heap item whose ID is no longer in its set is skipped when it surfaces, and the heap
// is rebuilt from the sets when stale items outnumber live ones.
type timerQueue struct {
	domain state.TimeDomain
	sets   []*group
	heap   []timerItem
	live   int
}

func (q *timerQueue) less(i, j int) bool { return q.heap[i].id < q.heap[j].id }

func (q *timerQueue) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			return
		}
		q.heap[i], q.heap[p] = q.heap[p], q.heap[i]
		i = p
	}
}

func (q *timerQueue) down(i int) {
	n := len(q.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && q.less(r, l) {
			m = r
		}
		if !q.less(m, i) {
			return
		}
		q.heap[i], q.heap[m] = q.heap[m], q.heap[i]
		i = m
	}
}

func (q *timerQueue) push(it timerItem) {
	q.heap = append(q.heap, it)
	q.up(len(q.heap) - 1)
}

func (q *timerQueue) pop() {
	n := len(q.heap) - 1
	q.heap[0] = q.heap[n]
	q.heap[n] = timerItem{}
	q.heap = q.heap[:n]
	if n > 0 {
		q.down(0)
	}
}

func (q *timerQueue) heapify() {
	for i := len(q.heap)/2 - 1; i >= 0; i-- {
		q.down(i)
	}
}

// isLive reports whether a heap item is still a registered timer.
func (q *timerQueue) isLive(it timerItem) bool {
	g := q.sets[it.gi]
	if g == nil {
		return false
	}
	_, ok := g.m[it.id]
	return ok
}

// top returns the earliest live timer, dropping stale items.
func (q *timerQueue) top() (timerItem, bool) {
	for len(q.heap) > 0 {
		if it := q.heap[0]; q.isLive(it) {
			return it, true
		}
		q.pop()
	}
	return timerItem{}, false
}

// rebuild recreates the heap from the sets.
func (q *timerQueue) rebuild() {
	q.heap = q.heap[:0]
	for gi, g := range q.sets {
		if g == nil {
			continue
		}
		for id := range g.m {
			q.heap = append(q.heap, timerItem{id: id, gi: int32(gi)})
		}
	}
	q.heapify()
}

// timers is the heap backend's TimerService.
type timers struct {
	b         *Backend
	event     timerQueue
	proc      timerQueue
	watermark int64
	firing    bool
	idBuf     []byte
	fireBuf   []byte
}

var _ state.TimerService = (*timers)(nil)

func (t *timers) init(b *Backend) {
	n := b.kgs.Len()
	*t = timers{
		b:         b,
		event:     timerQueue{domain: state.EventTime, sets: make([]*group, n)},
		proc:      timerQueue{domain: state.ProcessingTime, sets: make([]*group, n)},
		watermark: math.MinInt64,
	}
}

func (t *timers) check(keyGroup int) error {
	if t.b.closed {
		return state.ErrClosed
	}
	if !t.b.kgs.Contains(keyGroup) {
		return fmt.Errorf("%w: timer key group %d is not in %v", state.ErrKeyGroupOutOfRange, keyGroup, t.b.kgs)
	}
	return nil
}

func (t *timers) register(q *timerQueue, ts int64, key []byte, keyGroup int, ns []byte) error {
	if err := t.check(keyGroup); err != nil {
		return err
	}
	gi := keyGroup - t.b.kgs.Start
	t.idBuf = appendTimerID(t.idBuf[:0], ts, key, ns)
	if g := q.sets[gi]; g != nil {
		if _, dup := g.m[string(t.idBuf)]; dup {
			return nil
		}
	}
	g := t.b.writable(q.sets, gi, t.b.ep.required.Load())
	id := string(t.idBuf)
	g.m[id] = nil
	q.live++
	q.push(timerItem{id: id, gi: int32(gi)})
	return nil
}

func (t *timers) delete(q *timerQueue, ts int64, key []byte, keyGroup int, ns []byte) error {
	if err := t.check(keyGroup); err != nil {
		return err
	}
	gi := keyGroup - t.b.kgs.Start
	g := q.sets[gi]
	if g == nil {
		return nil
	}
	t.idBuf = appendTimerID(t.idBuf[:0], ts, key, ns)
	if _, ok := g.m[string(t.idBuf)]; !ok {
		return nil
	}
	t.b.own(g, t.b.ep.required.Load())
	delete(g.m, string(t.idBuf))
	q.live--
	if len(q.heap) > 2*q.live+1024 {
		q.rebuild()
	}
	return nil
}

func (t *timers) RegisterEventTimer(ts int64, key []byte, keyGroup int, ns []byte) error {
	return t.register(&t.event, ts, key, keyGroup, ns)
}

func (t *timers) RegisterProcessingTimer(ts int64, key []byte, keyGroup int, ns []byte) error {
	return t.register(&t.proc, ts, key, keyGroup, ns)
}

func (t *timers) DeleteEventTimer(ts int64, key []byte, keyGroup int, ns []byte) error {
	return t.delete(&t.event, ts, key, keyGroup, ns)
}

func (t *timers) DeleteProcessingTimer(ts int64, key []byte, keyGroup int, ns []byte) error {
	return t.delete(&t.proc, ts, key, keyGroup, ns)
}

func (t *timers) CurrentWatermark() int64 { return t.watermark }

func (t *timers) AdvanceWatermark(wm int64, fire func(state.Timer) error) error {
	if wm > t.watermark {
		t.watermark = wm
	}
	return t.fire(&t.event, wm, fire)
}

func (t *timers) NextProcessingTimer() (int64, bool) {
	it, ok := t.proc.top()
	if !ok {
		return 0, false
	}
	return timerTS(it.id), true
}

func (t *timers) FireProcessingTimers(now int64, fire func(state.Timer) error) error {
	return t.fire(&t.proc, now, fire)
}

// fire fires the timers of q due at limit, in order, including those registered by the
// callbacks.
func (t *timers) fire(q *timerQueue, limit int64, fire func(state.Timer) error) error {
	if t.b.closed {
		return state.ErrClosed
	}
	if t.firing {
		return state.ErrReentrant
	}
	t.firing = true
	defer func() { t.firing = false }()
	for {
		it, ok := q.top()
		if !ok || timerTS(it.id) > limit {
			return nil
		}
		q.pop()
		g := q.sets[it.gi]
		t.b.own(g, t.b.ep.required.Load())
		delete(g.m, it.id)
		q.live--
		ts, key, ns, ok := parseTimerID(it.id)
		if !ok {
			return fmt.Errorf("heap: malformed timer id %q", it.id)
		}
		t.fireBuf = append(append(t.fireBuf[:0], key...), ns...)
		kb, nb := t.fireBuf[:len(key):len(key)], t.fireBuf[len(key):]
		kg := t.b.kgs.Start + int(it.gi)
		t.b.SetCurrentKey(kb, kg)
		if err := fire(state.Timer{Timestamp: ts, Key: kb, KeyGroup: kg, Namespace: nb, Domain: q.domain}); err != nil {
			return fmt.Errorf("%v timer at %d: %w", q.domain, ts, err)
		}
	}
}

// count is the number of live timers.
func (t *timers) count() int { return t.event.live + t.proc.live }
