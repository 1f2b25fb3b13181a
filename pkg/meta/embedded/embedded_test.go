package embedded

import (
	"context"
	"os"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Close must leave no goroutine behind: no goleak ignores are needed for etcd.
	goleak.VerifyTestMain(m)
}

func TestStartWriteRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	srv, err := Start(ctx, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	put(ctx, t, srv.Endpoints(), "k", "v1")
	clientURL, peerURL := srv.ClientURL(), srv.PeerURL()
	srv.Close()
	srv.Close() // idempotent

	srv, err = Start(ctx, Options{Dir: dir, ClientURL: clientURL, PeerURL: peerURL})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if got := srv.ClientURL(); got != clientURL {
		t.Fatalf("client URL %s, want %s", got, clientURL)
	}
	if got := get(ctx, t, srv.Endpoints(), "k"); got != "v1" {
		t.Fatalf("after restart k = %q, want v1", got)
	}
}

func TestTempDirRemoved(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := Start(ctx, Options{UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	put(ctx, t, srv.Endpoints(), "k", "v")
	dir := srv.Dir()
	srv.Close()
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temporary data dir %s not removed (stat: %v)", dir, err)
	}
}

func TestBadURL(t *testing.T) {
	for _, u := range []string{"https://127.0.0.1:0", "http://:1234", "127.0.0.1:99999"} {
		if _, err := Start(context.Background(), Options{ClientURL: u}); err == nil {
			t.Errorf("Start with client URL %q succeeded", u)
		}
	}
}

func put(ctx context.Context, t *testing.T, eps []string, k, v string) {
	t.Helper()
	cli := client(t, eps)
	defer cli.Close()
	if _, err := cli.Put(ctx, k, v); err != nil {
		t.Fatal(err)
	}
}

func get(ctx context.Context, t *testing.T, eps []string, k string) string {
	t.Helper()
	cli := client(t, eps)
	defer cli.Close()
	resp, err := cli.Get(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return ""
	}
	return string(resp.Kvs[0].Value)
}

func client(t *testing.T, eps []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return cli
}
