package api

// KeyedContext is the keyed-operator context: the runtime context, the current key
// and the subtask's keyed state. State is scoped to the current key.
//
// This heap store keeps state for the life of the subtask; the state-backend interface
// (heap, RocksDB) and its snapshots replace it behind the same API.
type KeyedContext struct {
	*RuntimeContext
	keyBytes []byte
	keyGroup int
	tables   map[string]map[string][]byte
}

// KeyBytes is the serialized current key (valid during Process only).
func (kc *KeyedContext) KeyBytes() []byte { return kc.keyBytes }

// KeyGroup is the current key's key group.
func (kc *KeyedContext) KeyGroup() int { return kc.keyGroup }

func (kc *KeyedContext) table(name string) map[string][]byte {
	t := kc.tables[name]
	if t == nil {
		t = map[string][]byte{}
		kc.tables[name] = t
	}
	return t
}

// ValueState is one value per key.
type ValueState[T any] struct {
	kc    *KeyedContext
	table map[string][]byte
	codec Codec[T]
	buf   []byte
}

// NewValueState declares (or re-opens) the value state name. Call it from Open.
func NewValueState[T any](kc *KeyedContext, name string, codec Codec[T]) *ValueState[T] {
	return &ValueState[T]{kc: kc, table: kc.table(name), codec: codec}
}

// Value returns the current key's value and whether it was set.
func (s *ValueState[T]) Value() (T, bool, error) {
	b, ok := s.table[string(s.kc.keyBytes)]
	if !ok {
		var zero T
		return zero, false, nil
	}
	v, err := s.codec.Decode(b)
	return v, true, err
}

// Update sets the current key's value.
func (s *ValueState[T]) Update(v T) error {
	s.buf = s.codec.Append(s.buf[:0], v)
	if old, ok := s.table[string(s.kc.keyBytes)]; ok && cap(old) >= len(s.buf) {
		s.table[string(s.kc.keyBytes)] = append(old[:0], s.buf...)
		return nil
	}
	s.table[string(s.kc.keyBytes)] = append([]byte(nil), s.buf...)
	return nil
}

// Clear removes the current key's value.
func (s *ValueState[T]) Clear() { delete(s.table, string(s.kc.keyBytes)) }
