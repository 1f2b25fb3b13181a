// Package state is the boundary between the task runtime and the state backends
// (pkg/state/heap and pkg/state/rocksdb). Every backend passes the one conformance suite in
// pkg/state/statetest.
//
// # Keyed state layout
//
// A KeyedBackend holds the keyed state of one subtask of one operator. It owns a
// contiguous key-group range (keygroup.Range) out of MaxParallelism key groups. Every
// access is for the current key, set by the runtime with SetCurrentKey (the serialized
// key bytes and its key group, keygroup.Of(key, maxParallelism)), and a namespace: a byte
// string, empty for plain keyed state, the serialized window for window state. States are
// registered by descriptor (name and Kind) and addressed by the returned StateID. The
// backend stores bytes; typed state (codecs, reduce functions) lives above it.
//
// # Goroutines
//
// A backend is used by one goroutine, the task's mailbox loop: SetCurrentKey, the state
// primitives, the TimerService, Snapshot, Restore and Close are never called
// concurrently with each other. The single exception is the asynchronous phase of a
// snapshot: AsyncSnapshot.Run (and Release) may run on any goroutine while the task
// goroutine keeps using the backend, and must produce exactly the state as of the
// Snapshot call that returned it.
//
// # Returned memory
//
// Slices returned by a backend (Get, MapGet) alias backend memory: they are valid until
// the next call on the backend and must not be modified. Slices passed to callbacks
// (ListGet, MapIterate, Keys, timer firing) are valid only until the callback returns.
// A backend never retains a slice passed into it: it copies what it keeps.
//
// # Snapshots and restore
//
// Snapshot(checkpointID) is the short synchronous phase, run on the task goroutine while
// the barrier is being processed; AsyncSnapshot.Run writes files through a StateWriter the
// runtime provides and returns a *sluicev1.KeyedStateHandle. Restore reads handles through
// a StateReader that verifies every file's size and SHA-256 (VerifyFile,
// NewVerifyingReader), reading only the key groups in the backend's range, so a restore
// at another parallelism (rescaling) and a restore merging several handles work the same
// way. Corruption is reported as an error wrapping ErrCorrupt that names the file.
//
// The full-snapshot file format is backend-neutral and lives in pkg/state/fullsnap.
//
// # Operator state
//
// Non-keyed list state (source positions and the like) lives in an OperatorStateBackend
// and is redistributed on rescaling by Redistribute (SPLIT or UNION).
package state
