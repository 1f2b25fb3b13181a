package state

import (
	"context"
	"errors"
	"fmt"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Kind is the shape of a registered state.
type Kind uint8

// State kinds. Reducing is a Value at the byte level: the merge function lives in the
// typed layer above the backend. The numeric values are part of the snapshot format.
const (
	KindValue    Kind = 1
	KindList     Kind = 2
	KindMap      Kind = 3
	KindReducing Kind = 4
)

func (k Kind) String() string {
	switch k {
	case KindValue:
		return "value"
	case KindList:
		return "list"
	case KindMap:
		return "map"
	case KindReducing:
		return "reducing"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is one of the defined kinds.
func (k Kind) Valid() bool { return k >= KindValue && k <= KindReducing }

// IsValue reports whether k is accessed with Get/Put (Value and Reducing).
func (k Kind) IsValue() bool { return k == KindValue || k == KindReducing }

// StateDesc describes a keyed state. Name is unique within a backend.
type StateDesc struct {
	Name string
	Kind Kind
}

// Validate checks the descriptor.
func (d StateDesc) Validate() error {
	if d.Name == "" {
		return errors.New("state: empty state name")
	}
	if !d.Kind.Valid() {
		return fmt.Errorf("state %q: invalid kind %d", d.Name, uint8(d.Kind))
	}
	return nil
}

// StateID addresses a registered state within one backend. IDs are small dense integers
// and are not stable across backends or restarts; register by name after a restore.
type StateID int

// Errors returned (wrapped with %w) by backends.
var (
	// ErrNoCurrentKey: a state primitive was called before SetCurrentKey.
	ErrNoCurrentKey = errors.New("state: no current key")
	// ErrKeyGroupOutOfRange: the key group of the current key or timer is not in the
	// backend's key-group range.
	ErrKeyGroupOutOfRange = errors.New("state: key group out of range")
	// ErrUnknownState: the StateID was not returned by Register on this backend.
	ErrUnknownState = errors.New("state: unknown state")
	// ErrWrongKind: the primitive does not apply to the state's kind, or a state was
	// registered (or restored) under the same name with another kind.
	ErrWrongKind = errors.New("state: wrong state kind")
	// ErrCorrupt: a state file failed verification or could not be decoded. Callers may
	// fall back to another copy (e.g. from the local recovery copy to the remote one).
	ErrCorrupt = errors.New("state: corrupt state file")
	// ErrClosed: the backend was closed.
	ErrClosed = errors.New("state: backend closed")
	// ErrReentrant: timers were fired from within a timer callback.
	ErrReentrant = errors.New("state: timers fired from within a timer callback")
)

// KeyedBackend holds the keyed state of one subtask of one operator. See the package
// documentation for the goroutine and memory rules; in short: one goroutine, returned
// slices valid until the next call, callback slices valid during the callback, inputs
// never retained.
//
// Every primitive acts on the current key (SetCurrentKey) and the namespace ns (nil or
// empty for plain keyed state). Errors wrap ErrNoCurrentKey, ErrKeyGroupOutOfRange,
// ErrUnknownState or ErrWrongKind as appropriate.
type KeyedBackend interface {
	// KeyGroups is the key-group range the backend owns.
	KeyGroups() keygroup.Range
	// MaxParallelism is the number of key groups of the job's keyed state.
	MaxParallelism() int

	// SetCurrentKey sets the key of subsequent state accesses. key is copied. keyGroup
	// must be keygroup.Of(key, MaxParallelism()); the backend does not recompute it. A key
	// group outside KeyGroups() makes subsequent accesses fail with ErrKeyGroupOutOfRange.
	SetCurrentKey(key []byte, keyGroup int)
	// CurrentKey returns the current key (valid until the next SetCurrentKey) and its key
	// group; ok is false before the first SetCurrentKey.
	CurrentKey() (key []byte, keyGroup int, ok bool)

	// Register declares a state, or returns the ID of the state already registered or
	// restored under desc.Name (an error wrapping ErrWrongKind if the kinds differ).
	// Registering after a Restore finds the restored entries.
	Register(desc StateDesc) (StateID, error)

	// Get returns the value of a Value or Reducing state; ok is false when unset.
	Get(id StateID, ns []byte) (v []byte, ok bool, err error)
	// Put sets the value of a Value or Reducing state (v may be empty, which is set).
	Put(id StateID, ns, v []byte) error
	// Delete clears the current key's entry of a state of any kind (a no-op if unset).
	Delete(id StateID, ns []byte) error

	// ListAppend appends one element to a List state.
	ListAppend(id StateID, ns, v []byte) error
	// ListGet calls fn for each element in order; an unset list has no elements. An error
	// from fn stops the iteration and is returned.
	ListGet(id StateID, ns []byte, fn func(v []byte) error) error
	// ListUpdate replaces the list with vs; an empty vs clears it.
	ListUpdate(id StateID, ns []byte, vs [][]byte) error

	// MapGet returns the value under userKey of a Map state.
	MapGet(id StateID, ns, userKey []byte) (v []byte, ok bool, err error)
	// MapPut sets the value under userKey.
	MapPut(id StateID, ns, userKey, v []byte) error
	// MapDelete removes userKey (a no-op if absent). Removing the last user key clears
	// the current key's entry.
	MapDelete(id StateID, ns, userKey []byte) error
	// MapIterate calls fn for each user key and value, in unspecified order. fn must not
	// modify state id.
	MapIterate(id StateID, ns []byte, fn func(userKey, v []byte) error) error

	// Keys calls fn for every key that has an entry of state id in namespace ns, in
	// unspecified order. It does not change the current key. fn must not modify state id.
	Keys(id StateID, ns []byte, fn func(key []byte, keyGroup int) error) error

	// Timers is the backend's timer service; timers are part of snapshots.
	Timers() TimerService

	// Snapshot runs the synchronous phase of a snapshot for checkpointID and returns the
	// asynchronous phase, which sees exactly the state (entries and timers) as of this
	// call however the backend is used afterwards. It must be short; backends document
	// its cost.
	Snapshot(checkpointID int64) (AsyncSnapshot, error)

	// Restore loads the key groups of handles that lie in KeyGroups(), reading files
	// through r (which verifies them); handles may cover more or fewer key groups than the
	// backend's range, nil handles are skipped, and two handles covering the same key
	// group is an error. Call it on a fresh backend before use. On error the backend's
	// contents are unspecified: discard it. Corrupt input yields an error wrapping
	// ErrCorrupt that names the file.
	Restore(ctx context.Context, handles []*sluicev1.KeyedStateHandle, r StateReader) error

	// Close releases the backend. Snapshots already taken stay valid.
	Close() error
}

// TimeDomain says which clock a timer follows.
type TimeDomain uint8

const (
	EventTime      TimeDomain = 1
	ProcessingTime TimeDomain = 2
)

func (d TimeDomain) String() string {
	switch d {
	case EventTime:
		return "event-time"
	case ProcessingTime:
		return "processing-time"
	}
	return fmt.Sprintf("domain(%d)", uint8(d))
}

// Timer is a timer being fired. Key and Namespace are valid only during the callback.
type Timer struct {
	Timestamp int64
	Key       []byte
	KeyGroup  int
	Namespace []byte
	Domain    TimeDomain
}

// TimerService holds a backend's event-time and processing-time timers. Timers are keyed
// state: they belong to a key group, are written in snapshots with it, and are restored
// with it (after a restore the runtime re-arms its processing-time wake-up from
// NextProcessingTimer). Like Flink, identical timers (same domain, timestamp, key and
// namespace) are deduplicated: registering one twice fires it once.
//
// Timers fire in timestamp order; ties are broken by key and namespace bytes, so firing
// order is deterministic. Before each callback the backend sets the current key to the
// timer's key (it stays set afterwards). A callback may read and write state and register
// and delete timers; a timer it registers with a timestamp already due fires in the same
// call. A callback must not fire timers (ErrReentrant). When a callback returns an error,
// firing stops and the error is returned; the timer that failed has been removed.
type TimerService interface {
	// RegisterEventTimer registers an event-time timer; its key group must be in range.
	RegisterEventTimer(ts int64, key []byte, keyGroup int, ns []byte) error
	// RegisterProcessingTimer registers a processing-time timer.
	RegisterProcessingTimer(ts int64, key []byte, keyGroup int, ns []byte) error
	// DeleteEventTimer removes an event-time timer (a no-op if absent).
	DeleteEventTimer(ts int64, key []byte, keyGroup int, ns []byte) error
	// DeleteProcessingTimer removes a processing-time timer (a no-op if absent).
	DeleteProcessingTimer(ts int64, key []byte, keyGroup int, ns []byte) error

	// CurrentWatermark is the highest watermark passed to AdvanceWatermark
	// (math.MinInt64 initially; it is not part of snapshots).
	CurrentWatermark() int64
	// AdvanceWatermark fires, in order, every event-time timer with timestamp <= wm.
	// A wm below the current watermark fires what is due and does not lower it.
	AdvanceWatermark(wm int64, fire func(Timer) error) error
	// NextProcessingTimer returns the earliest processing-time timer.
	NextProcessingTimer() (ts int64, ok bool)
	// FireProcessingTimers fires, in order, every processing-time timer with
	// timestamp <= now.
	FireProcessingTimers(now int64, fire func(Timer) error) error
}

// AsyncSnapshot is the asynchronous phase of a keyed snapshot.
//
// Run and Release may be called from any goroutine, concurrently with the backend's use
// by the task goroutine. Run may be called once; it releases the snapshot when done.
// Call Release instead of Run when the checkpoint is abandoned before Run (it is
// idempotent, and a snapshot that is never released only costs memory until collected
// and, in copy-on-write backends, some extra copying).
type AsyncSnapshot interface {
	// Run writes the snapshot through w and returns its handle, or a nil handle when the
	// backend held no entries and no timers (there is nothing to restore). On error (or
	// when ctx ends) every file it created is aborted.
	Run(ctx context.Context, w StateWriter) (*sluicev1.KeyedStateHandle, error)
	// Release discards the snapshot without writing it.
	Release()
	// Stats describes the captured state; it is known after the synchronous phase.
	Stats() SnapshotStats
}

// SnapshotStats counts what a snapshot captured.
type SnapshotStats struct {
	CheckpointID int64
	// Entries counts state entries: values, lists and map entries (one per user key).
	Entries int64
	// Timers counts event-time and processing-time timers.
	Timers int64
}

// Factory creates keyed backends of one kind.
type Factory interface {
	// Name is the backend's name as recorded in KeyedStateHandle.backend, e.g. "heap".
	Name() string
	// NewKeyed creates an empty backend.
	NewKeyed(opts KeyedOptions) (KeyedBackend, error)
}

// DefaultInlineThreshold is the size below which snapshot files are inlined into the
// handle (StateFile.inline_data) instead of written as files.
const DefaultInlineThreshold = 16 << 10

// KeyedOptions configure a keyed backend.
type KeyedOptions struct {
	// OperatorUID is the operator's stable UID (used in file names).
	OperatorUID string
	// KeyGroups is the key-group range of the subtask.
	KeyGroups keygroup.Range
	// MaxParallelism is the number of key groups of the job's keyed state.
	MaxParallelism int
	// Subtask is the subtask index (used in file names).
	Subtask int
	// LocalDir is a directory the backend may use for working files (RocksDB); the heap
	// backend ignores it.
	LocalDir string
	// InlineThreshold: snapshot files smaller than this are inlined into the handle.
	// 0 means DefaultInlineThreshold; a negative value disables inlining.
	InlineThreshold int
	// RestoreCheckpointID is the checkpoint a following Restore reads, 0 if unknown or
	// none. Backends that keep local copies of their snapshots (local recovery) use a
	// copy only when it is of this checkpoint.
	RestoreCheckpointID int64
}

// Validate checks the options.
func (o KeyedOptions) Validate() error {
	if o.MaxParallelism < keygroup.MinMaxParallelism || o.MaxParallelism > keygroup.UpperBound {
		return fmt.Errorf("state: max parallelism %d is out of range [1, %d]", o.MaxParallelism, keygroup.UpperBound)
	}
	r := o.KeyGroups
	if r.Len() == 0 || r.Start < 0 || r.End >= o.MaxParallelism {
		return fmt.Errorf("state: key-group range %v is empty or outside [0, %d]", r, o.MaxParallelism-1)
	}
	if o.Subtask < 0 {
		return fmt.Errorf("state: negative subtask index %d", o.Subtask)
	}
	return nil
}

// InlineLimit resolves InlineThreshold: the size below which files are inlined (0 means
// never inline).
func (o KeyedOptions) InlineLimit() int {
	switch {
	case o.InlineThreshold == 0:
		return DefaultInlineThreshold
	case o.InlineThreshold < 0:
		return 0
	}
	return o.InlineThreshold
}

// FileName returns the name hint a backend passes to StateWriter.Create for one of its
// snapshot files: "<uid>-<subtask>-<checkpoint>-<suffix>", with characters other than
// [A-Za-z0-9._-] in the UID replaced by '_'.
func (o KeyedOptions) FileName(checkpointID int64, suffix string) string {
	uid := []byte(o.OperatorUID)
	for i, c := range uid {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			uid[i] = '_'
		}
	}
	if len(uid) == 0 {
		uid = []byte("op")
	}
	return fmt.Sprintf("%s-%d-%d-%s", uid, o.Subtask, checkpointID, suffix)
}
