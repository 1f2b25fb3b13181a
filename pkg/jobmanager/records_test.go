package jobmanager

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/meta"
	"github.com/sluice-stream/sluice/pkg/meta/embedded"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestAttemptWaitsForItsRecord: with a metadata store, an attempt starts only once it
// is recorded (attemptLimit), and the record the job wants names the next attempt while
// the job waits for it, and its end once it ended.
func TestAttemptWaitsForItsRecord(t *testing.T) {
	h := newHarness(t, 3, "a", "b")
	h.job.attemptLimit = 1 // recorded at submit
	if w := h.job.wantRecord(); w.GetAttempt() != 1 || w.GetState() != sluicev1.JobState_JOB_STATE_CREATED {
		t.Fatalf("record wanted at submit: %v", w)
	}
	acts := h.job.trySchedule(h.pool, h.now)
	if count(acts, actDeploy) != 5 || h.job.attempt != 1 {
		t.Fatalf("first attempt: %d deploys, attempt %d", count(acts, actDeploy), h.job.attempt)
	}
	h.job.rec.written = h.job.wantRecord()
	cancels := h.update(acts[0], sluicev1.TaskState_TASK_STATE_FAILED)
	h.wantState(sluicev1.JobState_JOB_STATE_RESTARTING)
	// Restarting: the next attempt must be recorded, even before the old tasks stopped.
	if w := h.job.wantRecord(); w.GetAttempt() != 2 || !recordStale(h.job.rec.written, w) {
		t.Fatalf("record wanted while restarting: %v (stale %v)", w, recordStale(h.job.rec.written, w))
	}
	for _, a := range cancels {
		h.update(a, sluicev1.TaskState_TASK_STATE_CANCELED)
	}
	h.now = h.now.Add(2 * time.Second)
	if got := h.job.tick(h.pool, h.now); len(got) != 0 || h.job.attempt != 1 {
		t.Fatalf("attempt %d started before it was recorded (%d actions)", h.job.attempt, len(got))
	}
	h.job.attemptLimit = 2
	h.job.rec.written = h.job.wantRecord()
	if re := h.job.tick(h.pool, h.now); count(re, actDeploy) != 5 || h.job.attempt != 2 {
		t.Fatalf("after the record: %d deploys, attempt %d", count(re, actDeploy), h.job.attempt)
	}
	if recordStale(h.job.rec.written, h.job.wantRecord()) {
		t.Fatal("running attempt 2 wants another record")
	}
	h.job.cancel(h.pool, h.now)
	if w := h.job.wantRecord(); !recordStale(h.job.rec.written, w) || w.GetState() != sluicev1.JobState_JOB_STATE_CANCELLING {
		t.Fatalf("record wanted while canceling: %v", w)
	}
	for _, task := range h.job.tasks {
		h.job.taskUpdate(h.pool, task.id, sluicev1.TaskState_TASK_STATE_CANCELED, "", nil, h.now)
	}
	h.wantState(sluicev1.JobState_JOB_STATE_CANCELED)
	w := h.job.wantRecord()
	if !recordStale(h.job.rec.written, w) || w.GetState() != sluicev1.JobState_JOB_STATE_CANCELED || w.GetAttempt() != 2 || w.GetEndTimeUnixMs() == 0 {
		t.Fatalf("record wanted at the end: %v", w)
	}
}

// proxy forwards TCP connections to target; hold pauses one direction (the bytes wait,
// in order) until release, like a paused (SIGSTOP) or unreachable etcd.
type proxy struct {
	lis    net.Listener
	target string
	wg     sync.WaitGroup

	mu       sync.Mutex
	cond     *sync.Cond
	holdReq  bool // client -> etcd
	holdResp bool // etcd -> client
	conns    []net.Conn
	closed   bool
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{lis: lis, target: target}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) addr() string { return "http://" + p.lis.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.Close()
			s.Close()
			return
		}
		p.conns = append(p.conns, c, s)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(s, c, func() bool { return p.holdReq })
		go p.pipe(c, s, func() bool { return p.holdResp })
	}
}

func (p *proxy) pipe(dst, src net.Conn, held func() bool) {
	defer p.wg.Done()
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			for held() && !p.closed {
				p.cond.Wait()
			}
			p.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				src.Close()
			}
			return
		}
	}
}

func (p *proxy) set(req, resp bool) {
	p.mu.Lock()
	p.holdReq, p.holdResp = req, resp
	p.cond.Broadcast()
	p.mu.Unlock()
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.lis.Close()
	p.wg.Wait()
}

// TestCheckpointRecordSurvivesEtcdOutage: a checkpoint's etcd record that fails because
// etcd does not answer is retried while the jobmanager leads, so a short outage delays
// the checkpoint instead of failing it: (1) etcd unreachable (a proxy holds the bytes),
// nothing written until it is back; (2) etcd applies the write but its answer is lost
// (an unknown outcome): the retry finds the record and learns which records it
// subsumed.
func TestCheckpointRecordSurvivesEtcdOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := embedded.Start(ctx, embedded.Options{UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	p := newProxy(t, srv.Endpoints()[0][len("http://"):])
	log := slog.New(slog.DiscardHandler)
	store, err := meta.Connect(ctx, []string{p.addr()}, "/sluice/outage/", log,
		meta.WithRequestTimeout(300*time.Millisecond), meta.WithLeaseTTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	jm := New(Config{Meta: store}, log)
	defer jm.stopLife()
	if jm.lead, err = store.Campaign(ctx, "jm-test"); err != nil {
		t.Fatal(err)
	}
	blobs, err := blobstore.Open(ctx, "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer blobs.Close()
	const job = "0123456789abcdef0123456789abcdef"
	jobDir, err := blobs.Sub(blobstore.JobDir(job))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PutJob(ctx, jm.lead, job, []byte("rec")); err != nil {
		t.Fatal(err)
	}
	md := func(id int64) *sluicev1.CheckpointMetadata {
		return &sluicev1.CheckpointMetadata{JobId: job, CheckpointId: id, TriggerTimeUnixMs: 1, CompletionTimeUnixMs: 2}
	}
	if _, err := jm.commitCheckpoint(jobDir, job, md(1), 1, nil, time.Minute, commitFiles{}); err != nil {
		t.Fatal(err)
	}

	type result struct {
		removed []meta.CompletedCheckpoint
		err     error
	}
	// commit records checkpoint id while etcd is unreachable for 1.5 s.
	commit := func(id int64, prev []int64) result {
		t.Helper()
		p.set(true, true)
		done := make(chan result, 1)
		go func() {
			res, err := jm.commitCheckpoint(jobDir, job, md(id), 1, prev, time.Minute, commitFiles{})
			done <- result{res.sub.Removed, err}
		}()
		// Several request timeouts pass while etcd is away.
		select {
		case r := <-done:
			p.set(false, false)
			t.Fatalf("checkpoint %d: commit returned during the outage: %v, %v", id, r.removed, r.err)
		case <-time.After(1500 * time.Millisecond):
		}
		p.set(false, false)
		select {
		case r := <-done:
			return r
		case <-ctx.Done():
			t.Fatalf("checkpoint %d: commit did not return after the outage", id)
		}
		return result{}
	}
	ids := func(cps []meta.CompletedCheckpoint) (out []int64) {
		for _, c := range cps {
			out = append(out, c.ID)
		}
		return out
	}

	// (1) Unreachable: nothing is written during the outage; the record comes after.
	r := commit(2, []int64{1})
	if r.err != nil || len(r.removed) != 1 || r.removed[0].ID != 1 {
		t.Fatalf("checkpoint 2 after an outage: removed %v, %v; want checkpoint 1 subsumed", ids(r.removed), r.err)
	}
	// (2) Applied, answer lost (a timeout after etcd committed): the retry finds the
	// record and which records it subsumed.
	lost := 0
	addCheckpoint = func(s *meta.Store, ctx context.Context, l *meta.Leadership, job string, cp meta.CompletedCheckpoint, retain int) (meta.Subsumed, error) {
		sub, err := s.AddCheckpoint(ctx, l, job, cp, retain)
		if err == nil && lost == 0 {
			lost++
			return meta.Subsumed{}, fmt.Errorf("%w: injected: the answer was lost", meta.ErrOutcomeUnknown)
		}
		return sub, err
	}
	defer func() { addCheckpoint = (*meta.Store).AddCheckpoint }()
	res, err := jm.commitCheckpoint(jobDir, job, md(3), 1, []int64{2}, time.Minute, commitFiles{})
	removed := res.sub.Removed
	if err != nil || lost != 1 || len(removed) != 1 || removed[0].ID != 2 || res.exact {
		t.Fatalf("checkpoint 3 whose answer was lost: removed %v, %v (answers lost: %d); want checkpoint 2 subsumed", ids(removed), err, lost)
	}
	cps, err := store.Checkpoints(ctx, job)
	if err != nil || len(cps) != 1 || cps[0].ID != 3 {
		t.Fatalf("records after the outages: %v, %v; want checkpoint 3", ids(cps), err)
	}
	select {
	case <-jm.lead.Done():
		t.Fatal("leadership lost in an outage shorter than the lease")
	default:
	}

	// A write etcd refuses for good is not retried, and a checkpoint given up on after
	// a possibly committed try reports an unknown outcome.
	if _, err := jm.commitCheckpoint(jobDir, job, md(3), 1, []int64{3}, time.Minute, commitFiles{}); !errors.Is(err, meta.ErrCheckpointExists) || errors.Is(err, meta.ErrOutcomeUnknown) {
		t.Fatalf("recording checkpoint 3 again: %v, want ErrCheckpointExists", err)
	}
	addCheckpoint = func(*meta.Store, context.Context, *meta.Leadership, string, meta.CompletedCheckpoint, int) (meta.Subsumed, error) {
		return meta.Subsumed{}, fmt.Errorf("%w: injected", meta.ErrOutcomeUnknown)
	}
	if _, err = jm.commitCheckpoint(jobDir, job, md(4), 1, []int64{3}, 500*time.Millisecond, commitFiles{}); !errors.Is(err, meta.ErrOutcomeUnknown) {
		t.Fatalf("checkpoint 4 given up on: %v, want ErrOutcomeUnknown", err)
	}
	addCheckpoint = func(*meta.Store, context.Context, *meta.Leadership, string, meta.CompletedCheckpoint, int) (meta.Subsumed, error) {
		return meta.Subsumed{}, fmt.Errorf("%w: injected", meta.ErrUnavailable)
	}
	if _, err = jm.commitCheckpoint(jobDir, job, md(4), 1, []int64{3}, 500*time.Millisecond, commitFiles{}); err == nil || errors.Is(err, meta.ErrOutcomeUnknown) {
		t.Fatalf("checkpoint 4 given up on while nothing was sent: %v, want a known failure", err)
	}
	if err := jm.lead.Resign(ctx); err != nil {
		t.Fatal(err)
	}
}
