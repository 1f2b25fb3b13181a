package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// stopGrace is how long a process may take to exit after SIGTERM before SIGKILL.
	stopGrace = 5 * time.Second
	// pollInterval is the pause between two looks at the cluster.
	pollInterval = 50 * time.Millisecond
	// tailLines is how much of each process log a failing test prints.
	tailLines = 60
)

// testContext is bounded by the test binary's deadline (minus time to clean up), so a
// hung process is killed before go test gives up and loses its logs.
func testContext(t *testing.T) context.Context {
	t.Helper()
	deadline, ok := t.Deadline()
	if !ok {
		deadline = time.Now().Add(10 * time.Minute)
	}
	deadline = deadline.Add(-min(15*time.Second, time.Until(deadline)/4))
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	t.Cleanup(cancel)
	return ctx
}

// ---- processes ----

// proc is one daemon process whose stdout and stderr go to logPath.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process has been waited for
	waitErr error
}

// startProc starts binary with args; its output goes to <dir>/<name>.log. The process
// is stopped (SIGTERM, SIGKILL after stopGrace) and waited for when the test ends, and
// the tail of its log is printed if the test failed.
func startProc(t *testing.T, ctx context.Context, dir, name, binary string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close() // the child has its own descriptor once started
	fmt.Fprintf(f, "### %s %s\n", filepath.Base(binary), strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = processEnv()
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = stopGrace
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	// Cleanups run last-in first-out: stop the process first, then print its log.
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("SLUICE_E2E_LOGS") != "" {
			t.Logf("---- last %d lines of %s (%s) ----\n%s", tailLines, p.name, p.logPath, tail(p.logPath, tailLines))
		}
	})
	t.Cleanup(p.stop)
	return p
}

// processEnv is this process's environment without settings that would redirect the
// binaries elsewhere.
func processEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			env = append(env, kv)
		}
	}
	return env
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// exitCode is the exit code of an exited process (-1 when killed by a signal).
func (p *proc) exitCode() int { return p.cmd.ProcessState.ExitCode() }

// stop sends SIGTERM, then SIGKILL after stopGrace, and waits.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// kill sends SIGKILL and waits.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("kill %s: %v", p.name, err)
	}
	<-p.done
}

// log returns the process's log so far.
func (p *proc) log(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("[... %d earlier lines]", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	for i, l := range lines {
		if len(l) > 600 {
			lines[i] = l[:600] + "..."
		}
	}
	return strings.Join(lines, "\n")
}

// logRecord is one line of a daemon's JSON log (slog's JSON handler).
type logRecord map[string]any

func (r logRecord) str(k string) string {
	switch v := r[k].(type) {
	case string:
		return v
	case float64:
		return strconv.FormatInt(int64(v), 10)
	case nil:
		return ""
	default:
		return fmt.Sprint(v)
	}
}

func (r logRecord) int(k string) int64 {
	n, _ := strconv.ParseInt(r.str(k), 10, 64)
	return n
}

// records parses the JSON lines of the process's log with the given message.
func (p *proc) records(t *testing.T, msg string) []logRecord {
	t.Helper()
	var out []logRecord
	sc := bufio.NewScanner(strings.NewReader(p.log(t)))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.HasPrefix(line, []byte("{")) {
			continue
		}
		var r logRecord
		if json.Unmarshal(line, &r) == nil && r.str("msg") == msg {
			out = append(out, r)
		}
	}
	return out
}

// ---- running the CLI ----

type cliResult struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r cliResult) String() string {
	return fmt.Sprintf("%s: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// run runs a binary to completion and returns its output and exit code.
func run(t *testing.T, ctx context.Context, binary string, args ...string) cliResult {
	t.Helper()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = processEnv()
	cmd.WaitDelay = stopGrace
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{args: append([]string{filepath.Base(binary)}, args...), stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	default:
		t.Fatalf("run %s: %v", strings.Join(res.args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("%s: did not exit before its deadline (killed)\n%s", strings.Join(res.args, " "), res)
	}
	return res
}

// ---- the cluster ----

type clusterOptions struct {
	taskManagers int
	slots        int
	// heartbeatTimeout of the jobmanager and the task managers (default 1s).
	heartbeatTimeout string
	// restartAttempts of the fixed-delay restart strategy (default 5).
	restartAttempts int
	// jobManagerArgs are extra jobmanager flags (e.g. checkpointing settings).
	jobManagerArgs []string
	// localState gives each task manager its own local recovery root,
	// <cluster dir>/local-<id>, which a restart of that ID finds again.
	localState bool
}

// cluster is a jobmanager and task managers, each its own process, on loopback.
type cluster struct {
	t    *testing.T
	ctx  context.Context
	dir  string
	addr string // the jobmanager's host:port
	port int
	jm   *proc
	tms  map[string]*proc
	ids  []string // task manager IDs in start order
	opts clusterOptions
	// tmArgs are each task manager's arguments, for restartTaskManager.
	tmArgs map[string][]string
}

// startCluster starts a jobmanager and opts.taskManagers task managers (tm-1, tm-2,
// ...) and waits until streamctl lists them all.
func startCluster(t *testing.T, opts clusterOptions) *cluster {
	t.Helper()
	if opts.heartbeatTimeout == "" {
		opts.heartbeatTimeout = "1s"
	}
	if opts.restartAttempts == 0 {
		opts.restartAttempts = 5
	}
	c := &cluster{t: t, ctx: testContext(t), dir: t.TempDir(), tms: map[string]*proc{}, opts: opts}
	jobmanager := bin(t, "jobmanager")
	// The port is picked free and released again; should another process take it in
	// between, the jobmanager exits and we try another.
	for try := 1; ; try++ {
		c.port = freePort(t)
		c.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(c.port))
		c.jm = startProc(t, c.ctx, c.dir, fmt.Sprintf("jobmanager-%d", try), jobmanager, append([]string{
			"--jobmanager.rpc.port=" + strconv.Itoa(c.port),
			"--heartbeat.interval=100ms",
			"--heartbeat.timeout=" + opts.heartbeatTimeout,
			"--restart-strategy.type=fixed-delay",
			"--restart-strategy.fixed-delay.attempts=" + strconv.Itoa(opts.restartAttempts),
			"--restart-strategy.fixed-delay.delay=200ms",
			"--log-format=json",
		}, opts.jobManagerArgs...)...,
		)
		if c.waitJobManager() {
			break
		}
		if try == 3 || !strings.Contains(c.jm.log(t), "listen on") {
			t.Fatalf("jobmanager exited at start (exit %d)", c.jm.exitCode())
		}
	}
	for i := 1; i <= opts.taskManagers; i++ {
		c.startTaskManager(fmt.Sprintf("tm-%d", i), opts.slots, opts.heartbeatTimeout)
	}
	c.waitTaskManagers(c.ids, 15*time.Second)
	return c
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitJobManager waits until the jobmanager answers streamctl; false if it exited.
func (c *cluster) waitJobManager() bool {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c.jm.exited() {
			return false
		}
		r := c.ctl("list", "-o", "json")
		if r.code == 0 {
			return true
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("jobmanager at %s does not answer: %s", c.addr, r)
		}
		time.Sleep(pollInterval)
	}
}

// startTaskManager starts a task manager process with the given ID.
func (c *cluster) startTaskManager(id string, slots int, heartbeatTimeout string) *proc {
	c.t.Helper()
	args := []string{
		"--jobmanager.rpc.port=" + strconv.Itoa(c.port),
		"--taskmanager.numberOfTaskSlots=" + strconv.Itoa(slots),
		"--taskmanager.resource-id=" + id,
		"--heartbeat.timeout=" + heartbeatTimeout,
		"--log-format=json",
	}
	if c.opts.localState {
		args = append(args, "--taskmanager.state.local.root-dirs="+c.localStateDir(id))
	}
	if c.tmArgs == nil {
		c.tmArgs = map[string][]string{}
	}
	c.tmArgs[id] = args
	p := startProc(c.t, c.ctx, c.dir, id, bin(c.t, "taskmanager"), args...)
	c.tms[id] = p
	c.ids = append(c.ids, id)
	return p
}

// localStateDir is task manager id's local recovery root (clusterOptions.localState).
func (c *cluster) localStateDir(id string) string { return filepath.Join(c.dir, "local-"+id) }

// restartTaskManager starts task manager id again, with the same arguments (and so the
// same local recovery root), after its process exited; its log continues in the same
// file.
func (c *cluster) restartTaskManager(id string) *proc {
	c.t.Helper()
	if old := c.tms[id]; old == nil || !old.exited() {
		c.t.Fatalf("restart %s: it is not a task manager that exited", id)
	}
	p := startProc(c.t, c.ctx, c.dir, id, bin(c.t, "taskmanager"), c.tmArgs[id]...)
	c.tms[id] = p
	return p
}

// ctl runs streamctl against the cluster's jobmanager.
func (c *cluster) ctl(args ...string) cliResult {
	c.t.Helper()
	return run(c.t, c.ctx, bin(c.t, "streamctl"), append([]string{"--jobmanager", c.addr}, args...)...)
}

// mustCtl runs streamctl and fails the test unless it exits 0; it returns stdout.
func (c *cluster) mustCtl(args ...string) string {
	c.t.Helper()
	r := c.ctl(args...)
	if r.code != 0 {
		c.t.Fatalf("%s", r)
	}
	return r.stdout
}

// submit submits with streamctl and returns the job ID it printed.
func (c *cluster) submit(args ...string) string {
	c.t.Helper()
	out := strings.TrimSpace(c.mustCtl(append([]string{"submit"}, args...)...))
	if len(out) != 32 || strings.Trim(out, "0123456789abcdef") != "" {
		c.t.Fatalf("streamctl submit printed %q, want a job ID (32 hex digits)", out)
	}
	return out
}

// num is an integer that protobuf's JSON mapping may quote (int64 fields are strings).
type num int64

func (n *num) UnmarshalJSON(b []byte) error {
	v, err := strconv.ParseInt(strings.Trim(string(b), `"`), 10, 64)
	*n = num(v)
	return err
}

type jobStatus struct {
	JobID      string         `json:"job_id"`
	Name       string         `json:"name"`
	State      string         `json:"state"`
	Attempt    num            `json:"attempt"`
	Restarts   num            `json:"restarts"`
	Failure    string         `json:"failure"`
	RecordsIn  num            `json:"records_in"`
	RecordsOut num            `json:"records_out"`
	Vertices   []vertexStatus `json:"vertices"`
	// LatestCheckpointID is the latest completed checkpoint (0: none).
	LatestCheckpointID num `json:"latest_checkpoint_id"`
	// Restores counts the restarts that restored state from a checkpoint.
	Restores num `json:"restores"`
	// RestoredLocalBytes and RestoredRemoteBytes: what the current attempt's keyed
	// state backends read from local recovery copies and from the checkpoint storage.
	RestoredLocalBytes  num `json:"restored_local_bytes"`
	RestoredRemoteBytes num `json:"restored_remote_bytes"`
	MaxParallelism      int `json:"max_parallelism"`
	// SavepointPath is the savepoint the job ended with (stop, cancel with savepoint).
	SavepointPath string `json:"savepoint_path"`
}

type vertexStatus struct {
	Name        string         `json:"name"`
	Parallelism int            `json:"parallelism"`
	TaskStates  map[string]int `json:"task_states"`
	RecordsIn   num            `json:"records_in"`
	RecordsOut  num            `json:"records_out"`
}

// state is the job state's short name, e.g. RUNNING.
func (s jobStatus) state() string { return strings.TrimPrefix(s.State, "JOB_STATE_") }

func (s jobStatus) String() string {
	var vs []string
	for _, v := range s.Vertices {
		vs = append(vs, fmt.Sprintf("%s p=%d %v in=%d out=%d", v.Name, v.Parallelism, v.TaskStates, v.RecordsIn, v.RecordsOut))
	}
	return fmt.Sprintf("job %s %s attempt %d restarts %d restores %d checkpoint %d records in/out %d/%d failure %q vertices [%s]",
		s.JobID, s.state(), s.Attempt, s.Restarts, s.Restores, s.LatestCheckpointID, s.RecordsIn, s.RecordsOut, s.Failure, strings.Join(vs, "; "))
}

type tmInfo struct {
	ID        string `json:"id"`
	Address   string `json:"address"`
	Slots     int    `json:"slots"`
	FreeSlots int    `json:"free_slots"`
	Alive     bool   `json:"alive"`
}

func decodeJSON(t *testing.T, r cliResult, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
		t.Fatalf("%s\ndecode JSON: %v", r, err)
	}
}

// status is `streamctl status ID -o json`.
func (c *cluster) status(id string) jobStatus {
	c.t.Helper()
	r := c.ctl("status", id, "-o", "json")
	if r.code != 0 {
		c.t.Fatalf("%s", r)
	}
	var st jobStatus
	decodeJSON(c.t, r, &st)
	return st
}

// taskManagers is `streamctl taskmanagers -o json`.
func (c *cluster) taskManagers() []tmInfo {
	c.t.Helper()
	r := c.ctl("taskmanagers", "-o", "json")
	if r.code != 0 {
		c.t.Fatalf("%s", r)
	}
	var resp struct {
		TaskManagers []tmInfo `json:"task_managers"`
	}
	decodeJSON(c.t, r, &resp)
	return resp.TaskManagers
}

func tmIDs(tms []tmInfo) []string {
	ids := make([]string, 0, len(tms))
	for _, tm := range tms {
		ids = append(ids, tm.ID)
	}
	slices.Sort(ids)
	return ids
}

// waitTaskManagers polls until exactly the given task managers are registered.
func (c *cluster) waitTaskManagers(want []string, timeout time.Duration) []tmInfo {
	c.t.Helper()
	want = slices.Sorted(slices.Values(want))
	var tms []tmInfo
	poll(c.t, timeout, fmt.Sprintf("task managers %v registered", want), func() (bool, string) {
		c.t.Helper()
		tms = c.taskManagers()
		return slices.Equal(tmIDs(tms), want), fmt.Sprintf("registered: %v", tmIDs(tms))
	})
	return tms
}

// waitState polls the job until it is in state want. It fails at once when the job
// ends in another state.
func (c *cluster) waitState(id, want string, timeout time.Duration) jobStatus {
	c.t.Helper()
	var st jobStatus
	poll(c.t, timeout, "job "+id+" "+want, func() (bool, string) {
		c.t.Helper()
		st = c.status(id)
		if st.state() == want {
			return true, ""
		}
		switch st.state() {
		case "FINISHED", "FAILED", "CANCELED":
			c.t.Fatalf("job ended %s, want %s: %s", st.state(), want, st)
		}
		return false, st.String()
	})
	return st
}

// poll calls cond every pollInterval until it returns true, failing the test after
// timeout with cond's last description of what it saw.
func poll(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	start := time.Now()
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Since(start) > timeout {
			t.Fatalf("waited %s for %s; last seen: %s", timeout, what, last)
		}
		time.Sleep(pollInterval)
	}
}
