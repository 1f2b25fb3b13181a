package api

import (
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/heap"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type nopSource[T any] struct{ Base }

func (nopSource[T]) Poll(Emitter[T]) (PollResult, error) { return End, nil }

type nopSink[T any] struct{ Base }

func (nopSink[T]) Write(T) error { return nil }
func (nopSink[T]) Finish() error { return nil }

type countFn struct{ KeyedBase }

func (countFn) Process(_ *KeyedContext, _ string, in string, out Emitter[int64]) error {
	out.Emit(int64(len(in)))
	return nil
}

func TestCompileGraph(t *testing.T) {
	env := NewEnv("words", quiet())
	env.SetParallelism(2)
	words := FromSource(env, func() Source[string] { return nopSource[string]{} }).UID("words").Parallelism(1)
	upper := Map(words, strings.ToUpper)
	long := Filter(upper, func(s string) bool { return len(s) > 3 })
	counts := ProcessKeyed(KeyBy(long, func(s string) string { return s }), func() KeyedProcessFunction[string, string, int64] { return countFn{} }).UID("counts")
	SinkTo(counts, func() Sink[int64] { return nopSink[int64]{} }).UID("sink")
	prog, err := env.Compile()
	if err != nil {
		t.Fatal(err)
	}
	g := prog.Graph
	var uids []string
	for _, op := range g.Operators {
		uids = append(uids, op.GetUid()+":"+op.GetKind())
	}
	if got := strings.Join(uids, " "); got != "words:source map-1:map filter-2:filter counts:keyed-process sink:sink" {
		t.Fatalf("operators: %s", got)
	}
	wantParts := []sluicev1.Partitioner{
		sluicev1.Partitioner_PARTITIONER_REBALANCE, // words (p=1) -> map (p=2)
		sluicev1.Partitioner_PARTITIONER_FORWARD,
		sluicev1.Partitioner_PARTITIONER_KEY_GROUP,
		sluicev1.Partitioner_PARTITIONER_FORWARD,
	}
	for i, e := range g.Edges {
		if e.GetPartitioner() != wantParts[i] {
			t.Errorf("edge %s->%s: %v, want %v", e.GetSourceUid(), e.GetTargetUid(), e.GetPartitioner(), wantParts[i])
		}
	}
	if g.GetMaxParallelism() != 128 {
		t.Errorf("max parallelism %d, want 128", g.GetMaxParallelism())
	}
	if len(prog.Plan.Vertices) != 3 {
		t.Errorf("%d vertices, want 3 (source | map->filter | counts->sink)", len(prog.Plan.Vertices))
	}
	if g.Operators[1].GetInType() != "string" || g.Operators[3].GetOutType() != "int64" {
		t.Errorf("types not recorded: %v", g.Operators)
	}
}

func TestCompileErrors(t *testing.T) {
	env := NewEnv("dup", quiet())
	a := FromSource(env, func() Source[string] { return nopSource[string]{} }).UID("same")
	Map(a, strings.ToUpper).UID("same")
	if _, err := env.Compile(); err == nil || !strings.Contains(err.Error(), `uid "same"`) {
		t.Fatalf("duplicate uid: %v", err)
	}
	env = NewEnv("bad", quiet())
	FromSource(env, func() Source[string] { return nopSource[string]{} }).UID("has space")
	if _, err := env.Compile(); err == nil || !strings.Contains(err.Error(), "has space") {
		t.Fatalf("bad uid: %v", err)
	}
}

func TestArgs(t *testing.T) {
	Register("test-args", "", func(env *Env, a *Args) error {
		n := a.Int("n", 1)
		FromSource(env, func() Source[int] { return nopSource[int]{} }).Parallelism(n)
		return nil
	})
	if _, err := BuildRegistered("test-args", map[string]string{"n": "2"}, Defaults{}, quiet()); err != nil {
		t.Fatal(err)
	}
	tests := map[string]string{"nn": "unknown argument nn (known: n)", "n": `n="x" is not an integer`}
	for k, want := range tests {
		_, err := BuildRegistered("test-args", map[string]string{k: "x"}, Defaults{}, quiet())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("arg %s: %v, want %q", k, err, want)
		}
	}
	if _, err := BuildRegistered("nope", nil, Defaults{}, quiet()); err == nil || !strings.Contains(err.Error(), "registered:") {
		t.Errorf("unknown job: %v", err)
	}
}

func TestCodecFor(t *testing.T) {
	if _, slow := CodecFor[string](); slow {
		t.Error("string codec is slow")
	}
	if _, slow := CodecFor[int64](); slow {
		t.Error("int64 codec is slow")
	}
	c, slow := CodecFor[struct{ A int }]()
	if !slow {
		t.Error("struct codec should be the reflective fallback")
	}
	v, err := c.Decode(c.Append(nil, struct{ A int }{7}))
	if err != nil || v.A != 7 {
		t.Errorf("round trip: %v %v", v, err)
	}
}

func TestValueStateIsPerKey(t *testing.T) {
	b, err := heap.New(state.KeyedOptions{OperatorUID: "op", KeyGroups: keygroup.RangeFor(0, 1, 128), MaxParallelism: 128})
	if err != nil {
		t.Fatal(err)
	}
	kc := &KeyedContext{RuntimeContext: &RuntimeContext{}, backend: b}
	s := NewValueState[int64](kc, "n", Int64Codec{})
	if len(kc.errs) > 0 {
		t.Fatal(kc.errs)
	}
	set := func(k string) { kc.setKey([]byte(k), keygroup.Of([]byte(k), 128)) }
	for _, k := range []string{"a", "b", "a"} {
		set(k)
		n, _, _ := s.Value()
		if err := s.Update(n + 1); err != nil {
			t.Fatal(err)
		}
	}
	set("a")
	if n, ok, _ := s.Value(); !ok || n != 2 {
		t.Fatalf("a = %d %v, want 2", n, ok)
	}
	if err := s.Clear(); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Value(); ok {
		t.Fatal("cleared value still set")
	}
	set("b")
	if n, ok, _ := s.Value(); !ok || n != 1 {
		t.Fatalf("b = %d %v, want 1", n, ok)
	}
}
