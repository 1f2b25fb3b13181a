package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/sluice-stream/sluice/pkg/graph"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Env collects the operators of one job as the job's build function creates them.
type Env struct {
	name           string
	parallelism    int
	maxParallelism int
	nodes          []*node
	errs           []error
	log            *slog.Logger

	autoWatermark    time.Duration
	autoWatermarkSet bool
}

// NewEnv returns an empty environment with default parallelism 1.
func NewEnv(name string, log *slog.Logger) *Env {
	if log == nil {
		log = slog.Default()
	}
	return &Env{name: name, parallelism: 1, log: log}
}

// Name is the job's name.
func (e *Env) Name() string { return e.name }

// SetParallelism sets the default parallelism of operators that set none.
func (e *Env) SetParallelism(p int) { e.parallelism = p }

// Parallelism is the default parallelism.
func (e *Env) Parallelism() int { return e.parallelism }

// SetMaxParallelism fixes the number of key groups (default: derived from parallelism).
func (e *Env) SetMaxParallelism(p int) { e.maxParallelism = p }

// SetAutoWatermarkInterval sets how often the watermark strategies of the job's sources
// and timestamp assigners emit periodic watermarks, in every process that runs them; 0
// turns periodic watermarks off (generators then emit only on events, and the sources'
// final watermark still ends event time). Without it, the job runs with
// pipeline.auto-watermark-interval of the cluster, else DefaultAutoWatermarkInterval.
func (e *Env) SetAutoWatermarkInterval(d time.Duration) {
	if d < 0 {
		e.fail(fmt.Errorf("auto-watermark interval %v is negative", d))
		return
	}
	e.autoWatermark, e.autoWatermarkSet = d, true
}

func (e *Env) fail(err error) { e.errs = append(e.errs, err) }

// instance is one subtask's operator.
type instance interface {
	open(ctx context.Context, rc *RuntimeContext) error
	endInput() error
	close() error
	// user is the user's function, source or sink (nil for built-in glue), checked for
	// Checkpointed and CheckpointListener.
	user() any
}

// poller is implemented by source instances.
type poller interface {
	poll() (PollResult, error)
}

// node is an operator in the pipeline. Its typed parts are closures made where the
// types are known, so the untyped chain builder can wire instances together.
type node struct {
	env     *Env
	index   int
	uid     string
	name    string
	kind    string
	par     int
	inType  string
	outType string
	inputs  []inEdge
	outs    int  // edges leaving this node
	keyed   bool // has keyed state (reads a keyed stream)
	codec   any  // Codec[OUT]
	slowOut bool

	// instantiate creates the subtask's operator feeding next (an Emitter[OUT]; nil for
	// sinks) and returns the operator's input (an Emitter[IN]; nil for sources).
	instantiate func(cs *chainState, next any) (in any, inst instance)
	// decoder returns a function decoding this node's output records into em (an
	// Emitter[OUT] of a consumer's head).
	decoder func(em any, cs *chainState) func([]byte) error
	// writer returns an Emitter[OUT] serializing to the given outputs.
	writer func(outs []output, cs *chainState) any
}

type inEdge struct {
	from        *node
	partitioner sluicev1.Partitioner // UNSPECIFIED: forward when parallelism matches, else rebalance
	keyBytes    any                  // func(OUT, []byte) []byte for key-group edges
}

func (n *node) parallelism() int {
	if n.par > 0 {
		return n.par
	}
	return n.env.parallelism
}

var uidPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

func (e *Env) add(kind, inType, outType string, inputs ...inEdge) *node {
	n := &node{env: e, index: len(e.nodes), kind: kind, inType: inType, outType: outType, inputs: inputs}
	n.uid = fmt.Sprintf("%s-%d", kind, n.index)
	for _, in := range inputs {
		in.from.outs++
	}
	e.nodes = append(e.nodes, n)
	return n
}

// Stream is a typed stream of records produced by one operator.
type Stream[T any] struct {
	n           *node
	partitioner sluicev1.Partitioner
	keyBytes    any
}

func newStream[T any](n *node) Stream[T] {
	c, slow := CodecFor[T]()
	n.codec, n.slowOut = c, slow
	n.decoder = func(em any, cs *chainState) func([]byte) error {
		e := em.(Emitter[T])
		codec := n.codec.(Codec[T])
		return func(b []byte) error {
			ts, body, err := splitRecord(b)
			if err != nil {
				return fmt.Errorf("decode record of %s: %w", n.uid, err)
			}
			v, err := codec.Decode(body)
			if err != nil {
				return fmt.Errorf("decode record of %s: %w", n.uid, err)
			}
			cs.ts = ts
			e.Emit(v)
			return cs.ft.err
		}
	}
	n.writer = func(outs []output, cs *chainState) any {
		return newWriter[T](n.codec.(Codec[T]), outs, cs)
	}
	return Stream[T]{n: n}
}

// UID sets the operator's stable identity; state and restores match on it. Without one,
// a UID is derived from the operator's kind and position.
func (s Stream[T]) UID(uid string) Stream[T] {
	if !uidPattern.MatchString(uid) {
		s.n.env.fail(fmt.Errorf("operator uid %q: use letters, digits, '.', '_' and '-'", uid))
	}
	s.n.uid = uid
	return s
}

// Name sets the operator's display name.
func (s Stream[T]) Name(name string) Stream[T] { s.n.name = name; return s }

// Parallelism sets the operator's parallelism.
func (s Stream[T]) Parallelism(p int) Stream[T] { s.n.par = p; return s }

// WithCodec replaces the codec of the stream's records.
func (s Stream[T]) WithCodec(c Codec[T]) Stream[T] { s.n.codec, s.n.slowOut = c, false; return s }

// Rebalance makes the next operator read this stream round-robin.
func (s Stream[T]) Rebalance() Stream[T] {
	s.partitioner = sluicev1.Partitioner_PARTITIONER_REBALANCE
	return s
}

// Broadcast sends every record to every subtask of the next operator.
func (s Stream[T]) Broadcast() Stream[T] {
	s.partitioner = sluicev1.Partitioner_PARTITIONER_BROADCAST
	return s
}

// Forward connects subtask i to subtask i of the next operator (equal parallelism).
func (s Stream[T]) Forward() Stream[T] {
	s.partitioner = sluicev1.Partitioner_PARTITIONER_FORWARD
	return s
}

func (s Stream[T]) edge() inEdge {
	return inEdge{from: s.n, partitioner: s.partitioner, keyBytes: s.keyBytes}
}

// KeyedStream is a stream partitioned by key: every record of a key goes to the subtask
// owning the key's key group.
type KeyedStream[K, T any] struct {
	s     Stream[T]
	keyFn func(T) K
	codec Codec[K]
}

// KeyBy partitions s by keyFn. The key's serialized bytes (by CodecFor[K]) are hashed
// with murmur3 into a key group.
func KeyBy[T, K any](s Stream[T], keyFn func(T) K) KeyedStream[K, T] {
	kc, slow := CodecFor[K]()
	if slow {
		s.n.env.log.Warn("key type has no fast codec; keys are serialized as JSON", "type", typeName[K]())
	}
	ks := KeyedStream[K, T]{s: s, keyFn: keyFn, codec: kc}
	ks.s.partitioner = sluicev1.Partitioner_PARTITIONER_KEY_GROUP
	ks.s.keyBytes = func(v T, dst []byte) []byte { return kc.Append(dst, keyFn(v)) }
	return ks
}

// Program is a compiled job: its JobGraph and the typed operators behind it.
type Program struct {
	Graph *sluicev1.JobGraph
	Plan  *graph.Plan
	env   *Env
	byUID map[string]*node
	edges []inEdge // parallel to Graph.Edges
}

// Compile checks the pipeline and returns its program. Operators must have unique UIDs.
func (e *Env) Compile() (*Program, error) {
	if len(e.errs) > 0 {
		return nil, errors.Join(e.errs...)
	}
	if len(e.nodes) == 0 {
		return nil, errors.New("job defines no operators")
	}
	g := &sluicev1.JobGraph{Name: e.name}
	maxP := e.maxParallelism
	highest := 0
	byUID := map[string]*node{}
	for _, n := range e.nodes {
		if prev, dup := byUID[n.uid]; dup {
			return nil, fmt.Errorf("operators %d and %d both have uid %q", prev.index, n.index, n.uid)
		}
		byUID[n.uid] = n
		highest = max(highest, n.parallelism())
		g.Operators = append(g.Operators, &sluicev1.Operator{
			Uid: n.uid, Name: n.name, Kind: n.kind, Parallelism: int32(n.parallelism()),
			InType: n.inType, OutType: n.outType,
		})
	}
	if maxP <= 0 {
		maxP = keygroup.DefaultMaxParallelism(highest)
	}
	g.MaxParallelism = int32(maxP)
	var edges []inEdge
	for _, n := range e.nodes {
		for _, in := range n.inputs {
			p := in.partitioner
			if p == sluicev1.Partitioner_PARTITIONER_UNSPECIFIED {
				p = sluicev1.Partitioner_PARTITIONER_FORWARD
				if in.from.parallelism() != n.parallelism() {
					p = sluicev1.Partitioner_PARTITIONER_REBALANCE
				}
			}
			g.Edges = append(g.Edges, &sluicev1.Edge{SourceUid: in.from.uid, TargetUid: n.uid, Partitioner: p})
			edges = append(edges, in)
		}
	}
	plan, err := graph.Build(g)
	if err != nil {
		return nil, err
	}
	// Only records that leave their chain are serialized.
	warned := map[string]bool{}
	for _, v := range plan.Vertices {
		for _, ei := range v.Outputs {
			n := byUID[g.Edges[ei].GetSourceUid()]
			if n.slowOut && !warned[n.uid] {
				warned[n.uid] = true
				e.log.Warn("record type has no fast codec; records are serialized as JSON (slow): use WithCodec",
					"operator", n.uid, "type", n.outType)
			}
		}
	}
	return &Program{Graph: g, Plan: plan, env: e, byUID: byUID, edges: edges}, nil
}
