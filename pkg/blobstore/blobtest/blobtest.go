// Package blobtest is the conformance suite of blobstore.Store: one set of tests that
// every driver (mem://, file://, S3 through a real server) must pass, and StartS3, which
// runs that real S3 server (versitygw) for this and other packages' tests.
package blobtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Sizes the suite writes. The AWS SDK's transfer manager (under s3blob) sends objects
// below 16 MiB in one PutObject and larger ones as multipart uploads of 8 MiB parts.
// LargeSize is eight parts; MidWriteSize is what a write in progress has written when
// the suite checks that it is not visible: above the threshold, so that on S3 a
// multipart upload is under way (with one part uploading) at that moment.
const (
	LargeSize    = 64 << 20
	MidWriteSize = 20 << 20
)

// Run runs the suite. open returns a new, empty store for the calling test and closes
// it at the end of the test (t.Cleanup); calling it twice in one test gives two
// separate stores.
func Run(t *testing.T, open func(t *testing.T) *blobstore.Store) {
	tests := []struct {
		name string
		fn   func(*testing.T, func(*testing.T) *blobstore.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"NotFound", testNotFound},
		{"Abort", testAbort},
		{"CanceledContextAborts", testCanceledContext},
		{"InvisibleUntilClose", testInvisibleUntilClose},
		{"CorruptDetected", testCorrupt},
		{"TruncatedDetected", testTruncated},
		{"ExtendedDetected", testExtended},
		{"Large", testLarge},
		{"List", testList},
		{"DeleteIdempotent", testDelete},
		{"Copy", testCopy},
		{"CopyFrom", testCopyFrom},
		{"ConcurrentWriters", testConcurrentWriters},
		{"Inline", testInline},
		{"Sub", testSub},
		{"InvalidKeys", testInvalidKeys},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// data returns n deterministic pseudo-random bytes.
func data(seed uint64, n int) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8(seedOf(seed)).Read(b)
	return b
}

func seedOf(seed uint64) [32]byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	return s
}

func checkFile(t *testing.T, f *sluicev1.StateFile, key string, want []byte) {
	t.Helper()
	sum := sha256.Sum256(want)
	if f.GetPath() != key || f.GetSize() != int64(len(want)) || !bytes.Equal(f.GetSha256(), sum[:]) || len(f.GetInlineData()) != 0 {
		t.Fatalf("StateFile = {path %q size %d sha256 %x}, want {path %q size %d sha256 %x}",
			f.GetPath(), f.GetSize(), f.GetSha256(), key, len(want), sum)
	}
}

func mustWrite(t *testing.T, ctx context.Context, s *blobstore.Store, key string, b []byte) *sluicev1.StateFile {
	t.Helper()
	f, err := s.WriteFile(ctx, key, b)
	if err != nil {
		t.Fatalf("WriteFile(%s): %v", key, err)
	}
	checkFile(t, f, key, b)
	return f
}

func mustRead(t *testing.T, ctx context.Context, s *blobstore.Store, f *sluicev1.StateFile, want []byte) {
	t.Helper()
	got, err := s.ReadAll(ctx, f)
	if err != nil {
		t.Fatalf("ReadAll(%s): %v", f.GetPath(), err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("ReadAll(%s): %d bytes that differ from the %d written", f.GetPath(), len(got), len(want))
	}
}

// visible checks that Exists, Size, List and Open agree on whether key exists.
func visible(t *testing.T, ctx context.Context, s *blobstore.Store, key string, want bool) {
	t.Helper()
	ok, err := s.Exists(ctx, key)
	if err != nil {
		t.Fatalf("Exists(%s): %v", key, err)
	}
	listed := false
	if err := s.List(ctx, "", func(k string, _ int64) error {
		if k == key {
			listed = true
		}
		return nil
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	_, serr := s.Size(ctx, key)
	// Open with a made-up checksum: only whether the key is found matters here.
	r, oerr := s.Open(ctx, &sluicev1.StateFile{Path: key, Size: 0, Sha256: make([]byte, 32)})
	if oerr == nil {
		_ = r.Close()
	}
	found := oerr == nil || !errors.Is(oerr, blobstore.ErrNotFound)
	if ok != want || listed != want || (serr == nil) != want || found != want {
		t.Fatalf("%s: Exists %v, listed %v, Size error %v, Open error %v; want visible=%v", key, ok, listed, serr, oerr, want)
	}
	if !want && !errors.Is(serr, blobstore.ErrNotFound) {
		t.Fatalf("Size(%s) = %v, want ErrNotFound", key, serr)
	}
}

func testRoundTrip(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	for i, n := range []int{0, 1, 511, 512, 4096, 1<<20 + 3} {
		key := blobstore.PrivateKey("00112233445566778899aabbccddeeff", 1, fmt.Sprintf("f%d.state", i))
		b := data(uint64(i), n)
		f := mustWrite(t, ctx, s, key, b)
		mustRead(t, ctx, s, f, b)
		visible(t, ctx, s, key, true)
		if size, err := s.Size(ctx, key); err != nil || size != int64(n) {
			t.Fatalf("Size(%s) = %d, %v; want %d", key, size, err, n)
		}
		// Streamed, in small writes and small reads.
		w, err := s.Create(ctx, key+"-2")
		if err != nil {
			t.Fatal(err)
		}
		for rest := b; len(rest) > 0; {
			k := min(len(rest), 1000)
			if _, err := w.Write(rest[:k]); err != nil {
				t.Fatal(err)
			}
			rest = rest[k:]
		}
		if w.Size() != int64(n) {
			t.Fatalf("Writer.Size = %d, want %d", w.Size(), n)
		}
		f2, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		checkFile(t, f2, key+"-2", b)
		w.Abort() // a no-op after Close
		if _, err := w.Close(); err == nil {
			t.Fatal("second Close succeeded")
		}
		r, err := s.Open(ctx, f2)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(iotestOneByte(r, n < 5000))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("streamed read: %d bytes, %v", len(got), err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Overwrite: the new content replaces the old.
	f := mustWrite(t, ctx, s, "over", []byte("old"))
	mustRead(t, ctx, s, f, []byte("old"))
	f = mustWrite(t, ctx, s, "over", []byte("new content"))
	mustRead(t, ctx, s, f, []byte("new content"))
}

// iotestOneByte reads one byte at a time when small is set (to test the verifier at
// every boundary).
func iotestOneByte(r io.Reader, small bool) io.Reader {
	if !small {
		return r
	}
	return readerFunc(func(p []byte) (int, error) {
		if len(p) == 0 {
			return 0, nil
		}
		return r.Read(p[:1])
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func testNotFound(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	sum := sha256.Sum256(nil)
	f := &sluicev1.StateFile{Path: "no/such/file", Size: 0, Sha256: sum[:]}
	if _, err := s.Open(ctx, f); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Open(missing) = %v, want ErrNotFound", err)
	} else if !strings.Contains(err.Error(), "no/such/file") {
		t.Fatalf("error %q does not name the file", err)
	}
	if _, err := s.ReadAll(ctx, f); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("ReadAll(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.Size(ctx, "no/such/file"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Size(missing) = %v, want ErrNotFound", err)
	}
	if err := s.Copy(ctx, "dst", "no/such/file"); !errors.Is(err, blobstore.ErrNotFound) {
		t.Fatalf("Copy(missing) = %v, want ErrNotFound", err)
	}
	visible(t, ctx, s, "no/such/file", false)
	// A directory is not a file.
	mustWrite(t, ctx, s, "dir/file", []byte("x"))
	visible(t, ctx, s, "dir", false)
}

func testAbort(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	for _, n := range []int{0, 100, MidWriteSize} {
		key := fmt.Sprintf("chk-1/aborted-%d", n)
		w, err := s.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data(1, n)); err != nil {
			t.Fatal(err)
		}
		w.Abort()
		w.Abort()
		if _, err := w.Write([]byte("x")); err == nil {
			t.Fatal("Write after Abort succeeded")
		}
		if _, err := w.Close(); err == nil {
			t.Fatal("Close after Abort succeeded")
		}
		visible(t, ctx, s, key, false)
	}
	// Aborting a rewrite leaves the old content.
	f := mustWrite(t, ctx, s, "kept", []byte("committed"))
	w, err := s.Create(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data(2, 1000)); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	mustRead(t, ctx, s, f, []byte("committed"))
	var keys []string
	if err := s.List(ctx, "", func(k string, _ int64) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"kept"}) {
		t.Fatalf("after aborts List = %q, want [kept]", keys)
	}
}

func testCanceledContext(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s := open(t)
	ctx, cancel := context.WithCancel(ctxFor(t))
	w, err := s.Create(ctx, "canceled")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = w.Write(data(3, MidWriteSize)) // may fail already
	cancel()
	if _, err := w.Close(); err == nil {
		t.Fatal("Close after the context was canceled succeeded")
	}
	visible(t, ctxFor(t), s, "canceled", false)
}

func testInvisibleUntilClose(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	old := mustWrite(t, ctx, s, "replaced", []byte("previous version"))
	b := data(4, MidWriteSize+12345)
	for _, key := range []string{"fresh", "replaced"} {
		w, err := s.Create(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b[:MidWriteSize]); err != nil {
			t.Fatal(err)
		}
		// Mid-write, a second reader sees no new object: nothing for a new key, the
		// previous version, whole, for an existing one.
		if key == "fresh" {
			visible(t, ctx, s, key, false)
		} else {
			mustRead(t, ctx, s, old, []byte("previous version"))
		}
		if _, err := w.Write(b[MidWriteSize:]); err != nil {
			t.Fatal(err)
		}
		f, err := w.Close()
		if err != nil {
			t.Fatal(err)
		}
		checkFile(t, f, key, b)
		visible(t, ctx, s, key, true)
		mustRead(t, ctx, s, f, b)
	}
}

// overwrite replaces key's bytes behind the store's back, through the raw bucket.
func overwrite(t *testing.T, ctx context.Context, s *blobstore.Store, key string, b []byte) {
	t.Helper()
	if err := s.Bucket().WriteAll(ctx, s.BucketKey(key), b, nil); err != nil {
		t.Fatalf("raw overwrite of %s: %v", key, err)
	}
}

// mustFail reads f whole, streamed and with ReadAll, and checks that both fail with
// ErrCorrupt and a message containing want.
func mustFail(t *testing.T, ctx context.Context, s *blobstore.Store, f *sluicev1.StateFile, want string) {
	t.Helper()
	_, err := s.ReadAll(ctx, f)
	if !errors.Is(err, blobstore.ErrCorrupt) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), f.GetPath()) {
		t.Fatalf("ReadAll(%s) = %v, want ErrCorrupt naming the file and %q", f.GetPath(), err, want)
	}
	r, err := s.Open(ctx, f)
	if err != nil {
		if errors.Is(err, blobstore.ErrCorrupt) && strings.Contains(err.Error(), want) {
			return // detected at Open, from the store's size
		}
		t.Fatalf("Open(%s) = %v", f.GetPath(), err)
	}
	defer func() { _ = r.Close() }()
	n, err := io.Copy(io.Discard, r)
	if err == nil || !errors.Is(err, blobstore.ErrCorrupt) {
		t.Fatalf("streamed read of %s: %d bytes, %v; want ErrCorrupt", f.GetPath(), n, err)
	}
	if _, err2 := r.Read(make([]byte, 10)); err2 == nil || err2 == io.EOF {
		t.Fatalf("read after the failure returned %v, want the same error", err2)
	}
}

func testCorrupt(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	for _, n := range []int{1, 4096, 1 << 20} {
		key := fmt.Sprintf("shared/corrupt-%d", n)
		b := data(5, n)
		f := mustWrite(t, ctx, s, key, b)
		bad := bytes.Clone(b)
		bad[n/2] ^= 0x40 // same size, one bit flipped
		overwrite(t, ctx, s, key, bad)
		if size, err := s.Size(ctx, key); err != nil || size != int64(n) {
			t.Fatalf("Size after corruption = %d, %v", size, err)
		}
		mustFail(t, ctx, s, f, "sha256 mismatch")
	}
	// A StateFile that records the wrong checksum fails the same way.
	f := mustWrite(t, ctx, s, "good", []byte("good bytes"))
	f.Sha256[0] ^= 1
	mustFail(t, ctx, s, f, "sha256 mismatch")
}

func testTruncated(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	b := data(6, 100000)
	f := mustWrite(t, ctx, s, "chk-3/truncated", b)
	overwrite(t, ctx, s, "chk-3/truncated", b[:len(b)-1])
	mustFail(t, ctx, s, f, "size mismatch")
	overwrite(t, ctx, s, "chk-3/truncated", nil)
	mustFail(t, ctx, s, f, "size mismatch")
}

func testExtended(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	b := data(7, 5000)
	f := mustWrite(t, ctx, s, "chk-3/extended", b)
	overwrite(t, ctx, s, "chk-3/extended", append(bytes.Clone(b), 0))
	mustFail(t, ctx, s, f, "size mismatch")
}

func testLarge(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	const chunk = 1 << 20
	key := "shared/large.sst"
	w, err := s.Create(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	src := rand.NewChaCha8(seedOf(8))
	h := sha256.New()
	buf := make([]byte, chunk)
	for written := 0; written < LargeSize; written += chunk {
		_, _ = src.Read(buf)
		h.Write(buf)
		if _, err := w.Write(buf); err != nil {
			t.Fatalf("write at %d: %v", written, err)
		}
	}
	f, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	if f.GetSize() != LargeSize || !bytes.Equal(f.GetSha256(), h.Sum(nil)) {
		t.Fatalf("StateFile = size %d sha256 %x, want %d %x", f.GetSize(), f.GetSha256(), LargeSize, h.Sum(nil))
	}
	if size, err := s.Size(ctx, key); err != nil || size != LargeSize {
		t.Fatalf("Size = %d, %v", size, err)
	}
	r, err := s.Open(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Close() }()
	// Compare the stream with the source, chunk by chunk.
	src = rand.NewChaCha8(seedOf(8))
	got := make([]byte, chunk)
	for off := 0; off < LargeSize; off += chunk {
		if _, err := io.ReadFull(r, got); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		_, _ = src.Read(buf)
		if !bytes.Equal(got, buf) {
			t.Fatalf("bytes differ in the chunk at %d", off)
		}
	}
	if n, err := r.Read(got); n != 0 || err != io.EOF {
		t.Fatalf("after the end: %d, %v; want 0, EOF", n, err)
	}
}

func testList(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	sizes := map[string]int{"a/1": 1, "a/2": 22, "a/b/3": 333, "ab/4": 4, "b/5": 0, "chk-7/x": 7, "chk-70/x": 70}
	for k, n := range sizes {
		mustWrite(t, ctx, s, k, data(9, n))
	}
	list := func(prefix string) []string {
		t.Helper()
		var got []string
		if err := s.List(ctx, prefix, func(k string, size int64) error {
			if size != int64(sizes[k]) {
				t.Errorf("List: %s has size %d, want %d", k, size, sizes[k])
			}
			got = append(got, k)
			return nil
		}); err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		return got
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a/1", "a/2", "a/b/3", "ab/4", "b/5", "chk-7/x", "chk-70/x"}},
		{"a/", []string{"a/1", "a/2", "a/b/3"}},
		{"a", []string{"a/1", "a/2", "a/b/3", "ab/4"}},
		{"a/b/", []string{"a/b/3"}},
		{"chk-7/", []string{"chk-7/x"}},
		{"zzz/", nil},
	} {
		if got := list(tc.prefix); !slices.Equal(got, tc.want) {
			t.Errorf("List(%q) = %q, want %q", tc.prefix, got, tc.want)
		}
	}
	stop := errors.New("stop")
	calls := 0
	err := s.List(ctx, "", func(string, int64) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("List with a failing callback = %v after %d calls, want stop after 1", err, calls)
	}
}

func testDelete(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	mustWrite(t, ctx, s, "chk-1/a", []byte("a"))
	mustWrite(t, ctx, s, "chk-1/b", []byte("b"))
	for range 2 {
		if err := s.Delete(ctx, "chk-1/a"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		visible(t, ctx, s, "chk-1/a", false)
	}
	if err := s.Delete(ctx, "never/existed"); err != nil {
		t.Fatalf("Delete(missing) = %v", err)
	}
	visible(t, ctx, s, "chk-1/b", true)
}

func testCopy(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	b := data(10, 300000)
	f := mustWrite(t, ctx, s, "chk-4/src", b)
	dir := blobstore.SavepointDir("00112233445566778899aabbccddeeff")
	dst := dir + "chk-4/src"
	if err := s.Copy(ctx, dst, "chk-4/src"); err != nil {
		t.Fatal(err)
	}
	copied := &sluicev1.StateFile{Path: dst, Size: f.GetSize(), Sha256: f.GetSha256()}
	mustRead(t, ctx, s, copied, b)
	mustRead(t, ctx, s, f, b) // the source stays
	// Copy replaces an existing destination.
	mustWrite(t, ctx, s, "other", []byte("x"))
	if err := s.Copy(ctx, "other", "chk-4/src"); err != nil {
		t.Fatal(err)
	}
	mustRead(t, ctx, s, &sluicev1.StateFile{Path: "other", Size: f.GetSize(), Sha256: f.GetSha256()}, b)
}

func testCopyFrom(t *testing.T, open func(*testing.T) *blobstore.Store) {
	src, dst, ctx := open(t), open(t), ctxFor(t)
	b := data(11, 200000)
	f := mustWrite(t, ctx, src, "shared/f", b)
	g, err := dst.CopyFrom(ctx, "sp/shared/f", src, f)
	if err != nil {
		t.Fatal(err)
	}
	checkFile(t, g, "sp/shared/f", b)
	mustRead(t, ctx, dst, g, b)
	if ok, _ := src.Exists(ctx, "sp/shared/f"); ok {
		t.Fatal("CopyFrom wrote to the source store")
	}
	// A corrupt source is not copied.
	bad := bytes.Clone(b)
	bad[0] ^= 1
	overwrite(t, ctx, src, "shared/f", bad)
	if _, err := dst.CopyFrom(ctx, "sp/shared/g", src, f); !errors.Is(err, blobstore.ErrCorrupt) {
		t.Fatalf("CopyFrom(corrupt) = %v, want ErrCorrupt", err)
	}
	visible(t, ctx, dst, "sp/shared/g", false)
	// An inline file is written out.
	in := blobstore.Inline([]byte("inline state"))
	h, err := dst.CopyFrom(ctx, "sp/inline", src, in)
	if err != nil {
		t.Fatal(err)
	}
	mustRead(t, ctx, dst, h, []byte("inline state"))
}

func testConcurrentWriters(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	const writers = 16
	files := make([]*sluicev1.StateFile, writers)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			key := blobstore.SharedPath(fmt.Sprintf("w%02d.sst", i))
			w, err := s.Create(ctx, key)
			if err != nil {
				errs <- err
				return
			}
			defer w.Abort()
			b := data(uint64(100+i), 100000+i*1000)
			for rest := b; len(rest) > 0; {
				k := min(len(rest), 7000)
				if _, err := w.Write(rest[:k]); err != nil {
					errs <- err
					return
				}
				rest = rest[k:]
			}
			f, err := w.Close()
			if err != nil {
				errs <- err
				return
			}
			files[i] = f
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var wg2 sync.WaitGroup
	for i, f := range files {
		wg2.Go(func() {
			got, err := s.ReadAll(ctx, f)
			if err != nil || !bytes.Equal(got, data(uint64(100+i), 100000+i*1000)) {
				t.Errorf("file %d: %d bytes, %v", i, len(got), err)
			}
		})
	}
	wg2.Wait()
	n := 0
	if err := s.List(ctx, "shared/", func(string, int64) error { n++; return nil }); err != nil || n != writers {
		t.Fatalf("List found %d files (%v), want %d", n, err, writers)
	}
}

func testInline(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	for _, b := range [][]byte{nil, []byte("small state")} {
		f := blobstore.Inline(b)
		if f.GetPath() != "" {
			t.Fatalf("inline file has path %q", f.GetPath())
		}
		mustRead(t, ctx, s, f, b)
	}
	f := blobstore.Inline([]byte("small state"))
	f.InlineData[0] ^= 1
	if _, err := s.ReadAll(ctx, f); !errors.Is(err, blobstore.ErrCorrupt) || !strings.Contains(err.Error(), "inline") {
		t.Fatalf("corrupt inline data: %v, want ErrCorrupt naming inline data", err)
	}
	if _, err := s.ReadAll(ctx, &sluicev1.StateFile{InlineData: []byte("no checksum")}); !errors.Is(err, blobstore.ErrCorrupt) {
		t.Fatalf("inline data without a checksum: %v, want ErrCorrupt", err)
	}
	visible(t, ctx, s, "anything", false)
}

func testSub(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	const job = "0123456789abcdef0123456789abcdef"
	jv, err := s.Sub(blobstore.JobDir(job))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = jv.Close() }()
	f := mustWrite(t, ctx, jv, blobstore.SharedPath("x.sst"), []byte("shared"))
	if f.GetPath() != "shared/x.sst" {
		t.Fatalf("path in the job view = %q", f.GetPath())
	}
	visible(t, ctx, s, blobstore.SharedKey(job, "x.sst"), true)
	var keys []string
	if err := jv.List(ctx, "", func(k string, _ int64) error { keys = append(keys, k); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"shared/x.sst"}) {
		t.Fatalf("List in the view = %q", keys)
	}
	// A savepoint made by copying keeps the job-relative paths: the same StateFile
	// reads through the savepoint's view.
	dir := blobstore.SavepointDir(job)
	if err := s.Copy(ctx, dir+f.GetPath(), blobstore.SharedKey(job, "x.sst")); err != nil {
		t.Fatal(err)
	}
	sp, err := s.Sub(dir)
	if err != nil {
		t.Fatal(err)
	}
	mustRead(t, ctx, sp, f, []byte("shared"))
}

func testInvalidKeys(t *testing.T, open func(*testing.T) *blobstore.Store) {
	s, ctx := open(t), ctxFor(t)
	for _, key := range []string{"", "/abs", "a//b", "a/", "../x", "a/../b", "./a", "a b", "x.1f2e.tmp", "k.attrs", "a\\b", "é"} {
		if _, err := s.Create(ctx, key); !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("Create(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := s.Delete(ctx, key); !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	for _, prefix := range []string{"/abs", "a//", "../", "a/../b"} {
		if err := s.List(ctx, prefix, func(string, int64) error { return nil }); !errors.Is(err, blobstore.ErrInvalidKey) {
			t.Errorf("List(%q) = %v, want ErrInvalidKey", prefix, err)
		}
	}
	if _, err := s.Create(ctx, strings.Repeat("k", 1025)); !errors.Is(err, blobstore.ErrInvalidKey) {
		t.Errorf("Create(1025 bytes) = %v, want ErrInvalidKey", err)
	}
}
