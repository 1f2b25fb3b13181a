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
// no WAL (checkpoints are the durability), and no file ever synced (an Env whose syncs
// do nothing: after any crash the database is rebuilt from a checkpoint). With deltas,
// a write also records its key and value in the column family's dirty set (a map
// lookup and a copy into an arena; the key's string is allocated the first time per
// checkpoint interval), so that a delta snapshot reads nothing from the database. BenchmarkValueGetUpdate compares a
// get-and-update with raw grocksdb on the same bytes.
//
// # Snapshots
//
// The synchronous phase is a native RocksDB checkpoint: memtables are flushed, SST
// files hard-linked and the small metadata files copied into a directory of the
// instance (with local recovery, the local copy's directory, below), whatever the
// backend does afterwards. The asynchronous phase uploads it, TransferThreads files at
// a time:
//
//   - full mode: every file is a private file of the checkpoint (inlined into the
//     handle below the inline threshold);
//   - incremental mode (Config.Incremental): SST files are shared files
//     ("shared/<uid>-<subtask>-<checkpoint>-<instance>-<sst>"), uploaded once and then
//     referenced by later checkpoints, but only files of the latest checkpoint the
//     backend was told completed (state.CheckpointListener): a checkpoint that is not
//     confirmed may be aborted and its files deleted. ForceFullSnapshot makes the next
//     snapshot reference nothing old (the jobmanager bounds the chain that way). With
//     deltas (the default) such a snapshot is a native base, and most snapshots are
//     delta snapshots instead (see Deltas).
//
// MANIFEST and CURRENT are private (shared in a native base with deltas), after a meta
// file (meta.go) naming
// every file's local name; the OPTIONS file is not uploaded (RocksDB does not need it
// to open the database; the options come from the configuration). The handle's
// incremental_size counts the bytes this checkpoint uploaded, full_size all it
// references.
//
// # Deltas
//
// See delta.go: a delta snapshot uploads, per column family, the current value of every
// key written since the latest confirmed checkpoint, and a share (Config.BaseShare) of
// the next base, chunks of the state in key order, which replace the base once all are
// uploaded; compaction output is never uploaded. bench/incremental: 1.59 times the
// bytes changed in steady state, no 10-checkpoint window above 1.60 (1.50 at share 0.2),
// for restores that read the base and the deltas since its stage started (3.6 times the
// state there, in 479 files). The rest of this section is about snapshots without deltas
// (Config.DisableDeltas) and native bases.
//
// # Compaction
//
// Every SST file a flush or a compaction writes is new, so an incremental checkpoint
// without deltas uploads its own flush (about the bytes changed) plus every file
// compactions wrote since the checkpoint before. Keys start with their key group, a hash, so changes
// spread over the whole key range and a compaction that merges them into older data
// rewrites about all of it. The compaction style (Config.CompactionStyle,
// state.backend.rocksdb.compaction.style) decides how often. Measured by
// bench/incremental (200,000 keys of a 12-byte key and 100 random bytes, 1% of them
// changed between checkpoints, each checkpoint after the compactions finished, steady
// state over several compaction cycles): bytes uploaded over bytes changed, sorted runs
// mean and most, live SST bytes over logical bytes at most:
//
//	LEVEL (RocksDB's default; dynamic level sizes alike)   27.2    3.5 / 5     1.10
//	LEVEL, level-0 compaction at 100 files                  2.2    52 / 101    2.13
//	LEVEL, 1 MiB level base, multiplier 4, level 0 at 8     5.2    - / 9       2.07
//	UNIVERSAL, compaction at 16 sorted runs                 3.7    9 / 16      2.14
//	UNIVERSAL, 24 (the default)                             3.2    13 / 24     2.27
//	UNIVERSAL, 48                                           2.6    25 / 48     2.19
//	UNIVERSAL, 130                                          1.9    65 / 129    2.44
//
// Level compaction rewrites level 1, that is the whole state, every 4 checkpoints.
// Universal compaction (CompactionUniversal) merges newer runs of similar size and
// rewrites everything only when the newer runs hold as many bytes as the oldest
// (max_size_amplification_percent 100), about every 150 checkpoints here; it turns on
// bloom filters so that a point read skips most runs. Against level compaction with the
// same filters, at 24 runs a read of a present key costs about the same, of an absent
// key twice as much, a seek (map iteration, timers) three times; at 130 runs an absent
// key 10 times, a seek 40 times. No setting gets under 2.0 with a reasonable number of
// runs: rewriting the state, 100 checkpoints' worth of changes, every K checkpoints
// costs 100/K per checkpoint, and merging changes once before that costs them once
// more, so under 2.0 needs K above about 110 checkpoints without intermediate merges:
// as many sorted runs. CompactionAuto, the default, is universal compaction for
// incremental snapshots under the DEFAULT and FLASH_SSD_OPTIMIZED options, level
// compaction otherwise; Config.UniversalSortedRuns moves along the table. Write stalls
// start far above the trigger (3 and 4 times the sorted runs). Under universal
// compaction RocksDB estimates no pending compaction bytes (the property stays 0): the
// level-0 files and CompactionStats.SortedRuns show a compaction falling behind.
//
// The MANIFEST, a private file uploaded whole by every snapshot, gets an edit per flush
// and compaction: past 16 KiB RocksDB starts a new one with the current version only (a
// few KiB), where its default limit (1 GiB) let it grow for the life of the job (in the
// benchmark, 70 KB per checkpoint over checkpoints 300 to 600: 0.3x the bytes changed).
// Backend.CompactionStats counts flushes, compactions, the SST bytes they wrote and
// write stalls, from an event listener (events.cc), and the sorted runs.
//
// # Savepoints
//
// Backend.SnapshotSavepoint (state.SavepointSnapshotter) takes a savepoint: a native
// checkpoint into the instance directory (never a local recovery copy), uploaded
// either as its RocksDB files, every one a private file of the savepoint whatever
// Config.Incremental says (state.FormatNative), or read back key group by key group
// into one full-snapshot file of pkg/state/fullsnap, as the heap backend writes
// (state.FormatCanonical, handle backend fullsnap.HandleBackend). A savepoint is no
// part of the incremental chain: no checkpoint references its files, it references
// none of theirs, and its completion confirms nothing.
//
// # Restore
//
// Files are downloaded into a fresh instance directory and verified against their size
// and SHA-256 (state.ErrCorrupt otherwise), then opened (a base of chunks: a new
// database), and the deltas ingested in order; see Backend.Restore for
// rescaling (clipping; merging several handles, whose key groups are ingested as SST
// files written in C++ from each) and for full snapshots (the heap backend's, canonical
// savepoints), which restore too. After a restore the restored shared files count as
// uploaded, unless Config.NoClaim.
//
// # Local recovery
//
// With Config.LocalRecovery.Dir set (state.backend.local-recovery), the native
// checkpoint of every snapshot is taken into a directory that outlives the backend and
// the process:
//
//	<Dir>/<job>/<uid>/kg-<first>-<last>/chk-<checkpoint>/
//	    000012.sst ...  MANIFEST-000005  CURRENT  OPTIONS-000007   the native checkpoint
//	    sluice-local.manifest                                       written after the upload
//
// <job> and <uid> are the job ID and operator UID with characters other than
// [A-Za-z0-9._-] replaced by '_' (as in file names of the checkpoint storage); the
// key-group range names the subtask. On the same file system the SST files are hard
// links to the database's, so a copy costs no disk space until compaction replaces
// them; on another one RocksDB copies them. When the directory cannot be created or
// the native checkpoint fails there (disk full, permissions, a broken mount), the
// backend logs a warning (at debug level while it keeps failing) and takes the native
// checkpoint in the instance directory as without local recovery: local recovery never
// fails a snapshot.
//
// Once the upload succeeded, the manifest is written atomically (temporary file,
// fsync, rename): the checkpoint, max parallelism and key groups, the SHA-256 of the
// snapshot's meta file, and for every file of the handle its local name, size, the
// SHA-256 the handle records and the CRC-32C of the local file (computed while
// uploading; for a reused shared file, remembered from its upload or restore). A copy
// whose upload failed, or whose manifest could not be written, is removed. See
// docs/formats.md.
//
// A confirmed checkpoint (NotifyCheckpointComplete) removes the copies of earlier
// checkpoints of the key-group directory, and the directories of key-group ranges
// that overlap the backend's without being it (an earlier parallelism); copies of later
// checkpoints stay pending, at most 16. Close removes the pending copies and keeps the
// confirmed one for the next restore, by this process or the next. The task manager
// removes <Dir>/<job> (LocalRecoveryJobDir) when the job is gone.
//
// Restore uses the copy of checkpoint KeyedOptions.RestoreCheckpointID for the handle
// that becomes the database when its manifest is intact and matches the handle:
// checkpoint, max parallelism, key groups, meta file SHA-256, and size and SHA-256 of
// every file the handle and the manifest both name. Otherwise every file is downloaded.
// From a matching copy, SST files are hard-linked into the new database (copied when
// linking fails) and the others copied (RocksDB appends to MANIFEST), each checked
// against its size and CRC-32C in the manifest, TransferThreads at a time; a file that
// is missing or fails is downloaded instead. Other handles (rescaling) and the heap
// backend's format are always downloaded. Backend.LastRestore (state.RestoreReporter)
// reports the bytes taken locally and downloaded, the copy's checkpoint, and why
// anything was downloaded that could have been local. After restoring from its own
// range's copy the backend keeps that copy as the confirmed one and removes the
// others of the directory.
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
