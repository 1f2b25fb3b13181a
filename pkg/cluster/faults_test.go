package cluster_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/connectors/builtin"
	"github.com/sluice-stream/sluice/pkg/connectors/file"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Faults injected into the "faulty-count" job; the in-process cluster shares them.
var (
	failSnapshotAt atomic.Int64 // the counter fails SnapshotState for this checkpoint, once
	failRestore    atomic.Bool  // the counter fails Open once when it restores state
	slowSinkUntil  atomic.Int64 // unix ms until which the sink sleeps in every Write
)

type rec struct{ Key, Seq, Count int64 }

type recCodec struct{}

func (recCodec) Append(dst []byte, r rec) []byte {
	dst = binary.AppendVarint(dst, r.Key)
	dst = binary.AppendVarint(dst, r.Seq)
	return binary.AppendVarint(dst, r.Count)
}

func (recCodec) Decode(b []byte) (rec, error) {
	var r rec
	var n int
	for _, p := range []*int64{&r.Key, &r.Seq, &r.Count} {
		v, w := binary.Varint(b[n:])
		if w <= 0 {
			return r, errors.New("bad rec")
		}
		*p, n = v, n+w
	}
	return r, nil
}

type faultyCounter struct {
	api.KeyedBase
	count *api.ValueState[int64]
}

func (c *faultyCounter) Open(_ context.Context, kc *api.KeyedContext) error {
	if kc.RestoredCheckpoint > 0 && failRestore.CompareAndSwap(true, false) {
		return fmt.Errorf("injected failure while restoring checkpoint %d", kc.RestoredCheckpoint)
	}
	c.count = api.NewValueState(kc, "count", api.Int64Codec{})
	return nil
}

func (c *faultyCounter) SnapshotState(id int64) error {
	if failSnapshotAt.CompareAndSwap(id, 0) {
		return fmt.Errorf("injected failure in the snapshot of checkpoint %d", id)
	}
	return nil
}

func (c *faultyCounter) Process(_ *api.KeyedContext, _ int64, r rec, out api.Emitter[rec]) error {
	n, _, err := c.count.Value()
	if err != nil {
		return err
	}
	n++
	r.Count = n
	out.Emit(r)
	return c.count.Update(n)
}

type slowSink struct{ file.TransactionalSink[rec] }

func (s *slowSink) Write(r rec) error {
	if time.Now().UnixMilli() < slowSinkUntil.Load() {
		time.Sleep(5 * time.Millisecond)
	}
	return s.TransactionalSink.Write(r)
}

func init() {
	api.Register("faulty-count", "test job with injectable faults", func(env *api.Env, a *api.Args) error {
		keys, perKey, rate, out := a.Int("keys", 10), a.Int("per-key", 100), a.Int("rate", 0), a.String("out", "")
		src := api.FromSource(env, func() api.Source[rec] {
			return &builtin.Sequence[rec]{Keys: keys, PerKey: int64(perKey), Rate: float64(rate),
				Make: func(k int, s int64) rec { return rec{Key: int64(k), Seq: s} }}
		}).UID("seq").WithCodec(recCodec{})
		counted := api.ProcessKeyed(api.KeyBy(src, func(r rec) int64 { return r.Key }),
			func() api.KeyedProcessFunction[int64, rec, rec] { return &faultyCounter{} }).UID("count").WithCodec(recCodec{})
		api.SinkTo(counted, func() api.Sink[rec] {
			return &slowSink{file.TransactionalSink[rec]{Dir: out, Format: func(dst []byte, r rec) []byte {
				dst = append(dst, "key-"...)
				dst = strconv.AppendInt(dst, r.Key, 10)
				dst = append(dst, ',')
				dst = strconv.AppendInt(dst, r.Seq, 10)
				dst = append(dst, ',')
				return strconv.AppendInt(dst, r.Count, 10)
			}}}
		}).UID("sink")
		return nil
	})
}

// waitCheckpointFailure polls the job's checkpoint history until a failed checkpoint's
// reason contains want.
func waitCheckpointFailure(t *testing.T, js sluicev1.JobServiceClient, id, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last []*sluicev1.CheckpointStats
	for time.Now().Before(deadline) {
		cps, err := js.ListCheckpoints(context.Background(), &sluicev1.ListCheckpointsRequest{JobId: id})
		if err != nil {
			t.Fatal(err)
		}
		last = cps.GetCheckpoints()
		for _, cp := range last {
			if cp.GetStatus() == "failed" && strings.Contains(cp.GetFailure(), want) {
				t.Logf("checkpoint %d failed: %s", cp.GetId(), cp.GetFailure())
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no checkpoint failed with %q; history %v", want, last)
}

func startCheckpointingCluster(t *testing.T, cc checkpoint.Config) sluicev1.JobServiceClient {
	t.Helper()
	_, js := startWith(t, 2, 2, jobmanager.CheckpointConfig{Storage: "file://" + t.TempDir(), Coordinator: cc, Retained: 2}, 5)
	return js
}

// TestSnapshotAndRestoreFailures: a failure inside a snapshot declines the checkpoint
// and (no failure tolerated) fails the job over; a failure inside the restore that
// follows fails that attempt too; the job still finishes with exact output.
func TestSnapshotAndRestoreFailures(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 100 * time.Millisecond
	js := startCheckpointingCluster(t, cc)
	failSnapshotAt.Store(3)
	failRestore.Store(true)
	t.Cleanup(func() { failSnapshotAt.Store(0); failRestore.Store(false) })
	out := t.TempDir()
	id := submit(t, js, "faulty-count", 2, map[string]string{"keys": "10", "per-key": "300", "rate": "2000", "out": out})
	waitCheckpointFailure(t, js, id, "injected failure in the snapshot of checkpoint 3")
	st := waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	if failSnapshotAt.Load() != 0 || failRestore.Load() {
		t.Fatalf("faults not hit: snapshot %d restore %v", failSnapshotAt.Load(), failRestore.Load())
	}
	// Two restarts (the snapshot failure, then the restore failure); the attempt whose
	// restore failed never ran, so only the last attempt counts as a restore.
	if st.GetRestarts() < 2 || st.GetRestores() < 1 {
		t.Errorf("restarts %d restores %d, want >= 2 restarts and >= 1 restore", st.GetRestarts(), st.GetRestores())
	}
	verifyCounts(t, out, 10, 300)
}

// TestCheckpointTimeoutUnderSlowSink: a sink too slow for the checkpoint timeout makes
// checkpoints expire; within the tolerated failures the job keeps running and, once the
// sink is fast again, checkpoints complete and the job finishes exactly once.
func TestCheckpointTimeoutUnderSlowSink(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 100 * time.Millisecond
	cc.Timeout = 150 * time.Millisecond
	cc.TolerableFailures = 100
	js := startCheckpointingCluster(t, cc)
	slowSinkUntil.Store(time.Now().Add(1500 * time.Millisecond).UnixMilli())
	t.Cleanup(func() { slowSinkUntil.Store(0) })
	out := t.TempDir()
	id := submit(t, js, "faulty-count", 1, map[string]string{"keys": "5", "per-key": "1000", "rate": "2000", "out": out})
	waitCheckpointFailure(t, js, id, "expired")
	st := waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	cps, err := js.ListCheckpoints(context.Background(), &sluicev1.ListCheckpointsRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	expired, completed := 0, 0
	for _, cp := range cps.GetCheckpoints() {
		switch cp.GetStatus() {
		case "failed":
			expired++
		case "completed":
			completed++
		}
	}
	if completed == 0 || st.GetLatestCheckpointId() == 0 {
		t.Errorf("no checkpoint completed: %v", cps.GetCheckpoints())
	}
	if st.GetRestarts() != 0 {
		t.Errorf("restarts %d: tolerated checkpoint failures must not fail the job over", st.GetRestarts())
	}
	t.Logf("checkpoints: %d failed (expired), %d completed (history of the last %d)", expired, completed, len(cps.GetCheckpoints()))
	verifyCounts(t, out, 5, 1000)
}

// TestResubmitFromRetainedCheckpoint: a canceled job's retained checkpoint starts a new
// job that continues where it left off; the output of both runs together is exact.
func TestResubmitFromRetainedCheckpoint(t *testing.T) {
	cc := checkpoint.DefaultConfig()
	cc.Interval = 100 * time.Millisecond
	dir := t.TempDir()
	_, js := startWith(t, 2, 2, jobmanager.CheckpointConfig{Storage: "file://" + dir, Coordinator: cc, Retained: 3}, 3)
	out := t.TempDir()
	args := map[string]string{"keys": "10", "per-key": "400", "rate": "2000", "out": out}
	first := submit(t, js, "faulty-count", 2, args)
	var cp int64
	for deadline := time.Now().Add(20 * time.Second); cp < 3; time.Sleep(10 * time.Millisecond) {
		st, err := js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: first})
		if err != nil {
			t.Fatal(err)
		}
		cp = st.GetLatestCheckpointId()
		if time.Now().After(deadline) {
			t.Fatalf("no third checkpoint: %v", st)
		}
	}
	if _, err := js.CancelJob(context.Background(), &sluicev1.CancelJobRequest{JobId: first}); err != nil {
		t.Fatal(err)
	}
	waitState(t, js, first, sluicev1.JobState_JOB_STATE_CANCELED, 10*time.Second)
	st, _ := js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: first})
	path := fmt.Sprintf("file://%s/%s/chk-%d", dir, first, st.GetLatestCheckpointId())

	prog, err := api.BuildRegistered("faulty-count", args, api.Defaults{Parallelism: 2}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	// A bad path is one clear error.
	if _, err := js.SubmitJob(context.Background(), &sluicev1.SubmitJobRequest{JobGraph: prog.Graph, RestorePath: "file://" + dir + "/nope/chk-1"}); err == nil || !strings.Contains(err.Error(), "_metadata") {
		t.Fatalf("submit from a missing checkpoint: %v", err)
	}
	resp, err := js.SubmitJob(context.Background(), &sluicev1.SubmitJobRequest{JobGraph: prog.Graph, RestorePath: path})
	if err != nil {
		t.Fatal(err)
	}
	st = waitState(t, js, resp.GetJobId(), sluicev1.JobState_JOB_STATE_FINISHED, 30*time.Second)
	if st.GetRestores() != 1 {
		t.Errorf("restores %d, want 1", st.GetRestores())
	}
	verifyCounts(t, out, 10, 400)
}
