// Package heap is the heap (in-memory) keyed state backend: Go maps per state and key
// group, full snapshots in the pkg/state/fullsnap format, and copy-on-write so that the
// synchronous phase of a snapshot is short.
//
// # Layout
//
// Each registered state has one table per key group of the backend's range; a table is
// a Go map from the composite key uvarint(len(key)) ‖ key ‖ namespace to an *entry
// holding the value (Value and Reducing states), the encoded list (List states, in the
// state.AppendListElem encoding, appended in place) or a map of user keys (Map states).
// Timers are kept the same way (a set per key group and time domain) plus one min-heap
// per time domain for firing order.
//
// # Copy-on-write snapshots
//
// The backend has an epoch counter. Every table and every entry records the epoch in
// which it was created. Snapshot (the synchronous phase) captures the map of every
// non-empty table (and timer set) — a pointer per (state, key group), not the entries —
// bumps the epoch and registers the captured epoch E as live. While a snapshot with
// epoch >= X is live, a table or entry created in epoch X is shared with it and is never
// modified in place: the first write to such a table clones its map (maps.Clone), and
// the first update of such an entry replaces it with a new one. Anything created after
// the newest live snapshot is modified in place (so a Put of an existing key does not
// allocate). When the asynchronous phase ends it releases its epoch, and tables are no
// longer copied on write.
//
// Costs: the synchronous phase is O(states × key groups) pointer copies (microseconds
// for 128 key groups, a few milliseconds at 32768), independent of the number of keys.
// While a snapshot is being written, the first write to each (state, key group) table
// clones that table's map (O(entries of the table); about 1/128 of the state per table
// at the default max parallelism) and the first update of each entry allocates a new
// entry. In the worst case (every table written during the asynchronous phase) memory
// peaks at about twice the map structure plus the rewritten values; untouched values
// are shared.
//
// Measured (BenchmarkSnapshot, BenchmarkPutDuringSnapshot; 1M keys, 100-byte values,
// 128 key groups, 2 shared cores): synchronous phase 15-40 µs, asynchronous phase
// ~0.9 s for a 117 MB file; a Put costs ~0.44 µs normally and ~1.1 µs while a snapshot
// of the same keys is being written.
package heap

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/fullsnap"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Name is the backend's name in KeyedStateHandle.backend. It is fullsnap.HandleBackend,
// the name of every handle of a full-snapshot file whichever backend wrote it: a heap
// snapshot is a canonical savepoint as it is (the backend needs no
// state.SavepointSnapshotter), and the backend restores any such handle.
const Name = fullsnap.HandleBackend

// Factory creates heap backends.
type Factory struct{}

var _ state.Factory = Factory{}

// Name returns "heap".
func (Factory) Name() string { return Name }

// NewKeyed returns an empty heap backend.
func (Factory) NewKeyed(opts state.KeyedOptions) (state.KeyedBackend, error) { return New(opts) }

// entry is the state of one (key, namespace) of one state. An entry whose epoch is
// covered by a live snapshot is immutable.
type entry struct {
	epoch uint64
	val   []byte            // Value/Reducing value, or encoded List
	m     map[string][]byte // Map state; the value slices are never modified in place
}

// group is a copy-on-write map: the entries of one state (or the timers of one domain)
// in one key group. owned is the epoch in which m was created.
type group struct {
	owned uint64
	m     map[string]*entry
}

type table struct {
	desc   state.StateDesc
	groups []*group // index: key group - range start; nil until first written
}

// epochs tracks the live snapshots. It is shared between the task goroutine and the
// goroutines running asynchronous phases.
type epochs struct {
	mu   sync.Mutex
	live map[uint64]int
	// required is the highest live snapshot epoch (0: none). Tables and entries with an
	// epoch <= required may be shared with a snapshot. Only the task goroutine raises it
	// (in Snapshot); a release lowers it only after the snapshot has stopped reading.
	required atomic.Uint64
}

func (e *epochs) add(ep uint64) {
	e.mu.Lock()
	e.live[ep]++
	if ep > e.required.Load() {
		e.required.Store(ep)
	}
	e.mu.Unlock()
}

func (e *epochs) release(ep uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.live[ep]--; e.live[ep] <= 0 {
		delete(e.live, ep)
	}
	var hi uint64
	for l := range e.live {
		hi = max(hi, l)
	}
	e.required.Store(hi)
}

// Backend is the heap keyed backend. See the package documentation.
type Backend struct {
	opts state.KeyedOptions
	kgs  keygroup.Range
	maxP int

	states []*table
	byName map[string]state.StateID

	// The current key: cur is the composite-key prefix uvarint(len(key)) ‖ key.
	cur    []byte
	keyOff int
	curKG  int
	gi     int   // curKG - kgs.Start
	keyErr error // non-nil when the current key cannot be used
	hasKey bool

	scratch []byte // composite keys with a namespace
	listBuf []byte

	epoch uint64 // current epoch, >= 1
	ep    *epochs

	timers timers
	closed bool
}

var _ state.KeyedBackend = (*Backend)(nil)

// New returns an empty heap backend.
func New(opts state.KeyedOptions) (*Backend, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	b := &Backend{
		opts:   opts,
		kgs:    opts.KeyGroups,
		maxP:   opts.MaxParallelism,
		byName: map[string]state.StateID{},
		keyErr: state.ErrNoCurrentKey,
		epoch:  1,
		ep:     &epochs{live: map[uint64]int{}},
	}
	b.timers.init(b)
	return b, nil
}

// KeyGroups implements state.KeyedBackend.
func (b *Backend) KeyGroups() keygroup.Range { return b.kgs }

// MaxParallelism implements state.KeyedBackend.
func (b *Backend) MaxParallelism() int { return b.maxP }

// SetCurrentKey implements state.KeyedBackend.
func (b *Backend) SetCurrentKey(key []byte, keyGroup int) {
	b.cur = binary.AppendUvarint(b.cur[:0], uint64(len(key)))
	b.keyOff = len(b.cur)
	b.cur = append(b.cur, key...)
	b.curKG = keyGroup
	b.hasKey = true
	switch {
	case b.closed:
		b.keyErr = state.ErrClosed
	case !b.kgs.Contains(keyGroup):
		b.keyErr = fmt.Errorf("%w: key group %d of the current key is not in %v", state.ErrKeyGroupOutOfRange, keyGroup, b.kgs)
	default:
		b.keyErr = nil
		b.gi = keyGroup - b.kgs.Start
	}
}

// CurrentKey implements state.KeyedBackend.
func (b *Backend) CurrentKey() ([]byte, int, bool) {
	if !b.hasKey {
		return nil, 0, false
	}
	return b.cur[b.keyOff:], b.curKG, true
}

// Register implements state.KeyedBackend.
func (b *Backend) Register(desc state.StateDesc) (state.StateID, error) {
	if b.closed {
		return 0, state.ErrClosed
	}
	if err := desc.Validate(); err != nil {
		return 0, err
	}
	return b.register(desc)
}

func (b *Backend) register(desc state.StateDesc) (state.StateID, error) {
	if id, ok := b.byName[desc.Name]; ok {
		if have := b.states[id].desc.Kind; have != desc.Kind {
			return 0, fmt.Errorf("%w: state %q is %v, not %v", state.ErrWrongKind, desc.Name, have, desc.Kind)
		}
		return id, nil
	}
	id := state.StateID(len(b.states))
	b.states = append(b.states, &table{desc: desc, groups: make([]*group, b.kgs.Len())})
	b.byName[desc.Name] = id
	return id, nil
}

func (b *Backend) badID(id state.StateID) error {
	if b.closed {
		return state.ErrClosed
	}
	return fmt.Errorf("%w: id %d", state.ErrUnknownState, id)
}

func wrongKind(t *table, op string) error {
	return fmt.Errorf("%w: %s on %v state %q", state.ErrWrongKind, op, t.desc.Kind, t.desc.Name)
}

// access resolves the state and the composite key of (current key, ns).
func (b *Backend) access(id state.StateID, ns []byte) (*table, []byte, error) {
	if b.keyErr != nil {
		return nil, nil, b.keyErr
	}
	if uint(id) >= uint(len(b.states)) {
		return nil, nil, b.badID(id)
	}
	if len(ns) == 0 {
		return b.states[id], b.cur, nil
	}
	b.scratch = append(append(b.scratch[:0], b.cur...), ns...)
	return b.states[id], b.scratch, nil
}

// lookup returns the current key's entry (nil if none) and its table.
func (b *Backend) lookup(t *table, ck []byte) (*group, *entry) {
	g := t.groups[b.gi]
	if g == nil {
		return nil, nil
	}
	return g, g.m[string(ck)]
}

// own makes g's map private to the task goroutine, cloning it if a live snapshot may
// hold it.
func (b *Backend) own(g *group, req uint64) {
	if g.owned <= req {
		g.m = maps.Clone(g.m)
		if g.m == nil {
			g.m = map[string]*entry{}
		}
		g.owned = b.epoch
	}
}

// writable returns the group of the current key group, created and owned.
func (b *Backend) writable(groups []*group, gi int, req uint64) *group {
	g := groups[gi]
	if g == nil {
		g = &group{owned: b.epoch, m: map[string]*entry{}}
		groups[gi] = g
		return g
	}
	b.own(g, req)
	return g
}

// Get implements state.KeyedBackend.
func (b *Backend) Get(id state.StateID, ns []byte) ([]byte, bool, error) {
	t, ck, err := b.access(id, ns)
	if err != nil {
		return nil, false, err
	}
	if !t.desc.Kind.IsValue() {
		return nil, false, wrongKind(t, "Get")
	}
	if _, e := b.lookup(t, ck); e != nil {
		return e.val, true, nil
	}
	return nil, false, nil
}

// Put implements state.KeyedBackend.
func (b *Backend) Put(id state.StateID, ns, v []byte) error {
	t, ck, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if !t.desc.Kind.IsValue() {
		return wrongKind(t, "Put")
	}
	req := b.ep.required.Load()
	_, e := b.lookup(t, ck)
	if e != nil && e.epoch > req {
		e.val = append(e.val[:0], v...)
		return nil
	}
	g := b.writable(t.groups, b.gi, req)
	g.m[string(ck)] = &entry{epoch: b.epoch, val: append(make([]byte, 0, len(v)), v...)}
	return nil
}

// Delete implements state.KeyedBackend.
func (b *Backend) Delete(id state.StateID, ns []byte) error {
	t, ck, err := b.access(id, ns)
	if err != nil {
		return err
	}
	g, e := b.lookup(t, ck)
	if e == nil {
		return nil
	}
	b.own(g, b.ep.required.Load())
	delete(g.m, string(ck))
	return nil
}

// ListAppend implements state.KeyedBackend.
func (b *Backend) ListAppend(id state.StateID, ns, v []byte) error {
	t, ck, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if t.desc.Kind != state.KindList {
		return wrongKind(t, "ListAppend")
	}
	req := b.ep.required.Load()
	_, e := b.lookup(t, ck)
	if e != nil && e.epoch > req {
		e.val = state.AppendListElem(e.val, v)
		return nil
	}
	var list []byte
	if e != nil {
		list = make([]byte, 0, len(e.val)+len(v)+binary.MaxVarintLen64)
		list = append(list, e.val...)
	}
	g := b.writable(t.groups, b.gi, req)
	g.m[string(ck)] = &entry{epoch: b.epoch, val: state.AppendListElem(list, v)}
	return nil
}

// ListGet implements state.KeyedBackend.
func (b *Backend) ListGet(id state.StateID, ns []byte, fn func(v []byte) error) error {
	t, ck, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if t.desc.Kind != state.KindList {
		return wrongKind(t, "ListGet")
	}
	_, e := b.lookup(t, ck)
	if e == nil {
		return nil
	}
	// Iterate over the slice header taken now: fn may append to the list.
	return state.ForEachListElem(e.val, fn)
}

// ListUpdate implements state.KeyedBackend.
func (b *Backend) ListUpdate(id state.StateID, ns []byte, vs [][]byte) error {
	t, ck, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if t.desc.Kind != state.KindList {
		return wrongKind(t, "ListUpdate")
	}
	if len(vs) == 0 {
		return b.Delete(id, ns)
	}
	// Encode first: vs may alias the current list.
	b.listBuf = state.EncodeList(b.listBuf[:0], vs)
	req := b.ep.required.Load()
	_, e := b.lookup(t, ck)
	if e != nil && e.epoch > req {
		e.val = append(e.val[:0], b.listBuf...)
		return nil
	}
	g := b.writable(t.groups, b.gi, req)
	g.m[string(ck)] = &entry{epoch: b.epoch, val: append([]byte(nil), b.listBuf...)}
	return nil
}

// MapGet implements state.KeyedBackend.
func (b *Backend) MapGet(id state.StateID, ns, userKey []byte) ([]byte, bool, error) {
	t, ck, err := b.access(id, ns)
	if err != nil {
		return nil, false, err
	}
	if t.desc.Kind != state.KindMap {
		return nil, false, wrongKind(t, "MapGet")
	}
	_, e := b.lookup(t, ck)
	if e == nil {
		return nil, false, nil
	}
	v, ok := e.m[string(userKey)]
	return v, ok, nil
}

// MapPut implements state.KeyedBackend.
func (b *Backend) MapPut(id state.StateID, ns, userKey, v []byte) error {
	t, ck, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if t.desc.Kind != state.KindMap {
		return wrongKind(t, "MapPut")
	}
	// Map values are never modified in place: cloned maps share them with snapshots.
	val := append(make([]byte, 0, len(v)), v...)
	req := b.ep.required.Load()
	_, e := b.lookup(t, ck)
	if e != nil && e.epoch > req {
		e.m[string(userKey)] = val
		return nil
	}
	ne := &entry{epoch: b.epoch}
	if e != nil {
		ne.m = maps.Clone(e.m)
	} else {
		ne.m = make(map[string][]byte, 1)
	}
	ne.m[string(userKey)] = val
	g := b.writable(t.groups, b.gi, req)
	g.m[string(ck)] = ne
	return nil
}

// MapDelete implements state.KeyedBackend.
func (b *Backend) MapDelete(id state.StateID, ns, userKey []byte) error {
	t, ck, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if t.desc.Kind != state.KindMap {
		return wrongKind(t, "MapDelete")
	}
	g, e := b.lookup(t, ck)
	if e == nil {
		return nil
	}
	if _, ok := e.m[string(userKey)]; !ok {
		return nil
	}
	req := b.ep.required.Load()
	if len(e.m) == 1 {
		b.own(g, req)
		delete(g.m, string(ck))
		return nil
	}
	if e.epoch > req {
		delete(e.m, string(userKey))
		return nil
	}
	ne := &entry{epoch: b.epoch, m: maps.Clone(e.m)}
	delete(ne.m, string(userKey))
	b.own(g, req)
	g.m[string(ck)] = ne
	return nil
}

// MapIterate implements state.KeyedBackend.
func (b *Backend) MapIterate(id state.StateID, ns []byte, fn func(userKey, v []byte) error) error {
	t, ck, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if t.desc.Kind != state.KindMap {
		return wrongKind(t, "MapIterate")
	}
	_, e := b.lookup(t, ck)
	if e == nil {
		return nil
	}
	var kb []byte
	for k, v := range e.m {
		kb = append(kb[:0], k...)
		if err := fn(kb, v); err != nil {
			return err
		}
	}
	return nil
}

// splitKey splits a composite key into key and namespace.
func splitKey(ck string) (key, ns string, ok bool) {
	n, k := uvarintString(ck)
	if k <= 0 || n > uint64(len(ck)-k) {
		return "", "", false
	}
	return ck[k : k+int(n)], ck[k+int(n):], true
}

func uvarintString(s string) (uint64, int) {
	var x uint64
	var sh uint
	for i := 0; i < len(s) && i < binary.MaxVarintLen64; i++ {
		c := s[i]
		if c < 0x80 {
			return x | uint64(c)<<sh, i + 1
		}
		x |= uint64(c&0x7f) << sh
		sh += 7
	}
	return 0, 0
}

// Keys implements state.KeyedBackend.
func (b *Backend) Keys(id state.StateID, ns []byte, fn func(key []byte, keyGroup int) error) error {
	if uint(id) >= uint(len(b.states)) {
		return b.badID(id)
	}
	t := b.states[id]
	var kb []byte
	for gi, g := range t.groups {
		if g == nil {
			continue
		}
		for ck := range g.m {
			key, kns, ok := splitKey(ck)
			if !ok || kns != string(ns) {
				continue
			}
			kb = append(kb[:0], key...)
			if err := fn(kb, b.kgs.Start+gi); err != nil {
				return err
			}
		}
	}
	return nil
}

// Timers implements state.KeyedBackend.
func (b *Backend) Timers() state.TimerService { return &b.timers }

// Close implements state.KeyedBackend.
func (b *Backend) Close() error {
	b.closed = true
	b.keyErr = state.ErrClosed
	b.states = nil
	b.byName = map[string]state.StateID{}
	b.timers.init(b)
	return nil
}

// registerRestored finds or creates the state desc for a restore.
func (b *Backend) registerRestored(desc state.StateDesc) (state.StateID, error) {
	if b.closed {
		return 0, state.ErrClosed
	}
	return b.register(desc)
}

// Restore implements state.KeyedBackend.
func (b *Backend) Restore(ctx context.Context, handles []*sluicev1.KeyedStateHandle, r state.StateReader) error {
	if b.closed {
		return state.ErrClosed
	}
	return b.restore(ctx, handles, r)
}
