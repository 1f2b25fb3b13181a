package spec

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/connectors/builtin"
	"github.com/sluice-stream/sluice/pkg/connectors/file"
)

// RowCodec is the wire codec of spec records.
type RowCodec struct{}

// Append encodes r with AppendRow.
func (RowCodec) Append(dst []byte, r Row) []byte { return AppendRow(dst, r) }

// Decode decodes with DecodeRow.
func (RowCodec) Decode(src []byte) (Row, error) { return DecodeRow(src) }

// Compile parses and validates a spec and builds its program with the built-in
// operators. d.Parallelism > 0 replaces the spec's default parallelism (operators that
// set a parallelism different from the spec's default keep theirs); d.MaxParallelism
// applies when the spec sets none.
func Compile(filename string, data []byte, d api.Defaults, log *slog.Logger) (*api.Program, error) {
	parallelism := d.Parallelism
	job, err := Parse(filename, data)
	if err != nil {
		return nil, err
	}
	env := api.NewEnv(job.Name, log)
	env.SetParallelism(job.Parallelism)
	if job.MaxParallelism > 0 {
		env.SetMaxParallelism(job.MaxParallelism)
	} else if d.MaxParallelism > 0 {
		env.SetMaxParallelism(d.MaxParallelism)
	}
	streams := map[string]api.Stream[Row]{}
	for _, op := range job.Operators {
		p := op.Parallelism
		if parallelism > 0 && p == job.Parallelism {
			p = parallelism
		}
		if job.MaxParallelism > 0 && p > job.MaxParallelism {
			return nil, fmt.Errorf("%s:%d: operator %q: parallelism %d exceeds maxParallelism %d", filename, op.Line, op.UID, p, job.MaxParallelism)
		}
		in, keyed, err := inputOf(op, streams, p)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", filename, op.Line, err)
		}
		var out api.Stream[Row]
		var sink api.Stream[struct{}]
		switch op.Type {
		case TypeSequence:
			s := *op.Sequence
			out = api.FromSource(env, func() api.Source[Row] {
				return &builtin.Sequence[Row]{Keys: int(s.Keys), PerKey: s.PerKey, Rate: s.Rate,
					Make: func(k int, seq int64) Row { return Row{"key": SequenceKey(int64(k)), "seq": seq} }}
			})
		case TypeFile:
			fs := *op.File
			if len(op.Inputs) == 0 {
				out = api.FromSource(env, func() api.Source[Row] { return &file.Lines[Row]{Path: fs.Path, Make: FileRecord} })
				break
			}
			format := lineFormat(fs)
			sink = api.SinkTo(in, func() api.Sink[Row] { return &file.TransactionalSink[Row]{Dir: fs.Path, Format: format} })
		case TypeMap:
			e := op.Expr
			out = api.Process(in, func() api.ProcessFunction[Row, Row] { return &mapFn{e: e.Clone()} })
		case TypeFilter:
			e := op.Expr
			out = api.Process(in, func() api.ProcessFunction[Row, Row] { return &filterFn{e: e.Clone()} })
		case TypeAggregate:
			a := *op.Aggregate
			out = api.ProcessKeyed(keyed, func() api.KeyedProcessFunction[string, Row, Row] {
				return &aggregateFn{agg: a.NewAggregator()}
			})
		case TypePrint:
			sink = api.SinkTo(in, func() api.Sink[Row] {
				return &builtin.Print[Row]{Format: func(r Row) string { return string(AppendJSON(nil, r)) }}
			})
		case TypeBlackhole:
			sink = api.SinkTo(in, func() api.Sink[Row] { return builtin.Blackhole[Row]{} })
		default:
			return nil, fmt.Errorf("%s:%d: operator type %q has no implementation", filename, op.Line, op.Type)
		}
		if op.IsSink() {
			sink.UID(op.UID).Name(op.Name).Parallelism(p)
			continue
		}
		streams[op.UID] = out.UID(op.UID).Name(op.Name).Parallelism(p).WithCodec(RowCodec{})
	}
	return env.Compile()
}

// inputOf wires an operator's inputs: one input with its partitioning, several through a
// union; an aggregate's input keyed by its keyBy field.
func inputOf(op *Operator, streams map[string]api.Stream[Row], p int) (api.Stream[Row], api.KeyedStream[string, Row], error) {
	var in api.Stream[Row]
	var keyed api.KeyedStream[string, Row]
	if len(op.Inputs) == 0 {
		return in, keyed, nil
	}
	var ins []api.Stream[Row]
	for i, uid := range op.Inputs {
		s, ok := streams[uid]
		if !ok {
			return in, keyed, fmt.Errorf("operator %q reads %q, which is not defined before it", op.UID, uid)
		}
		if op.KeyBy == "" || len(op.Inputs) > 1 {
			switch op.InputPartitions[i] {
			case PartitionRebalance:
				s = s.Rebalance()
			case PartitionBroadcast:
				s = s.Broadcast()
			case PartitionForward:
				s = s.Forward()
			}
		}
		ins = append(ins, s)
	}
	in = ins[0]
	if len(ins) > 1 {
		in = api.Union(ins[0], ins[1:]...).UID(op.UID + ".union").Name(op.Name + " (union)").Parallelism(p).WithCodec(RowCodec{})
	}
	if op.KeyBy != "" {
		field := op.KeyBy
		keyed = api.KeyBy(in, func(r Row) string { return KeyString(r[field]) })
	}
	return in, keyed, nil
}

// lineFormat renders a record as one line of the sink's format.
func lineFormat(fs FileSpec) func([]byte, Row) []byte {
	fields := fs.Fields
	if fs.Format == FormatCSV {
		return func(dst []byte, r Row) []byte {
			for i, f := range fields {
				if i > 0 {
					dst = append(dst, ',')
				}
				dst = appendCSV(dst, r[f])
			}
			return dst
		}
	}
	return func(dst []byte, r Row) []byte {
		if len(fields) == 0 {
			return AppendJSON(dst, r)
		}
		sub := make(Row, len(fields))
		for _, f := range fields {
			if v, ok := r[f]; ok {
				sub[f] = v
			}
		}
		return AppendJSON(dst, sub)
	}
}

// appendCSV renders one CSV cell, quoted when it holds a comma, quote or line break.
func appendCSV(dst []byte, v any) []byte {
	if v == nil {
		return dst
	}
	s, ok := v.(string)
	if !ok {
		return AppendKey(dst, v)
	}
	if !strings.ContainsAny(s, ",\"\n\r") {
		return append(dst, s...)
	}
	return append(dst, `"`+strings.ReplaceAll(s, `"`, `""`)+`"`...)
}

type mapFn struct {
	api.ProcessBase[Row]
	e *Expr
}

func (f *mapFn) Process(r Row, out api.Emitter[Row]) error {
	o, err := f.e.EvalMap(r)
	if err != nil {
		return err
	}
	out.Emit(o)
	return nil
}

type filterFn struct {
	api.ProcessBase[Row]
	e *Expr
}

func (f *filterFn) Process(r Row, out api.Emitter[Row]) error {
	keep, err := f.e.EvalBool(r)
	if err != nil {
		return err
	}
	if keep {
		out.Emit(r)
	}
	return nil
}

// AccCodec stores aggregate accumulators in keyed state.
type AccCodec struct{}

// Append encodes a with AppendAcc.
func (AccCodec) Append(dst []byte, a Acc) []byte { return AppendAcc(dst, a) }

// Decode decodes with DecodeAcc.
func (AccCodec) Decode(src []byte) (Acc, error) { return DecodeAcc(src) }

type aggregateFn struct {
	api.KeyedBase
	agg *Aggregator
	acc *api.ValueState[Acc]
}

func (f *aggregateFn) Open(_ context.Context, kc *api.KeyedContext) error {
	f.acc = api.NewValueState[Acc](kc, "aggregate", AccCodec{})
	return nil
}

func (f *aggregateFn) Process(_ *api.KeyedContext, _ string, r Row, out api.Emitter[Row]) error {
	acc, _, err := f.acc.Value()
	if err != nil {
		return err
	}
	acc, o, err := f.agg.Update(acc, r)
	if err != nil {
		return err
	}
	if err := f.acc.Update(acc); err != nil {
		return err
	}
	out.Emit(o)
	return nil
}
