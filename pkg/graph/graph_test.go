package graph

import (
	"slices"
	"strings"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

const (
	fwd = sluicev1.Partitioner_PARTITIONER_FORWARD
	reb = sluicev1.Partitioner_PARTITIONER_REBALANCE
	kg  = sluicev1.Partitioner_PARTITIONER_KEY_GROUP
)

type op struct {
	uid string
	p   int32
}

type edge struct {
	from, to string
	part     sluicev1.Partitioner
}

func build(ops []op, edges []edge) *sluicev1.JobGraph {
	g := &sluicev1.JobGraph{Name: "g", MaxParallelism: 128}
	for _, o := range ops {
		g.Operators = append(g.Operators, &sluicev1.Operator{Uid: o.uid, Kind: "k", Parallelism: o.p})
	}
	for _, e := range edges {
		g.Edges = append(g.Edges, &sluicev1.Edge{SourceUid: e.from, TargetUid: e.to, Partitioner: e.part})
	}
	return g
}

func TestChaining(t *testing.T) {
	tests := []struct {
		name   string
		ops    []op
		edges  []edge
		chains [][]string
	}{
		{"forward equal parallelism chains", []op{{"a", 2}, {"b", 2}, {"c", 2}}, []edge{{"a", "b", fwd}, {"b", "c", fwd}}, [][]string{{"a", "b", "c"}}},
		{"key-by breaks the chain", []op{{"a", 2}, {"b", 2}, {"c", 2}}, []edge{{"a", "b", kg}, {"b", "c", fwd}}, [][]string{{"a"}, {"b", "c"}}},
		{"rebalance breaks the chain", []op{{"a", 1}, {"b", 2}}, []edge{{"a", "b", reb}}, [][]string{{"a"}, {"b"}}},
		{"fan-out ends a chain", []op{{"a", 1}, {"b", 1}, {"c", 1}}, []edge{{"a", "b", fwd}, {"a", "c", fwd}}, [][]string{{"a"}, {"b"}, {"c"}}},
		{"union head is not chained", []op{{"a", 1}, {"b", 1}, {"u", 1}}, []edge{{"a", "u", fwd}, {"b", "u", fwd}}, [][]string{{"a"}, {"b"}, {"u"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Build(build(tt.ops, tt.edges))
			if err != nil {
				t.Fatal(err)
			}
			var got [][]string
			for _, v := range p.Vertices {
				got = append(got, v.Operators)
			}
			if !slices.EqualFunc(got, tt.chains, slices.Equal) {
				t.Fatalf("chains %v, want %v", got, tt.chains)
			}
		})
	}
}

func TestVertexInputsOutputs(t *testing.T) {
	p, err := Build(build([]op{{"src", 2}, {"map", 2}, {"agg", 3}, {"sink", 3}},
		[]edge{{"src", "map", fwd}, {"map", "agg", kg}, {"agg", "sink", fwd}}))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Vertices) != 2 {
		t.Fatalf("%d vertices", len(p.Vertices))
	}
	v0, v1 := p.Vertices[0], p.Vertices[1]
	if !v0.IsSource() || v0.Name != "src -> map" || !slices.Equal(v0.Outputs, []int{1}) {
		t.Fatalf("vertex 0 = %+v", v0)
	}
	if v1.IsSource() || !slices.Equal(v1.Inputs, []int{1}) || len(v1.Outputs) != 0 || v1.Parallelism != 3 {
		t.Fatalf("vertex 1 = %+v", v1)
	}
	if p.Slots() != 3 || p.VertexOf["sink"] != 1 {
		t.Fatalf("slots %d, sink in vertex %d", p.Slots(), p.VertexOf["sink"])
	}
}

func TestValidateErrors(t *testing.T) {
	tests := []struct {
		name  string
		g     *sluicev1.JobGraph
		error string
	}{
		{"empty", &sluicev1.JobGraph{MaxParallelism: 128}, "no operators"},
		{"duplicate uid", build([]op{{"a", 1}, {"a", 1}}, nil), `duplicate operator uid "a"`},
		{"dangling edge", build([]op{{"a", 1}}, []edge{{"a", "zz", fwd}}), "unknown target"},
		{"cycle", build([]op{{"a", 1}, {"b", 1}}, []edge{{"a", "b", fwd}, {"b", "a", fwd}}), "topological"},
		{"parallelism above max", build([]op{{"a", 129}}, nil), "exceeds max parallelism"},
		{"forward unequal", build([]op{{"a", 1}, {"b", 2}}, []edge{{"a", "b", fwd}}), "equal parallelism"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(tt.g)
			if err == nil || !strings.Contains(err.Error(), tt.error) {
				t.Fatalf("Validate = %v, want error containing %q", err, tt.error)
			}
		})
	}
}

func TestChannels(t *testing.T) {
	f := &sluicev1.Edge{Partitioner: fwd}
	k := &sluicev1.Edge{Partitioner: kg}
	if got := ProducerChannels(f, 1, 3); !slices.Equal(got, []int{1}) {
		t.Errorf("forward producer channels %v", got)
	}
	if got := ProducerChannels(k, 1, 3); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("key-group producer channels %v", got)
	}
	if got := ConsumerChannels(k, 2, 2); !slices.Equal(got, []int{0, 1}) {
		t.Errorf("key-group consumer channels %v", got)
	}
}

func TestDiff(t *testing.T) {
	a := build([]op{{"a", 1}, {"b", 1}}, []edge{{"a", "b", fwd}})
	b := build([]op{{"a", 1}, {"b", 1}}, []edge{{"a", "b", fwd}})
	if d := Diff(a, b); d != "" {
		t.Fatalf("equal graphs differ: %s", d)
	}
	b.Operators[1].Kind = "other"
	if d := Diff(a, b); !strings.Contains(d, `"b"`) {
		t.Fatalf("Diff = %q, want it to name operator b", d)
	}
	c := build([]op{{"a", 1}}, nil)
	if d := Diff(a, c); !strings.Contains(d, "lacks operator") {
		t.Fatalf("Diff = %q", d)
	}
}
