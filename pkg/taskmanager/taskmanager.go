// Package taskmanager is the worker daemon: it offers slots to the jobmanager, runs the
// subtasks deployed to it and serves their output channels to other task managers.
package taskmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/config"
	"github.com/sluice-stream/sluice/pkg/exchange"
	"github.com/sluice-stream/sluice/pkg/graph"
	"github.com/sluice-stream/sluice/pkg/meta"
	"github.com/sluice-stream/sluice/pkg/program"
	"github.com/sluice-stream/sluice/pkg/rpc"
	"github.com/sluice-stream/sluice/pkg/runtime"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/heap"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	"github.com/sluice-stream/sluice/pkg/version"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Config configures a task manager.
type Config struct {
	// ID identifies the task manager; empty generates one.
	ID string
	// JobManager is the jobmanager's address (host:port), used when Meta is nil.
	JobManager string
	// Meta, when set, is the etcd metadata store of the cluster: the task manager finds
	// the leading jobmanager there (the address it published) and follows it as
	// leadership moves (high availability). The caller closes it after Serve returned.
	Meta *meta.Store
	// AdvertiseAddress is the address others reach this task manager at; empty uses the
	// listener's address.
	AdvertiseAddress string
	Slots            int
	// HeartbeatTimeout: after this long without a successful heartbeat the task manager
	// considers the jobmanager lost and cancels its tasks.
	HeartbeatTimeout time.Duration
	// LocalDir is where state backends keep working files.
	LocalDir string
	// LocalStateDir is the root of the local recovery copies of snapshots
	// (state.backend.local-recovery), <LocalStateDir>/<job>/...: a task manager
	// restarted with the same directory and ID restores from the copies it left there
	// (see ClaimLocalState). Empty uses a temporary directory removed at shutdown.
	LocalStateDir string
	// State is the task manager's configuration of keyed state (the state.backend.*
	// keys): the backend and its tuning when a deployment does not set them (the
	// jobmanager sends its own), and what only the task manager decides: the memory all
	// its RocksDB instances share (state.backend.rocksdb.memory.*) and their directory
	// (state.backend.rocksdb.localdir). Nil reads as all defaults.
	State *config.Config
	// RocksDBOptions, if set, adjusts the options of every RocksDB instance last (the
	// options-factory hook of Go programs that build their own task manager).
	RocksDBOptions rocksdb.OptionsFactory
	// Exchange settings.
	BufferSize          int
	CreditsPerChannel   int
	MaxQueuedPerChannel int
	BufferTimeout       time.Duration
}

func (c *Config) defaults() {
	if c.ID == "" {
		c.ID = "tm-" + uuid.NewString()[:8]
	}
	if c.Slots <= 0 {
		c.Slots = 1
	}
	if c.HeartbeatTimeout <= 0 {
		c.HeartbeatTimeout = 10 * time.Second
	}
	if c.BufferSize <= 0 {
		c.BufferSize = 32 << 10
	}
	// Eight buffers in flight and eight queued per channel keep a remote channel near
	// the throughput of a raw gRPC stream (make bench); fewer halve it.
	if c.CreditsPerChannel <= 0 {
		c.CreditsPerChannel = 8
	}
	if c.MaxQueuedPerChannel <= 0 {
		c.MaxQueuedPerChannel = 8
	}
}

// TaskManager runs subtasks. Create it with New and run it with Serve.
type TaskManager struct {
	sluicev1.UnimplementedTaskServiceServer
	cfg     Config
	log     *slog.Logger
	reg     *exchange.Registry
	xclient *exchange.Client
	conns   rpc.Conns
	jm      sluicev1.ResourceServiceClient // calls go to the leader of jmc
	jmc     *leaderConn
	addr    string
	base    context.Context // lives until shutdown; parent of every task's context
	wg      sync.WaitGroup  // task goroutines

	mu    sync.Mutex
	tasks map[string]*runningTask
	// canceled remembers cancels of tasks not (yet) deployed here, so a deployment that
	// arrives after its cancel is refused rather than run unsupervised.
	canceled map[string]time.Time
	// stores are the checkpoint blob stores by URL.
	stores map[string]*blobstore.Store
	// rocksMem is the memory every RocksDB backend here shares (managed memory),
	// created with the first one and closed at shutdown.
	rocksMem *rocksdb.Memory
	// localState is the local recovery root in use (Config.LocalStateDir or a
	// temporary one), set by Serve; removeLocalState: the temporary one, removed at
	// shutdown.
	localState       string
	removeLocalState bool
	local            localJobs
}

type runningTask struct {
	id      *sluicev1.ExecutionId
	cancel  context.CancelFunc
	metrics *runtime.Metrics
	task    *runtime.Task
	cps     *taskCheckpoints
	// chain is the task's chain once built, read by the heartbeat for the state
	// metrics and restore statistics.
	chain atomic.Pointer[api.Chain]
}

func execKey(id *sluicev1.ExecutionId) string {
	return fmt.Sprintf("%s/%d/%d/%d", id.GetJobId(), id.GetAttempt(), id.GetVertex(), id.GetSubtask())
}

// New returns a task manager.
func New(cfg Config, log *slog.Logger) *TaskManager {
	cfg.defaults()
	tm := &TaskManager{cfg: cfg, log: log.With("tm", cfg.ID), tasks: map[string]*runningTask{}, canceled: map[string]time.Time{}, stores: map[string]*blobstore.Store{},
		jmc: newLeaderConn()}
	tm.jm = sluicev1.NewResourceServiceClient(tm.jmc)
	tm.reg = exchange.NewRegistry(cfg.BufferSize, cfg.MaxQueuedPerChannel)
	tm.xclient = exchange.NewClient(func(addr string) (grpc.ClientConnInterface, error) { return tm.conns.Get(addr) }, tm.reg.Pool(), tm.log)
	return tm
}

// ID is the task manager's identity.
func (tm *TaskManager) ID() string { return tm.cfg.ID }

// Serve runs the task manager on lis until ctx ends, then shuts down gracefully: tasks
// are canceled, the jobmanager is told, and the servers stop.
func (tm *TaskManager) Serve(ctx context.Context, lis net.Listener) error {
	tm.addr = tm.cfg.AdvertiseAddress
	if tm.addr == "" {
		tm.addr = lis.Addr().String()
	}
	tm.localState = tm.cfg.LocalStateDir
	if tm.localState == "" {
		dir, err := os.MkdirTemp("", "sluice-localstate-")
		if err != nil {
			return fmt.Errorf("local state directory: %w", err)
		}
		tm.localState, tm.removeLocalState = dir, true
	}
	tm.local.root = tm.localState
	defer func() {
		if tm.removeLocalState {
			os.RemoveAll(tm.localState)
		}
	}()
	base, cancelBase := context.WithCancel(context.Background())
	tm.base = base
	defer cancelBase()

	defer tm.jmc.close()
	jobManager := tm.cfg.JobManager
	var followDone chan struct{}
	if tm.cfg.Meta != nil {
		// The leader's address comes from etcd and changes with the leadership.
		jobManager = "the leader in etcd " + tm.cfg.Meta.Prefix()
		followDone = make(chan struct{})
		go func() {
			defer close(followDone)
			tm.followLeader(base)
		}()
	} else if err := tm.jmc.set(tm.cfg.JobManager, "", 0); err != nil {
		return fmt.Errorf("jobmanager address %q: %w", tm.cfg.JobManager, err)
	}

	srv := grpc.NewServer(rpc.ServerOptions()...)
	sluicev1.RegisterTaskServiceServer(srv, tm)
	sluicev1.RegisterExchangeServiceServer(srv, exchange.NewServer(tm.reg, tm.log))
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	tm.log.Info("task manager listening", "address", tm.addr, "slots", tm.cfg.Slots, "jobmanager", jobManager, "build", version.BuildID())

	hbCtx, stopHB := context.WithCancel(ctx)
	defer stopHB()
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		tm.heartbeatLoop(hbCtx)
	}()

	select {
	case <-ctx.Done():
	case err := <-serveErr:
		stopHB()
		cancelBase()
		<-loopDone
		if followDone != nil {
			<-followDone
		}
		return fmt.Errorf("serve: %w", err)
	}
	<-loopDone
	tm.log.Info("shutting down: canceling tasks")
	tm.cancelAll("task manager shutting down")
	waitTimeout(&tm.wg, 10*time.Second)
	uctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	_, _ = tm.jm.UnregisterTaskManager(uctx, &sluicev1.UnregisterTaskManagerRequest{TaskManagerId: tm.cfg.ID, Reason: "shutdown"})
	cancel()
	cancelBase()
	if followDone != nil {
		<-followDone
	}
	// Every task has stopped, so the exchange streams carry nothing: close ours and cut
	// the incoming ones rather than wait for peers to hang up.
	tm.xclient.Close()
	srv.Stop()
	tm.conns.Close()
	tm.mu.Lock()
	for _, s := range tm.stores {
		s.Close()
	}
	tm.stores = nil
	if tm.rocksMem != nil {
		tm.rocksMem.Close()
		tm.rocksMem = nil
	}
	tm.mu.Unlock()
	return nil
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// heartbeatLoop registers with the jobmanager and heartbeats until ctx ends. When the
// jobmanager forgets this task manager, cannot be reached for HeartbeatTimeout, or
// another jobmanager becomes the leader, the tasks are canceled (their job is restarted
// by the jobmanager that leads) and it registers again once they stopped, so that no
// task of an earlier attempt runs here next to the new ones.
func (tm *TaskManager) heartbeatLoop(ctx context.Context) {
	registered := false
	var leader int64 // the leadership registered with (0: a fixed address)
	interval := time.Second
	lastOK := time.Now()
	retry := 100 * time.Millisecond // registration retries, growing to a second
	var warned time.Time
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		changed := tm.jmc.changed()
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-changed:
			// A new leader (or none): act at once rather than at the next heartbeat.
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}
		addr, _, epoch := tm.jmc.current()
		if registered && epoch != leader {
			tm.log.Warn("jobmanager leader changed: canceling tasks and registering with the new leader", "leader", addr)
			tm.resetTasks(ctx, "jobmanager leader changed")
			registered = false
		}
		if !registered {
			rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := tm.jm.RegisterTaskManager(rctx, &sluicev1.RegisterTaskManagerRequest{
				Id: tm.cfg.ID, Address: tm.addr, Slots: int32(tm.cfg.Slots), BuildId: version.BuildID(),
			})
			cancel()
			if err != nil {
				if ctx.Err() == nil && time.Since(warned) >= 5*time.Second {
					warned = time.Now()
					tm.log.Warn("cannot register with the jobmanager; retrying", "jobmanager", addr, "err", err)
				}
				timer.Reset(retry)
				retry = min(2*retry, time.Second)
				continue
			}
			registered, leader, retry, warned = true, epoch, 100*time.Millisecond, time.Time{}
			lastOK = time.Now()
			if ms := resp.GetHeartbeatIntervalMs(); ms > 0 {
				interval = time.Duration(ms) * time.Millisecond
			}
			tm.log.Info("registered with the jobmanager", "jobmanager", addr, "heartbeat", interval)
			timer.Reset(interval)
			continue
		}
		hctx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		resp, err := tm.jm.Heartbeat(hctx, &sluicev1.HeartbeatRequest{TaskManagerId: tm.cfg.ID, Tasks: tm.metrics(), LocalStateJobs: tm.local.list()})
		cancel()
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			if time.Since(lastOK) > tm.cfg.HeartbeatTimeout {
				tm.log.Warn("jobmanager lost: canceling tasks and registering again", "since", time.Since(lastOK).Round(time.Millisecond), "err", err)
				tm.resetTasks(ctx, "jobmanager lost")
				registered = false
			}
		case !resp.GetKnown():
			tm.log.Warn("jobmanager does not know this task manager: canceling tasks and registering again")
			tm.resetTasks(ctx, "task manager was declared dead")
			registered = false
			lastOK = time.Now()
		default:
			lastOK = time.Now()
			for _, id := range resp.GetCancel() {
				tm.cancelTask(id)
			}
			tm.dropLocalState(resp.GetEndedJobs())
		}
		timer.Reset(interval)
	}
}

// resetTasks cancels every task and waits (at most 10 s) until they stopped. Tasks
// leave tm.tasks when they stop, before their state is reported.
func (tm *TaskManager) resetTasks(ctx context.Context, reason string) {
	tm.cancelAll(reason)
	deadline := time.Now().Add(10 * time.Second)
	for {
		tm.mu.Lock()
		n := len(tm.tasks)
		tm.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			tm.log.Warn("tasks did not stop within 10s of their cancel", "tasks", n)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// followLeader keeps jmc pointed at the leader that etcd names, until ctx ends.
func (tm *TaskManager) followLeader(ctx context.Context) {
	for li := range tm.cfg.Meta.ObserveLeader(ctx) {
		if li.Address == "" {
			if li.CandidateID != "" {
				tm.log.Warn("the leader published no address", "leader", li.CandidateID)
			}
			continue // nobody leads: keep the last leader until another takes over
		}
		if err := tm.jmc.set(li.Address, li.CandidateID, li.Revision); err != nil {
			tm.log.Error("cannot dial the leading jobmanager", "leader", li.CandidateID, "address", li.Address, "err", err)
			continue
		}
		tm.log.Info("following the leading jobmanager", "leader", li.CandidateID, "address", li.Address, "revision", li.Revision)
	}
}

// leaderConn is the task manager's connection to the jobmanager: a fixed address, or the
// leader etcd names, switched when leadership moves. Calls go to the current one.
type leaderConn struct {
	mu      sync.Mutex
	addr    string
	id      string
	epoch   int64 // the leadership's fencing revision (0: a fixed address)
	cc      *grpc.ClientConn
	changes chan struct{} // closed and replaced at every change
}

var _ grpc.ClientConnInterface = (*leaderConn)(nil)

func newLeaderConn() *leaderConn { return &leaderConn{changes: make(chan struct{})} }

// set points the connection at addr, the jobmanager of the leadership epoch.
func (c *leaderConn) set(addr, id string, epoch int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cc != nil && addr == c.addr && epoch == c.epoch {
		return nil
	}
	cc := c.cc
	if c.cc == nil || addr != c.addr {
		var err error
		if cc, err = rpc.Dial(addr); err != nil {
			return err
		}
		if c.cc != nil {
			c.cc.Close() // calls in flight to the former leader fail; they are retried
		}
	}
	c.addr, c.id, c.epoch, c.cc = addr, id, epoch, cc
	close(c.changes)
	c.changes = make(chan struct{})
	return nil
}

// current returns the jobmanager calls go to now.
func (c *leaderConn) current() (addr, id string, epoch int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addr, c.id, c.epoch
}

// changed is closed at the next change.
func (c *leaderConn) changed() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changes
}

func (c *leaderConn) conn() (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cc == nil {
		return nil, status.Error(codes.Unavailable, "no leading jobmanager known yet")
	}
	return c.cc, nil
}

func (c *leaderConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cc != nil {
		c.cc.Close()
		c.cc = nil
	}
}

func (c *leaderConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	cc, err := c.conn()
	if err != nil {
		return err
	}
	return cc.Invoke(ctx, method, args, reply, opts...)
}

func (c *leaderConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cc, err := c.conn()
	if err != nil {
		return nil, err
	}
	return cc.NewStream(ctx, desc, method, opts...)
}

func (tm *TaskManager) metrics() []*sluicev1.TaskMetrics {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	out := make([]*sluicev1.TaskMetrics, 0, len(tm.tasks))
	for _, t := range tm.tasks {
		out = append(out, taskMetrics(t))
	}
	return out
}

// taskMetrics reads a task's counters, and, once its chain is built, the native
// metrics of its keyed state and what its restore read.
func taskMetrics(rt *runningTask) *sluicev1.TaskMetrics {
	m := rt.metrics
	out := &sluicev1.TaskMetrics{
		Execution: rt.id, RecordsIn: m.RecordsIn.Load(), RecordsOut: m.RecordsOut.Load(),
		SourceRecords: m.SourceRecords.Load(), SinkRecords: m.SinkRecords.Load(),
	}
	chain := rt.chain.Load()
	if chain == nil {
		return out
	}
	out.State = stateMetricsProto(chain.StateMetrics())
	if rs, ok := chain.RestoreStats(); ok {
		out.Restored, out.RestoredLocalBytes, out.RestoredRemoteBytes = true, rs.LocalBytes, rs.RemoteBytes
		out.RestoredFromLocalCheckpoint, out.RestoreFallback = rs.LocalCheckpointID, rs.Fallback
	}
	return out
}

// stateMetricsProto renders a chain's state metrics (nil when it has none).
func stateMetricsProto(m state.NativeMetrics, ok bool) *sluicev1.StateMetrics {
	if !ok {
		return nil
	}
	return &sluicev1.StateMetrics{
		Backends: int32(m.Backends), EstimatedKeys: m.EstimatedKeys, PendingCompactionBytes: m.PendingCompactionBytes,
		RunningCompactions: m.RunningCompactions, RunningFlushes: m.RunningFlushes, L0Files: m.L0Files,
		DelayedWriteRate: m.DelayedWriteRate, WriteStopped: m.WriteStopped,
		LiveSstBytes: m.LiveSSTBytes, TotalSstBytes: m.TotalSSTBytes, MemtableBytes: m.MemTableBytes,
		BlockCacheUsageBytes: m.BlockCacheUsage, BlockCachePinnedBytes: m.BlockCachePinnedUsage, BlockCacheCapacityBytes: m.BlockCacheCapacity,
	}
}

// logRestore logs what a subtask's keyed state backends read to restore checkpoint id.
func logRestore(log *slog.Logger, id int64, rs state.RestoreStats) {
	attrs := []any{"checkpoint", id, "local_bytes", rs.LocalBytes, "remote_bytes", rs.RemoteBytes}
	if rs.LocalCheckpointID > 0 {
		attrs = append(attrs, "local_checkpoint", rs.LocalCheckpointID)
	}
	if rs.Fallback != "" {
		attrs = append(attrs, "fallback", rs.Fallback)
	}
	log.Info("keyed state restored", attrs...)
}

func (tm *TaskManager) cancelAll(reason string) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	for _, t := range tm.tasks {
		t.cancel()
	}
	if len(tm.tasks) > 0 {
		tm.log.Info("canceled tasks", "count", len(tm.tasks), "reason", reason)
	}
}

func (tm *TaskManager) cancelTask(id *sluicev1.ExecutionId) {
	tm.mu.Lock()
	defer tm.mu.Unlock()
	if t := tm.tasks[execKey(id)]; t != nil {
		t.cancel()
		return
	}
	now := time.Now()
	for k, at := range tm.canceled {
		if now.Sub(at) > time.Minute {
			delete(tm.canceled, k)
		}
	}
	tm.canceled[execKey(id)] = now
}

// CancelTask cancels a running task; canceling an unknown task succeeds (idempotent).
func (tm *TaskManager) CancelTask(_ context.Context, req *sluicev1.CancelTaskRequest) (*sluicev1.CancelTaskResponse, error) {
	tm.cancelTask(req.GetExecution())
	return &sluicev1.CancelTaskResponse{}, nil
}

// DeployTask checks the job against this build, sets up the subtask's channels and
// starts it. Errors mean the task did not start.
func (tm *TaskManager) DeployTask(_ context.Context, req *sluicev1.DeployTaskRequest) (*sluicev1.DeployTaskResponse, error) {
	id := req.GetExecution()
	g := req.GetJobGraph()
	log := tm.log.With("job", id.GetJobId(), "attempt", id.GetAttempt(), "vertex", id.GetVertex(), "subtask", id.GetSubtask())
	if tm.base == nil || tm.base.Err() != nil {
		return nil, fmt.Errorf("%w: task manager is shutting down", rpc.ErrUnavailable)
	}
	if _, ok := g.GetProgram().GetKind().(*sluicev1.Program_Registered); ok && g.GetBuildId() != version.BuildID() {
		return nil, fmt.Errorf("%w: job %q was compiled by build %s but task manager %s runs build %s; run the same build on every process",
			rpc.ErrFailedPrecondition, g.GetName(), g.GetBuildId(), tm.cfg.ID, version.BuildID())
	}
	prog, err := program.Compile(g.GetProgram(), log)
	if err != nil {
		return nil, fmt.Errorf("%w: task manager %s cannot build job %q: %v", rpc.ErrFailedPrecondition, tm.cfg.ID, g.GetName(), err)
	}
	if d := graph.Diff(g, prog.Graph); d != "" {
		return nil, fmt.Errorf("%w: job %q does not match the operators registered in task manager %s: %s",
			rpc.ErrFailedPrecondition, g.GetName(), tm.cfg.ID, d)
	}
	if int(id.GetVertex()) >= len(prog.Plan.Vertices) {
		return nil, fmt.Errorf("%w: vertex %d out of range", rpc.ErrInvalid, id.GetVertex())
	}
	v := prog.Plan.Vertices[id.GetVertex()]
	subtask := int(id.GetSubtask())
	if len(req.GetOutputs()) != len(v.Outputs) || len(req.GetInputs()) != len(v.Inputs) {
		return nil, fmt.Errorf("%w: deployment of %q has %d inputs and %d outputs, the chain %d and %d",
			rpc.ErrInvalid, v.Name, len(req.GetInputs()), len(req.GetOutputs()), len(v.Inputs), len(v.Outputs))
	}

	key := execKey(id)
	tm.mu.Lock()
	if tm.tasks[key] != nil {
		tm.mu.Unlock()
		return nil, fmt.Errorf("%w: task %s is already running", rpc.ErrFailedPrecondition, key)
	}
	if _, ok := tm.canceled[key]; ok {
		tm.mu.Unlock()
		return nil, fmt.Errorf("%w: task %s was canceled before its deployment arrived", rpc.ErrFailedPrecondition, key)
	}
	ctx, cancel := context.WithCancel(tm.base)
	rt := &runningTask{id: id, cancel: cancel, metrics: &runtime.Metrics{}}
	tm.tasks[key] = rt
	tm.mu.Unlock()

	task, err := tm.buildTask(ctx, req, prog, v, subtask, rt, log)
	if err != nil {
		tm.mu.Lock()
		delete(tm.tasks, key)
		tm.mu.Unlock()
		cancel()
		return nil, err
	}
	task.Metrics = rt.metrics
	rt.chain.Store(rt.cps.chain)
	tm.wg.Add(1)
	go tm.run(ctx, rt, task, log)
	return &sluicev1.DeployTaskResponse{}, nil
}

func (tm *TaskManager) buildTask(ctx context.Context, req *sluicev1.DeployTaskRequest, prog *api.Program, v graph.Vertex, subtask int, rt *runningTask, log *slog.Logger) (*runtime.Task, error) {
	id := req.GetExecution()
	backend, err := tm.stateBackend(req)
	if err != nil {
		return nil, fmt.Errorf("%w: state backend: %v", rpc.ErrFailedPrecondition, err)
	}
	g := prog.Graph
	var outputs []*exchange.Partition
	var consumerP []int
	var chKeys channelKeys
	abort := func(err error) {
		for _, p := range outputs {
			p.Abort(err)
		}
	}
	for i, ei := range v.Outputs {
		od := req.GetOutputs()[i]
		if int(od.GetEdge()) != ei {
			abort(ErrBadDeployment)
			return nil, fmt.Errorf("%w: output %d is edge %d, want %d", rpc.ErrInvalid, i, od.GetEdge(), ei)
		}
		var keys []exchange.ChannelKey
		for _, c := range graph.ProducerChannels(g.Edges[ei], subtask, int(od.GetConsumerParallelism())) {
			keys = append(keys, exchange.ChannelKey{JobID: id.GetJobId(), Attempt: id.GetAttempt(), Edge: int32(ei), Producer: int32(subtask), Consumer: int32(c)})
		}
		outputs = append(outputs, tm.reg.NewPartition(ctx, keys))
		chKeys.out = append(chKeys.out, keys)
		consumerP = append(consumerP, int(od.GetConsumerParallelism()))
	}
	var gate *exchange.InputGate
	if len(v.Inputs) > 0 {
		n := 0
		for _, in := range req.GetInputs() {
			n += len(in.GetProducerAddresses())
		}
		gate = exchange.NewInputGate(n, tm.cfg.CreditsPerChannel)
		ch := 0
		for input, ei := range v.Inputs {
			in := req.GetInputs()[input]
			e := g.Edges[ei]
			if int(in.GetEdge()) != ei {
				abort(ErrBadDeployment)
				gate.Close()
				return nil, fmt.Errorf("%w: input %d is edge %d, want %d", rpc.ErrInvalid, input, in.GetEdge(), ei)
			}
			for k, addr := range in.GetProducerAddresses() {
				producer := k
				if e.GetPartitioner() == sluicev1.Partitioner_PARTITIONER_FORWARD {
					producer = subtask
				}
				key := exchange.ChannelKey{JobID: id.GetJobId(), Attempt: id.GetAttempt(), Edge: int32(ei), Producer: int32(producer), Consumer: int32(subtask)}
				var err error
				chKeys.in = append(chKeys.in, key)
				if addr == tm.addr {
					err = gate.ConnectLocal(tm.reg, ch, input, key)
				} else {
					err = tm.xclient.ConnectRemote(gate, ch, input, addr, key)
				}
				if err != nil {
					abort(err)
					gate.Close()
					// Not Unavailable: that code says this task manager is unreachable.
					return nil, fmt.Errorf("%w: connect input channel %s: %v", rpc.ErrFailedPrecondition, key, err)
				}
				ch++
			}
		}
	}
	var store *blobstore.Store
	if u := req.GetCheckpointStorage(); u != "" {
		var err error
		if store, err = tm.jobStore(ctx, u, id.GetJobId()); err != nil {
			abort(err)
			if gate != nil {
				gate.Close()
			}
			return nil, fmt.Errorf("%w: checkpoint storage: %v", rpc.ErrFailedPrecondition, err)
		}
	}
	files := blobstore.StateFiles{Store: store}
	if u := req.GetRestoreStorage(); u != "" && len(req.GetRestore()) > 0 {
		// The state comes from another job's checkpoint directory (a job started from
		// a retained checkpoint); the store is opened once per URL and kept.
		rs, err := tm.openStore(ctx, u)
		if err != nil {
			abort(err)
			if gate != nil {
				gate.Close()
			}
			return nil, fmt.Errorf("%w: restore storage: %v", rpc.ErrFailedPrecondition, err)
		}
		files = blobstore.StateFiles{Store: rs}
	}
	restore := map[string]*sluicev1.OperatorRestore{}
	for _, r := range req.GetRestore() {
		restore[r.GetUid()] = r
	}
	var wmInterval *time.Duration
	if s, ok := req.GetConfig()["pipeline.auto-watermark-interval"]; ok {
		if d, err := time.ParseDuration(s); err == nil {
			wmInterval = &d
		}
	}
	chain, err := prog.NewChain(api.ChainSpec{
		AutoWatermarkInterval: wmInterval,
		Vertex:                v, Subtask: subtask, Attempt: id.GetAttempt(), Outputs: outputs, ConsumerParallelism: consumerP, Log: log,
		State: backend, Restore: restore, RestoredCheckpoint: req.GetRestoreCheckpointId(),
		Files: files, LocalDir: tm.cfg.LocalDir,
		OnRestore: func(rs state.RestoreStats) { logRestore(log, req.GetRestoreCheckpointId(), rs) },
	})
	if err != nil {
		abort(err)
		if gate != nil {
			gate.Close()
		}
		return nil, fmt.Errorf("%w: %v", rpc.ErrFailedPrecondition, err)
	}
	bufferTimeout := tm.cfg.BufferTimeout
	if s, ok := req.GetConfig()["execution.buffer-timeout.interval"]; ok {
		if d, err := time.ParseDuration(s); err == nil {
			bufferTimeout = d
		}
	}
	var inFlight *runtime.ChannelState
	if r := restore[v.Operators[0]]; len(r.GetChannelState()) > 0 {
		if inFlight, err = readChannelState(ctx, files, r.GetChannelState(), chKeys); err != nil {
			chain.Close()
			abort(err)
			if gate != nil {
				gate.Close()
			}
			return nil, fmt.Errorf("%w: restore in-flight data: %v", rpc.ErrFailedPrecondition, err)
		}
	}
	rt.cps = &taskCheckpoints{tm: tm, rt: rt, chain: chain, store: store, log: log, running: map[int64]*asyncPart{},
		head: v.Operators[0], keys: chKeys}
	rt.task = &runtime.Task{
		Name: fmt.Sprintf("%s (%d/%d)", v.Name, subtask+1, v.Parallelism), Chain: chain, Gate: gate, Outputs: outputs,
		BufferTimeout: bufferTimeout, Mailbox: make(chan func() error, 16), Checkpoints: rt.cps, Log: log,
		AwaitFinalCheckpoint: store != nil && chain.IsSource(), InFlight: inFlight,
	}
	return rt.task, nil
}

// stateBackend returns the keyed state backend of a deployment: the state.backend.*
// keys it carries (the jobmanager's settings) over this task manager's own.
func (tm *TaskManager) stateBackend(req *sluicev1.DeployTaskRequest) (state.Factory, error) {
	c := config.New()
	c.Merge(tm.cfg.State)
	for k, v := range req.GetConfig() {
		if strings.HasPrefix(k, "state.backend.") {
			if err := c.Set(k, v); err != nil {
				return nil, err
			}
		}
	}
	if c.String(config.StateBackendType) != rocksdb.Name {
		return heap.Factory{}, nil
	}
	cfg, err := rocksdb.ConfigFrom(c)
	if err != nil {
		return nil, err
	}
	// Another job's checkpoint (restore_storage) is not this job's to reference: the
	// first incremental checkpoint after the restore uploads everything.
	cfg.NoClaim = req.GetRestoreStorage() != ""
	cfg.OptionsFactory = tm.cfg.RocksDBOptions
	cfg.Log = tm.log.With("job", req.GetExecution().GetJobId())
	if c.Bool(config.StateBackendLocalRecovery) {
		cfg.LocalRecovery = rocksdb.LocalRecovery{Dir: tm.localState, JobID: req.GetExecution().GetJobId()}
	}
	f := rocksdb.Factory{Config: cfg}
	// The memory budget is the task manager's own: deployments do not change it.
	if mc, managed := rocksdb.MemoryConfigFrom(tm.cfg.State); managed {
		tm.mu.Lock()
		defer tm.mu.Unlock()
		if tm.rocksMem == nil {
			if tm.rocksMem, err = rocksdb.NewMemory(mc); err != nil {
				return nil, err
			}
		}
		f.Memory = tm.rocksMem
	}
	return f, nil
}

// jobStore returns the blob store view of one job's checkpoint directory; stores are
// opened once per URL and shared.
func (tm *TaskManager) jobStore(ctx context.Context, url, jobID string) (*blobstore.Store, error) {
	s, err := tm.openStore(ctx, url)
	if err != nil {
		return nil, err
	}
	return s.Sub(blobstore.JobDir(jobID))
}

// openStore returns the shared store of url, opening it on first use.
func (tm *TaskManager) openStore(ctx context.Context, url string) (*blobstore.Store, error) {
	tm.mu.Lock()
	s := tm.stores[url]
	tm.mu.Unlock()
	if s == nil {
		var err error
		if s, err = blobstore.Open(ctx, url); err != nil {
			return nil, err
		}
		tm.mu.Lock()
		if old := tm.stores[url]; old != nil {
			s.Close()
			s = old
		} else {
			tm.stores[url] = s
		}
		tm.mu.Unlock()
	}
	return s, nil
}

// post queues a control action on a task's mailbox without blocking the caller: the
// task may be backpressured, and RPC handlers must not wait for it.
func (tm *TaskManager) post(rt *runningTask, f func() error) bool {
	select {
	case rt.task.Mailbox <- f:
		return true
	default:
		return false
	}
}

// TriggerCheckpoint makes a source task snapshot and emit the barrier.
func (tm *TaskManager) TriggerCheckpoint(_ context.Context, req *sluicev1.TriggerCheckpointRequest) (*sluicev1.TriggerCheckpointResponse, error) {
	tm.mu.Lock()
	rt := tm.tasks[execKey(req.GetExecution())]
	tm.mu.Unlock()
	if rt == nil {
		return nil, fmt.Errorf("%w: task %s is not running here", rpc.ErrNotFound, execKey(req.GetExecution()))
	}
	mode := runtime.ExactlyOnce
	if req.GetMode() == sluicev1.CheckpointMode_CHECKPOINT_MODE_AT_LEAST_ONCE {
		mode = runtime.AtLeastOnce
	}
	b := runtime.Barrier{ID: req.GetCheckpointId(), TriggerUnixMilli: req.GetTriggerTimeUnixMs(), Mode: mode, Savepoint: req.GetSavepoint(),
		Unaligned: req.GetUnaligned() && !req.GetSavepoint(), AlignedTimeoutMs: max(0, req.GetAlignedTimeoutMs()), Full: req.GetFull()}
	action := rt.task.TriggerCheckpoint(b, req.GetFinal())
	if req.GetSavepoint() {
		// A savepoint is always aligned; its directory and format, and whether it stops
		// the job, travel in its barrier to every task.
		b.Unaligned, b.AlignedTimeoutMs, b.Full = false, 0, false
		b.Target, b.Native, b.Stop = req.GetSavepointDir(), req.GetSavepointFormat() == sluicev1.SavepointFormat_SAVEPOINT_FORMAT_NATIVE, req.GetStop()
		switch {
		case b.Target == "":
			return nil, fmt.Errorf("%w: savepoint %d names no directory", rpc.ErrInvalid, b.ID)
		case len(b.Target) > runtime.MaxBarrierTarget:
			return nil, fmt.Errorf("%w: savepoint directory URL of %d bytes is too long (at most %d)", rpc.ErrInvalid, len(b.Target), runtime.MaxBarrierTarget)
		}
		action = rt.task.TriggerCheckpoint(b, false)
		if b.Stop {
			action = rt.task.TriggerStop(b, req.GetDrain())
		}
	}
	if !tm.post(rt, action) {
		return nil, fmt.Errorf("%w: task %s is busy; checkpoint %d not started", rpc.ErrUnavailable, execKey(req.GetExecution()), b.ID)
	}
	return &sluicev1.TriggerCheckpointResponse{}, nil
}

// NotifyCheckpoint passes a checkpoint's completion to every task of the job attempt.
// A lost notification is covered by the next one (sinks commit everything up to it).
//
// An abort (complete = false) is sent for a savepoint that was to stop the job only: the
// tasks that stopped at its barrier go on.
func (tm *TaskManager) NotifyCheckpoint(_ context.Context, req *sluicev1.NotifyCheckpointRequest) (*sluicev1.NotifyCheckpointResponse, error) {
	tm.mu.Lock()
	var targets []*runningTask
	for _, rt := range tm.tasks {
		if rt.id.GetJobId() == req.GetJobId() && rt.id.GetAttempt() == req.GetAttempt() && rt.task != nil {
			targets = append(targets, rt)
		}
	}
	tm.mu.Unlock()
	for _, rt := range targets {
		chain := rt.cps.chain
		id := req.GetCheckpointId()
		if !req.GetComplete() {
			if !tm.post(rt, rt.task.NotifyCheckpointAborted(id)) {
				tm.log.Warn("task busy: abort of the savepoint stopping the job dropped (the next checkpoint's barrier ends the stop)", "checkpoint", id)
			}
			continue
		}
		if !tm.post(rt, rt.task.NotifyCheckpointComplete(id, chain.NotifyCheckpointComplete)) {
			tm.log.Warn("task busy: checkpoint notification dropped (the next one covers it)", "checkpoint", id)
		}
	}
	return &sluicev1.NotifyCheckpointResponse{}, nil
}

// ErrBadDeployment marks a deployment descriptor that does not fit the job graph.
var ErrBadDeployment = errors.New("deployment does not fit the job graph")

// run runs one task and reports its states to the jobmanager.
func (tm *TaskManager) run(ctx context.Context, rt *runningTask, task *runtime.Task, log *slog.Logger) {
	defer tm.wg.Done()
	// Running once its state is restored: until then the task shows as deploying, and
	// the jobmanager starts the attempt's checkpoints only when every task runs, so a
	// restore, however long, is not held to the checkpoint timeout.
	task.OnRunning = func() {
		tm.report(rt, sluicev1.TaskState_TASK_STATE_RUNNING, "")
		log.Info("task running", "task", task.Name)
	}
	err := task.Run(ctx)
	if err != nil {
		rt.cps.cancelAll()
	}
	state, failure := sluicev1.TaskState_TASK_STATE_FINISHED, ""
	switch {
	case err == nil:
		log.Info("task finished", "task", task.Name, "records_in", rt.metrics.RecordsIn.Load(), "records_out", rt.metrics.RecordsOut.Load())
	case ctx.Err() != nil:
		state = sluicev1.TaskState_TASK_STATE_CANCELED
		log.Info("task canceled", "task", task.Name)
	default:
		state, failure = sluicev1.TaskState_TASK_STATE_FAILED, err.Error()
		log.Warn("task failed", "task", task.Name, "err", err)
	}
	tm.mu.Lock()
	delete(tm.tasks, execKey(rt.id))
	tm.mu.Unlock()
	rt.cancel()
	tm.report(rt, state, failure)
}

// report tells the jobmanager a task's state, retrying briefly: a lost report is
// repaired by the jobmanager's failure detection.
func (tm *TaskManager) report(rt *runningTask, state sluicev1.TaskState, failure string) {
	req := &sluicev1.UpdateTaskStateRequest{
		TaskManagerId: tm.cfg.ID, Execution: rt.id, State: state, Failure: failure, Metrics: taskMetrics(rt),
	}
	for i := 0; i < 5; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := tm.jm.UpdateTaskState(ctx, req)
		cancel()
		if err == nil {
			return
		}
		tm.log.Warn("cannot report task state", "state", state, "attempt", i+1, "err", err)
		if i < 4 {
			time.Sleep(200 * time.Millisecond << i)
		}
	}
}
