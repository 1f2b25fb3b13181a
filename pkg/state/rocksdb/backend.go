//go:build cgo

package rocksdb

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/linxGnu/grocksdb"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
)

// Factory creates RocksDB backends: one RocksDB instance per keyed operator and subtask.
type Factory struct {
	Config Config
	// Memory, if set, is shared by every backend the factory creates (the task
	// manager's one block cache and write-buffer manager). Nil gives each backend its
	// own block cache and leaves its memtables bounded per column family only.
	Memory *Memory
}

var _ state.Factory = Factory{}

// Name returns "rocksdb".
func (Factory) Name() string { return Name }

// NewKeyed creates an empty backend in a new instance directory.
func (f Factory) NewKeyed(opts state.KeyedOptions) (state.KeyedBackend, error) {
	return New(opts, f.Config, f.Memory)
}

// column is a column family: a registered state or a timer domain.
type column struct {
	desc state.StateDesc // zero for timers
	name string
	h    *grocksdb.ColumnFamilyHandle
	c    cfHandle
	// dirty holds the keys written since the last checkpoint's snapshot, with what
	// was written, while deltas are tracked (delta.go); nil otherwise.
	dirty *dirtyKeys
}

// instance is a directory removed when its last holder releases it: the backend's
// (db/ holds the database, snap-*/ the files of snapshots being uploaded), removed when
// the backend and every snapshot it took are done with it, or a stage's (delta.go).
type instance struct {
	dir  string
	mu   sync.Mutex
	refs int
}

func (i *instance) acquire() {
	i.mu.Lock()
	i.refs++
	i.mu.Unlock()
}

func (i *instance) release() {
	i.mu.Lock()
	i.refs--
	last := i.refs == 0
	i.mu.Unlock()
	if last {
		os.RemoveAll(i.dir)
	}
}

// Backend is the RocksDB keyed backend. See the package documentation.
type Backend struct {
	opts state.KeyedOptions
	cfg  Config
	mem  *Memory
	kgs  keygroup.Range
	maxP int
	plen int // key-group prefix length

	inst *instance
	id   string // random, names this instance's shared files
	o    *options

	// mu guards db and the column families against Properties, which may run on any
	// goroutine. The task goroutine is the only one to change them and reads them
	// without it.
	mu        sync.Mutex
	db        *grocksdb.DB
	cp        *grocksdb.Checkpoint
	nat       native
	def       *column
	timerCols [2]*column // event, processing
	states    []*column
	byName    map[string]state.StateID

	// The current key: key[:keyEnd] is kg | uvarint(len) | key, the start of every
	// state key of it; accesses append the namespace (and user key) after keyEnd.
	key    []byte
	keyOff int
	keyEnd int
	curKG  int
	keyErr error
	hasKey bool

	val     []byte // Get and MapGet results
	listBuf []byte // ListGet's list; nil while a ListGet runs (nested calls allocate)
	enc     []byte

	timers timers
	inc    incremental
	// Change tracking for deltas (delta.go): the bytes of the dirty keys, and whether
	// some change of this interval is not in them (the next snapshot must be a base).
	dirtyBytes   int // memory: keys, values and entries
	dirtyData    int // keys and values
	dirtyUnknown bool
	stage        *stage // the next base being written, with deltas (delta.go)
	baseBytes    int64  // the size of the latest base (delta.go)
	seq          int64  // snapshot directories
	closed       bool   // closed, or broken by a failed restore: every call fails
	released     bool   // Close ran

	log         *slog.Logger
	local       *localCopies // nil: local recovery is off
	lastRestore state.RestoreStats
}

var (
	_ state.KeyedBackend       = (*Backend)(nil)
	_ state.CheckpointListener = (*Backend)(nil)
	_ state.FullSnapshotForcer = (*Backend)(nil)
	_ state.RestoreReporter    = (*Backend)(nil)
)

// New creates an empty backend in a new instance directory under cfg.LocalDir (else
// opts.LocalDir, else the system's temporary directory). mem may be nil.
func New(opts state.KeyedOptions, cfg Config, mem *Memory) (*Backend, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if cfg.TransferThreads <= 0 {
		cfg.TransferThreads = 4
	}
	base := cfg.LocalDir
	if base == "" {
		base = opts.LocalDir
	}
	if base == "" {
		base = os.TempDir()
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, errorf("local directory: %w", err)
	}
	// The UID is sanitized like file names: FileName's "<uid>-<subtask>-0-" prefix.
	dir, err := os.MkdirTemp(base, "rocksdb-"+opts.FileName(0, "*"))
	if err != nil {
		return nil, errorf("instance directory: %w", err)
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	b := &Backend{
		opts: opts, cfg: cfg, mem: mem, kgs: opts.KeyGroups, maxP: opts.MaxParallelism,
		plen: keygroup.PrefixLen(opts.MaxParallelism), inst: &instance{dir: dir, refs: 1},
		id: hex.EncodeToString(rnd[:]), byName: map[string]state.StateID{}, keyErr: state.ErrNoCurrentKey,
		log: cfg.Log,
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	b.log = b.log.With("operator", opts.OperatorUID, "subtask", opts.Subtask, "keyGroups", opts.KeyGroups.String())
	if cfg.LocalRecovery.Dir != "" {
		b.local = newLocalCopies(cfg.LocalRecovery, opts.OperatorUID, opts.KeyGroups, b.log)
	}
	if b.o, err = newOptions(cfg, mem); err != nil {
		b.inst.release()
		return nil, err
	}
	if err := b.open(b.dbDir(), nil, false, true); err != nil {
		b.Close()
		return nil, err
	}
	if err := b.timers.init(b); err != nil {
		b.Close()
		return nil, err
	}
	b.startTracking()
	return b, nil
}

func (b *Backend) dbDir() string { return filepath.Join(b.inst.dir, "db") }

// openDB opens the database in dir with the given column families, creating it if
// create. The caller destroys the handles, then closes the database.
func openDB(o *options, dir string, columns []string, readOnly, create bool) (*grocksdb.DB, []*grocksdb.ColumnFamilyHandle, error) {
	cfOpts := make([]*grocksdb.Options, len(columns))
	for i, n := range columns {
		cfOpts[i] = o.column(n)
	}
	var (
		db  *grocksdb.DB
		hs  []*grocksdb.ColumnFamilyHandle
		err error
	)
	// A restored database must be there: never create an empty one in its place.
	o.db.SetCreateIfMissing(create)
	defer o.db.SetCreateIfMissing(true)
	if readOnly {
		db, hs, err = grocksdb.OpenDbForReadOnlyColumnFamilies(o.db, dir, columns, cfOpts, false)
	} else {
		db, hs, err = grocksdb.OpenDbColumnFamilies(o.db, dir, columns, cfOpts)
	}
	if err != nil {
		return nil, nil, errorf("open %s: %w", dir, err)
	}
	return db, hs, nil
}

// open opens the database in dir with the timer column families and the given states.
// The backend must have no database open; the caller then rebuilds the timer queues
// (timers.init).
func (b *Backend) open(dir string, states []metaState, readOnly, create bool) error {
	names := []string{defaultColumn, eventColumn, processingColumn}
	for _, s := range states {
		names = append(names, s.column)
	}
	db, hs, err := openDB(b.o, dir, names, readOnly, create)
	if err != nil {
		return err
	}
	cp, err := db.NewCheckpoint()
	if err != nil {
		for _, h := range hs {
			h.Destroy()
		}
		db.Close()
		return errorf("checkpoint object: %w", err)
	}
	cols := make([]*column, len(hs))
	for i, h := range hs {
		cols[i] = &column{name: names[i], h: h, c: cfPtr(h)}
	}
	b.mu.Lock()
	b.db, b.cp = db, cp
	b.nat = newNative(db, b.o.ro, b.o.wo)
	b.def, b.timerCols = cols[0], [2]*column{cols[1], cols[2]}
	b.states = b.states[:0]
	b.byName = map[string]state.StateID{}
	for i, s := range states {
		c := cols[3+i]
		c.desc = s.desc
		b.byName[s.desc.Name] = state.StateID(len(b.states))
		b.states = append(b.states, c)
	}
	b.mu.Unlock()
	return nil
}

// closeDB closes the database and forgets its column families.
func (b *Backend) closeDB() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.db == nil {
		return
	}
	b.cp.Destroy()
	for _, c := range b.columns() {
		c.h.Destroy()
	}
	b.db.Close()
	b.db, b.cp, b.def, b.timerCols, b.states = nil, nil, nil, [2]*column{}, nil
	b.nat = native{}
	b.byName = map[string]state.StateID{}
}

// columnByName finds an open column family by name.
func (b *Backend) columnByName(name string) (cfHandle, bool) {
	for _, c := range b.columns() {
		if c.name == name {
			return c.c, true
		}
	}
	return nil, false
}

// columns lists every open column family.
func (b *Backend) columns() []*column {
	if b.def == nil {
		return nil
	}
	return append([]*column{b.def, b.timerCols[0], b.timerCols[1]}, b.states...)
}

// KeyGroups implements state.KeyedBackend.
func (b *Backend) KeyGroups() keygroup.Range { return b.kgs }

// MaxParallelism implements state.KeyedBackend.
func (b *Backend) MaxParallelism() int { return b.maxP }

// Dir is the instance directory (for tests and diagnosis).
func (b *Backend) Dir() string { return b.inst.dir }

// SetCurrentKey implements state.KeyedBackend.
func (b *Backend) SetCurrentKey(key []byte, keyGroup int) {
	b.key = appendKeyGroup(b.key[:0], keyGroup, b.plen)
	b.key = binary.AppendUvarint(b.key, uint64(len(key)))
	b.keyOff = len(b.key)
	b.key = append(b.key, key...)
	b.keyEnd = len(b.key)
	b.curKG = keyGroup
	b.hasKey = true
	switch {
	case b.closed:
		b.keyErr = state.ErrClosed
	case !b.kgs.Contains(keyGroup):
		b.keyErr = fmt.Errorf("%w: key group %d of the current key is not in %v", state.ErrKeyGroupOutOfRange, keyGroup, b.kgs)
	default:
		b.keyErr = nil
	}
}

// CurrentKey implements state.KeyedBackend.
func (b *Backend) CurrentKey() ([]byte, int, bool) {
	if !b.hasKey {
		return nil, 0, false
	}
	return b.key[b.keyOff:b.keyEnd], b.curKG, true
}

// Register implements state.KeyedBackend. A new state gets a column family.
func (b *Backend) Register(desc state.StateDesc) (state.StateID, error) {
	if b.closed {
		return 0, state.ErrClosed
	}
	if err := desc.Validate(); err != nil {
		return 0, err
	}
	return b.register(desc)
}

func (b *Backend) register(desc state.StateDesc) (state.StateID, error) {
	if id, ok := b.byName[desc.Name]; ok {
		if have := b.states[id].desc.Kind; have != desc.Kind {
			return 0, fmt.Errorf("%w: state %q is %v, not %v", state.ErrWrongKind, desc.Name, have, desc.Kind)
		}
		return id, nil
	}
	name := b.newColumnName()
	h, err := b.db.CreateColumnFamily(b.o.column(name), name)
	if err != nil {
		return 0, errorf("create the column family of state %q: %w", desc.Name, err)
	}
	b.mu.Lock()
	id := state.StateID(len(b.states))
	c := &column{desc: desc, name: name, h: h, c: cfPtr(h)}
	b.states = append(b.states, c)
	b.byName[desc.Name] = id
	b.mu.Unlock()
	b.newColumnTracked(c)
	return id, nil
}

func (b *Backend) newColumnName() string {
	used := map[string]bool{}
	for _, c := range b.states {
		used[c.name] = true
	}
	for n := len(b.states); ; n++ {
		if name := statePrefix + strconv.Itoa(n); !used[name] {
			return name
		}
	}
}

func (b *Backend) badID(id state.StateID) error {
	if b.closed {
		return state.ErrClosed
	}
	return fmt.Errorf("%w: id %d", state.ErrUnknownState, id)
}

func wrongKind(c *column, op string) error {
	return fmt.Errorf("%w: %s on %v state %q", state.ErrWrongKind, op, c.desc.Kind, c.desc.Name)
}

func dbError(c *column, op string, err error) error {
	return errorf("%s of state %q: %w", op, c.desc.Name, err)
}

// access resolves the state and the key of (current key, ns), in b.key's buffer.
func (b *Backend) access(id state.StateID, ns []byte) (*column, []byte, error) {
	if b.keyErr != nil {
		return nil, nil, b.keyErr
	}
	if uint(id) >= uint(len(b.states)) {
		return nil, nil, b.badID(id)
	}
	k := binary.AppendUvarint(b.key[:b.keyEnd], uint64(len(ns)))
	k = append(k, ns...)
	b.key = k
	return b.states[id], k, nil
}

// userKey appends a map's user key to k (which is in b.key's buffer).
func (b *Backend) userKey(k, uk []byte) []byte {
	k = append(k, uk...)
	b.key = k
	return k
}

// Get implements state.KeyedBackend. The value is copied into a buffer of the backend,
// valid until the next call.
func (b *Backend) Get(id state.StateID, ns []byte) ([]byte, bool, error) {
	c, k, err := b.access(id, ns)
	if err != nil {
		return nil, false, err
	}
	if !c.desc.Kind.IsValue() {
		return nil, false, wrongKind(c, "Get")
	}
	v, ok, err := b.nat.get(c.c, k, b.val[:0])
	b.val = v
	if err != nil {
		return nil, false, dbError(c, "get", err)
	}
	return v, ok, nil
}

// Put implements state.KeyedBackend.
func (b *Backend) Put(id state.StateID, ns, v []byte) error {
	c, k, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if !c.desc.Kind.IsValue() {
		return wrongKind(c, "Put")
	}
	if err := b.nat.put(c.c, k, v); err != nil {
		return dbError(c, "put", err)
	}
	b.trackPut(c, k, v)
	return nil
}

// Delete implements state.KeyedBackend. Clearing a map deletes its entries one by one
// (in one batch): range tombstones would slow every later read of the column family.
func (b *Backend) Delete(id state.StateID, ns []byte) error {
	c, k, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if c.desc.Kind != state.KindMap {
		if err := b.nat.delete(c.c, k); err != nil {
			return dbError(c, "delete", err)
		}
		b.trackDelete(c, k)
		return nil
	}
	return b.clearPrefix(c, k)
}

// clearPrefix deletes every key of c that starts with p.
func (b *Backend) clearPrefix(c *column, p []byte) error {
	it := b.nat.iter(c.c, p, prefixEnd(p))
	defer it.Close()
	wb := grocksdb.NewWriteBatch()
	defer wb.Destroy()
	for it.Seek(p); it.Valid(); it.Next() {
		wb.DeleteCF(c.h, it.Key())
		b.trackDelete(c, it.Key())
	}
	if err := it.Err(); err != nil {
		return dbError(c, "clear", err)
	}
	if wb.Count() == 0 {
		return nil
	}
	if err := b.db.Write(b.o.wo, wb); err != nil {
		return dbError(c, "clear", err)
	}
	return nil
}

// ListAppend implements state.KeyedBackend: a merge of the element's encoding, so an
// append does not read the list.
func (b *Backend) ListAppend(id state.StateID, ns, v []byte) error {
	c, k, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if c.desc.Kind != state.KindList {
		return wrongKind(c, "ListAppend")
	}
	b.enc = state.AppendListElem(b.enc[:0], v)
	if err := b.nat.merge(c.c, k, b.enc); err != nil {
		return dbError(c, "append", err)
	}
	b.trackMerge(c, k)
	return nil
}

// ListGet implements state.KeyedBackend.
func (b *Backend) ListGet(id state.StateID, ns []byte, fn func(v []byte) error) error {
	c, k, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if c.desc.Kind != state.KindList {
		return wrongKind(c, "ListGet")
	}
	// fn may use the backend, even ListGet: the list stays in a buffer of its own.
	buf := b.listBuf
	b.listBuf = nil
	list, ok, err := b.nat.get(c.c, k, buf[:0])
	defer func() { b.listBuf = list[:0] }()
	if err != nil {
		return dbError(c, "get", err)
	}
	if !ok {
		return nil
	}
	return state.ForEachListElem(list, fn)
}

// ListUpdate implements state.KeyedBackend.
func (b *Backend) ListUpdate(id state.StateID, ns []byte, vs [][]byte) error {
	c, k, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if c.desc.Kind != state.KindList {
		return wrongKind(c, "ListUpdate")
	}
	if len(vs) == 0 {
		if err := b.nat.delete(c.c, k); err != nil {
			return dbError(c, "delete", err)
		}
		b.trackDelete(c, k)
		return nil
	}
	b.enc = state.EncodeList(b.enc[:0], vs)
	if err := b.nat.put(c.c, k, b.enc); err != nil {
		return dbError(c, "put", err)
	}
	b.trackPut(c, k, b.enc)
	return nil
}

// MapGet implements state.KeyedBackend.
func (b *Backend) MapGet(id state.StateID, ns, userKey []byte) ([]byte, bool, error) {
	c, k, err := b.access(id, ns)
	if err != nil {
		return nil, false, err
	}
	if c.desc.Kind != state.KindMap {
		return nil, false, wrongKind(c, "MapGet")
	}
	v, ok, err := b.nat.get(c.c, b.userKey(k, userKey), b.val[:0])
	b.val = v
	if err != nil {
		return nil, false, dbError(c, "get", err)
	}
	return v, ok, nil
}

// MapPut implements state.KeyedBackend.
func (b *Backend) MapPut(id state.StateID, ns, userKey, v []byte) error {
	c, k, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if c.desc.Kind != state.KindMap {
		return wrongKind(c, "MapPut")
	}
	k = b.userKey(k, userKey)
	if err := b.nat.put(c.c, k, v); err != nil {
		return dbError(c, "put", err)
	}
	b.trackPut(c, k, v)
	return nil
}

// MapDelete implements state.KeyedBackend.
func (b *Backend) MapDelete(id state.StateID, ns, userKey []byte) error {
	c, k, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if c.desc.Kind != state.KindMap {
		return wrongKind(c, "MapDelete")
	}
	k = b.userKey(k, userKey)
	if err := b.nat.delete(c.c, k); err != nil {
		return dbError(c, "delete", err)
	}
	b.trackDelete(c, k)
	return nil
}

// MapIterate implements state.KeyedBackend, in user-key byte order.
func (b *Backend) MapIterate(id state.StateID, ns []byte, fn func(userKey, v []byte) error) error {
	c, k, err := b.access(id, ns)
	if err != nil {
		return err
	}
	if c.desc.Kind != state.KindMap {
		return wrongKind(c, "MapIterate")
	}
	n := len(k)
	it := b.nat.iter(c.c, k, prefixEnd(k))
	defer it.Close()
	for it.Seek(k); it.Valid(); it.Next() {
		if err := fn(it.Key()[n:], it.Value()); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return dbError(c, "iterate", err)
	}
	return nil
}

// Keys implements state.KeyedBackend, in key-group then key order. It scans the state's
// whole column family.
func (b *Backend) Keys(id state.StateID, ns []byte, fn func(key []byte, keyGroup int) error) error {
	if b.closed || uint(id) >= uint(len(b.states)) {
		return b.badID(id)
	}
	c := b.states[id]
	isMap := c.desc.Kind == state.KindMap
	var last []byte
	haveLast := false
	it := b.nat.iter(c.c, nil, nil)
	defer it.Close()
	for it.SeekToFirst(); it.Valid(); it.Next() {
		kg, key, kns, _, ok := parseStateKey(it.Key(), b.plen)
		if !ok {
			return errorf("state %q: malformed key %x", c.desc.Name, it.Key())
		}
		if !bytes.Equal(kns, ns) {
			continue
		}
		if isMap {
			// A map's entries of one (key, namespace) are adjacent.
			if haveLast && bytes.Equal(last, key) {
				continue
			}
			last, haveLast = append(last[:0], key...), true
		}
		if err := fn(key, kg); err != nil {
			return err
		}
	}
	if err := it.Err(); err != nil {
		return dbError(c, "iterate", err)
	}
	return nil
}

// Timers implements state.KeyedBackend.
func (b *Backend) Timers() state.TimerService { return &b.timers }

// Close implements state.KeyedBackend: it closes the database and removes the instance
// directory once no snapshot still uploads from it. With local recovery the confirmed
// local copy stays (a restore, also by another process, may use it); unconfirmed ones
// are removed, those still being uploaded when their upload ends.
func (b *Backend) Close() error {
	if b.released {
		return nil
	}
	b.closed, b.released = true, true
	b.keyErr = state.ErrClosed
	b.dropStage()
	b.closeDB()
	b.o.destroy()
	b.inst.release()
	if b.local != nil {
		b.local.close()
	}
	return nil
}
