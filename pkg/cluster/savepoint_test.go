package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/cluster"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// savepointCluster starts 2 task managers of 2 slots with checkpointing into a
// temporary directory (periodic every interval, 0: manual only) and a default savepoint
// directory, which it returns.
func savepointCluster(t *testing.T, interval time.Duration) (*cluster.Cluster, sluicev1.JobServiceClient, string) {
	t.Helper()
	cc := checkpoint.DefaultConfig()
	cc.Interval = interval
	sp := t.TempDir()
	c, js := startWith(t, 2, 2, jobmanager.CheckpointConfig{Storage: "file://" + t.TempDir(), SavepointDir: "file://" + sp, Coordinator: cc, Retained: 2}, 5)
	return c, js, sp
}

// waitCheckpointing triggers checkpoints until one completes: the job then runs with
// every task (and its state restored); it returns the checkpoint's ID.
func waitCheckpointing(t *testing.T, js sluicev1.JobServiceClient, id string) int64 {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := js.TriggerCheckpoint(context.Background(), &sluicev1.TriggerJobCheckpointRequest{JobId: id})
		if err == nil {
			return st.GetId()
		}
		if time.Now().After(deadline) || !strings.Contains(err.Error(), "not running with all tasks") {
			t.Fatalf("checkpoint: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// committedFiles lists the visible files a file sink committed in dir.
func committedFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "part-*"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

var savepointDirName = regexp.MustCompile(`/savepoint-[0-9a-f]{6}-[0-9a-f]{12}$`)

// checkSavepointDir checks a savepoint's directory: named savepoint-<6>-<12 hex>, its
// _metadata a savepoint whose every file is in its own chk-<n>/, present with its size.
func checkSavepointDir(t *testing.T, path string) *sluicev1.CheckpointMetadata {
	t.Helper()
	dir := strings.TrimPrefix(path, "file://")
	if !strings.HasPrefix(path, "file://") || !savepointDirName.MatchString(dir) {
		t.Fatalf("savepoint path %q: want file://.../savepoint-<6 hex>-<12 hex>", path)
	}
	data, err := os.ReadFile(filepath.Join(dir, "_metadata"))
	if err != nil {
		t.Fatal(err)
	}
	md, err := checkpoint.DecodeMetadata(data)
	if err != nil {
		t.Fatal(err)
	}
	if md.GetKind() != sluicev1.SnapshotKind_SNAPSHOT_KIND_SAVEPOINT {
		t.Fatalf("%s: kind %v", path, md.GetKind())
	}
	fs := checkpoint.FilesOf(md)
	if len(fs.Shared) > 0 {
		t.Fatalf("savepoint references shared files: %v", fs.SharedPaths())
	}
	for _, f := range fs.PrivateFiles {
		if !strings.HasPrefix(f.GetPath(), fmt.Sprintf("chk-%d/", md.GetCheckpointId())) {
			t.Fatalf("savepoint file %q is not in its chk-%d/", f.GetPath(), md.GetCheckpointId())
		}
		if fi, err := os.Stat(filepath.Join(dir, f.GetPath())); err != nil || fi.Size() != f.GetSize() {
			t.Fatalf("savepoint file %s: %v (want %d bytes)", f.GetPath(), err, f.GetSize())
		}
	}
	return md
}

// TestSavepointThenFailoverIsExactlyOnce: a savepoint does not make the sinks commit
// (no file appears until a checkpoint completes), and a failover right after it, to the
// checkpoint before it, replays the records since without duplicating or losing one;
// the savepoint stays intact and is no checkpoint to recover from.
func TestSavepointThenFailoverIsExactlyOnce(t *testing.T) {
	c, js, spRoot := savepointCluster(t, 0)
	out := t.TempDir()
	id := submit(t, js, "keyed-count", 2, map[string]string{"keys": "10", "per-key": "1000", "rate": "1500", "out": out})
	first := waitCheckpointing(t, js, id)
	time.Sleep(300 * time.Millisecond) // the checkpoint's commits land
	committedBefore := committedFiles(t, out)
	before := len(committedBefore)
	if before == 0 {
		t.Fatalf("checkpoint %d committed nothing", first)
	}
	sp, err := js.TriggerSavepoint(context.Background(), &sluicev1.TriggerSavepointRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	md := checkSavepointDir(t, sp.GetPath())
	if !strings.HasPrefix(sp.GetPath(), "file://"+spRoot+"/") || sp.GetSavepointId() <= first {
		t.Fatalf("savepoint %d at %s: want one after checkpoint %d under the default directory %s", sp.GetSavepointId(), sp.GetPath(), first, spRoot)
	}
	time.Sleep(300 * time.Millisecond)
	if after := len(committedFiles(t, out)); after != before {
		t.Fatalf("%d committed files before the savepoint, %d after: the savepoint made the sinks commit", before, after)
	}
	st, _ := js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
	if st.GetLatestCheckpointId() != first {
		t.Fatalf("latest checkpoint %d, want %d: a savepoint is no checkpoint to recover from", st.GetLatestCheckpointId(), first)
	}
	// Fail over now: the job restores checkpoint `first`, before the savepoint.
	stopTaskManagerInUse(t, c, js)
	st = waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	if st.GetRestores() < 1 || st.GetRestoredCheckpointId() >= sp.GetSavepointId() {
		t.Fatalf("restores %d of checkpoint %d: want a restore of a checkpoint before savepoint %d", st.GetRestores(), st.GetRestoredCheckpointId(), sp.GetSavepointId())
	}
	verifyCounts(t, out, 10, 1000)
	// The checkpoints' cleanup never touches a savepoint.
	if got := checkSavepointDir(t, sp.GetPath()); got.GetCheckpointId() != md.GetCheckpointId() {
		t.Fatalf("savepoint changed: %d", got.GetCheckpointId())
	}
	cps, err := js.ListCheckpoints(context.Background(), &sluicev1.ListCheckpointsRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, cp := range cps.GetCheckpoints() {
		if cp.GetId() == sp.GetSavepointId() {
			found = cp.GetSavepoint() && cp.GetStatus() == "completed" && cp.GetExternalPath() == sp.GetPath()
		}
	}
	if !found {
		t.Errorf("the history does not list savepoint %d as a completed savepoint at %s: %v", sp.GetSavepointId(), sp.GetPath(), cps.GetCheckpoints())
	}

	// What the sinks pre-committed for the savepoint survived the failover's cleanup of
	// leftovers: a job started from the savepoint (output into a copy of the directory
	// as it was then, committed files and the savepoint's pre-committed ones) commits
	// it, and its output is exact on its own.
	kept, _ := filepath.Glob(filepath.Join(out, ".part-*.savepoint"))
	if len(kept) == 0 {
		t.Fatalf("no pre-committed savepoint file left in %s after the failover", out)
	}
	again := t.TempDir()
	for _, f := range kept {
		copyFile(t, f, filepath.Join(again, filepath.Base(f)))
	}
	for _, f := range committedBefore {
		copyFile(t, f, filepath.Join(again, filepath.Base(f)))
	}
	id2 := submitFrom(t, js, "keyed-count", 2, map[string]string{"keys": "10", "per-key": "1000", "rate": "1500", "out": again}, sp.GetPath())
	if st := waitState(t, js, id2, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second); st.GetRestores() != 1 {
		t.Errorf("job from the savepoint: restores %d, want 1", st.GetRestores())
	}
	if left, _ := filepath.Glob(filepath.Join(again, ".part-*")); len(left) > 0 {
		t.Errorf("hidden files left after the restore committed them: %v", left)
	}
	verifyCounts(t, again, 10, 1000)
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestStopRelocateRescale: stop with savepoint commits exactly the records before it and
// ends the job FINISHED with the savepoint's path; the savepoint directory, copied
// elsewhere and the original disposed of, restores into the same job graph at another
// parallelism (the rescale path); both runs' committed output together is exact.
func TestStopRelocateRescale(t *testing.T) {
	_, js, _ := savepointCluster(t, 200*time.Millisecond)
	out := t.TempDir()
	const keys, perKey = 10, 1200
	id := submit(t, js, "keyed-count", 2, map[string]string{"keys": strconv.Itoa(keys), "per-key": strconv.Itoa(perKey), "rate": "1500", "out": out})
	waitCheckpointing(t, js, id)
	time.Sleep(500 * time.Millisecond)
	target := t.TempDir()
	sp, err := js.StopJob(context.Background(), &sluicev1.StopJobRequest{JobId: id, TargetDir: "file://" + target})
	if err != nil {
		t.Fatal(err)
	}
	if sp.GetState() != sluicev1.JobState_JOB_STATE_FINISHED || !strings.HasPrefix(sp.GetPath(), "file://"+target+"/") {
		t.Fatalf("stop: %v", sp)
	}
	checkSavepointDir(t, sp.GetPath())
	st, _ := js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
	if st.GetState() != sluicev1.JobState_JOB_STATE_FINISHED || st.GetSavepointPath() != sp.GetPath() {
		t.Fatalf("stopped job: %v with savepoint %q, want FINISHED with %q", st.GetState(), st.GetSavepointPath(), sp.GetPath())
	}
	firstRun := 0
	for _, f := range committedFiles(t, out) {
		b, _ := os.ReadFile(f)
		firstRun += strings.Count(string(b), "\n")
	}
	if firstRun == 0 || firstRun >= keys*perKey {
		t.Fatalf("the stopped job committed %d records, want some but not all %d", firstRun, keys*perKey)
	}
	if hidden, _ := filepath.Glob(filepath.Join(out, ".part-*")); len(hidden) > 0 {
		t.Fatalf("transaction files left by the stopped job: %v", hidden)
	}

	// Relocate: copy the savepoint directory, dispose of the original.
	moved := filepath.Join(t.TempDir(), "moved", filepath.Base(strings.TrimPrefix(sp.GetPath(), "file://")))
	if err := os.CopyFS(moved, os.DirFS(strings.TrimPrefix(sp.GetPath(), "file://"))); err != nil {
		t.Fatal(err)
	}
	if _, err := js.DisposeSavepoint(context.Background(), &sluicev1.DisposeSavepointRequest{Path: sp.GetPath()}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(strings.TrimPrefix(sp.GetPath(), "file://")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("disposed savepoint directory still there: %v", err)
	}
	resp, err := js.SubmitJob(context.Background(), &sluicev1.SubmitJobRequest{ResubmitJobId: id, Parallelism: 3, RestorePath: "file://" + moved})
	if err != nil {
		t.Fatal(err)
	}
	st = waitState(t, js, resp.GetJobId(), sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	if st.GetRestores() != 1 {
		t.Errorf("restores %d, want 1", st.GetRestores())
	}
	for _, v := range st.GetVertices() {
		if v.GetParallelism() != 3 {
			t.Errorf("vertex %s has parallelism %d, want 3", v.GetName(), v.GetParallelism())
		}
	}
	verifyCounts(t, out, keys, perKey)
	// No claim (the default): the job never deletes the savepoint it started from.
	checkSavepointDir(t, "file://"+moved)
}

// TestStopWithDrainFiresTimers: stop --drain emits the final watermark before the
// savepoint: every pending event-time window fires (at the final watermark), with the
// records before the savepoint, and nothing is left in the savepoint's keyed state.
func TestStopWithDrainFiresTimers(t *testing.T) {
	_, js, _ := savepointCluster(t, 100*time.Millisecond)
	out := t.TempDir()
	const keys = 6
	id := submit(t, js, "wm-window-count", 2, map[string]string{"keys": strconv.Itoa(keys), "per-key": "100000", "out": out})
	waitCheckpointing(t, js, id)
	time.Sleep(300 * time.Millisecond)
	sp, err := js.StopJob(context.Background(), &sluicev1.StopJobRequest{JobId: id, Drain: true})
	if err != nil {
		t.Fatal(err)
	}
	got := readLines(t, out)
	for k := 0; k < keys; k++ {
		lines := got[strconv.Itoa(k)]
		if len(lines) == 0 {
			t.Fatalf("key %d: no window fired", k)
		}
		final := -1 // index of the first window the final watermark fired
		for i, l := range lines {
			var key, end, n, early int64
			if _, err := fmt.Sscanf(l, "%d %d %d %d", &key, &end, &n, &early); err != nil {
				t.Fatalf("line %q: %v", l, err)
			}
			full := int64(10)
			if end == windowSize-1 {
				full = 9 // seq 1..9
			}
			if want := int64(i)*windowSize + windowSize - 1; end != want {
				t.Fatalf("key %d: window %d ends at %d, want %d (windows in order, none missing): %q", k, i, end, want, lines)
			}
			switch {
			case i < len(lines)-1 && n != full:
				t.Fatalf("key %d: window %d counted %d records, want %d: %q", k, end, n, full, lines)
			case i == len(lines)-1 && (n < 1 || n > full):
				t.Fatalf("key %d: last window %d counted %d records: %q", k, end, n, lines)
			}
			switch {
			case early == 0 && final < 0:
				final = i
			case early == 1 && final >= 0:
				t.Fatalf("key %d: window %d fired early after one the final watermark fired: %q", k, end, lines)
			}
		}
		if final < 0 {
			t.Fatalf("key %d: no window fired by the drain's final watermark: %q", k, lines)
		}
	}
	// The drained savepoint holds no pending window of the keyed operator.
	md := checkSavepointDir(t, sp.GetPath())
	for _, op := range md.GetOperators() {
		if op.GetUid() != "windows" {
			continue
		}
		for _, s := range op.GetSubtasks() {
			for _, h := range s.GetKeyed() {
				if h.GetFullSize() > 4096 {
					t.Errorf("drained savepoint: keyed state of %s subtask %d is %d bytes", op.GetUid(), s.GetSubtask(), h.GetFullSize())
				}
			}
		}
	}
}

// TestCancelWithSavepoint: the job is canceled once its savepoint completed; a job
// started from the savepoint continues, and the output of both is exact.
func TestCancelWithSavepoint(t *testing.T) {
	_, js, _ := savepointCluster(t, 200*time.Millisecond)
	out := t.TempDir()
	args := map[string]string{"keys": "10", "per-key": "1000", "rate": "1500", "out": out}
	id := submit(t, js, "keyed-count", 2, args)
	waitCheckpointing(t, js, id)
	resp, err := js.CancelJob(context.Background(), &sluicev1.CancelJobRequest{JobId: id, WithSavepoint: true})
	if err != nil {
		t.Fatal(err)
	}
	checkSavepointDir(t, resp.GetSavepointPath())
	st := waitState(t, js, id, sluicev1.JobState_JOB_STATE_CANCELED, 10*time.Second)
	if st.GetSavepointPath() != resp.GetSavepointPath() {
		t.Fatalf("canceled job shows savepoint %q, want %q", st.GetSavepointPath(), resp.GetSavepointPath())
	}
	// In claim mode the new job owns the savepoint: it deletes it once num-retained (2)
	// checkpoints of its own are recorded.
	prog := buildProgram(t, "keyed-count", 2, args)
	sub, err := js.SubmitJob(context.Background(), &sluicev1.SubmitJobRequest{JobGraph: prog, RestorePath: resp.GetSavepointPath(), ClaimMode: sluicev1.ClaimMode_CLAIM_MODE_CLAIM})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, js, sub.GetJobId(), sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	verifyCounts(t, out, 10, 1000)
	if _, err := os.Stat(strings.TrimPrefix(resp.GetSavepointPath(), "file://")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("claimed savepoint still there after the job's own checkpoints: %v", err)
	}
}

func submitFrom(t *testing.T, js sluicev1.JobServiceClient, name string, p int, args map[string]string, from string) string {
	t.Helper()
	prog := buildProgram(t, name, p, args)
	resp, err := js.SubmitJob(context.Background(), &sluicev1.SubmitJobRequest{JobGraph: prog, RestorePath: from})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetJobId()
}

// TestConcurrentStopsAndFailedStop: of two concurrent stops one wins, the other gets a
// clear error; a stop whose savepoint fails leaves the job running (its sources go on)
// and says why; a later stop succeeds.
func TestConcurrentStopsAndFailedStop(t *testing.T) {
	_, js, _ := savepointCluster(t, 0)
	out := t.TempDir()
	id := submit(t, js, "faulty-count", 2, map[string]string{"keys": "10", "per-key": "0", "rate": "1000", "out": out})
	first := waitCheckpointing(t, js, id)

	// The counter fails the snapshot of the next ID: the stop's savepoint.
	failSnapshotAt.Store(first + 1)
	t.Cleanup(func() { failSnapshotAt.Store(0) })
	_, err := js.StopJob(context.Background(), &sluicev1.StopJobRequest{JobId: id})
	if err == nil || !strings.Contains(err.Error(), "injected failure") || !strings.Contains(err.Error(), "keeps running") {
		t.Fatalf("stop with a failing savepoint: %v; want the reason and that the job keeps running", err)
	}
	st, _ := js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
	in := st.GetRecordsIn()
	deadline := time.Now().Add(10 * time.Second)
	for st.GetRecordsIn() <= in+100 {
		if st.GetState() != sluicev1.JobState_JOB_STATE_RUNNING || time.Now().After(deadline) {
			t.Fatalf("after a failed stop the job is %v with %d records in (%d before): want it running on", st.GetState(), st.GetRecordsIn(), in)
		}
		time.Sleep(50 * time.Millisecond)
		st, _ = js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
	}
	if st.GetRestarts() != 0 {
		t.Fatalf("the failed stop restarted the job: %s", st.GetFailure())
	}

	var wg sync.WaitGroup
	errs := make([]error, 2)
	resps := make([]*sluicev1.SavepointResponse, 2)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resps[i], errs[i] = js.StopJob(context.Background(), &sluicev1.StopJobRequest{JobId: id})
		}()
	}
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
			checkSavepointDir(t, resps[i].GetPath())
		case !strings.Contains(err.Error(), "already being stopped") && !strings.Contains(err.Error(), "already finished"):
			t.Errorf("the losing stop: %v; want `already being stopped`", err)
		default:
			t.Logf("the losing stop: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("%d stops succeeded, want 1: %v", won, errs)
	}
	waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 10*time.Second)
}

// TestSavepointBadInput: each mistake is one clear error, and the job keeps running.
func TestSavepointBadInput(t *testing.T) {
	_, js, _ := savepointCluster(t, 0)
	out := t.TempDir()
	args := map[string]string{"keys": "4", "per-key": "0", "rate": "500", "out": out}
	id := submit(t, js, "keyed-count", 2, args)
	waitCheckpointing(t, js, id)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := js.TriggerSavepoint(context.Background(), &sluicev1.TriggerSavepointRequest{JobId: id, TargetDir: "file://" + notDir}); err == nil || !strings.Contains(err.Error(), "savepoint directory") {
		t.Fatalf("savepoint into a file: %v", err)
	}
	if _, err := js.TriggerSavepoint(context.Background(), &sluicev1.TriggerSavepointRequest{JobId: id, TargetDir: "/relative"}); err == nil || !strings.Contains(err.Error(), "file://") {
		t.Fatalf("savepoint into a path without scheme: %v", err)
	}
	sp, err := js.TriggerSavepoint(context.Background(), &sluicev1.TriggerSavepointRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	dir := strings.TrimPrefix(sp.GetPath(), "file://")
	empty := t.TempDir()
	if err := os.WriteFile(filepath.Join(empty, "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(t.TempDir(), "savepoint-truncated")
	if err := os.CopyFS(truncated, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, "_metadata"))
	if err := os.WriteFile(filepath.Join(truncated, "_metadata"), data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	prog := buildProgram(t, "keyed-count", 2, args)
	wider := buildProgramMaxP(t, "keyed-count", 2, args, 256)
	for _, tc := range []struct {
		name  string
		req   *sluicev1.SubmitJobRequest
		wants []string
	}{
		{"missing", &sluicev1.SubmitJobRequest{JobGraph: prog, RestorePath: "file://" + filepath.Join(empty, "nope")}, []string{"does not exist"}},
		{"no metadata", &sluicev1.SubmitJobRequest{JobGraph: prog, RestorePath: "file://" + empty}, []string{"has no _metadata"}},
		{"truncated", &sluicev1.SubmitJobRequest{JobGraph: prog, RestorePath: "file://" + truncated}, []string{"truncated checkpoint metadata"}},
		{"max parallelism", &sluicev1.SubmitJobRequest{JobGraph: wider, RestorePath: sp.GetPath()}, []string{"max parallelism 128", "256"}},
		{"not a URL", &sluicev1.SubmitJobRequest{JobGraph: prog, RestorePath: "savepoint-x"}, []string{"not the URL of a savepoint"}},
	} {
		_, err := js.SubmitJob(context.Background(), tc.req)
		if err == nil {
			t.Errorf("%s: submit accepted", tc.name)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		for _, w := range tc.wants {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v; want it to say %q", tc.name, err, w)
			}
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error of several lines: %q", tc.name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(empty, "nope")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("submitting from a missing savepoint created its directory: %v", err)
	}
	for _, tc := range []struct{ path, want string }{
		{"file://" + empty, "has no _metadata"},
		{"file://" + filepath.Join(dir, "chk-1"), "checkpoint directory"},
	} {
		_, err := js.DisposeSavepoint(context.Background(), &sluicev1.DisposeSavepointRequest{Path: tc.path})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("dispose %s: %v; want %q", tc.path, err, tc.want)
		}
		t.Logf("dispose: %v", err)
	}
	if _, err := os.Stat(filepath.Join(empty, "x")); err != nil {
		t.Errorf("a refused dispose deleted a file: %v", err)
	}
	st, _ := js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
	if st.GetState() != sluicev1.JobState_JOB_STATE_RUNNING {
		t.Fatalf("job %v after the bad requests", st.GetState())
	}
}

func buildProgram(t *testing.T, name string, p int, args map[string]string) *sluicev1.JobGraph {
	t.Helper()
	return buildProgramMaxP(t, name, p, args, 0)
}

func buildProgramMaxP(t *testing.T, name string, p int, args map[string]string, maxP int) *sluicev1.JobGraph {
	t.Helper()
	prog, err := api.BuildRegistered(name, args, api.Defaults{Parallelism: p, MaxParallelism: maxP}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return prog.Graph
}

// stopTaskManagerInUse stops a task manager with a slot in use.
func stopTaskManagerInUse(t *testing.T, c *cluster.Cluster, js sluicev1.JobServiceClient) {
	t.Helper()
	tms, err := js.ListTaskManagers(context.Background(), &sluicev1.ListTaskManagersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tm := range tms.GetTaskManagers() {
		if tm.GetFreeSlots() < tm.GetSlots() {
			if err := c.StopTaskManager(tm.GetId()); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("no task manager runs tasks: %v", tms.GetTaskManagers())
}

// TestRocksDBSavepointFormats: with RocksDB and incremental checkpoints, a native
// savepoint is RocksDB's files and a canonical one full-snapshot files, both
// self-contained (no shared file of the checkpoint chain); a job stopped with a
// canonical savepoint continues from it at another parallelism, exactly once.
func TestRocksDBSavepointFormats(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 100 * time.Millisecond
	sp := t.TempDir()
	_, js := startRocksDB(t, 2, 2, jobmanager.CheckpointConfig{Storage: "file://" + t.TempDir(), SavepointDir: "file://" + sp, Coordinator: cc, Retained: 2}, 5)
	out := t.TempDir()
	args := map[string]string{"keys": "10", "per-key": "1000", "rate": "1500", "out": out}
	id := submit(t, js, "faulty-count", 2, args)
	waitCheckpointing(t, js, id)
	time.Sleep(300 * time.Millisecond) // a few incremental checkpoints share files
	backends := func(md *sluicev1.CheckpointMetadata) map[string]int {
		n := map[string]int{}
		for _, op := range md.GetOperators() {
			for _, s := range op.GetSubtasks() {
				for _, h := range s.GetKeyed() {
					n[h.GetBackend()]++
				}
			}
		}
		return n
	}
	native, err := js.TriggerSavepoint(context.Background(), &sluicev1.TriggerSavepointRequest{JobId: id, Format: sluicev1.SavepointFormat_SAVEPOINT_FORMAT_NATIVE})
	if err != nil {
		t.Fatal(err)
	}
	if n := backends(checkSavepointDir(t, native.GetPath())); n["rocksdb"] != 2 || len(n) != 1 {
		t.Fatalf("native savepoint: keyed handles by backend %v, want 2 rocksdb", n)
	}
	stop, err := js.StopJob(context.Background(), &sluicev1.StopJobRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	if n := backends(checkSavepointDir(t, stop.GetPath())); n["heap"] != 2 || len(n) != 1 {
		t.Fatalf("canonical savepoint: keyed handles by backend %v, want 2 full-snapshot (heap) handles", n)
	}
	next := submitFrom(t, js, "faulty-count", 3, args, stop.GetPath())
	waitState(t, js, next, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	verifyCounts(t, out, 10, 1000)
}
