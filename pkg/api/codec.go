package api

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
)

// Codec serializes values of T for the wire (and, later, for state). Append must append
// a self-contained encoding of v to dst; Decode must accept exactly what Append wrote.
// Decode may not retain src: it aliases a network buffer that is reused.
type Codec[T any] interface {
	Append(dst []byte, v T) []byte
	Decode(src []byte) (T, error)
}

// StringCodec encodes strings as their bytes.
type StringCodec struct{}

func (StringCodec) Append(dst []byte, v string) []byte { return append(dst, v...) }
func (StringCodec) Decode(src []byte) (string, error)  { return string(src), nil }
func (BytesCodec) Append(dst []byte, v []byte) []byte  { return append(dst, v...) }
func (BytesCodec) Decode(src []byte) ([]byte, error)   { return append([]byte(nil), src...), nil }
func (Int64Codec) Append(dst []byte, v int64) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(v))
}
func (IntCodec) Append(dst []byte, v int) []byte {
	return binary.BigEndian.AppendUint64(dst, uint64(v))
}
func (Float64Codec) Append(dst []byte, v float64) []byte {
	return binary.BigEndian.AppendUint64(dst, math.Float64bits(v))
}

// BytesCodec encodes byte slices as themselves; Decode copies.
type BytesCodec struct{}

// Int64Codec encodes int64 as 8 big-endian bytes.
type Int64Codec struct{}

// IntCodec encodes int as 8 big-endian bytes.
type IntCodec struct{}

// Float64Codec encodes float64 as its 8 big-endian IEEE bits.
type Float64Codec struct{}

var errCodecLen = errors.New("codec: wrong encoded length")

func (Int64Codec) Decode(src []byte) (int64, error) {
	if len(src) != 8 {
		return 0, errCodecLen
	}
	return int64(binary.BigEndian.Uint64(src)), nil
}

func (IntCodec) Decode(src []byte) (int, error) {
	if len(src) != 8 {
		return 0, errCodecLen
	}
	return int(binary.BigEndian.Uint64(src)), nil
}

func (Float64Codec) Decode(src []byte) (float64, error) {
	if len(src) != 8 {
		return 0, errCodecLen
	}
	return math.Float64frombits(binary.BigEndian.Uint64(src)), nil
}

// JSONCodec is the reflective fallback for types without a fast codec. It is several
// times slower than a hand-written codec; CodecFor warns when it picks it.
type JSONCodec[T any] struct{}

func (JSONCodec[T]) Append(dst []byte, v T) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Values that json cannot encode (channels, funcs, cycles) are a programming
		// error in the job; fail loudly at the first record.
		panic(fmt.Sprintf("codec: cannot encode %T as JSON: %v", v, err))
	}
	return append(dst, b...)
}

func (JSONCodec[T]) Decode(src []byte) (T, error) {
	var v T
	err := json.Unmarshal(src, &v)
	return v, err
}

// CodecFor picks a codec for T: a fast built-in one for strings, byte slices and
// numbers, else the reflective JSON codec (reported by slow=true so the caller can warn).
func CodecFor[T any]() (c Codec[T], slow bool) {
	var zero T
	var x any
	switch any(zero).(type) {
	case string:
		x = StringCodec{}
	case []byte:
		x = BytesCodec{}
	case int64:
		x = Int64Codec{}
	case int:
		x = IntCodec{}
	case float64:
		x = Float64Codec{}
	}
	if x != nil {
		return x.(Codec[T]), false
	}
	return JSONCodec[T]{}, true
}

func typeName[T any]() string {
	return reflect.TypeFor[T]().String()
}
