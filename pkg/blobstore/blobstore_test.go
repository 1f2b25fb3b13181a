package blobstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"go.uber.org/goleak"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/blobstore/blobtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func openStore(t *testing.T, url string) *blobstore.Store {
	t.Helper()
	s, err := blobstore.Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func TestMem(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) *blobstore.Store { return openStore(t, "mem://") })
}

func TestFile(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) *blobstore.Store {
		// A directory that does not exist yet: Open creates it.
		return openStore(t, "file://"+filepath.Join(t.TempDir(), "state", "checkpoints"))
	})
}

// TestFileNoLeftovers checks what the store leaves on disk: the files under their keys
// and nothing else (no temporary files after aborts, no sidecar files).
func TestFileNoLeftovers(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, "file://"+dir+"/base")
	ctx := t.Context()
	if _, err := s.WriteFile(ctx, "job/chk-1/_metadata", []byte("m")); err != nil {
		t.Fatal(err)
	}
	w, err := s.Create(ctx, "job/chk-1/aborted")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("partial")); err != nil {
		t.Fatal(err)
	}
	// Mid-write the temporary file sits next to the final name, invisible to the store.
	matches, _ := filepath.Glob(filepath.Join(dir, "base/job/chk-1/aborted.*.tmp"))
	if len(matches) != 1 {
		t.Fatalf("temporary files mid-write: %q, want one next to the final name", matches)
	}
	w.Abort()
	var files []string
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, rel)
		}
		return nil
	})
	if want := []string{"base/job/chk-1/_metadata"}; fmt.Sprint(files) != fmt.Sprint(want) {
		t.Fatalf("files on disk = %q, want %q", files, want)
	}
}

func TestMemNamedIsShared(t *testing.T) {
	a := openStore(t, "mem://blobstore-test/a")
	b := openStore(t, "mem://blobstore-test")
	f, err := a.WriteFile(t.Context(), "k", []byte("v"))
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := b.Exists(t.Context(), "a/k"); !ok || err != nil {
		t.Fatalf("the second store of mem://blobstore-test does not see a/k: %v, %v", ok, err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	// f's path is relative to the first store's prefix.
	if _, err := b.ReadAll(t.Context(), f); err == nil {
		t.Fatal("read through the wrong prefix succeeded")
	}
	// Closing one store leaves the shared bucket to the others.
	if ok, err := b.Exists(t.Context(), "a/k"); !ok || err != nil {
		t.Fatalf("after closing the first store: %v, %v", ok, err)
	}
}

// TestS3 runs the suite against a real S3 server: versitygw on loopback, with each test
// under its own prefix of one bucket (so the prefix handling is tested too).
func TestS3(t *testing.T) {
	srv := blobtest.StartS3(t)
	const bucket = "sluice-blobstore-test"
	srv.CreateBucket(t, bucket)
	var n atomic.Int64
	blobtest.Run(t, func(t *testing.T) *blobstore.Store {
		return openStore(t, srv.URL(bucket, fmt.Sprintf("runs/%d/checkpoints", n.Add(1))))
	})
	t.Run("Multipart", func(t *testing.T) { testS3Multipart(t, openStore(t, srv.URL(bucket, "multipart")), bucket) })
}

// testS3Multipart checks what the suite cannot see through the store: that large
// writes are multipart uploads, that an upload in progress exists only as an
// incomplete multipart upload, and that Abort removes it (and that the suite's aborts
// left none behind).
func testS3Multipart(t *testing.T, s *blobstore.Store, bucket string) {
	ctx := t.Context()
	var client *s3.Client
	if !s.Bucket().As(&client) {
		t.Fatal("no *s3.Client under the store")
	}
	uploads := func() int {
		t.Helper()
		out, err := client.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket})
		if err != nil {
			t.Fatalf("ListMultipartUploads: %v", err)
		}
		return len(out.Uploads)
	}
	if n := uploads(); n != 0 {
		t.Fatalf("%d incomplete multipart uploads left by the suite", n)
	}
	b := make([]byte, blobtest.MidWriteSize)
	for _, commit := range []bool{false, true} {
		w, err := s.Create(ctx, "big")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
		if n := uploads(); n != 1 {
			t.Fatalf("mid-write: %d multipart uploads, want 1", n)
		}
		if !commit {
			w.Abort()
			if n := uploads(); n != 0 {
				t.Fatalf("after Abort: %d multipart uploads, want 0", n)
			}
			continue
		}
		if _, err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	key := s.BucketKey("big")
	head, err := client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		t.Fatal(err)
	}
	if etag := *head.ETag; !strings.Contains(etag, "-") {
		t.Fatalf("ETag %s is not a multipart ETag", etag)
	}
	if n := uploads(); n != 0 {
		t.Fatalf("after Close: %d multipart uploads, want 0", n)
	}
}

func TestOpenRefusesBadURLs(t *testing.T) {
	for _, tc := range []struct{ url, want string }{
		{"", "empty store URL"},
		{"   ", "empty store URL"},
		{"/var/sluice/checkpoints", "has no scheme: for a local directory use file:///var/sluice/checkpoints"},
		{"checkpoints", "has no scheme"},
		{"hdfs://namenode/checkpoints", `unsupported scheme "hdfs"`},
		{"file://./checkpoints", "relative file path"},
		{"file:checkpoints", "relative file path"},
		{"file://var/sluice", "three slashes, file:///var/sluice"},
		{"file://", "names no directory"},
		{"file:///", "names no directory"},
		{"file:///tmp/x?bogus=1", `invalid query parameter "bogus"`},
		{"s3:///prefix", "names no bucket: use s3://<bucket>/<prefix>"},
		{"s3://", "names no bucket"},
		{"gs://", "names no bucket"},
		{"azblob://", "names no container"},
		{"s3://bucket/a//b", "invalid prefix"},
		{"s3://bucket/../b", "invalid prefix"},
		{"s3://bucket/p?prefix=q", "put the prefix in the path"},
		{"s3://key:secret@bucket/p", "contains credentials"},
		{"s3://bucket/p?frobnicate=1", `unknown query parameter "frobnicate"`},
		{"mem://?x=1", "mem:// takes none"},
		{"s3://bucket/p#frag", "fragment"},
		{"%zz", "does not parse"},
	} {
		s, err := blobstore.Open(context.Background(), tc.url)
		if err == nil {
			_ = s.Close()
			t.Errorf("Open(%q) succeeded", tc.url)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
			t.Errorf("Open(%q) = %q, want one line containing %q", tc.url, msg, tc.want)
		}
		if strings.Contains(msg, "secret") {
			t.Errorf("Open(%q) = %q leaks the secret", tc.url, msg)
		}
	}
}

func TestOpenURLForms(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ url, want string }{
		{"file://" + dir + "/a/b/", "file://" + dir + "/a/b"},
		{"file://localhost" + dir + "/c", "file://" + dir + "/c"},
		{"FILE://" + dir + "/d", "file://" + dir + "/d"},
		{"mem://", "mem:///"},
		{"mem://name/some/prefix/", "mem://name/some/prefix/"},
		// The S3 driver opens without network access; the prefix is the store's.
		{"s3://bucket/some/prefix?region=us-east-1&endpoint=http://127.0.0.1:1&use_path_style=true", "s3://bucket/some/prefix/"},
		{"s3://bucket?region=us-east-1", "s3://bucket/"},
	} {
		s := openStore(t, tc.url)
		if s.String() != tc.want {
			t.Errorf("Open(%q).String() = %q, want %q", tc.url, s.String(), tc.want)
		}
	}
}
