package cli

import (
	"bytes"
	"strings"
	"testing"
	"text/tabwriter"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func render[R any](f func(*tabwriter.Writer, R), resp R) string {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	f(tw, resp)
	tw.Flush()
	return b.String()
}

// checkLines checks that the output's lines start with the given prefixes, in order
// ("" for an empty line), after whitespace runs are collapsed to one space.
func checkLines(t *testing.T, out string, want ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), out)
	}
	for i, l := range lines {
		if got := strings.Join(strings.Fields(l), " "); !strings.HasPrefix(got, want[i]) {
			t.Errorf("line %d: %q, want it to start with %q\n%s", i+1, got, want[i], out)
		}
	}
}

var testWarning = &sluicev1.CompactionWarning{SinceCheckpointId: 16, FirstCheckpointId: 12, LastCheckpointId: 16,
	Message: "RocksDB compaction falls behind the writes: pending compaction bytes grew from 70.0 MiB to 310.0 MiB"}

func TestPrintCheckpoints(t *testing.T) {
	resp := &sluicev1.ListCheckpointsResponse{Checkpoints: []*sluicev1.CheckpointStats{
		{Id: 8, Status: "completed", DurationMs: 14, MaxSyncMs: 2, MaxAsyncMs: 11, MaxAlignmentMs: 1, MaxStartDelayMs: 1,
			SizeBytes: 4000, FullSizeBytes: 120 << 10, AckedTasks: 4, TotalTasks: 4},
		{Id: 7, Status: "failed", AckedTasks: 3, TotalTasks: 4, Full: true, Failure: "expired"},
	}}
	checkLines(t, render(printCheckpoints, resp),
		"ID STATUS TRIGGERED DURATION SYNC ASYNC ALIGNMENT START DELAY SIZE STATE SIZE TASKS FULL FAILURE",
		"8 completed", "7 failed")
	out := render(printCheckpoints, resp)
	if flat := strings.Join(strings.Fields(out), " "); !strings.Contains(flat, "14ms 2ms 11ms 1ms 1ms 3.9 KiB 120.0 KiB 4/4 -") ||
		!strings.Contains(flat, "0 B 0 B 3/4 full expired") {
		t.Errorf("columns:\n%s", out)
	}
	resp.CompactionWarning = testWarning
	checkLines(t, render(printCheckpoints, resp),
		"WARNING (since checkpoint 16): RocksDB compaction falls behind the writes: pending compaction bytes grew from 70.0 MiB to 310.0 MiB.",
		"", "ID STATUS", "8 completed", "7 failed")
}

func TestPrintState(t *testing.T) {
	sub := func(vertex int32, name string, subtask int32, m *sluicev1.StateMetrics, r *sluicev1.RestoreStats) *sluicev1.SubtaskStateStatus {
		return &sluicev1.SubtaskStateStatus{Vertex: vertex, VertexName: name, Subtask: subtask, Parallelism: 2, TaskManager: "tm-1",
			TaskState: "running", Metrics: m, Restore: r}
	}
	m := &sluicev1.StateMetrics{Backends: 1, EstimatedKeys: 1234, LiveSstBytes: 5 << 20, TotalSstBytes: 6 << 20, MemtableBytes: 64 << 10,
		PendingCompactionBytes: 300 << 20, RunningCompactions: 1, L0Files: 7, DelayedWriteRate: 16 << 20,
		BlockCacheUsageBytes: 12 << 20, BlockCacheCapacityBytes: 64 << 20}
	resp := &sluicev1.StateMetricsResponse{Attempt: 3, Subtasks: []*sluicev1.SubtaskStateStatus{
		sub(0, "seq", 0, nil, nil),
		sub(0, "seq", 1, nil, nil),
		sub(1, "count -> sink", 0, m, &sluicev1.RestoreStats{LocalBytes: 5 << 20, LocalCheckpointId: 9}),
		sub(1, "count -> sink", 1, &sluicev1.StateMetrics{Backends: 1, WriteStopped: true}, &sluicev1.RestoreStats{RemoteBytes: 3 << 20, Fallback: "no local copy of checkpoint 9"}),
	}, RestoredLocalBytes: 5 << 20, RestoredRemoteBytes: 3 << 20, CompactionWarning: testWarning}
	out := render(printState, resp)
	checkLines(t, out,
		"WARNING (since checkpoint 16): RocksDB compaction falls behind",
		"",
		"Attempt 3 restored: local 5.0 MiB, remote 3.0 MiB",
		"",
		"SUBTASK TASK MANAGER KEYS SST LIVE SST TOTAL MEMTABLES PENDING COMPACTION COMPACTIONS L0 FILES WRITE STALL BLOCK CACHE RESTORED",
		"count -> sink (1/2) tm-1 1234 5.0 MiB 6.0 MiB 64.0 KiB 300.0 MiB 1 7 delayed to 16.0 MiB/s 12.0 MiB / 64.0 MiB local 5.0 MiB, remote 0 B (local copy of checkpoint 9)",
		"count -> sink (2/2) tm-1 0 0 B 0 B 0 B 0 B 0 0 stopped 0 B / 0 B local 0 B, remote 3.0 MiB",
		"",
		"2 more subtasks have no keyed state metrics",
		"",
		"Local recovery fallbacks:",
		"count -> sink (2/2): no local copy of checkpoint 9",
	)
	none := render(printState, &sluicev1.StateMetricsResponse{Attempt: 1, Subtasks: []*sluicev1.SubtaskStateStatus{sub(0, "seq", 0, nil, nil)}})
	checkLines(t, none, "No subtask of attempt 1 reports keyed state metrics")
}

func TestPrintStatusRestores(t *testing.T) {
	st := &sluicev1.JobStatus{JobId: "e703", Name: "keyed-count", State: sluicev1.JobState_JOB_STATE_RUNNING, Attempt: 2,
		RestoredCheckpointId: 8, RestoredLocalBytes: 1 << 20, RestoredRemoteBytes: 0,
		Vertices: []*sluicev1.VertexStatus{{Name: "count -> sink", Parallelism: 2, TaskStates: map[string]int32{"running": 2}}},
		RestoredSubtasks: []*sluicev1.SubtaskStateStatus{
			{VertexName: "count -> sink", Subtask: 0, Parallelism: 2, TaskManager: "tm-1", Restore: &sluicev1.RestoreStats{LocalBytes: 1 << 20, LocalCheckpointId: 8}},
			{VertexName: "count -> sink", Subtask: 1, Parallelism: 2, TaskManager: "tm-2", Restore: &sluicev1.RestoreStats{Fallback: "local recovery directory full"}},
		}}
	var b bytes.Buffer
	printStatus(&b, st)
	out := b.String()
	for _, want := range []string{
		"Restored:     checkpoint 8 (local 1.0 MiB, remote 0 B)\n",
		"SUBTASK              TASK MANAGER  RESTORED\n",
		"count -> sink (1/2)  tm-1          local 1.0 MiB, remote 0 B (local copy of checkpoint 8)\n",
		"count -> sink (2/2)  tm-2          local 0 B, remote 0 B (fallback: local recovery directory full)\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	st.RestoredSubtasks = nil
	b.Reset()
	printStatus(&b, st)
	if out := b.String(); !strings.Contains(out, "Restored:     checkpoint 8\n") || strings.Contains(out, "SUBTASK") {
		t.Errorf("without restore statistics:\n%s", out)
	}
}
