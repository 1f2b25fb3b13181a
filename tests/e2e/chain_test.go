package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestVerifyAndFallBackToIntactCheckpoint: with the real binaries, `streamctl
// checkpoints verify` reports every retained checkpoint intact, then, once the newest
// one's _metadata is gone, that one broken (exit status non-zero, one line on stderr);
// `--chain` lists them. A task manager killed after that makes the job restore the
// newest intact checkpoint instead, and say so in its status and history.
// (Shared files of the RocksDB backend are covered by pkg/jobmanager's
// TestIncrementalChainInProcess, with a task manager that writes them.)
func TestVerifyAndFallBackToIntactCheckpoint(t *testing.T) {
	root := t.TempDir()
	c := startCluster(t, clusterOptions{taskManagers: 2, slots: 1, restartAttempts: 10,
		jobManagerArgs: checkpointArgs(root, "0ms", "--execution.checkpointing.num-retained=2")})
	id := c.submit("keyed-count", "-p", "2", "--arg", "keys=10", "--arg", "per-key=0", "--arg", "rate=500",
		"--arg", "out="+filepath.Join(t.TempDir(), "out"))
	c.waitState(id, "RUNNING", 15*time.Second)
	var ids []int64
	for len(ids) < 3 {
		var r cliResult
		poll(t, 10*time.Second, "streamctl checkpoint to succeed", func() (bool, string) {
			r = c.ctl("checkpoint", id)
			return r.code == 0, r.String()
		})
		f := strings.Fields(r.stdout)
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			t.Fatalf("streamctl checkpoint printed %q", r.stdout)
		}
		ids = append(ids, n)
	}
	older, newest := ids[1], ids[2]
	row := func(out string, want ...string) string {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) >= len(want) && slices.Equal(f[:len(want)], want) {
				return l
			}
		}
		return ""
	}
	sid := func(n int64) string { return strconv.FormatInt(n, 10) }

	r := c.ctl("checkpoints", "verify", id)
	if r.code != 0 || row(r.stdout, sid(older), "intact") == "" || row(r.stdout, sid(newest), "intact") == "" {
		t.Fatalf("verify of intact checkpoints %d and %d:\n%s", older, newest, r)
	}
	r = c.ctl("checkpoints", id, "--chain")
	if r.code != 0 || row(r.stdout, sid(older)) == "" || row(r.stdout, sid(newest)) == "" {
		t.Fatalf("--chain:\n%s", r)
	}

	meta := filepath.Join(root, id, "chk-"+sid(newest), "_metadata")
	if err := os.Remove(meta); err != nil {
		t.Fatal(err)
	}
	r = c.ctl("checkpoints", "verify", id)
	if r.code == 0 || !strings.Contains(row(r.stdout, sid(newest), "broken"), "_metadata: not found") || row(r.stdout, sid(older), "intact") == "" {
		t.Fatalf("verify after deleting %s: want %d broken, %d intact, a non-zero exit\n%s", meta, newest, older, r)
	}
	if line := strings.TrimSuffix(r.stderr, "\n"); strings.Contains(line, "\n") || !strings.Contains(line, "1 of 2 retained checkpoints are broken") {
		t.Errorf("verify's error: want one line\n%s", r)
	}

	c.tms["tm-1"].kill(t)
	c.startTaskManager("tm-3", 1, c.opts.heartbeatTimeout)
	var st struct {
		State      string `json:"state"`
		Attempt    num    `json:"attempt"`
		Restored   num    `json:"restored_checkpoint_id"`
		Note       string `json:"restore_note"`
		Restores   num    `json:"restores"`
		LatestCkpt num    `json:"latest_checkpoint_id"`
	}
	poll(t, 30*time.Second, "the job to run again, restored from checkpoint "+sid(older), func() (bool, string) {
		r := c.ctl("status", id, "-o", "json")
		decodeJSON(t, r, &st)
		return st.State == "JOB_STATE_RUNNING" && st.Attempt >= 2 && st.Restored == num(older), r.stdout
	})
	if !strings.Contains(st.Note, "checkpoint "+sid(newest)) || !strings.Contains(st.Note, "_metadata: not found") {
		t.Errorf("status does not say why checkpoint %d was skipped: %q", newest, st.Note)
	}
	var cps struct {
		Checkpoints []checkpointStats `json:"checkpoints"`
	}
	decodeJSON(t, c.ctl("checkpoints", id, "-o", "json"), &cps)
	broken := false
	for _, cp := range cps.Checkpoints {
		broken = broken || int64(cp.ID) == newest && cp.Status == "broken"
	}
	if !broken {
		t.Errorf("history does not list checkpoint %d as broken: %+v", newest, cps.Checkpoints)
	}
	if r := c.ctl("status", id); !strings.Contains(r.stdout, "Fallback:") {
		t.Errorf("streamctl status does not show the fallback:\n%s", r.stdout)
	}

	// Bad claim modes are one-line errors.
	for _, args := range [][]string{
		{"submit", "keyed-count", "--claim-mode", "maybe", "--from-checkpoint", "file://" + filepath.Join(root, id, "chk-"+sid(older))},
		{"submit", "keyed-count", "--claim-mode", "claim"},
	} {
		r := c.ctl(args...)
		if line := strings.TrimSuffix(r.stderr, "\n"); r.code == 0 || strings.Contains(line, "\n") || !strings.Contains(line, "--claim-mode") {
			t.Errorf("%v: want a one-line error about --claim-mode\n%s", args, r)
		}
	}
	c.mustCtl("cancel", id)
	c.waitState(id, "CANCELED", 15*time.Second)
}
