package blobstore

import (
	"context"

	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// StateFiles is a state backend's view of one subtask's checkpoint files in a job's
// directory: it implements state.StateWriter and state.StateReader. Files of checkpoint
// ID go to chk-<ID>/<Prefix><name>.
type StateFiles struct {
	Store  *Store // scoped to the job directory
	ID     int64
	Prefix string
}

// Create starts file name of the checkpoint.
func (f StateFiles) Create(ctx context.Context, name string) (state.FileWriter, error) {
	w, err := f.Store.Create(ctx, CheckpointPath(f.ID, f.Prefix+name))
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
		return nil, err
	}
	return state.BytesReader(data), nil
}
