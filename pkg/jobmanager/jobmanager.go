// Package jobmanager is the coordinator daemon: it keeps the slot pool of registered task
// managers, accepts jobs, schedules and deploys their subtasks, watches heartbeats and
// drives each job's state machine (restarts, cancel).
//
// All state lives on one event-loop goroutine; gRPC handlers post closures to it and
// wait. The loop never blocks on I/O: RPCs to task managers run on goroutines that post
// their outcome back as events.
package jobmanager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/graph"
	"github.com/sluice-stream/sluice/pkg/meta"
	"github.com/sluice-stream/sluice/pkg/program"
	"github.com/sluice-stream/sluice/pkg/restart"
	"github.com/sluice-stream/sluice/pkg/rpc"
	"github.com/sluice-stream/sluice/pkg/scheduler"
	"github.com/sluice-stream/sluice/pkg/version"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Clock tells the time; tests inject a fake one.
type Clock interface{ Now() time.Time }

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Config configures the jobmanager.
type Config struct {
	HeartbeatInterval  time.Duration
	HeartbeatTimeout   time.Duration
	SlotRequestTimeout time.Duration
	// NewRestartStrategy returns a fresh strategy for each job (default: no restarts).
	NewRestartStrategy func() restart.Strategy
	// TaskConfig is passed to every deployed task (e.g. the buffer timeout).
	TaskConfig map[string]string
	// Clock defaults to the wall clock.
	Clock Clock
	// TickInterval is how often time-based transitions are checked (default 100ms).
	TickInterval time.Duration
	// Checkpoints configures checkpointing; it needs Meta.
	Checkpoints CheckpointConfig
	// Meta is the metadata store (etcd) the jobmanager campaigns on for leadership and
	// records jobs and checkpoints in; nil keeps nothing durable (no checkpoints).
	Meta *meta.Store
	// ID names this jobmanager in the leader election.
	ID string
	// AdvertiseAddress (host:port) is where task managers and clients reach this
	// jobmanager; the leader publishes it in etcd for task managers that find the leader
	// there. Empty: the listener's address.
	AdvertiseAddress string
}

// JobManager is the coordinator. Create it with New and run it with Serve.
type JobManager struct {
	sluicev1.UnimplementedJobServiceServer
	sluicev1.UnimplementedResourceServiceServer

	cfg    Config
	log    *slog.Logger
	events chan func()
	done   chan struct{} // closed when the loop stops
	conns  rpc.Conns
	io     sync.WaitGroup // RPCs to task managers

	meta  *meta.Store
	lead  *meta.Leadership
	blobs *blobstore.Store // checkpoint storage root

	// life ends when Serve stops; I/O goroutines that retry (etcd outages) watch it.
	life     context.Context
	stopLife context.CancelFunc
	// ready: this jobmanager leads and has recovered the jobs, so it serves calls;
	// readyCh is closed when it first became ready.
	ready   atomic.Bool
	readyCh chan struct{}

	// Owned by the loop goroutine.
	pool     *scheduler.Pool
	lastSeen map[string]time.Time
	jobs     map[string]*job
	order    []string // job IDs in submission order
}

// New returns a jobmanager.
func New(cfg Config, log *slog.Logger) *JobManager {
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = time.Second
	}
	if cfg.HeartbeatTimeout <= 0 {
		cfg.HeartbeatTimeout = 10 * time.Second
	}
	if cfg.SlotRequestTimeout <= 0 {
		cfg.SlotRequestTimeout = 5 * time.Minute
	}
	if cfg.NewRestartStrategy == nil {
		cfg.NewRestartStrategy = func() restart.Strategy { return restart.None{} }
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.TickInterval <= 0 {
		cfg.TickInterval = 100 * time.Millisecond
	}
	if cfg.ID == "" {
		cfg.ID = "jm-" + uuid.NewString()[:8]
	}
	life, stopLife := context.WithCancel(context.Background())
	return &JobManager{
		cfg: cfg, log: log, events: make(chan func()), done: make(chan struct{}), meta: cfg.Meta,
		pool: scheduler.NewPool(), lastSeen: map[string]time.Time{}, jobs: map[string]*job{},
		life: life, stopLife: stopLife, readyCh: make(chan struct{}),
	}
}

// Serve runs the jobmanager on lis until ctx ends. It listens at once; with a metadata
// store it campaigns for leadership (waiting while another jobmanager leads) and, once
// leading, recovers the jobs recorded in etcd before it answers calls (see gate). It
// stops with an error when it loses the leadership (fail-stop: its writes would be
// refused anyway; a supervisor restarts it as a candidate). Jobs are not canceled on
// the way out: they stay recorded in etcd for the next leader.
func (jm *JobManager) Serve(ctx context.Context, lis net.Listener) error {
	defer jm.stopLife()
	if jm.cfg.AdvertiseAddress == "" {
		jm.cfg.AdvertiseAddress = lis.Addr().String()
	}
	if jm.cfg.Checkpoints.Storage != "" {
		if jm.meta == nil {
			lis.Close()
			return errors.New("checkpointing needs the metadata store (etcd)")
		}
		b, err := blobstore.Open(ctx, jm.cfg.Checkpoints.Storage)
		if err != nil {
			lis.Close()
			return fmt.Errorf("checkpoint storage: %w", err)
		}
		jm.blobs = b
		defer b.Close()
	}
	opts := append(rpc.ServerOptions(), grpc.ChainUnaryInterceptor(jm.gate))
	srv := grpc.NewServer(opts...)
	sluicev1.RegisterJobServiceServer(srv, jm)
	sluicev1.RegisterResourceServiceServer(srv, jm)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()
	stopServer := func() {
		jm.ready.Store(false)
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			srv.Stop()
			<-stopped
		}
	}
	jm.log.Info("jobmanager listening", "address", lis.Addr().String(), "advertised", jm.cfg.AdvertiseAddress, "build", version.BuildID(),
		"heartbeat_interval", jm.cfg.HeartbeatInterval, "heartbeat_timeout", jm.cfg.HeartbeatTimeout)

	var lost <-chan struct{}
	if jm.meta != nil {
		jm.log.Info("campaigning for leadership", "id", jm.cfg.ID, "address", jm.cfg.AdvertiseAddress)
		lead, err := jm.meta.Campaign(ctx, jm.cfg.ID, meta.WithAddress(jm.cfg.AdvertiseAddress))
		if err != nil {
			stopServer()
			if ctx.Err() != nil {
				return nil // stopped while a standby
			}
			return fmt.Errorf("leader election: %w", err)
		}
		jm.lead = lead
		lost = lead.Done()
		defer func() {
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = lead.Resign(rctx)
			cancel()
		}()
		jm.log.Info("leading", "id", jm.cfg.ID, "revision", lead.Revision())
		// Recovery waits through etcd outages; it ends early on shutdown or when the
		// leadership is lost meanwhile.
		rctx, cancel := context.WithCancel(ctx)
		stop := make(chan struct{})
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			select {
			case <-lost:
				cancel()
			case <-stop:
			}
		}()
		err = jm.recoverJobs(rctx)
		close(stop)
		<-watched
		cancel()
		if err != nil {
			stopServer()
			select {
			case <-lost:
				jm.log.Error("lost leadership", "id", jm.cfg.ID)
				return errors.New("lost leadership in etcd while recovering the jobs: stopping (restart to campaign again)")
			default:
			}
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("recover the jobs: %w", err)
		}
	}

	loopCtx, stopLoop := context.WithCancel(context.Background())
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		jm.loop(loopCtx)
	}()
	jm.ready.Store(true)
	close(jm.readyCh)
	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("serve: %w", err)
	case <-lost:
		err = errors.New("lost leadership in etcd: stopping (restart to campaign again)")
		jm.log.Error("lost leadership", "id", jm.cfg.ID)
	}
	jm.log.Info("jobmanager shutting down")
	stopServer()
	stopLoop()
	<-loopDone
	jm.stopLife()
	jm.io.Wait()
	jm.conns.Close()
	return err
}

// gate holds calls until this jobmanager leads and has recovered the jobs (at most
// 30 s, or the call's deadline): a jobmanager that is about to lead (nobody else does)
// answers them then. A standby, while another jobmanager leads, refuses them at once
// and names the leader.
func (jm *JobManager) gate(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if jm.ready.Load() {
		return h(ctx, req)
	}
	wait := time.NewTimer(30 * time.Second)
	defer wait.Stop()
	for {
		if jm.meta != nil {
			lctx, cancel := context.WithTimeout(ctx, time.Second)
			li, err := jm.meta.Leader(lctx)
			cancel()
			if err == nil && li.CandidateID != jm.cfg.ID {
				return nil, fmt.Errorf("%w: jobmanager %s is a standby; the leader is %s at %s", rpc.ErrFailedPrecondition, jm.cfg.ID, li.CandidateID, li.Address)
			}
		}
		select {
		case <-jm.readyCh:
			if !jm.ready.Load() {
				return nil, fmt.Errorf("%w: jobmanager %s is shutting down", rpc.ErrUnavailable, jm.cfg.ID)
			}
			return h(ctx, req)
		case <-ctx.Done():
		case <-wait.C:
		case <-time.After(250 * time.Millisecond):
			continue
		}
		return nil, fmt.Errorf("%w: jobmanager %s is not ready: it is campaigning for leadership or recovering the jobs", rpc.ErrFailedPrecondition, jm.cfg.ID)
	}
}

func (jm *JobManager) loop(ctx context.Context) {
	defer close(jm.done)
	ticker := time.NewTicker(jm.cfg.TickInterval)
	defer ticker.Stop()
	for {
		select {
		case f := <-jm.events:
			f()
		case <-ticker.C:
			jm.tick()
		case <-ctx.Done():
			return
		}
	}
}

// do runs f on the loop and waits for it.
func (jm *JobManager) do(ctx context.Context, f func()) error {
	ran := make(chan struct{})
	select {
	case jm.events <- func() { f(); close(ran) }:
	case <-jm.done:
		return fmt.Errorf("%w: jobmanager is shutting down", rpc.ErrUnavailable)
	case <-ctx.Done():
		return ctx.Err()
	}
	<-ran
	return nil
}

// post queues f on the loop without waiting (used by I/O goroutines).
func (jm *JobManager) post(f func()) {
	select {
	case jm.events <- f:
	case <-jm.done:
	}
}

func (jm *JobManager) now() time.Time { return jm.cfg.Clock.Now() }

// tick: declare silent task managers dead, then advance every job's timers.
func (jm *JobManager) tick() {
	now := jm.now()
	for _, tm := range jm.pool.List() {
		if seen := jm.lastSeen[tm.ID]; now.Sub(seen) > jm.cfg.HeartbeatTimeout {
			jm.log.Warn("task manager lost: no heartbeat", "tm", tm.ID, "address", tm.Address, "silent_for", now.Sub(seen).Round(time.Millisecond))
			jm.removeTaskManager(tm.ID, fmt.Sprintf("no heartbeat for %s", now.Sub(seen).Round(time.Millisecond)), false, now)
		}
	}
	for _, id := range jm.order {
		j := jm.jobs[id]
		jm.exec(j, j.tick(jm.pool, now))
		if j.cp != nil {
			jm.tickChain(j, now)
		}
		if j.cp != nil {
			// Savepoints waiting for a slot go before a periodic checkpoint.
			jm.tickSavepoints(j, now)
		}
		if j.cp != nil && j.cp.started {
			jm.performCheckpoint(j, j.cp.coord.Tick(now))
			jm.syncCheckpoints(j)
		}
	}
}

func (jm *JobManager) removeTaskManager(id, why string, atDeploy bool, now time.Time) {
	if tm := jm.pool.Get(id); tm != nil {
		tm.Alive = false
	}
	for _, jid := range jm.order {
		j := jm.jobs[jid]
		jm.exec(j, j.taskManagerLost(jm.pool, id, why, atDeploy, now))
	}
	jm.pool.Remove(id)
	delete(jm.lastSeen, id)
}

// exec performs a job's actions: RPCs on goroutines whose outcome is posted back.
func (jm *JobManager) exec(j *job, acts []action) {
	for _, a := range acts {
		addr := a.tm.Address
		id := a.task.id
		switch a.kind {
		case actDeploy:
			req := jm.deployment(j, a.task)
			if req.GetRestoreCheckpointId() != 0 && j.cp.restoredAttempt != j.attempt {
				j.cp.restoredAttempt, j.cp.restoredID = j.attempt, req.GetRestoreCheckpointId()
				jm.log.Info("restoring from checkpoint", "job", j.id, "attempt", j.attempt, "checkpoint", req.GetRestoreCheckpointId())
			}
			// The task reads its in-flight data (unaligned checkpoints) before it answers:
			// the timeout grows with the state it restores.
			timeout := deployTimeout(req)
			jm.io.Add(1)
			go func() {
				defer jm.io.Done()
				err := jm.callTMWithin(addr, timeout, func(ctx context.Context, c sluicev1.TaskServiceClient) error {
					_, err := c.DeployTask(ctx, req)
					return err
				})
				if err != nil {
					jm.post(func() {
						jm.log.Warn("deploy failed", "job", j.id, "attempt", id.GetAttempt(), "task", a.task.vertex.Name, "subtask", id.GetSubtask(), "tm", a.tm.ID, "err", err)
						if status.Code(err) == codes.Unavailable && jm.pool.Get(a.tm.ID) == a.tm {
							// A task manager that cannot be reached offers no slots: without
							// this, restarts before its heartbeat times out would be placed on
							// it again and use up the restart strategy. If it is alive, its
							// next heartbeat makes it register again.
							jm.log.Warn("task manager unreachable: removing it until it registers again", "tm", a.tm.ID, "address", addr)
							jm.removeTaskManager(a.tm.ID, "unreachable", true, jm.now())
						}
						jm.exec(j, j.deployFailed(jm.pool, id, errors.New(rpc.Message(err, "task manager", addr)), jm.now()))
					})
				}
			}()
		case actCancel:
			jm.io.Add(1)
			go func() {
				defer jm.io.Done()
				err := jm.callTM(addr, func(ctx context.Context, c sluicev1.TaskServiceClient) error {
					_, err := c.CancelTask(ctx, &sluicev1.CancelTaskRequest{Execution: id})
					return err
				})
				if err != nil {
					jm.post(func() { jm.exec(j, j.cancelFailed(jm.pool, id, jm.now())) })
				}
			}()
		}
	}
	jm.logTransition(j)
	jm.syncCheckpoints(j)
	jm.persist(j)
	jm.settleStop(j)
}

func (jm *JobManager) logTransition(j *job) {
	if j.loggedState == j.state && j.loggedAttempt == j.attempt {
		return
	}
	j.loggedState, j.loggedAttempt = j.state, j.attempt
	args := []any{"job", j.id, "name", j.graph.GetName(), "state", jobStateName(j.state), "attempt", j.attempt}
	if j.failure != "" && j.state != sluicev1.JobState_JOB_STATE_RUNNING && j.state != sluicev1.JobState_JOB_STATE_FINISHED {
		args = append(args, "cause", j.failure)
	}
	jm.log.Info("job state", args...)
}

// rpcTimeout bounds the RPCs to task managers.
const rpcTimeout = 30 * time.Second

func (jm *JobManager) callTM(addr string, f func(context.Context, sluicev1.TaskServiceClient) error) error {
	return jm.callTMWithin(addr, rpcTimeout, f)
}

func (jm *JobManager) callTMWithin(addr string, timeout time.Duration, f func(context.Context, sluicev1.TaskServiceClient) error) error {
	cc, err := jm.conns.Get(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return f(ctx, sluicev1.NewTaskServiceClient(cc))
}

// deployTimeout bounds a deployment: rpcTimeout, plus the time to read the state it
// restores at restoreRate (a task reads its in-flight data before it answers; its keyed
// state after, while it shows as deploying).
func deployTimeout(req *sluicev1.DeployTaskRequest) time.Duration {
	return timeoutFor(rpcTimeout, restoreBytes(req.GetRestore()))
}

// backend is the state backend the jobmanager's deployments ask for ("" when they name
// none: each task manager's own).
func (jm *JobManager) backend() string {
	switch b := jm.cfg.TaskConfig["state.backend.type"]; b {
	case "heap":
		return "hashmap"
	default:
		return b
	}
}

// deployment builds the descriptor of one task: where each input channel's producer
// runs and how many consumers each output has.
func (jm *JobManager) deployment(j *job, t *task) *sluicev1.DeployTaskRequest {
	v := t.vertex
	s := int(t.id.GetSubtask())
	req := &sluicev1.DeployTaskRequest{Execution: t.id, JobGraph: j.graph, Parallelism: int32(v.Parallelism), Config: jm.cfg.TaskConfig}
	if j.cp != nil {
		req.CheckpointStorage = jm.cfg.Checkpoints.Storage
		if md := j.cp.latest; md != nil {
			req.RestoreStorage = j.cp.latestStorage
			req.RestoreCheckpointId = md.GetCheckpointId()
			req.Restore = restoreFor(md, v, s, int(j.graph.GetMaxParallelism()))
		}
	}
	for _, ei := range v.Inputs {
		e := j.graph.GetEdges()[ei]
		pv := j.plan.Vertices[j.plan.VertexOf[e.GetSourceUid()]]
		in := &sluicev1.InputGateDeployment{Edge: int32(ei)}
		for _, p := range graph.ConsumerChannels(e, s, pv.Parallelism) {
			addr := ""
			if tm := jm.pool.Get(j.slots[p]); tm != nil {
				addr = tm.Address
			}
			in.ProducerAddresses = append(in.ProducerAddresses, addr)
		}
		req.Inputs = append(req.Inputs, in)
	}
	for _, ei := range v.Outputs {
		e := j.graph.GetEdges()[ei]
		cv := j.plan.Vertices[j.plan.VertexOf[e.GetTargetUid()]]
		req.Outputs = append(req.Outputs, &sluicev1.OutputDeployment{Edge: int32(ei), ConsumerParallelism: int32(cv.Parallelism)})
	}
	return req
}

// ---- ResourceService ----

// RegisterTaskManager adds (or re-adds) a task manager's slots to the pool. A task
// manager that registers again has lost its tasks.
func (jm *JobManager) RegisterTaskManager(ctx context.Context, req *sluicev1.RegisterTaskManagerRequest) (*sluicev1.RegisterTaskManagerResponse, error) {
	if req.GetId() == "" || req.GetAddress() == "" || req.GetSlots() < 1 {
		return nil, fmt.Errorf("%w: registration needs an id, an address and at least one slot", rpc.ErrInvalid)
	}
	err := jm.do(ctx, func() {
		now := jm.now()
		if jm.pool.Get(req.GetId()) != nil {
			jm.removeTaskManager(req.GetId(), "it registered again (restarted)", false, now)
		}
		jm.pool.Add(req.GetId(), req.GetAddress(), int(req.GetSlots()), req.GetBuildId())
		jm.lastSeen[req.GetId()] = now
		jm.log.Info("task manager registered", "tm", req.GetId(), "address", req.GetAddress(), "slots", req.GetSlots(), "free_slots", jm.pool.FreeSlots())
		if req.GetBuildId() != version.BuildID() {
			jm.log.Warn("task manager runs another build; registered Go jobs will not deploy on it", "tm", req.GetId(), "its_build", req.GetBuildId(), "build", version.BuildID())
		}
		for _, id := range jm.order {
			jm.exec(jm.jobs[id], jm.jobs[id].trySchedule(jm.pool, now))
		}
	})
	if err != nil {
		return nil, err
	}
	return &sluicev1.RegisterTaskManagerResponse{HeartbeatIntervalMs: jm.cfg.HeartbeatInterval.Milliseconds()}, nil
}

// Heartbeat records a task manager as alive and takes its task metrics. Tasks that no
// current attempt expects on it are returned for canceling.
func (jm *JobManager) Heartbeat(ctx context.Context, req *sluicev1.HeartbeatRequest) (*sluicev1.HeartbeatResponse, error) {
	resp := &sluicev1.HeartbeatResponse{}
	err := jm.do(ctx, func() {
		if jm.pool.Get(req.GetTaskManagerId()) == nil {
			return
		}
		resp.Known = true
		jm.lastSeen[req.GetTaskManagerId()] = jm.now()
		for _, m := range req.GetTasks() {
			id := m.GetExecution()
			j := jm.jobs[id.GetJobId()]
			var t *task
			if j != nil {
				t = j.find(id)
			}
			// Tasks nobody expects any more, and tasks being canceled (the cancel RPC
			// may have raced the deployment), are canceled again.
			if t == nil || t.tm != req.GetTaskManagerId() || t.terminal() || t.state == sluicev1.TaskState_TASK_STATE_CANCELING {
				resp.Cancel = append(resp.Cancel, id)
				continue
			}
			t.setMetrics(m, jm.now())
		}
		for _, id := range req.GetLocalStateJobs() {
			if j := jm.jobs[id]; j != nil && j.terminal() {
				resp.EndedJobs = append(resp.EndedJobs, id)
			}
		}
	})
	return resp, err
}

// UnregisterTaskManager removes a task manager that is shutting down.
func (jm *JobManager) UnregisterTaskManager(ctx context.Context, req *sluicev1.UnregisterTaskManagerRequest) (*sluicev1.UnregisterTaskManagerResponse, error) {
	err := jm.do(ctx, func() {
		if jm.pool.Get(req.GetTaskManagerId()) != nil {
			jm.log.Info("task manager unregistered", "tm", req.GetTaskManagerId(), "reason", req.GetReason())
			jm.removeTaskManager(req.GetTaskManagerId(), "it shut down", false, jm.now())
		}
	})
	return &sluicev1.UnregisterTaskManagerResponse{}, err
}

// UpdateTaskState applies a task's state change to its job.
func (jm *JobManager) UpdateTaskState(ctx context.Context, req *sluicev1.UpdateTaskStateRequest) (*sluicev1.UpdateTaskStateResponse, error) {
	err := jm.do(ctx, func() {
		j := jm.jobs[req.GetExecution().GetJobId()]
		if j == nil {
			return
		}
		jm.exec(j, j.taskUpdate(jm.pool, req.GetExecution(), req.GetState(), req.GetFailure(), req.GetMetrics(), jm.now()))
	})
	return &sluicev1.UpdateTaskStateResponse{}, err
}

// ---- JobService ----

// checkProgram checks that this jobmanager's build can run the graph: the build ID of a
// registered Go job, and the operators of the rebuilt program.
func (jm *JobManager) checkProgram(g *sluicev1.JobGraph) error {
	if _, ok := g.GetProgram().GetKind().(*sluicev1.Program_Registered); ok && g.GetBuildId() != version.BuildID() {
		return fmt.Errorf("%w: job %q was compiled by build %s but the jobmanager runs build %s; submit with the same build",
			rpc.ErrFailedPrecondition, g.GetName(), g.GetBuildId(), version.BuildID())
	}
	prog, err := program.Compile(g.GetProgram(), jm.log)
	if err != nil {
		return fmt.Errorf("%w: %v", rpc.ErrInvalid, err)
	}
	if d := graph.Diff(g, prog.Graph); d != "" {
		return fmt.Errorf("%w: job %q does not match this build's operators: %s", rpc.ErrFailedPrecondition, g.GetName(), d)
	}
	return nil
}

// SubmitJob validates a job graph against this build, records it in etcd and schedules
// it. With resubmit_job_id the graph is that earlier job's, rebuilt at a new
// parallelism (streamctl rescale).
func (jm *JobManager) SubmitJob(ctx context.Context, req *sluicev1.SubmitJobRequest) (*sluicev1.SubmitJobResponse, error) {
	g := req.GetJobGraph()
	switch {
	case req.GetResubmitJobId() != "":
		if g != nil {
			return nil, fmt.Errorf("%w: give a job graph or resubmit_job_id, not both", rpc.ErrInvalid)
		}
		var err error
		if g, err = jm.regraph(ctx, req.GetResubmitJobId(), int(req.GetParallelism())); err != nil {
			return nil, err
		}
	case req.GetParallelism() != 0:
		return nil, fmt.Errorf("%w: parallelism applies to resubmit_job_id (a graph carries its own)", rpc.ErrInvalid)
	}
	plan, err := graph.Build(g)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", rpc.ErrInvalid, err)
	}
	if err := jm.checkProgram(g); err != nil {
		return nil, err
	}
	var restored *sluicev1.CheckpointMetadata
	var restoredFrom string
	var claim *claimState
	switch req.GetClaimMode() {
	case sluicev1.ClaimMode_CLAIM_MODE_UNSPECIFIED, sluicev1.ClaimMode_CLAIM_MODE_NO_CLAIM:
	case sluicev1.ClaimMode_CLAIM_MODE_CLAIM:
		if req.GetRestorePath() == "" {
			return nil, fmt.Errorf("%w: claim mode applies to a job started from a savepoint or retained checkpoint (--from-savepoint, --from-checkpoint)", rpc.ErrInvalid)
		}
	default:
		return nil, fmt.Errorf("%w: unknown claim mode %v", rpc.ErrInvalid, req.GetClaimMode())
	}
	if req.GetAllowNonRestoredState() && req.GetRestorePath() == "" {
		return nil, fmt.Errorf("%w: allowing non-restored state applies to a job started from a savepoint or retained checkpoint (--from-savepoint, --from-checkpoint)", rpc.ErrInvalid)
	}
	if p := req.GetRestorePath(); p != "" {
		if !jm.checkpointsEnabled() {
			return nil, fmt.Errorf("%w: starting from a savepoint or checkpoint needs checkpointing: set execution.checkpointing.dir on the jobmanager", rpc.ErrFailedPrecondition)
		}
		if restored, restoredFrom, err = loadRestore(ctx, p, g, req.GetAllowNonRestoredState(), jm.backend()); err != nil {
			return nil, err
		}
		if req.GetClaimMode() == sluicev1.ClaimMode_CLAIM_MODE_CLAIM {
			if claim, err = jm.checkClaim(ctx, p); err != nil {
				return nil, err
			}
		}
	}
	id := strings.ReplaceAll(uuid.NewString(), "-", "")
	submitted := jm.now()
	// The record reserves the first attempt: a jobmanager that takes over before the job
	// ran starts it as attempt 2.
	rec := &sluicev1.JobRecord{JobGraph: g, RestorePath: req.GetRestorePath(), State: sluicev1.JobState_JOB_STATE_CREATED,
		Attempt: 1, StartTimeUnixMs: submitted.UnixMilli(), ClaimMode: req.GetClaimMode(), AllowNonRestoredState: req.GetAllowNonRestoredState()}
	if jm.meta != nil {
		data, err := proto.Marshal(rec)
		if err != nil {
			return nil, err
		}
		if err := jm.meta.PutJob(ctx, jm.lead, id, data); err != nil {
			return nil, fmt.Errorf("%w: record the job: %v", rpc.ErrUnavailable, err)
		}
	}
	var initErr error
	err = jm.do(ctx, func() {
		now := jm.now()
		j := newJob(id, g, plan, jm.cfg.NewRestartStrategy(), submitted)
		j.restorePath, j.claimMode, j.allowNonRestored = req.GetRestorePath(), req.GetClaimMode(), req.GetAllowNonRestoredState()
		if jm.meta != nil {
			j.attemptLimit, j.rec.written = 1, rec
		}
		if initErr = jm.initCheckpoints(j, 0); initErr != nil {
			return
		}
		if restored != nil {
			j.cp.latest, j.cp.latestStorage, j.cp.claim = restored, restoredFrom, claim
			kind := "retained checkpoint"
			if restored.GetKind() == sluicev1.SnapshotKind_SNAPSHOT_KIND_SAVEPOINT {
				kind = "savepoint"
			}
			jm.log.Info("job starts from a "+kind, "job", id, "checkpoint", restored.GetCheckpointId(), "from", restoredFrom,
				"claim_mode", claimModeName(req.GetClaimMode()), "allow_non_restored_state", req.GetAllowNonRestoredState())
		}
		if j.cp != nil {
			jm.prepareRestore(j)
		}
		j.slotTimeout = jm.cfg.SlotRequestTimeout
		jm.jobs[id] = j
		jm.order = append(jm.order, id)
		jm.log.Info("job submitted", "job", id, "name", g.GetName(), "vertices", len(plan.Vertices), "slots", plan.Slots())
		jm.exec(j, j.trySchedule(jm.pool, now))
	})
	if err != nil {
		return nil, err
	}
	if initErr != nil {
		return nil, fmt.Errorf("%w: checkpointing: %v", rpc.ErrFailedPrecondition, initErr)
	}
	return &sluicev1.SubmitJobResponse{JobId: id}, nil
}

// regraph rebuilds the graph of an earlier job from its program at default parallelism
// p (0: the one it was submitted with), keeping its max parallelism, so that its state
// (split into that many key groups) restores.
func (jm *JobManager) regraph(ctx context.Context, jobID string, p int) (*sluicev1.JobGraph, error) {
	if p < 0 {
		return nil, fmt.Errorf("%w: parallelism %d: want at least 1 (or 0 for the job's own)", rpc.ErrInvalid, p)
	}
	var old *sluicev1.JobGraph
	var lerr error
	if err := jm.do(ctx, func() {
		j, err := jm.lookup(jobID)
		if err != nil {
			lerr = err
			return
		}
		old = j.graph
	}); err != nil {
		return nil, err
	}
	if lerr != nil {
		return nil, lerr
	}
	prog := proto.Clone(old.GetProgram()).(*sluicev1.Program)
	if p > 0 {
		prog.Parallelism = int32(p)
	}
	prog.MaxParallelism = old.GetMaxParallelism()
	built, err := program.Compile(prog, jm.log)
	if err != nil {
		return nil, fmt.Errorf("%w: rebuild job %q at parallelism %d: %v", rpc.ErrInvalid, old.GetName(), p, err)
	}
	g := built.Graph
	if g.GetMaxParallelism() != old.GetMaxParallelism() {
		return nil, fmt.Errorf("%w: job %q rebuilt at parallelism %d has max parallelism %d, not %d: its state would not restore", rpc.ErrFailedPrecondition, old.GetName(), p, g.GetMaxParallelism(), old.GetMaxParallelism())
	}
	return g, nil
}

// lookup finds a job by ID or unique ID prefix (as the CLI prints short IDs).
func (jm *JobManager) lookup(id string) (*job, error) {
	if j := jm.jobs[id]; j != nil {
		return j, nil
	}
	var found *job
	if len(id) >= 4 {
		for k, j := range jm.jobs {
			if strings.HasPrefix(k, id) {
				if found != nil {
					return nil, fmt.Errorf("%w: job ID prefix %q is ambiguous", rpc.ErrInvalid, id)
				}
				found = j
			}
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: no job %q (streamctl list shows the jobs)", rpc.ErrNotFound, id)
	}
	return found, nil
}

// ListJobs lists every job, oldest first.
func (jm *JobManager) ListJobs(ctx context.Context, _ *sluicev1.ListJobsRequest) (*sluicev1.ListJobsResponse, error) {
	resp := &sluicev1.ListJobsResponse{}
	err := jm.do(ctx, func() {
		for _, id := range jm.order {
			resp.Jobs = append(resp.Jobs, jm.jobs[id].status())
		}
	})
	return resp, err
}

// GetJob returns one job's status.
func (jm *JobManager) GetJob(ctx context.Context, req *sluicev1.GetJobRequest) (*sluicev1.JobStatus, error) {
	var st *sluicev1.JobStatus
	var lerr error
	err := jm.do(ctx, func() {
		j, err := jm.lookup(req.GetJobId())
		if err != nil {
			lerr = err
			return
		}
		st = j.status()
	})
	if err != nil {
		return nil, err
	}
	return st, lerr
}

// CancelJob cancels a job; canceling a job that already ended is an error. With a
// savepoint, the job is canceled once the savepoint completed, and keeps running if it
// failed.
func (jm *JobManager) CancelJob(ctx context.Context, req *sluicev1.CancelJobRequest) (*sluicev1.CancelJobResponse, error) {
	if req.GetWithSavepoint() {
		resp, err := jm.runSavepoint(ctx, savepointRequest{jobID: req.GetJobId(), kind: savepointCancel, target: req.GetSavepointDir(), format: req.GetSavepointFormat()})
		if err != nil {
			return nil, err
		}
		return &sluicev1.CancelJobResponse{State: resp.GetState(), SavepointPath: resp.GetPath()}, nil
	}
	if req.GetSavepointDir() != "" || req.GetSavepointFormat() != sluicev1.SavepointFormat_SAVEPOINT_FORMAT_UNSPECIFIED {
		return nil, fmt.Errorf("%w: a savepoint directory or format applies to a cancel with savepoint", rpc.ErrInvalid)
	}
	var state sluicev1.JobState
	var lerr error
	err := jm.do(ctx, func() {
		j, err := jm.lookup(req.GetJobId())
		if err != nil {
			lerr = err
			return
		}
		if j.terminal() {
			lerr = fmt.Errorf("%w: job %s already %s", rpc.ErrFailedPrecondition, j.id, jobStateName(j.state))
			return
		}
		jm.log.Info("canceling job", "job", j.id)
		jm.exec(j, j.cancel(jm.pool, jm.now()))
		state = j.state
	})
	if err != nil {
		return nil, err
	}
	if lerr != nil {
		return nil, lerr
	}
	return &sluicev1.CancelJobResponse{State: state}, nil
}

// ListTaskManagers lists the registered task managers.
func (jm *JobManager) ListTaskManagers(ctx context.Context, _ *sluicev1.ListTaskManagersRequest) (*sluicev1.ListTaskManagersResponse, error) {
	resp := &sluicev1.ListTaskManagersResponse{}
	err := jm.do(ctx, func() {
		for _, tm := range jm.pool.List() {
			resp.TaskManagers = append(resp.TaskManagers, &sluicev1.TaskManagerInfo{
				Id: tm.ID, Address: tm.Address, Slots: int32(tm.Slots), FreeSlots: int32(tm.Free()),
				LastHeartbeatUnixMs: jm.lastSeen[tm.ID].UnixMilli(), Alive: tm.Alive, BuildId: tm.BuildID,
			})
		}
		slices.SortFunc(resp.TaskManagers, func(a, b *sluicev1.TaskManagerInfo) int { return strings.Compare(a.Id, b.Id) })
	})
	return resp, err
}

// claimModeName is the name streamctl uses for a claim mode.
func claimModeName(m sluicev1.ClaimMode) string {
	if m == sluicev1.ClaimMode_CLAIM_MODE_CLAIM {
		return "claim"
	}
	return "no-claim"
}

// jobStateName is the short name of a job state, e.g. "running".
func jobStateName(s sluicev1.JobState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}
