package api

import (
	"fmt"

	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// KeyedContext is the keyed operator's context: the runtime context, the current key and
// the subtask's keyed state, kept by the job's state backend (state.backend.type) and
// included in checkpoints. Every state access is for the current key.
type KeyedContext struct {
	*RuntimeContext
	backend  state.KeyedBackend
	keyBytes []byte
	keyGroup int
	// errs collects declaration errors, reported by Open.
	errs []error
}

// KeyBytes is the serialized current key (valid during Process only).
func (kc *KeyedContext) KeyBytes() []byte { return kc.keyBytes }

// KeyGroup is the current key's key group.
func (kc *KeyedContext) KeyGroup() int { return kc.keyGroup }

// setKey makes key (serialized) the current key.
func (kc *KeyedContext) setKey(key []byte, kg int) {
	kc.keyBytes, kc.keyGroup = key, kg
	kc.backend.SetCurrentKey(key, kg)
}

func (kc *KeyedContext) register(name string, kind state.Kind) state.StateID {
	id, err := kc.backend.Register(state.StateDesc{Name: name, Kind: kind})
	if err != nil {
		kc.errs = append(kc.errs, fmt.Errorf("state %q: %w", name, err))
	}
	return id
}

// Timers registers and deletes timers for the current key.
func (kc *KeyedContext) Timers() state.TimerService { return kc.backend.Timers() }

// RegisterProcessingTimer asks for OnTimer at processing time ts (Unix ms) for the
// current key.
func (kc *KeyedContext) RegisterProcessingTimer(ts int64) error {
	return kc.backend.Timers().RegisterProcessingTimer(ts, kc.keyBytes, kc.keyGroup, nil)
}

// RegisterEventTimer asks for OnTimer once the watermark passes ts for the current key.
func (kc *KeyedContext) RegisterEventTimer(ts int64) error {
	return kc.backend.Timers().RegisterEventTimer(ts, kc.keyBytes, kc.keyGroup, nil)
}

// ValueState is one value per key.
type ValueState[T any] struct {
	kc    *KeyedContext
	id    state.StateID
	codec Codec[T]
	buf   []byte
}

// NewValueState declares (or re-opens, after a restore) the value state name. Call it
// from Open.
func NewValueState[T any](kc *KeyedContext, name string, codec Codec[T]) *ValueState[T] {
	return &ValueState[T]{kc: kc, id: kc.register(name, state.KindValue), codec: codec}
}

// Value returns the current key's value and whether it was set.
func (s *ValueState[T]) Value() (T, bool, error) {
	var zero T
	b, ok, err := s.kc.backend.Get(s.id, nil)
	if err != nil || !ok {
		return zero, false, err
	}
	v, err := s.codec.Decode(b)
	return v, true, err
}

// Update sets the current key's value.
func (s *ValueState[T]) Update(v T) error {
	s.buf = s.codec.Append(s.buf[:0], v)
	return s.kc.backend.Put(s.id, nil, s.buf)
}

// Clear removes the current key's value.
func (s *ValueState[T]) Clear() error { return s.kc.backend.Delete(s.id, nil) }

// ReducingState keeps one value per key, combining every added value with reduce.
type ReducingState[T any] struct {
	v      *ValueState[T]
	reduce func(a, b T) T
}

// NewReducingState declares a reducing state.
func NewReducingState[T any](kc *KeyedContext, name string, codec Codec[T], reduce func(a, b T) T) *ReducingState[T] {
	return &ReducingState[T]{v: &ValueState[T]{kc: kc, id: kc.register(name, state.KindReducing), codec: codec}, reduce: reduce}
}

// Add combines v into the current key's value.
func (s *ReducingState[T]) Add(v T) error {
	old, ok, err := s.v.Value()
	if err != nil {
		return err
	}
	if ok {
		v = s.reduce(old, v)
	}
	return s.v.Update(v)
}

// Get returns the current key's reduced value.
func (s *ReducingState[T]) Get() (T, bool, error) { return s.v.Value() }

// Clear removes the current key's value.
func (s *ReducingState[T]) Clear() error { return s.v.Clear() }

// ListState is a list of values per key.
type ListState[T any] struct {
	kc    *KeyedContext
	id    state.StateID
	codec Codec[T]
	buf   []byte
}

// NewListState declares a keyed list state.
func NewListState[T any](kc *KeyedContext, name string, codec Codec[T]) *ListState[T] {
	return &ListState[T]{kc: kc, id: kc.register(name, state.KindList), codec: codec}
}

// Add appends v to the current key's list.
func (s *ListState[T]) Add(v T) error {
	s.buf = s.codec.Append(s.buf[:0], v)
	return s.kc.backend.ListAppend(s.id, nil, s.buf)
}

// Get returns the current key's list.
func (s *ListState[T]) Get() ([]T, error) {
	var out []T
	err := s.kc.backend.ListGet(s.id, nil, func(b []byte) error {
		v, err := s.codec.Decode(b)
		out = append(out, v)
		return err
	})
	return out, err
}

// Update replaces the current key's list.
func (s *ListState[T]) Update(vs []T) error {
	enc := make([][]byte, len(vs))
	for i, v := range vs {
		enc[i] = s.codec.Append(nil, v)
	}
	return s.kc.backend.ListUpdate(s.id, nil, enc)
}

// MapState is a map per key.
type MapState[K, V any] struct {
	kc     *KeyedContext
	id     state.StateID
	keys   Codec[K]
	values Codec[V]
	kbuf   []byte
	vbuf   []byte
}

// NewMapState declares a keyed map state.
func NewMapState[K, V any](kc *KeyedContext, name string, keys Codec[K], values Codec[V]) *MapState[K, V] {
	return &MapState[K, V]{kc: kc, id: kc.register(name, state.KindMap), keys: keys, values: values}
}

// Get returns the current key's value for k.
func (s *MapState[K, V]) Get(k K) (V, bool, error) {
	var zero V
	s.kbuf = s.keys.Append(s.kbuf[:0], k)
	b, ok, err := s.kc.backend.MapGet(s.id, nil, s.kbuf)
	if err != nil || !ok {
		return zero, false, err
	}
	v, err := s.values.Decode(b)
	return v, true, err
}

// Put sets the current key's value for k.
func (s *MapState[K, V]) Put(k K, v V) error {
	s.kbuf = s.keys.Append(s.kbuf[:0], k)
	s.vbuf = s.values.Append(s.vbuf[:0], v)
	return s.kc.backend.MapPut(s.id, nil, s.kbuf, s.vbuf)
}

// Delete removes k from the current key's map.
func (s *MapState[K, V]) Delete(k K) error {
	s.kbuf = s.keys.Append(s.kbuf[:0], k)
	return s.kc.backend.MapDelete(s.id, nil, s.kbuf)
}

// Range calls fn for every entry of the current key's map.
func (s *MapState[K, V]) Range(fn func(K, V) error) error {
	return s.kc.backend.MapIterate(s.id, nil, func(kb, vb []byte) error {
		k, err := s.keys.Decode(kb)
		if err != nil {
			return err
		}
		v, err := s.values.Decode(vb)
		if err != nil {
			return err
		}
		return fn(k, v)
	})
}

// OperatorListState is non-keyed state of a subtask (e.g. a source's positions or a
// sink's open transactions): a list whose entries are redistributed over the subtasks
// when the parallelism changes: split evenly, or given to all (union).
type OperatorListState[T any] struct {
	l     *state.ListState
	codec Codec[T]
}

// Redistribution modes of operator list state.
const (
	SplitRedistribution = sluicev1.RedistributionMode_REDISTRIBUTION_MODE_SPLIT
	UnionRedistribution = sluicev1.RedistributionMode_REDISTRIBUTION_MODE_UNION
)

// NewOperatorListState declares (or re-opens, with the restored entries) an operator
// list state. Call it from Open.
func NewOperatorListState[T any](rc *RuntimeContext, name string, codec Codec[T], mode sluicev1.RedistributionMode) (*OperatorListState[T], error) {
	if rc.operatorState == nil {
		return nil, fmt.Errorf("operator state %q: not available in this context", name)
	}
	l, err := rc.operatorState.List(name, mode)
	if err != nil {
		return nil, err
	}
	return &OperatorListState[T]{l: l, codec: codec}, nil
}

// Get returns the entries.
func (s *OperatorListState[T]) Get() ([]T, error) {
	var out []T
	for _, b := range s.l.Get() {
		v, err := s.codec.Decode(b)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Update replaces the entries.
func (s *OperatorListState[T]) Update(vs []T) {
	enc := make([][]byte, len(vs))
	for i, v := range vs {
		enc[i] = s.codec.Append(nil, v)
	}
	s.l.Update(enc)
}

// Restored reports whether the subtask was restored with entries in this state.
func (s *OperatorListState[T]) Restored() bool { return len(s.l.Get()) > 0 }

// Checkpointed is implemented by functions, sources and sinks that keep state outside
// the state API's handles: SnapshotState runs at every checkpoint barrier, on the task
// goroutine, before the state is snapshot; it writes what must survive into operator or
// keyed state.
type Checkpointed interface {
	SnapshotState(checkpointID int64) error
}

// SavepointAware is implemented by Checkpointed functions that snapshot differently for
// a savepoint: the chain calls SnapshotSavepointState instead of SnapshotState at a
// savepoint's barrier. A two-phase-commit sink keeps what it pre-commits for a
// savepoint apart, since a savepoint is not notified: should the job fail over to an
// earlier checkpoint before a later one commits it, the sink's cleanup of that
// attempt's leftovers must not take the savepoint's data with it.
type SavepointAware interface {
	SnapshotSavepointState(savepointID int64) error
}

// CheckpointListener is implemented by functions that act when a checkpoint completed,
// e.g. sinks committing transactions. Notifications may be lost: a notification for n
// covers every checkpoint up to n. A savepoint is not notified (what a function
// prepared for it is covered by the next checkpoint's notification), except the one
// that stops the job, after which the function's task ends.
type CheckpointListener interface {
	NotifyCheckpointComplete(checkpointID int64) error
}
