package spec

import (
	"math"
	"reflect"
	"testing"
)

// run feeds values of field "v" for one key through g and returns the outputs' "as"
// field.
func run(t *testing.T, g *Aggregator, values ...any) ([]any, Acc) {
	t.Helper()
	var acc Acc
	var outs []any
	for _, v := range values {
		in := Row{"key": "k", "v": v}
		if v == "absent" {
			in = Row{"key": "k"}
		}
		next, out, err := g.Update(acc, in)
		if err != nil {
			t.Fatalf("Update(%v): %v", in, err)
		}
		if out["key"] != "k" || len(out) != len(in)+1 {
			t.Fatalf("output %v does not extend input %v", out, in)
		}
		if len(in) == 2 && out["v"] != in["v"] && !(isNaN(out["v"]) && isNaN(in["v"])) {
			t.Fatalf("output %v changed v", out)
		}
		outs = append(outs, out[g.As()])
		// The accumulator survives keyed state.
		dec, err := DecodeAcc(AppendAcc(nil, next))
		if err != nil || !equalAcc(dec, next) {
			t.Fatalf("acc round trip %+v -> %+v, %v", next, dec, err)
		}
		acc = dec
	}
	return outs, acc
}

func isNaN(v any) bool { f, ok := v.(float64); return ok && math.IsNaN(f) }

func equalAcc(a, b Acc) bool {
	return a.Count == b.Count && a.I == b.I && math.Float64bits(a.F) == math.Float64bits(b.F) &&
		a.IsFloat == b.IsFloat && a.Set == b.Set
}

func mustAgg(t *testing.T, fn, field, as string) *Aggregator {
	t.Helper()
	g, err := NewAggregator(fn, field, as)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestAggregate(t *testing.T) {
	i := func(v int64) any { return v }
	for _, tt := range []struct {
		name      string
		fn, field string
		in        []any
		want      []any
	}{
		{"count", "count", "", []any{i(5), "x", nil, "absent"}, []any{i(1), i(2), i(3), i(4)}},
		{"count field", "count", "v", []any{i(5), nil, "absent", "x"}, []any{i(1), i(1), i(1), i(2)}},
		{"sum ints", "sum", "v", []any{i(1), i(2), i(-10)}, []any{i(1), i(3), i(-7)}},
		{"sum wraps", "sum", "v", []any{i(math.MaxInt64), i(1)}, []any{i(math.MaxInt64), i(math.MinInt64)}},
		{"sum turns float", "sum", "v", []any{i(1), 0.5, i(2)}, []any{i(1), 1.5, 3.5}},
		{"sum float first", "sum", "v", []any{0.25, i(1)}, []any{0.25, 1.25}},
		{"sum skips nil", "sum", "v", []any{nil, i(4), "absent", i(1)}, []any{nil, i(4), i(4), i(5)}},
		{"sum other ints", "sum", "v", []any{3, int32(4)}, []any{i(3), i(7)}},
		{"min", "min", "v", []any{i(5), i(7), i(2), 2.5, 1.5, i(1)}, []any{i(5), i(5), i(2), i(2), 1.5, i(1)}},
		{"max", "max", "v", []any{i(5), 5.0, 5.5, i(6), i(-1)}, []any{i(5), i(5), 5.5, i(6), i(6)}},
		{"max exact int/float", "max", "v", []any{i(math.MaxInt64), float64(math.MaxInt64)}, []any{i(math.MaxInt64), 9.223372036854775807e18}},
		{"max big int beats float", "max", "v", []any{float64(1 << 53), i(1<<53 + 1)}, []any{float64(1 << 53), i(1<<53 + 1)}},
		{"min NaN lowest", "min", "v", []any{i(3), math.NaN(), i(1)}, []any{i(3), math.NaN(), math.NaN()}},
		{"max NaN lowest", "max", "v", []any{math.NaN(), i(1), math.Inf(1)}, []any{math.NaN(), i(1), math.Inf(1)}},
		{"min negative floats", "min", "v", []any{-0.5, i(-1), -1.5}, []any{-0.5, i(-1), -1.5}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := run(t, mustAgg(t, tt.fn, tt.field, ""), tt.in...)
			if !equalValues(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAggregateErrors(t *testing.T) {
	for _, args := range [][3]string{{"avg", "v", ""}, {"sum", "", ""}, {"min", "", "m"}, {"", "", ""}} {
		if _, err := NewAggregator(args[0], args[1], args[2]); err == nil {
			t.Errorf("NewAggregator%v accepted", args)
		}
	}
	g := mustAgg(t, "sum", "v", "total")
	if g.Function() != FuncSum || g.Field() != "v" || g.As() != "total" {
		t.Errorf("accessors %v %v %v", g.Function(), g.Field(), g.As())
	}
	acc := Acc{Count: 1, I: 4, Set: true}
	for _, bad := range []any{"4", true, []any{int64(1)}} {
		next, out, err := g.Update(acc, Row{"v": bad})
		if err == nil || out != nil || next != acc {
			t.Errorf("Update with %v: %v %v %v", bad, next, out, err)
		}
	}
	in := Row{"v": int64(1)}
	_, out, err := g.Update(acc, in)
	if err != nil || !reflect.DeepEqual(out, Row{"v": int64(1), "total": int64(5)}) || len(in) != 1 {
		t.Errorf("Update: %v %v, input %v", out, err, in)
	}
	if mustAgg(t, "max", "v", "").As() != "max" {
		t.Error("default as is not the function name")
	}
}

func TestAccCodec(t *testing.T) {
	for _, a := range []Acc{
		{},
		{Count: 3, I: 3, Set: true},
		{Count: 2, I: math.MinInt64, Set: true},
		{Count: 9, F: -2.5, IsFloat: true, Set: true},
		{Count: math.MaxInt64, F: math.Inf(-1), IsFloat: true, Set: true},
	} {
		enc := AppendAcc([]byte{7}, a)
		got, err := DecodeAcc(enc[1:])
		if err != nil || got != a {
			t.Errorf("%+v: decoded %+v, %v", a, got, err)
		}
	}
	for _, bad := range [][]byte{nil, {4, 0}, {accFloat, 0}, {accSet, 2}, {accSet | accFloat, 2, 0}, {0, 0, 0}, {0, 0x80}} {
		if a, err := DecodeAcc(bad); err == nil {
			t.Errorf("DecodeAcc(%x) = %+v", bad, a)
		}
	}
}

func TestSequenceSpec(t *testing.T) {
	s := &SequenceSpec{Keys: 5, PerKey: 2}
	// Subtask 1 of 2 owns keys 1 and 3.
	var got []Row
	for n := int64(0); ; n++ {
		r, ok := s.At(1, 2, n)
		if !ok {
			break
		}
		got = append(got, r)
	}
	want := []Row{
		{"key": "key-1", "seq": int64(1)}, {"key": "key-3", "seq": int64(1)},
		{"key": "key-1", "seq": int64(2)}, {"key": "key-3", "seq": int64(2)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if s.Count(0, 2) != 6 || s.Count(1, 2) != 4 || s.Count(5, 6) != 0 || s.SubtaskKeys(0, 2) != 3 {
		t.Errorf("counts %d %d %d", s.Count(0, 2), s.Count(1, 2), s.Count(5, 6))
	}
	// Every key of every subtask, each exactly PerKey times.
	seen := map[string]int64{}
	for p := 1; p <= 7; p++ {
		clear(seen)
		for i := range p {
			for n := int64(0); ; n++ {
				r, ok := s.At(i, p, n)
				if !ok {
					break
				}
				seen[r["key"].(string)]++
			}
		}
		if len(seen) != 5 {
			t.Fatalf("p=%d: keys %v", p, seen)
		}
		for k, c := range seen {
			if c != 2 {
				t.Errorf("p=%d: key %s seen %d times", p, k, c)
			}
		}
	}
	u := &SequenceSpec{Keys: 3}
	if u.Count(0, 1) != -1 {
		t.Error("unbounded count")
	}
	if r, ok := u.At(0, 1, 1_000_000); !ok || r["seq"] != int64(333334) || r["key"] != "key-1" {
		t.Errorf("At = %v %v", r, ok)
	}
	if _, ok := u.At(0, 1, -1); ok {
		t.Error("negative position")
	}
	if r := FileRecord("hello", 3, "in.txt"); !reflect.DeepEqual(r, Row{"line": "hello", "lineNumber": int64(3), "file": "in.txt"}) {
		t.Errorf("FileRecord = %v", r)
	}
}

func FuzzDecodeAcc(f *testing.F) {
	f.Add(AppendAcc(nil, Acc{Count: 2, F: 1.5, IsFloat: true, Set: true}))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := DecodeAcc(data)
		if err != nil {
			return
		}
		if b, err := DecodeAcc(AppendAcc(nil, a)); err != nil || !equalAcc(a, b) {
			t.Fatalf("round trip %+v -> %+v %v", a, b, err)
		}
	})
}

func BenchmarkAggregateUpdate(b *testing.B) {
	g, _ := NewAggregator("sum", "value", "")
	in := Row{"key": "key-1", "seq": int64(5), "value": int64(12)}
	var acc Acc
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if acc, _, err = g.Update(acc, in); err != nil {
			b.Fatal(err)
		}
	}
}
