package blobstore

import (
	"testing"
)

// TestFileWriterSyncs checks that file:// writers get hold of fileblob's temporary
// file, which Close fsyncs before the rename: without it a committed file could be
// empty after a machine crash, and nothing else would notice the hook going missing.
func TestFileWriterSyncs(t *testing.T) {
	s, err := Open(t.Context(), "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	w, err := s.Create(t.Context(), "a/b")
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if w.file == nil {
		t.Fatal("the file:// writer has no temporary file to fsync")
	}
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
