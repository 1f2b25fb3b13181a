package meta_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/sluice-stream/sluice/pkg/meta"
)

// runStoreSuite runs the Store's tests against the etcd at endpoints. Each test uses its
// own key prefix, so they share one server.
func runStoreSuite(t *testing.T, endpoints []string) {
	tests := []struct {
		name string
		fn   func(t *testing.T, c *cluster)
	}{
		{"Jobs", testJobs},
		{"Validation", testValidation},
		{"CheckpointCounter", testCheckpointCounter},
		{"RetainSubsume", testRetainSubsume},
		{"Savepoints", testSavepoints},
		{"RegistryModel", testRegistryModel},
		{"Fencing", testFencing},
		{"ResignHandover", testResignHandover},
		{"ObserveLeader", testObserveLeader},
		{"LargeTransaction", testLargeTransaction},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, &cluster{endpoints: endpoints, prefix: fmt.Sprintf("/sluice/test-%s-%d/", tc.name, time.Now().UnixNano())})
		})
	}
}

// cluster is one test's view of etcd: endpoints and a private prefix.
type cluster struct {
	endpoints []string
	prefix    string
}

func testLog() *slog.Logger {
	if os.Getenv("SLUICE_META_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// connect opens a Store closed at the end of the test.
func (c *cluster) connect(t *testing.T, opts ...meta.Option) *meta.Store {
	t.Helper()
	opts = append([]meta.Option{meta.WithLeaseTTL(5 * time.Second), meta.WithRequestTimeout(5 * time.Second)}, opts...)
	s, err := meta.Connect(ctxFor(t, 10*time.Second), c.endpoints, c.prefix, testLog(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func campaign(t *testing.T, s *meta.Store, id string) *meta.Leadership {
	t.Helper()
	l, err := s.Campaign(ctxFor(t, 20*time.Second), id)
	if err != nil {
		t.Fatalf("campaign %s: %v", id, err)
	}
	return l
}

// leaderStore connects, leads and creates job "job-1".
func (c *cluster) leaderStore(t *testing.T, opts ...meta.Option) (*meta.Store, *meta.Leadership) {
	t.Helper()
	s := c.connect(t, opts...)
	l := campaign(t, s, "jm-1")
	if err := s.PutJob(ctxFor(t, 5*time.Second), l, "job-1", []byte("rec")); err != nil {
		t.Fatal(err)
	}
	return s, l
}

// dump reads every key under the prefix with its value and revisions (so that any
// write to them shows).
func (c *cluster) dump(t *testing.T, s *meta.Store) map[string]string {
	t.Helper()
	resp, err := s.Client().Get(ctxFor(t, 5*time.Second), c.prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]string)
	for _, kv := range resp.Kvs {
		m[strings.TrimPrefix(string(kv.Key), c.prefix)] = fmt.Sprintf("%s@%d/%d", kv.Value, kv.CreateRevision, kv.ModRevision)
	}
	return m
}

func cp(id int64, kind meta.Kind, files ...string) meta.CompletedCheckpoint {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	return meta.CompletedCheckpoint{
		ID:              id,
		Kind:            kind,
		MetadataPath:    fmt.Sprintf("file:///ckp/job-1/chk-%d/_metadata", id),
		MetadataSize:    100 + id,
		StateSize:       1000 * id,
		IncrementalSize: 10 * id,
		TriggerTime:     t0.Add(time.Duration(id) * time.Second),
		CompletionTime:  t0.Add(time.Duration(id)*time.Second + 500*time.Millisecond),
		SharedFiles:     files,
	}
}

func ids(cps []meta.CompletedCheckpoint) []int64 {
	out := []int64{}
	for _, c := range cps {
		out = append(out, c.ID)
	}
	return out
}

func testJobs(t *testing.T, c *cluster) {
	ctx := ctxFor(t, 30*time.Second)
	s := c.connect(t)
	l := campaign(t, s, "jm-1")

	if _, err := s.GetJob(ctx, "nope"); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("GetJob missing: %v, want ErrNotFound", err)
	}
	if jobs, err := s.ListJobs(ctx); err != nil || len(jobs) != 0 {
		t.Fatalf("ListJobs empty = %v, %v", jobs, err)
	}
	for _, id := range []string{"b", "a", "c"} {
		if err := s.PutJob(ctx, l, id, []byte("rec-"+id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutJob(ctx, l, "a", []byte("rec-a2")); err != nil { // replace
		t.Fatal(err)
	}
	// Subkeys of a job must not show up as jobs.
	if _, err := s.NextCheckpointID(ctx, l, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddCheckpoint(ctx, l, "a", cp(1, meta.KindCheckpoint, "f1", "f2"), 1); err != nil {
		t.Fatal(err)
	}
	if rec, err := s.GetJob(ctx, "a"); err != nil || string(rec) != "rec-a2" {
		t.Fatalf("GetJob a = %q, %v", rec, err)
	}
	jobs, err := s.ListJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []meta.Job{{ID: "a", Record: []byte("rec-a2")}, {ID: "b", Record: []byte("rec-b")}, {ID: "c", Record: []byte("rec-c")}}
	if !reflect.DeepEqual(jobs, want) {
		t.Fatalf("ListJobs = %+v, want %+v", jobs, want)
	}

	if err := s.DeleteJob(ctx, l, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteJob(ctx, l, "a"); err != nil { // idempotent
		t.Fatalf("second DeleteJob: %v", err)
	}
	keys := c.dump(t, s)
	for k := range keys {
		if strings.HasPrefix(k, "jobs/a") {
			t.Errorf("key %s left after DeleteJob", k)
		}
	}
	if _, ok := keys["jobs/b"]; !ok {
		t.Errorf("DeleteJob a removed job b: %v", keys)
	}
	if _, err := s.GetJob(ctx, "a"); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("GetJob deleted: %v", err)
	}
	// A deleted job takes no checkpoints: nothing is written for it.
	if _, err := s.NextCheckpointID(ctx, l, "a"); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("NextCheckpointID of deleted job: %v, want ErrNotFound", err)
	}
	if _, err := s.AddCheckpoint(ctx, l, "a", cp(2, meta.KindCheckpoint), 1); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("AddCheckpoint of deleted job: %v, want ErrNotFound", err)
	}
	keys = c.dump(t, s)
	for k := range keys {
		if strings.HasPrefix(k, "jobs/a") {
			t.Errorf("key %s written for a deleted job", k)
		}
	}
	// The leader key holds the candidate ID.
	info, err := s.Leader(ctx)
	if err != nil || info.CandidateID != "jm-1" || info.Revision != l.Revision() {
		t.Fatalf("Leader = %+v, %v", info, err)
	}
}

func testValidation(t *testing.T, c *cluster) {
	ctx := ctxFor(t, 30*time.Second)
	s, l := c.leaderStore(t)
	good := cp(1, meta.KindCheckpoint, "f")
	tests := []struct {
		name string
		call func() error
	}{
		{"empty job ID", func() error { return s.PutJob(ctx, l, "", nil) }},
		{"job ID with slash", func() error { return s.PutJob(ctx, l, "a/b", nil) }},
		{"get job ID with slash", func() error { _, err := s.GetJob(ctx, "a/b"); return err }},
		{"nil leadership", func() error { return s.PutJob(ctx, nil, "x", nil) }},
		{"retain 0", func() error { _, err := s.AddCheckpoint(ctx, l, "job-1", good, 0); return err }},
		{"checkpoint ID 0", func() error { _, err := s.AddCheckpoint(ctx, l, "job-1", cp(0, meta.KindCheckpoint), 1); return err }},
		{"bad kind", func() error { _, err := s.AddCheckpoint(ctx, l, "job-1", cp(1, "full"), 1); return err }},
		{"no metadata path", func() error {
			c := good
			c.MetadataPath = ""
			_, err := s.AddCheckpoint(ctx, l, "job-1", c, 1)
			return err
		}},
		{"empty shared file", func() error {
			_, err := s.AddCheckpoint(ctx, l, "job-1", cp(1, meta.KindCheckpoint, "a", ""), 1)
			return err
		}},
		{"campaign without ID", func() error { _, err := s.Campaign(ctx, ""); return err }},
	}
	before := c.dump(t, s)
	for _, tc := range tests {
		if err := tc.call(); err == nil {
			t.Errorf("%s: no error", tc.name)
		} else if errors.Is(err, meta.ErrOutcomeUnknown) {
			t.Errorf("%s: %v: invalid input must not be an unknown outcome", tc.name, err)
		}
	}
	if after := c.dump(t, s); !reflect.DeepEqual(before, after) {
		t.Fatalf("invalid calls changed the store:\n%v\n%v", before, after)
	}
}

func testCheckpointCounter(t *testing.T, c *cluster) {
	ctx := ctxFor(t, 30*time.Second)
	s, l := c.leaderStore(t)
	if n, err := s.CheckpointCounter(ctx, "job-1"); err != nil || n != 0 {
		t.Fatalf("fresh counter = %d, %v", n, err)
	}
	for want := int64(1); want <= 3; want++ {
		n, err := s.NextCheckpointID(ctx, l, "job-1")
		if err != nil || n != want {
			t.Fatalf("NextCheckpointID = %d, %v; want %d", n, err, want)
		}
	}
	// Concurrent callers (the CAS loop) get distinct IDs.
	var (
		mu  sync.Mutex
		got []int64
		wg  sync.WaitGroup
	)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 5; j++ {
				n, err := s.NextCheckpointID(ctx, l, "job-1")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				got = append(got, n)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Slice(got, func(i, j int) bool { return got[i] < got[j] })
	for i, n := range got {
		if n != int64(4+i) {
			t.Fatalf("concurrent IDs %v: not 4..43 without gaps or duplicates", got)
		}
	}
	// Raise never lowers; the next ID follows the raised value.
	if err := s.RaiseCheckpointCounter(ctx, l, "job-1", 10); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.NextCheckpointID(ctx, l, "job-1"); n != 44 {
		t.Fatalf("after raising to 10 (below 43): next = %d, want 44", n)
	}
	if err := s.RaiseCheckpointCounter(ctx, l, "job-1", 100); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.NextCheckpointID(ctx, l, "job-1"); n != 101 {
		t.Fatalf("after raising to 100: next = %d, want 101", n)
	}
	// A new leader (here: the same process after resigning) continues the sequence.
	if err := l.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := campaign(t, s, "jm-1")
	if n, err := s.NextCheckpointID(ctx, l2, "job-1"); err != nil || n != 102 {
		t.Fatalf("next after re-election = %d, %v; want 102", n, err)
	}
	if _, err := s.NextCheckpointID(ctx, l, "job-1"); !errors.Is(err, meta.ErrNotLeader) {
		t.Fatalf("next with a resigned leadership: %v, want ErrNotLeader", err)
	}
}

func testRetainSubsume(t *testing.T, c *cluster) {
	ctx := ctxFor(t, 30*time.Second)
	s, l := c.leaderStore(t)
	type sf = meta.SharedFile
	steps := []struct {
		cp               meta.CompletedCheckpoint
		wantRemoved      []int64
		wantUnreferenced []string
		wantRetained     []int64
		wantRegistry     map[string]sf
	}{
		{
			cp:           cp(1, meta.KindCheckpoint, "a", "b"),
			wantRemoved:  []int64{},
			wantRetained: []int64{1},
			wantRegistry: map[string]sf{"a": {1, 1}, "b": {1, 1}},
		},
		{
			cp:           cp(2, meta.KindCheckpoint, "b", "c", "b"), // duplicates are fine
			wantRemoved:  []int64{},
			wantRetained: []int64{1, 2},
			wantRegistry: map[string]sf{"a": {1, 1}, "b": {1, 2}, "c": {2, 2}},
		},
		{
			// 1 is subsumed; "a" only 1 used.
			cp:               cp(3, meta.KindCheckpoint, "c", "d"),
			wantRemoved:      []int64{1},
			wantUnreferenced: []string{"a"},
			wantRetained:     []int64{2, 3},
			wantRegistry:     map[string]sf{"b": {1, 2}, "c": {2, 3}, "d": {3, 3}},
		},
		{
			// 2 is subsumed; "b" (created by 1, last used by 2) goes, "c" stays (3 uses it).
			cp:               cp(4, meta.KindCheckpoint, "d", "e"),
			wantRemoved:      []int64{2},
			wantUnreferenced: []string{"b"},
			wantRetained:     []int64{3, 4},
			wantRegistry:     map[string]sf{"c": {2, 3}, "d": {3, 4}, "e": {4, 4}},
		},
		{
			// 3 is subsumed; "c" goes; "d" (created by 3) stays, used by 4 and 5.
			cp:               cp(5, meta.KindCheckpoint, "d", "f"),
			wantRemoved:      []int64{3},
			wantUnreferenced: []string{"c"},
			wantRetained:     []int64{4, 5},
			wantRegistry:     map[string]sf{"d": {3, 5}, "e": {4, 4}, "f": {5, 5}},
		},
	}
	for _, st := range steps {
		res, err := s.AddCheckpoint(ctx, l, "job-1", st.cp, 2)
		if err != nil {
			t.Fatalf("add %d: %v", st.cp.ID, err)
		}
		if got := ids(res.Removed); !reflect.DeepEqual(got, st.wantRemoved) {
			t.Errorf("add %d: removed %v, want %v", st.cp.ID, got, st.wantRemoved)
		}
		for _, r := range res.Removed { // full records are returned
			if want := cp(r.ID, meta.KindCheckpoint); r.MetadataPath != want.MetadataPath || !r.CompletionTime.Equal(want.CompletionTime) {
				t.Errorf("removed record %+v incomplete", r)
			}
		}
		if !reflect.DeepEqual(res.Unreferenced, st.wantUnreferenced) {
			t.Errorf("add %d: unreferenced %v, want %v", st.cp.ID, res.Unreferenced, st.wantUnreferenced)
		}
		cps, err := s.Checkpoints(ctx, "job-1")
		if err != nil {
			t.Fatal(err)
		}
		if got := ids(cps); !reflect.DeepEqual(got, st.wantRetained) {
			t.Errorf("after %d: retained %v, want %v", st.cp.ID, got, st.wantRetained)
		}
		reg, err := s.SharedFiles(ctx, "job-1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(reg, st.wantRegistry) {
			t.Errorf("after %d: registry %v, want %v", st.cp.ID, reg, st.wantRegistry)
		}
	}
	// The stored record round-trips.
	latest, err := s.LatestCheckpoint(ctx, "job-1")
	if err != nil {
		t.Fatal(err)
	}
	want := cp(5, meta.KindCheckpoint, "d", "f")
	if !latest.TriggerTime.Equal(want.TriggerTime) || !latest.CompletionTime.Equal(want.CompletionTime) {
		t.Fatalf("times changed: %+v", latest)
	}
	latest.TriggerTime, latest.CompletionTime, want.TriggerTime, want.CompletionTime = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if !reflect.DeepEqual(latest, want) {
		t.Fatalf("latest = %+v, want %+v", latest, want)
	}
	// Raw layout: zero-padded IDs, JSON registry entries.
	keys := c.dump(t, s)
	for _, k := range []string{"jobs/job-1/checkpoints/00000000000000000004", "jobs/job-1/checkpoints/00000000000000000005", "jobs/job-1/shared/d"} {
		if _, ok := keys[k]; !ok {
			t.Errorf("key %s missing; have %v", k, keys)
		}
	}
	if v := keys["jobs/job-1/shared/d"]; !strings.HasPrefix(v, `{"createdBy":3,"lastUsed":5}@`) {
		t.Errorf("registry entry d = %s", v)
	}
	// Duplicate and out-of-order checkpoints are refused and change nothing.
	before := c.dump(t, s)
	if _, err := s.AddCheckpoint(ctx, l, "job-1", cp(5, meta.KindCheckpoint), 2); !errors.Is(err, meta.ErrCheckpointExists) {
		t.Errorf("re-adding 5: %v, want ErrCheckpointExists", err)
	}
	if _, err := s.AddCheckpoint(ctx, l, "job-1", cp(3, meta.KindCheckpoint, "x"), 2); !errors.Is(err, meta.ErrCheckpointOrder) {
		t.Errorf("adding 3 after 5: %v, want ErrCheckpointOrder", err)
	}
	if after := c.dump(t, s); !reflect.DeepEqual(before, after) {
		t.Errorf("refused adds changed the store")
	}
	// IDs beyond 9 sort numerically.
	for _, n := range []int64{9, 10, 11} {
		if _, err := s.AddCheckpoint(ctx, l, "job-1", cp(n, meta.KindCheckpoint), 3); err != nil {
			t.Fatal(err)
		}
	}
	if cps, _ := s.Checkpoints(ctx, "job-1"); !reflect.DeepEqual(ids(cps), []int64{9, 10, 11}) {
		t.Errorf("retained %v, want [9 10 11]", ids(cps))
	}
	if latest, _ := s.LatestCheckpoint(ctx, "job-1"); latest.ID != 11 {
		t.Errorf("latest %d, want 11", latest.ID)
	}
}

func testSavepoints(t *testing.T, c *cluster) {
	ctx := ctxFor(t, 30*time.Second)
	s, l := c.leaderStore(t)
	if _, err := s.LatestCheckpoint(ctx, "job-1"); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("latest of empty store: %v", err)
	}
	add := func(c meta.CompletedCheckpoint) meta.Subsumed {
		t.Helper()
		res, err := s.AddCheckpoint(ctx, l, "job-1", c, 1)
		if err != nil {
			t.Fatalf("add %d: %v", c.ID, err)
		}
		return res
	}
	add(cp(1, meta.KindCheckpoint, "a"))
	add(cp(2, meta.KindSavepoint, "a", "s")) // e.g. a native-format savepoint
	if l, _ := s.LatestCheckpoint(ctx, "job-1"); l.ID != 2 || l.Kind != meta.KindSavepoint {
		t.Fatalf("latest = %d %s, want savepoint 2 (rule 8)", l.ID, l.Kind)
	}
	res := add(cp(3, meta.KindCheckpoint, "b"))
	// Checkpoint 1 is subsumed, the savepoint is not; "a" is still used by savepoint 2.
	if !reflect.DeepEqual(ids(res.Removed), []int64{1}) || len(res.Unreferenced) != 0 {
		t.Fatalf("add 3: %+v", res)
	}
	res = add(cp(4, meta.KindCheckpoint, "b"))
	if !reflect.DeepEqual(ids(res.Removed), []int64{3}) || len(res.Unreferenced) != 0 {
		t.Fatalf("add 4: %+v", res)
	}
	// A savepoint whose ID is below the newest checkpoint (it completed late) is fine.
	add(cp(3+100, meta.KindCheckpoint, "b"))
	if _, err := s.AddCheckpoint(ctx, l, "job-1", cp(50, meta.KindSavepoint), 1); err != nil {
		t.Fatalf("late savepoint: %v", err)
	}
	if cps, _ := s.Checkpoints(ctx, "job-1"); !reflect.DeepEqual(ids(cps), []int64{2, 50, 103}) {
		t.Fatalf("retained %v, want [2 50 103]", ids(cps))
	}
	// Disposing the savepoint releases the files only it used.
	res, err := s.RemoveCheckpoint(ctx, l, "job-1", 2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(res.Removed), []int64{2}) || !reflect.DeepEqual(res.Unreferenced, []string{"a", "s"}) {
		t.Fatalf("remove 2: %+v", res)
	}
	if reg, _ := s.SharedFiles(ctx, "job-1"); !reflect.DeepEqual(reg, map[string]meta.SharedFile{"b": {CreatedBy: 3, LastUsed: 103}}) {
		t.Fatalf("registry %v", reg)
	}
	if _, err := s.RemoveCheckpoint(ctx, l, "job-1", 2); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("removing again: %v", err)
	}
}

// testRegistryModel drives the store with random checkpoints, savepoints and disposals
// and checks the registry against a model after every step: it holds exactly the files
// of the retained records, with the right createdBy/lastUsed, and no file that a
// retained record references is ever reported unreferenced.
func testRegistryModel(t *testing.T, c *cluster) {
	ctx := ctxFor(t, 60*time.Second)
	s, l := c.leaderStore(t)
	rng := rand.New(rand.NewSource(1))
	const retain = 3
	model := map[int64]modelRec{}       // retained records
	reg := map[string]meta.SharedFile{} // expected registry
	deleted := map[string]bool{}        // files reported unreferenced (their blobs are gone)
	pure := meta.NewRegistry()          // the model without etcd must decide the same
	same := func(step int64, got meta.Subsumed, want meta.Subsumed, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("step %d: Registry: %v", step, err)
		}
		if !reflect.DeepEqual(ids(got.Removed), ids(want.Removed)) || strings.Join(got.Unreferenced, ",") != strings.Join(want.Unreferenced, ",") {
			t.Fatalf("step %d: Registry decided %v %v, etcd %v %v", step, ids(got.Removed), got.Unreferenced, ids(want.Removed), want.Unreferenced)
		}
	}
	nextFile := 0
	for id := int64(1); id <= 40; id++ {
		if rng.Intn(6) == 0 && len(model) > 1 {
			// Dispose a random savepoint, if any.
			for n, r := range model {
				if r.kind != meta.KindSavepoint {
					continue
				}
				res, err := s.RemoveCheckpoint(ctx, l, "job-1", n)
				if err != nil {
					t.Fatal(err)
				}
				delete(model, n)
				pres, perr := pure.Remove(n)
				same(id, pres, res, perr)
				checkUnreferenced(t, res.Unreferenced, model, deleted)
				for _, f := range res.Unreferenced {
					delete(reg, f)
				}
				break
			}
		}
		// Reuse some files of retained records (only those, rule 3), add new ones.
		var live []string
		for f := range reg {
			live = append(live, f)
		}
		sort.Strings(live)
		var files []string
		for _, f := range live {
			if rng.Intn(2) == 0 {
				files = append(files, f)
			}
		}
		for k := rng.Intn(3); k > 0; k-- {
			nextFile++
			files = append(files, fmt.Sprintf("shared/f%03d.sst", nextFile))
		}
		kind := meta.KindCheckpoint
		if rng.Intn(5) == 0 {
			kind = meta.KindSavepoint
		}
		res, err := s.AddCheckpoint(ctx, l, "job-1", cp(id, kind, files...), retain)
		if err != nil {
			t.Fatal(err)
		}
		pres, perr := pure.Add(cp(id, kind, files...), retain)
		same(id, pres, res, perr)
		model[id] = modelRec{kind, files}
		for _, f := range files {
			e, ok := reg[f]
			if !ok {
				e.CreatedBy = id
			}
			e.LastUsed = id
			reg[f] = e
		}
		// Expected subsumption: checkpoints beyond the newest retain.
		var cks []int64
		for n, r := range model {
			if r.kind == meta.KindCheckpoint {
				cks = append(cks, n)
			}
		}
		sort.Slice(cks, func(i, j int) bool { return cks[i] > cks[j] })
		var wantRemoved []int64
		if len(cks) > retain {
			wantRemoved = cks[retain:]
			sort.Slice(wantRemoved, func(i, j int) bool { return wantRemoved[i] < wantRemoved[j] })
		}
		if got := ids(res.Removed); !(len(got) == 0 && len(wantRemoved) == 0) && !reflect.DeepEqual(got, wantRemoved) {
			t.Fatalf("step %d: removed %v, want %v", id, got, wantRemoved)
		}
		for _, n := range wantRemoved {
			delete(model, n)
		}
		checkUnreferenced(t, res.Unreferenced, model, deleted)
		for _, f := range res.Unreferenced {
			delete(reg, f)
		}
		got, err := s.SharedFiles(ctx, "job-1")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 && len(reg) == 0 {
			continue
		}
		if !reflect.DeepEqual(pure.Files, reg) {
			t.Fatalf("step %d: Registry's registry\n got %v\nwant %v", id, pure.Files, reg)
		}
		if !reflect.DeepEqual(got, reg) {
			t.Fatalf("step %d: registry\n got %v\nwant %v", id, got, reg)
		}
		// The registry holds exactly the files of retained records.
		used := map[string]bool{}
		for _, r := range model {
			for _, f := range r.files {
				used[f] = true
			}
		}
		if len(used) != len(got) {
			t.Fatalf("step %d: registry has %d files, retained records use %d", id, len(got), len(used))
		}
	}
}

type modelRec struct {
	kind  meta.Kind
	files []string
}

func checkUnreferenced(t *testing.T, unref []string, model map[int64]modelRec, deleted map[string]bool) {
	t.Helper()
	for _, f := range unref {
		if deleted[f] {
			t.Fatalf("file %s reported unreferenced twice", f)
		}
		deleted[f] = true
		for n, r := range model {
			for _, g := range r.files {
				if g == f {
					t.Fatalf("file %s reported unreferenced but retained record %d uses it", f, n)
				}
			}
		}
	}
}

// testFencing: A leads, then loses its lease while it is "paused" (revoked from
// outside: A has not noticed), B takes over. Every write of A fails with ErrNotLeader
// and changes nothing; B's writes succeed; checkpoint IDs keep increasing.
func testFencing(t *testing.T, c *cluster) {
	ctx := ctxFor(t, 60*time.Second)
	a := c.connect(t)
	b := c.connect(t)
	la := campaign(t, a, "jm-a")
	if err := a.PutJob(ctx, la, "job-1", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	var last int64
	for i := 1; i <= 3; i++ {
		n, err := a.NextCheckpointID(ctx, la, "job-1")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.AddCheckpoint(ctx, la, "job-1", cp(n, meta.KindCheckpoint, fmt.Sprintf("f%d", n), "base"), 2); err != nil {
			t.Fatal(err)
		}
		last = n
	}

	// B campaigns and waits while A leads.
	type result struct {
		l   *meta.Leadership
		err error
	}
	bc := make(chan result, 1)
	go func() {
		l, err := b.Campaign(ctx, "jm-b")
		bc <- result{l, err}
	}()
	select {
	case r := <-bc:
		t.Fatalf("B became leader while A leads: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}
	if info, err := b.Leader(ctx); err != nil || info.CandidateID != "jm-a" {
		t.Fatalf("leader = %+v, %v; want jm-a", info, err)
	}

	// A is "paused": its lease is revoked behind its back (as if it expired while A
	// was stopped). A's client and session object are untouched.
	if _, err := b.Client().Revoke(ctx, la.LeaseID()); err != nil {
		t.Fatal(err)
	}
	var lb *meta.Leadership
	select {
	case r := <-bc:
		if r.err != nil {
			t.Fatal(r.err)
		}
		lb = r.l
	case <-ctx.Done():
		t.Fatal("B did not become leader after A's lease was revoked")
	}
	if lb.Revision() <= la.Revision() {
		t.Fatalf("B's fencing revision %d not above A's %d", lb.Revision(), la.Revision())
	}

	// Every write of A is fenced off and changes nothing, whether or not A has noticed.
	before := c.dump(t, a)
	writes := []struct {
		name string
		call func() error
	}{
		{"PutJob", func() error { return a.PutJob(ctx, la, "job-1", []byte("stale")) }},
		{"PutJob new", func() error { return a.PutJob(ctx, la, "job-2", []byte("stale")) }},
		{"NextCheckpointID", func() error { _, err := a.NextCheckpointID(ctx, la, "job-1"); return err }},
		{"RaiseCheckpointCounter", func() error { return a.RaiseCheckpointCounter(ctx, la, "job-1", 1000) }},
		{"AddCheckpoint", func() error {
			_, err := a.AddCheckpoint(ctx, la, "job-1", cp(last+1, meta.KindCheckpoint, "stale", "base"), 1)
			return err
		}},
		{"RemoveCheckpoint", func() error { _, err := a.RemoveCheckpoint(ctx, la, "job-1", last); return err }},
		{"DeleteJob", func() error { return a.DeleteJob(ctx, la, "job-1") }},
	}
	for _, w := range writes {
		if err := w.call(); !errors.Is(err, meta.ErrNotLeader) {
			t.Errorf("A's %s after losing leadership: %v, want ErrNotLeader", w.name, err)
		}
	}
	if after := c.dump(t, a); !reflect.DeepEqual(before, after) {
		t.Fatalf("fenced writes changed the store:\nbefore %v\nafter  %v", before, after)
	}

	// A learns that it lost (Done), B writes.
	select {
	case <-la.Done():
	case <-time.After(15 * time.Second):
		t.Fatal("A's Done not closed after its lease was revoked")
	}
	select {
	case <-lb.Done():
		t.Fatal("B's Done closed")
	default:
	}
	n, err := b.NextCheckpointID(ctx, lb, "job-1")
	if err != nil {
		t.Fatal(err)
	}
	if n != last+1 {
		t.Fatalf("B's first checkpoint ID %d, want %d (strictly after A's %d, no gap from fenced writes)", n, last+1, last)
	}
	res, err := b.AddCheckpoint(ctx, lb, "job-1", cp(n, meta.KindCheckpoint, "base", "g"), 2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ids(res.Removed), []int64{last - 1}) {
		t.Fatalf("B's add removed %v", ids(res.Removed))
	}
	if err := b.PutJob(ctx, lb, "job-1", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if rec, _ := a.GetJob(ctx, "job-1"); string(rec) != "v2" {
		t.Fatalf("job record %q", rec)
	}
	// A campaigns again and waits; the old Leadership stays fenced.
	actx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if _, err := a.Campaign(actx, "jm-a"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("A's campaign while B leads: %v, want deadline exceeded", err)
	}
	if err := a.PutJob(ctx, la, "job-1", []byte("stale")); !errors.Is(err, meta.ErrNotLeader) {
		t.Fatalf("stale PutJob: %v", err)
	}
}

// testResignHandover: Resign hands over at once; Done reports it; Store.Close resigns.
func testResignHandover(t *testing.T, c *cluster) {
	ctx := ctxFor(t, 30*time.Second)
	a := c.connect(t, meta.WithLeaseTTL(60*time.Second)) // handover must not wait for the TTL
	b := c.connect(t, meta.WithLeaseTTL(60*time.Second))
	la := campaign(t, a, "jm-a")
	bc := make(chan *meta.Leadership, 1)
	go func() {
		l, err := b.Campaign(ctx, "jm-b")
		if err != nil {
			t.Error(err)
		}
		bc <- l
	}()
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-la.Done():
	default:
		t.Fatal("Done not closed by Resign")
	}
	lb := <-bc
	if lb == nil {
		t.FailNow()
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("handover took %s", d)
	}
	// Closing B's store resigns too: A takes over without waiting for the TTL.
	ac := make(chan *meta.Leadership, 1)
	go func() {
		l, err := a.Campaign(ctx, "jm-a")
		if err != nil {
			t.Error(err)
		}
		ac <- l
	}()
	time.Sleep(200 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-lb.Done():
	default:
		t.Fatal("Done not closed by Store.Close")
	}
	if l := <-ac; l == nil {
		t.FailNow()
	}
	if _, err := b.Campaign(ctx, "jm-b"); !errors.Is(err, meta.ErrClosed) {
		t.Fatalf("campaign on closed store: %v", err)
	}
}

// testObserveLeader: a leader's published address is readable (Leader) and followed
// (ObserveLeader) through a handover; an observer's channel closes with its context and
// with the Store.
func testObserveLeader(t *testing.T, c *cluster) {
	ctx := ctxFor(t, 30*time.Second)
	a := c.connect(t)
	b := c.connect(t)
	f := c.connect(t) // a follower that never campaigns
	octx, stop := context.WithCancel(ctx)
	defer stop()
	obs := f.ObserveLeader(octx)
	next := func(want meta.LeaderInfo) {
		t.Helper()
		for {
			select {
			case li, ok := <-obs:
				if !ok {
					t.Fatalf("observer closed while waiting for %+v", want)
				}
				if li.CandidateID == want.CandidateID && li.Address == want.Address && (want.Revision == 0 || li.Revision == want.Revision) {
					return
				}
				// A value in between (e.g. nobody leads during the handover) is fine.
			case <-ctx.Done():
				t.Fatalf("no leader %+v observed", want)
			}
		}
	}
	next(meta.LeaderInfo{}) // nobody leads yet

	la, err := a.Campaign(ctx, "jm-a", meta.WithAddress("10.0.0.1:6123"))
	if err != nil {
		t.Fatal(err)
	}
	if la.Address() != "10.0.0.1:6123" || la.CandidateID() != "jm-a" {
		t.Fatalf("leadership %q at %q", la.CandidateID(), la.Address())
	}
	info, err := f.Leader(ctx)
	if err != nil || info != (meta.LeaderInfo{CandidateID: "jm-a", Address: "10.0.0.1:6123", Revision: la.Revision()}) {
		t.Fatalf("Leader() = %+v, %v", info, err)
	}
	next(meta.LeaderInfo{CandidateID: "jm-a", Address: "10.0.0.1:6123", Revision: la.Revision()})

	bc := make(chan *meta.Leadership, 1)
	go func() {
		l, err := b.Campaign(ctx, "jm-b", meta.WithAddress("10.0.0.2:6123"))
		if err != nil {
			t.Error(err)
		}
		bc <- l
	}()
	if err := la.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	lb := <-bc
	if lb == nil {
		t.FailNow()
	}
	next(meta.LeaderInfo{CandidateID: "jm-b", Address: "10.0.0.2:6123", Revision: lb.Revision()})

	// Without an address the value stays the bare candidate ID.
	if err := lb.Resign(ctx); err != nil {
		t.Fatal(err)
	}
	lc := campaign(t, a, "jm-c")
	next(meta.LeaderInfo{CandidateID: "jm-c", Revision: lc.Revision()})

	stop()
	for range obs { // drains, then closed
	}
	// Closing the Store closes its observers too.
	obs2 := f.ObserveLeader(ctx)
	<-obs2
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	for range obs2 {
	}
	if _, ok := <-f.ObserveLeader(ctx); ok {
		t.Fatal("observer of a closed Store delivered a value")
	}
}

// testLargeTransaction: a checkpoint with thousands of shared files is one transaction
// (the servers of these tests run with --max-txn-ops 10000); one beyond the server's
// limit fails clearly and writes nothing.
func testLargeTransaction(t *testing.T, c *cluster) {
	ctx := ctxFor(t, 60*time.Second)
	// Large requests are slow under the race detector on a small machine.
	s, l := c.leaderStore(t, meta.WithRequestTimeout(30*time.Second))
	files := func(from, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("shared/%08d-0123456789abcdef.sst", from+i)
		}
		return out
	}
	if _, err := s.AddCheckpoint(ctx, l, "job-1", cp(1, meta.KindCheckpoint, files(0, 2000)...), 1); err != nil {
		t.Fatal(err)
	}
	// Subsumes 1: 2000 puts and 2000 deletes in one transaction.
	res, err := s.AddCheckpoint(ctx, l, "job-1", cp(2, meta.KindCheckpoint, files(2000, 2000)...), 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Unreferenced) != 2000 || !reflect.DeepEqual(ids(res.Removed), []int64{1}) {
		t.Fatalf("removed %v, %d unreferenced", ids(res.Removed), len(res.Unreferenced))
	}
	before := c.dump(t, s)
	start := time.Now()
	_, err = s.AddCheckpoint(ctx, l, "job-1", cp(3, meta.KindCheckpoint, files(4000, 10000)...), 1)
	t.Logf("oversized checkpoint refused in %s", time.Since(start))
	if !errors.Is(err, meta.ErrTxnTooLarge) || errors.Is(err, meta.ErrOutcomeUnknown) {
		t.Fatalf("oversized checkpoint: %v, want ErrTxnTooLarge", err)
	}
	if !strings.Contains(err.Error(), "max-txn-ops") && !strings.Contains(err.Error(), "max-request-bytes") {
		t.Errorf("error does not name the limit: %v", err)
	}
	if after := c.dump(t, s); !reflect.DeepEqual(before, after) {
		t.Fatal("oversized checkpoint changed the store")
	}
}
