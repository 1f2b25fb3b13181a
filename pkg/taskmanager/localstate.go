package taskmanager

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/sluice-stream/sluice/pkg/atomicfile"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
)

// LocalState is a task manager's claim on its local recovery root: the directory holds
// the copies of its subtasks' latest confirmed snapshots (see pkg/state/rocksdb) and,
// in the file resource-id, the identity the task manager had when it wrote them. A
// task manager restarted on the same directory takes the same identity, so the
// jobmanager puts its subtasks back on it and they restore from those copies.
//
// The claim is an exclusive lock on <dir>/.lock, held until Release: two task managers
// sharing one directory would take the same identity and prune each other's copies.
type LocalState struct {
	Dir string
	ID  string
	// Warning, when set, says the identity could not be recorded (a full disk, say):
	// the task manager runs, but a restart without taskmanager.resource-id will not
	// find its copies.
	Warning string
	lock    *os.File
}

const (
	localStateLock = ".lock"
	localStateID   = "resource-id"
)

// ClaimLocalState locks dir (created if missing) and returns the task manager's
// identity: id when it is set (and then recorded in the directory), else the one
// recorded there, else a new one. It fails, with what to do, when another task manager
// holds the directory or it cannot be used.
func ClaimLocalState(dir, id string) (*LocalState, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("local state directory: %w (set taskmanager.state.local.root-dirs to a writable directory)", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, localStateLock), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("local state directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("local state directory %s is in use by another task manager (give each task manager its own taskmanager.state.local.root-dirs)", dir)
		}
		return nil, fmt.Errorf("lock local state directory %s: %w", dir, err)
	}
	l := &LocalState{Dir: dir, lock: f}
	idFile := filepath.Join(dir, localStateID)
	b, err := os.ReadFile(idFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		l.Release()
		return nil, fmt.Errorf("local state directory: read %s: %w", idFile, err)
	}
	recorded := strings.TrimSpace(string(b))
	if !validResourceID(recorded) {
		recorded = ""
	}
	switch {
	case id == "" && recorded != "":
		l.ID = recorded
		return l, nil
	case id == "":
		id = "tm-" + uuid.NewString()[:8]
	case id == recorded:
		l.ID = id
		return l, nil
	}
	l.ID = id
	// Failing to record it must not stop the task manager (the local disk may be
	// full); it only loses the copies at the next restart without an explicit ID.
	if err := atomicfile.Write(idFile, []byte(id+"\n")); err != nil {
		l.Warning = fmt.Sprintf("cannot record the resource ID in %s (%v): a restart without taskmanager.resource-id will not find this task manager's local copies", dir, err)
	}
	return l, nil
}

// validResourceID accepts what a user or ClaimLocalState would have written.
func validResourceID(s string) bool {
	return s != "" && len(s) <= 256 && !strings.ContainsAny(s, "\n\r\x00")
}

// Release drops the lock; the directory and its copies stay.
func (l *LocalState) Release() {
	if l != nil && l.lock != nil {
		l.lock.Close() // closing the descriptor drops the flock
		l.lock = nil
	}
}

// localJobs lists the jobs of the local recovery root for the heartbeat, reading the
// directory at most every localScanInterval. Only the heartbeat loop uses it.
type localJobs struct {
	root    string
	scanned time.Time
	jobs    []string
}

const localScanInterval = 10 * time.Second

func (l *localJobs) list() []string {
	if l.root == "" || time.Since(l.scanned) < localScanInterval {
		return l.jobs
	}
	l.scanned = time.Now()
	l.jobs = l.jobs[:0]
	ents, _ := os.ReadDir(l.root) // a missing or unreadable root has no copies to offer
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			l.jobs = append(l.jobs, e.Name())
		}
	}
	return l.jobs
}

// dropLocalState deletes the local recovery copies of jobs that ended, unless a task
// of the job still runs here (it will be canceled; the next heartbeat deletes them).
func (tm *TaskManager) dropLocalState(jobs []string) {
	if len(jobs) == 0 {
		return
	}
	running := map[string]bool{}
	tm.mu.Lock()
	for _, rt := range tm.tasks {
		running[rt.id.GetJobId()] = true
	}
	tm.mu.Unlock()
	for _, job := range jobs {
		if running[job] {
			continue
		}
		dir := rocksdb.LocalRecoveryJobDir(tm.localState, job)
		if err := os.RemoveAll(dir); err != nil {
			tm.log.Warn("cannot delete the local recovery copies of an ended job", "job", job, "dir", dir, "err", err)
			continue
		}
		tm.log.Info("deleted the local recovery copies of an ended job", "job", job)
		tm.local.scanned = time.Time{} // list again at the next heartbeat
	}
}
