package e2e

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// High availability against the real binaries: an external etcd (Debian's etcd-server),
// two jobmanagers on it (one leads, one waits) and task managers that find the leader
// through etcd. Faults: the leader is SIGKILLed; etcd is paused (SIGSTOP) for less and
// for more than the leadership lease.

// etcdBinary is Debian's etcd, or the test skips.
func etcdBinary(t *testing.T) string {
	t.Helper()
	bin(t, "jobmanager") // skips under -short
	const etcd = "/usr/bin/etcd"
	if _, err := os.Stat(etcd); err != nil {
		t.Skipf("skipping: %s not found (apt-get install etcd-server; scripts/install-deps.sh does)", etcd)
	}
	return etcd
}

// haCluster is an external etcd, jobmanagers and task managers. Its cluster view (c)
// talks to the current leader: c.addr follows it.
type haCluster struct {
	c        *cluster
	etcd     *proc
	etcdURL  string
	jms      map[string]*proc // by address
	jmOrder  []string         // addresses in start order
	jmArgs   []string
	leaseTTL string
}

// startEtcd starts /usr/bin/etcd on free loopback ports with the limits Sluice needs and
// waits until it is healthy. It is continued (SIGCONT) and stopped when the test ends.
func (h *haCluster) startEtcd(t *testing.T) {
	t.Helper()
	client := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	peer := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
	h.etcdURL = client
	h.etcd = startProc(t, h.c.ctx, h.c.dir, "etcd", etcdBinary(t),
		"--name", "sluice", "--data-dir", filepath.Join(h.c.dir, "etcd-data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "sluice="+peer,
		"--max-txn-ops", "10000", "--max-request-bytes", strconv.Itoa(8<<20),
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn")
	// Runs before the stop (cleanups are last-in first-out): a paused etcd would sit out
	// its SIGTERM.
	t.Cleanup(func() { h.signalEtcd(t, syscall.SIGCONT) })
	hc := &http.Client{Timeout: time.Second}
	poll(t, 20*time.Second, "etcd healthy at "+client, func() (bool, string) {
		if h.etcd.exited() {
			t.Fatalf("etcd exited (exit %d)", h.etcd.exitCode())
		}
		resp, err := hc.Get(client + "/health")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	})
}

func (h *haCluster) signalEtcd(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if !h.etcd.exited() {
		if err := h.etcd.cmd.Process.Signal(sig); err != nil {
			t.Errorf("signal etcd: %v", err)
		}
	}
}

// haArgs are the flags that put a daemon on the test's etcd.
func (h *haCluster) haArgs() []string {
	return []string{
		"--high-availability.etcd.endpoints=" + h.etcdURL,
		"--high-availability.cluster-id=e2e",
		"--high-availability.etcd.lease-ttl=" + h.leaseTTL,
		"--high-availability.etcd.request-timeout=1s",
		"--heartbeat.timeout=" + h.c.opts.heartbeatTimeout,
		"--log-format=json",
	}
}

// startJobManager starts one more jobmanager on the etcd.
func (h *haCluster) startJobManager(t *testing.T) *proc {
	t.Helper()
	port := freePort(t)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	name := fmt.Sprintf("jobmanager-%d", len(h.jmOrder)+1)
	p := startProc(t, h.c.ctx, h.c.dir, name, bin(t, "jobmanager"), append(append(h.haArgs(),
		"--jobmanager.rpc.port="+strconv.Itoa(port),
		"--heartbeat.interval=100ms",
		"--restart-strategy.type=fixed-delay",
		"--restart-strategy.fixed-delay.attempts=10",
		"--restart-strategy.fixed-delay.delay=200ms",
	), h.jmArgs...)...)
	h.jms[addr] = p
	h.jmOrder = append(h.jmOrder, addr)
	return p
}

// startTaskManager starts a task manager that finds the leader through etcd.
func (h *haCluster) startTaskManager(t *testing.T, id string, slots int) {
	t.Helper()
	h.c.tms[id] = startProc(t, h.c.ctx, h.c.dir, id, bin(t, "taskmanager"), append(h.haArgs(),
		"--taskmanager.numberOfTaskSlots="+strconv.Itoa(slots),
		"--taskmanager.resource-id="+id,
	)...)
	h.c.ids = append(h.c.ids, id)
}

// startHACluster starts etcd, jobManagers jobmanagers (waiting for one to lead) and
// taskManagers task managers of slots each (waiting until they registered with it).
func startHACluster(t *testing.T, jobManagers, taskManagers, slots int, leaseTTL string, jmArgs ...string) *haCluster {
	t.Helper()
	h := &haCluster{
		c:        &cluster{t: t, ctx: testContext(t), dir: t.TempDir(), tms: map[string]*proc{}, opts: clusterOptions{heartbeatTimeout: "1s"}},
		jms:      map[string]*proc{},
		jmArgs:   jmArgs,
		leaseTTL: leaseTTL,
	}
	h.startEtcd(t)
	for i := 0; i < jobManagers; i++ {
		h.startJobManager(t)
	}
	h.waitLeader(t, "", 20*time.Second)
	for i := 1; i <= taskManagers; i++ {
		h.startTaskManager(t, fmt.Sprintf("tm-%d", i), slots)
	}
	h.c.waitTaskManagers(h.c.ids, 20*time.Second)
	return h
}

// waitLeader polls the running jobmanagers other than skip until one answers streamctl
// (a standby refuses, naming the leader) and points the cluster view at it.
func (h *haCluster) waitLeader(t *testing.T, skip string, timeout time.Duration) string {
	t.Helper()
	var leader string
	poll(t, timeout, "a jobmanager leading", func() (bool, string) {
		var seen []string
		for _, addr := range h.jmOrder {
			p := h.jms[addr]
			if addr == skip || p.exited() {
				continue
			}
			r := run(t, h.c.ctx, bin(t, "streamctl"), "--jobmanager", addr, "--timeout", "2s", "list", "-o", "json")
			if r.code == 0 {
				leader = addr
				return true, ""
			}
			seen = append(seen, fmt.Sprintf("%s: %s", addr, strings.TrimSpace(r.stderr)))
		}
		return false, strings.Join(seen, "; ")
	})
	h.c.addr = leader
	return leader
}

// runUntilCheckpoint submits keyed-count with the exactly-once file sink and waits until
// it runs with at least n completed checkpoints.
func (h *haCluster) runUntilCheckpoint(t *testing.T, keys, perKey, rate int, out string, n int) (string, jobStatus) {
	t.Helper()
	id := h.c.submit("keyed-count", "-p", "2", "--arg", "keys="+strconv.Itoa(keys), "--arg", "per-key="+strconv.Itoa(perKey),
		"--arg", "rate="+strconv.Itoa(rate), "--arg", "out="+out, "--arg", "source-parallelism=2")
	var st jobStatus
	poll(t, 30*time.Second, fmt.Sprintf("job %s running with %d checkpoints", id, n), func() (bool, string) {
		st = h.c.status(id)
		switch st.state() {
		case "FINISHED", "FAILED", "CANCELED":
			t.Fatalf("job ended too early (give it more records): %s", st)
		}
		return st.state() == "RUNNING" && st.LatestCheckpointID >= num(n), st.String()
	})
	return id, st
}

// waitRecovered waits until the job runs again on the current leader, in an attempt
// above before's, restored from a checkpoint.
func (h *haCluster) waitRecovered(t *testing.T, id string, before jobStatus, timeout time.Duration) jobStatus {
	t.Helper()
	var st jobStatus
	poll(t, timeout, "job "+id+" recovered by the new leader", func() (bool, string) {
		st = h.c.status(id)
		switch st.state() {
		case "FAILED", "CANCELED":
			t.Fatalf("job ended %s after the takeover: %s", st.state(), st)
		}
		return (st.state() == "RUNNING" || st.state() == "FINISHED") && st.Attempt > before.Attempt && st.Restores >= 1, st.String()
	})
	return st
}

// checkExactlyOnce waits for the job to finish and checks its committed output.
func (h *haCluster) checkExactlyOnce(t *testing.T, id, out string, keys, perKey int, timeout time.Duration) jobStatus {
	t.Helper()
	final := h.c.waitState(id, "FINISHED", timeout)
	r := checkCommittedOutput(t, out, keys, perKey)
	if !r.exactlyOnce(keys, perKey) {
		t.Fatalf("committed output in %s is not exactly once (want %d lines = %d keys x %d): %s", out, keys*perKey, keys, perKey, r)
	}
	t.Logf("output exactly once: %s", r)
	return final
}

// TestJobManagerFailover: the leading jobmanager is SIGKILLed while a checkpointed
// keyed-count job runs. After the lease expires the standby leads: it lists the job
// canceled earlier as CANCELED, recovers the running one from etcd (a higher attempt,
// restored from the latest checkpoint recorded there), the task managers register with
// it, and the job finishes with exactly-once output.
func TestJobManagerFailover(t *testing.T) {
	root := t.TempDir()
	h := startHACluster(t, 2, 2, 2, "3s", checkpointArgs(root, "200ms")...)
	first := h.c.addr

	canceled := h.c.submit("keyed-count", "--arg", "keys=4", "--arg", "per-key=0", "--arg", "rate=100", "--arg", "out="+t.TempDir())
	h.c.waitState(canceled, "RUNNING", 20*time.Second)
	h.c.mustCtl("cancel", canceled)
	h.c.waitState(canceled, "CANCELED", 20*time.Second)

	const keys, perKey = 20, 1000
	out := filepath.Join(t.TempDir(), "out")
	id, before := h.runUntilCheckpoint(t, keys, perKey, 2000, out, 3)
	killed := time.Now()
	h.jms[first].kill(t)
	t.Logf("SIGKILLed the leader %s: %s", first, before)

	next := h.waitLeader(t, first, 30*time.Second)
	t.Logf("%s leads %s after the kill", next, time.Since(killed).Round(time.Millisecond))
	if st := h.c.status(canceled); st.state() != "CANCELED" {
		t.Errorf("the job canceled before the takeover is %s after it, want CANCELED", st.state())
	}
	var list struct {
		Jobs []jobStatus `json:"jobs"`
	}
	decodeJSON(t, h.c.ctl("list", "-o", "json"), &list)
	if len(list.Jobs) != 2 || list.Jobs[0].JobID != canceled || list.Jobs[1].JobID != id {
		t.Errorf("streamctl list after the takeover shows %v; want the canceled job, then the running one", list.Jobs)
	}
	rec := h.waitRecovered(t, id, before, 30*time.Second)
	t.Logf("recovered %s after the kill: %s", time.Since(killed).Round(time.Millisecond), rec)
	h.c.waitTaskManagers(h.c.ids, 10*time.Second)

	final := h.checkExactlyOnce(t, id, out, keys, perKey, 60*time.Second)
	if final.LatestCheckpointID <= before.LatestCheckpointID {
		t.Errorf("latest checkpoint %d at the end, want above %d (IDs go on increasing)", final.LatestCheckpointID, before.LatestCheckpointID)
	}
	jm := h.jms[next]
	if n := len(jm.records(t, "job recovered")); n != 1 {
		t.Errorf("the new leader logged %d jobs recovered, want 1 (the canceled one is only listed)", n)
	}
	restored := jm.records(t, "restoring from checkpoint")
	if len(restored) == 0 || restored[0].int("checkpoint") < int64(before.LatestCheckpointID) {
		t.Errorf("the new leader restored %v; want the latest checkpoint (>= %d) first", restored, before.LatestCheckpointID)
	}
}

// TestEtcdShortOutage: etcd is paused (SIGSTOP) for 4 s, longer than the request timeout
// (1 s) but shorter than the leadership lease (10 s). Checkpoints stall and resume when
// etcd is back; the job neither fails over nor restarts, the jobmanager keeps leading,
// and the output is exactly once.
func TestEtcdShortOutage(t *testing.T) {
	root := t.TempDir()
	h := startHACluster(t, 1, 2, 2, "10s", checkpointArgs(root, "200ms")...)
	const keys, perKey = 20, 1000
	out := filepath.Join(t.TempDir(), "out")
	id, before := h.runUntilCheckpoint(t, keys, perKey, 1500, out, 3)

	h.signalEtcd(t, syscall.SIGSTOP)
	paused := time.Now()
	var during jobStatus
	for time.Since(paused) < 4*time.Second {
		// The jobmanager answers without etcd, and the job keeps running.
		during = h.c.status(id)
		if during.state() != "RUNNING" || during.Attempt != before.Attempt {
			h.signalEtcd(t, syscall.SIGCONT)
			t.Fatalf("during the etcd outage: %s; want the attempt of %s running on", during, before)
		}
		time.Sleep(200 * time.Millisecond)
	}
	h.signalEtcd(t, syscall.SIGCONT)
	t.Logf("etcd paused for %s; during the pause: %s", time.Since(paused).Round(time.Millisecond), during)

	var after jobStatus
	poll(t, 20*time.Second, "checkpoints completing again after the outage", func() (bool, string) {
		after = h.c.status(id)
		return after.LatestCheckpointID > during.LatestCheckpointID+1, after.String()
	})
	final := h.checkExactlyOnce(t, id, out, keys, perKey, 60*time.Second)
	if final.Attempt != before.Attempt || final.Restarts != 0 {
		t.Errorf("the job restarted during the outage: %s (before: %s)", final, before)
	}
	jm := h.jms[h.c.addr]
	if jm.exited() {
		t.Fatalf("the jobmanager exited (exit %d)", jm.exitCode())
	}
	delayed := len(jm.records(t, "etcd unavailable: retrying the checkpoint's record while this jobmanager leads")) +
		len(jm.records(t, "cannot allocate a checkpoint ID; retrying"))
	if delayed == 0 {
		t.Errorf("the jobmanager logged no checkpoint delayed by etcd")
	}
	for _, msg := range []string{"too many failed checkpoints: failing the job over", "lost leadership"} {
		if n := len(jm.records(t, msg)); n > 0 {
			t.Errorf("the jobmanager logged %q %d times", msg, n)
		}
	}
}

// TestEtcdLongOutage: etcd is paused for 7 s, longer than the leadership lease (3 s). The
// leader cannot renew its lease: it stops (exit 1, "lost leadership"). When etcd is back
// the standby leads, recovers the job from its last checkpoint recorded before the
// outage, and the job finishes with exactly-once output.
func TestEtcdLongOutage(t *testing.T) {
	root := t.TempDir()
	h := startHACluster(t, 2, 2, 2, "3s", checkpointArgs(root, "200ms")...)
	first := h.c.addr
	const keys, perKey = 20, 1200
	out := filepath.Join(t.TempDir(), "out")
	id, before := h.runUntilCheckpoint(t, keys, perKey, 1500, out, 3)

	h.signalEtcd(t, syscall.SIGSTOP)
	paused := time.Now()
	poll(t, 20*time.Second, "the leader to stop without etcd", func() (bool, string) {
		return h.jms[first].exited(), "still running"
	})
	stopped := time.Since(paused)
	if elapsed := time.Since(paused); elapsed < 7*time.Second {
		// Hold the outage to its full length (more than twice the lease).
		time.Sleep(7*time.Second - elapsed)
	}
	h.signalEtcd(t, syscall.SIGCONT)
	t.Logf("etcd paused for %s; the leader stopped after %s (exit %d)", time.Since(paused).Round(time.Millisecond), stopped.Round(time.Millisecond), h.jms[first].exitCode())
	if code := h.jms[first].exitCode(); code != 1 {
		t.Errorf("the leader exited with %d, want 1", code)
	}
	if len(h.jms[first].records(t, "lost leadership")) == 0 {
		t.Errorf("the leader did not log that it lost its leadership")
	}

	h.waitLeader(t, first, 30*time.Second)
	rec := h.waitRecovered(t, id, before, 30*time.Second)
	t.Logf("recovered %s after etcd was paused: %s", time.Since(paused).Round(time.Millisecond), rec)
	h.checkExactlyOnce(t, id, out, keys, perKey, 60*time.Second)
}
