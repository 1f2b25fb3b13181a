package blobstore

import (
	"context"
	"crypto/sha256"
	"errors"
	"hash"
	"os"
	"path/filepath"

	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	"gocloud.dev/blob"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Writer writes one file. Nothing is visible under its key until Close returns without
// error; Abort (or a failed Write or Close) leaves nothing behind. A Writer is not safe
// for concurrent use.
type Writer struct {
	s      *Store
	key    string
	bkey   string
	w      *blob.Writer
	cancel context.CancelFunc
	h      hash.Hash
	n      int64
	file   *os.File // file:// only: the temporary file, to fsync before the rename
	err    error    // the first failure; the writer is then aborted
	done   bool     // closed or aborted
}

// errWriterDone is returned by a Writer used after Close or Abort.
var errWriterDone = errors.New("writer already closed or aborted")

// Create starts writing key, replacing any existing object when Close commits. The
// writer computes the size and SHA-256 of what it writes. ctx bounds the whole write:
// canceling it aborts the write.
func (s *Store) Create(ctx context.Context, key string) (*Writer, error) {
	bk, err := s.bucketKey(key)
	if err != nil {
		return nil, err
	}
	// Canceling this context is how gocloud aborts a write (the package documentation
	// says what each driver does then).
	wctx, cancel := context.WithCancel(ctx)
	w := &Writer{s: s, key: key, bkey: bk, cancel: cancel, h: sha256.New()}
	opts := &blob.WriterOptions{
		// A content type turns off sniffing, which would hold back the first 512 bytes.
		ContentType: "application/octet-stream",
	}
	switch {
	case s.fileDir != "":
		opts.BeforeWrite = func(as func(any) bool) error {
			as(&w.file)
			return nil
		}
	case s.s3 != nil:
		opts.BeforeWrite = func(as func(any) bool) error {
			var tm *transfermanager.Client
			if as(&tm) {
				*tm = *newTransferManager(s.s3)
			}
			return nil
		}
	}
	bw, err := s.bucket.NewWriter(wctx, bk, opts)
	if err != nil {
		cancel()
		return nil, s.wrap("create", key, err)
	}
	w.w = bw
	return w, nil
}

// Key returns the key being written.
func (w *Writer) Key() string { return w.key }

// Size returns the number of bytes written so far.
func (w *Writer) Size() int64 { return w.n }

// Write writes p. Some drivers upload in the background, so an error may surface only
// at a later Write or at Close. After an error the writer is aborted.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.done {
		return 0, w.fail("write", errWriterDone)
	}
	n, err := w.w.Write(p)
	w.h.Write(p[:n])
	w.n += int64(n)
	if err != nil {
		err = w.fail("write", err)
		w.Abort()
		return n, err
	}
	return n, nil
}

// Close commits the file and returns its StateFile (path = key, size, SHA-256). The
// file becomes visible, whole, only now. If Close fails, nothing was committed, except
// in two rare cases where the outcome is unknown and the file may be there, whole: the
// service committed but its answer was lost (as with any remote write), or on file://
// the rename succeeded but syncing the directory failed. Callers treat a failed Close
// as "not written" and never reference the key.
func (w *Writer) Close() (*sluicev1.StateFile, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.done {
		return nil, w.fail("close", errWriterDone)
	}
	if w.file != nil {
		// fileblob renames the temporary file at Close without syncing it first.
		if err := w.file.Sync(); err != nil {
			err = w.fail("close", err)
			w.Abort()
			return nil, err
		}
	}
	w.done = true
	err := w.w.Close()
	w.cancel()
	if err != nil {
		return nil, w.fail("close", err)
	}
	if w.file != nil {
		if err := w.s.syncDirs(filepath.Join(w.s.fileDir, filepath.FromSlash(w.bkey))); err != nil {
			return nil, w.fail("close", err)
		}
	}
	return &sluicev1.StateFile{Path: w.key, Size: w.n, Sha256: w.h.Sum(nil)}, nil
}

// Abort discards the write: nothing becomes visible under the key (a file already
// committed there stays). It is a no-op after Close or Abort, so `defer w.Abort()` is
// the way to clean up on every error path. On S3 it waits for the parts in flight to
// finish and then removes the multipart upload (see s3.go).
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	// Cancel first: every driver then fails its Close instead of committing.
	w.cancel()
	_ = w.w.Close()
}

// fail records the first error of the writer, wrapped with its location.
func (w *Writer) fail(op string, err error) error {
	if w.err == nil {
		w.err = w.s.wrap(op, w.key, err)
	}
	return w.err
}
