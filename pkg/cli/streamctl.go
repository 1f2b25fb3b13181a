// Package cli implements the command lines of streamctl, jobmanager and taskmanager.
package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/config"
	"github.com/sluice-stream/sluice/pkg/program"
	"github.com/sluice-stream/sluice/pkg/rpc"
	"github.com/sluice-stream/sluice/pkg/version"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// DefaultJobManager is where streamctl looks for the jobmanager without flag or env.
const DefaultJobManager = "127.0.0.1:6123"

// EnvJobManager names the environment variable that sets the jobmanager address.
const EnvJobManager = "SLUICE_JOBMANAGER"

// EnvConfig names the environment variable that points streamctl at a config file.
const EnvConfig = "SLUICE_CONFIG"

// defaults are the submit-time defaults: -p wins, then parallelism.default and
// pipeline.max-parallelism when the configuration sets them.
func (c *ctl) defaults(p int) (api.Defaults, error) {
	cfg, err := config.LoadWithOverrides(c.configFile, c.overrides)
	if err != nil {
		return api.Defaults{}, err
	}
	d := api.Defaults{Parallelism: p}
	if p == 0 && cfg.IsSet(config.DefaultParallelism) {
		d.Parallelism = cfg.Int(config.DefaultParallelism)
	}
	if mp := cfg.Int(config.MaxParallelism); mp > 0 {
		d.MaxParallelism = mp
	}
	return d, nil
}

type ctl struct {
	addr       string
	timeout    time.Duration
	configFile string
	overrides  *config.Config
	out        io.Writer
	errOut     io.Writer
}

// Streamctl returns the streamctl command tree.
func Streamctl(out, errOut io.Writer) *cobra.Command {
	c := &ctl{out: out, errOut: errOut}
	root := &cobra.Command{
		Use:           "streamctl",
		Short:         "Control a Sluice cluster: submit, inspect and cancel jobs",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.BuildID(),
	}
	root.SetOut(out)
	root.SetErr(errOut)
	def := os.Getenv(EnvJobManager)
	if def == "" {
		def = DefaultJobManager
	}
	root.PersistentFlags().StringVar(&c.addr, "jobmanager", def, "jobmanager address host:port (env "+EnvJobManager+")")
	root.PersistentFlags().DurationVar(&c.timeout, "timeout", 10*time.Second, "how long to wait for the jobmanager")
	c.overrides = config.New()
	root.PersistentFlags().StringVarP(&c.configFile, "config", "c", os.Getenv(EnvConfig),
		"configuration file whose parallelism.default and pipeline.max-parallelism apply to submitted jobs (env "+EnvConfig+")")
	root.PersistentFlags().VarP(config.DefineValue(c.overrides), config.DefineFlag, "D", "set a configuration `key=value` (repeatable)")
	root.AddCommand(c.submitCmd(), c.listCmd(), c.statusCmd(), c.cancelCmd(), c.taskManagersCmd(), c.jobsCmd(),
		c.checkpointCmd(), c.checkpointsCmd(), c.stateCmd(), c.savepointCmd(), c.stopCmd(), c.rescaleCmd(), localCmd(out, errOut))
	return root
}

func (c *ctl) client() (sluicev1.JobServiceClient, func(), error) {
	cc, err := rpc.Dial(c.addr)
	if err != nil {
		return nil, nil, fmt.Errorf("jobmanager address %q: %w", c.addr, err)
	}
	return sluicev1.NewJobServiceClient(cc), func() { cc.Close() }, nil
}

// call runs f with a jobmanager client and a context bounded by --timeout; RPC errors
// become the one line the user sees.
func (c *ctl) call(f func(ctx context.Context, js sluicev1.JobServiceClient) error) error {
	js, done, err := c.client()
	if err != nil {
		return err
	}
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if err := f(ctx, js); err != nil {
		return c.rpcErr(err)
	}
	return nil
}

// rpcErr turns an RPC error into the one line the user sees.
func (c *ctl) rpcErr(err error) error {
	return errors.New(rpc.Message(err, "jobmanager", c.addr))
}

// compileJob turns a spec file or a registered job name into a JobGraph.
func compileJob(target string, d api.Defaults, args map[string]string) (*sluicev1.JobGraph, error) {
	// Compile-time warnings (e.g. a slow codec) reach the user; nothing else is logged.
	warn := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}}))
	if strings.HasSuffix(target, ".yaml") || strings.HasSuffix(target, ".yml") || strings.ContainsRune(target, os.PathSeparator) {
		data, err := os.ReadFile(target)
		if err != nil {
			return nil, fmt.Errorf("read spec: %w", err)
		}
		if len(args) > 0 {
			return nil, errors.New("--arg applies to registered Go jobs only; a spec takes its settings from the file")
		}
		prog, err := program.CompileSpec(target, data, d, warn)
		if err != nil {
			return nil, err
		}
		return prog.Graph, nil
	}
	prog, err := api.BuildRegistered(target, args, d, warn)
	if err != nil {
		return nil, err
	}
	return prog.Graph, nil
}

func parseArgs(kv []string) (map[string]string, error) {
	args := map[string]string{}
	for _, a := range kv {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--arg %q: want key=value", a)
		}
		args[k] = v
	}
	return args, nil
}

func (c *ctl) submitCmd() *cobra.Command {
	var p int
	var kv []string
	var follow bool
	var from, fromSavepoint, claimMode string
	var allowNonRestored bool
	cmd := &cobra.Command{
		Use:   "submit SPEC.yaml|JOB-NAME",
		Short: "Submit a job (a YAML spec or a registered Go job) and print its ID",
		Args:  exactArgs(1, "a spec file or a registered job name (streamctl jobs lists them)"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if p < 0 {
				return fmt.Errorf("-p %d: parallelism must be at least 1 (or 0 for the job's own)", p)
			}
			args, err := parseArgs(kv)
			if err != nil {
				return err
			}
			if from != "" && fromSavepoint != "" {
				return errors.New("give --from-savepoint or --from-checkpoint, not both")
			}
			if fromSavepoint != "" {
				from = fromSavepoint
			}
			if allowNonRestored && from == "" {
				return errors.New("--allow-non-restored-state applies to a job started from a savepoint: give --from-savepoint (or --from-checkpoint)")
			}
			claim, err := parseClaimMode(claimMode, from)
			if err != nil {
				return err
			}
			d, err := c.defaults(p)
			if err != nil {
				return err
			}
			g, err := compileJob(a[0], d, args)
			if err != nil {
				return err
			}
			var id string
			if err := c.call(func(ctx context.Context, js sluicev1.JobServiceClient) error {
				resp, err := js.SubmitJob(ctx, &sluicev1.SubmitJobRequest{JobGraph: g, RestorePath: from, ClaimMode: claim, AllowNonRestoredState: allowNonRestored})
				id = resp.GetJobId()
				return err
			}); err != nil {
				return err
			}
			fmt.Fprintln(c.out, id)
			if !follow {
				return nil
			}
			js, done, err := c.client()
			if err != nil {
				return err
			}
			defer done()
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			return followJob(ctx, js, id, c.errOut, false)
		},
	}
	cmd.Flags().IntVarP(&p, "parallelism", "p", 0, "default parallelism of the job's operators")
	cmd.Flags().StringArrayVar(&kv, "arg", nil, "argument of a registered job, key=value (repeatable)")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "show the job's progress until it ends")
	cmd.Flags().StringVar(&from, "from-checkpoint", "", "start from a retained checkpoint: URL of its chk-<n> directory (e.g. file:///ckpt/<job-id>/chk-42)")
	cmd.Flags().StringVar(&fromSavepoint, "from-savepoint", "", "start from a savepoint: URL of its directory (e.g. file:///savepoints/savepoint-3f2a1b-0123456789ab), as streamctl savepoint and stop print it")
	cmd.Flags().BoolVar(&allowNonRestored, "allow-non-restored-state", false, "skip the savepoint's state of operators the job does not have (by UID) instead of refusing the submit")
	cmd.Flags().StringVar(&claimMode, "claim-mode", "", "who owns the --from-savepoint or --from-checkpoint files: no-claim (default: they stay yours, the job never deletes them) or claim (the job deletes them once its own checkpoints subsume them)")
	return cmd
}

// parseClaimMode reads --claim-mode, which needs --from-checkpoint.
func parseClaimMode(mode, from string) (sluicev1.ClaimMode, error) {
	var m sluicev1.ClaimMode
	switch mode {
	case "":
		return sluicev1.ClaimMode_CLAIM_MODE_UNSPECIFIED, nil
	case "no-claim", "no_claim", "noclaim":
		m = sluicev1.ClaimMode_CLAIM_MODE_NO_CLAIM
	case "claim":
		m = sluicev1.ClaimMode_CLAIM_MODE_CLAIM
	default:
		return 0, fmt.Errorf("--claim-mode %q: use claim or no-claim", mode)
	}
	if from == "" {
		return 0, errors.New("--claim-mode applies to a job started from a savepoint or retained checkpoint: give --from-savepoint or --from-checkpoint")
	}
	return m, nil
}

func exactArgs(n int, what string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return fmt.Errorf("%s takes %s (see %s --help)", cmd.CommandPath(), what, cmd.CommandPath())
		}
		return nil
	}
}

func addOutputFlag(cmd *cobra.Command, o *string) {
	cmd.Flags().StringVarP(o, "output", "o", "table", "output format: table or json")
}

func checkOutput(o string) error {
	if o != "table" && o != "json" {
		return fmt.Errorf("-o %q: use table or json", o)
	}
	return nil
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	// Re-indent through encoding/json for stable formatting across protobuf releases.
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (c *ctl) listCmd() *cobra.Command {
	var o string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the jobs",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return show(c, o, func(ctx context.Context, js sluicev1.JobServiceClient) (*sluicev1.ListJobsResponse, error) {
				return js.ListJobs(ctx, &sluicev1.ListJobsRequest{})
			}, func(tw *tabwriter.Writer, resp *sluicev1.ListJobsResponse) {
				fmt.Fprintln(tw, "JOB ID\tNAME\tSTATE\tATTEMPT\tRESTARTS\tDURATION\tRECORDS IN\tRECORDS OUT")
				for _, j := range resp.GetJobs() {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\n", j.GetJobId(), j.GetName(), stateName(j.GetState()),
						j.GetAttempt(), j.GetRestarts(), duration(j), j.GetRecordsIn(), j.GetRecordsOut())
				}
			})
		},
	}
	addOutputFlag(cmd, &o)
	return cmd
}

// show fetches R from the jobmanager and prints it as JSON (-o json) or as the table
// render writes.
func show[R proto.Message](c *ctl, o string, fetch func(context.Context, sluicev1.JobServiceClient) (R, error), render func(*tabwriter.Writer, R)) error {
	if err := checkOutput(o); err != nil {
		return err
	}
	var resp R
	if err := c.call(func(ctx context.Context, js sluicev1.JobServiceClient) (err error) {
		resp, err = fetch(ctx, js)
		return err
	}); err != nil {
		return err
	}
	if o == "json" {
		return printJSON(c.out, resp)
	}
	tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
	render(tw, resp)
	return tw.Flush()
}

func stateName(s sluicev1.JobState) string {
	return strings.ToUpper(strings.TrimPrefix(s.String(), "JOB_STATE_"))
}

func duration(j *sluicev1.JobStatus) string {
	if j.GetStartTimeUnixMs() == 0 {
		return "-"
	}
	end := time.Now()
	if j.GetEndTimeUnixMs() > 0 {
		end = time.UnixMilli(j.GetEndTimeUnixMs())
	}
	return end.Sub(time.UnixMilli(j.GetStartTimeUnixMs())).Round(100 * time.Millisecond).String()
}

func (c *ctl) getJob(id string) (st *sluicev1.JobStatus, err error) {
	err = c.call(func(ctx context.Context, js sluicev1.JobServiceClient) (err error) {
		st, err = js.GetJob(ctx, &sluicev1.GetJobRequest{JobId: id})
		return err
	})
	return st, err
}

func (c *ctl) statusCmd() *cobra.Command {
	var o string
	cmd := &cobra.Command{
		Use:   "status JOB",
		Short: "Show a job's state, attempts and per-vertex progress",
		Args:  exactArgs(1, "a job ID (streamctl list shows them)"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(o); err != nil {
				return err
			}
			st, err := c.getJob(a[0])
			if err != nil {
				return err
			}
			if o == "json" {
				return printJSON(c.out, st)
			}
			printStatus(c.out, st)
			return nil
		},
	}
	addOutputFlag(cmd, &o)
	return cmd
}

func printStatus(w io.Writer, st *sluicev1.JobStatus) {
	fmt.Fprintf(w, "Job:          %s (%s)\n", st.GetJobId(), st.GetName())
	fmt.Fprintf(w, "State:        %s\n", stateName(st.GetState()))
	fmt.Fprintf(w, "Attempt:      %d (restarts: %d)\n", st.GetAttempt(), st.GetRestarts())
	fmt.Fprintf(w, "Started:      %s (%s)\n", time.UnixMilli(st.GetStartTimeUnixMs()).Format(time.RFC3339), duration(st))
	fmt.Fprintf(w, "Records:      %d in, %d out\n", st.GetRecordsIn(), st.GetRecordsOut())
	fmt.Fprintf(w, "Max parallelism: %d\n", st.GetMaxParallelism())
	if id := st.GetLatestCheckpointId(); id > 0 {
		fmt.Fprintf(w, "Checkpoint:   %d (completed %s ago)\n", id, time.Since(time.UnixMilli(st.GetLatestCheckpointUnixMs())).Round(100*time.Millisecond))
	} else {
		fmt.Fprintf(w, "Checkpoint:   none\n")
	}
	fmt.Fprintf(w, "Restores:     %d\n", st.GetRestores())
	if id := st.GetRestoredCheckpointId(); id > 0 {
		if len(st.GetRestoredSubtasks()) > 0 {
			fmt.Fprintf(w, "Restored:     checkpoint %d (local %s, remote %s)\n", id,
				config.FormatBytes(st.GetRestoredLocalBytes()), config.FormatBytes(st.GetRestoredRemoteBytes()))
		} else {
			fmt.Fprintf(w, "Restored:     checkpoint %d\n", id)
		}
	}
	if note := st.GetRestoreNote(); note != "" {
		fmt.Fprintf(w, "Fallback:     %s\n", note)
	}
	if p := st.GetRestorePath(); p != "" {
		fmt.Fprintf(w, "Started from: %s\n", p)
	}
	if p := st.GetSavepointPath(); p != "" {
		fmt.Fprintf(w, "Savepoint:    %s\n", p)
	}
	if st.GetFailure() != "" {
		fmt.Fprintf(w, "Last failure: %s\n", st.GetFailure())
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERTEX\tPARALLELISM\tTASKS\tRECORDS IN\tRECORDS OUT")
	for _, v := range st.GetVertices() {
		var states []string
		for _, name := range []string{"deploying", "running", "ending", "finished", "canceling", "canceled", "failed"} {
			if n := v.GetTaskStates()[name]; n > 0 {
				states = append(states, fmt.Sprintf("%d %s", n, name))
			}
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%d\n", v.GetName(), v.GetParallelism(), strings.Join(states, ", "), v.GetRecordsIn(), v.GetRecordsOut())
	}
	if rs := st.GetRestoredSubtasks(); len(rs) > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintln(tw, "SUBTASK\tTASK MANAGER\tRESTORED")
		for _, s := range rs {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", subtaskName(s), s.GetTaskManager(), restoredString(s.GetRestore(), true))
		}
	}
	tw.Flush()
}

func (c *ctl) taskManagersCmd() *cobra.Command {
	var o string
	cmd := &cobra.Command{
		Use:     "taskmanagers",
		Aliases: []string{"tms"},
		Short:   "List the registered task managers and their slots",
		Args:    exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return show(c, o, func(ctx context.Context, js sluicev1.JobServiceClient) (*sluicev1.ListTaskManagersResponse, error) {
				return js.ListTaskManagers(ctx, &sluicev1.ListTaskManagersRequest{})
			}, func(tw *tabwriter.Writer, resp *sluicev1.ListTaskManagersResponse) {
				fmt.Fprintln(tw, "ID\tADDRESS\tSLOTS\tFREE\tLAST HEARTBEAT\tBUILD")
				for _, tm := range resp.GetTaskManagers() {
					ago := time.Since(time.UnixMilli(tm.GetLastHeartbeatUnixMs())).Round(100 * time.Millisecond)
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s ago\t%s\n", tm.GetId(), tm.GetAddress(), tm.GetSlots(), tm.GetFreeSlots(), ago, tm.GetBuildId())
				}
			})
		},
	}
	addOutputFlag(cmd, &o)
	return cmd
}

func (c *ctl) jobsCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "jobs",
		Short: "List the Go jobs compiled into this build",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "JOB\tDESCRIPTION")
			for _, j := range api.Registered() {
				fmt.Fprintf(tw, "%s\t%s\n", j.Name, j.Description)
			}
			return tw.Flush()
		},
	}
}

func (c *ctl) checkpointCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "checkpoint JOB",
		Short: "Trigger a checkpoint now and wait for it; prints its ID",
		Args:  exactArgs(1, "a job ID (streamctl list shows them)"),
		RunE: func(cmd *cobra.Command, a []string) error {
			js, done, err := c.client()
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			st, err := js.TriggerCheckpoint(ctx, &sluicev1.TriggerJobCheckpointRequest{JobId: a[0]})
			if err != nil {
				return c.rpcErr(err)
			}
			fmt.Fprintf(c.out, "checkpoint %d completed in %s (%s)\n", st.GetId(), time.Duration(st.GetDurationMs())*time.Millisecond, config.FormatBytes(st.GetSizeBytes()))
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "wait", 10*time.Minute, "how long to wait for the checkpoint")
	return cmd
}

func (c *ctl) checkpointsCmd() *cobra.Command {
	var o string
	var chain bool
	cmd := &cobra.Command{
		Use:   "checkpoints JOB",
		Short: "List a job's recent checkpoints (status, trigger time, durations, sizes, alignment, failure) under a warning while RocksDB compaction falls behind; --chain: the shared files each retained checkpoint references",
		Args:  exactArgs(1, "a job ID (streamctl list shows them)"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if chain {
				return show(c, o, func(ctx context.Context, js sluicev1.JobServiceClient) (*sluicev1.CheckpointChain, error) {
					return js.GetCheckpointChain(ctx, &sluicev1.GetCheckpointChainRequest{JobId: a[0]})
				}, func(tw *tabwriter.Writer, resp *sluicev1.CheckpointChain) { printChain(tw, resp) })
			}
			return show(c, o, func(ctx context.Context, js sluicev1.JobServiceClient) (*sluicev1.ListCheckpointsResponse, error) {
				return js.ListCheckpoints(ctx, &sluicev1.ListCheckpointsRequest{JobId: a[0]})
			}, printCheckpoints)
		},
	}
	addOutputFlag(cmd, &o)
	cmd.Flags().BoolVar(&chain, "chain", false, "show the shared files each retained checkpoint references and the bytes it pins (that only it keeps alive)")
	cmd.AddCommand(c.verifyCmd())
	return cmd
}

// printCheckpoints renders the checkpoint history, newest first, under the compaction
// warning while it holds. SIZE is what a checkpoint wrote, STATE SIZE the state it
// references in all; SYNC, ASYNC and ALIGNMENT are the longest among its subtasks.
func printCheckpoints(tw *tabwriter.Writer, resp *sluicev1.ListCheckpointsResponse) {
	printCompactionWarning(tw, resp.GetCompactionWarning())
	ms := func(v int64) time.Duration { return time.Duration(v) * time.Millisecond }
	fmt.Fprintln(tw, "ID\tSTATUS\tTRIGGERED\tDURATION\tSYNC\tASYNC\tALIGNMENT\tSTART DELAY\tSIZE\tSTATE SIZE\tTASKS\tFULL\tFAILURE")
	for _, cp := range resp.GetCheckpoints() {
		full := "-"
		if cp.GetFull() {
			full = "full"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%s\n", cp.GetId(), cp.GetStatus(),
			time.UnixMilli(cp.GetTriggerTimeUnixMs()).Format("15:04:05.000"), ms(cp.GetDurationMs()),
			ms(cp.GetMaxSyncMs()), ms(cp.GetMaxAsyncMs()), ms(cp.GetMaxAlignmentMs()), ms(cp.GetMaxStartDelayMs()),
			config.FormatBytes(cp.GetSizeBytes()), config.FormatBytes(cp.GetFullSizeBytes()), cp.GetAckedTasks(), cp.GetTotalTasks(), full, cp.GetFailure())
	}
}

// printChain renders the chain: a line per retained checkpoint, then its shared files.
func printChain(tw *tabwriter.Writer, resp *sluicev1.CheckpointChain) {
	fmt.Fprintln(tw, "CHECKPOINT\tSHARED FILES\tSHARED\tPRIVATE\tPINNED\tPROBLEM")
	for _, cc := range resp.GetCheckpoints() {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\n", cc.GetId(), len(cc.GetSharedFiles()), config.FormatBytes(cc.GetSharedBytes()),
			config.FormatBytes(cc.GetPrivateBytes()), config.FormatBytes(cc.GetPinnedBytes()), cc.GetProblem())
	}
	for _, cc := range resp.GetCheckpoints() {
		if len(cc.GetSharedFiles()) == 0 {
			continue
		}
		fmt.Fprintf(tw, "\ncheckpoint %d:\t\t\t\t\t\n", cc.GetId())
		for _, f := range cc.GetSharedFiles() {
			fmt.Fprintf(tw, "  %s\t%s\tsince %d\t\t\t\n", f.GetPath(), config.FormatBytes(f.GetSize()), f.GetFirstCheckpointId())
		}
	}
}

func (c *ctl) verifyCmd() *cobra.Command {
	var o string
	var quick bool
	var wait time.Duration
	cmd := &cobra.Command{
		Use:   "verify JOB",
		Short: "Check every retained checkpoint's files in the blob store (present, size, SHA-256); exits non-zero if one is broken",
		Args:  exactArgs(1, "a job ID (streamctl list shows them)"),
		RunE: func(cmd *cobra.Command, a []string) error {
			if err := checkOutput(o); err != nil {
				return err
			}
			js, done, err := c.client()
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithTimeout(cmd.Context(), wait)
			defer cancel()
			resp, err := js.VerifyCheckpoints(ctx, &sluicev1.VerifyCheckpointsRequest{JobId: a[0], Quick: quick})
			if err != nil {
				return c.rpcErr(err)
			}
			broken := 0
			for _, v := range resp.GetCheckpoints() {
				if !v.GetIntact() {
					broken++
				}
			}
			if o == "json" {
				if err := printJSON(c.out, resp); err != nil {
					return err
				}
			} else {
				tw := tabwriter.NewWriter(c.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CHECKPOINT\tRESULT\tFILES\tSIZE\tPROBLEM")
				for _, v := range resp.GetCheckpoints() {
					result := "intact"
					if !v.GetIntact() {
						result = "broken"
					}
					fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", v.GetId(), result, v.GetFiles(), config.FormatBytes(v.GetBytes()), v.GetProblem())
				}
				tw.Flush()
				if len(resp.GetCheckpoints()) == 0 {
					fmt.Fprintln(c.out, "no retained checkpoint")
				}
			}
			if broken > 0 {
				// After the report: the exit status says it too.
				return fmt.Errorf("%d of %d retained checkpoints are broken", broken, len(resp.GetCheckpoints()))
			}
			return nil
		},
	}
	addOutputFlag(cmd, &o)
	cmd.Flags().BoolVar(&quick, "quick", false, "check presence and sizes only, not the SHA-256 (which reads every byte)")
	cmd.Flags().DurationVar(&wait, "wait", 30*time.Minute, "how long to wait for the verification")
	return cmd
}
