package blobstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// ErrNotFound is returned (wrapped) when a key does not exist.
var ErrNotFound = errors.New("not found")

// ErrCorrupt is returned (wrapped) when a file's bytes do not match the size or SHA-256
// that its StateFile records.
var ErrCorrupt = errors.New("corrupt")

// Store is a blob store, or a view of one under a directory (Sub). Keys are relative
// to the store: "/"-separated, restricted to letters, digits and ._-=+~ (see the
// package documentation). All methods are safe for concurrent use.
type Store struct {
	bucket  *blob.Bucket
	scheme  string
	display string     // the URL without query, for messages
	prefix  string     // "" or ends in "/"
	fileDir string     // file:// only: the bucket's directory
	s3      *s3.Client // s3:// only: the driver's client
	owner   bool       // Close closes bucket (false for views and named mem:// buckets)

	closeOnce sync.Once
	closeErr  error
}

// String returns the store's location, e.g. "s3://bucket/prefix/" (no query).
func (s *Store) String() string { return s.display }

// Scheme returns the URL scheme of the store: file, mem, s3, gs or azblob.
func (s *Store) Scheme() string { return s.scheme }

// Sub returns a view of the store under the directory dir (relative to s; with or
// without a trailing "/"). A StateFile's path is relative to the store it was written
// through, so checkpoint code writes and reads through Sub(JobDir(jobID)) and restore
// code reads a savepoint through Sub(<savepoint directory>), with the same paths.
// Closing a view does nothing; close the store it came from.
func (s *Store) Sub(dir string) (*Store, error) {
	dir = ensureDir(dir)
	if err := checkPrefix(dir); err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, fmt.Errorf("blobstore: %w: empty directory for Sub", ErrInvalidKey)
	}
	return &Store{
		bucket:  s.bucket,
		scheme:  s.scheme,
		display: s.display + dir,
		prefix:  s.prefix + dir,
		fileDir: s.fileDir,
		s3:      s.s3,
	}, nil
}

// Bucket returns the gocloud bucket under the store and BucketKey the bucket's key for
// a store key. They bypass the store's checks and checksums: for tests (which corrupt
// files behind the store's back) and for tools, never for checkpoint I/O.
func (s *Store) Bucket() *blob.Bucket { return s.bucket }

// BucketKey returns the key of the underlying bucket that the store key key maps to.
func (s *Store) BucketKey(key string) string { return s.prefix + key }

// Close releases the store's resources. Writers and readers must be finished first.
// Closing a view (Sub) or a named mem:// store does nothing.
func (s *Store) Close() error {
	if !s.owner {
		return nil
	}
	s.closeOnce.Do(func() {
		if err := s.bucket.Close(); err != nil {
			s.closeErr = fmt.Errorf("blobstore: close %s: %w", s.display, err)
		}
	})
	return s.closeErr
}

// bucketKey checks key and returns the bucket's key for it.
func (s *Store) bucketKey(key string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	full := s.prefix + key
	if len(full) > maxKeyLen {
		return "", fmt.Errorf("blobstore: %w: %s%s is longer than %d bytes", ErrInvalidKey, s.display, key, maxKeyLen)
	}
	return full, nil
}

// wrap turns a driver error for key into the store's error: ErrNotFound for a missing
// key, else the driver's error, wrapped.
func (s *Store) wrap(op, key string, err error) error {
	if gcerrors.Code(err) == gcerrors.NotFound {
		return fmt.Errorf("blobstore: %s %s%s: %w", op, s.display, key, ErrNotFound)
	}
	return fmt.Errorf("blobstore: %s %s%s: %w", op, s.display, key, err)
}

// WriteFile writes data to key and returns its StateFile. See Create.
func (s *Store) WriteFile(ctx context.Context, key string, data []byte) (*sluicev1.StateFile, error) {
	w, err := s.Create(ctx, key)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		w.Abort()
		return nil, err
	}
	return w.Close()
}

// Inline returns a StateFile that carries data itself (inline_data, no path), with its
// size and SHA-256, for state too small to be worth a file.
func Inline(data []byte) *sluicev1.StateFile {
	sum := sha256.Sum256(data)
	return &sluicev1.StateFile{Size: int64(len(data)), Sha256: sum[:], InlineData: bytes.Clone(data)}
}

// Open opens the file that f describes for reading: from f's inline data when its path
// is empty, else from the store (f.Path is a key of s). The reader checks the bytes
// against f's size and SHA-256 and fails, instead of returning io.EOF, when they do not
// match (an error wrapping ErrCorrupt that names the file and the expected and actual
// values); a file that is longer than f's size fails as soon as the excess is read.
// A missing file gives ErrNotFound. ctx bounds the whole read.
func (s *Store) Open(ctx context.Context, f *sluicev1.StateFile) (io.ReadCloser, error) {
	if f == nil {
		return nil, errors.New("blobstore: Open: nil StateFile")
	}
	if f.GetSize() < 0 {
		return nil, fmt.Errorf("blobstore: open %s: %w: negative size %d in the StateFile", s.name(f), ErrCorrupt, f.GetSize())
	}
	if len(f.GetSha256()) != sha256.Size {
		return nil, fmt.Errorf("blobstore: open %s: %w: the StateFile has no SHA-256 (%d bytes)", s.name(f), ErrCorrupt, len(f.GetSha256()))
	}
	if f.GetPath() == "" {
		return newVerifier(io.NopCloser(bytes.NewReader(f.GetInlineData())), s.name(f), f), nil
	}
	if len(f.GetInlineData()) > 0 {
		return nil, fmt.Errorf("blobstore: open %s: %w: the StateFile has both a path and inline data", s.name(f), ErrCorrupt)
	}
	bk, err := s.bucketKey(f.GetPath())
	if err != nil {
		return nil, err
	}
	var ropts *blob.ReaderOptions
	if s.s3 != nil {
		ropts = s3ReadOptions
	}
	r, err := s.bucket.NewReader(ctx, bk, ropts)
	if err != nil {
		return nil, s.wrap("open", f.GetPath(), err)
	}
	// Fail fast when the store already knows the size is wrong (a truncated file).
	if r.Size() != f.GetSize() {
		_ = r.Close()
		return nil, fmt.Errorf("blobstore: open %s: %w: size mismatch: expected %d bytes, the store has %d", s.name(f), ErrCorrupt, f.GetSize(), r.Size())
	}
	return newVerifier(r, s.name(f), f), nil
}

// ReadAll reads and verifies the whole file that f describes (see Open).
func (s *Store) ReadAll(ctx context.Context, f *sluicev1.StateFile) ([]byte, error) {
	r, err := s.Open(ctx, f)
	if err != nil {
		return nil, err
	}
	size := f.GetSize()
	buf := bytes.NewBuffer(make([]byte, 0, min(size+bytes.MinRead, 64<<20)))
	_, err = buf.ReadFrom(r)
	if cerr := r.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("blobstore: read %s: %w", s.name(f), cerr)
	}
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// name names f in messages: its location, or "inline data".
func (s *Store) name(f *sluicev1.StateFile) string {
	if f.GetPath() == "" {
		return "inline data"
	}
	return s.display + f.GetPath()
}

// Exists reports whether key exists (a write in progress does not).
func (s *Store) Exists(ctx context.Context, key string) (bool, error) {
	bk, err := s.bucketKey(key)
	if err != nil {
		return false, err
	}
	ok, err := s.bucket.Exists(ctx, bk)
	if err != nil {
		return false, s.wrap("stat", key, err)
	}
	return ok, nil
}

// Size returns the size of key in bytes, or an error wrapping ErrNotFound.
func (s *Store) Size(ctx context.Context, key string) (int64, error) {
	bk, err := s.bucketKey(key)
	if err != nil {
		return 0, err
	}
	a, err := s.bucket.Attributes(ctx, bk)
	if err != nil {
		return 0, s.wrap("stat", key, err)
	}
	return a.Size, nil
}

// Delete deletes key. Deleting a key that does not exist is not an error, so that a
// deletion can be retried. (On file:// emptied directories stay; they are harmless and
// List does not show them.)
func (s *Store) Delete(ctx context.Context, key string) error {
	bk, err := s.bucketKey(key)
	if err != nil {
		return err
	}
	if err := s.bucket.Delete(ctx, bk); err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return s.wrap("delete", key, err)
	}
	return nil
}

// RemoveEmptyDirs removes, on file://, every empty directory under the store's
// directory (a view's directory), that directory included once it is empty: what
// deleting every key of a directory leaves behind (see Delete). Other schemes have no
// directories; it does nothing there. A directory that is not empty stays.
func (s *Store) RemoveEmptyDirs() error {
	if s.scheme != SchemeFile || s.fileDir == "" {
		return nil
	}
	root := filepath.Join(s.fileDir, filepath.FromSlash(strings.TrimSuffix(s.prefix, "/")))
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("blobstore: remove empty directories of %s: %w", s.display, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- { // children before their parents
		if ents, err := os.ReadDir(dirs[i]); err == nil && len(ents) == 0 {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("blobstore: remove empty directories of %s: %w", s.display, err)
			}
		}
	}
	return nil
}

// List calls fn for each key that starts with prefix (relative to s, like the keys fn
// receives), in lexicographic order, with its size. The listing is flat: prefix
// "j/chk-7/" lists everything under that directory, while "j/chk-7" would also match
// "j/chk-70/..." (the layout's directory functions end in "/" for this reason). An
// error from fn stops the listing and is returned wrapped. Writes in progress are not
// listed.
func (s *Store) List(ctx context.Context, prefix string, fn func(key string, size int64) error) error {
	if strings.HasPrefix(prefix, "/") || strings.Contains(prefix, "//") || strings.Contains("/"+prefix+"/", "/../") {
		return fmt.Errorf("blobstore: %w: list prefix %q", ErrInvalidKey, prefix)
	}
	it := s.bucket.List(&blob.ListOptions{Prefix: s.prefix + prefix})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return s.wrap("list", prefix, err)
		}
		if obj.IsDir {
			continue
		}
		key, ok := strings.CutPrefix(obj.Key, s.prefix)
		if !ok || key == "" || isTempKey(key) {
			continue
		}
		if err := fn(key, obj.Size); err != nil {
			return fmt.Errorf("blobstore: list %s%s: %w", s.display, prefix, err)
		}
	}
}

// Copy copies the object at src to dst within the store (on the server where the
// service can: S3 CopyObject, GCS rewrite, Azure copy), replacing dst. Like a write, the
// copy is all or nothing. It does not verify checksums; CopyFrom does.
func (s *Store) Copy(ctx context.Context, dst, src string) error {
	bsrc, err := s.bucketKey(src)
	if err != nil {
		return err
	}
	bdst, err := s.bucketKey(dst)
	if err != nil {
		return err
	}
	if err := s.bucket.Copy(ctx, bdst, bsrc, nil); err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound {
			return fmt.Errorf("blobstore: copy %s%s to %s: %w", s.display, src, dst, ErrNotFound)
		}
		return fmt.Errorf("blobstore: copy %s%s to %s: %w", s.display, src, dst, err)
	}
	return s.syncFile(bdst)
}

// CopyFrom streams the file f of the store src (which may be another store, e.g. the
// checkpoint store when s is the savepoint store) to dst in s, verifying f's size and
// SHA-256 on the way, and returns the new StateFile (path dst). An inline f is written
// out as a file.
func (s *Store) CopyFrom(ctx context.Context, dst string, src *Store, f *sluicev1.StateFile) (*sluicev1.StateFile, error) {
	r, err := src.Open(ctx, f)
	if err != nil {
		return nil, err
	}
	defer func() { _ = r.Close() }()
	w, err := s.Create(ctx, dst)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Abort()
		return nil, fmt.Errorf("blobstore: copy %s to %s%s: %w", src.name(f), s.display, dst, err)
	}
	return w.Close()
}

// syncFile makes a committed file:// file and its directories durable (fileblob
// renames without fsync). It does nothing for other schemes.
func (s *Store) syncFile(bucketKey string) error {
	if s.fileDir == "" {
		return nil
	}
	p := filepath.Join(s.fileDir, filepath.FromSlash(bucketKey))
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("blobstore: sync %s: %w", p, err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("blobstore: sync %s: %w", p, err)
	}
	return s.syncDirs(p)
}

// syncDirs fsyncs the directories from the parent of path up to the store's directory,
// so that the new names (and the directories fileblob created for them) survive a
// crash.
func (s *Store) syncDirs(path string) error {
	root := filepath.Clean(s.fileDir)
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		if err := syncDir(dir); err != nil {
			return fmt.Errorf("blobstore: sync directory %s: %w", dir, err)
		}
		if dir == root || len(dir) <= len(root) || dir == filepath.Dir(dir) {
			return nil
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
