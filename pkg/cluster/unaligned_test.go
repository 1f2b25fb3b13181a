package cluster_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// inFlight reads a completed checkpoint's _metadata and returns its channel state
// entries and their bytes.
func inFlight(t *testing.T, dir, job string, id int64) (entries int, bytes int64, ok bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, job, fmt.Sprintf("chk-%d", id), "_metadata"))
	if err != nil {
		return 0, 0, false // subsumed and deleted meanwhile
	}
	md, err := checkpoint.DecodeMetadata(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range md.GetOperators() {
		for _, st := range op.GetSubtasks() {
			for _, cs := range st.GetChannelState() {
				entries++
				bytes += cs.GetLength()
			}
		}
	}
	return entries, bytes, true
}

// TestUnalignedCheckpointsUnderBackpressure: with a sink too slow for its input,
// unaligned checkpoints still complete, persisting the records in flight; a failure then
// restores one of them, replaying its in-flight data, and the output is exact.
func TestUnalignedCheckpointsUnderBackpressure(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 200 * time.Millisecond
	cc.Timeout = 10 * time.Second
	cc.Unaligned = true
	dir := t.TempDir()
	_, js := startWith(t, 2, 2, jobmanager.CheckpointConfig{Storage: "file://" + dir, Coordinator: cc, Retained: 2}, 5)
	slowSinkUntil.Store(time.Now().Add(3 * time.Second).UnixMilli())
	t.Cleanup(func() { slowSinkUntil.Store(0) })
	out := t.TempDir()
	const keys, perKey = 10, 1000
	id := submit(t, js, "faulty-count", 2, map[string]string{"keys": fmt.Sprint(keys), "per-key": fmt.Sprint(perKey), "rate": "2000", "out": out})

	// Wait for a completed checkpoint that holds in-flight data.
	var with int64
	for deadline := time.Now().Add(20 * time.Second); with == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no completed checkpoint with in-flight data under backpressure")
		}
		st, err := js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
		if err != nil {
			t.Fatal(err)
		}
		if cp := st.GetLatestCheckpointId(); cp > 0 {
			if n, b, ok := inFlight(t, dir, id, cp); ok && n > 0 {
				t.Logf("checkpoint %d holds %d channels of in-flight data, %d bytes", cp, n, b)
				with = cp
			}
		}
	}
	// Fail the next checkpoint's snapshot: the job fails over (no failure tolerated) and
	// restores the latest completed checkpoint with its in-flight data.
	failSnapshotAt.Store(with + 1)
	t.Cleanup(func() { failSnapshotAt.Store(0) })
	st := waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 90*time.Second)
	if st.GetRestores() < 1 {
		t.Fatalf("restores %d, want at least 1: %v", st.GetRestores(), st)
	}
	verifyCounts(t, out, keys, perKey)
	// The final checkpoint, taken once every source ended, is aligned: what the sinks
	// commit at their end is all in it.
	if n, b, ok := inFlight(t, dir, id, st.GetLatestCheckpointId()); !ok || n != 0 {
		t.Errorf("final checkpoint %d: %d channels of in-flight data (%d bytes, found %v), want an aligned one", st.GetLatestCheckpointId(), n, b, ok)
	}
}

// TestUnalignedCheckpointRestoresOnlyAtItsParallelism: a retained unaligned checkpoint
// with in-flight data is refused, with one clear error, at another parallelism.
func TestUnalignedCheckpointRestoresOnlyAtItsParallelism(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 100 * time.Millisecond
	cc.Unaligned = true
	dir := t.TempDir()
	_, js := startWith(t, 2, 2, jobmanager.CheckpointConfig{Storage: "file://" + dir, Coordinator: cc, Retained: 50}, 3)
	slowSinkUntil.Store(time.Now().Add(time.Hour).UnixMilli())
	t.Cleanup(func() { slowSinkUntil.Store(0) })
	out := t.TempDir()
	args := map[string]string{"keys": "4", "per-key": "100000", "out": out}
	id := submit(t, js, "faulty-count", 2, args)
	var path string
	for deadline := time.Now().Add(20 * time.Second); path == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint with in-flight data")
		}
		st, _ := js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
		if cp := st.GetLatestCheckpointId(); cp > 0 {
			if n, _, ok := inFlight(t, dir, id, cp); ok && n > 0 {
				path = fmt.Sprintf("file://%s/%s/chk-%d", dir, id, cp)
			}
		}
	}
	if _, err := js.CancelJob(context.Background(), &sluicev1.CancelJobRequest{JobId: id}); err != nil {
		t.Fatal(err)
	}
	waitState(t, js, id, sluicev1.JobState_JOB_STATE_CANCELED, 10*time.Second)
	prog, err := api.BuildRegistered("faulty-count", args, api.Defaults{Parallelism: 1}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	_, err = js.SubmitJob(context.Background(), &sluicev1.SubmitJobRequest{JobGraph: prog.Graph, RestorePath: path})
	if err == nil || !strings.Contains(err.Error(), "restores only at the parallelism it was taken at") {
		t.Fatalf("submit at parallelism 1 from an unaligned checkpoint taken at 2: %v", err)
	}
}
