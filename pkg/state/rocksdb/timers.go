//go:build cgo

package rocksdb

import (
	"bytes"
	"fmt"
	"math"

	"github.com/sluice-stream/sluice/pkg/state"
)

// Timers live in RocksDB, one column family per time domain, under keys
// kg | timer ID (keys.go): within a key group they sort in firing order, so a key
// group's earliest timer is its first key. Memory holds only that earliest timer (the
// head) of each key group and a min-heap of the key groups by head: O(key groups), not
// O(timers). Registering compares with the head; firing or deleting the head reads the
// next one with one bounded seek. Since the timers are in the database, a snapshot
// captures them with the state and a restore re-arms them (init rebuilds the heads).

// timerQueue is one time domain.
type timerQueue struct {
	domain state.TimeDomain
	col    *column
	heads  [][]byte // per key group - range start: its earliest timer's ID, nil if none
	heap   []int32  // key groups (- range start) with a head, a min-heap by head
	pos    []int32  // index of each key group in heap, -1 when absent
	count  int      // timers in the queue
}

func (q *timerQueue) less(i, j int) bool {
	return bytes.Compare(q.heads[q.heap[i]], q.heads[q.heap[j]]) < 0
}

func (q *timerQueue) swap(i, j int) {
	q.heap[i], q.heap[j] = q.heap[j], q.heap[i]
	q.pos[q.heap[i]], q.pos[q.heap[j]] = int32(i), int32(j)
}

func (q *timerQueue) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			return
		}
		q.swap(i, p)
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
		q.swap(i, m)
		i = m
	}
}

// setHead makes id (copied) the head of key group gi and fixes the heap.
func (q *timerQueue) setHead(gi int, id []byte) {
	q.heads[gi] = append(q.heads[gi][:0], id...)
	if p := q.pos[gi]; p >= 0 {
		q.up(int(p))
		q.down(int(q.pos[gi]))
		return
	}
	q.pos[gi] = int32(len(q.heap))
	q.heap = append(q.heap, int32(gi))
	q.up(len(q.heap) - 1)
}

// clearHead removes key group gi from the heap.
func (q *timerQueue) clearHead(gi int) {
	q.heads[gi] = q.heads[gi][:0]
	p := int(q.pos[gi])
	if p < 0 {
		return
	}
	last := len(q.heap) - 1
	if p != last {
		q.swap(p, last)
	}
	q.heap = q.heap[:last]
	q.pos[gi] = -1
	if p != last {
		moved := q.heap[p]
		q.up(p)
		q.down(int(q.pos[moved]))
	}
}

func (q *timerQueue) hasHead(gi int) bool { return q.pos[gi] >= 0 }

// timers is the backend's TimerService.
type timers struct {
	b         *Backend
	q         [2]timerQueue // event, processing
	watermark int64
	firing    bool
	kbuf      []byte // the database key of the timer at hand
	probe     []byte
	found     []byte
	fireBuf   []byte
}

var _ state.TimerService = (*timers)(nil)

// init rebuilds the queues from the database: one scan of each timer column family
// counts the timers and takes each key group's first as its head.
func (t *timers) init(b *Backend) error {
	n := b.kgs.Len()
	*t = timers{b: b, watermark: math.MinInt64, kbuf: t.kbuf, probe: t.probe, found: t.found, fireBuf: t.fireBuf}
	for i, d := range []state.TimeDomain{state.EventTime, state.ProcessingTime} {
		q := &t.q[i]
		*q = timerQueue{domain: d, col: b.timerCols[i], heads: make([][]byte, n), pos: make([]int32, n)}
		for gi := range q.pos {
			q.pos[gi] = -1
		}
		it := b.nat.iter(q.col.c, nil, nil)
		for it.SeekToFirst(); it.Valid(); it.Next() {
			k := it.Key()
			if len(k) < b.plen+9 {
				it.Close()
				return errorf("%v timers: malformed key %x", d, k)
			}
			kg := keyGroupOf(k, b.plen)
			if !b.kgs.Contains(kg) {
				it.Close()
				return errorf("%v timers: key group %d is not in %v", d, kg, b.kgs)
			}
			q.count++
			if gi := kg - b.kgs.Start; !q.hasHead(gi) {
				q.setHead(gi, k[b.plen:])
			}
		}
		err := it.Err()
		it.Close()
		if err != nil {
			return errorf("%v timers: %w", d, err)
		}
	}
	return nil
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

// timerKey builds the database key of a timer in t.kbuf and returns it with its ID.
func (t *timers) timerKey(ts int64, key []byte, keyGroup int, ns []byte) (k, id []byte) {
	t.kbuf = appendKeyGroup(t.kbuf[:0], keyGroup, t.b.plen)
	t.kbuf = appendTimerID(t.kbuf, ts, key, ns)
	return t.kbuf, t.kbuf[t.b.plen:]
}

// exists reports whether the timer of key k (ID id) is registered.
func (t *timers) exists(q *timerQueue, gi int, k, id []byte) (bool, error) {
	if !q.hasHead(gi) {
		return false, nil
	}
	switch c := bytes.Compare(id, q.heads[gi]); {
	case c == 0:
		return true, nil
	case c < 0:
		return false, nil // before the earliest timer of its key group
	}
	var ok bool
	var err error
	t.probe, ok, err = t.b.nat.get(q.col.c, k, t.probe[:0])
	return ok, err
}

// next makes the first timer at or after key from the head of key group gi.
func (t *timers) next(q *timerQueue, gi int, from []byte) error {
	upper := appendKeyGroup(t.probe[:0], t.b.kgs.Start+gi+1, t.b.plen)
	k, ok, err := t.b.nat.firstInRange(q.col.c, from, upper, t.found[:0])
	t.found = k
	if err != nil {
		return errorf("%v timers: %w", q.domain, err)
	}
	if ok {
		q.setHead(gi, k[t.b.plen:])
	} else {
		q.clearHead(gi)
	}
	return nil
}

func (t *timers) register(q *timerQueue, ts int64, key []byte, keyGroup int, ns []byte) error {
	if err := t.check(keyGroup); err != nil {
		return err
	}
	gi := keyGroup - t.b.kgs.Start
	k, id := t.timerKey(ts, key, keyGroup, ns)
	if dup, err := t.exists(q, gi, k, id); err != nil || dup {
		return err
	}
	if err := t.b.nat.put(q.col.c, k, nil); err != nil {
		return errorf("register %v timer: %w", q.domain, err)
	}
	t.b.trackPut(q.col, k, nil)
	q.count++
	if !q.hasHead(gi) || bytes.Compare(id, q.heads[gi]) < 0 {
		q.setHead(gi, id)
	}
	return nil
}

func (t *timers) delete(q *timerQueue, ts int64, key []byte, keyGroup int, ns []byte) error {
	if err := t.check(keyGroup); err != nil {
		return err
	}
	gi := keyGroup - t.b.kgs.Start
	k, id := t.timerKey(ts, key, keyGroup, ns)
	if ok, err := t.exists(q, gi, k, id); err != nil || !ok {
		return err
	}
	if err := t.b.nat.delete(q.col.c, k); err != nil {
		return errorf("delete %v timer: %w", q.domain, err)
	}
	t.b.trackDelete(q.col, k)
	q.count--
	if bytes.Equal(id, q.heads[gi]) {
		return t.next(q, gi, k)
	}
	return nil
}

func (t *timers) RegisterEventTimer(ts int64, key []byte, keyGroup int, ns []byte) error {
	return t.register(&t.q[0], ts, key, keyGroup, ns)
}

func (t *timers) RegisterProcessingTimer(ts int64, key []byte, keyGroup int, ns []byte) error {
	return t.register(&t.q[1], ts, key, keyGroup, ns)
}

func (t *timers) DeleteEventTimer(ts int64, key []byte, keyGroup int, ns []byte) error {
	return t.delete(&t.q[0], ts, key, keyGroup, ns)
}

func (t *timers) DeleteProcessingTimer(ts int64, key []byte, keyGroup int, ns []byte) error {
	return t.delete(&t.q[1], ts, key, keyGroup, ns)
}

func (t *timers) CurrentWatermark() int64 { return t.watermark }

func (t *timers) AdvanceWatermark(wm int64, fire func(state.Timer) error) error {
	if wm > t.watermark {
		t.watermark = wm
	}
	return t.fire(&t.q[0], wm, fire)
}

func (t *timers) NextProcessingTimer() (int64, bool) {
	q := &t.q[1]
	if t.b.closed || len(q.heap) == 0 {
		return 0, false
	}
	ts, _, _, _ := parseTimerID(q.heads[q.heap[0]])
	return ts, true
}

func (t *timers) FireProcessingTimers(now int64, fire func(state.Timer) error) error {
	return t.fire(&t.q[1], now, fire)
}

// fire fires the timers of q due at limit, in order, including those the callbacks
// register.
func (t *timers) fire(q *timerQueue, limit int64, fire func(state.Timer) error) error {
	if t.b.closed {
		return state.ErrClosed
	}
	if t.firing {
		return state.ErrReentrant
	}
	t.firing = true
	defer func() { t.firing = false }()
	plen := t.b.plen
	for len(q.heap) > 0 {
		gi := int(q.heap[0])
		ts, _, _, ok := parseTimerID(q.heads[gi])
		if !ok {
			return errorf("%v timers: malformed timer %x", q.domain, q.heads[gi])
		}
		if ts > limit {
			return nil
		}
		kg := t.b.kgs.Start + gi
		// The timer's ID outlives the head (the callback's Key and Namespace alias it).
		t.fireBuf = append(t.fireBuf[:0], q.heads[gi]...)
		t.kbuf = append(appendKeyGroup(t.kbuf[:0], kg, plen), t.fireBuf...)
		if err := t.b.nat.delete(q.col.c, t.kbuf); err != nil {
			return errorf("delete %v timer: %w", q.domain, err)
		}
		t.b.trackDelete(q.col, t.kbuf)
		q.count--
		if err := t.next(q, gi, t.kbuf); err != nil {
			return err
		}
		_, key, ns, _ := parseTimerID(t.fireBuf)
		t.b.SetCurrentKey(key, kg)
		if err := fire(state.Timer{Timestamp: ts, Key: key, KeyGroup: kg, Namespace: ns, Domain: q.domain}); err != nil {
			return fmt.Errorf("%v timer at %d: %w", q.domain, ts, err)
		}
	}
	return nil
}

// count is the number of timers.
func (t *timers) count() int { return t.q[0].count + t.q[1].count }
