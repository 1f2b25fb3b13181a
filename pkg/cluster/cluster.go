// Package cluster runs a jobmanager and task managers in one process, each on its own
// loopback port with real gRPC between them: the local cluster of `streamctl local` and
// the fast integration tests.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/pkg/jobmanager"
	"github.com/sluice-stream/sluice/pkg/meta"
	"github.com/sluice-stream/sluice/pkg/metastore"
	"github.com/sluice-stream/sluice/pkg/taskmanager"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Options configure a local cluster.
type Options struct {
	TaskManagers int
	JobManager   jobmanager.Config
	// TaskManager is the template for every task manager (ID and addresses are set;
	// a LocalStateDir becomes <LocalStateDir>/<ID>).
	TaskManager taskmanager.Config
	// JobManagerAddress to listen on (default 127.0.0.1:0).
	JobManagerAddress string
	Log               *slog.Logger
	// EtcdDir is the embedded etcd's data directory when checkpointing is on and no
	// metadata store is given (empty: a temporary directory).
	EtcdDir string
	// StandbyJobManagers start that many more jobmanagers on the same metadata store,
	// each with its own etcd connection: one leads, the others wait as standbys and take
	// over (recovering the jobs) when it stops. Task managers then find the leader
	// through etcd.
	StandbyJobManagers int
}

// Cluster is a running local cluster.
type Cluster struct {
	JobManagerAddr string
	log            *slog.Logger
	wg             sync.WaitGroup
	mu             sync.Mutex
	errs           []error
	closeMeta      func()
	jms            []*jmHandle
	tms            []*tmHandle
	opts           Options
}

type jmHandle struct {
	addr      string
	stop      context.CancelFunc
	done      chan struct{}
	closeMeta func() // its own etcd connection (standbys)
}

type tmHandle struct {
	id   string
	stop context.CancelFunc
	done chan struct{}
}

// Start starts the jobmanager and the task managers.
func Start(opts Options) (*Cluster, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.JobManagerAddress == "" {
		opts.JobManagerAddress = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", opts.JobManagerAddress)
	if err != nil {
		return nil, fmt.Errorf("jobmanager listen: %w", err)
	}
	c := &Cluster{JobManagerAddr: lis.Addr().String(), log: opts.Log}
	if (opts.JobManager.Checkpoints.Storage != "" || opts.StandbyJobManagers > 0) && opts.JobManager.Meta == nil {
		store, closeStore, err := metastore.Open(context.Background(), metastore.Options{EmbeddedDir: opts.EtcdDir, UnsafeNoFsync: true}, opts.Log)
		if err != nil {
			lis.Close()
			return nil, err
		}
		opts.JobManager.Meta = store
		c.closeMeta = closeStore
	}
	if opts.StandbyJobManagers > 0 {
		opts.TaskManager.Meta = opts.JobManager.Meta
	}
	c.opts = opts
	c.startJobManager(lis, opts.JobManager, nil)
	for i := 0; i < opts.StandbyJobManagers; i++ {
		store := opts.JobManager.Meta
		standby, err := meta.Connect(context.Background(), store.Client().Endpoints(), store.Prefix(), opts.Log.With("component", "meta"))
		if err != nil {
			c.Stop()
			return nil, err
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			standby.Close()
			c.Stop()
			return nil, fmt.Errorf("jobmanager listen: %w", err)
		}
		cfg := opts.JobManager
		cfg.Meta = standby
		c.startJobManager(l, cfg, func() { standby.Close() })
	}
	for i := 0; i < opts.TaskManagers; i++ {
		if _, err := c.AddTaskManager(fmt.Sprintf("tm-%d", i+1)); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) startJobManager(lis net.Listener, cfg jobmanager.Config, closeMeta func()) {
	jm := jobmanager.New(cfg, c.log.With("component", "jobmanager"))
	ctx, cancel := context.WithCancel(context.Background())
	h := &jmHandle{addr: lis.Addr().String(), stop: cancel, done: make(chan struct{}), closeMeta: closeMeta}
	c.mu.Lock()
	c.jms = append(c.jms, h)
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(h.done)
		c.record(jm.Serve(ctx, lis))
		if h.closeMeta != nil {
			h.closeMeta()
		}
	}()
}

// JobManagerAddrs are the addresses of all jobmanagers, the first one's first.
func (c *Cluster) JobManagerAddrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, h := range c.jms {
		out = append(out, h.addr)
	}
	return out
}

// StopJobManager shuts the jobmanager at addr down (it resigns, and a standby takes
// over) and waits for it.
func (c *Cluster) StopJobManager(addr string) error {
	c.mu.Lock()
	var h *jmHandle
	for _, j := range c.jms {
		if j.addr == addr {
			h = j
		}
	}
	c.mu.Unlock()
	if h == nil {
		return fmt.Errorf("no jobmanager at %s", addr)
	}
	h.stop()
	<-h.done
	return nil
}

func (c *Cluster) record(err error) {
	if err != nil {
		c.mu.Lock()
		c.errs = append(c.errs, err)
		c.mu.Unlock()
	}
}

// AddTaskManager starts one more task manager.
func (c *Cluster) AddTaskManager(id string) (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("task manager listen: %w", err)
	}
	cfg := c.opts.TaskManager
	cfg.ID = id
	if cfg.LocalStateDir != "" {
		// Each task manager has its own local recovery root, as separate processes would.
		cfg.LocalStateDir = filepath.Join(cfg.LocalStateDir, id)
	}
	cfg.JobManager = c.JobManagerAddr
	tm := taskmanager.New(cfg, c.log.With("component", "taskmanager"))
	ctx, cancel := context.WithCancel(context.Background())
	h := &tmHandle{id: tm.ID(), stop: cancel, done: make(chan struct{})}
	c.mu.Lock()
	c.tms = append(c.tms, h)
	c.mu.Unlock()
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		defer close(h.done)
		c.record(tm.Serve(ctx, lis))
	}()
	return tm.ID(), nil
}

// StopTaskManager shuts one task manager down gracefully and waits for it.
func (c *Cluster) StopTaskManager(id string) error {
	c.mu.Lock()
	var h *tmHandle
	for _, t := range c.tms {
		if t.id == id {
			h = t
		}
	}
	c.mu.Unlock()
	if h == nil {
		return fmt.Errorf("no task manager %q", id)
	}
	h.stop()
	<-h.done
	return nil
}

// Stop shuts every task manager down, then the jobmanager, and waits for all of them.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	tms := c.tms
	c.mu.Unlock()
	for _, h := range tms {
		h.stop()
	}
	for _, h := range tms {
		<-h.done
	}
	c.mu.Lock()
	jms := c.jms
	c.mu.Unlock()
	for _, h := range jms {
		h.stop()
	}
	c.wg.Wait()
	if c.closeMeta != nil {
		c.closeMeta()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.errs...)
}

// WaitForSlots polls the jobmanager until the registered task managers offer want slots
// in total, for at most 15 s.
func WaitForSlots(ctx context.Context, js sluicev1.JobServiceClient, want int) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		resp, err := js.ListTaskManagers(rctx, &sluicev1.ListTaskManagersRequest{})
		cancel()
		if err == nil {
			n := 0
			for _, tm := range resp.GetTaskManagers() {
				n += int(tm.GetSlots())
			}
			if n >= want {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("task managers did not register within 15s (see the cluster log)")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
