package cluster_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/cluster"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	"github.com/sluice-stream/sluice/pkg/restart"
	"github.com/sluice-stream/sluice/pkg/rpc"
	"github.com/sluice-stream/sluice/pkg/taskmanager"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// startHA starts two jobmanagers on one embedded etcd (one leads, one waits) and two
// task managers that find the leader through etcd, with checkpoints every interval (0:
// only the final checkpoint of a bounded job).
func startHA(t *testing.T, interval time.Duration) *cluster.Cluster {
	t.Helper()
	cc := checkpoint.DefaultConfig()
	cc.Interval = interval
	c, err := cluster.Start(cluster.Options{
		TaskManagers:       2,
		StandbyJobManagers: 1,
		JobManager: jobmanager.Config{
			HeartbeatInterval: 100 * time.Millisecond, HeartbeatTimeout: time.Second,
			NewRestartStrategy: func() restart.Strategy {
				s, _ := restart.NewFixedDelay(5, 100*time.Millisecond)
				return s
			},
			Checkpoints: jobmanager.CheckpointConfig{Storage: "file://" + t.TempDir(), Coordinator: cc, Retained: 2},
		},
		TaskManager: taskmanager.Config{Slots: 2, BufferTimeout: 10 * time.Millisecond},
		Log:         testLog(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("cluster stop: %v", err)
		}
	})
	return c
}

// waitLeader polls the cluster's jobmanagers but skip until one answers calls: the
// leader, once it recovered the jobs. A standby answers FAILED_PRECONDITION.
func waitLeader(t *testing.T, c *cluster.Cluster, skip string) (string, sluicev1.JobServiceClient) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, addr := range c.JobManagerAddrs() {
			if addr == skip {
				continue
			}
			cc, err := rpc.Dial(addr)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = sluicev1.NewJobServiceClient(cc).ListJobs(ctx, &sluicev1.ListJobsRequest{})
			cancel()
			if err == nil {
				t.Cleanup(func() { cc.Close() })
				return addr, sluicev1.NewJobServiceClient(cc)
			}
			cc.Close()
			if code := status.Code(err); code != codes.FailedPrecondition && code != codes.Unavailable {
				t.Fatalf("jobmanager at %s: %v", addr, err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no jobmanager leads")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func getJob(t *testing.T, js sluicev1.JobServiceClient, id string) *sluicev1.JobStatus {
	t.Helper()
	st, err := js.GetJob(context.Background(), &sluicev1.GetJobRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestLeaderTakeoverRecoversJobs: the leading jobmanager stops while a checkpointed
// keyed-count job runs; the standby takes over, lists the job that had ended as it
// ended, re-creates the running one from its record in etcd and restores it from the
// latest checkpoint recorded there, with a higher attempt and checkpoint IDs that go on
// increasing; the task managers follow the new leader. The output is exactly once.
func TestLeaderTakeoverRecoversJobs(t *testing.T) {
	c := startHA(t, 100*time.Millisecond)
	leader, js := waitLeader(t, c, "")
	standbys := slices.DeleteFunc(c.JobManagerAddrs(), func(a string) bool { return a == leader })
	if len(standbys) != 1 {
		t.Fatalf("jobmanagers %v, leader %s: want one standby", c.JobManagerAddrs(), leader)
	}
	// A standby refuses calls and names the leader.
	scc, err := rpc.Dial(standbys[0])
	if err != nil {
		t.Fatal(err)
	}
	defer scc.Close()
	if _, err := sluicev1.NewJobServiceClient(scc).ListJobs(context.Background(), &sluicev1.ListJobsRequest{}); status.Code(err) != codes.FailedPrecondition ||
		!containsAll(status.Convert(err).Message(), "standby", leader) {
		t.Fatalf("ListJobs on the standby: %v; want FAILED_PRECONDITION naming the leader at %s", err, leader)
	}

	// A job that ended before the takeover.
	canceled := submit(t, js, "keyed-count", 2, map[string]string{"keys": "4", "per-key": "0", "rate": "100", "out": t.TempDir()})
	waitState(t, js, canceled, sluicev1.JobState_JOB_STATE_RUNNING, 20*time.Second)
	if _, err := js.CancelJob(context.Background(), &sluicev1.CancelJobRequest{JobId: canceled}); err != nil {
		t.Fatal(err)
	}
	waitState(t, js, canceled, sluicev1.JobState_JOB_STATE_CANCELED, 20*time.Second)

	out := t.TempDir()
	const keys, perKey = 10, 600
	id := submit(t, js, "keyed-count", 2, map[string]string{"keys": "10", "per-key": "600", "rate": "1000", "out": out, "source-parallelism": "2"})
	var before *sluicev1.JobStatus
	deadline := time.Now().Add(20 * time.Second)
	for before = getJob(t, js, id); before.GetLatestCheckpointId() < 3; before = getJob(t, js, id) {
		if time.Now().After(deadline) || before.GetState() != sluicev1.JobState_JOB_STATE_RUNNING && before.GetState() != sluicev1.JobState_JOB_STATE_CREATED {
			t.Fatalf("job not running with checkpoints: %v", before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("stopping the leader at %s: job attempt %d, checkpoint %d, %d records in", leader, before.GetAttempt(), before.GetLatestCheckpointId(), before.GetRecordsIn())
	if err := c.StopJobManager(leader); err != nil {
		t.Fatal(err)
	}

	next, js2 := waitLeader(t, c, leader)
	if next != standbys[0] {
		t.Fatalf("new leader %s, want the standby %s", next, standbys[0])
	}
	if st := getJob(t, js2, canceled); st.GetState() != sluicev1.JobState_JOB_STATE_CANCELED {
		t.Errorf("the job canceled before the takeover is %v after it, want CANCELED", st.GetState())
	}
	st := getJob(t, js2, id)
	if st.GetAttempt() < before.GetAttempt() || st.GetLatestCheckpointId() < before.GetLatestCheckpointId() || st.GetStartTimeUnixMs() != before.GetStartTimeUnixMs() {
		t.Fatalf("recovered job %v; before the takeover %v", st, before)
	}
	running := waitState(t, js2, id, sluicev1.JobState_JOB_STATE_RUNNING, 20*time.Second)
	if running.GetAttempt() <= before.GetAttempt() {
		t.Errorf("attempt %d after the takeover, want above %d", running.GetAttempt(), before.GetAttempt())
	}
	final := waitState(t, js2, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	t.Logf("after the takeover: %v", final)
	if final.GetRestores() < 1 {
		t.Errorf("restores = %d, want >= 1 (the new leader restored the latest checkpoint)", final.GetRestores())
	}
	if final.GetLatestCheckpointId() <= before.GetLatestCheckpointId() {
		t.Errorf("latest checkpoint %d after the takeover, want above %d", final.GetLatestCheckpointId(), before.GetLatestCheckpointId())
	}
	verifyCounts(t, out, keys, perKey)
	jobs, err := js2.ListJobs(context.Background(), &sluicev1.ListJobsRequest{})
	if err != nil || len(jobs.GetJobs()) != 2 || jobs.GetJobs()[0].GetJobId() != canceled || jobs.GetJobs()[1].GetJobId() != id {
		t.Errorf("jobs after the takeover %v, %v: want the canceled one, then the recovered one", jobs, err)
	}
}

// TestTakeoverBeforeFirstCheckpointStartsOver: a job whose leader goes before any
// checkpoint completed starts from scratch on the new leader, as Flink does; its sinks
// drop what the first attempt wrote, so the output is still exactly once.
func TestTakeoverBeforeFirstCheckpointStartsOver(t *testing.T) {
	c := startHA(t, 0) // only the final checkpoint
	leader, js := waitLeader(t, c, "")
	out := t.TempDir()
	id := submit(t, js, "keyed-count", 2, map[string]string{"keys": "10", "per-key": "300", "rate": "1000", "out": out})
	deadline := time.Now().Add(20 * time.Second)
	for st := getJob(t, js, id); st.GetRecordsIn() < 500; st = getJob(t, js, id) {
		if time.Now().After(deadline) {
			t.Fatalf("job does not run: %v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := c.StopJobManager(leader); err != nil {
		t.Fatal(err)
	}
	_, js2 := waitLeader(t, c, leader)
	final := waitState(t, js2, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
	if final.GetRestores() != 0 || final.GetAttempt() < 2 {
		t.Errorf("after the takeover: %v; want attempt >= 2 without a restore", final)
	}
	verifyCounts(t, out, 10, 300)
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
