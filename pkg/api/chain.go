package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/pkg/exchange"
	"github.com/sluice-stream/sluice/pkg/graph"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/runtime"
	"github.com/sluice-stream/sluice/pkg/state"
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

// chainState is what the operators of one chain share. Like everything in a chain it is
// used on the task goroutine only.
type chainState struct {
	ft failure
	m  counters
	// ts is the event timestamp of the record being processed: set by the input decoder,
	// a timestamp assigner or a firing event-time timer, and written with every record
	// the chain sends on.
	ts recordTime
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
	cs      *chainState
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

func newWriter[T any](codec Codec[T], outs []output, cs *chainState) *writer[T] {
	w := &writer[T]{codec: codec, cs: cs}
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
	w.scratch = appendRecordHeader(w.scratch[:0], w.cs.ts)
	w.scratch = w.codec.Append(w.scratch, v)
	w.cs.m.out++
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
			w.cs.ft.fail(err)
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

	// State is the keyed state backend of the job (state.backend.type).
	State state.Factory
	// Restore is the state to restore, by operator UID (nil: start empty).
	Restore map[string]*sluicev1.OperatorRestore
	// RestoredCheckpoint is the checkpoint Restore comes from.
	RestoredCheckpoint int64
	// Files reads the restored state's files.
	Files state.StateReader
	// LocalDir is where backends may keep files (working copies, local recovery).
	LocalDir string
	// AutoWatermarkInterval is pipeline.auto-watermark-interval of the deployment, nil
	// when it sent none. A job that set its own (Env.SetAutoWatermarkInterval) keeps it.
	AutoWatermarkInterval *time.Duration
	// OnRestore, if set, is called on the task goroutine at the end of a successful Open
	// with what the keyed backends read at their restore (see Chain.RestoreStats), when
	// one restored state and reported it.
	OnRestore func(state.RestoreStats)
}

var _ runtime.Chain = (*Chain)(nil)

// Chain is one subtask's instance of an operator chain; it implements runtime.Chain.
type Chain struct {
	prog     *Program
	spec     ChainSpec
	insts    []instance
	rcs      []*RuntimeContext
	uids     []string
	source   poller
	decoders []func([]byte) error // per logical input
	cs       chainState
	opened   int

	// Event time.
	interval time.Duration    // of periodic watermarks; 0: none
	now      func() time.Time // the clock of periodic watermarks and idleness
	outWM    int64            // last watermark sent on the outputs
	outIdle  bool             // the outputs were told the chain is idle
	ended    bool             // the source's input ended
	eventBuf []byte

	reports stateReports
}

// stateReports is what the chain's keyed backends report to other goroutines (the
// task manager's heartbeat). Unlike the rest of a chain it is guarded by its own lock.
type stateReports struct {
	mu sync.Mutex
	// metrics are the open keyed backends with native metrics.
	metrics []state.MetricsReporter
	// restore sums what the keyed backends read at their restore; restored: one
	// restored and reported it.
	restore  state.RestoreStats
	restored bool
}

// NewChain instantiates the operators of spec.Vertex for one subtask.
func (p *Program) NewChain(spec ChainSpec) (*Chain, error) {
	v := spec.Vertex
	if len(spec.Outputs) != len(v.Outputs) || len(spec.ConsumerParallelism) != len(v.Outputs) {
		return nil, fmt.Errorf("vertex %q has %d outputs, got %d partitions", v.Name, len(v.Outputs), len(spec.Outputs))
	}
	c := &Chain{prog: p, spec: spec, uids: v.Operators, now: time.Now, outWM: math.MinInt64}
	switch {
	case p.env.autoWatermarkSet:
		c.interval = p.env.autoWatermark
	case spec.AutoWatermarkInterval != nil:
		c.interval = *spec.AutoWatermarkInterval
	default:
		c.interval = DefaultAutoWatermarkInterval
	}
	tail := p.byUID[v.Operators[len(v.Operators)-1]]
	var next any
	if len(v.Outputs) > 0 {
		outs := make([]output, len(v.Outputs))
		for i, ei := range v.Outputs {
			outs[i] = output{edge: p.Graph.Edges[ei], ref: p.edges[ei], partition: spec.Outputs[i],
				subtask: spec.Subtask, consumerP: spec.ConsumerParallelism[i], maxP: p.Plan.MaxParallelism}
		}
		next = tail.writer(outs, &c.cs)
	}
	c.insts = make([]instance, len(v.Operators))
	for i := len(v.Operators) - 1; i >= 0; i-- {
		n := p.byUID[v.Operators[i]]
		if n == nil {
			return nil, fmt.Errorf("operator %q is not in this program", v.Operators[i])
		}
		in, inst := n.instantiate(&c.cs, next)
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
		c.decoders = append(c.decoders, from.decoder(next, &c.cs))
	}
	if c.source == nil && len(c.decoders) == 0 {
		return nil, fmt.Errorf("operator %q has no input", head.uid)
	}
	return c, nil
}

// Open restores each operator's state and opens the operators tail first, so every
// operator's downstream is ready.
func (c *Chain) Open(ctx context.Context) error {
	c.rcs = make([]*RuntimeContext, len(c.insts))
	for i := len(c.insts) - 1; i >= 0; i-- {
		v := c.spec.Vertex
		rc := &RuntimeContext{
			JobName: c.prog.env.name, OperatorUID: c.uids[i], Subtask: c.spec.Subtask,
			Parallelism: v.Parallelism, MaxParallelism: c.prog.Plan.MaxParallelism, Attempt: c.spec.Attempt,
			KeyGroups:     keygroup.RangeFor(c.spec.Subtask, v.Parallelism, c.prog.Plan.MaxParallelism),
			Log:           c.spec.Log.With("operator", c.uids[i], "subtask", c.spec.Subtask),
			operatorState: state.NewOperatorStateBackend(),
			cs:            &c.cs,
			watermark:     math.MinInt64,
		}
		c.rcs[i] = rc
		restore := c.spec.Restore[c.uids[i]]
		if restore != nil {
			rc.RestoredCheckpoint = c.spec.RestoredCheckpoint
			if err := rc.operatorState.Restore(restore.GetOperatorState()); err != nil {
				return fmt.Errorf("operator %s: restore operator state: %w", c.uids[i], err)
			}
		}
		if c.prog.byUID[c.uids[i]].keyed {
			if err := c.openKeyed(ctx, rc, restore); err != nil {
				return fmt.Errorf("operator %s: %w", c.uids[i], err)
			}
		}
		if err := c.insts[i].open(ctx, rc); err != nil {
			return fmt.Errorf("operator %s: %w", c.uids[i], err)
		}
		if g, ok := c.insts[i].(generatorInst); ok {
			g.attach(c, i)
		}
		c.opened++
	}
	if rs, ok := c.RestoreStats(); ok && c.spec.OnRestore != nil {
		c.spec.OnRestore(rs)
	}
	return nil
}

func (c *Chain) openKeyed(ctx context.Context, rc *RuntimeContext, restore *sluicev1.OperatorRestore) error {
	if c.spec.State == nil {
		return errors.New("keyed operator without a state backend")
	}
	b, err := c.spec.State.NewKeyed(state.KeyedOptions{
		OperatorUID: rc.OperatorUID, KeyGroups: rc.KeyGroups, MaxParallelism: rc.MaxParallelism,
		Subtask: rc.Subtask, LocalDir: c.spec.LocalDir, RestoreCheckpointID: c.spec.RestoredCheckpoint,
	})
	if err != nil {
		return fmt.Errorf("create %s state backend: %w", c.spec.State.Name(), err)
	}
	rc.keyed = b
	if mr, ok := b.(state.MetricsReporter); ok {
		c.reports.mu.Lock()
		c.reports.metrics = append(c.reports.metrics, mr)
		c.reports.mu.Unlock()
	}
	if len(restore.GetKeyed()) > 0 {
		if err := b.Restore(ctx, restore.GetKeyed(), c.spec.Files); err != nil {
			return fmt.Errorf("restore keyed state of checkpoint %d: %w", c.spec.RestoredCheckpoint, err)
		}
		if rr, ok := b.(state.RestoreReporter); ok {
			rs := rr.LastRestore()
			c.reports.mu.Lock()
			c.reports.restore, c.reports.restored = addRestore(c.reports.restore, rs), true
			c.reports.mu.Unlock()
		}
	}
	return nil
}

// addRestore sums what two backends read at their restore; the fallback reason is the
// first one given, the local checkpoint the newest.
func addRestore(a, b state.RestoreStats) state.RestoreStats {
	a.LocalBytes += b.LocalBytes
	a.RemoteBytes += b.RemoteBytes
	a.LocalCheckpointID = max(a.LocalCheckpointID, b.LocalCheckpointID)
	if a.Fallback == "" {
		a.Fallback = b.Fallback
	}
	return a
}

// StateMetrics sums the native metrics of the chain's open keyed backends (see
// state.NativeMetrics.Add); ok is false when none has any (no keyed operator, backends
// without native metrics, or the chain is closed). It may be called on any goroutine.
func (c *Chain) StateMetrics() (m state.NativeMetrics, ok bool) {
	c.reports.mu.Lock()
	rs := slices.Clone(c.reports.metrics)
	c.reports.mu.Unlock()
	// Outside the lock: a backend reads its properties under its own lock and answers
	// zero once closed, so a Close racing this call is harmless.
	for _, r := range rs {
		m = m.Add(r.NativeMetrics())
	}
	return m, m.Backends > 0
}

// RestoreStats sums what the chain's keyed backends read at their restore (the first
// fallback reason given); ok is false when none restored state and reported it (see
// state.RestoreReporter). It may be called on any goroutine; the stats stay after
// Close.
func (c *Chain) RestoreStats() (state.RestoreStats, bool) {
	c.reports.mu.Lock()
	defer c.reports.mu.Unlock()
	return c.reports.restore, c.reports.restored
}

// ChainSnapshot is the synchronous part of a checkpoint of every operator of a chain;
// Run completes it on another goroutine.
type ChainSnapshot struct {
	id    int64
	ops   []opSnapshot
	stats SnapshotStats
}

type opSnapshot struct {
	uid      string
	keyed    state.AsyncSnapshot // nil for operators without keyed state
	opStates []*sluicev1.OperatorListState
}

// SnapshotStats describe a chain snapshot.
type SnapshotStats struct {
	// Sync is the time the synchronous part took on the task goroutine.
	Sync time.Duration
}

// Snapshot takes the synchronous part of checkpoint id: user SnapshotState hooks run,
// then every operator's keyed and operator state is captured as of now.
func (c *Chain) Snapshot(id int64) (*ChainSnapshot, error) {
	return c.snapshot(id, false, func(b state.KeyedBackend) (state.AsyncSnapshot, error) { return b.Snapshot(id) })
}

// SnapshotSavepoint takes the synchronous part of savepoint id like Snapshot, with the
// keyed state in format: backends implementing state.SavepointSnapshotter take it with
// SnapshotSavepoint (self-contained, in the format asked for), the others with
// Snapshot, which is then self-contained and canonical (the heap backend's; it has no
// other format, so it serves native too).
func (c *Chain) SnapshotSavepoint(id int64, format state.SnapshotFormat) (*ChainSnapshot, error) {
	return c.snapshot(id, true, func(b state.KeyedBackend) (state.AsyncSnapshot, error) {
		if sp, ok := b.(state.SavepointSnapshotter); ok {
			return sp.SnapshotSavepoint(id, format)
		}
		return b.Snapshot(id)
	})
}

func (c *Chain) snapshot(id int64, savepoint bool, keyed func(state.KeyedBackend) (state.AsyncSnapshot, error)) (*ChainSnapshot, error) {
	start := time.Now()
	s := &ChainSnapshot{id: id}
	for i, inst := range c.insts {
		if sa, ok := inst.user().(SavepointAware); ok && savepoint {
			if err := sa.SnapshotSavepointState(id); err != nil {
				s.Release()
				return nil, fmt.Errorf("operator %s: snapshot state: %w", c.uids[i], err)
			}
		} else if cp, ok := inst.user().(Checkpointed); ok {
			if err := cp.SnapshotState(id); err != nil {
				s.Release()
				return nil, fmt.Errorf("operator %s: snapshot state: %w", c.uids[i], err)
			}
		}
		op := opSnapshot{uid: c.uids[i], opStates: c.rcs[i].operatorState.Snapshot()}
		if b := c.rcs[i].keyed; b != nil {
			as, err := keyed(b)
			if err != nil {
				s.Release()
				return nil, fmt.Errorf("operator %s: snapshot keyed state: %w", c.uids[i], err)
			}
			op.keyed = as
		}
		s.ops = append(s.ops, op)
	}
	s.stats.Sync = time.Since(start)
	return s, nil
}

// Stats describe the synchronous part.
func (s *ChainSnapshot) Stats() SnapshotStats { return s.stats }

// Run writes the snapshot's files with w and returns every operator's subtask state.
// It may run on any goroutine, concurrently with the task.
func (s *ChainSnapshot) Run(ctx context.Context, w state.StateWriter) ([]*sluicev1.OperatorSubtaskState, error) {
	defer s.Release()
	var out []*sluicev1.OperatorSubtaskState
	for _, op := range s.ops {
		st := &sluicev1.SubtaskState{OperatorState: op.opStates}
		if op.keyed != nil {
			h, err := op.keyed.Run(ctx, w)
			if err != nil {
				return nil, fmt.Errorf("operator %s: write keyed state: %w", op.uid, err)
			}
			if h != nil {
				st.Keyed = append(st.Keyed, h)
			}
		}
		out = append(out, &sluicev1.OperatorSubtaskState{Uid: op.uid, State: st})
	}
	return out, nil
}

// Release frees what the snapshot holds (also after Run).
func (s *ChainSnapshot) Release() {
	for _, op := range s.ops {
		if op.keyed != nil {
			op.keyed.Release()
		}
	}
}

// NotifyCheckpointComplete tells the keyed state backends, then the operators, that
// checkpoint id completed (incremental backends may then reuse its files).
func (c *Chain) NotifyCheckpointComplete(id int64) error {
	for _, rc := range c.rcs {
		if rc == nil || rc.keyed == nil {
			continue
		}
		if l, ok := rc.keyed.(state.CheckpointListener); ok {
			l.NotifyCheckpointComplete(id)
		}
	}
	for i, inst := range c.insts {
		if l, ok := inst.user().(CheckpointListener); ok {
			if err := l.NotifyCheckpointComplete(id); err != nil {
				return fmt.Errorf("operator %s: checkpoint %d complete: %w", c.uids[i], id, err)
			}
		}
	}
	return nil
}

// ForceFullSnapshot makes the next Snapshot of every keyed backend reuse no file of an
// earlier checkpoint (see state.FullSnapshotForcer); backends that always snapshot in
// full ignore it. Call it on the task goroutine, before Snapshot.
func (c *Chain) ForceFullSnapshot() {
	for _, rc := range c.rcs {
		if rc == nil || rc.keyed == nil {
			continue
		}
		if f, ok := rc.keyed.(state.FullSnapshotForcer); ok {
			f.ForceFullSnapshot()
		}
	}
}

// PollSource runs one batch of the head source, then what is due of the chain's
// processing-time work (periodic watermarks). A wait is cut short to the next periodic
// watermark. When the input ends, the source emits the final watermark, so event-time
// timers downstream fire before the task waits for its final checkpoint.
func (c *Chain) PollSource() (bool, time.Duration, error) {
	r, err := c.source.poll()
	if err == nil {
		err = c.cs.ft.err
	}
	if err != nil {
		return r.Done, r.Wait, err
	}
	if r.Done {
		if !c.ended {
			c.ended = true
			err = c.advanceWatermark(1, runtime.MaxWatermark)
		}
		return true, 0, err
	}
	wait := r.Wait
	next, ok := c.NextTimer()
	if !ok {
		return false, wait, nil
	}
	now := c.now()
	if !now.Before(next) {
		if err := c.FireTimers(now); err != nil {
			return false, 0, err
		}
		if next, ok = c.NextTimer(); !ok {
			return false, wait, nil
		}
	}
	if wait > 0 {
		wait = min(wait, max(next.Sub(now), time.Millisecond))
	}
	return false, wait, nil
}

// ProcessRecord decodes and processes one record of logical input `input`.
func (c *Chain) ProcessRecord(input int, rec []byte) error {
	return c.decoders[input](rec)
}

// EndInput finishes the operators head first, so what one flushes reaches the next.
// What they emit carries no timestamp (event-time timers' output aside).
func (c *Chain) EndInput() error {
	for i, inst := range c.insts {
		c.cs.ts = recordTime{}
		if err := inst.endInput(); err != nil {
			return fmt.Errorf("operator %s: %w", c.uids[i], err)
		}
		if c.cs.ft.err != nil {
			return c.cs.ft.err
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
	c.reports.mu.Lock()
	c.reports.metrics = nil
	c.reports.mu.Unlock()
	for _, rc := range c.rcs {
		if rc != nil && rc.keyed != nil {
			if err := rc.keyed.Close(); err != nil {
				errs = append(errs, err)
			}
			rc.keyed = nil
		}
	}
	return errors.Join(errs...)
}

// Counters returns the records emitted by the source, consumed by sinks and written
// to outputs so far.
func (c *Chain) Counters() (source, sink, out int64) {
	return c.cs.m.source, c.cs.m.sink, c.cs.m.out
}

// IsSource reports whether the chain starts with a source.
func (c *Chain) IsSource() bool { return c.source != nil }

// timerInst is implemented by operators with processing-time timers (keyed operators'
// timers, the periodic watermarks of a watermark strategy).
type timerInst interface {
	nextTimer() (int64, bool)
	fireTimers(now int64) error
}

// NextTimer is the earliest processing-time timer of the chain's operators.
func (c *Chain) NextTimer() (time.Time, bool) {
	var next int64
	found := false
	for _, inst := range c.insts {
		if ti, ok := inst.(timerInst); ok {
			if ts, ok := ti.nextTimer(); ok && (!found || ts < next) {
				next, found = ts, true
			}
		}
	}
	return time.UnixMilli(next), found
}

// FireTimers fires the processing-time timers due at now.
func (c *Chain) FireTimers(now time.Time) error {
	for i, inst := range c.insts {
		if ti, ok := inst.(timerInst); ok {
			if err := ti.fireTimers(now.UnixMilli()); err != nil {
				return fmt.Errorf("operator %s: timer: %w", c.uids[i], err)
			}
		}
	}
	return c.cs.ft.err
}
