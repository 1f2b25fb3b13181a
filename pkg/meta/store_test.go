package meta_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/sluice-stream/sluice/pkg/meta"
	"github.com/sluice-stream/sluice/pkg/meta/embedded"
)

// The suite against the embedded server.
func TestStoreEmbedded(t *testing.T) {
	srv := newEmbedded(t, t.TempDir(), "", "", true)
	runStoreSuite(t, srv.endpoints())
}

// The same suite against Debian's etcd (package etcd-server) run as a process.
func TestStoreExternalEtcd(t *testing.T) {
	bin := externalEtcdBinary(t)
	srv := newExternal(t, bin, t.TempDir())
	runStoreSuite(t, srv.endpoints())
}

func TestOutageEmbedded(t *testing.T) {
	srv := newEmbedded(t, t.TempDir(), "", "", false)
	runOutage(t, srv)
}

func TestOutageExternalEtcd(t *testing.T) {
	bin := externalEtcdBinary(t)
	runOutage(t, newExternal(t, bin, t.TempDir()))
}

func TestLongOutageEmbedded(t *testing.T) {
	runLongOutage(t, newEmbedded(t, t.TempDir(), "", "", false))
}

func TestLongOutageExternalEtcd(t *testing.T) {
	bin := externalEtcdBinary(t)
	runLongOutage(t, newExternal(t, bin, t.TempDir()))
}

// runLongOutage: an etcd outage longer than the lease TTL ends the leadership (Done);
// after etcd is back the process campaigns again and leads with a new fencing token,
// and the old Leadership can write nothing.
func runLongOutage(t *testing.T, srv server) {
	ctx := ctxFor(t, 60*time.Second)
	c := &cluster{endpoints: srv.endpoints(), prefix: "/sluice/long-outage/"}
	s := c.connect(t, meta.WithRequestTimeout(time.Second), meta.WithLeaseTTL(2*time.Second))
	l := campaign(t, s, "jm-1")
	if err := s.PutJob(ctx, l, "job-1", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	srv.stop(t)
	select {
	case <-l.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("leadership not lost during an outage longer than the lease TTL")
	}
	srv.start(t)
	l2, err := s.Campaign(ctx, "jm-1")
	if err != nil {
		t.Fatal(err)
	}
	if l2.Revision() <= l.Revision() {
		t.Fatalf("new fencing revision %d not above %d", l2.Revision(), l.Revision())
	}
	if err := s.PutJob(ctx, l, "job-1", []byte("stale")); !errors.Is(err, meta.ErrNotLeader) {
		t.Fatalf("write with the lost leadership: %v, want ErrNotLeader", err)
	}
	if rec, err := s.GetJob(ctx, "job-1"); err != nil || string(rec) != "v1" {
		t.Fatalf("job record %q, %v", rec, err)
	}
	if err := s.PutJob(ctx, l2, "job-1", []byte("v2")); err != nil {
		t.Fatal(err)
	}
}

func TestConnectFails(t *testing.T) {
	ctx := ctxFor(t, 10*time.Second)
	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	if _, err := meta.Connect(ctx, []string{"http://" + addr}, "/sluice/x/", nil, meta.WithDialTimeout(500*time.Millisecond)); err == nil {
		t.Fatal("Connect to a closed port succeeded")
	}
	if _, err := meta.Connect(ctx, nil, "/sluice/x/", nil); err == nil {
		t.Fatal("Connect without endpoints succeeded")
	}
	if _, err := meta.Connect(ctx, []string{"http://" + addr}, "", nil); err == nil {
		t.Fatal("Connect without prefix succeeded")
	}
}

// server is an etcd that a test can stop and start again on the same data and URLs.
type server interface {
	endpoints() []string
	stop(t *testing.T)
	start(t *testing.T)
}

// runOutage: etcd goes away while the leader works. Writes fail (ErrOutcomeUnknown or a
// clear read error), never silently; after etcd is back on the same data the store
// reconnects by itself, the leadership survives an outage shorter than its lease TTL,
// the writes can be retried, and nothing committed before is lost.
func runOutage(t *testing.T, srv server) {
	ctx := ctxFor(t, 60*time.Second)
	c := &cluster{endpoints: srv.endpoints(), prefix: "/sluice/outage/"}
	s := c.connect(t, meta.WithRequestTimeout(time.Second), meta.WithLeaseTTL(30*time.Second))
	l := campaign(t, s, "jm-1")
	if err := s.PutJob(ctx, l, "job-1", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	for _, files := range [][]string{{"a", "b"}, {"b", "c"}} {
		n, err := s.NextCheckpointID(ctx, l, "job-1")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddCheckpoint(ctx, l, "job-1", cp(n, meta.KindCheckpoint, files...), 2); err != nil {
			t.Fatal(err)
		}
	}
	before := c.dump(t, s)

	srv.stop(t)

	err := s.PutJob(ctx, l, "job-1", []byte("v2"))
	if !errors.Is(err, meta.ErrOutcomeUnknown) {
		t.Fatalf("PutJob during outage: %v, want ErrOutcomeUnknown", err)
	}
	if _, err := s.NextCheckpointID(ctx, l, "job-1"); err == nil || errors.Is(err, meta.ErrNotLeader) {
		t.Fatalf("NextCheckpointID during outage: %v, want an etcd error", err)
	}
	if _, err := s.AddCheckpoint(ctx, l, "job-1", cp(3, meta.KindCheckpoint, "c", "d"), 2); err == nil || errors.Is(err, meta.ErrNotLeader) {
		t.Fatalf("AddCheckpoint during outage: %v, want an etcd error", err)
	} else {
		t.Logf("AddCheckpoint during outage: %v", err)
	}
	if _, err := s.GetJob(ctx, "job-1"); err == nil {
		t.Fatal("GetJob during outage succeeded")
	} else if !errors.Is(err, meta.ErrUnavailable) || !meta.Unavailable(err) {
		t.Fatalf("GetJob during outage: %v, want ErrUnavailable", err)
	}
	// Callers retry what Unavailable says may succeed later.
	if _, err := s.AddCheckpoint(ctx, l, "job-1", cp(3, meta.KindCheckpoint, "c", "d"), 2); !meta.Unavailable(err) {
		t.Fatalf("AddCheckpoint during outage: %v, want an error that Unavailable accepts", err)
	}

	srv.start(t)

	// Retry until the client has reconnected.
	retry := func(what string, f func() error) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := f()
			if err == nil {
				return
			}
			if errors.Is(err, meta.ErrNotLeader) || time.Now().After(deadline) {
				t.Fatalf("%s after the outage: %v", what, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var n int64
	retry("NextCheckpointID", func() (err error) { n, err = s.NextCheckpointID(ctx, l, "job-1"); return err })
	if n != 3 {
		t.Fatalf("checkpoint ID after outage %d, want 3", n)
	}
	var res meta.Subsumed
	retry("AddCheckpoint", func() (err error) {
		res, err = s.AddCheckpoint(ctx, l, "job-1", cp(n, meta.KindCheckpoint, "c", "d"), 2)
		return err
	})
	if !reflect.DeepEqual(ids(res.Removed), []int64{1}) || !reflect.DeepEqual(res.Unreferenced, []string{"a"}) {
		t.Fatalf("add after outage: %+v", res)
	}
	retry("PutJob", func() error { return s.PutJob(ctx, l, "job-1", []byte("v2")) })

	// Nothing committed before the outage was lost.
	after := c.dump(t, s)
	for k, v := range before {
		if k == "jobs/job-1" || k == "jobs/job-1/checkpoint-counter" || k == "jobs/job-1/checkpoints/00000000000000000001" || k == "jobs/job-1/shared/a" || k == "jobs/job-1/shared/b" || k == "jobs/job-1/shared/c" {
			continue // legitimately changed since
		}
		if after[k] != v {
			t.Errorf("key %s: %q before the outage, %q after", k, v, after[k])
		}
	}
	cps, err := s.Checkpoints(ctx, "job-1")
	if err != nil || !reflect.DeepEqual(ids(cps), []int64{2, 3}) {
		t.Fatalf("checkpoints after outage %v, %v", ids(cps), err)
	}
	reg, _ := s.SharedFiles(ctx, "job-1")
	want := map[string]meta.SharedFile{"b": {CreatedBy: 1, LastUsed: 2}, "c": {CreatedBy: 2, LastUsed: 3}, "d": {CreatedBy: 3, LastUsed: 3}}
	if !reflect.DeepEqual(reg, want) {
		t.Fatalf("registry after outage %v, want %v", reg, want)
	}
	select {
	case <-l.Done():
		t.Fatal("leadership lost in an outage shorter than the lease TTL")
	default:
	}
}

// embeddedServer adapts embedded.Server to server.
type embeddedServer struct {
	dir, clientURL, peerURL string
	noFsync                 bool
	srv                     *embedded.Server
}

func newEmbedded(t *testing.T, dir, clientURL, peerURL string, noFsync bool) *embeddedServer {
	e := &embeddedServer{dir: dir, clientURL: clientURL, peerURL: peerURL, noFsync: noFsync}
	e.start(t)
	e.clientURL, e.peerURL = e.srv.ClientURL(), e.srv.PeerURL()
	t.Cleanup(func() { e.stop(t) })
	return e
}

func (e *embeddedServer) endpoints() []string { return []string{e.clientURL} }

func (e *embeddedServer) start(t *testing.T) {
	t.Helper()
	srv, err := embedded.Start(ctxFor(t, 30*time.Second), embedded.Options{
		Dir: e.dir, ClientURL: e.clientURL, PeerURL: e.peerURL, UnsafeNoFsync: e.noFsync, Log: testLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
}

func (e *embeddedServer) stop(*testing.T) {
	if e.srv != nil {
		e.srv.Close()
		e.srv = nil
	}
}

// externalEtcdBinary returns the path of Debian's etcd, or skips.
func externalEtcdBinary(t *testing.T) string {
	if testing.Short() {
		t.Skip("skipping the external etcd test in -short mode")
	}
	const bin = "/usr/bin/etcd"
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("skipping: %s not found (apt-get install etcd-server)", bin)
	}
	return bin
}

// externalServer runs /usr/bin/etcd on free loopback ports.
type externalServer struct {
	bin, dir, clientURL, peerURL string
	cmd                          *exec.Cmd
	exited                       chan struct{}
	log                          string
}

func newExternal(t *testing.T, bin, dir string) *externalServer {
	e := &externalServer{bin: bin, dir: dir, clientURL: freeURL(t), peerURL: freeURL(t), log: filepath.Join(dir, "etcd.log")}
	e.start(t)
	t.Cleanup(func() { e.stop(t) })
	return e
}

func freeURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

func (e *externalServer) endpoints() []string { return []string{e.clientURL} }

func (e *externalServer) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(e.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	e.cmd = exec.Command(e.bin,
		"--name", "sluice",
		"--data-dir", filepath.Join(e.dir, "data"),
		"--listen-client-urls", e.clientURL,
		"--advertise-client-urls", e.clientURL,
		"--listen-peer-urls", e.peerURL,
		"--initial-advertise-peer-urls", e.peerURL,
		"--initial-cluster", "sluice="+e.peerURL,
		"--max-txn-ops", "10000",
		"--max-request-bytes", fmt.Sprint(8<<20),
		"--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
	)
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	e.exited = exited
	cmd := e.cmd
	go func() { _ = cmd.Wait(); close(exited) }()
	// Wait until it serves.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if ready(e.clientURL) {
			return
		}
		select {
		case <-exited:
			b, _ := os.ReadFile(e.log)
			t.Fatalf("etcd exited:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			e.stop(t)
			b, _ := os.ReadFile(e.log)
			t.Fatalf("etcd not ready after 20s:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ready(url string) bool {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		return false
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = cli.Get(ctx, "health")
	return err == nil
}

// stop kills etcd with SIGKILL: the harshest outage; etcd's WAL keeps what it
// acknowledged.
func (e *externalServer) stop(t *testing.T) {
	if e.cmd == nil {
		return
	}
	_ = e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
	e.cmd = nil
}
