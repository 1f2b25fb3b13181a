package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/cluster"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	"github.com/sluice-stream/sluice/pkg/restart"
	"github.com/sluice-stream/sluice/pkg/rpc"
	"github.com/sluice-stream/sluice/pkg/taskmanager"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/spf13/cobra"
)

func localCmd(out, errOut io.Writer) *cobra.Command {
	var (
		tms, slots, p int
		kv            []string
		dir           string
		clusterOnly   bool
		addr          string
		interval      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "local [SPEC.yaml|JOB-NAME]",
		Short: "Start a jobmanager and task managers on loopback and run a job with live progress",
		Long: `Starts a local cluster (a jobmanager and task managers, each on its own loopback port,
talking gRPC) and runs a job on it, showing its progress until it finishes or you press
Ctrl-C. Without a job it runs the keyed-count example: a keyed running count over a
replayable sequence, written to files under --dir. With --cluster-only it runs no job
and keeps the cluster up for streamctl commands.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, a []string) error {
			if tms < 1 || slots < 1 {
				return errors.New("--task-managers and --slots must be at least 1")
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("--dir: %w", err)
			}
			logPath := filepath.Join(dir, "cluster.log")
			logFile, err := os.Create(logPath)
			if err != nil {
				return fmt.Errorf("--dir: %w", err)
			}
			defer logFile.Close()
			log := slog.New(slog.NewTextHandler(logFile, nil))

			target := "keyed-count"
			args, err := parseArgs(kv)
			if err != nil {
				return err
			}
			outDir := filepath.Join(dir, "output")
			if len(a) == 1 {
				target = a[0]
			} else if len(kv) == 0 {
				args = map[string]string{"keys": "1000", "per-key": "500", "rate": "20000", "out": outDir}
			}
			var g *sluicev1.JobGraph
			if !clusterOnly {
				if g, err = compileJob(target, api.Defaults{Parallelism: p}, args); err != nil {
					return err
				}
			}

			strategy := func() restart.Strategy {
				s, _ := restart.NewFixedDelay(3, time.Second)
				return s
			}
			jmCfg := jobmanager.Config{NewRestartStrategy: strategy}
			if interval > 0 {
				abs, err := filepath.Abs(filepath.Join(dir, "checkpoints"))
				if err != nil {
					return err
				}
				cc := checkpoint.DefaultConfig()
				cc.Interval = interval
				sp, err := filepath.Abs(filepath.Join(dir, "savepoints"))
				if err != nil {
					return err
				}
				jmCfg.Checkpoints = jobmanager.CheckpointConfig{Storage: "file://" + abs, SavepointDir: "file://" + sp, Coordinator: cc, Retained: 3}
			}
			c, err := cluster.Start(cluster.Options{
				TaskManagers:      tms,
				JobManagerAddress: addr,
				JobManager:        jmCfg,
				TaskManager:       taskmanager.Config{Slots: slots, BufferTimeout: 100 * time.Millisecond},
				Log:               log,
			})
			if err != nil {
				return err
			}
			defer c.Stop()
			fmt.Fprintf(out, "local cluster: jobmanager %s, %d task managers x %d slots (logs: %s)\n", c.JobManagerAddr, tms, slots, logPath)
			if interval > 0 {
				fmt.Fprintf(out, "checkpoints every %s under %s\n", interval, filepath.Join(dir, "checkpoints"))
			}

			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cc, err := rpc.Dial(c.JobManagerAddr)
			if err != nil {
				return err
			}
			defer cc.Close()
			js := sluicev1.NewJobServiceClient(cc)
			if err := cluster.WaitForSlots(ctx, js, tms*slots); err != nil {
				return err
			}
			if clusterOnly {
				fmt.Fprintf(out, "ready: streamctl --jobmanager %s ... (Ctrl-C stops the cluster)\n", c.JobManagerAddr)
				<-ctx.Done()
				return nil
			}
			sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			resp, err := js.SubmitJob(sctx, &sluicev1.SubmitJobRequest{JobGraph: g})
			cancel()
			if err != nil {
				return errors.New(rpc.Message(err, "jobmanager", c.JobManagerAddr))
			}
			id := resp.GetJobId()
			fmt.Fprintf(out, "job %s (%s) submitted\n", id, g.GetName())
			ferr := followJob(ctx, js, id, out, false)
			if ctx.Err() != nil {
				fmt.Fprintln(out, "interrupted: canceling the job")
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, _ = js.CancelJob(cctx, &sluicev1.CancelJobRequest{JobId: id})
				_ = waitEnded(cctx, js, id)
				cancel()
				return nil
			}
			if ferr != nil {
				return ferr
			}
			if target == "keyed-count" && len(a) == 0 {
				showOutput(out, outDir)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&tms, "task-managers", 2, "number of task managers")
	cmd.Flags().IntVar(&slots, "slots", 2, "slots per task manager")
	cmd.Flags().IntVarP(&p, "parallelism", "p", 2, "default parallelism of the job")
	cmd.Flags().StringArrayVar(&kv, "arg", nil, "argument of a registered job, key=value (repeatable)")
	cmd.Flags().StringVar(&dir, "dir", "sluice-local", "directory for the cluster log and the example's output")
	cmd.Flags().BoolVar(&clusterOnly, "cluster-only", false, "start the cluster and run no job")
	cmd.Flags().StringVar(&addr, "jobmanager-address", "127.0.0.1:6123", "address the local jobmanager listens on")
	cmd.Flags().DurationVar(&interval, "checkpoint-interval", 2*time.Second, "time between checkpoints (stored under --dir/checkpoints); 0 turns checkpointing off")
	return cmd
}

func waitEnded(ctx context.Context, js sluicev1.JobServiceClient, id string) error {
	for {
		st, err := js.GetJob(ctx, &sluicev1.GetJobRequest{JobId: id})
		if err != nil {
			return err
		}
		switch st.GetState() {
		case sluicev1.JobState_JOB_STATE_FINISHED, sluicev1.JobState_JOB_STATE_FAILED, sluicev1.JobState_JOB_STATE_CANCELED:
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// showOutput prints where the example wrote and its first lines.
func showOutput(w io.Writer, dir string) {
	files, _ := filepath.Glob(filepath.Join(dir, "part-*"))
	sort.Strings(files)
	lines := 0
	var sample []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		ls := strings.Split(strings.TrimSpace(string(b)), "\n")
		lines += len(ls)
		if len(sample) < 3 {
			sample = append(sample, ls[:min(3-len(sample), len(ls))]...)
		}
	}
	fmt.Fprintf(w, "output: %d lines (key,seq,count) in %d files under %s\n", lines, len(files), dir)
	for _, s := range sample {
		fmt.Fprintf(w, "  %s\n", s)
	}
}
