package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-stream/sluice/pkg/config"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/spf13/cobra"
)

// savepointWait is how long the savepoint commands wait by default: a savepoint of a
// large state takes long, and the jobmanager goes on with it if streamctl gives up.
const savepointWait = time.Hour

// parseFormat reads --format.
func parseFormat(f string) (sluicev1.SavepointFormat, error) {
	switch f {
	case "", "canonical":
		return sluicev1.SavepointFormat_SAVEPOINT_FORMAT_CANONICAL, nil
	case "native":
		return sluicev1.SavepointFormat_SAVEPOINT_FORMAT_NATIVE, nil
	}
	return 0, fmt.Errorf("--format %q: use canonical (the default: any state backend restores it) or native (faster; the same backend only)", f)
}

func addFormatFlag(cmd *cobra.Command, f *string) {
	cmd.Flags().StringVar(f, "format", "canonical", "format of the savepoint's keyed state: canonical (any state backend restores it) or native (the backend's own: faster, the same backend only)")
}

func addWaitFlag(cmd *cobra.Command, d *time.Duration) {
	cmd.Flags().DurationVar(d, "wait", savepointWait, "how long to wait (the jobmanager goes on if streamctl gives up)")
}

// progressLine redraws (on a terminal) or prints every few seconds the line that line
// returns, until stop is called.
type progressLine struct {
	stop func()
}

func startProgress(ctx context.Context, w io.Writer, line func(context.Context) string) *progressLine {
	ctx, cancel := context.WithCancel(ctx)
	tty := isTerminal(w)
	every, printEvery := time.Second, 5*time.Second
	if tty {
		every = 500 * time.Millisecond
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		start, drawn := time.Now(), false
		for {
			select {
			case <-ctx.Done():
				if drawn {
					fmt.Fprint(w, "\r\033[K")
				}
				return
			case <-t.C:
			}
			if !tty && time.Since(start) < printEvery {
				continue
			}
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			l := line(rctx)
			rcancel()
			if ctx.Err() != nil || l == "" {
				continue
			}
			if tty {
				fmt.Fprintf(w, "\r\033[K%s", l)
				drawn = true
			} else {
				fmt.Fprintln(w, l)
				start = time.Now()
			}
		}
	}()
	return &progressLine{stop: func() { cancel(); wg.Wait() }}
}

// savepointProgress describes the savepoint of job id taken since `since`, and once it
// completed, the job's tasks (a stop waits for them to end).
func savepointProgress(js sluicev1.JobServiceClient, id string, since time.Time) func(context.Context) string {
	return func(ctx context.Context) string {
		cps, err := js.ListCheckpoints(ctx, &sluicev1.ListCheckpointsRequest{JobId: id})
		if err != nil {
			return ""
		}
		var sp *sluicev1.CheckpointStats
		for _, cp := range cps.GetCheckpoints() {
			if cp.GetSavepoint() && cp.GetTriggerTimeUnixMs() >= since.Add(-time.Second).UnixMilli() {
				sp = cp
				break
			}
		}
		elapsed := time.Since(since).Round(100 * time.Millisecond)
		switch {
		case sp == nil:
			return fmt.Sprintf("savepoint: waiting to start (%s)", elapsed)
		case sp.GetStatus() == "in-progress":
			return fmt.Sprintf("savepoint %d: %d of %d tasks done, %s written (%s)", sp.GetId(), sp.GetAckedTasks(), sp.GetTotalTasks(),
				config.FormatBytes(sp.GetSizeBytes()), elapsed)
		case sp.GetStatus() != "completed":
			return fmt.Sprintf("savepoint %d: %s (%s)", sp.GetId(), sp.GetStatus(), elapsed)
		}
		st, err := js.GetJob(ctx, &sluicev1.GetJobRequest{JobId: id})
		if err != nil {
			return ""
		}
		return fmt.Sprintf("savepoint %d completed; job %s, tasks: %s (%s)", sp.GetId(), stateName(st.GetState()), taskCounts(st), elapsed)
	}
}

// savepointLine makes the progress line of the savepoint of job id asked for at since.
func savepointLine(id string, since time.Time) func(sluicev1.JobServiceClient) func(context.Context) string {
	return func(js sluicev1.JobServiceClient) func(context.Context) string {
		return savepointProgress(js, id, since)
	}
}

// taskCounts sums the task states of a job's vertices, e.g. "2 running, 2 finished".
func taskCounts(st *sluicev1.JobStatus) string {
	counts := map[string]int32{}
	for _, v := range st.GetVertices() {
		for k, n := range v.GetTaskStates() {
			counts[k] += n
		}
	}
	var parts []string
	for _, name := range []string{"deploying", "running", "ending", "finished", "canceling", "canceled", "failed"} {
		if n := counts[name]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, name))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// longCall runs f with a client and a context bounded by wait, showing line meanwhile;
// RPC errors become the one line the user sees.
func (c *ctl) longCall(cmd *cobra.Command, wait time.Duration, line func(sluicev1.JobServiceClient) func(context.Context) string,
	f func(context.Context, sluicev1.JobServiceClient) error) error {
	js, done, err := c.client()
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(cmd.Context(), wait)
	defer cancel()
	var p *progressLine
	if line != nil {
		p = startProgress(ctx, c.errOut, line(js))
	}
	err = f(ctx, js)
	if p != nil {
		p.stop()
	}
	if err != nil {
		return c.rpcErr(err)
	}
	return nil
}

// resolveJob returns the full ID of a job given by ID or prefix.
func (c *ctl) resolveJob(id string) (string, error) {
	st, err := c.getJob(id)
	if err != nil {
		return "", err
	}
	return st.GetJobId(), nil
}

func (c *ctl) savepointCmd() *cobra.Command {
	var format string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "savepoint JOB [DIR]",
		Short: "Take a savepoint of a running job into DIR (default: the jobmanager's execution.checkpointing.savepoint-dir) and print its path; the job goes on",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return fmt.Errorf("%s takes a job ID and optionally a directory (see %s --help)", cmd.CommandPath(), cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			f, err := parseFormat(format)
			if err != nil {
				return err
			}
			dir := ""
			if len(a) == 2 {
				dir = a[1]
			}
			id, err := c.resolveJob(a[0])
			if err != nil {
				return err
			}
			since := time.Now()
			var resp *sluicev1.SavepointResponse
			if err := c.longCall(cmd, wait, savepointLine(id, since),
				func(ctx context.Context, js sluicev1.JobServiceClient) (err error) {
					resp, err = js.TriggerSavepoint(ctx, &sluicev1.TriggerSavepointRequest{JobId: id, TargetDir: dir, Format: f})
					return err
				}); err != nil {
				return err
			}
			fmt.Fprintf(c.errOut, "savepoint %d of job %s completed in %s (%s)\n", resp.GetSavepointId(), id,
				time.Duration(resp.GetDurationMs())*time.Millisecond, config.FormatBytes(resp.GetSizeBytes()))
			fmt.Fprintln(c.out, resp.GetPath())
			return nil
		},
	}
	addFormatFlag(cmd, &format)
	addWaitFlag(cmd, &wait)
	cmd.AddCommand(c.disposeCmd())
	return cmd
}

func (c *ctl) disposeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "dispose PATH",
		Short: "Delete a savepoint (the URL of its directory); anything that is not a savepoint directory is refused",
		Args:  exactArgs(1, "the URL of a savepoint directory"),
		RunE: func(cmd *cobra.Command, a []string) error {
			var resp *sluicev1.DisposeSavepointResponse
			if err := c.longCall(cmd, savepointWait, nil, func(ctx context.Context, js sluicev1.JobServiceClient) (err error) {
				resp, err = js.DisposeSavepoint(ctx, &sluicev1.DisposeSavepointRequest{Path: a[0]})
				return err
			}); err != nil {
				return err
			}
			fmt.Fprintf(c.out, "disposed of savepoint %s: %d files, %s\n", a[0], resp.GetFiles(), config.FormatBytes(resp.GetBytes()))
			return nil
		},
	}
}

// stopJob stops a job with a savepoint, showing progress, and returns the response.
func (c *ctl) stopJob(cmd *cobra.Command, wait time.Duration, req *sluicev1.StopJobRequest) (*sluicev1.SavepointResponse, error) {
	since := time.Now()
	var resp *sluicev1.SavepointResponse
	err := c.longCall(cmd, wait, savepointLine(req.GetJobId(), since),
		func(ctx context.Context, js sluicev1.JobServiceClient) (err error) {
			resp, err = js.StopJob(ctx, req)
			return err
		})
	return resp, err
}

func (c *ctl) stopCmd() *cobra.Command {
	var dir, format string
	var drain bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "stop JOB",
		Short: "Stop a job with a savepoint (its sinks commit what precedes it, then its tasks end) and print the savepoint's path",
		Args:  exactArgs(1, "a job ID (streamctl list shows them)"),
		RunE: func(cmd *cobra.Command, a []string) error {
			f, err := parseFormat(format)
			if err != nil {
				return err
			}
			id, err := c.resolveJob(a[0])
			if err != nil {
				return err
			}
			resp, err := c.stopJob(cmd, wait, &sluicev1.StopJobRequest{JobId: id, TargetDir: dir, Format: f, Drain: drain})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.errOut, "job %s stopped (%s) with savepoint %d\n", id, stateName(resp.GetState()), resp.GetSavepointId())
			fmt.Fprintln(c.out, resp.GetPath())
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "savepoint-dir", "", "directory (blob store URL) the savepoint goes under (default: the jobmanager's execution.checkpointing.savepoint-dir)")
	cmd.Flags().BoolVar(&drain, "drain", false, "emit the final watermark first, so every event-time timer fires (pending windows emit) before the savepoint")
	addFormatFlag(cmd, &format)
	addWaitFlag(cmd, &wait)
	return cmd
}

func (c *ctl) cancelCmd() *cobra.Command {
	var withSavepoint, format string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "cancel JOB [--with-savepoint [DIR]]",
		Short: "Cancel a job: stop every task and free the slots; with --with-savepoint, take a savepoint first (the job keeps running if it fails) and print its path",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return fmt.Errorf("%s takes a job ID (and a directory with --with-savepoint; see %s --help)", cmd.CommandPath(), cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, a []string) error {
			withSP := cmd.Flags().Changed("with-savepoint")
			dir := strings.TrimSpace(withSavepoint)
			if len(a) == 2 {
				if !withSP || dir != "" {
					return fmt.Errorf("a directory (%s) applies to --with-savepoint DIR", a[1])
				}
				dir = a[1]
			}
			if !withSP {
				if cmd.Flags().Changed("format") {
					return errors.New("--format applies to --with-savepoint")
				}
				var resp *sluicev1.CancelJobResponse
				if err := c.call(func(ctx context.Context, js sluicev1.JobServiceClient) (err error) {
					resp, err = js.CancelJob(ctx, &sluicev1.CancelJobRequest{JobId: a[0]})
					return err
				}); err != nil {
					return err
				}
				fmt.Fprintf(c.out, "job %s: %s\n", a[0], stateName(resp.GetState()))
				return nil
			}
			f, err := parseFormat(format)
			if err != nil {
				return err
			}
			id, err := c.resolveJob(a[0])
			if err != nil {
				return err
			}
			since := time.Now()
			var resp *sluicev1.CancelJobResponse
			if err := c.longCall(cmd, wait, savepointLine(id, since),
				func(ctx context.Context, js sluicev1.JobServiceClient) (err error) {
					resp, err = js.CancelJob(ctx, &sluicev1.CancelJobRequest{JobId: id, WithSavepoint: true, SavepointDir: dir, SavepointFormat: f})
					return err
				}); err != nil {
				return err
			}
			fmt.Fprintf(c.errOut, "job %s: %s, with its savepoint\n", id, stateName(resp.GetState()))
			fmt.Fprintln(c.out, resp.GetSavepointPath())
			return nil
		},
	}
	cmd.Flags().StringVar(&withSavepoint, "with-savepoint", "", "take a savepoint first, into `DIR` if given (default: the jobmanager's execution.checkpointing.savepoint-dir)")
	cmd.Flags().Lookup("with-savepoint").NoOptDefVal = " "
	addFormatFlag(cmd, &format)
	addWaitFlag(cmd, &wait)
	return cmd
}

func (c *ctl) rescaleCmd() *cobra.Command {
	var p int
	var dir, claimMode, format string
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "rescale JOB -p N",
		Short: "Change a job's parallelism: stop it with a savepoint, submit its graph again at parallelism N from that savepoint, and print the new job's ID",
		Args:  exactArgs(1, "a job ID (streamctl list shows them)"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if p < 1 {
				return fmt.Errorf("-p %d: give the new parallelism, at least 1", p)
			}
			claim, err := parseClaimMode(claimMode, "rescale")
			if err != nil {
				return err
			}
			f, err := parseFormat(format)
			if err != nil {
				return err
			}
			st, err := c.getJob(a[0])
			if err != nil {
				return err
			}
			id, old := st.GetJobId(), int32(0)
			for _, v := range st.GetVertices() {
				old = max(old, v.GetParallelism())
			}
			if int32(p) > st.GetMaxParallelism() {
				return fmt.Errorf("-p %d: job %s has max parallelism %d, which bounds its parallelism (state is split into that many key groups)", p, id, st.GetMaxParallelism())
			}
			deadline := time.Now().Add(wait)
			fmt.Fprintf(c.errOut, "rescaling job %s (%s) from parallelism %d to %d: stopping it with a savepoint\n", id, st.GetName(), old, p)
			sp, err := c.stopJob(cmd, wait, &sluicev1.StopJobRequest{JobId: id, TargetDir: dir, Format: f})
			if err != nil {
				return err
			}
			fmt.Fprintf(c.errOut, "job %s stopped with savepoint %s\n", id, sp.GetPath())
			var newID string
			if err := c.call(func(ctx context.Context, js sluicev1.JobServiceClient) error {
				resp, err := js.SubmitJob(ctx, &sluicev1.SubmitJobRequest{ResubmitJobId: id, Parallelism: int32(p), RestorePath: sp.GetPath(), ClaimMode: claim})
				newID = resp.GetJobId()
				return err
			}); err != nil {
				return fmt.Errorf("job %s was stopped with savepoint %s, but its resubmission failed: %v (submit it again with --from-savepoint %s)", id, sp.GetPath(), err, sp.GetPath())
			}
			fmt.Fprintf(c.errOut, "submitted job %s at parallelism %d from the savepoint; waiting for its tasks to restore\n", newID, p)
			fmt.Fprintln(c.out, newID)
			return c.waitRestored(cmd, newID, time.Until(deadline))
		},
	}
	cmd.Flags().IntVarP(&p, "parallelism", "p", 0, "the new default parallelism of the job's operators")
	cmd.Flags().StringVar(&dir, "savepoint-dir", "", "directory (blob store URL) the savepoint goes under (default: the jobmanager's execution.checkpointing.savepoint-dir)")
	cmd.Flags().StringVar(&claimMode, "claim-mode", "", "who owns the savepoint afterwards: no-claim (default: it stays; dispose of it with streamctl savepoint dispose) or claim (the new job deletes it once its own checkpoints subsume it)")
	addFormatFlag(cmd, &format)
	addWaitFlag(cmd, &wait)
	return cmd
}

// waitRestored waits until every task of job id runs (its state restored), showing
// progress.
func (c *ctl) waitRestored(cmd *cobra.Command, id string, wait time.Duration) error {
	js, done, err := c.client()
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(cmd.Context(), max(wait, time.Second))
	defer cancel()
	start := time.Now()
	var last atomic.Pointer[sluicev1.JobStatus]
	p := startProgress(ctx, c.errOut, func(context.Context) string {
		st := last.Load()
		if st == nil {
			return ""
		}
		return fmt.Sprintf("job %s %s, tasks: %s (%s)", id, stateName(st.GetState()), taskCounts(st), time.Since(start).Round(100*time.Millisecond))
	})
	defer p.stop()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := js.GetJob(rctx, &sluicev1.GetJobRequest{JobId: id})
		rcancel()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("job %s did not run with all its tasks within %s", id, wait.Round(time.Second))
			}
			return c.rpcErr(err)
		}
		last.Store(s)
		all, running := 0, 0
		for _, v := range s.GetVertices() {
			all += int(v.GetParallelism())
			running += int(v.GetTaskStates()["running"]) + int(v.GetTaskStates()["ending"]) + int(v.GetTaskStates()["finished"])
		}
		switch s.GetState() {
		case sluicev1.JobState_JOB_STATE_FAILED, sluicev1.JobState_JOB_STATE_CANCELED:
			return fmt.Errorf("job %s %s: %s", id, stateName(s.GetState()), s.GetFailure())
		case sluicev1.JobState_JOB_STATE_FINISHED:
			p.stop()
			fmt.Fprintf(c.errOut, "job %s finished\n", id)
			return nil
		case sluicev1.JobState_JOB_STATE_RUNNING:
			if running == all && all > 0 {
				p.stop()
				fmt.Fprintf(c.errOut, "job %s runs at parallelism %d, restored from the savepoint\n", id, maxParallelism(s))
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("job %s did not run with all its tasks within %s", id, wait.Round(time.Second))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func maxParallelism(st *sluicev1.JobStatus) int32 {
	p := int32(0)
	for _, v := range st.GetVertices() {
		p = max(p, v.GetParallelism())
	}
	return p
}
