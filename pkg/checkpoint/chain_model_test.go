package checkpoint

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/meta"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// The chain model test drives a Chain, as the jobmanager does, through random
// interleavings of everything that happens to a job's checkpoint files: triggers (up to
// max-concurrent-checkpoints at once), acknowledgements that reuse the files of the
// checkpoint the task was last notified of (notifications get lost, so some reuse files
// of checkpoints subsumed meanwhile) and upload new ones, tasks that break rule 3 and
// reuse files of unconfirmed checkpoints, uploads after a checkpoint was given up,
// declines and expiries, finalization (Prepare, the existence check of new shared files,
// the etcd transaction) with every outcome (committed, committed with the answer lost,
// unknown and applied, unknown and not applied, refused), subsumption, restarts that
// restore the newest record, leader failovers (a new Chain loaded from etcd while the
// old leader's deletions still run, and its in-flight commit may still be answered),
// re-reads of etcd (Resync), sweeps over listings taken earlier, and deletions run
// asynchronously, in any order, long after they were decided.
//
// etcd is meta.Registry, which plans every change with the same code as
// meta.Store.AddCheckpoint's transaction; the blob store is a set of files.
//
// Checked after every step: every file referenced by a checkpoint recorded in etcd
// exists. Checked at every deletion, when decided and when run: the file (or checkpoint
// directory) is referenced by no recorded checkpoint. Checked at every restore: the
// restored checkpoint's files exist. At the end of each run, after the job quiesced:
// the blob store holds exactly the files of the recorded checkpoints (every orphan was
// collected). Also: a checkpoint triggered after one was refused for reusing a deleted
// file is full, and full-every bounds the chain.

const chainModelSteps = 150_000

func TestChainModel(t *testing.T) {
	var mu sync.Mutex
	total := map[string]int{}
	t.Cleanup(func() {
		// Every kind of event happened in some run (each run draws its own settings,
		// so not every run sees every kind).
		for _, k := range []string{"commit", "commit-answer-lost", "unknown-applied", "unknown-not-applied", "refused",
			"refused-deleted-file", "missing-new-file", "meta-missing", "subsumed", "restart", "failover", "resync",
			"delete-shared", "delete-dir", "delete-failed", "sweep-shared", "sweep-dir", "buggy-reuse", "stale-reuse", "full", "straggler"} {
			if total[k] == 0 {
				t.Errorf("no run exercised %q", k)
			}
		}
	})
	for _, seed := range []uint64{1, 2, 3, 4, 5, 6, 7, 8} {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			t.Parallel()
			m := newChainModel(t, seed)
			for m.step = 1; m.step <= chainModelSteps; m.step++ {
				m.randomStep()
				m.checkRecordsIntact()
			}
			m.quiesce()
			t.Logf("retain %d, max concurrent %d, tasks %d, full-every %d, grace %s: %v", m.retain, m.maxConc, m.tasks, m.fullEvery, m.grace, m.stats)
			mu.Lock()
			defer mu.Unlock()
			for k, n := range m.stats {
				total[k] += n
			}
		})
	}
}

type cmCk struct {
	id       int64
	attempt  int
	full     bool
	uploaded []bool // the task wrote its files (shared[task]), not yet acknowledged
	acked    []bool
	lost     []bool     // this task's ack never arrives (its files are orphans)
	shared   [][]string // per task
	private  []string
	prepared bool
	rec      Record
	outcome  *cmOutcome // the recording's outcome, once etcd decided it
}

func (k *cmCk) fullyAcked() bool {
	for i, a := range k.acked {
		if !a || k.lost[i] {
			return false
		}
	}
	return true
}

type cmDeletion struct {
	shared string
	dir    int64 // when shared == ""
	by     string
	chain  *Chain // that decided it
}

// cmLeader is one jobmanager's leadership: its Chain and what it has in flight.
type cmLeader struct {
	chain *Chain
	pend  []*cmCk // triggered, not ended, by ID
	fin   *cmCk   // prepared, being recorded
	// resync is a read of etcd taken at resyncEpoch, not yet applied.
	resync      []RetainedCheckpoint
	resyncEpoch uint64
	resyncing   bool
	listing     *Listing // a listing of the blob store taken earlier, not yet swept
}

type chainModel struct {
	t    *testing.T
	rng  *rand.Rand
	now  time.Time
	step int
	op   string

	retain, maxConc, tasks, fullEvery int
	grace                             time.Duration

	etcd    *meta.Registry
	counter int64
	ckFiles map[int64]*cmCk // every checkpoint that wrote files
	shared  map[string]bool // the blob store: shared files...
	// uploader: the checkpoint whose task uploaded each shared file.
	uploader map[string]int64
	private  map[int64]map[string]bool
	queue    []cmDeletion // decided, not run yet

	lead     *cmLeader
	old      *cmLeader // the previous leader, whose in-flight commit may still be answered
	attempt  int
	known    [][]string // per task: the shared files it may reuse
	uploads  []string   // shared files uploaded in the current attempt
	aborted  []int64    // checkpoints of the current attempt given up (stragglers may still write)
	seq      int
	mustFull bool // a checkpoint was refused for a deleted file: the next trigger must be full
	// sinceFull counts incremental checkpoints completed since the last full one.
	sinceFull int

	// deciding is the chain whose decisions queueDeletions is given.
	deciding *Chain

	stats map[string]int
}

func newChainModel(t *testing.T, seed uint64) *chainModel {
	rng := rand.New(rand.NewPCG(seed, 0xc4a1))
	m := &chainModel{
		t: t, rng: rng, now: time.Unix(1_700_000_000, 0),
		retain: 1 + rng.IntN(3), maxConc: 2 + rng.IntN(2), tasks: 1 + rng.IntN(3), fullEvery: []int{0, 0, 2, 3, 5}[rng.IntN(5)],
		grace: []time.Duration{0, 2 * time.Second, 10 * time.Second}[rng.IntN(3)], etcd: meta.NewRegistry(), ckFiles: map[int64]*cmCk{},
		shared: map[string]bool{}, uploader: map[string]int64{}, private: map[int64]map[string]bool{}, stats: map[string]int{},
	}
	m.lead = &cmLeader{chain: NewChain(m.cfg())}
	m.known = make([][]string, m.tasks)
	return m
}

func (m *chainModel) cfg() ChainConfig {
	return ChainConfig{FullEvery: m.fullEvery, OrphanGrace: m.grace}
}

func (m *chainModel) fatalf(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("step %d (%s): %s", m.step, m.op, fmt.Sprintf(format, args...))
}

func (m *chainModel) randomStep() {
	m.now = m.now.Add(time.Duration(m.rng.IntN(500)) * time.Millisecond)
	l := m.lead
	m.deciding = l.chain
	switch r := m.rng.IntN(1000); {
	case r < 100:
		m.trigger()
	case r < 350:
		m.ack()
	case r < 370:
		m.straggle()
	case r < 400:
		m.abortOne()
	case r < 500:
		m.startFinalize()
	case r < 650:
		m.commit()
	case r < 780:
		m.runDeletions()
	case r < 810:
		if l.listing == nil {
			m.op = "list"
			l.listing = m.list()
		} else {
			m.sweep()
		}
	case r < 850:
		m.resyncStep()
	case r < 860:
		m.restart()
	case r < 865:
		m.failover()
	case r < 880:
		m.answerOld()
	default:
		m.ack()
	}
}

func (m *chainModel) newShared(id int64, task int) string {
	m.seq++
	f := fmt.Sprintf("shared/a%d-t%d-%d.sst", m.attempt, task, m.seq)
	m.uploader[f] = id
	m.shared[f] = true
	m.uploads = append(m.uploads, f)
	return f
}

func (m *chainModel) writePrivate(id int64, name string) string {
	p := CheckpointDirName(id) + "/" + name
	if m.private[id] == nil {
		m.private[id] = map[string]bool{}
	}
	m.private[id][p] = true
	return p
}

func (m *chainModel) trigger() {
	m.op = "trigger"
	l := m.lead
	if len(l.pend) >= m.maxConc {
		return
	}
	m.counter++
	id := m.counter
	full, why := l.chain.Trigger(id, m.now)
	if m.mustFull && !full {
		m.fatalf("checkpoint %d is not full after a checkpoint was refused for a deleted file", id)
	}
	if full && why == "" {
		m.fatalf("checkpoint %d full without a reason", id)
	}
	if full {
		m.mustFull = false
		m.stats["full"]++
	}
	k := &cmCk{id: id, attempt: m.attempt, full: full, uploaded: make([]bool, m.tasks), acked: make([]bool, m.tasks), lost: make([]bool, m.tasks), shared: make([][]string, m.tasks)}
	l.pend = append(l.pend, k)
	m.ckFiles[id] = k
}

func (m *chainModel) ack() {
	m.op = "ack"
	l := m.lead
	var cands [][2]int
	for i, k := range l.pend {
		if k.prepared {
			continue
		}
		for task, a := range k.acked {
			if !a && !k.lost[task] {
				cands = append(cands, [2]int{i, task})
			}
		}
	}
	if len(cands) == 0 {
		return
	}
	c := cands[m.rng.IntN(len(cands))]
	k, task := l.pend[c[0]], c[1]
	if k.uploaded[task] {
		// The asynchronous phase is over: the acknowledgement arrives.
		m.op = fmt.Sprintf("ack %d by task %d", k.id, task)
		k.acked[task] = true
		l.chain.Ack(k.id, k.shared[task])
		return
	}
	m.op = fmt.Sprintf("upload %d by task %d", k.id, task)
	var files []string
	if !k.full {
		for _, f := range m.known[task] {
			if m.rng.IntN(10) < 7 {
				files = append(files, f)
				if !m.registered(f) {
					m.stats["stale-reuse"]++
				}
			}
		}
		if len(m.uploads) > 0 && m.rng.IntN(40) == 0 {
			// A task breaking rule 3: it reuses a file of an unconfirmed checkpoint.
			files = append(files, m.uploads[m.rng.IntN(len(m.uploads))])
			m.stats["buggy-reuse"]++
		}
	}
	for n := m.rng.IntN(3); n >= 0; n-- {
		if !k.full && n == 0 && len(files) > 0 && m.rng.IntN(2) == 0 {
			break
		}
		files = append(files, m.newShared(k.id, task))
	}
	slices.Sort(files)
	files = slices.Compact(files)
	k.private = append(k.private, m.writePrivate(k.id, "t"+strconv.Itoa(task)))
	k.shared[task] = files
	k.uploaded[task] = true
	if m.rng.IntN(50) == 0 {
		// The upload went through, the acknowledgement never arrives.
		k.lost[task] = true
		m.stats["straggler"]++
	}
}

func (m *chainModel) registered(f string) bool {
	_, ok := m.etcd.Files[f]
	return ok
}

// straggle: a task of the current attempt uploads files for a checkpoint that was given
// up already.
func (m *chainModel) straggle() {
	m.op = "straggle"
	if len(m.aborted) == 0 {
		return
	}
	id := m.aborted[m.rng.IntN(len(m.aborted))]
	m.writePrivate(id, "late-"+strconv.Itoa(m.seq))
	m.newShared(id, m.rng.IntN(m.tasks))
	m.stats["straggler"]++
}

func (m *chainModel) queueDeletions(d Deletions, by string) {
	m.t.Helper()
	for _, f := range d.Shared {
		m.checkUnreferenced(cmDeletion{shared: f, by: by}, "decided")
		if up, ok := m.uploader[f]; ok && m.deciding == m.lead.chain && slices.ContainsFunc(m.lead.pend, func(k *cmCk) bool { return k.id == up }) {
			m.fatalf("deletion of %s (by %s), an upload of checkpoint %d in progress", f, by, up)
		}
		m.queue = append(m.queue, cmDeletion{shared: f, by: by, chain: m.deciding})
	}
	for _, n := range d.Checkpoints {
		m.checkUnreferenced(cmDeletion{dir: n, by: by}, "decided")
		if m.deciding == m.lead.chain && slices.ContainsFunc(m.lead.pend, func(k *cmCk) bool { return k.id == n }) {
			m.fatalf("deletion of %s/ (by %s), a checkpoint in progress", CheckpointDirName(n), by)
		}
		m.queue = append(m.queue, cmDeletion{dir: n, by: by, chain: m.deciding})
	}
}

func (m *chainModel) checkUnreferenced(d cmDeletion, when string) {
	m.t.Helper()
	if d.shared != "" {
		for _, r := range m.etcd.Records {
			if slices.Contains(r.SharedFiles, d.shared) {
				m.fatalf("deletion of %s (%s, by %s) but recorded checkpoint %d references it", d.shared, when, d.by, r.ID)
			}
		}
		return
	}
	if _, ok := m.etcd.Records[d.dir]; ok {
		m.fatalf("deletion of %s/ (%s, by %s) but checkpoint %d is recorded", CheckpointDirName(d.dir), when, d.by, d.dir)
	}
}

// endPending removes k from the leader's checkpoints in progress.
func (l *cmLeader) endPending(id int64) {
	l.pend = slices.DeleteFunc(l.pend, func(k *cmCk) bool { return k.id == id })
}

func (m *chainModel) abortCk(l *cmLeader, k *cmCk, why string) {
	l.endPending(k.id)
	m.queueDeletions(l.chain.Aborted(k.id), why)
	if l == m.lead && k.attempt == m.attempt {
		m.aborted = append(m.aborted, k.id)
		if len(m.aborted) > 8 {
			m.aborted = m.aborted[1:]
		}
	}
}

func (m *chainModel) abortOne() {
	m.op = "decline"
	l := m.lead
	var cands []*cmCk
	for _, k := range l.pend {
		if !k.prepared {
			cands = append(cands, k)
		}
	}
	if len(cands) == 0 {
		return
	}
	k := cands[m.rng.IntN(len(cands))]
	m.op = fmt.Sprintf("decline %d", k.id)
	m.abortCk(l, k, "abort")
}

// startFinalize: the coordinator finalizes the oldest fully acknowledged checkpoint when
// none is being finalized: _metadata, then Prepare.
func (m *chainModel) startFinalize() {
	m.op = "finalize"
	l := m.lead
	if l.fin != nil {
		return
	}
	var k *cmCk
	for _, p := range l.pend {
		if p.fullyAcked() {
			k = p
			break
		}
	}
	if k == nil {
		return
	}
	m.op = fmt.Sprintf("finalize %d", k.id)
	k.private = append(k.private, m.writePrivate(k.id, "_metadata"))
	fs := Files{Shared: map[string]*sluicev1.StateFile{}}
	for _, files := range k.shared {
		for _, f := range files {
			fs.Shared[f] = &sluicev1.StateFile{Path: f}
		}
	}
	for _, p := range k.private {
		if !strings.HasSuffix(p, "/_metadata") {
			fs.Private = append(fs.Private, p)
		}
	}
	rec, err := l.chain.Prepare(k.id, fs)
	if err != nil {
		if !errors.Is(err, ErrDeletedFile) {
			m.fatalf("prepare: %v", err)
		}
		m.stats["refused-deleted-file"]++
		m.mustFull = true
		m.abortCk(l, k, "prepare refused")
		return
	}
	all := map[string]bool{}
	for _, f := range rec.SharedFiles {
		all[f] = true
	}
	for f := range fs.Shared {
		if !all[f] {
			m.fatalf("record lacks shared file %s", f)
		}
	}
	k.prepared, k.rec = true, rec
	l.fin = k
}

// cmOutcome is how a checkpoint's recording ended, as its leader will hear it.
type cmOutcome struct {
	kind    string // missing, refused, meta-missing, commit, commit-answer-lost, unknown
	removed []int64
	unref   []string
}

// commit: first the jobmanager checks that the new shared files exist and runs the etcd
// transaction, whose outcome is any of the possible ones; at a later step (other things
// happen in between) its loop hears the answer.
func (m *chainModel) commit() {
	l := m.lead
	k := l.fin
	if k == nil {
		return
	}
	if k.outcome != nil {
		m.op = fmt.Sprintf("answer %d", k.id)
		m.deliver(l, k, true)
		return
	}
	m.op = fmt.Sprintf("commit %d", k.id)
	for _, f := range k.rec.NewSharedFiles {
		if !m.shared[f] {
			// The task reused a file that is gone: the jobmanager refuses the checkpoint.
			k.outcome = &cmOutcome{kind: "missing"}
			return
		}
	}
	cp := meta.CompletedCheckpoint{ID: k.id, Kind: meta.KindCheckpoint, MetadataPath: CheckpointDirName(k.id) + "/_metadata",
		SharedFiles: k.rec.SharedFiles, NewSharedFiles: append([]string{}, k.rec.NewSharedFiles...)}
	switch r := m.rng.IntN(100); {
	case r < 85:
		sub, err := m.etcd.Add(cp, m.retain)
		if err != nil {
			if !errors.Is(err, meta.ErrSharedFileMissing) {
				m.fatalf("etcd: %v", err)
			}
			k.outcome = &cmOutcome{kind: "meta-missing"}
			return
		}
		k.outcome = &cmOutcome{kind: "commit", unref: sub.Unreferenced}
		if r >= 80 {
			k.outcome.kind = "commit-answer-lost"
		}
		for _, c := range sub.Removed {
			k.outcome.removed = append(k.outcome.removed, c.ID)
		}
	case r < 90:
		if _, err := m.etcd.Add(cp, m.retain); err != nil && !errors.Is(err, meta.ErrSharedFileMissing) {
			m.fatalf("etcd: %v", err)
		}
		k.outcome = &cmOutcome{kind: "unknown-applied"}
	case r < 95:
		k.outcome = &cmOutcome{kind: "unknown-not-applied"}
	default:
		k.outcome = &cmOutcome{kind: "refused"}
	}
}

// deliver: leader l hears how k's recording ended. current: l still leads.
func (m *chainModel) deliver(l *cmLeader, k *cmCk, current bool) {
	l.fin = nil
	o := k.outcome
	if current {
		m.stats[o.kind]++
	}
	switch o.kind {
	case "missing":
		if current {
			m.stats["missing-new-file"]++
			m.mustFull = true
		}
		l.chain.ForceFull("missing")
		m.abortCk(l, k, "new shared file missing")
	case "meta-missing", "refused":
		m.abortCk(l, k, o.kind)
	case "commit", "commit-answer-lost":
		l.endPending(k.id)
		if o.kind == "commit" {
			m.queueDeletions(l.chain.Committed(k.id, o.removed, o.unref, true), "commit")
		} else {
			m.queueDeletions(l.chain.Committed(k.id, o.removed, nil, false), "commit (answer lost)")
		}
		if !current {
			return
		}
		if k.full {
			m.sinceFull = 0
		} else if m.sinceFull++; m.fullEvery > 0 && m.sinceFull > m.fullEvery-1+m.maxConc {
			m.fatalf("%d incremental checkpoints since the last full one, full-every %d", m.sinceFull, m.fullEvery)
		}
		m.subsume(l, k.id)
		if k.attempt == m.attempt {
			for task := range m.tasks {
				if m.rng.IntN(10) < 7 {
					m.known[task] = k.shared[task]
				}
			}
		}
	default: // unknown
		l.endPending(k.id)
		m.queueDeletions(l.chain.Unknown(k.id), "unknown")
		if current {
			m.subsume(l, k.id)
		}
	}
}

// subsume aborts the checkpoints in progress older than id.
func (m *chainModel) subsume(l *cmLeader, id int64) {
	for _, k := range slices.Clone(l.pend) {
		if k.id < id && !k.prepared {
			m.stats["subsumed"]++
			m.abortCk(l, k, "subsumed")
		}
	}
}

func (m *chainModel) runDeletions() {
	m.op = "delete"
	n := m.rng.IntN(len(m.queue)/2 + 4)
	for ; n > 0 && len(m.queue) > 0; n-- {
		i := m.rng.IntN(len(m.queue))
		m.runDeletion(m.queue[i], true)
		m.queue = slices.Delete(m.queue, i, i+1)
	}
}

// runDeletion runs d, or fails to (then nobody retries it but a later sweep).
func (m *chainModel) runDeletion(d cmDeletion, mayFail bool) {
	m.t.Helper()
	if mayFail && m.rng.IntN(30) == 0 {
		m.stats["delete-failed"]++
		return
	}
	m.checkUnreferenced(d, "run")
	if d.shared != "" {
		if m.shared[d.shared] {
			m.stats["delete-shared"]++
		}
		delete(m.shared, d.shared)
		d.chain.Deleted(Deletions{Shared: []string{d.shared}})
		return
	}
	if m.private[d.dir] != nil {
		m.stats["delete-dir"]++
	}
	delete(m.private, d.dir)
	d.chain.Deleted(Deletions{Checkpoints: []int64{d.dir}})
}

func (m *chainModel) list() *Listing {
	l := &Listing{}
	for f := range m.shared {
		l.Shared = append(l.Shared, f)
	}
	for n, files := range m.private {
		if len(files) > 0 {
			l.Checkpoints = append(l.Checkpoints, n)
		}
	}
	sort.Strings(l.Shared)
	slices.Sort(l.Checkpoints)
	return l
}

func (m *chainModel) sweep() {
	m.op = "sweep"
	l := m.lead
	d := l.chain.Sweep(m.now, *l.listing)
	l.listing = nil
	m.stats["sweep-shared"] += len(d.Shared)
	m.stats["sweep-dir"] += len(d.Checkpoints)
	m.queueDeletions(d, "sweep")
}

func (m *chainModel) records() []RetainedCheckpoint {
	var out []RetainedCheckpoint
	for _, r := range m.etcd.Records {
		out = append(out, RetainedCheckpoint{ID: r.ID, SharedFiles: slices.Clone(r.SharedFiles)})
	}
	slices.SortFunc(out, func(a, b RetainedCheckpoint) int { return compareID(a.ID, b.ID) })
	return out
}

func (m *chainModel) resyncStep() {
	m.op = "resync"
	l := m.lead
	if !l.resyncing {
		if l.chain.Stale() {
			l.resyncing, l.resyncEpoch, l.resync = true, l.chain.Epoch(), m.records()
		}
		return
	}
	l.resyncing = false
	if l.chain.Resync(l.resyncEpoch, l.resync) {
		m.stats["resync"]++
	}
}

// restore starts a new attempt from the newest record, checking its files exist.
func (m *chainModel) restore() {
	m.attempt++
	m.aborted = nil
	m.known = make([][]string, m.tasks)
	var newest int64
	for id := range m.etcd.Records {
		newest = max(newest, id)
	}
	if newest > 0 {
		k := m.ckFiles[newest]
		for _, f := range m.etcd.Records[newest].SharedFiles {
			if !m.shared[f] {
				m.fatalf("restore of checkpoint %d: %s is missing", newest, f)
			}
		}
		for _, p := range k.private {
			if !m.private[newest][p] {
				m.fatalf("restore of checkpoint %d: %s is missing", newest, p)
			}
		}
		copy(m.known, k.shared)
	}
}

// restart: the attempt fails over; the coordinator stops (aborting what is not being
// finalized) and the next attempt restores.
func (m *chainModel) restart() {
	m.op = "restart"
	m.stats["restart"]++
	l := m.lead
	for _, k := range slices.Clone(l.pend) {
		if !k.prepared {
			m.abortCk(l, k, "stopped")
		}
	}
	m.restore()
}

// failover: another jobmanager becomes the leader. The old one's transaction in flight
// is applied by etcd or fenced off; the old leader may still hear its answer later
// (answerOld) and delete accordingly.
func (m *chainModel) failover() {
	m.op = "failover"
	m.stats["failover"]++
	old := m.lead
	m.old = nil
	if k := old.fin; k != nil {
		if k.outcome == nil {
			// Its transaction was in flight: etcd applied it before the new leader was
			// elected, or the fence refused it.
			m.commit()
			if o := k.outcome; o.kind == "unknown-not-applied" {
				o.kind = "refused"
			} else if o.kind == "commit" && m.rng.IntN(2) == 0 {
				o.kind = "unknown-applied"
			}
		}
		m.old = old
	}
	m.lead = &cmLeader{chain: NewChain(m.cfg())}
	m.lead.chain.Load(m.records())
	// Rule 3 is what protects a new leader from its predecessor's deletions still
	// running: its tasks reuse only files of the restored record. The model's
	// rule-breaking tasks break it only within one leadership.
	m.uploads = nil
	m.sinceFull, m.mustFull = 0, false
	m.restore()
}

// answerOld: the former leader hears the answer of its last transaction and acts on it.
func (m *chainModel) answerOld() {
	old := m.old
	if old == nil {
		return
	}
	m.op = "answer old leader"
	m.old = nil
	m.deciding = old.chain
	m.deliver(old, old.fin, false)
}

// checkRecordsIntact: every file of every recorded checkpoint exists.
func (m *chainModel) checkRecordsIntact() {
	m.t.Helper()
	for id, r := range m.etcd.Records {
		for _, f := range r.SharedFiles {
			if !m.shared[f] {
				m.fatalf("recorded checkpoint %d references %s, which was deleted", id, f)
			}
		}
		for _, p := range m.ckFiles[id].private {
			if !m.private[id][p] {
				m.fatalf("recorded checkpoint %d: its file %s was deleted", id, p)
			}
		}
	}
}

// quiesce ends everything in progress, lets the sweeps run past the grace period and
// runs every deletion: what is left must be exactly the recorded checkpoints' files.
func (m *chainModel) quiesce() {
	m.step++
	m.op = "quiesce"
	if m.old != nil {
		m.answerOld()
	}
	l := m.lead
	for l.fin != nil || len(l.pend) > 0 {
		if l.fin != nil {
			m.commit() // twice: the transaction, then its answer
			continue
		}
		m.abortCk(l, l.pend[0], "quiesce")
	}
	for l.chain.Stale() {
		if !l.chain.Resync(l.chain.Epoch(), m.records()) {
			m.fatalf("resync refused with nothing in progress")
		}
	}
	// Deletions that failed are decided again by a sweep a grace period later, then
	// seen for another.
	for range 3 {
		m.queueDeletions(l.chain.Sweep(m.now, *m.list()), "final sweep")
		m.now = m.now.Add(m.grace + time.Second)
	}
	m.queueDeletions(l.chain.Sweep(m.now, *m.list()), "final sweep")
	for _, d := range m.queue {
		m.runDeletion(d, false)
	}
	m.queue = nil
	m.checkRecordsIntact()
	want := map[string]bool{}
	for _, r := range m.etcd.Records {
		for _, f := range r.SharedFiles {
			want[f] = true
		}
		if len(m.private[r.ID]) != len(m.ckFiles[r.ID].private) {
			m.fatalf("checkpoint %d's directory holds %d files, it wrote %d", r.ID, len(m.private[r.ID]), len(m.ckFiles[r.ID].private))
		}
	}
	for f := range m.shared {
		if !want[f] {
			m.fatalf("orphan shared file %s survived", f)
		}
	}
	for n := range m.private {
		if _, ok := m.etcd.Records[n]; !ok {
			m.fatalf("orphan directory %s survived", CheckpointDirName(n))
		}
	}
}
