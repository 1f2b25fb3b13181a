package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// savepointPath is what streamctl savepoint, stop and cancel --with-savepoint print.
var savepointPath = regexp.MustCompile(`^file:///\S+/savepoint-[0-9a-f]{6}-[0-9a-f]{12}\n$`)

// mustSavepoint runs a savepoint command and returns the path it printed on stdout.
func (c *cluster) mustSavepoint(args ...string) string {
	c.t.Helper()
	r := c.ctl(args...)
	if r.code != 0 || !savepointPath.MatchString(r.stdout) {
		c.t.Fatalf("want exit 0 and the savepoint's path alone on stdout\n%s", r)
	}
	c.t.Logf("%s: %s (stderr: %s)", strings.Join(args, " "), strings.TrimSpace(r.stdout), strings.TrimSpace(r.stderr))
	return strings.TrimSpace(r.stdout)
}

// TestSavepointsRescaleExactlyOnce runs the savepoint commands with the real binaries:
// a savepoint of a running job; `streamctl rescale` (stop with savepoint, then the same
// job graph at another parallelism from it), whose two runs together commit every record
// exactly once with count == seq; a job from a savepoint with
// --allow-non-restored-state, canceled with a savepoint; dispose; and every bad input
// as one line on stderr with a non-zero exit.
func TestSavepointsRescaleExactlyOnce(t *testing.T) {
	cpDir, spDir := t.TempDir(), t.TempDir()
	c := startCluster(t, clusterOptions{taskManagers: 2, slots: 2,
		jobManagerArgs: checkpointArgs(cpDir, "200ms", "--execution.checkpointing.savepoint-dir=file://"+spDir)})
	out := filepath.Join(t.TempDir(), "out")
	const keys, perKey = 20, 1000
	args := []string{"keyed-count", "--arg", fmt.Sprintf("keys=%d", keys), "--arg", fmt.Sprintf("per-key=%d", perKey), "--arg", "rate=1000", "--arg", "out=" + out}
	id := c.submit(append(args, "-p", "2")...)
	poll(t, 20*time.Second, "job "+id+" running with a checkpoint", func() (bool, string) {
		st := c.status(id)
		return st.state() == "RUNNING" && st.LatestCheckpointID > 0, st.String()
	})

	// A savepoint into the default directory; the job goes on.
	sp := c.mustSavepoint("savepoint", id)
	if !strings.HasPrefix(sp, "file://"+spDir+"/") {
		t.Fatalf("savepoint %s: want it under the default directory %s", sp, spDir)
	}
	if st := c.status(id); st.state() != "RUNNING" {
		t.Fatalf("after a savepoint: %s", st)
	}

	// Rescale 2 -> 3.
	r := c.ctl("rescale", id, "-p", "3")
	newID := strings.TrimSpace(r.stdout)
	if r.code != 0 || len(newID) != 32 || !strings.Contains(r.stderr, "stopped with savepoint") || !strings.Contains(r.stderr, "runs at parallelism 3") {
		t.Fatalf("streamctl rescale: want exit 0, the new job ID on stdout and progress on stderr\n%s", r)
	}
	t.Logf("rescale: %s", r.stderr)
	old := c.status(id)
	if old.state() != "FINISHED" || !savepointPath.MatchString(old.SavepointPath+"\n") {
		t.Fatalf("the rescaled job: want FINISHED with its savepoint: %s (savepoint %q)", old, old.SavepointPath)
	}
	st := c.waitState(newID, "FINISHED", 60*time.Second)
	for _, v := range st.Vertices {
		if v.Parallelism != 3 {
			t.Errorf("new job's vertex %s has parallelism %d, want 3", v.Name, v.Parallelism)
		}
	}
	rep := checkCommittedOutput(t, out, keys, perKey)
	// Keys move between sink subtasks at a rescale: splitKeys is expected.
	if !rep.wellFormed() || rep.lines != keys*perKey || rep.lost != 0 || rep.duplicated != 0 || rep.inconsistent != 0 || rep.outOfOrder != 0 {
		t.Fatalf("committed output of both runs: %s", rep)
	}
	t.Logf("committed output of both runs: %s", rep)

	// Bad inputs: one line on stderr, non-zero exit.
	dir := t.TempDir()
	stray := filepath.Join(dir, "stray")
	if err := os.MkdirAll(stray, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stray, "x"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	local := strings.TrimPrefix(old.SavepointPath, "file://")
	truncated := filepath.Join(dir, filepath.Base(local))
	if err := os.CopyFS(truncated, os.DirFS(local)); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(truncated, "_metadata"), 40); err != nil {
		t.Fatal(err)
	}
	spec := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	mismatch := spec("mismatch.yaml", `name: mismatch
operators:
  - uid: sequence
    type: sequence
    keys: 10
    perKey: 10
  - uid: count
    type: map
    input: sequence
    expr: '{"key": key}'
  - uid: file-sink
    type: print
    input: count
`)
	other := spec("other.yaml", `name: other
operators:
  - uid: numbers
    type: sequence
    keys: 10
    perKey: 0
    rate: 100
  - uid: out
    type: blackhole
    input: numbers
`)
	unknown := "0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"missing savepoint", append(slicesClone(args), "--from-savepoint", "file://"+filepath.Join(dir, "nope")), []string{"no savepoint at", "does not exist"}},
		{"directory without metadata", append(slicesClone(args), "--from-savepoint", "file://"+stray), []string{"has no _metadata"}},
		{"truncated metadata", append(slicesClone(args), "--from-savepoint", "file://"+truncated), []string{"truncated checkpoint metadata"}},
		{"other max parallelism", append(slicesClone(args), "-D", "pipeline.max-parallelism=256", "--from-savepoint", old.SavepointPath), []string{"max parallelism 128", "256"}},
		{"keyed operator not keyed", []string{"submit", mismatch, "--from-savepoint", old.SavepointPath}, []string{`"count"`, "not keyed"}},
		{"state without operator", []string{"submit", other, "--from-savepoint", old.SavepointPath}, []string{"--allow-non-restored-state"}},
		{"both restore flags", append(slicesClone(args), "--from-savepoint", old.SavepointPath, "--from-checkpoint", old.SavepointPath), []string{"not both"}},
		{"non-restored without savepoint", append(slicesClone(args), "--allow-non-restored-state"), []string{"--from-savepoint"}},
		{"dispose a directory that is no savepoint", []string{"savepoint", "dispose", "file://" + stray}, []string{"has no _metadata"}},
		{"stop an unknown job", []string{"stop", unknown}, []string{unknown}},
		{"stop a finished job", []string{"stop", id}, []string{"already finished"}},
		{"savepoint in a bad format", []string{"savepoint", newID, "--format", "bogus"}, []string{"--format", "bogus"}},
		{"rescale without -p", []string{"rescale", newID}, []string{"-p"}},
		{"cancel with a directory but no savepoint", []string{"cancel", newID, "file://" + dir}, []string{"--with-savepoint"}},
	} {
		if tc.args[0] == "keyed-count" {
			tc.args = append([]string{"submit"}, tc.args...)
		}
		r := c.ctl(tc.args...)
		line := strings.TrimSuffix(r.stderr, "\n")
		t.Logf("%s: exit %d: %s", tc.name, r.code, line)
		if r.code == 0 || line == "" || strings.Contains(line, "\n") || !strings.HasPrefix(line, "streamctl: ") || strings.TrimSpace(r.stdout) != "" {
			t.Errorf("%s: want a non-zero exit and one line on stderr\n%s", tc.name, r)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(line, w) {
				t.Errorf("%s: the error does not say %q\n%s", tc.name, w, r)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(stray, "x")); err != nil {
		t.Errorf("a refused dispose deleted a file: %v", err)
	}

	// Leaving the savepoint's state of missing operators out, then cancel with a
	// savepoint into a directory given on the command line.
	skip := c.submit(other, "--from-savepoint", old.SavepointPath, "--allow-non-restored-state")
	c.waitState(skip, "RUNNING", 15*time.Second)
	target := t.TempDir()
	var canceledSP string
	poll(t, 15*time.Second, "cancel --with-savepoint", func() (bool, string) {
		r := c.ctl("cancel", skip, "--with-savepoint", "file://"+target)
		if r.code != 0 && strings.Contains(r.stderr, "not running with all tasks") {
			return false, r.String()
		}
		if r.code != 0 || !savepointPath.MatchString(r.stdout) || !strings.HasPrefix(r.stdout, "file://"+target+"/") {
			t.Fatalf("cancel --with-savepoint: want exit 0 and the savepoint's path under %s\n%s", target, r)
		}
		canceledSP = strings.TrimSpace(r.stdout)
		return true, ""
	})
	if st := c.waitState(skip, "CANCELED", 15*time.Second); st.SavepointPath != canceledSP {
		t.Errorf("canceled job shows savepoint %q, want %q", st.SavepointPath, canceledSP)
	}

	// Dispose of the savepoints: the directories go.
	for _, p := range []string{sp, canceledSP} {
		r := c.ctl("savepoint", "dispose", p)
		if r.code != 0 || !strings.Contains(r.stdout, "disposed of savepoint") {
			t.Fatalf("dispose: %s", r)
		}
		if _, err := os.Stat(strings.TrimPrefix(p, "file://")); !os.IsNotExist(err) {
			t.Errorf("disposed savepoint %s still there: %v", p, err)
		}
	}
}

func slicesClone(s []string) []string { return append([]string(nil), s...) }
