package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// taskRun is one subtask as a task manager's log tells it ("task finished").
type taskRun struct {
	tm                  string
	attempt             int64
	vertex, subtask     int
	recordsIn, recordsO int64
}

// finishedTasks collects the "task finished" log records of job id from the given
// task managers' logs.
func (c *cluster) finishedTasks(id string, tms ...string) []taskRun {
	c.t.Helper()
	var runs []taskRun
	for _, tm := range tms {
		for _, r := range c.tms[tm].records(c.t, "task finished") {
			if r.str("job") != id {
				continue
			}
			runs = append(runs, taskRun{tm: tm, attempt: r.int("attempt"), vertex: int(r.int("vertex")), subtask: int(r.int("subtask")),
				recordsIn: r.int("records_in"), recordsO: r.int("records_out")})
		}
	}
	return runs
}

// vertexIndex finds the vertex whose name contains part.
func vertexIndex(t *testing.T, st jobStatus, part string) int {
	t.Helper()
	for i, v := range st.Vertices {
		if strings.Contains(v.Name, part) {
			return i
		}
	}
	t.Fatalf("no vertex named like %q: %s", part, st)
	return -1
}

// TestKeyByShuffleAcrossTaskManagers runs keyed-count with a keyBy between two sources
// and three counting subtasks spread over three task manager processes, and checks the
// output exactly and that records crossed processes.
func TestKeyByShuffleAcrossTaskManagers(t *testing.T) {
	const keys, perKey = 100, 500
	c := startCluster(t, clusterOptions{taskManagers: 3, slots: 2})
	out := filepath.Join(t.TempDir(), "out")
	start := time.Now()
	id := c.submit("keyed-count", "-p", "3", "--arg", "keys="+strconv.Itoa(keys), "--arg", "per-key="+strconv.Itoa(perKey),
		"--arg", "out="+out, "--arg", "source-parallelism=2")
	st := c.waitState(id, "FINISHED", 60*time.Second)
	t.Logf("job %s finished in %s (polled): %s", id, time.Since(start).Round(time.Millisecond), st)

	verifyKeyedCount(t, out, keys, perKey)
	if st.RecordsIn != keys*perKey || st.RecordsOut != keys*perKey {
		t.Errorf("status counts records in %d, out %d; want %d each", st.RecordsIn, st.RecordsOut, keys*perKey)
	}
	if st.Attempt != 1 || st.Restarts != 0 {
		t.Errorf("job needed attempt %d, restarts %d; want one attempt: %s", st.Attempt, st.Restarts, st)
	}

	// The plan: two source subtasks, three counting subtasks, on task managers of two
	// slots each, so the counting vertex alone needs two processes.
	src, cnt := vertexIndex(t, st, "sequence"), vertexIndex(t, st, "count")
	if src == cnt || st.Vertices[src].Parallelism != 2 || st.Vertices[cnt].Parallelism != 3 {
		t.Fatalf("want a sequence vertex of parallelism 2 and a separate count vertex of parallelism 3: %s", st)
	}
	for _, tm := range c.taskManagers() {
		if tm.Slots != 2 {
			t.Fatalf("task manager %s has %d slots, want 2", tm.ID, tm.Slots)
		}
	}

	// Where each subtask ran, from the task managers' logs.
	runs := c.finishedTasks(id, c.ids...)
	where := map[[2]int]taskRun{}
	for _, r := range runs {
		k := [2]int{r.vertex, r.subtask}
		if prev, dup := where[k]; dup {
			t.Errorf("subtask %v finished twice: on %s and %s", k, prev.tm, r.tm)
		}
		where[k] = r
	}
	if len(where) != 5 {
		t.Fatalf("task managers logged %d finished subtasks, want 5 (2 sources + 3 counters): %+v", len(where), runs)
	}
	srcTMs, cntTMs := map[string]bool{}, map[string]bool{}
	var srcOut, cntIn int64
	for k, r := range where {
		switch k[0] {
		case src:
			srcTMs[r.tm] = true
			srcOut += r.recordsO
		case cnt:
			cntTMs[r.tm] = true
			cntIn += r.recordsIn
		}
	}
	t.Logf("sources ran on %v, counters on %v", slices.Sorted(maps(srcTMs)), slices.Sorted(maps(cntTMs)))
	if len(cntTMs) != 3 {
		t.Errorf("the 3 counting subtasks ran on %d task managers %v, want all 3 (the slot pool spreads subtasks)", len(cntTMs), slices.Sorted(maps(cntTMs)))
	}
	if srcOut != keys*perKey || cntIn != keys*perKey {
		t.Errorf("logged records: sources out %d, counters in %d; want %d each", srcOut, cntIn, keys*perKey)
	}
	// A counter on a task manager that runs no source got all its input over gRPC from
	// other processes.
	remoteOnly := 0
	for k, r := range where {
		if k[0] == cnt && !srcTMs[r.tm] {
			if r.recordsIn == 0 {
				t.Errorf("counter %d on %s (no source there) received no records", k[1], r.tm)
			}
			remoteOnly++
			t.Logf("counter subtask %d on %s received %d records, all from sources in other processes", k[1], r.tm, r.recordsIn)
		}
	}
	if remoteOnly == 0 {
		t.Errorf("every counter shares a process with a source; the shuffle was not shown to cross processes")
	}
}

func maps(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestTaskManagerKilledJobRestartsOnSurvivors SIGKILLs a task manager that runs a
// subtask: the jobmanager must notice by heartbeat timeout, drop it, restart the job on
// the two survivors, and the output must still be exact.
func TestTaskManagerKilledJobRestartsOnSurvivors(t *testing.T) {
	killBusyTaskManager(t, clusterOptions{taskManagers: 3, slots: 1, restartAttempts: 5}, 2000)
}

// TestLostTaskManagerDoesNotExhaustRestarts is the same fault with a small restart
// budget and a slower heartbeat timeout, as in the default configuration (3 attempts,
// 10 s): a restart must not be scheduled onto the task manager that was just lost, or
// the job burns its attempts on deployments that cannot succeed and fails although
// enough slots are free.
func TestLostTaskManagerDoesNotExhaustRestarts(t *testing.T) {
	killBusyTaskManager(t, clusterOptions{taskManagers: 3, slots: 1, restartAttempts: 2, heartbeatTimeout: "3s"}, 1000)
}

// killBusyTaskManager runs keyed-count (parallelism 2, 20 keys, 8000 records/s) on
// task managers of one slot each, SIGKILLs one that runs a subtask once the job has made
// progress, and checks that the job finishes on the survivors with exact output.
func killBusyTaskManager(t *testing.T, opts clusterOptions, perKey int) {
	const keys = 20
	c := startCluster(t, opts)
	out := filepath.Join(t.TempDir(), "out")
	id := c.submit("keyed-count", "-p", "2", "--arg", "keys="+strconv.Itoa(keys), "--arg", "per-key="+strconv.Itoa(perKey),
		"--arg", "rate=8000", "--arg", "out="+out, "--arg", "source-parallelism=2")
	var st jobStatus
	poll(t, 15*time.Second, "job "+id+" running with progress", func() (bool, string) {
		st = c.status(id)
		switch st.state() {
		case "FAILED", "CANCELED", "FINISHED":
			t.Fatalf("job ended before the fault: %s", st)
		}
		return st.state() == "RUNNING" && st.RecordsIn > 0, st.String()
	})
	if st.Attempt != 1 {
		t.Fatalf("job restarted before the fault: %s", st)
	}

	var busy []string
	for _, tm := range c.taskManagers() {
		if tm.FreeSlots == 0 {
			busy = append(busy, tm.ID)
		}
	}
	if len(busy) != 2 {
		t.Fatalf("task managers with their slot in use: %v, want 2 (parallelism 2, one slot each)", busy)
	}
	victim := busy[0]
	var survivors []string
	for _, id := range c.ids {
		if id != victim {
			survivors = append(survivors, id)
		}
	}
	t.Logf("SIGKILL %s at %d records in", victim, st.RecordsIn)
	killed := time.Now()
	c.tms[victim].kill(t)

	c.waitTaskManagers(survivors, 15*time.Second)
	t.Logf("%s gone from taskmanagers %s after the kill", victim, time.Since(killed).Round(time.Millisecond))
	// The jobmanager finds the loss by heartbeat timeout, or sooner when a restart's
	// deployment onto the dead process fails.
	lost := false
	for _, msg := range []string{"task manager lost: no heartbeat", "task manager unreachable: removing it until it registers again"} {
		for _, r := range c.jm.records(t, msg) {
			lost = lost || r.str("tm") == victim
		}
	}
	if !lost {
		t.Errorf("the jobmanager did not log %s as lost", victim)
	}

	st = c.waitState(id, "FINISHED", 60*time.Second)
	t.Logf("finished %s after the kill: %s", time.Since(killed).Round(time.Millisecond), st)
	if st.Restarts < 1 || st.Attempt < 2 {
		t.Errorf("restarts %d, attempt %d after losing a task manager; want restarts >= 1 and attempt >= 2", st.Restarts, st.Attempt)
	}
	if st.RecordsIn != num(keys*perKey) || st.RecordsOut != num(keys*perKey) {
		t.Errorf("final attempt counts records in %d, out %d; want %d each", st.RecordsIn, st.RecordsOut, keys*perKey)
	}
	// The last attempt ran, and finished, on the survivors only.
	var last []taskRun
	for _, r := range c.finishedTasks(id, c.ids...) {
		if r.attempt == int64(st.Attempt) {
			last = append(last, r)
			if r.tm == victim {
				t.Errorf("the killed %s finished a task of the last attempt: %+v", victim, r)
			}
		}
	}
	if len(last) != 4 {
		t.Errorf("last attempt %d: %d subtasks logged finished, want 4 (2 sources + 2 counters): %+v", st.Attempt, len(last), last)
	}
	verifyKeyedCount(t, out, keys, perKey)

	// At most the first restart, scheduled before the loss was known, may be deployed
	// onto the dead task manager; that failed deployment removes it for good (it does
	// not use up the restart strategy: the small budget of
	// TestLostTaskManagerDoesNotExhaustRestarts proves that).
	rounds := map[string]bool{}
	for _, r := range c.jm.records(t, "deploy failed") {
		if r.str("job") == id && r.str("tm") == victim {
			rounds[r.str("attempt")] = true
		}
	}
	if len(rounds) > 1 {
		t.Errorf("after the kill, deployments went to the dead %s in %d rounds; want at most 1", victim, len(rounds))
	}
}

// TestCLIBadInput checks that user errors end with a non-zero exit code and exactly one
// line on stderr, without a panic.
func TestCLIBadInput(t *testing.T) {
	c := startCluster(t, clusterOptions{taskManagers: 0})
	dir := t.TempDir()
	closed := freePort(t) // nothing listens there once freePort returns

	bad := filepath.Join(dir, "bad.yaml")
	spec := `name: bad-spec
parallelism: 1
operators:
  - uid: numbers
    type: sequence
    keys: 10
    perKey: 10
  - uid: doubled
    type: mapp
    input: numbers
  - uid: show
    type: print
    input: doubled
`
	if err := os.WriteFile(bad, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	badLine := 1 + slices.Index(strings.Split(spec, "\n"), "    type: mapp")

	jm := []string{"--jobmanager", c.addr}
	unknownID := "0123456789abcdef0123456789abcdef"
	cases := []struct {
		name   string
		binary string
		args   []string
		want   []string // substrings of the error line
	}{
		{"unreachable jobmanager", "streamctl", []string{"--jobmanager", "127.0.0.1:" + strconv.Itoa(closed), "list"},
			[]string{"cannot reach the jobmanager", "127.0.0.1:" + strconv.Itoa(closed)}},
		{"status of unknown job", "streamctl", append(jm, "status", unknownID), []string{unknownID}},
		{"cancel of unknown job", "streamctl", append(jm, "cancel", unknownID), []string{unknownID}},
		{"submit unknown job name", "streamctl", append(jm, "submit", "no-such-job"), []string{"no-such-job"}},
		{"submit missing spec", "streamctl", append(jm, "submit", filepath.Join(dir, "missing.yaml")), []string{"missing.yaml"}},
		{"submit invalid spec", "streamctl", append(jm, "submit", bad), []string{fmt.Sprintf("bad.yaml:%d:", badLine), "mapp"}},
		{"unknown job argument", "streamctl", append(jm, "submit", "keyed-count", "--arg", "nope=1"), []string{"nope"}},
		{"bad output format", "streamctl", append(jm, "status", unknownID, "-o", "yaml"), []string{"yaml"}},
		{"jobmanager bad duration", "jobmanager", []string{"--heartbeat.timeout=ten", "--jobmanager.rpc.port=0"}, []string{"heartbeat.timeout", "ten"}},
		{"taskmanager bad slots", "taskmanager", []string{"--taskmanager.numberOfTaskSlots=0", "--jobmanager.rpc.port=" + strconv.Itoa(closed)}, []string{"numberOfTaskSlots"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A daemon that wrongly starts is stopped by this deadline.
			ctx, cancel := context.WithTimeout(c.ctx, 20*time.Second)
			defer cancel()
			r := run(t, ctx, bin(t, tc.binary), tc.args...)
			if r.code == 0 {
				t.Fatalf("exit code 0, want non-zero\n%s", r)
			}
			if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
				t.Fatalf("stack dump on stderr\n%s", r)
			}
			line := strings.TrimSuffix(r.stderr, "\n")
			t.Logf("exit %d: %s", r.code, line)
			if line == "" || strings.Contains(line, "\n") || !strings.HasSuffix(r.stderr, "\n") {
				t.Errorf("stderr is not exactly one line\n%s", r)
			}
			if !strings.HasPrefix(line, tc.binary+": ") {
				t.Errorf("error line does not start with %q\n%s", tc.binary+": ", r)
			}
			if strings.TrimSpace(r.stdout) != "" {
				t.Errorf("unexpected output on stdout\n%s", r)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("error line does not mention %q\n%s", w, r)
				}
			}
		})
	}
}

// TestCancelViaCLI cancels an unbounded job with streamctl: the job ends CANCELED and
// every slot is free again.
func TestCancelViaCLI(t *testing.T) {
	c := startCluster(t, clusterOptions{taskManagers: 2, slots: 1})
	out := filepath.Join(t.TempDir(), "out")
	id := c.submit("keyed-count", "-p", "2", "--arg", "keys=10", "--arg", "per-key=0", "--arg", "rate=1000", "--arg", "out="+out)
	poll(t, 15*time.Second, "job "+id+" running on both task managers", func() (bool, string) {
		st := c.status(id)
		switch st.state() {
		case "FAILED", "CANCELED", "FINISHED":
			t.Fatalf("unbounded job ended: %s", st)
		}
		used := 0
		tms := c.taskManagers()
		for _, tm := range tms {
			used += tm.Slots - tm.FreeSlots
		}
		return st.state() == "RUNNING" && st.RecordsIn > 0 && used == 2, fmt.Sprintf("%s; task managers %+v", st, tms)
	})

	r := c.ctl("cancel", id)
	if r.code != 0 || !strings.Contains(r.stdout, id) {
		t.Fatalf("streamctl cancel: want exit 0 and the job ID on stdout\n%s", r)
	}
	st := c.waitState(id, "CANCELED", 15*time.Second)
	for _, v := range st.Vertices {
		for state, n := range v.TaskStates {
			switch {
			case n == 0 || state == "canceled":
			case state == "failed":
				t.Errorf("after a user cancel, vertex %s shows %d tasks failed, not canceled: %s", v.Name, n, st)
			default:
				t.Errorf("vertex %s has %d tasks %s after the job was canceled: %s", v.Name, n, state, st)
			}
		}
	}
	poll(t, 10*time.Second, "every slot free after the cancel", func() (bool, string) {
		tms := c.taskManagers()
		free := len(tms) == 2
		for _, tm := range tms {
			free = free && tm.FreeSlots == tm.Slots
		}
		return free, fmt.Sprintf("%+v", tms)
	})
	// The canceled tasks stopped: their task managers say so.
	stopped := 0
	for _, tm := range c.ids {
		for _, msg := range []string{"task canceled", "task failed"} {
			for _, rec := range c.tms[tm].records(t, msg) {
				if rec.str("job") == id {
					stopped++
					// A task may fail on its own before its cancel arrives, because
					// a neighbour went first; the jobmanager counts it as canceled
					// (checked above).
				}
			}
		}
	}
	if stopped != 4 {
		t.Errorf("task managers logged %d stopped tasks of the job, want 4 (2 sources + 2 counters)", stopped)
	}
	// An unbounded job never completes a file, and canceled sinks remove their
	// in-progress files.
	if left, _ := filepath.Glob(filepath.Join(out, "*")); len(left) > 0 {
		t.Errorf("files left in the output directory after the cancel: %v", left)
	}
	if left, _ := filepath.Glob(filepath.Join(out, ".*")); len(left) > 0 {
		t.Errorf("in-progress files left after the cancel: %v", left)
	}

	// Canceling again is a one-line error.
	r = c.ctl("cancel", id)
	if r.code == 0 || strings.Count(strings.TrimSuffix(r.stderr, "\n"), "\n") != 0 || !strings.Contains(r.stderr, "cancel") {
		t.Errorf("second cancel: want a non-zero exit and one line saying the job is already canceled\n%s", r)
	}
}

// TestGracefulShutdownOnSIGTERM sends SIGTERM to a task manager that runs a task: it
// exits 0 within a few seconds and unregisters, so it disappears from taskmanagers at
// once rather than after the (long) heartbeat timeout; its job restarts on the other
// task manager.
func TestGracefulShutdownOnSIGTERM(t *testing.T) {
	c := startCluster(t, clusterOptions{taskManagers: 2, slots: 1, heartbeatTimeout: "60s"})
	id := c.submit("keyed-count", "-p", "1", "--arg", "keys=10", "--arg", "per-key=0", "--arg", "rate=1000", "--arg", "out="+t.TempDir())
	c.waitState(id, "RUNNING", 15*time.Second)
	var victim, survivor string
	poll(t, 10*time.Second, "the job's slot in use", func() (bool, string) {
		tms := c.taskManagers()
		victim, survivor = "", ""
		for _, tm := range tms {
			if tm.FreeSlots == 0 {
				victim = tm.ID
			} else {
				survivor = tm.ID
			}
		}
		return victim != "" && survivor != "", fmt.Sprintf("%+v", tms)
	})

	p := c.tms[victim]
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s still running 5s after SIGTERM", victim)
	}
	exitedAfter := time.Since(sent)
	if code := p.exitCode(); code != 0 {
		t.Errorf("%s exited with code %d after SIGTERM, want 0 (%v)", victim, code, p.waitErr)
	}
	// The heartbeat timeout is 60s: only its unregistration removes it within 2s.
	c.waitTaskManagers([]string{survivor}, 2*time.Second)
	t.Logf("%s exited %s after SIGTERM and is gone from taskmanagers %s after it", victim,
		exitedAfter.Round(time.Millisecond), time.Since(sent).Round(time.Millisecond))
	unregistered := false
	for _, r := range c.jm.records(t, "task manager unregistered") {
		unregistered = unregistered || r.str("tm") == victim
	}
	if !unregistered {
		t.Errorf("the jobmanager did not log %s as unregistered", victim)
	}
	if !strings.Contains(p.log(t), `"shutting down: canceling tasks"`) {
		t.Errorf("%s did not log its shutdown", victim)
	}

	// The job goes on, on the survivor.
	poll(t, 15*time.Second, "job "+id+" running again on "+survivor, func() (bool, string) {
		st := c.status(id)
		switch st.state() {
		case "FAILED", "CANCELED", "FINISHED":
			t.Fatalf("job ended after the graceful shutdown of %s: %s", victim, st)
		}
		tms := c.taskManagers()
		return st.state() == "RUNNING" && st.Attempt >= 2 && len(tms) == 1 && tms[0].FreeSlots == 0,
			fmt.Sprintf("%s; task managers %+v", st, tms)
	})
}
