package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/sluice-stream/sluice/pkg/exchange"
	"github.com/sluice-stream/sluice/pkg/graph"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// failure holds the first error raised inside a chain; emitters record it and the
// chain returns it after the current record.
type failure struct{ err error }

func (f *failure) fail(err error) {
	if f.err == nil {
		f.err = err
	}
}

// counters are plain counters owned by the task goroutine; the task publishes them.
type counters struct {
	source, sink, out int64
}

// output is one output edge of a chain's tail.
type output struct {
	edge      *sluicev1.Edge
	ref       inEdge
	partition *exchange.Partition
	subtask   int
	consumerP int
	maxP      int
}

// writer serializes records onto the chain's output partitions.
type writer[T any] struct {
	codec   Codec[T]
	outs    []writerOut[T]
	ft      *failure
	m       *counters
	scratch []byte
}

type writerOut[T any] struct {
	part      *exchange.Partition
	kind      sluicev1.Partitioner
	keyBytes  func(T, []byte) []byte
	next      int // rebalance position
	consumerP int
	maxP      int
	keyBuf    []byte
}

func newWriter[T any](codec Codec[T], outs []output, ft *failure, m *counters) *writer[T] {
	w := &writer[T]{codec: codec, ft: ft, m: m}
	for _, o := range outs {
		wo := writerOut[T]{part: o.partition, kind: o.edge.GetPartitioner(), consumerP: o.consumerP, maxP: o.maxP,
			next: o.subtask % max(1, o.partition.NumChannels())}
		if o.ref.keyBytes != nil {
			wo.keyBytes = o.ref.keyBytes.(func(T, []byte) []byte)
		}
		w.outs = append(w.outs, wo)
	}
	return w
}

func (w *writer[T]) Emit(v T) {
	w.scratch = w.codec.Append(w.scratch[:0], v)
	w.m.out++
	for i := range w.outs {
		o := &w.outs[i]
		var err error
		switch o.kind {
		case sluicev1.Partitioner_PARTITIONER_FORWARD:
			err = o.part.Emit(0, w.scratch)
		case sluicev1.Partitioner_PARTITIONER_REBALANCE:
			err = o.part.Emit(o.next, w.scratch)
			if o.next++; o.next == o.part.NumChannels() {
				o.next = 0
			}
		case sluicev1.Partitioner_PARTITIONER_KEY_GROUP:
			o.keyBuf = o.keyBytes(v, o.keyBuf[:0])
			kg := keygroup.Of(o.keyBuf, o.maxP)
			err = o.part.Emit(keygroup.OperatorIndex(kg, o.consumerP, o.maxP), w.scratch)
		case sluicev1.Partitioner_PARTITIONER_BROADCAST:
			err = o.part.Broadcast(w.scratch)
		}
		if err != nil {
			w.ft.fail(err)
		}
	}
}

// ChainSpec is what a task manager knows of one subtask when it builds its chain.
type ChainSpec struct {
	Vertex  graph.Vertex
	Subtask int
	Attempt int64
	// Outputs are the partitions of Vertex.Outputs, in the same order.
	Outputs []*exchange.Partition
	// ConsumerParallelism of each output edge.
	ConsumerParallelism []int
	Log                 *slog.Logger
}

// Chain is one subtask's instance of an operator chain; it implements runtime.Chain.
type Chain struct {
	prog     *Program
	spec     ChainSpec
	insts    []instance
	uids     []string
	source   poller
	decoders []func([]byte) error // per logical input
	ft       failure
	m        counters
	opened   int
}

// NewChain instantiates the operators of spec.Vertex for one subtask.
func (p *Program) NewChain(spec ChainSpec) (*Chain, error) {
	v := spec.Vertex
	if len(spec.Outputs) != len(v.Outputs) || len(spec.ConsumerParallelism) != len(v.Outputs) {
		return nil, fmt.Errorf("vertex %q has %d outputs, got %d partitions", v.Name, len(v.Outputs), len(spec.Outputs))
	}
	c := &Chain{prog: p, spec: spec, uids: v.Operators}
	tail := p.byUID[v.Operators[len(v.Operators)-1]]
	var next any
	if len(v.Outputs) > 0 {
		outs := make([]output, len(v.Outputs))
		for i, ei := range v.Outputs {
			outs[i] = output{edge: p.Graph.Edges[ei], ref: p.edges[ei], partition: spec.Outputs[i],
				subtask: spec.Subtask, consumerP: spec.ConsumerParallelism[i], maxP: p.Plan.MaxParallelism}
		}
		next = tail.writer(outs, &c.ft, &c.m)
	}
	c.insts = make([]instance, len(v.Operators))
	for i := len(v.Operators) - 1; i >= 0; i-- {
		n := p.byUID[v.Operators[i]]
		if n == nil {
			return nil, fmt.Errorf("operator %q is not in this program", v.Operators[i])
		}
		in, inst := n.instantiate(&c.ft, &c.m, next)
		c.insts[i] = inst
		next = in
		if i == 0 {
			if src, ok := inst.(poller); ok {
				c.source = src
			}
		}
	}
	head := p.byUID[v.Operators[0]]
	for _, ei := range v.Inputs {
		from := p.edges[ei].from
		if from == nil {
			return nil, errors.New("input edge without a producer")
		}
		c.decoders = append(c.decoders, from.decoder(next, &c.ft))
	}
	if c.source == nil && len(c.decoders) == 0 {
		return nil, fmt.Errorf("operator %q has no input", head.uid)
	}
	return c, nil
}

// Open opens the operators tail first, so every operator's downstream is ready.
func (c *Chain) Open(ctx context.Context) error {
	for i := len(c.insts) - 1; i >= 0; i-- {
		v := c.spec.Vertex
		rc := &RuntimeContext{
			JobName: c.prog.env.name, OperatorUID: c.uids[i], Subtask: c.spec.Subtask,
			Parallelism: v.Parallelism, MaxParallelism: c.prog.Plan.MaxParallelism, Attempt: c.spec.Attempt,
			KeyGroups: keygroup.RangeFor(c.spec.Subtask, v.Parallelism, c.prog.Plan.MaxParallelism),
			Log:       c.spec.Log.With("operator", c.uids[i], "subtask", c.spec.Subtask),
		}
		if err := c.insts[i].open(ctx, rc); err != nil {
			return fmt.Errorf("operator %s: %w", c.uids[i], err)
		}
		c.opened++
	}
	return nil
}

// PollSource runs one batch of the head source.
func (c *Chain) PollSource() (bool, time.Duration, error) {
	r, err := c.source.poll()
	if err == nil {
		err = c.ft.err
	}
	return r.Done, r.Wait, err
}

// ProcessRecord decodes and processes one record of logical input `input`.
func (c *Chain) ProcessRecord(input int, rec []byte) error {
	return c.decoders[input](rec)
}

// EndInput finishes the operators head first, so what one flushes reaches the next.
func (c *Chain) EndInput() error {
	for i, inst := range c.insts {
		if err := inst.endInput(); err != nil {
			return fmt.Errorf("operator %s: %w", c.uids[i], err)
		}
		if c.ft.err != nil {
			return c.ft.err
		}
	}
	return nil
}

// Close closes the opened operators.
func (c *Chain) Close() error {
	var errs []error
	for i := len(c.insts) - c.opened; i < len(c.insts); i++ {
		if err := c.insts[i].close(); err != nil {
			errs = append(errs, fmt.Errorf("operator %s: %w", c.uids[i], err))
		}
	}
	c.opened = 0
	return errors.Join(errs...)
}

// Counters returns the records emitted by the source, consumed by sinks and written
// to outputs so far.
func (c *Chain) Counters() (source, sink, out int64) { return c.m.source, c.m.sink, c.m.out }

// IsSource reports whether the chain starts with a source.
func (c *Chain) IsSource() bool { return c.source != nil }
