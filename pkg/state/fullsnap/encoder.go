package fullsnap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
)

// Encoder writes a full snapshot file. Call BeginKeyGroup before the records of each
// key group, in increasing order (key groups without records may be skipped: the
// encoder writes their empty sections), then Finish. The first error sticks.
type Encoder struct {
	w       io.Writer
	out     []byte // buffered output, flushed at flushSize; grows only as needed
	off     int64
	crc     uint32
	kgs     keygroup.Range
	kinds   []state.Kind
	cur     int // key group of the open section, or kgs.Start-1 before the first
	offsets []int64
	buf     []byte
	err     error
	done    bool
}

// NewEncoder writes the header to w and returns the encoder. states is the state table
// (records use indexes into it).
func NewEncoder(w io.Writer, maxParallelism int, kgs keygroup.Range, states []state.StateDesc) (*Encoder, error) {
	if maxParallelism < 1 || maxParallelism > keygroup.UpperBound {
		return nil, fmt.Errorf("fullsnap: max parallelism %d out of range", maxParallelism)
	}
	if kgs.Len() == 0 || kgs.Start < 0 || kgs.End >= maxParallelism {
		return nil, fmt.Errorf("fullsnap: key-group range %v invalid for max parallelism %d", kgs, maxParallelism)
	}
	e := &Encoder{
		w:       w,
		kgs:     kgs,
		cur:     kgs.Start - 1,
		offsets: make([]int64, 0, kgs.Len()),
	}
	b := append([]byte(nil), headMagic...)
	b = binary.BigEndian.AppendUint16(b, Version)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(maxParallelism))
	b = binary.BigEndian.AppendUint32(b, uint32(kgs.Start))
	b = binary.BigEndian.AppendUint32(b, uint32(kgs.End))
	b = binary.AppendUvarint(b, uint64(len(states)))
	for _, s := range states {
		if err := s.Validate(); err != nil {
			return nil, fmt.Errorf("fullsnap: %w", err)
		}
		e.kinds = append(e.kinds, s.Kind)
		b = append(b, byte(s.Kind))
		b = appendBytes(b, []byte(s.Name))
	}
	e.write(b)
	e.endChunk()
	return e, e.err
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// flushSize is the size of the writes to the underlying writer. The buffer starts
// small, so that small snapshots (most operators) do not allocate it whole.
const flushSize = 128 << 10

func (e *Encoder) write(b []byte) {
	if e.err != nil {
		return
	}
	e.crc = crc32.Update(e.crc, castagnoli, b)
	e.off += int64(len(b))
	if len(b) >= flushSize {
		e.flush()
		if e.err == nil {
			_, e.err = e.w.Write(b)
		}
		return
	}
	e.out = append(e.out, b...)
	if len(e.out) >= flushSize {
		e.flush()
	}
}

func (e *Encoder) flush() {
	if e.err == nil && len(e.out) > 0 {
		_, e.err = e.w.Write(e.out)
	}
	e.out = e.out[:0]
}

// endChunk writes the CRC of the bytes since the last endChunk and resets it.
func (e *Encoder) endChunk() {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], e.crc)
	e.write(b[:])
	e.crc = 0
}

func (e *Encoder) closeSection() {
	e.write([]byte{recEnd})
	e.endChunk()
}

func (e *Encoder) openSection(kg int) {
	e.offsets = append(e.offsets, e.off)
	e.cur = kg
	e.buf = binary.AppendUvarint(e.buf[:0], uint64(kg))
	e.write(e.buf)
}

// BeginKeyGroup starts the section of kg, which must follow the previous one and be in
// the range. Skipped key groups get empty sections.
func (e *Encoder) BeginKeyGroup(kg int) error {
	if e.err != nil {
		return e.err
	}
	if e.done || kg <= e.cur || kg > e.kgs.End {
		e.err = fmt.Errorf("fullsnap: key group %d out of order (current %d, range %v)", kg, e.cur, e.kgs)
		return e.err
	}
	if e.cur >= e.kgs.Start {
		e.closeSection()
	}
	for g := e.cur + 1; g < kg; g++ {
		e.openSection(g)
		e.closeSection()
	}
	e.openSection(kg)
	return e.err
}

func (e *Encoder) check(st int, rec byte) error {
	if e.err != nil {
		return e.err
	}
	if e.cur < e.kgs.Start || e.done {
		e.err = errors.New("fullsnap: record outside a key-group section")
		return e.err
	}
	if rec == recEventTime || rec == recProcTime {
		return nil
	}
	if st < 0 || st >= len(e.kinds) {
		e.err = fmt.Errorf("fullsnap: state index %d out of range [0, %d)", st, len(e.kinds))
		return e.err
	}
	k := e.kinds[st]
	ok := rec == recValue && k.IsValue() || rec == recList && k == state.KindList || rec == recMap && k == state.KindMap
	if !ok {
		e.err = fmt.Errorf("fullsnap: record type %d for a %v state", rec, k)
	}
	return e.err
}

func (e *Encoder) entry(rec byte, st int, key, ns, v []byte) error {
	if err := e.check(st, rec); err != nil {
		return err
	}
	e.buf = append(e.buf[:0], rec)
	e.buf = binary.AppendUvarint(e.buf, uint64(st))
	e.buf = appendBytes(e.buf, key)
	e.buf = appendBytes(e.buf, ns)
	e.writeLast(v)
	return e.err
}

// writeLast appends v as the record's last field and writes the record; large values
// are written directly instead of being copied into the record buffer.
func (e *Encoder) writeLast(v []byte) {
	if len(v) > 1<<16 {
		e.buf = binary.AppendUvarint(e.buf, uint64(len(v)))
		e.write(e.buf)
		e.write(v)
		return
	}
	e.buf = appendBytes(e.buf, v)
	e.write(e.buf)
}

// Value writes the value of state st (a Value or Reducing state) for key and ns.
func (e *Encoder) Value(st int, key, ns, v []byte) error {
	return e.entry(recValue, st, key, ns, v)
}

// List writes the list of state st (encoded with state.AppendListElem).
func (e *Encoder) List(st int, key, ns, list []byte) error {
	return e.entry(recList, st, key, ns, list)
}

// MapEntry writes one user key and value of map state st.
func (e *Encoder) MapEntry(st int, key, ns, userKey, userValue []byte) error {
	if err := e.check(st, recMap); err != nil {
		return err
	}
	e.buf = append(e.buf[:0], recMap)
	e.buf = binary.AppendUvarint(e.buf, uint64(st))
	e.buf = appendBytes(e.buf, key)
	e.buf = appendBytes(e.buf, ns)
	e.buf = appendBytes(e.buf, userKey)
	e.writeLast(userValue)
	return e.err
}

// Timer writes a timer of the open key group.
func (e *Encoder) Timer(d state.TimeDomain, ts int64, key, ns []byte) error {
	var rec byte
	switch d {
	case state.EventTime:
		rec = recEventTime
	case state.ProcessingTime:
		rec = recProcTime
	default:
		if e.err == nil {
			e.err = fmt.Errorf("fullsnap: invalid time domain %v", d)
		}
		return e.err
	}
	if err := e.check(0, rec); err != nil {
		return err
	}
	e.buf = append(e.buf[:0], rec)
	e.buf = binary.BigEndian.AppendUint64(e.buf, uint64(ts))
	e.buf = appendBytes(e.buf, key)
	e.buf = appendBytes(e.buf, ns)
	e.write(e.buf)
	return e.err
}

// Size is the number of bytes written so far.
func (e *Encoder) Size() int64 { return e.off }

// Finish closes the last section, writes empty sections for the remaining key groups,
// the footer and the trailer, and flushes. It returns the section offsets (one per key
// group of the range) for KeyedStateHandle.key_group_offsets.
func (e *Encoder) Finish() ([]int64, error) {
	if e.err != nil {
		return nil, e.err
	}
	if e.done {
		return nil, errors.New("fullsnap: Finish called twice")
	}
	if e.cur >= e.kgs.Start {
		e.closeSection()
	}
	for g := e.cur + 1; g <= e.kgs.End; g++ {
		e.openSection(g)
		e.closeSection()
	}
	e.done = true
	footerStart := e.off
	b := binary.BigEndian.AppendUint32(e.buf[:0], uint32(len(e.offsets)))
	for _, o := range e.offsets {
		b = binary.BigEndian.AppendUint64(b, uint64(o))
	}
	b = binary.BigEndian.AppendUint64(b, uint64(footerStart))
	e.write(b)
	e.endChunk()
	e.write([]byte(tailMagic))
	e.flush()
	if e.err != nil {
		return nil, e.err
	}
	return e.offsets, nil
}
