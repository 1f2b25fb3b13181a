package state

import "fmt"

// SnapshotFormat is the format of a savepoint's keyed state.
type SnapshotFormat int8

const (
	// FormatCanonical is backend-independent: the full-snapshot format of
	// pkg/state/fullsnap, which every backend restores (a heap job may resume on
	// RocksDB and back).
	FormatCanonical SnapshotFormat = iota
	// FormatNative is the backend's own (RocksDB: its SST files), faster to write and
	// to restore, restorable only by the same backend.
	FormatNative
)

func (f SnapshotFormat) String() string {
	switch f {
	case FormatCanonical:
		return "canonical"
	case FormatNative:
		return "native"
	}
	return fmt.Sprintf("SnapshotFormat(%d)", int8(f))
}

// ParseSnapshotFormat parses "canonical" or "native".
func ParseSnapshotFormat(s string) (SnapshotFormat, error) {
	switch s {
	case "canonical":
		return FormatCanonical, nil
	case "native":
		return FormatNative, nil
	}
	return 0, fmt.Errorf("unknown savepoint format %q (use canonical or native)", s)
}

// SavepointSnapshotter is implemented by backends whose checkpoints are not
// self-contained or not canonical (RocksDB: incremental snapshots reference files of
// earlier checkpoints, and its files are its own format). SnapshotSavepoint takes the
// synchronous phase of a savepoint's snapshot in format: it references no file of an
// earlier snapshot, writes every file through StateWriter.Create (never CreateShared),
// and no later snapshot references its files (the user may delete a savepoint at any
// time). It changes nothing of the backend's incremental bookkeeping or local recovery
// copies. Backends that do not implement it take savepoints with Snapshot, which must
// then be self-contained and canonical (the heap backend's are).
type SavepointSnapshotter interface {
	SnapshotSavepoint(checkpointID int64, format SnapshotFormat) (AsyncSnapshot, error)
}
