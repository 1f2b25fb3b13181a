package jobmanager

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/graph"
	"github.com/sluice-stream/sluice/pkg/restart"
	"github.com/sluice-stream/sluice/pkg/scheduler"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// testGraph: source (p=2) -> keyed count (p=3) -> sink (p=3, chained): 2 vertices, 5 tasks,
// 3 slots.
func testGraph(t *testing.T) (*sluicev1.JobGraph, *graph.Plan) {
	t.Helper()
	g := &sluicev1.JobGraph{
		Name: "t", MaxParallelism: 128,
		Operators: []*sluicev1.Operator{
			{Uid: "src", Kind: "source", Parallelism: 2},
			{Uid: "count", Kind: "keyed-process", Parallelism: 3},
			{Uid: "sink", Kind: "sink", Parallelism: 3},
		},
		Edges: []*sluicev1.Edge{
			{SourceUid: "src", TargetUid: "count", Partitioner: sluicev1.Partitioner_PARTITIONER_KEY_GROUP},
			{SourceUid: "count", TargetUid: "sink", Partitioner: sluicev1.Partitioner_PARTITIONER_FORWARD},
		},
	}
	plan, err := graph.Build(g)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Vertices) != 2 || plan.Slots() != 3 {
		t.Fatalf("plan: %d vertices, %d slots; want 2 and 3", len(plan.Vertices), plan.Slots())
	}
	return g, plan
}

type harness struct {
	t    *testing.T
	pool *scheduler.Pool
	job  *job
	now  time.Time
}

func newHarness(t *testing.T, attempts int, tms ...string) *harness {
	g, plan := testGraph(t)
	pool := scheduler.NewPool()
	for _, tm := range tms {
		pool.Add(tm, tm+":1", 2, "b")
	}
	s, err := restart.NewFixedDelay(attempts, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	return &harness{t: t, pool: pool, job: newJob("j1", g, plan, s, now), now: now}
}

func (h *harness) update(a action, state sluicev1.TaskState) []action {
	return h.job.taskUpdate(h.pool, a.task.id, state, "boom", nil, h.now)
}

func count(acts []action, kind actionKind) int {
	n := 0
	for _, a := range acts {
		if a.kind == kind {
			n++
		}
	}
	return n
}

func (h *harness) wantState(s sluicev1.JobState) {
	h.t.Helper()
	if h.job.state != s {
		h.t.Fatalf("job state %v, want %v (failure %q)", h.job.state, s, h.job.failure)
	}
}

func TestScheduleAndFinish(t *testing.T) {
	h := newHarness(t, 1, "a", "b")
	acts := h.job.trySchedule(h.pool, h.now)
	if count(acts, actDeploy) != 5 {
		t.Fatalf("deploy actions = %d, want 5", count(acts, actDeploy))
	}
	h.wantState(sluicev1.JobState_JOB_STATE_RUNNING)
	if h.pool.FreeSlots() != 1 {
		t.Fatalf("free slots %d, want 1", h.pool.FreeSlots())
	}
	// Subtask i of every vertex shares slot i.
	for _, a := range acts {
		if a.task.tm != h.job.slots[a.task.id.GetSubtask()] {
			t.Fatalf("task %v placed on %s, slot owner %s", a.task.id, a.task.tm, h.job.slots[a.task.id.GetSubtask()])
		}
	}
	for _, a := range acts {
		h.update(a, sluicev1.TaskState_TASK_STATE_RUNNING)
	}
	for i, a := range acts {
		h.update(a, sluicev1.TaskState_TASK_STATE_FINISHED)
		if i < len(acts)-1 {
			h.wantState(sluicev1.JobState_JOB_STATE_RUNNING)
		}
	}
	h.wantState(sluicev1.JobState_JOB_STATE_FINISHED)
	if h.pool.FreeSlots() != 4 {
		t.Fatalf("free slots after finish %d, want 4", h.pool.FreeSlots())
	}
}

func TestFailureRestartsAfterCancelAndDelay(t *testing.T) {
	h := newHarness(t, 1, "a", "b")
	acts := h.job.trySchedule(h.pool, h.now)
	cancels := h.update(acts[0], sluicev1.TaskState_TASK_STATE_FAILED)
	h.wantState(sluicev1.JobState_JOB_STATE_RESTARTING)
	if count(cancels, actCancel) != 4 {
		t.Fatalf("cancel actions = %d, want 4", count(cancels, actCancel))
	}
	// A late report of the old attempt changes nothing.
	if got := h.update(acts[1], sluicev1.TaskState_TASK_STATE_FINISHED); len(got) != 0 {
		t.Fatalf("actions after canceling task finished: %v", got)
	}
	for _, a := range cancels {
		h.update(a, sluicev1.TaskState_TASK_STATE_CANCELED)
	}
	// Slots are free, but the restart waits for the delay.
	if h.pool.FreeSlots() != 4 || len(h.job.tasks) != 0 {
		t.Fatalf("after cancel: free %d, tasks %d", h.pool.FreeSlots(), len(h.job.tasks))
	}
	h.now = h.now.Add(500 * time.Millisecond)
	if got := h.job.tick(h.pool, h.now); len(got) != 0 {
		t.Fatal("restarted before the delay")
	}
	h.now = h.now.Add(600 * time.Millisecond)
	re := h.job.tick(h.pool, h.now)
	if count(re, actDeploy) != 5 || h.job.attempt != 2 || h.job.restarts != 1 {
		t.Fatalf("restart: %d deploys, attempt %d, restarts %d", count(re, actDeploy), h.job.attempt, h.job.restarts)
	}
	h.wantState(sluicev1.JobState_JOB_STATE_RUNNING)
	// Old-attempt updates are ignored.
	if got := h.update(acts[2], sluicev1.TaskState_TASK_STATE_FAILED); len(got) != 0 || h.job.state != sluicev1.JobState_JOB_STATE_RUNNING {
		t.Fatal("stale attempt's failure affected the job")
	}
	// The second failure exhausts the strategy (1 attempt).
	h.update(re[0], sluicev1.TaskState_TASK_STATE_FAILED)
	h.wantState(sluicev1.JobState_JOB_STATE_FAILED)
	if !strings.Contains(h.job.failure, "exhausted") {
		t.Fatalf("failure %q does not say the restarts are exhausted", h.job.failure)
	}
}

func TestTaskManagerLostRestartsOnSurvivors(t *testing.T) {
	h := newHarness(t, 3, "a", "b", "c")
	acts := h.job.trySchedule(h.pool, h.now)
	victim := acts[0].task.tm
	h.pool.Get(victim).Alive = false
	acts2 := h.job.taskManagerLost(h.pool, victim, "test", false, h.now)
	h.pool.Remove(victim)
	h.wantState(sluicev1.JobState_JOB_STATE_RESTARTING)
	for _, a := range acts2 {
		if a.tm.ID == victim {
			t.Fatalf("cancel sent to the lost task manager")
		}
		h.update(a, sluicev1.TaskState_TASK_STATE_CANCELED)
	}
	h.now = h.now.Add(2 * time.Second)
	re := h.job.tick(h.pool, h.now)
	if count(re, actDeploy) != 5 {
		t.Fatalf("redeploys = %d, want 5", count(re, actDeploy))
	}
	for _, a := range re {
		if a.task.tm == victim {
			t.Fatalf("redeployed onto the lost task manager")
		}
	}
}

func TestCancelAndCancelTimeout(t *testing.T) {
	h := newHarness(t, 3, "a", "b")
	acts := h.job.trySchedule(h.pool, h.now)
	cancels := h.job.cancel(h.pool, h.now)
	h.wantState(sluicev1.JobState_JOB_STATE_CANCELLING)
	if count(cancels, actCancel) != len(acts) {
		t.Fatalf("cancels %d, want %d", count(cancels, actCancel), len(acts))
	}
	h.update(cancels[0], sluicev1.TaskState_TASK_STATE_CANCELED)
	h.now = h.now.Add(h.job.cancelTimeout + time.Second)
	h.job.tick(h.pool, h.now)
	h.wantState(sluicev1.JobState_JOB_STATE_CANCELED)
	if h.pool.FreeSlots() != 4 {
		t.Fatalf("free slots %d after cancel, want 4", h.pool.FreeSlots())
	}
	if got := h.job.cancel(h.pool, h.now); got != nil {
		t.Fatal("cancel of a canceled job did something")
	}
}

func TestWaitsForSlotsThenTimesOut(t *testing.T) {
	h := newHarness(t, 3, "a") // 2 slots, job needs 3
	h.job.slotTimeout = time.Minute
	if acts := h.job.trySchedule(h.pool, h.now); len(acts) != 0 {
		t.Fatal("scheduled without enough slots")
	}
	h.wantState(sluicev1.JobState_JOB_STATE_CREATED)
	h.pool.Add("b", "b:1", 1, "b")
	h.now = h.now.Add(10 * time.Second)
	if acts := h.job.tick(h.pool, h.now); count(acts, actDeploy) != 5 {
		t.Fatal("did not schedule once slots arrived")
	}

	h2 := newHarness(t, 3, "a")
	h2.job.slotTimeout = time.Minute
	h2.job.trySchedule(h2.pool, h2.now)
	h2.now = h2.now.Add(61 * time.Second)
	h2.job.tick(h2.pool, h2.now)
	h2.wantState(sluicev1.JobState_JOB_STATE_FAILED)
	if !strings.Contains(h2.job.failure, "need 3 slots") {
		t.Fatalf("failure %q does not say how many slots", h2.job.failure)
	}
}

// TestRandomInterleavings drives the state machine with random events and checks after
// every step that slots are never over- or under-counted, attempts only grow, and a
// terminal job holds no slots.
func TestRandomInterleavings(t *testing.T) {
	for seed := uint64(1); seed <= 50; seed++ {
		rng := rand.New(rand.NewPCG(seed, seed))
		h := newHarness(t, 5, "a", "b", "c")
		tms := []string{"a", "b", "c"}
		var pending []action
		lastAttempt := int64(0)
		for step := 0; step < 2000; step++ {
			var acts []action
			switch r := rng.IntN(100); {
			case r < 40 && len(pending) > 0:
				i := rng.IntN(len(pending))
				a := pending[i]
				pending = append(pending[:i], pending[i+1:]...)
				states := []sluicev1.TaskState{sluicev1.TaskState_TASK_STATE_RUNNING, sluicev1.TaskState_TASK_STATE_FINISHED, sluicev1.TaskState_TASK_STATE_CANCELED}
				if rng.IntN(20) == 0 {
					states = append(states, sluicev1.TaskState_TASK_STATE_FAILED)
				}
				st := states[rng.IntN(len(states))]
				if a.kind == actCancel {
					st = sluicev1.TaskState_TASK_STATE_CANCELED
				}
				acts = h.update(a, st)
				if st == sluicev1.TaskState_TASK_STATE_RUNNING {
					pending = append(pending, a)
				}
			case r < 45:
				id := tms[rng.IntN(len(tms))]
				if tm := h.pool.Get(id); tm != nil && rng.IntN(5) == 0 {
					tm.Alive = false
					acts = h.job.taskManagerLost(h.pool, id, "test", rng.IntN(2) == 0, h.now)
					h.pool.Remove(id)
				} else if tm == nil {
					h.pool.Add(id, id+":1", 2, "b")
				}
			case r < 47:
				acts = h.job.cancel(h.pool, h.now)
			default:
				h.now = h.now.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
				acts = h.job.tick(h.pool, h.now)
			}
			pending = append(pending, acts...)
			// Invariants.
			used := 0
			for _, tm := range h.pool.List() {
				if tm.Used < 0 || tm.Used > tm.Slots {
					t.Fatalf("seed %d step %d: tm %s uses %d of %d slots", seed, step, tm.ID, tm.Used, tm.Slots)
				}
				used += tm.Used
			}
			held := 0
			for _, id := range h.job.slots {
				if h.pool.Get(id) != nil {
					held++
				}
			}
			if used != held {
				t.Fatalf("seed %d step %d: pool has %d slots in use, job holds %d", seed, step, used, held)
			}
			if h.job.attempt < lastAttempt {
				t.Fatalf("seed %d step %d: attempt went back", seed, step)
			}
			lastAttempt = h.job.attempt
			if h.job.terminal() && len(h.job.tasks) == 0 && len(h.job.slots) != 0 {
				t.Fatalf("seed %d step %d: terminal job holds slots", seed, step)
			}
		}
	}
}

// TestStoppedJobEndsFinished: once the savepoint that stops a job completed, a task
// failure does not restart it: the other tasks are canceled and the job ends FINISHED;
// the record wanted names the savepoint, which makes it stale until written.
func TestStoppedJobEndsFinished(t *testing.T) {
	h := newHarness(t, 3, "a", "b")
	acts := h.job.trySchedule(h.pool, h.now)
	h.job.rec.written = h.job.wantRecord()
	h.job.stopped, h.job.savepointPath = true, "file:///sp/savepoint-j1-0123456789ab"
	if w := h.job.wantRecord(); !recordStale(h.job.rec.written, w) || w.GetSavepointPath() != h.job.savepointPath {
		t.Fatalf("record wanted after the stop's savepoint: %v", w)
	}
	h.update(acts[0], sluicev1.TaskState_TASK_STATE_FINISHED)
	cancels := h.update(acts[1], sluicev1.TaskState_TASK_STATE_FAILED)
	h.wantState(sluicev1.JobState_JOB_STATE_CANCELLING)
	if count(cancels, actCancel) != 3 {
		t.Fatalf("%d cancels, want the 3 tasks left", count(cancels, actCancel))
	}
	for _, a := range cancels {
		h.update(a, sluicev1.TaskState_TASK_STATE_CANCELED)
	}
	h.wantState(sluicev1.JobState_JOB_STATE_FINISHED)
	if h.job.restarts != 0 || h.job.status().GetSavepointPath() != h.job.savepointPath {
		t.Fatalf("restarts %d, status %v", h.job.restarts, h.job.status())
	}
	// A user's cancel still ends a job CANCELED.
	h2 := newHarness(t, 3, "a", "b")
	h2.job.trySchedule(h2.pool, h2.now)
	for _, a := range h2.job.cancel(h2.pool, h2.now) {
		h2.update(a, sluicev1.TaskState_TASK_STATE_CANCELED)
	}
	h2.wantState(sluicev1.JobState_JOB_STATE_CANCELED)
}
