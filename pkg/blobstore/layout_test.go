package blobstore_test

import (
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/pkg/blobstore"
)

const job = "0123456789abcdef0123456789abcdef"

func TestLayout(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{blobstore.JobDir(job), job + "/"},
		{blobstore.CheckpointDir(job, 7), job + "/chk-7/"},
		{blobstore.MetadataKey(job, 7), job + "/chk-7/_metadata"},
		{blobstore.PrivateKey(job, 7, "op-3.state"), job + "/chk-7/op-3.state"},
		{blobstore.SharedDir(job), job + "/shared/"},
		{blobstore.SharedKey(job, "ab12.sst"), job + "/shared/ab12.sst"},
		{blobstore.TaskOwnedDir(job), job + "/taskowned/"},
		{blobstore.TaskOwnedKey(job, "ch-1"), job + "/taskowned/ch-1"},
		{blobstore.CheckpointPath(7, "op-3.state"), "chk-7/op-3.state"},
		{blobstore.SharedPath("ab12.sst"), "shared/ab12.sst"},
		{blobstore.TaskOwnedPath("ch-1"), "taskowned/ch-1"},
		{blobstore.CheckpointPath(0, blobstore.MetadataName), "chk-0/_metadata"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	// The job-relative forms and the root-relative forms agree.
	if rel, err := blobstore.Rel(blobstore.JobDir(job), blobstore.MetadataKey(job, 7)); err != nil || rel != blobstore.CheckpointPath(7, blobstore.MetadataName) {
		t.Errorf("Rel(job, metadata) = %q, %v", rel, err)
	}
}

func TestParseCheckpointDir(t *testing.T) {
	for name, want := range map[string]int64{"chk-0": 0, "chk-7": 7, "chk-123/": 123} {
		if id, ok := blobstore.ParseCheckpointDir(name); !ok || id != want {
			t.Errorf("ParseCheckpointDir(%q) = %d, %v", name, id, ok)
		}
	}
	for _, name := range []string{"", "chk-", "chk-x", "chk--1", "chk-07", "shared", "chk-99999999999999999999"} {
		if id, ok := blobstore.ParseCheckpointDir(name); ok {
			t.Errorf("ParseCheckpointDir(%q) = %d, true", name, id)
		}
	}
}

func TestSavepointDir(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		d := blobstore.SavepointDir(job)
		if !strings.HasPrefix(d, "savepoint-012345-") || !strings.HasSuffix(d, "/") || len(d) != len("savepoint-012345-")+12+1 {
			t.Fatalf("SavepointDir = %q", d)
		}
		if !blobstore.IsSavepointDir(d) {
			t.Fatalf("IsSavepointDir(%q) = false", d)
		}
		if seen[d] {
			t.Fatalf("SavepointDir repeated %q", d)
		}
		seen[d] = true
		if got := blobstore.SavepointMetadataKey(d); got != d+"_metadata" {
			t.Fatalf("SavepointMetadataKey = %q", got)
		}
	}
	if d := blobstore.SavepointDir("abc"); !strings.HasPrefix(d, "savepoint-abc-") {
		t.Fatalf("SavepointDir(short ID) = %q", d)
	}
	for _, name := range []string{"savepoint-", "savepoint-abc-xyz", "savepoint-abc-0123456789a", "chk-1"} {
		if blobstore.IsSavepointDir(name) {
			t.Errorf("IsSavepointDir(%q) = true", name)
		}
	}
}

func TestRelResolve(t *testing.T) {
	sp := "savepoint-012345-0123456789ab/"
	key, err := blobstore.Resolve(sp, "shared/x.sst")
	if err != nil || key != sp+"shared/x.sst" {
		t.Fatalf("Resolve = %q, %v", key, err)
	}
	if rel, err := blobstore.Rel(strings.TrimSuffix(sp, "/"), key); err != nil || rel != "shared/x.sst" {
		t.Fatalf("Rel = %q, %v", rel, err)
	}
	if key, err := blobstore.Resolve("", "a/b"); err != nil || key != "a/b" {
		t.Fatalf("Resolve(root) = %q, %v", key, err)
	}
	// References from a _metadata file must stay inside their directory.
	for _, rel := range []string{"../other-job/shared/x", "/abs", "a/../../x", "", "a//b", "a/"} {
		if key, err := blobstore.Resolve(sp, rel); err == nil {
			t.Errorf("Resolve(%q) = %q, want an error", rel, key)
		}
	}
	if rel, err := blobstore.Rel("job-a/", "job-ab/x"); err == nil {
		t.Errorf("Rel outside the base = %q", rel)
	}
	if rel, err := blobstore.Rel("job-a/", "job-a/"); err == nil {
		t.Errorf("Rel of the base itself = %q", rel)
	}
}

func TestLayoutPanicsOnInvalidInput(t *testing.T) {
	for name, f := range map[string]func(){
		"empty job":       func() { blobstore.JobDir("") },
		"job with /":      func() { blobstore.JobDir("a/b") },
		"job ..":          func() { blobstore.CheckpointDir("..", 1) },
		"negative id":     func() { blobstore.MetadataKey(job, -1) },
		"name with /":     func() { blobstore.SharedKey(job, "a/b") },
		"empty name":      func() { blobstore.PrivateKey(job, 1, "") },
		"savepoint of ''": func() { blobstore.SavepointDir("") },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
	if err := blobstore.CheckJobID("a/b"); err == nil || !strings.Contains(err.Error(), `"a/b"`) {
		t.Errorf("CheckJobID(a/b) = %v", err)
	}
	if err := blobstore.CheckJobID(job); err != nil {
		t.Errorf("CheckJobID(%s) = %v", job, err)
	}
}
