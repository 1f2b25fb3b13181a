package spec

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestEvalMap(t *testing.T) {
	in := Row{"key": "key-3", "seq": int64(7), "f": 1.5, "tags": []any{"a"}}
	for _, tt := range []struct {
		src  string
		want Row
	}{
		{`{"key": key, "seq": seq, "value": seq * 2}`, Row{"key": "key-3", "seq": int64(7), "value": int64(14)}},
		{`{"lit": 1, "neg": -2, "half": seq / 2, "mod": seq % 3, "sum": f + 1}`,
			Row{"lit": int64(1), "neg": int64(-2), "half": 3.5, "mod": int64(1), "sum": 2.5}},
		{`{"l": [1, 2.5, "x", nil, true], "m": {"n": 1}}`,
			Row{"l": []any{int64(1), 2.5, "x", nil, true}, "m": map[string]any{"n": int64(1)}}},
		{`{"missing": nope, "len": len(key), "up": upper(key)}`, Row{"missing": nil, "len": int64(5), "up": "KEY-3"}},
		{`{"r": 1..3, "parts": split(key, "-")}`, Row{"r": []any{int64(1), int64(2), int64(3)}, "parts": []any{"key", "3"}}},
		{`{"doubled": map([1, 2], # * 2), "tags": tags}`, Row{"doubled": []any{int64(2), int64(4)}, "tags": []any{"a"}}},
		{`seq > 5 ? {"big": true} : {"big": false}`, Row{"big": true}},
		{`let r = $env; r`, in},
	} {
		e, err := CompileMap(tt.src)
		if err != nil {
			t.Fatalf("CompileMap(%q): %v", tt.src, err)
		}
		got, err := e.EvalMap(in)
		if err != nil {
			t.Fatalf("EvalMap(%q): %v", tt.src, err)
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("EvalMap(%q) = %#v, want %#v", tt.src, got, tt.want)
		}
		if e.Source() != tt.src || e.Kind() != ExprMap {
			t.Errorf("Source/Kind = %q %v", e.Source(), e.Kind())
		}
	}
	if !reflect.DeepEqual(in, Row{"key": "key-3", "seq": int64(7), "f": 1.5, "tags": []any{"a"}}) {
		t.Errorf("input modified: %v", in)
	}
}

func TestEvalBool(t *testing.T) {
	in := Row{"key": "key-3", "seq": int64(7), "f": 1.5, "s": "abc"}
	for _, tt := range []struct {
		src  string
		want bool
	}{
		{"seq > 5", true},
		{"seq > 10", false},
		{"f >= 1.5 && key == 'key-3'", true},
		{"missing == nil", true},
		{"s startsWith 'a' and len(s) == 3", true},
		{"seq in [1, 7]", true},
		{"not (seq == 7)", false},
		{"true", true},
	} {
		e, err := CompileFilter(tt.src)
		if err != nil {
			t.Fatalf("CompileFilter(%q): %v", tt.src, err)
		}
		for range 2 { // the VM is reused
			got, err := e.EvalBool(in)
			if err != nil || got != tt.want {
				t.Errorf("EvalBool(%q) = %v, %v; want %v", tt.src, got, err, tt.want)
			}
		}
	}
}

func TestCompileErrors(t *testing.T) {
	for _, tt := range []struct {
		filter bool
		src    string
		want   ExprError
	}{
		{false, "1 +", ExprError{Line: 1, Column: 3, Msg: "unexpected token EOF"}},
		{false, "  ", ExprError{Line: 1, Msg: "empty expression"}},
		{false, "seq > 1", ExprError{Line: 1, Msg: "expression must evaluate to a map, but its type is bool"}},
		{false, "[1]", ExprError{Line: 1, Msg: "expression must evaluate to a map, but its type is list"}},
		{true, "1 + 2", ExprError{Line: 1, Msg: "expression must evaluate to a bool, but its type is int"}},
		{true, "{\"a\": 1}", ExprError{Line: 1, Msg: "expression must evaluate to a bool, but its type is map"}},
		{true, "a ==\n  (b", ExprError{Line: 2, Column: 4, Msg: "unexpected token EOF"}},
	} {
		var err error
		if tt.filter {
			_, err = CompileFilter(tt.src)
		} else {
			_, err = CompileMap(tt.src)
		}
		var ee *ExprError
		if !errors.As(err, &ee) {
			t.Fatalf("%q: error %v is not an *ExprError", tt.src, err)
		}
		if *ee != tt.want {
			t.Errorf("%q: got %+v, want %+v", tt.src, *ee, tt.want)
		}
		if strings.Contains(ee.Error(), "\n") {
			t.Errorf("%q: multi-line error %q", tt.src, ee.Error())
		}
	}
}

func TestEvalErrors(t *testing.T) {
	in := Row{"seq": int64(1), "s": "x"}
	for _, tt := range []struct {
		filter   bool
		src, msg string
	}{
		{true, "missing > 10", `expression "missing > 10": invalid operation: <nil> > int (expression line 1, column 9)`},
		{true, "s", `expression "s": result must be a bool, got string "x"`},
		{true, "missing", `expression "missing": result must be a bool, got nil`},
		{false, "s", `expression "s": result must be a map, got string "x"`},
		{false, "missing", `expression "missing": result must be a map, got nil`},
		{false, "seq / 0 > 1 ? {} : {}", ""},
		{false, "{'a': seq.x}", `expression "{'a': seq.x}": cannot fetch x from int64 (expression line 1, column 11)`},
	} {
		e, err := compile(tt.src, map[bool]ExprKind{true: ExprFilter, false: ExprMap}[tt.filter])
		if err != nil {
			t.Fatalf("compile(%q): %v", tt.src, err)
		}
		if tt.filter {
			_, err = e.EvalBool(in)
		} else {
			_, err = e.EvalMap(in)
		}
		if tt.msg == "" {
			continue // only must not panic
		}
		if err == nil || err.Error() != tt.msg {
			t.Errorf("%q: error %v, want %s", tt.src, err, tt.msg)
		}
	}
}

func TestExprClonesConcurrently(t *testing.T) {
	e, err := CompileMap(`{"key": key, "v": seq * 3}`)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		c := e.Clone()
		wg.Go(func() {
			for i := range int64(500) {
				out, err := c.EvalMap(Row{"key": "k", "seq": i + int64(g)})
				if err != nil || out["v"] != (i+int64(g))*3 {
					t.Errorf("got %v %v", out, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkEvalBool(b *testing.B) {
	e, err := CompileFilter("value > 10 && key != 'x'")
	if err != nil {
		b.Fatal(err)
	}
	r := Row{"key": "key-1", "seq": int64(5), "value": int64(12)}
	b.ReportAllocs()
	for b.Loop() {
		if ok, err := e.EvalBool(r); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}

func BenchmarkEvalMap(b *testing.B) {
	e, err := CompileMap(`{"key": key, "seq": seq, "value": seq * 2}`)
	if err != nil {
		b.Fatal(err)
	}
	r := Row{"key": "key-1", "seq": int64(5)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.EvalMap(r); err != nil {
			b.Fatal(err)
		}
	}
}
