// Package rocksdb is the RocksDB keyed state backend (state.backend.type: rocksdb):
// one embedded RocksDB instance per keyed operator and subtask, on local disk, through
// github.com/linxGnu/grocksdb (pinned at v1.7.15, built against Debian's RocksDB 7.8).
// It is the only package with cgo: a build without cgo gets ErrUnavailable from every
// constructor, and everything else builds and tests without a C toolchain.
//
// # Layout
//
// Each registered state is a column family ("state-<n>"); each time domain's timers
// are one too ("timers-event", "timers-processing"). Keys start with the key group,
// big-endian, 1 byte when max parallelism <= 128, else 2, then the serialized key and
// the namespace, each with its uvarint length (map entries append the user key), so a
// key-group range is a contiguous key range in every column family: a restore clips a
// wider snapshot with two range deletions. List values are the elements' encodings
// (state.AppendListElem) one after the other; ListAppend is a merge with a built-in C++
// concatenating merge operator, so appending does not read the list. See keys.go and
// docs/formats.md.
//
// Timers live in the database under key group | timestamp | key | namespace, so
// snapshots capture them and a restore re-arms them; memory holds only each key
// group's earliest timer and a heap of key groups (timers.go).
//
// # The hot path
//
// SetCurrentKey builds the key prefix in a buffer the backend reuses; Get, Put, Delete
// and the map primitives append the namespace (and user key) to it and make one cgo
// call each, straight to RocksDB's C API (native.go): no Go allocation (values are
// copied into a reused buffer, valid until the next call, as state.KeyedBackend allows),
// no WAL (checkpoints are the durability). BenchmarkValueGetUpdate compares a
// get-and-update with raw grocksdb on the same bytes.
//
// # Snapshots
//
// The synchronous phase is a native RocksDB checkpoint: memtables are flushed, SST
// files hard-linked and the small metadata files copied into a directory of the
// instance, whatever the backend does afterwards. The asynchronous phase uploads it,
// TransferThreads files at a time:
//
//   - full mode: every file is a private file of the checkpoint (inlined into the
//     handle below the inline threshold);
//   - incremental mode (Config.Incremental): SST files are shared files
//     ("shared/<uid>-<subtask>-<checkpoint>-<instance>-<sst>"), uploaded once and then
//     referenced by later checkpoints, but only files of the latest checkpoint the
//     backend was told completed (state.CheckpointListener): a checkpoint that is not
//     confirmed may be aborted and its files deleted. ForceFullSnapshot makes the next
//     snapshot reference nothing old (the jobmanager bounds the chain that way).
//
// MANIFEST and CURRENT are private in both modes, after a meta file (meta.go) naming
// every file's local name; the OPTIONS file is not uploaded (RocksDB does not need it
// to open the database; the options come from the configuration). The handle's
// incremental_size counts the bytes this checkpoint uploaded, full_size all it
// references.
//
// # Restore
//
// Files are downloaded into a fresh instance directory and verified against their size
// and SHA-256 (state.ErrCorrupt otherwise), then opened; see Backend.Restore for
// rescaling (clipping, merging several handles) and for the heap backend's full
// snapshots, which restore too. After a restore the restored shared files count as
// uploaded, unless Config.NoClaim.
//
// # Memory
//
// With a Memory (one per task manager, state.backend.rocksdb.memory.managed) all
// instances share one block cache, with index and filter blocks in it at high priority,
// and one write-buffer manager that charges memtables to that cache: the memory of a
// task manager's RocksDB instances stays bounded by its size however many slots,
// operators and states there are. Without one, each instance has its own block cache
// and memtables bounded per column family (writebuffer.size × writebuffer.count).
// Config.OptionsFactory adjusts every option last. Backend.Properties reads RocksDB's
// native properties (compaction debt, level-0 files, stalls, SST sizes, cache usage).
package rocksdb
