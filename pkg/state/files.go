package state

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// StateWriter creates the files of a snapshot. The runtime provides it: the blob-store
// implementation writes under the checkpoint's directory; DirStore writes to a local
// directory. Create may be called from the asynchronous snapshot goroutine, and several
// snapshots may use one StateWriter concurrently.
type StateWriter interface {
	// Create starts a new file. name is a hint, unique within the checkpoint for a
	// given operator and subtask (KeyedOptions.FileName); the writer may place it under
	// a directory or prefix, and reports the final path in the returned StateFile.
	Create(ctx context.Context, name string) (FileWriter, error)
	// CreateShared starts a file shared between checkpoints: an immutable file of an
	// incremental backend (a RocksDB SST file) that later checkpoints reference instead
	// of writing it again. It lives outside every checkpoint's directory (the blob store
	// writes "shared/<name>" in the job's directory) and is deleted by the jobmanager's
	// shared-file registry once no retained checkpoint references it, never by the
	// checkpoint that wrote it. The backend makes name unique across all checkpoints of
	// the job (e.g. with a random instance ID and the checkpoint ID), so that two
	// checkpoints never write the same shared file; the reported path is what handles
	// reference.
	CreateShared(ctx context.Context, name string) (FileWriter, error)
}

// StreamOpener is implemented by StateReaders that can stream a file rather than open
// it for random access (the blob store does not have to hold the file in memory).
// Backends that copy files to local disk (RocksDB) prefer it. The stream is verified
// like Open's result: at its end a size or SHA-256 mismatch is an error wrapping
// ErrCorrupt instead of io.EOF.
type StreamOpener interface {
	OpenStream(ctx context.Context, f *sluicev1.StateFile) (io.ReadCloser, error)
}

// CheckpointListener is implemented by keyed backends that want to know which
// checkpoints completed: an incremental backend reuses in a new snapshot only files of
// a checkpoint it was told completed (a checkpoint that is not confirmed may still be
// aborted and its files deleted). The task goroutine calls it; a notification may be
// lost or arrive late, and then covers every earlier checkpoint too.
type CheckpointListener interface {
	NotifyCheckpointComplete(checkpointID int64)
}

// FullSnapshotForcer is implemented by incremental keyed backends: ForceFullSnapshot
// makes the next Snapshot reuse no file of an earlier checkpoint, so that the
// checkpoint it belongs to depends on no other (the jobmanager bounds the incremental
// chain that way, and starts a new chain after a restore from files it does not own).
// The task goroutine calls it.
type FullSnapshotForcer interface {
	ForceFullSnapshot()
}

// FileWriter is a file being written. Exactly one of Close and Abort ends it.
type FileWriter interface {
	io.Writer
	// Close completes the file and returns its handle: path, size and SHA-256 of the
	// bytes written (see Digest). After Close returns an error the file does not exist.
	Close() (*sluicev1.StateFile, error)
	// Abort discards the partial file.
	Abort() error
}

// StateReader opens the files of a snapshot for restore.
type StateReader interface {
	// Open returns the contents of f for random access, verified against f's size and
	// SHA-256 (see VerifyFile and NewVerifyingReader): a mismatch is an error wrapping
	// ErrCorrupt that names the file. f.inline_data is never passed to Open: callers
	// use OpenStateFile, which handles inline data itself.
	Open(ctx context.Context, f *sluicev1.StateFile) (FileReader, error)
}

// FileReader is a verified state file open for reading.
type FileReader interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// CorruptError reports a state file that failed verification or decoding. It matches
// ErrCorrupt with errors.Is.
type CorruptError struct {
	// Path is the file's path, or "<inline>" for inline data.
	Path   string
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("state file %s is corrupt: %s", e.Path, e.Reason)
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }

// FileLabel names f in errors: its path, or "<inline>".
func FileLabel(f *sluicev1.StateFile) string {
	if f.GetPath() == "" {
		return "<inline>"
	}
	return f.GetPath()
}

// Digest computes the size and SHA-256 of the bytes written to it: the fields of a
// StateFile. Blob-store writers use it to fill in the handle.
type Digest struct {
	h hash.Hash
	n int64
}

// NewDigest returns an empty digest.
func NewDigest() *Digest { return &Digest{h: sha256.New()} }

// Write hashes p; it never fails.
func (d *Digest) Write(p []byte) (int, error) {
	d.h.Write(p)
	d.n += int64(len(p))
	return len(p), nil
}

// Size is the number of bytes written.
func (d *Digest) Size() int64 { return d.n }

// Sum is the SHA-256 of the bytes written.
func (d *Digest) Sum() []byte { return d.h.Sum(nil) }

// StateFile returns a StateFile for path with the digest's size and SHA-256.
func (d *Digest) StateFile(path string) *sluicev1.StateFile {
	return &sluicev1.StateFile{Path: path, Size: d.n, Sha256: d.Sum()}
}

// Check compares the digest with f, returning a *CorruptError naming f on mismatch.
func (d *Digest) Check(f *sluicev1.StateFile) error {
	if d.n != f.GetSize() {
		return &CorruptError{Path: FileLabel(f), Reason: fmt.Sprintf("size %d, want %d (truncated or extended)", d.n, f.GetSize())}
	}
	if len(f.GetSha256()) != sha256.Size {
		return &CorruptError{Path: FileLabel(f), Reason: fmt.Sprintf("handle has a %d-byte sha256, want %d bytes", len(f.GetSha256()), sha256.Size)}
	}
	if got := d.Sum(); !bytes.Equal(got, f.GetSha256()) {
		return &CorruptError{Path: FileLabel(f), Reason: fmt.Sprintf("sha256 %s, want %s", hex.EncodeToString(got), hex.EncodeToString(f.GetSha256()))}
	}
	return nil
}

// VerifyFile reads r to EOF and checks its size and SHA-256 against f. It stops reading
// as soon as r yields more than f's size. Errors from r are returned as they are;
// mismatches are *CorruptError.
func VerifyFile(f *sluicev1.StateFile, r io.Reader) error {
	d := NewDigest()
	// Read at most one byte more than expected: enough to detect an extended file
	// without reading an arbitrarily long one.
	if _, err := io.Copy(d, io.LimitReader(r, f.GetSize()+1)); err != nil {
		return fmt.Errorf("state file %s: %w", FileLabel(f), err)
	}
	return d.Check(f)
}

// VerifyBytes checks b against f's size and SHA-256.
func VerifyBytes(f *sluicev1.StateFile, b []byte) error {
	d := NewDigest()
	d.Write(b)
	return d.Check(f)
}

// NewVerifyingReader returns a reader of r that hashes what passes through it and, at
// the end of r, returns a *CorruptError instead of io.EOF when the size or SHA-256 does
// not match f (also as soon as more than f's size has been read). Use it to verify a
// download while copying it to a local file.
func NewVerifyingReader(f *sluicev1.StateFile, r io.Reader) io.Reader {
	return &verifyingReader{f: f, r: r, d: NewDigest()}
}

type verifyingReader struct {
	f   *sluicev1.StateFile
	r   io.Reader
	d   *Digest
	err error
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.d.Write(p[:n])
	if v.d.Size() > v.f.GetSize() {
		v.err = v.d.Check(v.f)
		return n, v.err
	}
	if err == io.EOF {
		if cerr := v.d.Check(v.f); cerr != nil {
			v.err = cerr
			return n, cerr
		}
		v.err = io.EOF
	} else if err != nil {
		v.err = err
	}
	return n, err
}

// bytesFile is a FileReader over memory.
type bytesFile struct{ *bytes.Reader }

func (bytesFile) Close() error { return nil }

// BytesReader returns a FileReader over b (which it does not copy).
func BytesReader(b []byte) FileReader { return bytesFile{bytes.NewReader(b)} }

// OpenStateFile opens f for reading: inline data is verified and served from memory,
// anything else goes through r.Open (which verifies). A missing r for a file that is not
// inline is an error.
func OpenStateFile(ctx context.Context, f *sluicev1.StateFile, r StateReader) (FileReader, error) {
	if f == nil {
		return nil, errors.New("state: nil state file")
	}
	if f.GetPath() == "" {
		if err := VerifyBytes(f, f.GetInlineData()); err != nil {
			return nil, err
		}
		return BytesReader(f.GetInlineData()), nil
	}
	if r == nil {
		return nil, fmt.Errorf("state file %s: no StateReader to open it", f.GetPath())
	}
	fr, err := r.Open(ctx, f)
	if err != nil {
		return nil, err
	}
	if fr.Size() != f.GetSize() {
		fr.Close()
		return nil, &CorruptError{Path: f.GetPath(), Reason: fmt.Sprintf("size %d, want %d", fr.Size(), f.GetSize())}
	}
	return fr, nil
}

// SpillWriter writes a snapshot file that is inlined into its StateFile when it stays
// below a threshold, and otherwise spills into a file created by a StateWriter: it
// buffers up to the threshold in memory, and creates the file only when the data
// outgrows it. Exactly one of Close and Abort ends it.
type SpillWriter struct {
	ctx       context.Context
	w         StateWriter
	name      string
	threshold int
	buf       []byte
	file      FileWriter
	err       error
}

// NewSpillWriter returns a SpillWriter that inlines files smaller than threshold bytes
// (threshold <= 0: never inline) and creates name through w otherwise.
func NewSpillWriter(ctx context.Context, w StateWriter, name string, threshold int) *SpillWriter {
	return &SpillWriter{ctx: ctx, w: w, name: name, threshold: max(threshold, 0)}
}

// Write appends p.
func (s *SpillWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.file == nil {
		if len(s.buf)+len(p) < s.threshold {
			s.buf = append(s.buf, p...)
			return len(p), nil
		}
		f, err := s.w.Create(s.ctx, s.name)
		if err != nil {
			s.err = fmt.Errorf("state: create %s: %w", s.name, err)
			return 0, s.err
		}
		s.file = f
		if len(s.buf) > 0 {
			if _, err := f.Write(s.buf); err != nil {
				s.err = fmt.Errorf("state: write %s: %w", s.name, err)
				return 0, s.err
			}
		}
		s.buf = nil
	}
	n, err := s.file.Write(p)
	if err != nil {
		s.err = fmt.Errorf("state: write %s: %w", s.name, err)
	}
	return n, s.err
}

// Close completes the file: an inline StateFile (empty path, inline_data, size and
// SHA-256 set) or the StateFile of the created file.
func (s *SpillWriter) Close() (*sluicev1.StateFile, error) {
	if s.err != nil {
		s.Abort()
		return nil, s.err
	}
	s.err = errors.New("state: spill writer closed")
	if s.file == nil {
		d := NewDigest()
		d.Write(s.buf)
		f := d.StateFile("")
		f.InlineData = s.buf
		s.buf = nil
		return f, nil
	}
	f, err := s.file.Close()
	s.file = nil
	if err != nil {
		return nil, fmt.Errorf("state: close %s: %w", s.name, err)
	}
	return f, nil
}

// Abort discards what was written.
func (s *SpillWriter) Abort() error {
	s.buf = nil
	if s.err == nil {
		s.err = errors.New("state: spill writer aborted")
	}
	if s.file != nil {
		f := s.file
		s.file = nil
		return f.Abort()
	}
	return nil
}
