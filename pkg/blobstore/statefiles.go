package blobstore

import (
	"context"
	"errors"
	"io"

	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// StateFiles is a state backend's view of one subtask's checkpoint files in a job's
// directory: it implements state.StateWriter and state.StateReader. Files of checkpoint
// ID go to chk-<ID>/<Prefix><name>, shared files to shared/<Prefix><name>.
//
// For a savepoint, Store is scoped to the savepoint's directory and Savepoint is set:
// every file, shared ones included, goes to chk-<ID>/ there, so the savepoint is
// self-contained and its references stay relative to its directory.
type StateFiles struct {
	Store     *Store // scoped to the job directory (or the savepoint's)
	ID        int64
	Prefix    string
	Savepoint bool
}

// Create starts file name of the checkpoint.
func (f StateFiles) Create(ctx context.Context, name string) (state.FileWriter, error) {
	w, err := f.Store.Create(ctx, CheckpointPath(f.ID, f.Prefix+name))
	if err != nil {
		return nil, err
	}
	return stateWriter{w}, nil
}

// CreateShared starts the shared file shared/<Prefix><name> (see state.StateWriter):
// files that incremental checkpoints reference from later checkpoints, deleted by the
// shared-file registry, not with the checkpoint.
//
// In a savepoint it is a private file of the savepoint, chk-<ID>/<Prefix>shared-<name>:
// nothing may outlive the savepoint, nor be referenced by a later checkpoint.
func (f StateFiles) CreateShared(ctx context.Context, name string) (state.FileWriter, error) {
	if err := CheckName(f.Prefix + name); err != nil {
		return nil, err
	}
	if f.Savepoint {
		return f.Create(ctx, "shared-"+name)
	}
	w, err := f.Store.Create(ctx, SharedPath(f.Prefix+name))
	if err != nil {
		return nil, err
	}
	return stateWriter{w}, nil
}

type stateWriter struct{ *Writer }

func (w stateWriter) Abort() error { w.Writer.Abort(); return nil }

// Open reads a state file whole, verifying its size and checksum. Heap state is held in
// memory anyway; backends that keep files on disk download them themselves.
func (f StateFiles) Open(ctx context.Context, sf *sluicev1.StateFile) (state.FileReader, error) {
	data, err := f.Store.ReadAll(ctx, sf)
	if err != nil {
		return nil, stateError(err)
	}
	return state.BytesReader(data), nil
}

// OpenStream implements state.StreamOpener: the file is read as it is consumed and
// verified at its end (Store.Open), so a backend can copy a large file to disk without
// holding it in memory.
func (f StateFiles) OpenStream(ctx context.Context, sf *sluicev1.StateFile) (io.ReadCloser, error) {
	r, err := f.Store.Open(ctx, sf)
	if err != nil {
		return nil, stateError(err)
	}
	return stateErrorReader{r}, nil
}

// stateErrorReader makes the verification failures of a stream match state.ErrCorrupt.
type stateErrorReader struct{ io.ReadCloser }

func (r stateErrorReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	return n, stateError(err)
}

// stateError makes a verification failure (ErrCorrupt) also match state.ErrCorrupt,
// as state.StateReader promises; the message, which names the file, stays.
func stateError(err error) error {
	if err == nil || !errors.Is(err, ErrCorrupt) || errors.Is(err, state.ErrCorrupt) {
		return err
	}
	return corruptStateFile{err}
}

type corruptStateFile struct{ err error }

func (e corruptStateFile) Error() string   { return e.err.Error() }
func (e corruptStateFile) Unwrap() []error { return []error{e.err, state.ErrCorrupt} }
