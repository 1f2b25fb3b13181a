package spec

import (
	"bytes"
	"math"
	"reflect"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// equalValues is reflect.DeepEqual that compares floats by bits, so NaN equals NaN.
func equalValues(a, b any) bool {
	switch x := a.(type) {
	case float64:
		y, ok := b.(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !equalValues(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, v := range x {
			w, ok := y[k]
			if !ok || !equalValues(v, w) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

var sampleRow = Row{
	"key":   "key-17",
	"seq":   int64(123456),
	"value": 2.5,
	"ok":    true,
	"no":    false,
	"none":  nil,
	"neg":   int64(-1),
	"big":   int64(math.MinInt64),
	"tags":  []any{"a", int64(1), []any{}, map[string]any{"x": nil}},
	"nest":  map[string]any{"b": int64(2), "a": "1", "c": map[string]any{}},
	"empty": "",
	"nan":   math.NaN(),
	"negz":  math.Copysign(0, -1),
	"utf8":  "héllo\x00\xff",
}

func TestRowRoundTrip(t *testing.T) {
	for _, r := range []Row{{}, nil, sampleRow, {"": ""}, {"x": []any{}}} {
		enc := AppendRow(nil, r)
		got, err := DecodeRow(enc)
		if err != nil {
			t.Fatalf("DecodeRow(AppendRow(%v)): %v", r, err)
		}
		if !equalValues(map[string]any(got), map[string]any(r)) && !(r == nil && len(got) == 0) {
			t.Errorf("round trip of %v gave %v", r, got)
		}
		if again := AppendRow(nil, got); !bytes.Equal(again, enc) {
			t.Errorf("re-encoding differs: %x vs %x", again, enc)
		}
	}
}

func TestAppendRowDeterministic(t *testing.T) {
	a := AppendRow([]byte("prefix"), sampleRow)
	for range 20 {
		// Rebuild the map so its iteration order changes.
		r := make(Row)
		for k, v := range sampleRow {
			r[k] = v
		}
		if b := AppendRow([]byte("prefix"), r); !bytes.Equal(a, b) {
			t.Fatal("encodings of equal rows differ")
		}
	}
	if !bytes.HasPrefix(a, []byte("prefix")) {
		t.Error("AppendRow lost dst")
	}
	many := make(Row)
	for i := range 40 { // more fields than the on-stack key buffer
		many[SequenceKey(int64(i))] = int64(i)
	}
	got, err := DecodeRow(AppendRow(nil, many))
	if err != nil || !reflect.DeepEqual(got, many) {
		t.Errorf("40 fields: %v %v", got, err)
	}
}

func TestAppendRowOtherGoTypes(t *testing.T) {
	in := Row{"i": 3, "i8": int8(-3), "u": uint(7), "u64": uint64(math.MaxUint64), "f32": float32(1.5), "u8": uint8(200)}
	got, err := DecodeRow(AppendRow(nil, in))
	if err != nil {
		t.Fatal(err)
	}
	want := Row{"i": int64(3), "i8": int64(-3), "u": int64(7), "u64": float64(math.MaxUint64), "f32": 1.5, "u8": int64(200)}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	defer func() {
		if recover() == nil {
			t.Error("no panic for an unsupported type")
		}
	}()
	AppendRow(nil, Row{"t": struct{}{}})
}

func TestDecodeRowRejects(t *testing.T) {
	valid := AppendRow(nil, Row{"a": int64(1), "b": "x"})
	for name, src := range map[string][]byte{
		"empty":           {},
		"truncated":       valid[:len(valid)-1],
		"trailing":        append(append([]byte{}, valid...), 0),
		"unknown tag":     {1, 1, 'a', 99},
		"unsorted":        {2, 1, 'b', tagNil, 1, 'a', tagNil},
		"duplicate":       {2, 1, 'a', tagNil, 1, 'a', tagNil},
		"huge count":      {0xff, 0xff, 0xff, 0xff, 0x0f},
		"long varint":     {0x80, 0x00},
		"varint overflow": {1, 1, 'a', tagInt, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02},
		"short float":     {1, 1, 'a', tagFloat, 0, 0},
		"string too long": {1, 1, 'a', tagString, 5, 'x'},
	} {
		if r, err := DecodeRow(src); err == nil {
			t.Errorf("%s: decoded %v", name, r)
		}
	}
	deep := []byte{1, 1, 'a'}
	for range maxDepth + 1 {
		deep = append(deep, tagList, 1)
	}
	deep = append(deep, tagNil)
	if _, err := DecodeRow(deep); err == nil {
		t.Error("accepted nesting deeper than maxDepth")
	}
}

func TestNormalize(t *testing.T) {
	ts := time.Date(2024, 5, 6, 7, 8, 9, 10, time.UTC)
	in := map[string]any{
		"i": 1, "d": 2 * time.Second, "t": ts, "ints": []int{1, 2}, "strs": []string{"a"},
		"m": map[string]int{"x": 1}, "arr": [2]bool{true, false}, "keep": []any{int32(5)},
		"nilslice": []int(nil),
	}
	got, err := Normalize(in)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"i": int64(1), "d": int64(2e9), "t": "2024-05-06T07:08:09.00000001Z",
		"ints": []any{int64(1), int64(2)}, "strs": []any{"a"}, "m": map[string]any{"x": int64(1)},
		"arr": []any{true, false}, "keep": []any{int64(5)}, "nilslice": nil,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %#v\nwant %#v", got, want)
	}
	for _, bad := range []any{struct{}{}, map[int]any{1: 2}, []any{make(chan int)}, func() {}} {
		if _, err := Normalize(bad); err == nil {
			t.Errorf("Normalize(%T) accepted", bad)
		}
	}
}

func TestKeyString(t *testing.T) {
	for _, tt := range []struct {
		v    any
		want string
	}{
		{"key-1", "key-1"},
		{"", ""},
		{int64(-42), "-42"},
		{42, "42"},
		{int32(7), "7"},
		{3.0, "3"},
		{2.5, "2.5"},
		{math.Copysign(0, -1), "0"},
		{1e21, "1e+21"},
		{math.NaN(), "NaN"},
		{true, "true"},
		{nil, ""},
		{[]any{"a", int64(1), nil, 1.5}, `["a",1,null,1.5]`},
		{map[string]any{"b": "x\"y", "a": []any{}}, `{"a":[],"b":"x\"y"}`},
		{[]any{math.Inf(1)}, `["+Inf"]`},
		{[]string{"q"}, `["q"]`},
		{map[string]any{"z": "\n\x01\xff"}, "{\"z\":\"\\n\\u0001\ufffd\"}"},
	} {
		if got := KeyString(tt.v); got != tt.want {
			t.Errorf("KeyString(%#v) = %q, want %q", tt.v, got, tt.want)
		}
		if got := string(AppendKey([]byte("p:"), tt.v)); got != "p:"+tt.want {
			t.Errorf("AppendKey(%#v) = %q", tt.v, got)
		}
	}
	if KeyString(int64(3)) != KeyString(3.0) {
		t.Error("int64 3 and float 3.0 are different keys")
	}
}

func TestAppendJSON(t *testing.T) {
	got := string(AppendJSON(nil, Row{"key": "k", "count": int64(3), "avg": 0.5, "tags": []any{true}}))
	if want := `{"avg":0.5,"count":3,"key":"k","tags":[true]}`; got != want {
		t.Errorf("AppendJSON = %s, want %s", got, want)
	}
}

func FuzzDecodeRow(f *testing.F) {
	f.Add(AppendRow(nil, sampleRow))
	f.Add(AppendRow(nil, Row{}))
	f.Add(AppendRow(nil, Row{"a": []any{map[string]any{"b": int64(-5)}}}))
	f.Add([]byte{1, 1, 'a', tagFloat, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := DecodeRow(data)
		if err != nil {
			return
		}
		// The decoder accepts only the canonical encoding.
		enc := AppendRow(nil, r)
		if !bytes.Equal(enc, data) {
			t.Fatalf("re-encoding %x differs from input %x", enc, data)
		}
		r2, err := DecodeRow(enc)
		if err != nil || !equalValues(map[string]any(r), map[string]any(r2)) {
			t.Fatalf("round trip: %v %v vs %v", err, r2, r)
		}
	})
}

func FuzzRowRoundTrip(f *testing.F) {
	f.Add("key-1", int64(1), 2.5, "x", true, "nested")
	f.Fuzz(func(t *testing.T, k string, i int64, fl float64, s string, b bool, nk string) {
		r := Row{k: i, "f": fl, "s": s, "b": b, "l": []any{s, i, fl, nil}, "m": map[string]any{nk: s, k: fl}}
		got, err := DecodeRow(AppendRow(nil, r))
		if err != nil {
			t.Fatal(err)
		}
		if !equalValues(map[string]any(got), map[string]any(r)) {
			t.Fatalf("round trip of %v gave %v", r, got)
		}
	})
}

var benchRow = Row{
	"key":   "key-42",
	"seq":   int64(1234567),
	"value": int64(2469134),
	"score": 0.75,
	"line":  "the quick brown fox jumps over the lazy dog",
}

func BenchmarkAppendRow(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendRow(buf[:0], benchRow)
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodeRow(b *testing.B) {
	enc := AppendRow(nil, benchRow)
	b.SetBytes(int64(len(enc)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeRow(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkKeyString(b *testing.B) {
	b.ReportAllocs()
	var buf []byte
	for b.Loop() {
		buf = AppendKey(buf[:0], benchRow["seq"])
	}
}
