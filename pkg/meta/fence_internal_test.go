package meta

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-stream/sluice/pkg/meta/embedded"
)

// These tests interleave a second writer between the read and the transaction of a
// checkpoint-store change, through testHookBeforeCommit.

func startInternal(t *testing.T) (*embedded.Server, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	srv, err := embedded.Start(ctx, embedded.Options{Dir: t.TempDir(), UnsafeNoFsync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv, ctx
}

func connectInternal(t *testing.T, ctx context.Context, srv *embedded.Server) *Store {
	t.Helper()
	s, err := Connect(ctx, srv.Endpoints(), "/sluice/internal", nil, WithLeaseTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func setHook(t *testing.T, f func(op string)) {
	t.Helper()
	fired := false
	testHookBeforeCommit = func(op string) {
		if fired {
			return
		}
		fired = true
		f(op)
	}
	t.Cleanup(func() { testHookBeforeCommit = nil })
}

func snapshot(t *testing.T, ctx context.Context, s *Store) map[string]string {
	t.Helper()
	resp, err := s.cli.Get(ctx, s.jobsPrefix(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, kv := range resp.Kvs {
		m[string(kv.Key)] = string(kv.Value)
	}
	return m
}

func rec(id int64, kind Kind, files ...string) CompletedCheckpoint {
	return CompletedCheckpoint{ID: id, Kind: kind, MetadataPath: "m", SharedFiles: files}
}

// The leadership is lost after AddCheckpoint read the state (and found it still
// leading) and before its transaction: the transaction's fence stops it.
func TestFenceBetweenReadAndCommit(t *testing.T) {
	srv, ctx := startInternal(t)
	a, b := connectInternal(t, ctx, srv), connectInternal(t, ctx, srv)
	la, err := a.Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.PutJob(ctx, la, "j", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddCheckpoint(ctx, la, "j", rec(1, KindCheckpoint, "f"), 1); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, ctx, a)
	var lb *Leadership
	setHook(t, func(string) {
		if _, err := b.cli.Revoke(ctx, la.LeaseID()); err != nil {
			t.Error(err)
		}
		if lb, err = b.Campaign(ctx, "b"); err != nil {
			t.Error(err)
		}
	})
	if _, err := a.AddCheckpoint(ctx, la, "j", rec(2, KindCheckpoint, "g"), 1); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("AddCheckpoint across a leader change: %v, want ErrNotLeader", err)
	}
	if after := snapshot(t, ctx, a); !reflect.DeepEqual(before, after) {
		t.Fatalf("fenced AddCheckpoint wrote:\n%v\n%v", before, after)
	}
	if lb == nil {
		t.FailNow()
	}
	if _, err := b.AddCheckpoint(ctx, lb, "j", rec(2, KindCheckpoint, "g"), 1); err != nil {
		t.Fatal(err)
	}
}

// Concurrent changes by the same leader: the transaction's comparisons detect them, the
// change is recomputed on the new state, and a checkpoint reusing a file that the
// concurrent change unregistered is refused (its blob may be gone).
func TestConcurrentChange(t *testing.T) {
	srv, ctx := startInternal(t)
	s := connectInternal(t, ctx, srv)
	l, err := s.Campaign(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PutJob(ctx, l, "j", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddCheckpoint(ctx, l, "j", rec(4, KindCheckpoint, "a", "b"), 1); err != nil {
		t.Fatal(err)
	}

	// Checkpoints 5 and 6 both started from 4; 5 completes first and subsumes 4, so
	// "a" (used by 4 and 6, not by 5) is unregistered and may be deleted. 6 must fail.
	setHook(t, func(string) {
		res, err := s.AddCheckpoint(ctx, l, "j", CompletedCheckpoint{ID: 5, Kind: KindCheckpoint, MetadataPath: "m",
			SharedFiles: []string{"b", "d"}, NewSharedFiles: []string{"d"}}, 1)
		if err != nil || !reflect.DeepEqual(res.Unreferenced, []string{"a"}) {
			t.Errorf("concurrent add 5: %+v, %v", res, err)
		}
	})
	six := CompletedCheckpoint{ID: 6, Kind: KindCheckpoint, MetadataPath: "m", SharedFiles: []string{"a", "c"}, NewSharedFiles: []string{"c"}}
	if _, err := s.AddCheckpoint(ctx, l, "j", six, 1); !errors.Is(err, ErrSharedFileMissing) {
		t.Fatalf("add 6 reusing an unregistered file: %v, want ErrSharedFileMissing", err)
	}
	if cps, _ := s.Checkpoints(ctx, "j"); len(cps) != 1 || cps[0].ID != 5 {
		t.Fatalf("checkpoints %+v, want only 5", cps)
	}
	if _, err := s.AddCheckpoint(ctx, l, "j", CompletedCheckpoint{ID: 6, Kind: KindCheckpoint, MetadataPath: "m",
		SharedFiles: []string{"c"}, NewSharedFiles: []string{"c", "x"}}, 1); err == nil {
		t.Fatal("a new file outside SharedFiles was accepted")
	}

	// A concurrent savepoint: the retry succeeds on the new state.
	setHook(t, func(string) {
		if _, err := s.AddCheckpoint(ctx, l, "j", rec(7, KindSavepoint, "d"), 1); err != nil {
			t.Error(err)
		}
	})
	res, err := s.AddCheckpoint(ctx, l, "j", CompletedCheckpoint{ID: 8, Kind: KindCheckpoint, MetadataPath: "m",
		SharedFiles: []string{"d", "e"}, NewSharedFiles: []string{"e"}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 1 || res.Removed[0].ID != 5 || !reflect.DeepEqual(res.Unreferenced, []string{"b"}) {
		t.Fatalf("add 8: %+v", res)
	}
	reg, _ := s.SharedFiles(ctx, "j")
	want := map[string]SharedFile{"d": {5, 8}, "e": {8, 8}}
	if !reflect.DeepEqual(reg, want) {
		t.Fatalf("registry %v, want %v", reg, want)
	}

	// A concurrent disposal (a deletion, which prefix comparisons cannot see).
	setHook(t, func(string) {
		if _, err := s.RemoveCheckpoint(ctx, l, "j", 7); err != nil {
			t.Error(err)
		}
	})
	res, err = s.AddCheckpoint(ctx, l, "j", rec(9, KindCheckpoint, "e"), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 1 || res.Removed[0].ID != 8 || !reflect.DeepEqual(res.Unreferenced, []string{"d"}) {
		t.Fatalf("add 9 after disposal of 7: %+v", res)
	}
}
