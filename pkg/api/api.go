// Package api is the typed DataStream API for Go jobs. A job is a function that builds
// a pipeline on an Env; it is registered by name and compiled into the binaries, and
// every process (the CLI, task managers) runs the same function to get the same graph.
// Closures are never serialized: task managers match operators by UID.
package api

import (
	"context"
	"log/slog"
	"time"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
)

// Emitter receives an operator's output records. Emit never fails from the caller's
// point of view: a downstream failure is recorded and ends the task after the current
// record; emitting more in the meantime is harmless.
type Emitter[T any] interface {
	Emit(v T)
}

// EmitterFunc adapts a function to Emitter.
type EmitterFunc[T any] func(T)

// Emit calls f(v).
func (f EmitterFunc[T]) Emit(v T) { f(v) }

// RuntimeContext tells a function which subtask it runs in.
type RuntimeContext struct {
	JobName        string
	OperatorUID    string
	Subtask        int
	Parallelism    int
	MaxParallelism int
	Attempt        int64
	// KeyGroups is the range of key groups this subtask owns (for keyed operators).
	KeyGroups keygroup.Range
	Log       *slog.Logger
	// RestoredCheckpoint is the checkpoint the subtask's state came from, 0 if none.
	RestoredCheckpoint int64

	operatorState *state.OperatorStateBackend
	keyed         state.KeyedBackend // keyed operators only
	cs            *chainState
	watermark     int64
}

// PollResult is what a source's Poll reports.
type PollResult struct {
	// Done ends the source's input: the subtask finishes once downstream drained.
	Done bool
	// Wait > 0 says nothing is available for about that long.
	Wait time.Duration
}

// More says the source may have more records now.
var More = PollResult{}

// End says the source has no more records.
var End = PollResult{Done: true}

// Idle says the source has nothing for d (rate limits, empty partitions).
func Idle(d time.Duration) PollResult { return PollResult{Wait: d} }

// Source produces the records of one subtask. Poll is called in a loop on the task
// goroutine and must return after a bounded batch (a few thousand records at most) so
// that control messages and buffer flushes are not delayed.
type Source[T any] interface {
	Open(ctx context.Context, rc *RuntimeContext) error
	Poll(out Emitter[T]) (PollResult, error)
	Close() error
}

// Sink consumes the records of one subtask. Finish is called once at the end of input,
// before Close; Close is called after failures too.
type Sink[T any] interface {
	Open(ctx context.Context, rc *RuntimeContext) error
	Write(v T) error
	Finish() error
	Close() error
}

// ProcessFunction is the general one-input operator.
type ProcessFunction[IN, OUT any] interface {
	Open(ctx context.Context, rc *RuntimeContext) error
	Process(in IN, out Emitter[OUT]) error
	// Finish is called at the end of input and may emit buffered records.
	Finish(out Emitter[OUT]) error
	Close() error
}

// KeyedProcessFunction processes a keyed stream; kc gives the current key's state.
type KeyedProcessFunction[K, IN, OUT any] interface {
	Open(ctx context.Context, kc *KeyedContext) error
	Process(kc *KeyedContext, key K, in IN, out Emitter[OUT]) error
	Close() error
}

// TimerHandler is implemented by keyed process functions that register timers: OnTimer
// runs when a timer of the key fires (processing time: when the wall clock reaches ts;
// event time: when the watermark reaches ts, at the latest at the end of input), with
// the key's state current. Event-time timers fire in timestamp order; what OnTimer
// emits for one carries its timestamp ts and goes downstream before the watermark.
type TimerHandler[K, OUT any] interface {
	OnTimer(kc *KeyedContext, key K, ts int64, out Emitter[OUT]) error
}

// Base provides no-op Open, Finish and Close for embedding in functions.
type Base struct{}

func (Base) Open(context.Context, *RuntimeContext) error { return nil }
func (Base) Close() error                                { return nil }

// ProcessBase is Base plus a no-op Finish, for ProcessFunction implementations.
type ProcessBase[OUT any] struct{ Base }

func (ProcessBase[OUT]) Finish(Emitter[OUT]) error { return nil }

// KeyedBase provides no-op Open and Close for KeyedProcessFunction implementations.
type KeyedBase struct{}

func (KeyedBase) Open(context.Context, *KeyedContext) error { return nil }
func (KeyedBase) Close() error                              { return nil }
