package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestLocalRecoveryAfterTaskManagerRestart: keyed-count on RocksDB with incremental
// checkpoints and local recovery, on two task managers of one slot each, each with its
// own local recovery root. One of them is SIGKILLed and started again on the same root:
// it takes its recorded identity, the jobmanager puts each subtask back on the task
// manager it ran on, and every subtask restores from its local copy, so the restore
// reads no byte from the checkpoint storage. The output is exactly once, and once the
// job finished the task managers delete its copies.
func TestLocalRecoveryAfterTaskManagerRestart(t *testing.T) {
	const keys, perKey = 20, 1500
	cpDir := t.TempDir()
	c := startCluster(t, clusterOptions{taskManagers: 2, slots: 1, restartAttempts: 20, localState: true,
		jobManagerArgs: checkpointArgs(cpDir, "200ms", "--state.backend.type=rocksdb", "--state.backend.incremental=true",
			"--state.backend.local-recovery=true")})
	out := filepath.Join(t.TempDir(), "out")
	id := c.submit("keyed-count", "-p", "2", "--arg", "keys="+strconv.Itoa(keys), "--arg", "per-key="+strconv.Itoa(perKey),
		"--arg", "rate=2000", "--arg", "out="+out, "--arg", "source-parallelism=2", "--arg", "guarantee=exactly-once")

	var before jobStatus
	poll(t, 30*time.Second, "job running with 3 checkpoints", func() (bool, string) {
		before = c.status(id)
		if before.state() == "FINISHED" {
			t.Fatalf("the job finished before the kill: %s", before)
		}
		return before.state() == "RUNNING" && before.LatestCheckpointID >= 3, before.String()
	})
	// The copies are on disk: each root holds the job's native checkpoints.
	for _, tm := range c.ids {
		if _, err := os.Stat(filepath.Join(c.localStateDir(tm), id)); err != nil {
			t.Fatalf("no local recovery copies of %s: %v", tm, err)
		}
	}

	c.tms["tm-1"].kill(t)
	c.restartTaskManager("tm-1")
	t.Logf("SIGKILLed tm-1 and started it again on %s (attempt %d, latest checkpoint %d)", c.localStateDir("tm-1"), before.Attempt, before.LatestCheckpointID)

	var after jobStatus
	poll(t, 60*time.Second, "job running again after a restore", func() (bool, string) {
		after = c.status(id)
		switch after.state() {
		case "FAILED", "CANCELED":
			t.Fatalf("job ended %s: %s", after.state(), after)
		}
		return after.Attempt > before.Attempt && after.Restores >= 1 && after.RestoredLocalBytes > 0, after.String()
	})
	t.Logf("attempt %d restored %d bytes from local copies and %d from the checkpoint storage",
		after.Attempt, after.RestoredLocalBytes, after.RestoredRemoteBytes)
	if after.RestoredRemoteBytes != 0 {
		t.Errorf("the restore read %d bytes from the checkpoint storage, want 0 (all from local copies)", after.RestoredRemoteBytes)
	}

	final := c.waitState(id, "FINISHED", 90*time.Second)
	r := checkCommittedOutput(t, out, keys, perKey)
	if !r.exactlyOnce(keys, perKey) {
		t.Fatalf("committed output in %s is not exactly once: %s (job %s)", out, r, final)
	}
	t.Logf("output exactly once: %s", r)

	// The job ended: its copies will never be restored, and the task managers delete them.
	poll(t, 30*time.Second, "local recovery copies of the ended job deleted", func() (bool, string) {
		for _, tm := range c.ids {
			if _, err := os.Stat(filepath.Join(c.localStateDir(tm), id)); err == nil {
				return false, tm + " still has them"
			}
		}
		return true, ""
	})
}
