package state

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// DirStore is a StateWriter and StateReader over a local directory: files are written
// to a temporary name, hashed while written, synced and renamed into place on Close;
// Open verifies the whole file before returning it. It suits tests, local runs and the
// local recovery copy.
type DirStore struct {
	Dir string
}

var _ StateWriter = DirStore{}
var _ StateReader = DirStore{}

func (d DirStore) path(name string) (string, error) {
	if !filepath.IsLocal(name) {
		return "", fmt.Errorf("state: file name %q is not a local path", name)
	}
	return filepath.Join(d.Dir, filepath.FromSlash(name)), nil
}

// Create starts name (a slash-separated path relative to Dir).
func (d DirStore) Create(ctx context.Context, name string) (FileWriter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return nil, err
	}
	return &dirFile{f: tmp, final: p, name: name, d: NewDigest()}, nil
}

// CreateShared starts the shared file "shared/<name>" (see StateWriter).
func (d DirStore) CreateShared(ctx context.Context, name string) (FileWriter, error) {
	if name == "" || strings.ContainsAny(name, `/\`) {
		return nil, fmt.Errorf("state: shared file name %q is not one path element", name)
	}
	return d.Create(ctx, "shared/"+name)
}

type dirFile struct {
	f     *os.File
	final string
	name  string
	d     *Digest
	done  bool
}

func (w *dirFile) Write(p []byte) (int, error) {
	if w.done {
		return 0, os.ErrClosed
	}
	n, err := w.f.Write(p)
	w.d.Write(p[:n])
	return n, err
}

func (w *dirFile) Close() (*sluicev1.StateFile, error) {
	if w.done {
		return nil, os.ErrClosed
	}
	w.done = true
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(w.f.Name(), w.final)
	}
	if err != nil {
		os.Remove(w.f.Name())
		return nil, fmt.Errorf("state: write %s: %w", w.name, err)
	}
	return w.d.StateFile(w.name), nil
}

func (w *dirFile) Abort() error {
	if w.done {
		return nil
	}
	w.done = true
	w.f.Close()
	return os.Remove(w.f.Name())
}

// Open opens f.Path, verifies its size and SHA-256, and returns it.
func (d DirStore) Open(ctx context.Context, f *sluicev1.StateFile) (FileReader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := d.path(f.GetPath())
	if err != nil {
		return nil, err
	}
	file, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("state file %s: %w", f.GetPath(), err)
		}
		return nil, err
	}
	if err := VerifyFile(f, file); err != nil {
		file.Close()
		return nil, err
	}
	if _, err := file.Seek(0, io.SeekStart); err != nil {
		file.Close()
		return nil, err
	}
	return osFile{file, f.GetSize()}, nil
}

type osFile struct {
	*os.File
	size int64
}

func (o osFile) Size() int64 { return o.size }
