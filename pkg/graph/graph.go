// Package graph turns a JobGraph into its execution plan: operator chains (job vertices)
// and the physical channels between their subtasks. It is pure: no I/O, no clocks.
package graph

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Vertex is an operator chain: forward-connected operators of equal parallelism that
// run in one task, one subtask per parallel instance.
type Vertex struct {
	Index int
	// Operators are the chained operator UIDs, head first.
	Operators []string
	// Name is the chain's display name, e.g. "numbers -> doubled".
	Name        string
	Parallelism int
	// Inputs are indices of JobGraph.Edges whose target is the chain's head.
	Inputs []int
	// Outputs are indices of JobGraph.Edges whose source is the chain's tail.
	Outputs []int
}

// IsSource reports whether the chain reads no other subtask.
func (v Vertex) IsSource() bool { return len(v.Inputs) == 0 }

// Plan is the validated, chained form of a JobGraph.
type Plan struct {
	Graph          *sluicev1.JobGraph
	MaxParallelism int
	Vertices       []Vertex
	// VertexOf maps an operator UID to the index of its vertex.
	VertexOf map[string]int
	ops      map[string]*sluicev1.Operator
}

// Operator returns the operator with uid.
func (p *Plan) Operator(uid string) *sluicev1.Operator { return p.ops[uid] }

// Slots is the number of slots the job needs with slot sharing: one slot holds one
// subtask of each vertex, so the highest parallelism decides.
func (p *Plan) Slots() int {
	n := 0
	for _, v := range p.Vertices {
		n = max(n, v.Parallelism)
	}
	return n
}

// Build validates g and computes its chains.
func Build(g *sluicev1.JobGraph) (*Plan, error) {
	if err := Validate(g); err != nil {
		return nil, err
	}
	p := &Plan{Graph: g, MaxParallelism: int(g.GetMaxParallelism()), VertexOf: map[string]int{}, ops: map[string]*sluicev1.Operator{}}
	outdeg := map[string]int{}
	indeg := map[string]int{}
	for _, op := range g.GetOperators() {
		p.ops[op.GetUid()] = op
	}
	for _, e := range g.GetEdges() {
		outdeg[e.GetSourceUid()]++
		indeg[e.GetTargetUid()]++
	}
	chained := make([]bool, len(g.GetEdges())) // edge is inside a chain
	next := map[string]string{}                // chained successor
	hasPrev := map[string]bool{}
	for i, e := range g.GetEdges() {
		src, dst := p.ops[e.GetSourceUid()], p.ops[e.GetTargetUid()]
		if e.GetPartitioner() == sluicev1.Partitioner_PARTITIONER_FORWARD &&
			src.GetParallelism() == dst.GetParallelism() &&
			outdeg[src.GetUid()] == 1 && indeg[dst.GetUid()] == 1 {
			chained[i] = true
			next[src.GetUid()] = dst.GetUid()
			hasPrev[dst.GetUid()] = true
		}
	}
	// Operators are in topological order, so heads come in a deterministic order.
	for _, op := range g.GetOperators() {
		if hasPrev[op.GetUid()] {
			continue
		}
		v := Vertex{Index: len(p.Vertices), Parallelism: int(op.GetParallelism())}
		names := []string{}
		for uid := op.GetUid(); uid != ""; uid = next[uid] {
			v.Operators = append(v.Operators, uid)
			names = append(names, displayName(p.ops[uid]))
			p.VertexOf[uid] = v.Index
		}
		v.Name = strings.Join(names, " -> ")
		head, tail := v.Operators[0], v.Operators[len(v.Operators)-1]
		for i, e := range g.GetEdges() {
			if chained[i] {
				continue
			}
			if e.GetTargetUid() == head {
				v.Inputs = append(v.Inputs, i)
			}
			if e.GetSourceUid() == tail {
				v.Outputs = append(v.Outputs, i)
			}
		}
		p.Vertices = append(p.Vertices, v)
	}
	return p, nil
}

func displayName(op *sluicev1.Operator) string {
	if op.GetName() != "" {
		return op.GetName()
	}
	return op.GetUid()
}

// Validate checks a JobGraph: unique UIDs, known edge ends, operators in topological
// order (hence no cycle), parallelism within max parallelism, forward edges between equal
// parallelism, and middle operators with a single output.
func Validate(g *sluicev1.JobGraph) error {
	if g == nil || len(g.GetOperators()) == 0 {
		return errors.New("job graph has no operators")
	}
	maxP := int(g.GetMaxParallelism())
	if maxP < 1 || maxP > keygroup.UpperBound {
		return fmt.Errorf("max parallelism %d is out of range [1, %d]", maxP, keygroup.UpperBound)
	}
	pos := map[string]int{}
	for i, op := range g.GetOperators() {
		uid := op.GetUid()
		if uid == "" {
			return fmt.Errorf("operator %d has no uid", i)
		}
		if _, dup := pos[uid]; dup {
			return fmt.Errorf("duplicate operator uid %q", uid)
		}
		pos[uid] = i
		if err := keygroup.Validate(int(op.GetParallelism()), maxP); err != nil {
			return fmt.Errorf("operator %q: %w", uid, err)
		}
	}
	for _, e := range g.GetEdges() {
		s, okS := pos[e.GetSourceUid()]
		t, okT := pos[e.GetTargetUid()]
		switch {
		case !okS:
			return fmt.Errorf("edge %s -> %s: unknown source operator", e.GetSourceUid(), e.GetTargetUid())
		case !okT:
			return fmt.Errorf("edge %s -> %s: unknown target operator", e.GetSourceUid(), e.GetTargetUid())
		case s >= t:
			return fmt.Errorf("edge %s -> %s: operators are not in topological order (cycle?)", e.GetSourceUid(), e.GetTargetUid())
		}
		src, dst := g.GetOperators()[s], g.GetOperators()[t]
		switch e.GetPartitioner() {
		case sluicev1.Partitioner_PARTITIONER_FORWARD:
			if src.GetParallelism() != dst.GetParallelism() {
				return fmt.Errorf("edge %s -> %s: forward partitioning needs equal parallelism (%d != %d)",
					src.GetUid(), dst.GetUid(), src.GetParallelism(), dst.GetParallelism())
			}
		case sluicev1.Partitioner_PARTITIONER_REBALANCE, sluicev1.Partitioner_PARTITIONER_KEY_GROUP,
			sluicev1.Partitioner_PARTITIONER_BROADCAST:
		default:
			return fmt.Errorf("edge %s -> %s: unknown partitioner %v", src.GetUid(), dst.GetUid(), e.GetPartitioner())
		}
	}
	return nil
}

// Fingerprint is a canonical description of the operators and edges of g, compared by
// task managers with the graph they rebuild from the program.
func Fingerprint(g *sluicev1.JobGraph) string {
	var b strings.Builder
	fmt.Fprintf(&b, "maxp=%d;", g.GetMaxParallelism())
	for _, op := range g.GetOperators() {
		fmt.Fprintf(&b, "op(%s,%s,%d,%s,%s);", op.GetUid(), op.GetKind(), op.GetParallelism(), op.GetInType(), op.GetOutType())
	}
	for _, e := range g.GetEdges() {
		fmt.Fprintf(&b, "edge(%s,%s,%v);", e.GetSourceUid(), e.GetTargetUid(), e.GetPartitioner())
	}
	return b.String()
}

// Diff explains the first difference between two graphs' operators and edges, or ""
// when they are the same.
func Diff(want, got *sluicev1.JobGraph) string {
	if Fingerprint(want) == Fingerprint(got) {
		return ""
	}
	wo, gotOps := want.GetOperators(), got.GetOperators()
	for i := range max(len(wo), len(gotOps)) {
		switch {
		case i >= len(wo):
			return fmt.Sprintf("this build has an extra operator %q", gotOps[i].GetUid())
		case i >= len(gotOps):
			return fmt.Sprintf("this build lacks operator %q", wo[i].GetUid())
		}
		w, g := wo[i], gotOps[i]
		if w.GetUid() != g.GetUid() || w.GetKind() != g.GetKind() || w.GetInType() != g.GetInType() || w.GetOutType() != g.GetOutType() || w.GetParallelism() != g.GetParallelism() {
			return fmt.Sprintf("operator %d is %s %q (%s -> %s, p=%d) in the job but %s %q (%s -> %s, p=%d) in this build",
				i, w.GetKind(), w.GetUid(), w.GetInType(), w.GetOutType(), w.GetParallelism(),
				g.GetKind(), g.GetUid(), g.GetInType(), g.GetOutType(), g.GetParallelism())
		}
	}
	if want.GetMaxParallelism() != got.GetMaxParallelism() {
		return fmt.Sprintf("max parallelism is %d in the job but %d in this build", want.GetMaxParallelism(), got.GetMaxParallelism())
	}
	return "the edges differ"
}

// ProducerChannels returns, for an edge, the consumer subtasks that producer subtask i
// writes to, in channel order.
func ProducerChannels(e *sluicev1.Edge, i, consumerParallelism int) []int {
	if e.GetPartitioner() == sluicev1.Partitioner_PARTITIONER_FORWARD {
		return []int{i}
	}
	out := make([]int, consumerParallelism)
	for j := range out {
		out[j] = j
	}
	return out
}

// ConsumerChannels returns, for an edge, the producer subtasks that consumer subtask j
// reads from, in channel order.
func ConsumerChannels(e *sluicev1.Edge, j, producerParallelism int) []int {
	if e.GetPartitioner() == sluicev1.Partitioner_PARTITIONER_FORWARD {
		return []int{j}
	}
	out := make([]int, producerParallelism)
	for i := range out {
		out[i] = i
	}
	return out
}

// SortedUIDs lists the operator UIDs of g, sorted (for messages).
func SortedUIDs(g *sluicev1.JobGraph) []string {
	var uids []string
	for _, op := range g.GetOperators() {
		uids = append(uids, op.GetUid())
	}
	slices.Sort(uids)
	return uids
}
