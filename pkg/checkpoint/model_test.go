package checkpoint

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The model test drives a Coordinator with random interleavings of every input a driver
// can give, playing the driver (etcd counter, blob store, tasks) itself, and checks
// after every step:
//
//   - completed IDs strictly increase, and every checkpoint in progress is newer than the
//     latest completed (or unknown) one: older ones are subsumed;
//   - at most MaxConcurrent checkpoints (and requests waiting for an ID) in progress;
//   - at most one AllocateID and one Finalize unanswered; AllocateID for the oldest
//     request; a stalled request only when its allocation failed and a Tick is due;
//   - Trigger only with the ID just allocated, IDs strictly increasing;
//   - Finalize only when every expected task acknowledged, for the oldest such checkpoint,
//     with metadata holding exactly the acknowledged states; none left waiting when no
//     Finalize is unanswered;
//   - NotifyComplete only in answer to Finalized; OutcomeUnknown only to an unknown
//     FinalizeFailed;
//   - every checkpoint and request ends exactly once, with the end the step must cause
//     (declined, expired, subsumed, stopped, finalize failed), and no action names it
//     after its end;
//   - FailJob exactly when TolerableFailures+1 consecutive counted failures were seen (or
//     the ID counter went backwards), last in its step, after aborting everything;
//   - a manual trigger fails exactly when not running or at MaxConcurrent;
//   - periodic requests exactly when Interval, MinPause and MaxConcurrent say.
//
// The model keeps its own books from the actions it observes; it does not look inside
// the Coordinator.

type mck struct {
	id         int64
	req        RequestID
	kind       Kind
	periodic   bool
	run        int
	trig       time.Time
	tasks      []TaskID // sorted
	expected   map[TaskID]bool
	acked      map[TaskID]bool
	finalizing bool
	ended      bool
}

func (k *mck) fullyAcked() bool { return len(k.acked) == len(k.tasks) }

type mreq struct {
	id       RequestID
	kind     Kind
	periodic bool
	retry    bool
	ended    bool
}

type model struct {
	t   *testing.T
	rng *rand.Rand
	cfg Config
	c   *Coordinator

	now     time.Time
	running bool
	run     int
	tasks   []TaskID

	nextDue, lastEnd time.Time

	nextReq  RequestID
	reqs     map[RequestID]*mreq
	live     []RequestID // waiting for an ID, oldest first
	allocOut RequestID
	maxGiven int64 // the highest ID handed to the coordinator for its outstanding allocation

	cks         map[int64]*mck
	open        []int64 // in progress, increasing
	finOut      int64
	lastTrigger int64
	lastDone    int64 // highest completed ID
	floor       int64 // highest completed or unknown ID

	failures int

	step int
	op   string
	// counters, to show the run exercised everything
	stats map[string]int
}

type endKind int

const (
	endCounted endKind = iota // aborted, counts as a failure
	endQuiet                  // aborted, not counted
)

// stepCtx is what the current step allows and expects.
type stepCtx struct {
	tick         bool
	stopping     bool
	allocReq     RequestID // a successful allocation answered for this request...
	allocID      int64     // ...with this ID
	finID        int64     // Finalized or unknown FinalizeFailed for this ID
	completeWant bool
	unknownWant  bool
	subsumeBelow int64
	exp          map[int64]endKind
	badID        bool
	failing      bool
	failed       bool
	periodicDone bool
}

func (m *model) fatalf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("step %d (%s) at %v: %s", m.step, m.op, m.now.Sub(t0), fmt.Sprintf(format, args...))
}

func (m *model) randomTasks() []TaskID {
	var ts []TaskID
	for v := range int32(1 + m.rng.IntN(3)) {
		for s := range int32(1 + m.rng.IntN(3)) {
			ts = append(ts, TaskID{v, s})
		}
	}
	m.rng.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
	return ts
}

func sortedTasks(ts []TaskID) []TaskID {
	out := slices.Clone(ts)
	slices.SortFunc(out, func(a, b TaskID) int {
		if a.Vertex != b.Vertex {
			return int(a.Vertex - b.Vertex)
		}
		return int(a.Subtask - b.Subtask)
	})
	return out
}

func (m *model) inProgress() int { return len(m.open) + len(m.live) }

func (m *model) openCks() []*mck {
	out := make([]*mck, 0, len(m.open))
	for _, id := range m.open {
		out = append(out, m.cks[id])
	}
	return out
}

// countFailure books a failure of k as the coordinator must.
func (m *model) countFailure(ctx *stepCtx, k *mck) {
	if !m.running || k.run != m.run || k.kind != KindCheckpoint || k.id <= m.lastDone {
		return
	}
	m.failures++
	if m.failures > m.cfg.TolerableFailures {
		ctx.failing = true
	}
}

func (m *model) endCk(k *mck) {
	k.ended = true
	m.open = slices.DeleteFunc(m.open, func(id int64) bool { return id == k.id })
	m.lastEnd = m.now
}

// periodic books the periodic request a Tick must create, after its expirations.
func (m *model) periodic(ctx *stepCtx) {
	if !ctx.tick || ctx.periodicDone || ctx.failing || !m.running {
		return
	}
	ctx.periodicDone = true
	if m.nextDue.IsZero() || m.now.Before(m.nextDue) || m.inProgress() >= m.cfg.MaxConcurrent {
		return
	}
	if m.cfg.MinPause > 0 && (m.inProgress() > 0 || (!m.lastEnd.IsZero() && m.now.Before(m.lastEnd.Add(m.cfg.MinPause)))) {
		return
	}
	m.nextReq++
	m.reqs[m.nextReq] = &mreq{id: m.nextReq, kind: KindCheckpoint, periodic: true}
	m.live = append(m.live, m.nextReq)
	m.nextDue = m.now.Add(m.cfg.Interval)
	m.stats["periodic"]++
}

func (m *model) apply(ctx *stepCtx, acts []Action) {
	m.t.Helper()
	for i, a := range acts {
		if ctx.failed {
			m.fatalf("action %d after FailJob: %s", i, render(a))
		}
		if _, ok := a.(AllocateID); ok {
			m.periodic(ctx)
		}
		switch a := a.(type) {
		case AllocateID:
			if ctx.failing || !m.running {
				m.fatalf("AllocateID while failing or stopped")
			}
			if m.allocOut != 0 {
				m.fatalf("AllocateID r%d while r%d is unanswered", a.Request, m.allocOut)
			}
			if len(m.live) == 0 || m.live[0] != a.Request {
				m.fatalf("AllocateID r%d, the oldest waiting request is %v", a.Request, m.live)
			}
			r := m.reqs[a.Request]
			if r.retry && !ctx.tick {
				m.fatalf("failed allocation of r%d retried outside a Tick", r.id)
			}
			r.retry = false
			m.allocOut = a.Request
		case Trigger:
			if ctx.allocReq != a.Request || ctx.allocID != a.ID || len(m.live) == 0 || m.live[0] != a.Request {
				m.fatalf("Trigger %d for r%d, not the answered allocation (r%d, %d)", a.ID, a.Request, ctx.allocReq, ctx.allocID)
			}
			if a.ID <= m.lastTrigger {
				m.fatalf("Trigger %d after %d", a.ID, m.lastTrigger)
			}
			r := m.reqs[a.Request]
			if a.Kind != r.kind || a.Periodic != r.periodic || !a.Timestamp.Equal(m.now) || a.Mode != m.cfg.Mode ||
				a.Unaligned != (m.cfg.Unaligned && r.kind == KindCheckpoint) {
				m.fatalf("Trigger %+v for %+v", a, r)
			}
			ctx.allocReq = 0
			m.lastTrigger = a.ID
			r.ended = true
			m.live = m.live[1:]
			k := &mck{id: a.ID, req: a.Request, kind: a.Kind, periodic: a.Periodic, run: m.run, trig: m.now,
				tasks: sortedTasks(m.tasks), expected: map[TaskID]bool{}, acked: map[TaskID]bool{}}
			for _, t := range k.tasks {
				k.expected[t] = true
			}
			m.cks[a.ID] = k
			m.open = append(m.open, a.ID)
			m.stats["trigger"]++
		case Finalize:
			k := m.cks[a.ID]
			if k == nil || k.ended || k.finalizing || m.finOut != 0 {
				m.fatalf("Finalize %d (unanswered: %d)", a.ID, m.finOut)
			}
			if !k.fullyAcked() {
				m.fatalf("Finalize %d with %d of %d tasks acknowledged", a.ID, len(k.acked), len(k.tasks))
			}
			for _, o := range m.openCks() {
				if o.id < k.id && o.fullyAcked() {
					m.fatalf("Finalize %d before the older, fully acknowledged %d", k.id, o.id)
				}
			}
			m.checkMetadata(k, a.Metadata)
			k.finalizing = true
			m.finOut = a.ID
		case NotifyComplete:
			k := m.cks[a.ID]
			if !ctx.completeWant || ctx.finID != a.ID || k == nil || k.ended || !k.finalizing {
				m.fatalf("NotifyComplete %d not in answer to its Finalized", a.ID)
			}
			if a.ID <= m.lastDone {
				m.fatalf("completed %d after %d", a.ID, m.lastDone)
			}
			if a.Kind != k.kind || a.Request != k.req {
				m.fatalf("NotifyComplete %+v for %+v", a, k)
			}
			ctx.completeWant = false
			m.endCk(k)
			m.lastDone, m.floor = a.ID, a.ID
			m.failures = 0
			ctx.subsumeBelow = a.ID
			m.stats["complete"]++
		case OutcomeUnknown:
			k := m.cks[a.ID]
			if !ctx.unknownWant || ctx.finID != a.ID || k == nil || k.ended || !k.finalizing {
				m.fatalf("OutcomeUnknown %d not in answer to its FinalizeFailed", a.ID)
			}
			ctx.unknownWant = false
			m.endCk(k)
			m.floor = a.ID
			ctx.subsumeBelow = a.ID
			m.countFailure(ctx, k)
			m.stats["unknown"]++
		case NotifyAborted:
			k := m.cks[a.ID]
			if k == nil || k.ended {
				m.fatalf("NotifyAborted %d: unknown or ended", a.ID)
			}
			if a.Kind != k.kind || a.Request != k.req || a.Reason == "" {
				m.fatalf("NotifyAborted %+v for %+v", a, k)
			}
			want, expected := ctx.exp[a.ID]
			delete(ctx.exp, a.ID)
			switch {
			case ctx.failing || ctx.stopping:
				if k.finalizing {
					m.fatalf("NotifyAborted %d while its Finalize is unanswered", a.ID)
				}
				m.endCk(k)
				m.stats["abort stopped"]++
			case expected:
				m.endCk(k)
				if want == endCounted {
					m.countFailure(ctx, k)
					m.stats["abort counted"]++
				} else {
					m.stats["abort quiet"]++
				}
			case a.ID < ctx.subsumeBelow:
				m.endCk(k)
				m.stats["abort subsumed"]++
			default:
				m.fatalf("unexpected NotifyAborted %d: %s", a.ID, a.Reason)
			}
		case RequestAborted:
			r := m.reqs[a.Request]
			if r == nil || r.ended || !(ctx.failing || ctx.stopping) {
				m.fatalf("unexpected RequestAborted r%d: %s", a.Request, a.Reason)
			}
			if len(m.live) == 0 || m.live[0] != a.Request {
				m.fatalf("RequestAborted r%d out of order (%v)", a.Request, m.live)
			}
			r.ended = true
			m.live = m.live[1:]
			m.stats["request aborted"]++
		case FailJob:
			if !ctx.failing || !m.running || i != len(acts)-1 {
				m.fatalf("FailJob (failing %v, running %v, last %v, failures %d): %s", ctx.failing, m.running, i == len(acts)-1, m.failures, a.Reason)
			}
			ctx.failed = true
			m.running = false
			m.nextDue = time.Time{}
			m.failures = 0
			m.stats["fail job"]++
		default:
			m.fatalf("unknown action %#v", a)
		}
	}
	m.periodic(ctx)
	m.checkAfter(ctx)
}

func (m *model) checkMetadata(k *mck, md *sluicev1.CheckpointMetadata) {
	if md.GetCheckpointId() != k.id || md.GetKind() != k.kind.Proto() || md.GetTriggerTimeUnixMs() != k.trig.UnixMilli() {
		m.fatalf("metadata header %v for %d", md, k.id)
	}
	par := map[int32]int32{}
	for _, t := range k.tasks {
		par[t.Vertex]++
	}
	if len(md.GetOperators()) != len(par) {
		m.fatalf("metadata of %d has %d operators, want %d", k.id, len(md.GetOperators()), len(par))
	}
	for i, op := range md.GetOperators() {
		v := int32(i)
		if op.GetUid() != fmt.Sprintf("op-%d", v) || op.GetParallelism() != par[v] || len(op.GetSubtasks()) != int(par[v]) {
			m.fatalf("metadata of %d: operator %v", k.id, op)
		}
		for s, st := range op.GetSubtasks() {
			if st.GetSubtask() != int32(s) || st.GetTimers() != k.id {
				m.fatalf("metadata of %d: operator %s subtask %d is %v", k.id, op.GetUid(), s, st)
			}
		}
	}
}

func (m *model) checkAfter(ctx *stepCtx) {
	if ctx.failing != ctx.failed {
		m.fatalf("failing %v but FailJob %v (failures %d)", ctx.failing, ctx.failed, m.failures)
	}
	if ctx.allocReq != 0 || ctx.completeWant || ctx.unknownWant {
		m.fatalf("expected Trigger/NotifyComplete/OutcomeUnknown missing (%+v)", ctx)
	}
	for id := range ctx.exp {
		m.fatalf("checkpoint %d should have been aborted", id)
	}
	if n := m.inProgress(); n > m.cfg.MaxConcurrent {
		m.fatalf("%d in progress (%d checkpoints, %d requests), max %d", n, len(m.open), len(m.live), m.cfg.MaxConcurrent)
	}
	for _, k := range m.openCks() {
		if k.id <= m.floor {
			m.fatalf("checkpoint %d in progress after %d completed or ended unknown", k.id, m.floor)
		}
		if !m.running && !k.finalizing {
			m.fatalf("checkpoint %d in progress while stopped", k.id)
		}
		if m.finOut == 0 && k.fullyAcked() {
			m.fatalf("checkpoint %d fully acknowledged but not finalized", k.id)
		}
		if ctx.tick && m.running && !k.fullyAcked() && !m.now.Before(k.trig.Add(m.cfg.Timeout)) {
			m.fatalf("checkpoint %d expired at %v but is in progress", k.id, k.trig.Add(m.cfg.Timeout).Sub(t0))
		}
	}
	if !m.running && len(m.live) > 0 {
		m.fatalf("requests %v waiting while stopped", m.live)
	}
	if m.allocOut == 0 && len(m.live) > 0 && (ctx.tick || !m.reqs[m.live[0]].retry) {
		m.fatalf("request r%d waits but no allocation is under way", m.live[0])
	}
}

func (m *model) pickTask(k *mck) TaskID {
	if k != nil && m.rng.IntN(10) != 0 {
		return k.tasks[m.rng.IntN(len(k.tasks))]
	}
	return TaskID{int32(m.rng.IntN(4)), int32(m.rng.IntN(4))}
}

// pickCk returns an open checkpoint mostly, else any ID (ended, unknown, never used).
func (m *model) pickCk() (int64, *mck) {
	if len(m.open) > 0 && m.rng.IntN(8) != 0 {
		id := m.open[m.rng.IntN(len(m.open))]
		return id, m.cks[id]
	}
	id := int64(m.rng.IntN(int(m.lastTrigger) + 3))
	return id, m.cks[id]
}

func (m *model) stepOnce() {
	m.step++
	ctx := &stepCtx{exp: map[int64]endKind{}}
	var acts []Action
	var err error
	wantErr := false
	r := m.rng.IntN(1000)
	switch {
	case r < 250: // tick
		m.op = "tick"
		var d time.Duration
		switch x := m.rng.IntN(20); {
		case x < 8:
			d = time.Duration(m.rng.IntN(300)) * ms
		case x < 16:
			d = time.Duration(m.rng.IntN(2000)) * ms
		case x < 19:
			d = m.cfg.Interval + time.Duration(m.rng.IntN(1000))*ms
		default:
			d = m.cfg.Timeout + time.Duration(m.rng.IntN(1000))*ms
		}
		m.now = m.now.Add(d)
		ctx.tick = true
		if m.running {
			for _, k := range m.openCks() {
				if !k.fullyAcked() && !m.now.Before(k.trig.Add(m.cfg.Timeout)) {
					ctx.exp[k.id] = endCounted
				}
			}
		}
		acts = m.c.Tick(m.now)
	case r < 300: // manual trigger
		kind := KindCheckpoint
		if m.rng.IntN(4) == 0 {
			kind = KindSavepoint
		}
		m.op = "manual " + kind.String()
		ok := m.running && m.inProgress() < m.cfg.MaxConcurrent
		var req RequestID
		req, acts, err = m.c.TriggerManual(m.now, kind)
		if (err == nil) != ok {
			m.fatalf("TriggerManual: %v, expected success %v (running %v, %d in progress)", err, ok, m.running, m.inProgress())
		}
		if err != nil {
			if !errors.Is(err, ErrNotRunning) && !errors.Is(err, ErrTooManyCheckpoints) {
				m.fatalf("TriggerManual: %v", err)
			}
			m.stats["manual refused"]++
			err = nil
			break
		}
		m.nextReq++
		if req != m.nextReq {
			m.fatalf("request ID %d, want %d", req, m.nextReq)
		}
		m.reqs[req] = &mreq{id: req, kind: kind}
		m.live = append(m.live, req)
	case r < 400: // answer the ID allocation
		if m.allocOut == 0 {
			m.op = "stray allocation answer"
			acts, err = m.c.IDAllocated(m.now, m.nextReq+1+RequestID(m.rng.IntN(3)), m.maxGiven+1)
			if m.rng.IntN(2) == 0 {
				acts = m.c.IDFailed(m.now, m.nextReq+1, errors.New("x"))
			}
			break
		}
		req := m.allocOut
		m.allocOut = 0
		live := len(m.live) > 0 && m.live[0] == req
		switch x := m.rng.IntN(100); {
		case x < 70:
			m.op = "ID allocated"
			m.maxGiven += 1 + int64(m.rng.IntN(3))
			if live {
				ctx.allocReq, ctx.allocID = req, m.maxGiven
			}
			acts, err = m.c.IDAllocated(m.now, req, m.maxGiven)
		case x < 98:
			m.op = "ID failed"
			if live {
				m.reqs[req].retry = true
			}
			acts = m.c.IDFailed(m.now, req, errors.New("etcd unavailable"))
			m.stats["ID failed"]++
		default:
			m.op = "ID not increasing"
			wantErr = true
			ctx.badID = true
			ctx.failing = live
			bad := m.maxGiven // the same ID again, or an older one
			if m.rng.IntN(2) == 0 {
				bad = int64(m.rng.IntN(int(m.maxGiven) + 1))
			}
			acts, err = m.c.IDAllocated(m.now, req, bad)
			if !errors.Is(err, ErrIDNotIncreasing) {
				m.fatalf("non-increasing ID: %v", err)
			}
			m.stats["bad ID"]++
		}
	case r < 790: // ack
		id, k := m.pickCk()
		task := m.pickTask(k)
		valid := k != nil && !k.ended && !k.fullyAcked() && k.expected[task] && !k.acked[task]
		uid := fmt.Sprintf("op-%d", task.Vertex)
		m.op = fmt.Sprintf("ack %d %v", id, task)
		if m.rng.IntN(200) == 0 {
			m.op = "malformed " + m.op
			uid = ""
			if valid {
				ctx.exp[id] = endCounted
			}
		} else if valid {
			k.acked[task] = true
		}
		acts = m.c.Ack(m.now, id, task, &SubtaskAck{
			Operators: []OperatorSubtaskState{{UID: uid, State: &sluicev1.SubtaskState{Subtask: 99, Timers: id}}},
			Bytes:     int64(m.rng.IntN(100)),
		})
	case r < 805: // decline
		id, k := m.pickCk()
		task := m.pickTask(k)
		m.op = fmt.Sprintf("decline %d %v", id, task)
		if k != nil && !k.ended && !k.fullyAcked() && k.expected[task] && !k.acked[task] {
			ctx.exp[id] = endCounted
		}
		acts = m.c.Decline(m.now, id, task, "no")
	case r < 930: // answer the Finalize
		if m.finOut == 0 {
			m.op = "stray finalize answer"
			id, _ := m.pickCk()
			if m.rng.IntN(2) == 0 {
				acts = m.c.Finalized(m.now, id)
			} else {
				acts = m.c.FinalizeFailed(m.now, id, errors.New("x"), m.rng.IntN(2) == 0)
			}
			break
		}
		id := m.finOut
		m.finOut = 0
		switch x := m.rng.IntN(100); {
		case x < 80:
			m.op = fmt.Sprintf("finalized %d", id)
			ctx.finID, ctx.completeWant = id, true
			acts = m.c.Finalized(m.now, id)
		case x < 92:
			m.op = fmt.Sprintf("finalize %d failed", id)
			ctx.exp[id] = endCounted
			acts = m.c.FinalizeFailed(m.now, id, errors.New("blob store down"), false)
		default:
			m.op = fmt.Sprintf("finalize %d unknown", id)
			ctx.finID, ctx.unknownWant = id, true
			acts = m.c.FinalizeFailed(m.now, id, errors.New("etcd timeout"), true)
		}
	case r < 940: // stop
		m.op = "stop"
		ctx.stopping = m.running
		acts = m.c.Stop(m.now, "failover")
		m.running = false
		m.nextDue = time.Time{}
	case r < 985: // start
		m.op = "start"
		var ts []TaskID
		if m.rng.IntN(2) == 0 {
			ts = m.randomTasks()
		}
		err = m.c.Start(m.now, ts)
		if m.running {
			if err == nil {
				m.fatalf("Start while running succeeded")
			}
			err = nil
			break
		}
		if ts != nil {
			m.tasks = ts
		}
		m.running = true
		m.run++
		if m.cfg.Interval > 0 {
			m.nextDue = m.now.Add(m.cfg.Interval)
		}
		m.stats["start"]++
	default: // set tasks
		m.op = "set tasks"
		ts := m.tasks
		if m.rng.IntN(2) == 0 {
			ts = m.randomTasks()
		}
		if m.running && !slices.Equal(sortedTasks(ts), sortedTasks(m.tasks)) {
			for _, k := range m.openCks() {
				if !k.fullyAcked() {
					ctx.exp[k.id] = endQuiet
				}
			}
		}
		m.tasks = ts
		acts, err = m.c.SetTasks(m.now, ts)
	}
	if err != nil && !wantErr {
		m.fatalf("error: %v", err)
	}
	m.apply(ctx, acts)
	m.stats["steps"]++
}

// drain stops the coordinator and answers what is outstanding until everything ended.
func (m *model) drain() {
	m.step++
	m.op = "final stop"
	ctx := &stepCtx{stopping: m.running}
	m.apply(ctx, m.c.Stop(m.now, "end of test"))
	m.running = false
	if m.allocOut != 0 {
		req := m.allocOut
		m.allocOut = 0
		acts, err := m.c.IDAllocated(m.now, req, m.maxGiven+1)
		if err != nil || len(acts) != 0 {
			m.fatalf("late allocation after stop: %v %v", acts, err)
		}
	}
	if m.finOut != 0 {
		id := m.finOut
		m.finOut = 0
		m.op = "final finalized"
		ctx := &stepCtx{finID: id, completeWant: true}
		m.apply(ctx, m.c.Finalized(m.now, id))
	}
	for id, k := range m.cks {
		if !k.ended {
			m.fatalf("checkpoint %d never ended", id)
		}
	}
	for id, r := range m.reqs {
		if !r.ended {
			m.fatalf("request %d never ended", id)
		}
	}
	s := m.c.Summary()
	if s.InProgress != 0 || s.Queued != 0 || s.Completed != m.stats["complete"] || s.Unknown != m.stats["unknown"] ||
		s.Completed+s.Failed+s.Unknown != len(m.cks) {
		m.fatalf("summary %+v, model %v with %d checkpoints", s, m.stats, len(m.cks))
	}
}

func TestModel(t *testing.T) {
	steps := 100_000
	for seed := uint64(1); seed <= 8; seed++ {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			cfg := Config{
				Interval:          []time.Duration{0, sec, 3 * sec}[rng.IntN(3)],
				Timeout:           []time.Duration{2 * sec, 5 * sec, 20 * sec}[rng.IntN(3)],
				MinPause:          []time.Duration{0, 0, 500 * ms, 2 * sec}[rng.IntN(4)],
				MaxConcurrent:     1 + rng.IntN(4),
				TolerableFailures: rng.IntN(4),
				Mode:              Mode(rng.IntN(2)),
				Unaligned:         rng.IntN(2) == 0,
				AlignedTimeout:    time.Duration(rng.IntN(2)) * sec,
			}
			if seed == 1 { // one configuration with everything on
				cfg.Interval, cfg.MinPause, cfg.MaxConcurrent = sec, 0, 3
			}
			c, err := New(Job{ID: "job", Name: "model", MaxParallelism: 128}, cfg)
			if err != nil {
				t.Fatal(err)
			}
			m := &model{t: t, rng: rng, cfg: c.Config(), c: c, now: t0, reqs: map[RequestID]*mreq{}, cks: map[int64]*mck{}, stats: map[string]int{}}
			m.tasks = m.randomTasks()
			if err := c.Start(m.now, m.tasks); err != nil {
				t.Fatal(err)
			}
			m.running, m.run = true, 1
			if cfg.Interval > 0 {
				m.nextDue = m.now.Add(cfg.Interval)
			}
			for range steps {
				m.stepOnce()
			}
			m.drain()
			for _, k := range []string{"trigger", "complete", "abort counted", "abort subsumed", "abort stopped", "fail job", "request aborted", "unknown", "ID failed"} {
				if m.stats[k] == 0 && (k != "abort subsumed" || cfg.MaxConcurrent > 1) {
					t.Errorf("never exercised: %s (%v)", k, m.stats)
				}
			}
			t.Logf("config %+v: %v", cfg, m.stats)
		})
	}
}
