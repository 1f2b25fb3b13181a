package jobmanager_test

// In-process tests of the incremental chain: a real jobmanager (embedded etcd, a
// file:// checkpoint directory, real gRPC) and a fake task manager that acknowledges
// checkpoints the way the RocksDB backend does (shared SST files reused across
// checkpoints under shared/, private files under chk-<n>/), with real files. The real
// backend is not needed: the jobmanager sees only handles and files.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/cli"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	"github.com/sluice-stream/sluice/pkg/meta"
	"github.com/sluice-stream/sluice/pkg/meta/embedded"
	"github.com/sluice-stream/sluice/pkg/program"
	"github.com/sluice-stream/sluice/pkg/restart"
	"github.com/sluice-stream/sluice/pkg/rpc"
	"github.com/sluice-stream/sluice/pkg/version"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// chainEnv is a jobmanager on embedded etcd with one fake task manager.
type chainEnv struct {
	t     *testing.T
	dir   string // the checkpoint directory
	store *meta.Store
	addr  string
	js    sluicev1.JobServiceClient
	tm    *fakeTM
}

func startChainEnv(t *testing.T, fullEvery int) *chainEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("SLUICE_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := embedded.Start(ctx, embedded.Options{UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	store, err := meta.Connect(ctx, srv.Endpoints(), "/sluice/chain/", log)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cc := checkpoint.DefaultConfig()
	cc.Timeout = 20 * time.Second
	jm := jobmanager.New(jobmanager.Config{
		Meta: store, ID: "jm-chain", HeartbeatInterval: 200 * time.Millisecond,
		NewRestartStrategy: func() restart.Strategy { s, _ := restart.NewFixedDelay(20, 100*time.Millisecond); return s },
		Checkpoints: jobmanager.CheckpointConfig{Storage: "file://" + dir, Coordinator: cc, Retained: 2, FullEvery: fullEvery,
			OrphanGrace: 300 * time.Millisecond, SweepInterval: 100 * time.Millisecond},
	}, log.With("component", "jobmanager"))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- jm.Serve(ctx, lis) }()
	cc2, err := rpc.Dial(lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	e := &chainEnv{t: t, dir: dir, store: store, addr: lis.Addr().String(), js: sluicev1.NewJobServiceClient(cc2)}
	e.tm = startFakeTM(t, lis.Addr().String(), "file://"+dir)
	t.Cleanup(func() {
		e.tm.stop()
		cc2.Close()
		cancel()
		if err := <-served; err != nil {
			t.Errorf("jobmanager: %v", err)
		}
		store.Close()
		srv.Close()
	})
	return e
}

// specGraph is a two-vertex job (source; keyed count chained to a sink), parallelism 2.
func specGraph(t *testing.T, out string) *sluicev1.JobGraph {
	t.Helper()
	spec := fmt.Sprintf(`name: chain-test
operators:
  - uid: numbers
    type: sequence
    keys: 10
    perKey: 10
  - uid: counts
    type: aggregate
    input: numbers
    keyBy: key
    function: count
  - uid: out
    type: file
    input: counts
    path: %s
    format: csv
    fields: [key, seq, count]
`, out)
	prog, err := program.CompileSpec("chain.yaml", []byte(spec), api.Defaults{Parallelism: 2}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	prog.Graph.BuildId = version.BuildID()
	return prog.Graph
}

func (e *chainEnv) submit(req *sluicev1.SubmitJobRequest) string {
	e.t.Helper()
	req.JobGraph = specGraph(e.t, e.t.TempDir())
	resp, err := e.js.SubmitJob(context.Background(), req)
	if err != nil {
		e.t.Fatalf("submit: %v", err)
	}
	e.waitRunning(resp.GetJobId())
	return resp.GetJobId()
}

func (e *chainEnv) status(id string) *sluicev1.JobStatus {
	e.t.Helper()
	st, err := e.js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// waitRunning waits until every task of the job runs (checkpoints can be triggered).
func (e *chainEnv) waitRunning(id string) *sluicev1.JobStatus {
	e.t.Helper()
	var st *sluicev1.JobStatus
	poll(e.t, 15*time.Second, func() bool {
		st = e.status(id)
		n := 0
		for _, v := range st.GetVertices() {
			n += int(v.GetTaskStates()["running"])
		}
		return st.GetState() == sluicev1.JobState_JOB_STATE_RUNNING && n == 4
	}, func() string { return fmt.Sprintf("job %s not running: %v", id, st) })
	return st
}

func (e *chainEnv) checkpoint(id string) int64 {
	e.t.Helper()
	var st *sluicev1.CheckpointStats
	var err error
	poll(e.t, 15*time.Second, func() bool {
		// Right after the tasks run, checkpointing may not have started on the loop.
		st, err = e.js.TriggerCheckpoint(context.Background(), &sluicev1.TriggerJobCheckpointRequest{JobId: id})
		return err == nil
	}, func() string { return fmt.Sprintf("checkpoint of %s: %v", id, err) })
	return st.GetId()
}

// ctl runs streamctl in process.
func (e *chainEnv) ctl(args ...string) (string, error) {
	var out, errOut bytes.Buffer
	root := cli.Streamctl(&out, &errOut)
	root.SetArgs(append([]string{"--jobmanager", e.addr}, args...))
	err := root.Execute()
	return out.String(), err
}

func poll(t *testing.T, timeout time.Duration, cond func() bool, msg func() string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
	}
}

// exists reports whether path (relative to the job's directory) is a file.
func (e *chainEnv) exists(job, path string) bool {
	_, err := os.Stat(filepath.Join(e.dir, job, filepath.FromSlash(path)))
	return err == nil
}

// files lists the job directory's files (relative paths, sorted; temporaries excluded).
func (e *chainEnv) files(job string) []string {
	var out []string
	root := filepath.Join(e.dir, job)
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !strings.HasSuffix(p, ".tmp") {
			rel, _ := filepath.Rel(root, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// wantFiles waits until the job's directory holds exactly the files of the checkpoints
// ids (as the fake task manager wrote them), with their _metadata.
func (e *chainEnv) wantFiles(job string, ids ...int64) {
	e.t.Helper()
	want := map[string]bool{}
	for _, id := range ids {
		want[fmt.Sprintf("chk-%d/_metadata", id)] = true
		for _, p := range e.tm.filesOf(job, id) {
			want[p] = true
		}
	}
	var got []string
	poll(e.t, 10*time.Second, func() bool {
		got = e.files(job)
		if len(got) != len(want) {
			return false
		}
		for _, p := range got {
			if !want[p] {
				return false
			}
		}
		return true
	}, func() string {
		var w []string
		for p := range want {
			w = append(w, p)
		}
		sort.Strings(w)
		return fmt.Sprintf("job directory holds\n  %v\nwant the files of checkpoints %v:\n  %v", got, ids, w)
	})
}

// TestIncrementalChainInProcess: checkpoints reusing shared files; the etcd registry
// follows the retained checkpoints; subsumed files go and retained ones stay;
// full-every; verify and --chain; a deleted shared file is reported by verify and makes
// the restore fall back to the newest intact checkpoint, whose successor is full; the
// sweep collects orphans.
func TestIncrementalChainInProcess(t *testing.T) {
	e := startChainEnv(t, 3)
	job := e.submit(&sluicev1.SubmitJobRequest{})
	for want := int64(1); want <= 4; want++ {
		if id := e.checkpoint(job); id != want {
			t.Fatalf("checkpoint %d, want %d", id, want)
		}
	}
	e.wantFiles(job, 3, 4) // retain 2: 1 and 2 subsumed, their unshared files deleted
	if got := e.tm.fullFlags(job); !slices.Equal(got, []bool{false, false, true, false}) {
		t.Errorf("full flags of checkpoints 1-4: %v; want the third full (full-every 3)", got)
	}
	if reused := e.tm.reusedBy(job, 4); len(reused) == 0 {
		t.Errorf("checkpoint 4 reused no shared file of checkpoint 3")
	}
	// The registry in etcd holds exactly the retained checkpoints' shared files.
	reg, err := e.store.SharedFiles(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, id := range []int64{3, 4} {
		for _, p := range e.tm.sharedOf(job, id) {
			want[p] = true
		}
	}
	if len(reg) != len(want) {
		t.Errorf("registry %v, want the shared files %v", reg, want)
	}
	for p := range want {
		if _, ok := reg[p]; !ok {
			t.Errorf("registry lacks %s", p)
		}
	}

	out, err := e.ctl("checkpoints", "verify", job)
	if err != nil || row(out, "3", "intact") == "" || row(out, "4", "intact") == "" {
		t.Fatalf("verify of an intact chain: %v\n%s", err, out)
	}
	out, err = e.ctl("checkpoints", job, "--chain")
	if err != nil || !strings.Contains(out, "checkpoint 4:") || !strings.Contains(out, e.tm.sharedOf(job, 4)[0]) {
		t.Fatalf("--chain: %v\n%s", err, out)
	}
	chain, err := e.js.GetCheckpointChain(context.Background(), &sluicev1.GetCheckpointChainRequest{JobId: job})
	if err != nil || len(chain.GetCheckpoints()) != 2 {
		t.Fatalf("chain: %v, %v", chain, err)
	}
	// Checkpoint 3 pins its private files and the shared files 4 does not reuse; 4 pins
	// everything it references.
	for _, cc := range chain.GetCheckpoints() {
		wantPinned := e.tm.privateBytes(job, cc.GetId())
		for _, p := range e.tm.sharedOf(job, cc.GetId()) {
			if cc.GetId() == 4 || !slices.Contains(e.tm.sharedOf(job, 4), p) {
				wantPinned += e.tm.size(p)
			}
		}
		if cc.GetPinnedBytes() != wantPinned {
			t.Errorf("checkpoint %d pins %d bytes, want %d", cc.GetId(), cc.GetPinnedBytes(), wantPinned)
		}
	}

	// Lose a shared file that only checkpoint 4 references.
	var lost string
	for _, p := range e.tm.sharedOf(job, 4) {
		if !slices.Contains(e.tm.sharedOf(job, 3), p) {
			lost = p
		}
	}
	if err := os.Remove(filepath.Join(e.dir, job, lost)); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"checkpoints", "verify", job}, {"checkpoints", "verify", "--quick", job}} {
		out, err = e.ctl(args...)
		if err == nil || !strings.Contains(err.Error(), "1 of 2 retained checkpoints are broken") {
			t.Fatalf("%v after losing %s: %v\n%s", args, lost, err, out)
		}
		if r := row(out, "4", "broken"); !strings.Contains(r, lost+": not found") || row(out, "3", "intact") == "" {
			t.Fatalf("%v: want checkpoint 4 broken (%s not found), 3 intact:\n%s", args, lost, out)
		}
	}

	// A failure restarts the job: it falls back to checkpoint 3.
	e.tm.failTask(job)
	poll(t, 15*time.Second, func() bool { return e.tm.lastRestore(job) == 3 && e.status(job).GetAttempt() == 2 }, func() string {
		return fmt.Sprintf("attempt 2 restored checkpoint %d: %v", e.tm.lastRestore(job), e.status(job))
	})
	st := e.waitRunning(job)
	if st.GetRestoredCheckpointId() != 3 || !strings.Contains(st.GetRestoreNote(), "checkpoint 4") || !strings.Contains(st.GetRestoreNote(), lost) {
		t.Errorf("status after the fallback: restored %d, note %q", st.GetRestoredCheckpointId(), st.GetRestoreNote())
	}
	cps, err := e.js.ListCheckpoints(context.Background(), &sluicev1.ListCheckpointsRequest{JobId: job})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range cps.GetCheckpoints() {
		found = found || c.GetId() == 4 && c.GetStatus() == "broken" && strings.Contains(c.GetFailure(), lost)
	}
	if !found {
		t.Errorf("history does not show checkpoint 4 broken: %v", cps)
	}
	if id := e.checkpoint(job); id != 5 || !e.tm.fullFlags(job)[4] {
		t.Errorf("checkpoint after the fallback: %d, full %v; want 5, full", id, e.tm.fullFlags(job))
	}

	// Orphans: a shared file and a directory no checkpoint references are swept.
	for _, p := range []string{"shared/orphan.sst", "chk-99/v1-s0-x"} {
		full := filepath.Join(e.dir, job, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	poll(t, 10*time.Second, func() bool { return !e.exists(job, "shared/orphan.sst") && !e.exists(job, "chk-99/v1-s0-x") },
		func() string { return fmt.Sprintf("orphans not swept: %v", e.files(job)) })
	// Retained: 4 (broken, kept for inspection) and 5; only 4's lost file is missing.
	for _, id := range []int64{4, 5} {
		for _, p := range e.tm.filesOf(job, id) {
			if p != lost && !e.exists(job, p) {
				t.Errorf("file %s of retained checkpoint %d was deleted", p, id)
			}
		}
	}
	if _, err := e.js.CancelJob(context.Background(), &sluicev1.CancelJobRequest{JobId: job}); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptFileFoundAfterAFailedRestore: a shared file with the right size and the
// wrong bytes passes the presence-and-size check before a restore; the attempt fails
// reading it, and the next one checks every byte, skips the checkpoint and restores the
// one before.
func TestCorruptFileFoundAfterAFailedRestore(t *testing.T) {
	e := startChainEnv(t, 0)
	job := e.submit(&sluicev1.SubmitJobRequest{})
	for range 3 {
		e.checkpoint(job)
	}
	var bad string
	for _, p := range e.tm.sharedOf(job, 3) {
		if !slices.Contains(e.tm.sharedOf(job, 2), p) {
			bad = p
		}
	}
	path := filepath.Join(e.dir, job, filepath.FromSlash(bad))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[0] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	e.tm.failTask(job)
	var st *sluicev1.JobStatus
	poll(t, 20*time.Second, func() bool {
		st = e.status(job)
		return st.GetRestoredCheckpointId() == 2 && st.GetState() == sluicev1.JobState_JOB_STATE_RUNNING && e.tm.lastRestore(job) == 2
	}, func() string { return fmt.Sprintf("no fallback to checkpoint 2: %v", st) })
	if st.GetAttempt() != 3 || !strings.Contains(st.GetRestoreNote(), bad) || !strings.Contains(st.GetRestoreNote(), "sha256 mismatch") {
		t.Errorf("attempt %d, note %q; want attempt 3 (2 failed restoring checkpoint 3) and the corrupt file named", st.GetAttempt(), st.GetRestoreNote())
	}
	out, err := e.ctl("checkpoints", "verify", job)
	if err == nil || !strings.Contains(row(out, "3", "broken"), "sha256 mismatch") {
		t.Errorf("verify: %v\n%s", err, out)
	}
	if out, err := e.ctl("checkpoints", "verify", "--quick", job); err != nil {
		t.Errorf("verify --quick cannot see a corrupt file of the right size, yet: %v\n%s", err, out)
	}
}

// TestClaimModes: a job started from another job's retained checkpoint in no-claim mode
// leaves its files alone and takes a full first checkpoint; in claim mode it deletes it
// once its own checkpoints subsume it, through the other job's registry (shared files
// other retained checkpoints use stay). Claiming the checkpoint of a job that runs is
// refused.
func TestClaimModes(t *testing.T) {
	e := startChainEnv(t, 0)
	a := e.submit(&sluicev1.SubmitJobRequest{})
	for range 3 {
		e.checkpoint(a)
	}
	path := fmt.Sprintf("file://%s/%s/chk-3", e.dir, a)
	g := specGraph(t, t.TempDir())
	_, err := e.js.SubmitJob(context.Background(), &sluicev1.SubmitJobRequest{JobGraph: g, RestorePath: path, ClaimMode: sluicev1.ClaimMode_CLAIM_MODE_CLAIM})
	if err == nil || !strings.Contains(err.Error(), "has not ended") {
		t.Fatalf("claiming a checkpoint of a running job: %v", err)
	}
	if _, err := e.js.CancelJob(context.Background(), &sluicev1.CancelJobRequest{JobId: a}); err != nil {
		t.Fatal(err)
	}
	poll(t, 10*time.Second, func() bool { return e.status(a).GetState() == sluicev1.JobState_JOB_STATE_CANCELED }, func() string { return "not canceled" })
	aFiles := e.files(a)

	// No claim: the first checkpoint is full, the restored files stay.
	b := e.submit(&sluicev1.SubmitJobRequest{RestorePath: path})
	if got := e.tm.lastRestore(b); got != 3 {
		t.Fatalf("job b restored %d, want 3", got)
	}
	for range 3 {
		e.checkpoint(b)
	}
	if got := e.tm.fullFlags(b); !got[0] {
		t.Errorf("no-claim: first checkpoint not full: %v", got)
	}
	if reused := e.tm.reusedBy(b, 1); len(reused) > 0 {
		t.Errorf("job b's first checkpoint reuses %v", reused)
	}
	if got := e.files(a); !slices.Equal(got, aFiles) {
		t.Errorf("no-claim changed job a's files:\n%v\nwant\n%v", got, aFiles)
	}

	// Claim: after 2 (retained) checkpoints of its own, a's chk-3 goes, with the shared
	// files chk-2 (still retained in a's records) does not use.
	c := e.submit(&sluicev1.SubmitJobRequest{RestorePath: path, ClaimMode: sluicev1.ClaimMode_CLAIM_MODE_CLAIM})
	e.checkpoint(c)
	if !e.exists(a, "chk-3/_metadata") {
		t.Fatal("claimed checkpoint deleted before it was subsumed")
	}
	e.checkpoint(c)
	poll(t, 10*time.Second, func() bool { return !e.exists(a, "chk-3/_metadata") }, func() string { return "claimed checkpoint not deleted: " + strings.Join(e.files(a), " ") })
	recs, err := e.store.Checkpoints(context.Background(), a)
	if err != nil || len(recs) != 1 || recs[0].ID != 2 {
		t.Errorf("job a's records after the claim: %v, %v; want checkpoint 2", recs, err)
	}
	e.wantFiles(a, 2)
	if got := e.tm.fullFlags(c); !got[0] {
		t.Errorf("claim: first checkpoint not full: %v", got)
	}
}

// ---- the fake task manager ----

type fakeTask struct {
	id       *sluicev1.ExecutionId
	restore  []*sluicev1.OperatorRestore
	restored int64
	storage  string
}

type fakeCheckpoint struct {
	full    bool
	shared  map[int32][]string // per subtask of the keyed vertex
	reused  []string           // shared files taken over from earlier checkpoints
	private []string
}

type fakeTM struct {
	t       *testing.T
	id      string
	jm      string
	storage string
	srv     *grpc.Server
	cc      *grpc.ClientConn
	rs      sluicev1.ResourceServiceClient
	stopped chan struct{}
	wg      sync.WaitGroup

	mu    sync.Mutex
	tasks map[string][]*fakeTask // by job: the current attempt's
	cps   map[string]map[int64]*fakeCheckpoint
	// confirmed: per job and subtask, the shared files the backend may reuse (those of
	// the last checkpoint it was notified of, or restored).
	confirmed  map[string]map[int32][]string
	sizes      map[string]int64
	stateFiles map[string]*sluicev1.StateFile // the shared files uploaded
	restores   map[string]int64
	// ackMetrics, if set, gives the metrics of each task's acknowledgement.
	ackMetrics func(id int64, task *sluicev1.ExecutionId) *sluicev1.CheckpointTaskMetrics
}

func startFakeTM(t *testing.T, jm, storage string) *fakeTM {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := rpc.Dial(jm)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeTM{t: t, id: "tm-fake", jm: jm, storage: storage, srv: grpc.NewServer(rpc.ServerOptions()...), cc: cc,
		rs: sluicev1.NewResourceServiceClient(cc), stopped: make(chan struct{}),
		tasks: map[string][]*fakeTask{}, cps: map[string]map[int64]*fakeCheckpoint{}, confirmed: map[string]map[int32][]string{},
		sizes: map[string]int64{}, stateFiles: map[string]*sluicev1.StateFile{}, restores: map[string]int64{}}
	sluicev1.RegisterTaskServiceServer(f.srv, &fakeTaskService{f: f})
	f.wg.Add(2)
	go func() { defer f.wg.Done(); _ = f.srv.Serve(lis) }()
	addr := lis.Addr().String()
	go func() {
		defer f.wg.Done()
		registered := false
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			if !registered {
				_, err := f.rs.RegisterTaskManager(ctx, &sluicev1.RegisterTaskManagerRequest{Id: f.id, Address: addr, Slots: 16, BuildId: version.BuildID()})
				registered = err == nil
			} else if resp, err := f.rs.Heartbeat(ctx, &sluicev1.HeartbeatRequest{TaskManagerId: f.id}); err == nil && !resp.GetKnown() {
				registered = false
			}
			cancel()
			select {
			case <-f.stopped:
				return
			case <-tick.C:
			}
		}
	}()
	return f
}

func (f *fakeTM) stop() {
	close(f.stopped)
	f.srv.Stop()
	f.wg.Wait()
	f.cc.Close()
}

func (f *fakeTM) report(id *sluicev1.ExecutionId, state sluicev1.TaskState, failure string) {
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, _ = f.rs.UpdateTaskState(ctx, &sluicev1.UpdateTaskStateRequest{TaskManagerId: f.id, Execution: id, State: state, Failure: failure})
	}()
}

// failTask fails a task of the job's current attempt.
func (f *fakeTM) failTask(job string) {
	f.mu.Lock()
	t := f.tasks[job][0]
	f.mu.Unlock()
	f.report(t.id, sluicev1.TaskState_TASK_STATE_FAILED, "injected failure")
}

func (f *fakeTM) lastRestore(job string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.restores[job]
}

func (f *fakeTM) fullFlags(job string) []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []int64
	for id := range f.cps[job] {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	var out []bool
	for _, id := range ids {
		out = append(out, f.cps[job][id].full)
	}
	return out
}

func (f *fakeTM) sharedOf(job string, id int64) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, files := range f.cps[job][id].shared {
		out = append(out, files...)
	}
	sort.Strings(out)
	return out
}

func (f *fakeTM) filesOf(job string, id int64) []string {
	out := f.sharedOf(job, id)
	f.mu.Lock()
	defer f.mu.Unlock()
	return append(out, f.cps[job][id].private...)
}

func (f *fakeTM) privateBytes(job string, id int64) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var n int64
	for _, p := range f.cps[job][id].private {
		n += f.sizes[job+"/"+p]
	}
	return n
}

func (f *fakeTM) size(shared string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sizes[shared]
}

// reusedBy lists the shared files checkpoint id took over from earlier ones.
func (f *fakeTM) reusedBy(job string, id int64) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.cps[job][id].reused)
}

type fakeTaskService struct {
	sluicev1.UnimplementedTaskServiceServer
	f *fakeTM
}

func (s *fakeTaskService) DeployTask(_ context.Context, req *sluicev1.DeployTaskRequest) (*sluicev1.DeployTaskResponse, error) {
	f := s.f
	job := req.GetExecution().GetJobId()
	t := &fakeTask{id: req.GetExecution(), restore: req.GetRestore(), restored: req.GetRestoreCheckpointId(), storage: req.GetRestoreStorage()}
	f.mu.Lock()
	ts := f.tasks[job]
	if len(ts) > 0 && ts[0].id.GetAttempt() != t.id.GetAttempt() {
		ts = nil
	}
	f.tasks[job] = append(ts, t)
	if t.restored != 0 {
		f.restores[job] = t.restored
	}
	// The backend restores the handles' files; it may reuse them (if they are this
	// job's: references are relative to the job directory).
	if f.confirmed[job] == nil {
		f.confirmed[job] = map[int32][]string{}
	}
	if t.id.GetVertex() == 1 {
		var files []string
		for _, r := range t.restore {
			for _, h := range r.GetKeyed() {
				for _, sf := range h.GetSharedFiles() {
					files = append(files, sf.GetPath())
				}
			}
		}
		if t.storage != "" {
			files = nil
		}
		f.confirmed[job][t.id.GetSubtask()] = files
	}
	f.mu.Unlock()
	// Like a real backend, read the restored files and check them.
	if err := f.checkRestore(job, t); err != nil {
		f.report(t.id, sluicev1.TaskState_TASK_STATE_FAILED, "restore: "+err.Error())
		return &sluicev1.DeployTaskResponse{}, nil
	}
	f.report(t.id, sluicev1.TaskState_TASK_STATE_RUNNING, "")
	return &sluicev1.DeployTaskResponse{}, nil
}

func (f *fakeTM) checkRestore(job string, t *fakeTask) error {
	if len(t.restore) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir := t.storage
	if dir == "" {
		dir = strings.TrimSuffix(f.storage, "/") + "/" + job
	}
	store, err := blobstore.Open(ctx, dir)
	if err != nil {
		return err
	}
	defer store.Close()
	for _, r := range t.restore {
		for _, h := range r.GetKeyed() {
			for _, sf := range append(slices.Clone(h.GetSharedFiles()), h.GetPrivateFiles()...) {
				if _, err := store.ReadAll(ctx, sf); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (s *fakeTaskService) CancelTask(_ context.Context, req *sluicev1.CancelTaskRequest) (*sluicev1.CancelTaskResponse, error) {
	s.f.report(req.GetExecution(), sluicev1.TaskState_TASK_STATE_CANCELED, "")
	return &sluicev1.CancelTaskResponse{}, nil
}

func (s *fakeTaskService) NotifyCheckpoint(_ context.Context, req *sluicev1.NotifyCheckpointRequest) (*sluicev1.NotifyCheckpointResponse, error) {
	f := s.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if ck := f.cps[req.GetJobId()][req.GetCheckpointId()]; ck != nil && req.GetComplete() {
		for sub, files := range ck.shared {
			f.confirmed[req.GetJobId()][sub] = files
		}
	}
	return &sluicev1.NotifyCheckpointResponse{}, nil
}

// TriggerCheckpoint: at the first source's trigger, every task of the attempt writes its
// files and acknowledges (the barrier would reach them all).
func (s *fakeTaskService) TriggerCheckpoint(_ context.Context, req *sluicev1.TriggerCheckpointRequest) (*sluicev1.TriggerCheckpointResponse, error) {
	f := s.f
	job, id := req.GetExecution().GetJobId(), req.GetCheckpointId()
	f.mu.Lock()
	if f.cps[job] == nil {
		f.cps[job] = map[int64]*fakeCheckpoint{}
	}
	if f.cps[job][id] != nil {
		f.mu.Unlock()
		return &sluicev1.TriggerCheckpointResponse{}, nil
	}
	ck := &fakeCheckpoint{full: req.GetFull(), shared: map[int32][]string{}}
	f.cps[job][id] = ck
	tasks := slices.Clone(f.tasks[job])
	f.mu.Unlock()
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		if err := f.ackAll(job, id, ck, tasks); err != nil {
			f.t.Errorf("fake task manager: checkpoint %d: %v", id, err)
		}
	}()
	return &sluicev1.TriggerCheckpointResponse{}, nil
}

func (f *fakeTM) ackAll(job string, id int64, ck *fakeCheckpoint, tasks []*fakeTask) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	root, err := blobstore.Open(ctx, f.storage)
	if err != nil {
		return err
	}
	defer root.Close()
	store, err := root.Sub(blobstore.JobDir(job))
	if err != nil {
		return err
	}
	f.mu.Lock()
	ackMetrics := f.ackMetrics
	f.mu.Unlock()
	for _, t := range tasks {
		req := &sluicev1.AcknowledgeCheckpointRequest{TaskManagerId: f.id, Execution: t.id, CheckpointId: id}
		if ackMetrics != nil {
			req.Metrics = ackMetrics(id, t.id)
		}
		if t.id.GetVertex() == 1 {
			h, err := f.snapshot(ctx, store, job, id, ck, t)
			if err != nil {
				return err
			}
			req.Operators = []*sluicev1.OperatorSubtaskState{{Uid: "counts", State: &sluicev1.SubtaskState{Keyed: []*sluicev1.KeyedStateHandle{h}}}}
		}
		if _, err := f.rs.AcknowledgeCheckpoint(ctx, req); err != nil {
			return err
		}
	}
	return nil
}

// snapshot writes a RocksDB-like snapshot of one keyed subtask: it reuses (unless full)
// half of the shared files it may reuse, uploads one new one, and writes a private
// MANIFEST.
func (f *fakeTM) snapshot(ctx context.Context, store *blobstore.Store, job string, id int64, ck *fakeCheckpoint, t *fakeTask) (*sluicev1.KeyedStateHandle, error) {
	sub := t.id.GetSubtask()
	h := &sluicev1.KeyedStateHandle{KeyGroupStart: sub * 64, KeyGroupEnd: sub*64 + 63, Backend: "rocksdb"}
	f.mu.Lock()
	reuse := slices.Clone(f.confirmed[job][sub])
	f.mu.Unlock()
	var shared []string
	if !ck.full {
		for i, p := range reuse {
			if i%2 == 0 || i == len(reuse)-1 {
				f.mu.Lock()
				sf := proto.Clone(f.stateFiles[p]).(*sluicev1.StateFile)
				ck.reused = append(ck.reused, p)
				f.mu.Unlock()
				h.SharedFiles = append(h.SharedFiles, sf)
				h.FullSize += sf.GetSize()
				shared = append(shared, p)
			}
		}
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	name := fmt.Sprintf("shared/%d-%d-%s.sst", id, sub, hex.EncodeToString(rnd[:]))
	sf, err := store.WriteFile(ctx, name, bytes.Repeat([]byte{byte(id)}, 100+int(id)*10+int(sub)))
	if err != nil {
		return nil, err
	}
	h.SharedFiles = append(h.SharedFiles, sf)
	h.IncrementalSize, h.FullSize = h.IncrementalSize+sf.GetSize(), h.FullSize+sf.GetSize()
	shared = append(shared, name)
	manifest := fmt.Sprintf("chk-%d/v1-s%d-MANIFEST", id, sub)
	pf, err := store.WriteFile(ctx, manifest, []byte(strings.Join(shared, "\n")))
	if err != nil {
		return nil, err
	}
	h.PrivateFiles = append(h.PrivateFiles, pf)
	h.IncrementalSize, h.FullSize = h.IncrementalSize+pf.GetSize(), h.FullSize+pf.GetSize()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sizes[name] = sf.GetSize()
	f.stateFiles[name] = sf
	f.sizes[job+"/"+manifest] = pf.GetSize()
	ck.shared[sub] = shared
	ck.private = append(ck.private, manifest)
	return h, nil
}

// row finds the table row whose first fields are want.
func row(table string, want ...string) string {
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) >= len(want) && slices.Equal(f[:len(want)], want) {
			return l
		}
	}
	return ""
}
