package checkpoint

import (
	"errors"
	"slices"
	"testing"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

var c0 = time.Unix(1_700_000_000, 0)

func files(id int64, shared ...string) Files {
	fs := Files{Shared: map[string]*sluicev1.StateFile{}, Private: []string{CheckpointDirName(id) + "/v0-s0-x"}}
	for _, f := range shared {
		fs.Shared[f] = &sluicev1.StateFile{Path: f, Size: 1}
	}
	return fs
}

// chainComplete runs checkpoint id through the chain with the given shared files and the
// answer etcd would give for retain (computed here from the chain's own view).
func chainComplete(t *testing.T, c *Chain, id int64, removed []int64, unref []string, shared ...string) (Record, Deletions) {
	t.Helper()
	c.Trigger(id, c0)
	c.Ack(id, shared)
	rec, err := c.Prepare(id, files(id, shared...))
	if err != nil {
		t.Fatalf("prepare %d: %v", id, err)
	}
	return rec, c.Committed(id, removed, unref, true)
}

func TestChainNewSharedFilesAndSubsumption(t *testing.T) {
	c := NewChain(ChainConfig{})
	rec, del := chainComplete(t, c, 1, nil, nil, "shared/a", "shared/b")
	if !slices.Equal(rec.NewSharedFiles, []string{"shared/a", "shared/b"}) || !del.Empty() {
		t.Fatalf("first checkpoint: %+v, deletions %+v", rec, del)
	}
	rec, del = chainComplete(t, c, 2, []int64{1}, []string{"shared/a"}, "shared/b", "shared/c")
	if !slices.Equal(rec.SharedFiles, []string{"shared/b", "shared/c"}) || !slices.Equal(rec.NewSharedFiles, []string{"shared/c"}) {
		t.Fatalf("second checkpoint's record: %+v", rec)
	}
	if !slices.Equal(del.Checkpoints, []int64{1}) || !slices.Equal(del.Shared, []string{"shared/a"}) || c.Stale() {
		t.Fatalf("second checkpoint's deletions %+v (stale %v)", del, c.Stale())
	}
	// A task that missed the notification of 2 reuses shared/a of 1: refused, and the
	// next checkpoint is forced full.
	c.Trigger(3, c0)
	c.Ack(3, []string{"shared/a", "shared/d"})
	if _, err := c.Prepare(3, files(3, "shared/a", "shared/d")); !errors.Is(err, ErrDeletedFile) {
		t.Fatalf("reuse of a deleted file: %v", err)
	}
	c.Aborted(3)
	if full, why := c.Trigger(4, c0); !full || why == "" {
		t.Fatalf("checkpoint after the refusal: full %v (%q)", full, why)
	}
	// Once the deletion ran, the file is simply missing (the caller's existence check).
	c.Deleted(Deletions{Shared: []string{"shared/a"}})
	c.Ack(4, []string{"shared/a"})
	if rec, err := c.Prepare(4, files(4, "shared/a")); err != nil || !slices.Equal(rec.NewSharedFiles, []string{"shared/a"}) {
		t.Fatalf("after Deleted: %+v, %v", rec, err)
	}
}

func TestChainBadReferences(t *testing.T) {
	c := NewChain(ChainConfig{})
	c.Trigger(5, c0)
	fs := files(5)
	fs.Private = append(fs.Private, "chk-4/v0-s0-x")
	if _, err := c.Prepare(5, fs); !errors.Is(err, ErrBadReference) {
		t.Fatalf("private file of another checkpoint: %v", err)
	}
	if _, err := c.Prepare(5, files(5, "elsewhere/x")); !errors.Is(err, ErrBadReference) {
		t.Fatalf("shared file outside shared/: %v", err)
	}
}

// A file etcd reports unreferenced that a checkpoint in progress reuses is kept (it
// registers it again as new); a file etcd reports that the chain still sees referenced
// is kept and the chain goes stale.
func TestChainCommittedKeepsWhatOthersUse(t *testing.T) {
	c := NewChain(ChainConfig{})
	chainComplete(t, c, 1, nil, nil, "shared/a", "shared/b")
	c.Trigger(2, c0)
	c.Trigger(3, c0)
	c.Ack(3, []string{"shared/a"}) // 3 reuses a (it will complete only if 2 does not subsume it)
	c.Ack(2, []string{"shared/c"})
	if _, err := c.Prepare(2, files(2, "shared/c")); err != nil {
		t.Fatal(err)
	}
	del := c.Committed(2, []int64{1}, []string{"shared/a", "shared/b"}, true)
	if !slices.Equal(del.Shared, []string{"shared/b"}) {
		t.Fatalf("deletions %+v: want only shared/b (shared/a is in use by checkpoint 3)", del)
	}
	rec, err := c.Prepare(3, files(3, "shared/a"))
	if err != nil || !slices.Equal(rec.NewSharedFiles, []string{"shared/a"}) {
		t.Fatalf("checkpoint 3: %+v, %v", rec, err)
	}
	del = c.Committed(3, []int64{2}, []string{"shared/c", "shared/a"}, true)
	if !slices.Equal(del.Shared, []string{"shared/c"}) || !c.Stale() {
		t.Fatalf("etcd disagreeing: deletions %+v, stale %v; want only shared/c and stale", del, c.Stale())
	}
}

// The shared files of an aborted checkpoint wait for the checkpoints in progress at the
// abort; a deletion is never made for what a recorded checkpoint took over.
func TestChainAbortWaitsForConcurrent(t *testing.T) {
	c := NewChain(ChainConfig{})
	c.Trigger(1, c0)
	c.Trigger(2, c0)
	c.Ack(1, []string{"shared/x", "shared/y"})
	del := c.Aborted(1)
	if !slices.Equal(del.Checkpoints, []int64{1}) || len(del.Shared) != 0 {
		t.Fatalf("abort with 2 in progress: %+v", del)
	}
	c.Ack(2, []string{"shared/y"}) // a task breaking rule 3
	if _, err := c.Prepare(2, files(2, "shared/y")); err != nil {
		t.Fatal(err)
	}
	del = c.Committed(2, nil, nil, true)
	if !slices.Equal(del.Shared, []string{"shared/x"}) {
		t.Fatalf("after 2 completed: %+v, want shared/x only", del)
	}
}

func TestChainUnknownOutcome(t *testing.T) {
	c := NewChain(ChainConfig{OrphanGrace: time.Second})
	chainComplete(t, c, 1, nil, nil, "shared/a")
	c.Trigger(2, c0)
	c.Ack(2, []string{"shared/b"})
	if _, err := c.Prepare(2, files(2, "shared/b")); err != nil {
		t.Fatal(err)
	}
	c.Trigger(3, c0)
	c.Ack(3, []string{"shared/c"})
	if del := c.Unknown(2); !del.Empty() || !c.Stale() {
		t.Fatalf("unknown: %+v, stale %v", del, c.Stale())
	}
	if del := c.Aborted(3); len(del.Shared) != 0 {
		t.Fatalf("abort while stale deleted shared files: %+v", del)
	}
	l := Listing{Shared: []string{"shared/a", "shared/b", "shared/c"}, Checkpoints: []int64{1, 2, 3}}
	for i := range 3 {
		if del := c.Sweep(c0.Add(time.Duration(i)*time.Hour), l); !del.Empty() {
			t.Fatalf("stale sweep: %+v", del)
		}
	}
	epoch := c.Epoch()
	c.Trigger(4, c0)
	c.Ack(4, nil)
	if _, err := c.Prepare(4, files(4)); err != nil {
		t.Fatal(err)
	}
	if c.Resync(epoch, nil) {
		t.Fatal("resync accepted while a checkpoint is being recorded")
	}
	c.Committed(4, nil, nil, true)
	if c.Resync(epoch, nil) {
		t.Fatal("resync accepted after the view changed")
	}
	// etcd says: 2 did commit (with b), 4 too.
	if !c.Resync(c.Epoch(), []RetainedCheckpoint{{ID: 1, SharedFiles: []string{"shared/a"}}, {ID: 2, SharedFiles: []string{"shared/b"}}, {ID: 4}}) || c.Stale() {
		t.Fatal("resync refused")
	}
	now := c0.Add(10 * time.Hour)
	c.Sweep(now, l)
	del := c.Sweep(now.Add(2*time.Second), l)
	if !slices.Equal(del.Shared, []string{"shared/c"}) || !slices.Equal(del.Checkpoints, []int64{3}) {
		t.Fatalf("sweep after resync: %+v; want shared/c and chk-3", del)
	}
}

// Sweep deletes an unreferenced file only after two sightings a grace period apart, and
// only once the checkpoints in progress at the first sighting ended.
func TestChainSweepGraceAndInFlight(t *testing.T) {
	c := NewChain(ChainConfig{OrphanGrace: time.Minute})
	c.Trigger(1, c0)
	l := Listing{Shared: []string{"shared/up"}, Checkpoints: []int64{1, 9}}
	if del := c.Sweep(c0, l); !del.Empty() {
		t.Fatalf("first sighting: %+v", del)
	}
	if del := c.Sweep(c0.Add(2*time.Minute), l); !del.Empty() {
		t.Fatalf("while checkpoint 1 (which may have uploaded them) runs: %+v", del)
	}
	c.Trigger(2, c0)
	c.Ack(1, []string{"shared/other"})
	c.Aborted(1)
	if del := c.Sweep(c0.Add(3*time.Minute), l); !slices.Equal(del.Shared, []string{"shared/up"}) || !slices.Equal(del.Checkpoints, []int64{9}) {
		t.Fatalf("after checkpoint 1 ended: %+v", del)
	}
	// A deletion decided is not decided again until a grace period passed (it may
	// still run), then it is (it may have failed).
	if del := c.Sweep(c0.Add(3*time.Minute+time.Second), l); len(del.Shared) != 0 {
		t.Fatalf("decided twice: %+v", del)
	}
}

func TestChainFullEvery(t *testing.T) {
	c := NewChain(ChainConfig{FullEvery: 3})
	var got []bool
	for id := int64(1); id <= 7; id++ {
		full, _ := c.Trigger(id, c0)
		got = append(got, full)
		c.Ack(id, nil)
		if _, err := c.Prepare(id, files(id)); err != nil {
			t.Fatal(err)
		}
		c.Committed(id, nil, nil, true)
	}
	if want := []bool{false, false, true, false, false, true, false}; !slices.Equal(got, want) {
		t.Fatalf("full flags %v, want %v", got, want)
	}
	// A forced full checkpoint that fails does not lift the force; one triggered before
	// the force does not either.
	c.Trigger(8, c0)
	c.ForceFull("restored from another job")
	if full, why := c.Trigger(9, c0); !full || why != "restored from another job" {
		t.Fatalf("forced: %v %q", full, why)
	}
	c.Ack(8, nil)
	c.Prepare(8, files(8))
	c.Committed(8, nil, nil, true)
	c.Aborted(9)
	if full, _ := c.Trigger(10, c0); !full {
		t.Fatal("force lifted by a failed or older checkpoint")
	}
	c.Ack(10, nil)
	c.Prepare(10, files(10))
	c.Committed(10, nil, nil, true)
	if full, _ := c.Trigger(11, c0); full {
		t.Fatal("force not lifted by the full checkpoint that completed")
	}
}

func TestFilesOf(t *testing.T) {
	sf := func(p string) *sluicev1.StateFile { return &sluicev1.StateFile{Path: p, Size: 3} }
	md := &sluicev1.CheckpointMetadata{Operators: []*sluicev1.OperatorState{{Subtasks: []*sluicev1.SubtaskState{
		{Keyed: []*sluicev1.KeyedStateHandle{{File: sf("chk-3/a"), SharedFiles: []*sluicev1.StateFile{sf("shared/1"), sf("shared/2")},
			PrivateFiles: []*sluicev1.StateFile{sf("chk-3/MANIFEST")}}},
			ChannelState: []*sluicev1.ChannelState{{File: sf("chk-3/ch")}, {File: sf("chk-3/ch")}}},
		{Keyed: []*sluicev1.KeyedStateHandle{{File: &sluicev1.StateFile{InlineData: []byte("x")}, SharedFiles: []*sluicev1.StateFile{sf("shared/2")}}}},
	}}}}
	fs := FilesOf(md)
	if !slices.Equal(fs.SharedPaths(), []string{"shared/1", "shared/2"}) || !slices.Equal(fs.Private, []string{"chk-3/a", "chk-3/MANIFEST", "chk-3/ch"}) {
		t.Fatalf("FilesOf: shared %v, private %v", fs.SharedPaths(), fs.Private)
	}
}
