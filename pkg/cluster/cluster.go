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
	"sync"

	"github.com/sluice-stream/sluice/pkg/jobmanager"
	"github.com/sluice-stream/sluice/pkg/metastore"
	"github.com/sluice-stream/sluice/pkg/taskmanager"
)

// Options configure a local cluster.
type Options struct {
	TaskManagers int
	JobManager   jobmanager.Config
	// TaskManager is the template for every task manager (ID and addresses are set).
	TaskManager taskmanager.Config
	// JobManagerAddress to listen on (default 127.0.0.1:0).
	JobManagerAddress string
	Log               *slog.Logger
	// EtcdDir is the embedded etcd's data directory when checkpointing is on and no
	// metadata store is given (empty: a temporary directory).
	EtcdDir string
}

// Cluster is a running local cluster.
type Cluster struct {
	JobManagerAddr string
	log            *slog.Logger
	wg             sync.WaitGroup
	mu             sync.Mutex
	errs           []error
	stopJM         context.CancelFunc
	closeMeta      func()
	tms            []*tmHandle
	opts           Options
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
	c := &Cluster{JobManagerAddr: lis.Addr().String(), log: opts.Log, opts: opts}
	if opts.JobManager.Checkpoints.Storage != "" && opts.JobManager.Meta == nil {
		store, closeStore, err := metastore.Open(context.Background(), metastore.Options{EmbeddedDir: opts.EtcdDir, UnsafeNoFsync: true}, opts.Log)
		if err != nil {
			lis.Close()
			return nil, err
		}
		opts.JobManager.Meta = store
		c.closeMeta = closeStore
	}
	jm := jobmanager.New(opts.JobManager, opts.Log.With("component", "jobmanager"))
	ctx, cancel := context.WithCancel(context.Background())
	c.stopJM = cancel
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.record(jm.Serve(ctx, lis))
	}()
	for i := 0; i < opts.TaskManagers; i++ {
		if _, err := c.AddTaskManager(fmt.Sprintf("tm-%d", i+1)); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
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
	c.stopJM()
	c.wg.Wait()
	if c.closeMeta != nil {
		c.closeMeta()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.errs...)
}
