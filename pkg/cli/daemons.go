package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/config"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	"github.com/sluice-stream/sluice/pkg/metastore"
	"github.com/sluice-stream/sluice/pkg/restart"
	"github.com/sluice-stream/sluice/pkg/taskmanager"
	"github.com/sluice-stream/sluice/pkg/version"
	"github.com/spf13/cobra"
)

// daemonFlags are the flags every daemon shares: a config file, every config key as a
// flag (default < file < flags), and logging.
type daemonFlags struct {
	file      string
	overrides *config.Config
	logLevel  string
	logFormat string
}

func (d *daemonFlags) bind(cmd *cobra.Command) {
	d.overrides = config.New()
	cmd.Flags().StringVarP(&d.file, "config", "c", "", "configuration file (YAML, Flink-style keys)")
	cmd.Flags().StringVar(&d.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	cmd.Flags().StringVar(&d.logFormat, "log-format", "text", "log format: text or json")
	config.BindFlags(cmd.Flags(), d.overrides)
}

func (d *daemonFlags) load(errOut io.Writer) (*config.Config, *slog.Logger, error) {
	c, err := config.LoadWithOverrides(d.file, d.overrides)
	if err != nil {
		return nil, nil, err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(d.logLevel)); err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", d.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch d.logFormat {
	case "text":
		return c, slog.New(slog.NewTextHandler(errOut, opts)), nil
	case "json":
		return c, slog.New(slog.NewJSONHandler(errOut, opts)), nil
	}
	return nil, nil, fmt.Errorf("--log-format %q: use text or json", d.logFormat)
}

func signalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}

// JobManagerConfig turns configuration into the jobmanager's settings.
func JobManagerConfig(c *config.Config) (jobmanager.Config, error) {
	if _, err := restart.FromConfig(c); err != nil {
		return jobmanager.Config{}, err
	}
	cc := checkpoint.DefaultConfig()
	cc.Interval = c.Duration(config.CheckpointingInterval)
	cc.Timeout = c.Duration(config.CheckpointingTimeout)
	cc.MinPause = c.Duration(config.CheckpointingMinPause)
	cc.MaxConcurrent = c.Int(config.CheckpointingMaxConcurrent)
	cc.TolerableFailures = c.Int(config.CheckpointingTolerableFailures)
	if c.String(config.CheckpointingMode) == "AT_LEAST_ONCE" {
		cc.Mode = checkpoint.AtLeastOnce
	}
	if c.Bool(config.CheckpointingUnaligned) {
		if cc.Mode != checkpoint.ExactlyOnce {
			return jobmanager.Config{}, fmt.Errorf("%s needs %s EXACTLY_ONCE: unaligned checkpoints are exactly-once by construction", config.CheckpointingUnaligned, config.CheckpointingMode)
		}
		// Flink's semantics: the timeout only matters with unaligned checkpoints on; 0
		// starts them unaligned, otherwise aligned with a switch after the timeout.
		cc.AlignedTimeout = c.Duration(config.CheckpointingAlignedTimeout)
		cc.Unaligned = cc.AlignedTimeout == 0
	}
	return jobmanager.Config{
		Checkpoints: jobmanager.CheckpointConfig{
			Storage: c.String(config.CheckpointingDir), SavepointDir: c.String(config.SavepointDir), Coordinator: cc, Retained: c.Int(config.CheckpointingNumRetained),
			FullEvery: c.Int(config.CheckpointingIncrementalFullEvery),
		},
		HeartbeatInterval:  c.Duration(config.HeartbeatInterval),
		HeartbeatTimeout:   c.Duration(config.HeartbeatTimeout),
		SlotRequestTimeout: c.Duration(config.SlotRequestTimeout),
		NewRestartStrategy: func() restart.Strategy {
			s, _ := restart.FromConfig(c) // validated above
			return s
		},
		TaskConfig: taskStateConfig(c, map[string]string{
			config.BufferTimeout:         c.Duration(config.BufferTimeout).String(),
			config.AutoWatermarkInterval: c.Duration(config.AutoWatermarkInterval).String(),
		}),
	}, nil
}

// taskStateConfig adds the job-level state backend settings to the deployments' config:
// the backend always (so that every task of a job uses the same one, whatever each task
// manager's own config says), the tuning keys when set (so that the predefined options
// keep theirs otherwise). Memory and local directories are each task manager's own.
func taskStateConfig(c *config.Config, m map[string]string) map[string]string {
	set := c.Map()
	for _, k := range []string{config.StateBackendType, config.StateBackendIncremental, config.StateBackendLocalRecovery, config.RocksDBPredefined, config.RocksDBTransferThreads,
		config.RocksDBDeltas, config.RocksDBBaseShare} {
		if v, ok := set[k]; ok {
			m[k] = v
		} else if key, ok := config.Lookup(k); ok {
			m[k] = key.Default
		}
	}
	for _, k := range []string{config.RocksDBBlockCacheSize, config.RocksDBWriteBufferSize, config.RocksDBWriteBufferCount, config.RocksDBThreads,
		config.RocksDBCompactionStyle, config.RocksDBDynamicLevelSize, config.RocksDBTargetFileSizeBase, config.RocksDBMaxSizeLevelBase, config.RocksDBUniversalRuns} {
		if v, ok := set[k]; ok {
			m[k] = v
		}
	}
	return m
}

// TaskManagerConfig turns configuration into a task manager's settings.
func TaskManagerConfig(c *config.Config, jobManager string) taskmanager.Config {
	return taskmanager.Config{
		ID:                  c.String(config.TaskManagerResourceID),
		JobManager:          jobManager,
		Slots:               c.Int(config.NumberOfTaskSlots),
		HeartbeatTimeout:    c.Duration(config.HeartbeatTimeout),
		BufferSize:          int(c.MemorySize(config.SegmentSize)),
		CreditsPerChannel:   c.Int(config.BuffersPerChannel),
		MaxQueuedPerChannel: c.Int(config.MaxBuffersPerChannel),
		BufferTimeout:       c.Duration(config.BufferTimeout),
		State:               c,
	}
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// metaOptions are the high-availability settings of the etcd metadata store.
func metaOptions(c *config.Config) metastore.Options {
	return metastore.Options{
		Endpoints:      metastore.ParseEndpoints(c.String(config.HighAvailabilityEtcdEndpoints)),
		EmbeddedDir:    c.String(config.HighAvailabilityEtcdEmbeddedDir),
		ClusterID:      c.String(config.HighAvailabilityClusterID),
		LeaseTTL:       c.Duration(config.HighAvailabilityEtcdLeaseTTL),
		RequestTimeout: c.Duration(config.HighAvailabilityEtcdRequestTimeout),
	}
}

// JobManagerCmd is the jobmanager daemon's command line.
func JobManagerCmd(errOut io.Writer) *cobra.Command {
	var d daemonFlags
	cmd := &cobra.Command{
		Use:           "jobmanager",
		Short:         "Run the Sluice jobmanager: the coordinator that schedules jobs onto task managers",
		Args:          exactArgs(0, "no arguments (settings are flags or --config)"),
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.BuildID(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, log, err := d.load(errOut)
			if err != nil {
				return err
			}
			cfg, err := JobManagerConfig(c)
			if err != nil {
				return err
			}
			if cfg.Checkpoints.Storage == "" && cfg.Checkpoints.Coordinator.Interval > 0 {
				return fmt.Errorf("%s is set but %s is not: set where checkpoints go (e.g. file:///var/sluice/checkpoints)",
					config.CheckpointingInterval, config.CheckpointingDir)
			}
			host := c.String(config.JobManagerBindHost)
			if host == "" {
				host = c.String(config.JobManagerRPCAddress)
			}
			addr := hostPort(host, c.Int(config.JobManagerRPCPort))
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			store, closeStore, err := metastore.Open(ctx, metaOptions(c), log)
			if err != nil {
				return err
			}
			defer closeStore()
			cfg.Meta = store
			lis, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w (is another jobmanager running? set jobmanager.rpc.port)", addr, err)
			}
			// Task managers and clients reach it at jobmanager.rpc.address and the port it
			// got; as the leader it publishes that address in etcd.
			cfg.AdvertiseAddress = hostPort(c.String(config.JobManagerRPCAddress), lis.Addr().(*net.TCPAddr).Port)
			return jobmanager.New(cfg, log).Serve(ctx, lis)
		},
	}
	d.bind(cmd)
	return cmd
}

// TaskManagerCmd is the task manager daemon's command line.
func TaskManagerCmd(errOut io.Writer) *cobra.Command {
	var d daemonFlags
	cmd := &cobra.Command{
		Use:           "taskmanager",
		Short:         "Run a Sluice task manager: the worker that offers slots and runs subtasks",
		Args:          exactArgs(0, "no arguments (settings are flags or --config)"),
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.BuildID(),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, log, err := d.load(errOut)
			if err != nil {
				return err
			}
			jm := hostPort(c.String(config.JobManagerRPCAddress), c.Int(config.JobManagerRPCPort))
			bind := c.String(config.TaskManagerBindHost)
			if bind == "" {
				bind = c.String(config.TaskManagerHost)
			}
			addr := hostPort(bind, c.Int(config.TaskManagerRPCPort))
			lis, err := net.Listen("tcp", addr)
			if err != nil {
				return fmt.Errorf("listen on %s: %w (set taskmanager.bind-host / taskmanager.rpc.port)", addr, err)
			}
			// Others reach this task manager at taskmanager.host and the port it got.
			tcfg := TaskManagerConfig(c, jm)
			tcfg.AdvertiseAddress = hostPort(c.String(config.TaskManagerHost), lis.Addr().(*net.TCPAddr).Port)
			if dir := c.String(config.TaskManagerLocalStateDir); dir != "" {
				// Local recovery copies outlive this process: the directory keeps the
				// identity they belong to, so a restart finds its subtasks again.
				ls, err := taskmanager.ClaimLocalState(dir, tcfg.ID)
				if err != nil {
					lis.Close()
					return err
				}
				defer ls.Release()
				if ls.Warning != "" {
					log.Warn(ls.Warning)
				}
				tcfg.ID, tcfg.LocalStateDir = ls.ID, ls.Dir
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			if o := metaOptions(c); len(o.Endpoints) > 0 {
				// High availability: the leading jobmanager is the one etcd names, not
				// jobmanager.rpc.address.
				store, err := metastore.Follow(ctx, o, log)
				if err != nil {
					lis.Close()
					return err
				}
				defer store.Close()
				tcfg.Meta = store
			}
			return taskmanager.New(tcfg, log).Serve(ctx, lis)
		},
	}
	d.bind(cmd)
	return cmd
}

// Main runs cmd and exits: errors are printed as one line prefixed by the program name.
func Main(cmd *cobra.Command) {
	if err := cmd.Execute(); err != nil {
		msg := strings.TrimSpace(err.Error())
		fmt.Fprintf(os.Stderr, "%s: %s\n", cmd.Name(), strings.ReplaceAll(msg, "\n", "; "))
		os.Exit(1)
	}
}
