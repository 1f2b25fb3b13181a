package cluster_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/checkpoint"
	"github.com/sluice-stream/sluice/pkg/jobmanager"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// fullDisk mounts a 1 MiB tmpfs and fills it: a local disk with no space left. The
// test is skipped where mounting is not allowed (not root).
func fullDisk(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a small tmpfs to fill (%v): run as root", err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	f, err := os.Create(filepath.Join(dir, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill %s: %v", dir, err)
			}
			break
		}
	}
	if out, err := exec.Command("df", "-h", dir).CombinedOutput(); err == nil {
		t.Logf("local disk:\n%s", out)
	}
	return dir
}

// TestLocalRecovery: a RocksDB job with incremental checkpoints and local recovery
// fails over (an injected snapshot failure). With a working local disk, every subtask
// restores on its task manager from its local copy and reads nothing from the
// checkpoint storage. With a full local disk no copy can be written: checkpoints still
// complete, the restore reads the checkpoint storage and says why, and the job goes on.
// Either way the output is exactly once.
func TestLocalRecovery(t *testing.T) {
	tests := []struct {
		name string
		dir  func(t *testing.T) string
		full bool
	}{
		{"local disk", func(t *testing.T) string { return t.TempDir() }, false},
		{"full local disk", fullDisk, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local := tt.dir(t)
			cc := checkpoint.DefaultConfig()
			cc.Interval = 100 * time.Millisecond
			_, js := startRocksDBWith(t, 2, 1, jobmanager.CheckpointConfig{Storage: "file://" + t.TempDir(), Coordinator: cc, Retained: 2}, 5, local)
			t.Cleanup(func() { failSnapshotAt.Store(0) })
			out := t.TempDir()
			id := submit(t, js, "faulty-count", 2, map[string]string{"keys": "200", "per-key": "60", "rate": "1600", "out": out})
			deadline := time.Now().Add(30 * time.Second)
			for getJob(t, js, id).GetLatestCheckpointId() < 3 {
				if time.Now().After(deadline) {
					t.Fatalf("no 3 checkpoints: %v", getJob(t, js, id))
				}
				time.Sleep(20 * time.Millisecond)
			}
			failSnapshotAt.Store(getJob(t, js, id).GetLatestCheckpointId() + 2)

			// The attempt after the failover, once it runs.
			var st *sluicev1.JobStatus
			deadline = time.Now().Add(60 * time.Second)
			for {
				st = getJob(t, js, id)
				if st.GetAttempt() > 1 && len(st.GetRestoredSubtasks()) == 2 {
					break
				}
				if time.Now().After(deadline) || st.GetState() == sluicev1.JobState_JOB_STATE_FAILED {
					t.Fatalf("no restore reported by both keyed subtasks: %v", st)
				}
				time.Sleep(20 * time.Millisecond)
			}
			t.Logf("attempt %d restored checkpoint %d: local %d bytes, remote %d bytes", st.GetAttempt(), st.GetRestoredCheckpointId(),
				st.GetRestoredLocalBytes(), st.GetRestoredRemoteBytes())
			for _, s := range st.GetRestoredSubtasks() {
				r := s.GetRestore()
				t.Logf("  %s (%d) on %s: %v", s.GetVertexName(), s.GetSubtask(), s.GetTaskManager(), r)
				switch {
				case !tt.full && (r.GetRemoteBytes() != 0 || r.GetLocalBytes() == 0 || r.GetLocalCheckpointId() != st.GetRestoredCheckpointId()):
					t.Errorf("subtask %d did not restore from its local copy of checkpoint %d: %v", s.GetSubtask(), st.GetRestoredCheckpointId(), r)
				case tt.full && (r.GetLocalBytes() != 0 || r.GetRemoteBytes() == 0 || !strings.Contains(r.GetFallback(), "no local copy")):
					t.Errorf("subtask %d on a full disk: %v, want a remote restore saying there is no local copy", s.GetSubtask(), r)
				}
			}
			waitState(t, js, id, sluicev1.JobState_JOB_STATE_FINISHED, 60*time.Second)
			verifyCounts(t, out, 200, 60)
		})
	}
}
