package checkpoint

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// t0 is the fake clock's origin; steps are offsets from it.
var t0 = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

const (
	ms  = time.Millisecond
	sec = time.Second
)

// threeTasks: vertex 0 with two subtasks, vertex 1 with one.
var threeTasks = []TaskID{{0, 0}, {0, 1}, {1, 0}}

// render describes an action for the scenario tables.
func render(a Action) string {
	switch a := a.(type) {
	case AllocateID:
		return fmt.Sprintf("alloc r%d", a.Request)
	case Trigger:
		s := fmt.Sprintf("trigger %d", a.ID)
		if a.Kind == KindSavepoint {
			s = fmt.Sprintf("trigger savepoint %d", a.ID)
		}
		return s
	case Finalize:
		return fmt.Sprintf("finalize %d", a.ID)
	case NotifyComplete:
		return fmt.Sprintf("complete %d", a.ID)
	case NotifyAborted:
		return fmt.Sprintf("abort %d: %s", a.ID, a.Reason)
	case OutcomeUnknown:
		return fmt.Sprintf("unknown %d: %s", a.ID, a.Reason)
	case RequestAborted:
		return fmt.Sprintf("request aborted r%d: %s", a.Request, a.Reason)
	case FailJob:
		return "fail job: " + a.Reason
	}
	return fmt.Sprintf("%#v", a)
}

type harness struct {
	t   *testing.T
	c   *Coordinator
	now time.Time
}

// step is one input at a time (an offset from t0) and the actions it must produce, each
// given by a prefix of its rendering; an error renders as "error: ...".
type step struct {
	at   time.Duration
	do   func(h *harness) ([]Action, error)
	want []string
}

func run(t *testing.T, cfg Config, steps []step) *harness {
	t.Helper()
	c, err := New(Job{ID: "job", Name: "test", MaxParallelism: 128}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, c: c}
	for i, s := range steps {
		h.now = t0.Add(s.at)
		acts, err := s.do(h)
		var got []string
		for _, a := range acts {
			got = append(got, render(a))
		}
		if err != nil {
			got = append(got, "error: "+err.Error())
		}
		ok := len(got) == len(s.want)
		for j := 0; ok && j < len(got); j++ {
			ok = strings.HasPrefix(got[j], s.want[j])
		}
		if !ok {
			t.Fatalf("step %d at %v: got\n\t%s\nwant\n\t%s", i, s.at, strings.Join(got, "\n\t"), strings.Join(s.want, "\n\t"))
		}
	}
	return h
}

func start(tasks []TaskID) func(*harness) ([]Action, error) {
	return func(h *harness) ([]Action, error) { return nil, h.c.Start(h.now, tasks) }
}
func stop(h *harness) ([]Action, error)  { return h.c.Stop(h.now, "test"), nil }
func tick(h *harness) ([]Action, error)  { return h.c.Tick(h.now), nil }
func pause(h *harness) ([]Action, error) { h.c.PausePeriodic(); return nil, nil }
func resume(h *harness) ([]Action, error) {
	h.c.ResumePeriodic(h.now)
	return nil, nil
}
func manual(kind Kind) func(*harness) ([]Action, error) {
	return func(h *harness) ([]Action, error) {
		_, acts, err := h.c.TriggerManual(h.now, kind)
		return acts, err
	}
}
func alloc(req RequestID, id int64) func(*harness) ([]Action, error) {
	return func(h *harness) ([]Action, error) { return h.c.IDAllocated(h.now, req, id) }
}
func allocFail(req RequestID) func(*harness) ([]Action, error) {
	return func(h *harness) ([]Action, error) { return h.c.IDFailed(h.now, req, errors.New("etcd down")), nil }
}
func ack(id int64, tasks ...TaskID) func(*harness) ([]Action, error) {
	return func(h *harness) ([]Action, error) {
		var acts []Action
		for _, t := range tasks {
			acts = append(acts, h.c.Ack(h.now, id, t, nil)...)
		}
		return acts, nil
	}
}
func ackAll(id int64) func(*harness) ([]Action, error) { return ack(id, threeTasks...) }
func decline(id int64, task TaskID) func(*harness) ([]Action, error) {
	return func(h *harness) ([]Action, error) { return h.c.Decline(h.now, id, task, "disk full"), nil }
}
func finalized(id int64) func(*harness) ([]Action, error) {
	return func(h *harness) ([]Action, error) { return h.c.Finalized(h.now, id), nil }
}
func finalizeFailed(id int64, unknown bool) func(*harness) ([]Action, error) {
	return func(h *harness) ([]Action, error) {
		return h.c.FinalizeFailed(h.now, id, errors.New("etcd timeout"), unknown), nil
	}
}
func setTasks(tasks []TaskID) func(*harness) ([]Action, error) {
	return func(h *harness) ([]Action, error) { return h.c.SetTasks(h.now, tasks) }
}

// cfg returns a config for the tables: periodic every 10 s, a long timeout.
func cfg(mod func(*Config)) Config {
	c := DefaultConfig()
	c.Interval = 10 * sec
	c.Timeout = time.Hour
	if mod != nil {
		mod(&c)
	}
	return c
}

// complete runs checkpoint id (request req) from its ID to its completion at at.
func complete(at time.Duration, req RequestID, id int64) []step {
	return []step{
		{at, alloc(req, id), []string{fmt.Sprintf("trigger %d", id)}},
		{at, ackAll(id), []string{fmt.Sprintf("finalize %d", id)}},
		{at, finalized(id), []string{fmt.Sprintf("complete %d", id)}},
	}
}

func seq(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func TestCoordinatorRules(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   Config
		steps []step
	}{
		{"interval: first after Interval, next Interval after the trigger", cfg(nil), seq(
			[]step{
				{0, start(threeTasks), nil},
				{9999 * ms, tick, nil},
				{10 * sec, tick, []string{"alloc r1"}},
			},
			complete(11*sec, 1, 1),
			[]step{
				{19999 * ms, tick, nil},
				{20 * sec, tick, []string{"alloc r2"}},
				{20 * sec, tick, nil},
			},
		)},
		{"paused: no periodic checkpoint, manual ones go; resumed: the next Interval later; Start resumes", cfg(func(c *Config) { c.MaxConcurrent = 2 }), seq(
			[]step{
				{0, start(threeTasks), nil},
				{sec, pause, nil},
				{10 * sec, tick, nil},
				{30 * sec, tick, nil},
				{30 * sec, manual(KindSavepoint), []string{"alloc r1"}},
				{30 * sec, alloc(1, 1), []string{"trigger savepoint 1"}},
				{31 * sec, resume, nil},
				{40 * sec, tick, nil},
				{41 * sec, tick, []string{"alloc r2"}},
				{42 * sec, pause, nil},
				{42 * sec, stop, []string{"request aborted r2", "abort 1"}},
				{42 * sec, alloc(2, 2), nil},
				{43 * sec, start(threeTasks), nil},
				{53 * sec, tick, []string{"alloc r3"}},
			},
		)},
		{"interval 0: no periodic checkpoints, manual ones work", cfg(func(c *Config) { c.Interval = 0 }), seq(
			[]step{
				{0, start(threeTasks), nil},
				{time.Hour, tick, nil},
				{time.Hour, manual(KindCheckpoint), []string{"alloc r1"}},
			},
			complete(time.Hour, 1, 1),
			[]step{{100 * time.Hour, tick, nil}},
		)},
		{"a due checkpoint waits for MaxConcurrent, then the next is Interval after it", cfg(nil), seq(
			[]step{
				{0, start(threeTasks), nil},
				{10 * sec, tick, []string{"alloc r1"}},
				{10 * sec, alloc(1, 1), []string{"trigger 1"}},
				{20 * sec, tick, nil},
				{25 * sec, ackAll(1), []string{"finalize 1"}},
				{25 * sec, tick, nil}, // still in progress while finalizing
				{26 * sec, finalized(1), []string{"complete 1"}},
				{26 * sec, tick, []string{"alloc r2"}},
				{26 * sec, alloc(2, 2), []string{"trigger 2"}},
				{27 * sec, ackAll(2), []string{"finalize 2"}},
				{27 * sec, finalized(2), []string{"complete 2"}},
				{35 * sec, tick, nil},
				{36 * sec, tick, []string{"alloc r3"}},
			},
		)},
		{"min pause after a completion", cfg(func(c *Config) { c.MinPause = 8 * sec }), seq(
			[]step{
				{0, start(threeTasks), nil},
				{10 * sec, tick, []string{"alloc r1"}},
			},
			complete(15*sec, 1, 1),
			[]step{
				{20 * sec, tick, nil},
				{22999 * ms, tick, nil},
				{23 * sec, tick, []string{"alloc r2"}},
			},
		)},
		{"min pause after a failure", cfg(func(c *Config) { c.MinPause = 8 * sec; c.TolerableFailures = 5 }), []step{
			{0, start(threeTasks), nil},
			{10 * sec, tick, []string{"alloc r1"}},
			{10 * sec, alloc(1, 1), []string{"trigger 1"}},
			{15 * sec, decline(1, TaskID{1, 0}), []string{"abort 1: declined by task vertex 1 subtask 0: disk full"}},
			{22 * sec, tick, nil},
			{23 * sec, tick, []string{"alloc r2"}},
		}},
		{"min pause keeps periodic checkpoints apart despite MaxConcurrent", cfg(func(c *Config) { c.MinPause = sec; c.MaxConcurrent = 3 }), []step{
			{0, start(threeTasks), nil},
			{10 * sec, tick, []string{"alloc r1"}},
			{10 * sec, alloc(1, 1), []string{"trigger 1"}},
			{20 * sec, tick, nil},
			{30 * sec, tick, nil},
			{30 * sec, manual(KindCheckpoint), []string{"alloc r2"}}, // manual ignores the pause
		}},
		{"manual ignores min pause", cfg(func(c *Config) { c.MinPause = time.Minute }), seq(
			[]step{{0, start(threeTasks), nil}, {sec, manual(KindCheckpoint), []string{"alloc r1"}}},
			complete(2*sec, 1, 1),
			[]step{{2 * sec, manual(KindSavepoint), []string{"alloc r2"}}},
		)},
		{"max concurrent: periodic waits, manual refused, a request waiting for its ID counts", cfg(func(c *Config) { c.MaxConcurrent = 2; c.TolerableFailures = 1 }), []step{
			{0, start(threeTasks), nil},
			{10 * sec, tick, []string{"alloc r1"}},
			{10 * sec, manual(KindCheckpoint), nil}, // queued behind r1's allocation
			{10 * sec, manual(KindCheckpoint), []string{"error: cannot trigger a checkpoint now: too many checkpoints in progress: 2 in progress, and at most 2"}},
			{10 * sec, alloc(1, 1), []string{"trigger 1", "alloc r2"}},
			{10 * sec, alloc(2, 2), []string{"trigger 2"}},
			{20 * sec, tick, nil},
			{21 * sec, manual(KindSavepoint), []string{"error: cannot trigger a savepoint now: too many"}},
			{22 * sec, decline(1, TaskID{0, 1}), []string{"abort 1: declined"}},
			{22 * sec, tick, []string{"alloc r3"}},
			{22 * sec, manual(KindCheckpoint), []string{"error: cannot trigger a checkpoint now"}},
		}},
		{"manual refused when not running", cfg(nil), []step{
			{0, manual(KindCheckpoint), []string{"error: cannot trigger a checkpoint: checkpointing is not running"}},
			{0, start(threeTasks), nil},
			{0, stop, nil},
			{0, manual(KindSavepoint), []string{"error: cannot trigger a savepoint: checkpointing is not running"}},
		}},
		{"timeout from the trigger, not from the request", cfg(func(c *Config) { c.Timeout = 5 * sec; c.TolerableFailures = 1 }), []step{
			{0, start(threeTasks), nil},
			{10 * sec, tick, []string{"alloc r1"}},
			{10 * sec, allocFail(1), nil},
			{11 * sec, tick, []string{"alloc r1"}},
			{12 * sec, alloc(1, 1), []string{"trigger 1"}},
			{16 * sec, ack(1, TaskID{0, 0}), nil},
			{16999 * ms, tick, nil},
			{17 * sec, tick, []string{"abort 1: expired: not acknowledged by all tasks within the timeout of 5s (1 of 3 acknowledged)"}},
			{17 * sec, ack(1, TaskID{0, 1}, TaskID{1, 0}), nil}, // late
		}},
		{"a fully acknowledged checkpoint waiting to finalize never expires", cfg(func(c *Config) { c.Timeout = 5 * sec; c.MaxConcurrent = 2; c.Interval = 0 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), []string{"alloc r1"}},
			{0, alloc(1, 1), []string{"trigger 1"}},
			{0, manual(KindCheckpoint), []string{"alloc r2"}},
			{0, alloc(2, 2), []string{"trigger 2"}},
			{sec, ackAll(1), []string{"finalize 1"}},
			{sec, ackAll(2), nil}, // waits for 1's finalize
			{time.Minute, tick, nil},
			{time.Minute, finalized(1), []string{"complete 1", "finalize 2"}},
			{time.Minute, finalized(2), []string{"complete 2"}},
		}},
		{"tolerable failures: declined, expired, finalize failed, then FailJob", cfg(func(c *Config) { c.TolerableFailures = 2; c.Timeout = 5 * sec; c.Interval = 0 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), []string{"alloc r1"}},
			{0, alloc(1, 1), []string{"trigger 1"}},
			{sec, decline(1, TaskID{0, 0}), []string{"abort 1: declined"}},
			{sec, manual(KindCheckpoint), []string{"alloc r2"}},
			{sec, alloc(2, 2), []string{"trigger 2"}},
			{6 * sec, tick, []string{"abort 2: expired"}},
			{6 * sec, manual(KindCheckpoint), []string{"alloc r3"}},
			{6 * sec, alloc(3, 3), []string{"trigger 3"}},
			{7 * sec, ackAll(3), []string{"finalize 3"}},
			{7 * sec, finalizeFailed(3, false), []string{"abort 3: finalizing failed: etcd timeout",
				"fail job: 3 consecutive checkpoints failed, more than the 2 tolerated (execution.checkpointing.tolerable-failed-checkpoints); the last, 3: finalizing failed"}},
			// FailJob stopped the coordinator.
			{7 * sec, manual(KindCheckpoint), []string{"error: cannot trigger a checkpoint: checkpointing is not running"}},
			{7 * sec, stop, nil},
			{8 * sec, start(nil), nil},
			// The count started again.
			{8 * sec, manual(KindCheckpoint), []string{"alloc r4"}},
			{8 * sec, alloc(4, 4), []string{"trigger 4"}},
			{8 * sec, decline(4, TaskID{0, 0}), []string{"abort 4: declined"}},
		}},
		{"FailJob aborts what is in progress", cfg(func(c *Config) { c.MaxConcurrent = 3; c.Interval = 0 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), []string{"alloc r1"}},
			{0, alloc(1, 1), []string{"trigger 1"}},
			{0, manual(KindCheckpoint), []string{"alloc r2"}},
			{0, alloc(2, 2), []string{"trigger 2"}},
			{0, manual(KindSavepoint), []string{"alloc r3"}},
			{0, decline(1, TaskID{1, 0}), []string{"abort 1: declined", "request aborted r3: the job is failing", "abort 2: the job is failing", "fail job: 1 consecutive"}},
			{0, alloc(3, 3), nil}, // answered after the abort: discarded
			{0, ackAll(2), nil},
		}},
		{"a completion resets the failure count", cfg(func(c *Config) { c.TolerableFailures = 1; c.Interval = 0 }), seq(
			[]step{
				{0, start(threeTasks), nil},
				{0, manual(KindCheckpoint), []string{"alloc r1"}},
				{0, alloc(1, 1), []string{"trigger 1"}},
				{0, decline(1, TaskID{0, 0}), []string{"abort 1"}},
				{0, manual(KindCheckpoint), []string{"alloc r2"}},
			},
			complete(0, 2, 2),
			[]step{
				{0, manual(KindCheckpoint), []string{"alloc r3"}},
				{0, alloc(3, 3), []string{"trigger 3"}},
				{0, decline(3, TaskID{0, 0}), []string{"abort 3"}},
				{0, manual(KindCheckpoint), []string{"alloc r4"}},
				{0, alloc(4, 4), []string{"trigger 4"}},
				{0, decline(4, TaskID{0, 0}), []string{"abort 4", "fail job: 2 consecutive"}},
			},
		)},
		{"savepoint failures and failover aborts are not counted", cfg(func(c *Config) { c.Interval = 0; c.MaxConcurrent = 2 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindSavepoint), []string{"alloc r1"}},
			{0, alloc(1, 1), []string{"trigger savepoint 1"}},
			{0, decline(1, TaskID{0, 0}), []string{"abort 1: declined"}},
			{0, manual(KindCheckpoint), []string{"alloc r2"}},
			{0, alloc(2, 2), []string{"trigger 2"}},
			{0, manual(KindCheckpoint), []string{"alloc r3"}},
			{0, stop, []string{"request aborted r3: checkpointing stopped: test", "abort 2: checkpointing stopped: test"}},
			{0, alloc(3, 3), nil},
			{0, start(nil), nil},
			{0, manual(KindCheckpoint), []string{"alloc r4"}},
			{0, alloc(4, 4), []string{"trigger 4"}},
			{0, decline(4, TaskID{0, 0}), []string{"abort 4", "fail job"}}, // the first counted failure
		}},
		{"late and unknown acks and declines are ignored", cfg(func(c *Config) { c.Interval = 0; c.TolerableFailures = 10 }), seq(
			[]step{
				{0, start(threeTasks), nil},
				{0, ack(99, TaskID{0, 0}), nil},
				{0, decline(99, TaskID{0, 0}), nil},
				{0, manual(KindCheckpoint), []string{"alloc r1"}},
				{0, alloc(1, 1), []string{"trigger 1"}},
				{0, decline(1, TaskID{1, 0}), []string{"abort 1: declined"}},
				{0, ackAll(1), nil},
				{0, decline(1, TaskID{0, 0}), nil},
				{0, manual(KindCheckpoint), []string{"alloc r2"}},
			},
			complete(0, 2, 2),
			[]step{
				{0, ackAll(2), nil},
				{0, decline(2, TaskID{0, 0}), nil},
				{0, finalized(2), nil},
				{0, manual(KindCheckpoint), []string{"alloc r3"}},
				{0, alloc(3, 3), []string{"trigger 3"}},
				{0, ack(3, TaskID{0, 0}, TaskID{0, 1}, TaskID{2, 0}, TaskID{0, 2}), nil}, // tasks it does not expect
				{0, ack(3, TaskID{1, 0}), []string{"finalize 3"}},
				{0, decline(3, TaskID{1, 0}), nil}, // finalizing: too late to decline
				{0, finalizeFailed(3, true), []string{"unknown 3: finalizing: outcome unknown"}},
				{0, ackAll(3), nil},
				{0, decline(3, TaskID{0, 0}), nil},
				{0, finalized(3), nil},
				{0, finalizeFailed(3, false), nil},
			},
		)},
		{"duplicate acks are ignored", cfg(func(c *Config) { c.Interval = 0 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), []string{"alloc r1"}},
			{0, alloc(1, 1), []string{"trigger 1"}},
			{0, ack(1, TaskID{0, 0}, TaskID{0, 0}, TaskID{0, 1}, TaskID{0, 1}, TaskID{0, 0}), nil},
			{0, decline(1, TaskID{0, 0}), nil}, // acknowledged already
			{0, ack(1, TaskID{1, 0}), []string{"finalize 1"}},
			{0, ack(1, TaskID{1, 0}), nil},
			{0, finalized(1), []string{"complete 1"}},
		}},
		{"subsumption: a completed checkpoint aborts the older ones", cfg(func(c *Config) { c.Interval = 0; c.MaxConcurrent = 3 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), []string{"alloc r1"}},
			{0, alloc(1, 1), []string{"trigger 1"}},
			{0, manual(KindCheckpoint), []string{"alloc r2"}},
			{0, alloc(2, 2), []string{"trigger 2"}},
			{0, manual(KindCheckpoint), []string{"alloc r3"}},
			{0, alloc(3, 3), []string{"trigger 3"}},
			{0, ackAll(2), []string{"finalize 2"}},
			{0, ackAll(1), nil}, // waits: 2 is finalizing
			{0, finalized(2), []string{"complete 2", "abort 1: subsumed by checkpoint 2, which completed"}},
			{0, ackAll(3), []string{"finalize 3"}},
			{0, finalized(3), []string{"complete 3"}},
		}},
		{"finalize in ID order; a failed finalize lets the next one go", cfg(func(c *Config) { c.Interval = 0; c.MaxConcurrent = 3; c.TolerableFailures = 5 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), []string{"alloc r1"}},
			{0, alloc(1, 1), []string{"trigger 1"}},
			{0, manual(KindCheckpoint), []string{"alloc r2"}},
			{0, alloc(2, 2), []string{"trigger 2"}},
			{0, manual(KindCheckpoint), []string{"alloc r3"}},
			{0, alloc(3, 3), []string{"trigger 3"}},
			{0, ackAll(1), []string{"finalize 1"}},
			{0, ackAll(3), nil},
			{0, ackAll(2), nil},
			{0, finalizeFailed(1, false), []string{"abort 1: finalizing failed", "finalize 2"}},
			{0, finalized(2), []string{"complete 2", "finalize 3"}},
			{0, finalized(3), []string{"complete 3"}},
		}},
		{"unknown outcome: no notification, older ones subsumed, counted", cfg(func(c *Config) { c.Interval = 0; c.MaxConcurrent = 2 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), []string{"alloc r1"}},
			{0, alloc(1, 1), []string{"trigger 1"}},
			{0, manual(KindCheckpoint), []string{"alloc r2"}},
			{0, alloc(2, 2), []string{"trigger 2"}},
			{0, ackAll(2), []string{"finalize 2"}},
			{0, finalizeFailed(2, true), []string{"unknown 2: finalizing: outcome unknown", "abort 1: subsumed by checkpoint 2, which may have completed", "fail job"}},
		}},
		{"stop aborts everything but the checkpoint being finalized", cfg(func(c *Config) { c.Interval = 0; c.MaxConcurrent = 4 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), []string{"alloc r1"}},
			{0, alloc(1, 1), []string{"trigger 1"}},
			{0, manual(KindCheckpoint), []string{"alloc r2"}},
			{0, alloc(2, 2), []string{"trigger 2"}},
			{0, manual(KindCheckpoint), []string{"alloc r3"}},
			{0, alloc(3, 3), []string{"trigger 3"}},
			{0, ackAll(1), []string{"finalize 1"}},
			{0, ackAll(2), nil},
			{0, manual(KindSavepoint), []string{"alloc r4"}},
			{0, stop, []string{"request aborted r4", "abort 2: checkpointing stopped: test", "abort 3: checkpointing stopped: test"}},
			{0, stop, nil},
			{0, tick, nil},
			{0, ackAll(3), nil},
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), nil}, // r5 waits for r4's allocation to be answered
			{0, alloc(4, 4), []string{"alloc r5"}},
			{0, alloc(5, 5), []string{"trigger 5"}},
			{0, ackAll(5), nil}, // waits for 1's finalize
			{0, finalized(1), []string{"complete 1", "finalize 5"}},
			{0, finalized(5), []string{"complete 5"}},
		}},
		{"failure of an earlier attempt's checkpoint is not counted", cfg(func(c *Config) { c.Interval = 0; c.MaxConcurrent = 2 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), []string{"alloc r1"}},
			{0, alloc(1, 1), []string{"trigger 1"}},
			{0, ackAll(1), []string{"finalize 1"}},
			{0, stop, nil},
			{0, start(threeTasks), nil},
			{0, finalizeFailed(1, false), []string{"abort 1: finalizing failed"}},
			{0, manual(KindCheckpoint), []string{"alloc r2"}},
		}},
		{"IDs strictly increasing", cfg(func(c *Config) { c.Interval = 0 }), seq(
			[]step{
				{0, start(threeTasks), nil},
				{0, manual(KindCheckpoint), []string{"alloc r1"}},
			},
			complete(0, 1, 7),
			[]step{
				{0, manual(KindCheckpoint), []string{"alloc r2"}},
				{0, alloc(3, 8), nil}, // not the request asked for
				{0, alloc(2, 7), []string{"request aborted r2: the job is failing: the checkpoint ID counter went backwards (returned 7 after 7)",
					"fail job: the checkpoint ID counter went backwards",
					"error: checkpoint: checkpoint ID not increasing: the counter returned 7 after 7 had been allocated"}},
				{0, start(nil), nil},
				{0, manual(KindCheckpoint), []string{"alloc r3"}},
				{0, alloc(3, 8), []string{"trigger 8"}},
			},
		)},
		{"ID allocation failure retried on the next tick; periodic checkpoints do not pile up", cfg(func(c *Config) { c.MaxConcurrent = 2 }), []step{
			{0, start(threeTasks), nil},
			{10 * sec, tick, []string{"alloc r1"}},
			{10 * sec, allocFail(1), nil},
			{10 * sec, manual(KindCheckpoint), nil}, // behind r1, which waits for a tick
			{10100 * ms, tick, []string{"alloc r1"}},
			{10200 * ms, allocFail(1), nil},
			{time.Minute, tick, []string{"alloc r1"}}, // two requests waiting: no periodic one
			{time.Minute, alloc(1, 1), []string{"trigger 1", "alloc r2"}},
			{time.Minute, allocFail(2), nil},
			{time.Minute, stop, []string{"request aborted r2: checkpointing stopped: test (allocating its ID last failed: etcd down)", "abort 1"}},
		}},
		{"SetTasks aborts collecting checkpoints (not counted); acknowledged ones go on", cfg(func(c *Config) { c.Interval = 0; c.MaxConcurrent = 3 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), []string{"alloc r1"}},
			{0, alloc(1, 1), []string{"trigger 1"}},
			{0, manual(KindCheckpoint), []string{"alloc r2"}},
			{0, alloc(2, 2), []string{"trigger 2"}},
			{0, ackAll(1), []string{"finalize 1"}},
			{0, setTasks(threeTasks), nil}, // the same tasks: nothing changes
			{0, setTasks([]TaskID{{0, 0}}), []string{"abort 2: the job's tasks changed"}},
			{0, finalized(1), []string{"complete 1"}},
			{0, manual(KindCheckpoint), []string{"alloc r3"}},
			{0, alloc(3, 3), []string{"trigger 3"}},
			{0, ack(3, TaskID{0, 0}), []string{"finalize 3"}},
		}},
		{"stale allocation answers after a restart are discarded", cfg(func(c *Config) { c.Interval = 0 }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), []string{"alloc r1"}},
			{0, stop, []string{"request aborted r1"}},
			{0, start(threeTasks), nil},
			{0, manual(KindCheckpoint), nil},
			{0, allocFail(1), []string{"alloc r2"}},
			{0, alloc(2, 1), []string{"trigger 1"}},
		}},
		{"savepoints are aligned", cfg(func(c *Config) { c.Interval = 0; c.Unaligned = true; c.AlignedTimeout = sec }), []step{
			{0, start(threeTasks), nil},
			{0, manual(KindSavepoint), []string{"alloc r1"}},
			{0, func(h *harness) ([]Action, error) {
				acts, err := h.c.IDAllocated(h.now, 1, 1)
				if tr := acts[0].(Trigger); tr.Unaligned || tr.AlignedTimeout != 0 || tr.Kind != KindSavepoint || tr.Periodic {
					h.t.Errorf("savepoint trigger %+v", tr)
				}
				return acts, err
			}, []string{"trigger savepoint 1"}},
			{0, manual(KindCheckpoint), []string{"error"}},
		}},
		{"trigger passes the mode through", cfg(func(c *Config) { c.Mode = AtLeastOnce; c.Unaligned = true; c.AlignedTimeout = sec }), []step{
			{0, start(threeTasks), nil},
			{10 * sec, tick, []string{"alloc r1"}},
			{11 * sec, func(h *harness) ([]Action, error) {
				acts, err := h.c.IDAllocated(h.now, 1, 1)
				want := Trigger{ID: 1, Request: 1, Kind: KindCheckpoint, Periodic: true, Timestamp: h.now, Mode: AtLeastOnce, Unaligned: true, AlignedTimeout: sec}
				if acts[0] != Action(want) {
					h.t.Errorf("trigger %+v, want %+v", acts[0], want)
				}
				return acts, err
			}, []string{"trigger 1"}},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { run(t, tc.cfg, tc.steps) })
	}
}

func TestStartErrors(t *testing.T) {
	c, err := New(Job{}, DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t0, nil); err == nil {
		t.Error("Start without tasks succeeded")
	}
	if err := c.Start(t0, []TaskID{{0, 0}, {0, 0}}); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("duplicate tasks: %v", err)
	}
	if err := c.Start(t0, []TaskID{{-1, 0}}); err == nil {
		t.Error("negative vertex accepted")
	}
	if _, err := c.SetTasks(t0, nil); err == nil {
		t.Error("SetTasks without tasks succeeded")
	}
	if err := c.Start(t0, threeTasks); err != nil {
		t.Fatal(err)
	}
	if !c.Running() {
		t.Error("not running after Start")
	}
	if err := c.Start(t0, threeTasks); err == nil {
		t.Error("second Start succeeded")
	}
	if _, _, err := c.TriggerManual(t0, Kind(7)); err == nil {
		t.Error("unknown kind accepted")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Interval = -1 }, "interval"},
		{func(c *Config) { c.Timeout = 0 }, "timeout"},
		{func(c *Config) { c.MinPause = -1 }, "min pause"},
		{func(c *Config) { c.MaxConcurrent = 0 }, "max concurrent"},
		{func(c *Config) { c.TolerableFailures = -1 }, "tolerable"},
		{func(c *Config) { c.Mode = 9 }, "mode"},
		{func(c *Config) { c.AlignedTimeout = -1 }, "aligned"},
		{func(c *Config) { c.HistorySize = -1 }, "history"},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		if _, err := New(Job{}, c); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v", tc.want, err)
		}
	}
	if _, err := New(Job{LastCheckpointID: -1}, DefaultConfig()); err == nil {
		t.Error("negative last checkpoint ID accepted")
	}
	c := DefaultConfig()
	c.HistorySize = 0
	co, err := New(Job{}, c)
	if err != nil || co.Config().HistorySize != 10 {
		t.Errorf("history size default: %v %v", co.Config().HistorySize, err)
	}
}

func TestLastCheckpointIDSeedsTheCounterCheck(t *testing.T) {
	c, err := New(Job{LastCheckpointID: 41}, cfg(func(c *Config) { c.Interval = 0 }))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t0, threeTasks); err != nil {
		t.Fatal(err)
	}
	req, _, err := c.TriggerManual(t0, KindCheckpoint)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.IDAllocated(t0, req, 41); !errors.Is(err, ErrIDNotIncreasing) {
		t.Errorf("ID 41 after 41: %v", err)
	}
	if err := c.Start(t0, nil); err != nil {
		t.Fatal(err)
	}
	req, _, _ = c.TriggerManual(t0, KindCheckpoint)
	if acts, err := c.IDAllocated(t0, req, 42); err != nil || len(acts) != 1 || c.LastID() != 42 {
		t.Errorf("ID 42: %v %v", acts, err)
	}
}

func TestMetadataAndStats(t *testing.T) {
	cf := cfg(func(c *Config) { c.Interval = 0; c.MaxConcurrent = 2; c.HistorySize = 3; c.TolerableFailures = 100 })
	c, err := New(Job{ID: "j1", Name: "wordcount", MaxParallelism: 256}, cf)
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	if err := c.Start(now, threeTasks); err != nil {
		t.Fatal(err)
	}
	req, _, _ := c.TriggerManual(now, KindSavepoint)
	now = now.Add(sec)
	if _, err := c.IDAllocated(now, req, 10); err != nil {
		t.Fatal(err)
	}
	st := func(sub int32) *sluicev1.SubtaskState {
		return &sluicev1.SubtaskState{Subtask: sub, Timers: int64(sub) + 1}
	}
	// Vertex 0 chains "src" and "map"; vertex 1 is "sink" (acknowledging first).
	a10 := &SubtaskAck{Operators: []OperatorSubtaskState{{UID: "sink"}}, Bytes: 100, AlignmentDuration: 3 * ms, StartDelay: 9 * ms}
	a01 := &SubtaskAck{Operators: []OperatorSubtaskState{{UID: "src", State: st(77)}, {UID: "map", State: st(1)}}, Bytes: 20, AlignmentDuration: 5 * ms, StartDelay: ms}
	a00 := &SubtaskAck{Operators: []OperatorSubtaskState{{UID: "src", State: st(0)}, {UID: "map", State: st(0)}}, Bytes: 3}
	if acts := c.Ack(now.Add(100*ms), 10, TaskID{1, 0}, a10); acts != nil {
		t.Fatal(acts)
	}
	if acts := c.Ack(now.Add(200*ms), 10, TaskID{0, 1}, a01); acts != nil {
		t.Fatal(acts)
	}
	s := c.Summary()
	if s.InProgress != 1 || len(s.History) != 1 {
		t.Fatalf("summary %+v", s)
	}
	want := Stats{ID: 10, Kind: KindSavepoint, Status: StatusInProgress, TriggerTime: now, Duration: 200 * ms,
		Size: 120, AckedTasks: 2, TotalTasks: 3, Alignment: 5 * ms, StartDelay: 9 * ms}
	if s.History[0] != want {
		t.Errorf("in progress:\n got %+v\nwant %+v", s.History[0], want)
	}
	acts := c.Ack(now.Add(300*ms), 10, TaskID{0, 0}, a00)
	if len(acts) != 1 {
		t.Fatal(acts)
	}
	md := acts[0].(Finalize).Metadata
	if md.GetJobId() != "j1" || md.GetJobName() != "wordcount" || md.GetCheckpointId() != 10 ||
		md.GetKind() != sluicev1.SnapshotKind_SNAPSHOT_KIND_SAVEPOINT ||
		md.GetTriggerTimeUnixMs() != now.UnixMilli() || md.GetCompletionTimeUnixMs() != now.Add(300*ms).UnixMilli() {
		t.Errorf("metadata header %v", md)
	}
	var got []string
	for _, op := range md.GetOperators() {
		s := fmt.Sprintf("%s p=%d maxp=%d:", op.GetUid(), op.GetParallelism(), op.GetMaxParallelism())
		for _, sub := range op.GetSubtasks() {
			s += fmt.Sprintf(" %d/%d", sub.GetSubtask(), sub.GetTimers())
		}
		got = append(got, s)
	}
	if w := []string{"src p=2 maxp=256: 0/1 1/78", "map p=2 maxp=256: 0/1 1/2", "sink p=1 maxp=256: 0/0"}; fmt.Sprint(got) != fmt.Sprint(w) {
		t.Errorf("operators\n got %q\nwant %q", got, w)
	}
	// The metadata encodes and decodes.
	b, err := EncodeMetadata(md)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeMetadata(b); err != nil {
		t.Fatal(err)
	}
	end := now.Add(time.Second)
	c.Finalized(end, 10)
	s = c.Summary()
	want.Status, want.EndTime, want.Duration, want.Size, want.AckedTasks = StatusCompleted, end, end.Sub(now), 123, 3
	if s.History[0] != want || s.LatestCompleted == nil || *s.LatestCompleted != want || s.Completed != 1 || s.InProgress != 0 {
		t.Errorf("completed:\n got %+v\nwant %+v", s, want)
	}

	// A failed one, an unknown one, and the history bound.
	var ids []int64
	for id := int64(11); id <= 14; id++ {
		req, _, err := c.TriggerManual(end, KindCheckpoint)
		if err != nil {
			t.Fatal(err)
		}
		c.IDAllocated(end, req, id)
		if id == 12 {
			c.Decline(end, id, TaskID{0, 0}, "no space")
			continue
		}
		for _, tk := range threeTasks {
			c.Ack(end, id, tk, nil)
		}
		if id == 13 {
			c.FinalizeFailed(end, id, errors.New("lost leadership"), true)
		} else {
			c.Finalized(end, id)
		}
	}
	s = c.Summary()
	for _, h := range s.History {
		ids = append(ids, h.ID)
	}
	if fmt.Sprint(ids) != "[14 13 12]" || s.Completed != 3 || s.Failed != 1 || s.Unknown != 1 {
		t.Errorf("history %v, summary %+v", ids, s)
	}
	if s.History[1].Status != StatusUnknown || !strings.Contains(s.History[1].FailureReason, "lost leadership") ||
		s.History[2].Status != StatusFailed || !strings.Contains(s.History[2].FailureReason, "no space") {
		t.Errorf("history %+v", s.History)
	}
	if s.LatestCompleted.ID != 14 {
		t.Errorf("latest completed %d", s.LatestCompleted.ID)
	}
}

func TestMalformedAckFailsTheCheckpoint(t *testing.T) {
	for _, tc := range []struct {
		name string
		acks map[TaskID][]OperatorSubtaskState
		want string
	}{
		{"no UID", map[TaskID][]OperatorSubtaskState{{0, 0}: {{UID: ""}}}, "an operator state without UID"},
		{"listed twice", map[TaskID][]OperatorSubtaskState{{0, 0}: {{UID: "a"}, {UID: "a"}}}, `operator "a" listed twice`},
		{"two vertices", map[TaskID][]OperatorSubtaskState{{0, 0}: {{UID: "a"}}, {1, 0}: {{UID: "a"}}}, `operator "a" also reported by vertex 0`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := New(Job{}, cfg(func(c *Config) { c.Interval = 0; c.TolerableFailures = 1 }))
			c.Start(t0, threeTasks)
			req, _, _ := c.TriggerManual(t0, KindCheckpoint)
			c.IDAllocated(t0, req, 1)
			var acts []Action
			for _, tk := range []TaskID{{0, 0}, {1, 0}} {
				if ops, ok := tc.acks[tk]; ok {
					acts = append(acts, c.Ack(t0, 1, tk, &SubtaskAck{Operators: ops})...)
				}
			}
			if len(acts) != 1 || !strings.Contains(render(acts[0]), tc.want) {
				t.Errorf("got %v, want an abort with %q", acts, tc.want)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{KindCheckpoint.String(), "checkpoint"}, {KindSavepoint.String(), "savepoint"}, {Kind(0).String(), "Kind(0)"},
		{ExactlyOnce.String(), "exactly-once"}, {AtLeastOnce.String(), "at-least-once"}, {Mode(5).String(), "Mode(5)"},
		{StatusInProgress.String(), "in-progress"}, {StatusCompleted.String(), "completed"}, {StatusFailed.String(), "failed"},
		{StatusUnknown.String(), "unknown"}, {Status(9).String(), "Status(9)"},
		{TaskID{2, 3}.String(), "vertex 2 subtask 3"},
		{Kind(0).Proto().String(), "SNAPSHOT_KIND_UNSPECIFIED"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
