// Package jobs registers the example Go jobs compiled into every Sluice binary.
//
//	keyed-count     a keyed running count over a replayable sequence: (key, seq, count)
//	exchange-bench  100-byte records through a rebalance exchange into a blackhole
package jobs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/connectors/builtin"
	"github.com/sluice-stream/sluice/pkg/connectors/file"
	"github.com/sluice-stream/sluice/pkg/connectors/twophase"
)

func init() {
	api.Register("keyed-count", "keyed running count over a replayable sequence; args: keys, per-key, rate, out (directory, or 'print'), source-parallelism, guarantee (exactly-once, at-least-once, none)", keyedCount)
	api.Register("exchange-bench", "100-byte records through a rebalance exchange into a blackhole; args: records, record-size", exchangeBench)
}

// Event is one record of the sequence: the Seq-th record of key Key.
type Event struct {
	Key   int64
	Seq   int64
	Count int64
}

// eventCodec encodes an Event as three big-endian int64s.
type eventCodec struct{}

func (eventCodec) Append(dst []byte, e Event) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Key))
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Seq))
	return binary.BigEndian.AppendUint64(dst, uint64(e.Count))
}

func (eventCodec) Decode(b []byte) (Event, error) {
	if len(b) != 24 {
		return Event{}, errors.New("event: want 24 bytes")
	}
	return Event{
		Key: int64(binary.BigEndian.Uint64(b)), Seq: int64(binary.BigEndian.Uint64(b[8:])),
		Count: int64(binary.BigEndian.Uint64(b[16:])),
	}, nil
}

// counter keeps a running count per key in keyed state and emits it with each record.
type counter struct {
	api.KeyedBase
	count *api.ValueState[int64]
}

func (c *counter) Open(_ context.Context, kc *api.KeyedContext) error {
	c.count = api.NewValueState(kc, "count", api.Int64Codec{})
	return nil
}

func (c *counter) Process(_ *api.KeyedContext, _ int64, e Event, out api.Emitter[Event]) error {
	n, _, err := c.count.Value()
	if err != nil {
		return err
	}
	n++
	if err := c.count.Update(n); err != nil {
		return err
	}
	e.Count = n
	out.Emit(e)
	return nil
}

func keyedCount(env *api.Env, args *api.Args) error {
	keys := args.Int("keys", 1000)
	perKey := args.Int("per-key", 1000)
	rate := args.Int("rate", 0)
	out := args.String("out", "print")
	srcP := args.Int("source-parallelism", 0)
	if keys < 1 || perKey < 0 || rate < 0 {
		return fmt.Errorf("keys must be >= 1, per-key and rate >= 0")
	}
	src := api.FromSource(env, func() api.Source[Event] {
		return &builtin.Sequence[Event]{Keys: keys, PerKey: int64(perKey), Rate: float64(rate),
			Make: func(k int, seq int64) Event { return Event{Key: int64(k), Seq: seq} }}
	}).UID("sequence").Name("sequence").WithCodec(eventCodec{})
	if srcP > 0 {
		src = src.Parallelism(srcP)
	}
	counted := api.ProcessKeyed(api.KeyBy(src, func(e Event) int64 { return e.Key }),
		func() api.KeyedProcessFunction[int64, Event, Event] { return &counter{} }).
		UID("count").Name("count").WithCodec(eventCodec{})
	format := func(dst []byte, e Event) []byte {
		dst = append(dst, "key-"...)
		dst = strconv.AppendInt(dst, e.Key, 10)
		dst = append(dst, ',')
		dst = strconv.AppendInt(dst, e.Seq, 10)
		dst = append(dst, ',')
		return strconv.AppendInt(dst, e.Count, 10)
	}
	if out == "print" {
		api.SinkTo(counted, func() api.Sink[Event] {
			return &builtin.Print[Event]{Format: func(e Event) string { return string(format(nil, e)) }}
		}).UID("print").Name("print")
		return nil
	}
	guarantee, err := twophase.ParseGuarantee(args.String("guarantee", string(twophase.ExactlyOnce)))
	if err != nil {
		return err
	}
	api.SinkTo(counted, func() api.Sink[Event] {
		return &file.TransactionalSink[Event]{Dir: out, Format: format, Guarantee: guarantee}
	}).UID("file-sink").Name("file-sink")
	return nil
}

func exchangeBench(env *api.Env, args *api.Args) error {
	records := args.Int("records", 10_000_000)
	size := args.Int("record-size", 100)
	payload := make([]byte, size)
	src := api.FromSource(env, func() api.Source[[]byte] {
		return &builtin.Sequence[[]byte]{Keys: 1, PerKey: int64(records), Make: func(int, int64) []byte { return payload }}
	}).UID("records").Name("records")
	api.SinkTo(src.Rebalance(), func() api.Sink[[]byte] { return builtin.Blackhole[[]byte]{} }).UID("blackhole").Name("blackhole")
	return nil
}
