package spec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Row is one record: field name to value. Values are restricted to nil, bool, int64,
// float64, string, []any and map[string]any (whose elements are again such values).
// Rows are treated as immutable once emitted: operators build new rows instead of
// modifying their input, and a row may share nested values with the row it came from.
type Row = map[string]any

// Wire tags of the row codec.
const (
	tagNil byte = iota
	tagFalse
	tagTrue
	tagInt   // zigzag uvarint
	tagFloat // 8 bytes, little-endian IEEE 754 bits
	tagString
	tagList // uvarint count, values
	tagMap  // uvarint count, (key, value) with keys strictly increasing
)

// maxDepth bounds the nesting of lists and maps the decoder accepts.
const maxDepth = 256

// AppendRow appends the binary encoding of r to dst and returns the extended slice.
// The encoding is deterministic: map fields, at every level, are written in
// increasing byte order of their names, so equal rows encode to equal bytes.
// Besides the Row value set it accepts Go's other integer and float types, encoded as
// int64 (float64 for unsigned values above MaxInt64) and float64; DecodeRow returns
// the canonical types. It panics on any other value type; use Normalize first when a
// row comes from untrusted code.
func AppendRow(dst []byte, r Row) []byte {
	return appendMapBody(dst, r)
}

func appendMapBody(dst []byte, m map[string]any) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(m)))
	var buf [16]entry
	fs := buf[:0]
	for k, v := range m {
		fs = append(fs, entry{k, v})
	}
	slices.SortFunc(fs, func(a, b entry) int { return strings.Compare(a.k, b.k) })
	for _, f := range fs {
		dst = binary.AppendUvarint(dst, uint64(len(f.k)))
		dst = append(dst, f.k...)
		dst = appendValue(dst, f.v)
	}
	return dst
}

// entry is a map entry being encoded.
type entry struct {
	k string
	v any
}

func appendValue(dst []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(dst, tagNil)
	case bool:
		if v {
			return append(dst, tagTrue)
		}
		return append(dst, tagFalse)
	case int64:
		return appendInt(dst, v)
	case float64:
		return appendFloat(dst, v)
	case string:
		dst = append(dst, tagString)
		dst = binary.AppendUvarint(dst, uint64(len(v)))
		return append(dst, v...)
	case []any:
		dst = append(dst, tagList)
		dst = binary.AppendUvarint(dst, uint64(len(v)))
		for _, e := range v {
			dst = appendValue(dst, e)
		}
		return dst
	case map[string]any:
		dst = append(dst, tagMap)
		return appendMapBody(dst, v)
	case int:
		return appendInt(dst, int64(v))
	case int8:
		return appendInt(dst, int64(v))
	case int16:
		return appendInt(dst, int64(v))
	case int32:
		return appendInt(dst, int64(v))
	case uint:
		return appendUint(dst, uint64(v))
	case uint8:
		return appendInt(dst, int64(v))
	case uint16:
		return appendInt(dst, int64(v))
	case uint32:
		return appendInt(dst, int64(v))
	case uint64:
		return appendUint(dst, v)
	case float32:
		return appendFloat(dst, float64(v))
	}
	panic(fmt.Sprintf("spec: AppendRow: unsupported value type %T", v))
}

func appendInt(dst []byte, v int64) []byte {
	dst = append(dst, tagInt)
	return binary.AppendUvarint(dst, uint64(v<<1)^uint64(v>>63))
}

func appendUint(dst []byte, v uint64) []byte {
	if v > math.MaxInt64 {
		return appendFloat(dst, float64(v))
	}
	return appendInt(dst, int64(v))
}

func appendFloat(dst []byte, v float64) []byte {
	dst = append(dst, tagFloat)
	return binary.LittleEndian.AppendUint64(dst, math.Float64bits(v))
}

var errTruncated = errors.New("spec: DecodeRow: truncated input")

// DecodeRow decodes one row encoded by AppendRow; src must hold exactly that row.
// It accepts only the canonical encoding (minimal varints, strictly increasing field
// names, nesting depth at most 256) and never panics. The returned row does not
// alias src: all its strings share one copy of src.
func DecodeRow(src []byte) (Row, error) {
	d := decoder{s: string(src)}
	m, err := d.mapBody(0)
	if err != nil {
		return nil, err
	}
	if d.i != len(d.s) {
		return nil, fmt.Errorf("spec: DecodeRow: %d trailing bytes", len(d.s)-d.i)
	}
	return m, nil
}

type decoder struct {
	s string
	i int
}

// uvarint reads a minimally encoded unsigned varint.
func (d *decoder) uvarint() (uint64, error) {
	var x uint64
	for n := 0; n < binary.MaxVarintLen64; n++ {
		if d.i >= len(d.s) {
			return 0, errTruncated
		}
		b := d.s[d.i]
		d.i++
		if b < 0x80 {
			if n == binary.MaxVarintLen64-1 && b > 1 {
				break
			}
			if n > 0 && b == 0 {
				return 0, errors.New("spec: DecodeRow: non-minimal varint")
			}
			return x | uint64(b)<<(7*n), nil
		}
		x |= uint64(b&0x7f) << (7 * n)
	}
	return 0, errors.New("spec: DecodeRow: varint overflows 64 bits")
}

// count reads an element count, each element taking at least minSize bytes.
func (d *decoder) count(minSize int) (int, error) {
	n, err := d.uvarint()
	if err != nil {
		return 0, err
	}
	if n > uint64(len(d.s)-d.i)/uint64(minSize) {
		return 0, errTruncated
	}
	return int(n), nil
}

func (d *decoder) str() (string, error) {
	n, err := d.count(1)
	if err != nil {
		return "", err
	}
	s := d.s[d.i : d.i+n]
	d.i += n
	return s, nil
}

func (d *decoder) mapBody(depth int) (map[string]any, error) {
	n, err := d.count(2) // key length byte + value tag
	if err != nil {
		return nil, err
	}
	m := make(map[string]any, n)
	prev := ""
	for j := 0; j < n; j++ {
		k, err := d.str()
		if err != nil {
			return nil, err
		}
		if j > 0 && k <= prev {
			return nil, fmt.Errorf("spec: DecodeRow: field %q out of order or duplicated", k)
		}
		prev = k
		v, err := d.value(depth)
		if err != nil {
			return nil, err
		}
		m[k] = v
	}
	return m, nil
}

func (d *decoder) value(depth int) (any, error) {
	if d.i >= len(d.s) {
		return nil, errTruncated
	}
	tag := d.s[d.i]
	d.i++
	switch tag {
	case tagNil:
		return nil, nil
	case tagFalse:
		return false, nil
	case tagTrue:
		return true, nil
	case tagInt:
		u, err := d.uvarint()
		if err != nil {
			return nil, err
		}
		return int64(u>>1) ^ -int64(u&1), nil
	case tagFloat:
		if len(d.s)-d.i < 8 {
			return nil, errTruncated
		}
		var b [8]byte
		copy(b[:], d.s[d.i:])
		d.i += 8
		return math.Float64frombits(binary.LittleEndian.Uint64(b[:])), nil
	case tagString:
		return d.str()
	case tagList:
		if depth >= maxDepth {
			return nil, errors.New("spec: DecodeRow: nesting too deep")
		}
		n, err := d.count(1)
		if err != nil {
			return nil, err
		}
		l := make([]any, n)
		for j := range l {
			if l[j], err = d.value(depth + 1); err != nil {
				return nil, err
			}
		}
		return l, nil
	case tagMap:
		if depth >= maxDepth {
			return nil, errors.New("spec: DecodeRow: nesting too deep")
		}
		return d.mapBody(depth + 1)
	}
	return nil, fmt.Errorf("spec: DecodeRow: unknown value tag %d", tag)
}

// Normalize converts v to the Row value set: Go integer types become int64 (unsigned
// values above MaxInt64 become float64), float32 becomes float64, time.Duration its
// nanoseconds as int64, time.Time an RFC 3339 string with nanoseconds, other slices
// and arrays []any, maps with string keys map[string]any, recursively. Values already
// in the set are returned as they are (a []any or map[string]any is modified in place
// when one of its elements needs converting). Other types are an error.
func Normalize(v any) (any, error) {
	out, _, err := normalize(v, 0)
	return out, err
}

// normalize reports whether the returned value differs from v.
func normalize(v any, depth int) (any, bool, error) {
	switch x := v.(type) {
	case nil, bool, int64, float64, string:
		return v, false, nil
	case int:
		return int64(x), true, nil
	case []any:
		if depth >= maxDepth {
			return nil, false, errors.New("value nested too deep")
		}
		for i, e := range x {
			n, changed, err := normalize(e, depth+1)
			if err != nil {
				return nil, false, err
			}
			if changed {
				x[i] = n
			}
		}
		return x, false, nil
	case map[string]any:
		if depth >= maxDepth {
			return nil, false, errors.New("value nested too deep")
		}
		for k, e := range x {
			n, changed, err := normalize(e, depth+1)
			if err != nil {
				return nil, false, err
			}
			if changed {
				x[k] = n
			}
		}
		return x, false, nil
	case int8:
		return int64(x), true, nil
	case int16:
		return int64(x), true, nil
	case int32:
		return int64(x), true, nil
	case uint:
		return normUint(uint64(x)), true, nil
	case uint8:
		return int64(x), true, nil
	case uint16:
		return int64(x), true, nil
	case uint32:
		return int64(x), true, nil
	case uint64:
		return normUint(x), true, nil
	case float32:
		return float64(x), true, nil
	case time.Duration:
		return int64(x), true, nil
	case time.Time:
		return x.Format(time.RFC3339Nano), true, nil
	}
	// Remaining slices, arrays and string-keyed maps, e.g. []int from a range or
	// []string from split().
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Slice, reflect.Array:
		if depth >= maxDepth {
			return nil, false, errors.New("value nested too deep")
		}
		if rv.Kind() == reflect.Slice && rv.IsNil() {
			return nil, true, nil
		}
		l := make([]any, rv.Len())
		for i := range l {
			n, _, err := normalize(rv.Index(i).Interface(), depth+1)
			if err != nil {
				return nil, false, err
			}
			l[i] = n
		}
		return l, true, nil
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			break
		}
		if depth >= maxDepth {
			return nil, false, errors.New("value nested too deep")
		}
		if rv.IsNil() {
			return nil, true, nil
		}
		m := make(map[string]any, rv.Len())
		it := rv.MapRange()
		for it.Next() {
			n, _, err := normalize(it.Value().Interface(), depth+1)
			if err != nil {
				return nil, false, err
			}
			m[it.Key().String()] = n
		}
		return m, true, nil
	}
	return nil, false, fmt.Errorf("unsupported value type %T", v)
}

func normUint(u uint64) any {
	if u > math.MaxInt64 {
		return float64(u)
	}
	return int64(u)
}

// KeyString renders a field value as a key: a string as it is, integers in decimal,
// floats in the shortest 'g' form that round-trips (so 3.0 renders as "3", the same
// key as the integer 3), booleans as "true"/"false", nil (a missing field) as "",
// lists and maps as compact JSON with sorted map keys. Key groups hash these bytes.
func KeyString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	var buf [32]byte
	return string(AppendKey(buf[:0], v))
}

// AppendKey appends KeyString(v) to dst without the intermediate string.
func AppendKey(dst []byte, v any) []byte {
	switch x := v.(type) {
	case string:
		return append(dst, x...)
	case int64:
		return strconv.AppendInt(dst, x, 10)
	case float64:
		return appendKeyFloat(dst, x)
	case bool:
		return strconv.AppendBool(dst, x)
	case nil:
		return dst
	case int:
		return strconv.AppendInt(dst, int64(x), 10)
	}
	return appendJSON(dst, v, 0)
}

func appendKeyFloat(dst []byte, f float64) []byte {
	if f == 0 {
		return append(dst, '0') // -0 and 0 are one key
	}
	return strconv.AppendFloat(dst, f, 'g', -1, 64)
}

// appendJSON renders v as compact JSON; numbers use the key forms above and
// non-finite floats render as strings ("NaN", "+Inf", "-Inf").
func appendJSON(dst []byte, v any, depth int) []byte {
	if depth > maxDepth {
		return append(dst, "null"...)
	}
	switch x := v.(type) {
	case nil:
		return append(dst, "null"...)
	case string:
		return appendJSONString(dst, x)
	case int64:
		return strconv.AppendInt(dst, x, 10)
	case bool:
		return strconv.AppendBool(dst, x)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return appendJSONString(dst, strconv.FormatFloat(x, 'g', -1, 64))
		}
		return appendKeyFloat(dst, x)
	case []any:
		dst = append(dst, '[')
		for i, e := range x {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSON(dst, e, depth+1)
		}
		return append(dst, ']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		dst = append(dst, '{')
		for i, k := range keys {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, k)
			dst = append(dst, ':')
			dst = appendJSON(dst, x[k], depth+1)
		}
		return append(dst, '}')
	}
	n, _, err := normalize(v, depth)
	if err != nil {
		return fmt.Appendf(dst, "%v", v)
	}
	switch n.(type) {
	case []any, map[string]any, nil:
		return appendJSON(dst, n, depth+1)
	}
	return AppendKey(dst, n)
}

// appendJSONString appends s as a JSON string literal; invalid UTF-8 becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, "\ufffd"...)
		} else {
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// AppendJSON appends r as one compact JSON object with fields in sorted order, the
// form the print and json file sinks write. Integers are written exactly, floats in
// the shortest form that round-trips, NaN and infinities as strings.
func AppendJSON(dst []byte, r Row) []byte {
	return appendJSON(dst, map[string]any(r), 0)
}
