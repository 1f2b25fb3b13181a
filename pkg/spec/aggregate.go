package spec

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Function is a keyed running aggregate function.
type Function string

// Aggregate functions.
const (
	FuncCount Function = "count"
	FuncSum   Function = "sum"
	FuncMin   Function = "min"
	FuncMax   Function = "max"
)

// Functions lists the aggregate functions in documentation order.
var Functions = []Function{FuncCount, FuncSum, FuncMin, FuncMax}

// Acc is the per-key accumulator of an Aggregator, a small value the runtime keeps
// in keyed state (AppendAcc/DecodeAcc). The zero Acc is the state of a key not seen
// yet.
type Acc struct {
	// Count is the number of records counted (count) or values folded (sum, min, max).
	Count int64
	// I is the aggregate when !IsFloat, F when IsFloat; the other one is zero.
	I       int64
	F       float64
	IsFloat bool
	// Set reports whether the aggregate has a value: after the first counted record
	// (count) or the first non-nil value (sum, min, max).
	Set bool
}

// Value returns the aggregate the accumulator holds: int64 or float64, nil when not
// Set.
func (a Acc) Value() any {
	switch {
	case !a.Set:
		return nil
	case a.IsFloat:
		return a.F
	}
	return a.I
}

// Aggregator computes a keyed running aggregate. It is stateless (the state is the
// Acc of each key) and safe for concurrent use.
type Aggregator struct {
	fn    Function
	field string
	as    string
}

// NewAggregator returns the aggregator for function (count, sum, min or max) over
// field, writing the running aggregate to the output field as (default: the function
// name). field is required for sum, min and max; for count it is optional, and when
// set only records whose field is not nil are counted.
func NewAggregator(function, field, as string) (*Aggregator, error) {
	fn := Function(function)
	switch fn {
	case FuncCount:
	case FuncSum, FuncMin, FuncMax:
		if field == "" {
			return nil, fmt.Errorf("aggregate function %s requires a field", fn)
		}
	default:
		return nil, fmt.Errorf("unknown aggregate function %q", function)
	}
	if as == "" {
		as = function
	}
	return &Aggregator{fn: fn, field: field, as: as}, nil
}

// Function returns the aggregate function.
func (g *Aggregator) Function() Function { return g.fn }

// Field returns the aggregated input field ("" for a count of all records).
func (g *Aggregator) Field() string { return g.field }

// As returns the output field name.
func (g *Aggregator) As() string { return g.as }

// Update folds in into acc, the accumulator of in's key, and returns the new
// accumulator and the output record: a copy of in plus the field As() holding the
// running aggregate (Acc.Value). in is not modified.
//
//   - count: 1, 2, 3, ... as int64.
//   - sum: int64 while every value was an int64 (wrapping on overflow, like a Java
//     long), float64 from the first float64 on.
//   - min, max: the smallest/largest value so far, keeping its type; int64 and
//     float64 compare exactly by value, the first of equal values wins, and NaN
//     orders below every number.
//
// For sum, min and max a nil or missing field leaves acc unchanged (the output then
// carries the current aggregate, nil if there is none yet); any other non-number is
// an error and acc is returned unchanged.
func (g *Aggregator) Update(acc Acc, in Row) (Acc, Row, error) {
	next, err := g.fold(acc, in)
	if err != nil {
		return acc, nil, err
	}
	out := make(Row, len(in)+1)
	for k, v := range in {
		out[k] = v
	}
	out[g.as] = next.Value()
	return next, out, nil
}

func (g *Aggregator) fold(acc Acc, in Row) (Acc, error) {
	if g.fn == FuncCount {
		if g.field == "" || in[g.field] != nil {
			acc.Count++
			acc.I = acc.Count
			acc.Set = true
		}
		return acc, nil
	}
	v := in[g.field]
	if v == nil {
		return acc, nil
	}
	i, f, isFloat, ok := number(v)
	if !ok {
		return acc, fmt.Errorf("aggregate %s: field %q is %s, not a number", g.fn, g.field, describe(v))
	}
	acc.Count++
	if !acc.Set {
		acc.Set, acc.IsFloat, acc.I, acc.F = true, isFloat, i, f
		return acc, nil
	}
	switch g.fn {
	case FuncSum:
		switch {
		case !acc.IsFloat && !isFloat:
			acc.I += i
		case !acc.IsFloat:
			acc.IsFloat, acc.F, acc.I = true, float64(acc.I)+f, 0
		case isFloat:
			acc.F += f
		default:
			acc.F += float64(i)
		}
	case FuncMin, FuncMax:
		c := compareNum(i, f, isFloat, acc.I, acc.F, acc.IsFloat)
		if (g.fn == FuncMin && c < 0) || (g.fn == FuncMax && c > 0) {
			acc.IsFloat, acc.I, acc.F = isFloat, i, f
		}
	}
	return acc, nil
}

// number extracts a numeric value: (i, 0, false) for integers, (0, f, true) for
// floats.
func number(v any) (i int64, f float64, isFloat, ok bool) {
	switch x := v.(type) {
	case int64:
		return x, 0, false, true
	case float64:
		return 0, x, true, true
	case int:
		return int64(x), 0, false, true
	}
	n, _, err := normalize(v, maxDepth) // scalars only
	if err != nil {
		return 0, 0, false, false
	}
	switch x := n.(type) {
	case int64:
		return x, 0, false, true
	case float64:
		return 0, x, true, true
	}
	return 0, 0, false, false
}

// compareNum compares two numbers exactly, in cmp.Compare's order for floats.
func compareNum(ai int64, af float64, aFloat bool, bi int64, bf float64, bFloat bool) int {
	switch {
	case !aFloat && !bFloat:
		return cmp.Compare(ai, bi)
	case aFloat && bFloat:
		return cmp.Compare(af, bf)
	case aFloat:
		return -compareIntFloat(bi, af)
	}
	return compareIntFloat(ai, bf)
}

// compareIntFloat compares i with f exactly; NaN is below every number.
func compareIntFloat(i int64, f float64) int {
	switch {
	case math.IsNaN(f):
		return 1
	case f >= 0x1p63:
		return -1
	case f < -0x1p63:
		return 1
	}
	t := math.Trunc(f) // exactly representable as int64 now
	if c := cmp.Compare(i, int64(t)); c != 0 {
		return c
	}
	switch {
	case f > t:
		return -1
	case f < t:
		return 1
	}
	return 0
}

const (
	accSet   = 1 << 0
	accFloat = 1 << 1
)

// AppendAcc appends the encoding of a to dst: a flags byte, Count as a zigzag varint,
// then, when Set, the value (a zigzag varint, or 8 bytes of float64 bits).
func AppendAcc(dst []byte, a Acc) []byte {
	var flags byte
	if a.Set {
		flags |= accSet
	}
	if a.Set && a.IsFloat {
		flags |= accFloat
	}
	dst = append(dst, flags)
	dst = binary.AppendVarint(dst, a.Count)
	if !a.Set {
		return dst
	}
	if a.IsFloat {
		return binary.LittleEndian.AppendUint64(dst, math.Float64bits(a.F))
	}
	return binary.AppendVarint(dst, a.I)
}

var errAcc = errors.New("spec: DecodeAcc: malformed accumulator")

// DecodeAcc decodes an accumulator encoded by AppendAcc; src must hold exactly one.
func DecodeAcc(src []byte) (Acc, error) {
	if len(src) == 0 || src[0]&^(accSet|accFloat) != 0 {
		return Acc{}, errAcc
	}
	a := Acc{Set: src[0]&accSet != 0, IsFloat: src[0]&accFloat != 0}
	if a.IsFloat && !a.Set {
		return Acc{}, errAcc
	}
	src = src[1:]
	c, n := binary.Varint(src)
	if n <= 0 {
		return Acc{}, errAcc
	}
	a.Count, src = c, src[n:]
	switch {
	case !a.Set:
	case a.IsFloat:
		if len(src) < 8 {
			return Acc{}, errAcc
		}
		a.F, src = math.Float64frombits(binary.LittleEndian.Uint64(src)), src[8:]
	default:
		v, n := binary.Varint(src)
		if n <= 0 {
			return Acc{}, errAcc
		}
		a.I, src = v, src[n:]
	}
	if len(src) != 0 {
		return Acc{}, errAcc
	}
	return a, nil
}
