package cli

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/sluice-stream/sluice/pkg/config"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"github.com/spf13/cobra"
)

func (c *ctl) stateCmd() *cobra.Command {
	var o string
	cmd := &cobra.Command{
		Use:   "state JOB",
		Short: "Show each subtask's keyed state: RocksDB's native metrics (keys, SST files, memtables, pending compaction, write stalls, block cache) and what its restore read",
		Args:  exactArgs(1, "a job ID (streamctl list shows them)"),
		RunE: func(cmd *cobra.Command, a []string) error {
			return show(c, o, func(ctx context.Context, js sluicev1.JobServiceClient) (*sluicev1.StateMetricsResponse, error) {
				return js.GetStateMetrics(ctx, &sluicev1.GetStateMetricsRequest{JobId: a[0]})
			}, printState)
		},
	}
	addOutputFlag(cmd, &o)
	return cmd
}

// printState renders one row per subtask that reports state metrics or a restore,
// under the compaction warning while it holds, then the restores' fallback reasons.
func printState(tw *tabwriter.Writer, resp *sluicev1.StateMetricsResponse) {
	printCompactionWarning(tw, resp.GetCompactionWarning())
	var rows, fallbacks []*sluicev1.SubtaskStateStatus
	restored := false
	for _, s := range resp.GetSubtasks() {
		if s.GetMetrics() == nil && s.GetRestore() == nil {
			continue
		}
		rows = append(rows, s)
		if r := s.GetRestore(); r != nil {
			restored = true
			if r.GetFallback() != "" {
				fallbacks = append(fallbacks, s)
			}
		}
	}
	if restored {
		fmt.Fprintf(tw, "Attempt %d restored: local %s, remote %s\n\n", resp.GetAttempt(),
			config.FormatBytes(resp.GetRestoredLocalBytes()), config.FormatBytes(resp.GetRestoredRemoteBytes()))
	}
	if len(rows) == 0 {
		fmt.Fprintf(tw, "No subtask of attempt %d reports keyed state metrics: it has no keyed operator, uses the heap backend, or has not reported yet.\n", resp.GetAttempt())
		return
	}
	fmt.Fprintln(tw, "SUBTASK\tTASK MANAGER\tKEYS\tSST LIVE\tSST TOTAL\tMEMTABLES\tPENDING COMPACTION\tCOMPACTIONS\tL0 FILES\tWRITE STALL\tBLOCK CACHE\tRESTORED")
	for _, s := range rows {
		m := s.GetMetrics()
		cells := []string{"-", "-", "-", "-", "-", "-", "-", "-", "-"}
		if m != nil {
			cells = []string{
				fmt.Sprint(m.GetEstimatedKeys()), config.FormatBytes(m.GetLiveSstBytes()), config.FormatBytes(m.GetTotalSstBytes()),
				config.FormatBytes(m.GetMemtableBytes()), config.FormatBytes(m.GetPendingCompactionBytes()), fmt.Sprint(m.GetRunningCompactions()),
				fmt.Sprint(m.GetL0Files()), writeStall(m),
				config.FormatBytes(m.GetBlockCacheUsageBytes()) + " / " + config.FormatBytes(m.GetBlockCacheCapacityBytes()),
			}
		}
		fmt.Fprintf(tw, "%s\t%s", subtaskName(s), s.GetTaskManager())
		for _, c := range cells {
			fmt.Fprintf(tw, "\t%s", c)
		}
		fmt.Fprintf(tw, "\t%s\n", restoredString(s.GetRestore(), false))
	}
	if n := len(resp.GetSubtasks()) - len(rows); n > 0 {
		fmt.Fprintf(tw, "\n%d more subtasks have no keyed state metrics (no keyed operator, or the heap backend).\n", n)
	}
	if len(fallbacks) > 0 {
		fmt.Fprintln(tw, "\nLocal recovery fallbacks:")
		for _, s := range fallbacks {
			fmt.Fprintf(tw, "  %s: %s\n", subtaskName(s), s.GetRestore().GetFallback())
		}
	}
}

// printCompactionWarning writes the compaction warning, if any, and a blank line.
func printCompactionWarning(w io.Writer, cw *sluicev1.CompactionWarning) {
	if cw == nil {
		return
	}
	fmt.Fprintf(w, "WARNING (since checkpoint %d): %s.\n\n", cw.GetSinceCheckpointId(), cw.GetMessage())
}

// subtaskName names a subtask as task managers name tasks, e.g. "count -> sink (2/4)".
func subtaskName(s *sluicev1.SubtaskStateStatus) string {
	return fmt.Sprintf("%s (%d/%d)", s.GetVertexName(), s.GetSubtask()+1, s.GetParallelism())
}

// restoredString renders what a restore read ("-" for none); withFallback appends the
// reason a local copy was not used.
func restoredString(r *sluicev1.RestoreStats, withFallback bool) string {
	if r == nil {
		return "-"
	}
	s := fmt.Sprintf("local %s, remote %s", config.FormatBytes(r.GetLocalBytes()), config.FormatBytes(r.GetRemoteBytes()))
	if id := r.GetLocalCheckpointId(); id > 0 {
		s += fmt.Sprintf(" (local copy of checkpoint %d)", id)
	}
	if withFallback && r.GetFallback() != "" {
		s += " (fallback: " + r.GetFallback() + ")"
	}
	return s
}

// writeStall renders RocksDB's write stall: "-", "delayed to 16.0 MiB/s" or "stopped".
func writeStall(m *sluicev1.StateMetrics) string {
	switch {
	case m.GetWriteStopped():
		return "stopped"
	case m.GetDelayedWriteRate() > 0:
		return "delayed to " + config.FormatBytes(m.GetDelayedWriteRate()) + "/s"
	}
	return "-"
}
