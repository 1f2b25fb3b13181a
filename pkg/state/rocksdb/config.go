package rocksdb

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/sluice-stream/sluice/pkg/config"
)

// Name is the backend's name in KeyedStateHandle.backend.
const Name = "rocksdb"

// ErrUnavailable is returned by every constructor of a build without cgo, which cannot
// link RocksDB.
var ErrUnavailable = errors.New("this build has no RocksDB (built without cgo): rebuild with CGO_ENABLED=1 and librocksdb-dev, or set state.backend.type: hashmap")

// errorf formats an error of this package.
func errorf(format string, args ...any) error { return fmt.Errorf("rocksdb: "+format, args...) }

// PredefinedOptions is a set of RocksDB options tuned for a kind of disk, as Flink's
// PredefinedOptions. Config fields that are set override it; an OptionsFactory
// overrides both.
type PredefinedOptions int

const (
	// Default: RocksDB's defaults, without fsync, with a quiet info log, and a MANIFEST
	// restarted past 16 KiB; with incremental snapshots, universal compaction unless
	// Config.CompactionStyle says otherwise (see CompactionAuto).
	Default PredefinedOptions = iota
	// SpinningDiskOptimized: Default, plus 4 background threads, no limit on open files,
	// level compaction with dynamic level sizes (fewer, sequential reads on a disk
	// with seeks).
	SpinningDiskOptimized
	// SpinningDiskOptimizedHighMem: SpinningDiskOptimized, plus larger files and levels
	// (256 MiB SST files, a 1 GiB level base), 64 MiB memtables of which up to 4 are
	// kept and 3 are merged per flush, 128 KiB blocks, a 256 MiB block cache (when
	// memory is not managed) and bloom filters.
	SpinningDiskOptimizedHighMem
	// FlashSSDOptimized: Default (universal compaction for incremental snapshots
	// included), plus 4 background threads and no limit on open files.
	FlashSSDOptimized
)

var predefinedNames = [...]string{
	Default:                      "DEFAULT",
	SpinningDiskOptimized:        "SPINNING_DISK_OPTIMIZED",
	SpinningDiskOptimizedHighMem: "SPINNING_DISK_OPTIMIZED_HIGH_MEM",
	FlashSSDOptimized:            "FLASH_SSD_OPTIMIZED",
}

func (p PredefinedOptions) String() string {
	if p >= 0 && int(p) < len(predefinedNames) {
		return predefinedNames[p]
	}
	return fmt.Sprintf("PredefinedOptions(%d)", int(p))
}

// ParsePredefinedOptions parses a name of state.backend.rocksdb.predefined-options,
// case-insensitively.
func ParsePredefinedOptions(s string) (PredefinedOptions, error) {
	for i, n := range predefinedNames {
		if strings.EqualFold(s, n) {
			return PredefinedOptions(i), nil
		}
	}
	return 0, fmt.Errorf("unknown predefined RocksDB options %q (use one of %s)", s, strings.Join(predefinedNames[:], ", "))
}

// Config configures the backends a Factory creates. The zero value is RocksDB's
// defaults with full snapshots.
type Config struct {
	// Predefined is the base set of options.
	Predefined PredefinedOptions
	// BlockCacheSize of each instance's own block cache when the factory has no shared
	// Memory; 0 keeps Predefined's or RocksDB's default.
	BlockCacheSize int64
	// WriteBufferSize (write_buffer_size) and WriteBufferCount (max_write_buffer_number)
	// per column family; 0 keeps Predefined's or RocksDB's default.
	WriteBufferSize  int64
	WriteBufferCount int
	// BackgroundJobs is max_background_jobs; 0 keeps Predefined's or RocksDB's default.
	BackgroundJobs int
	// TransferThreads bounds the files one snapshot uploads, or one restore downloads,
	// at a time; 0 means 4.
	TransferThreads int
	// Incremental snapshots upload each SST file once, as a shared file, and reference
	// it from later checkpoints; otherwise every snapshot uploads every file as files of
	// its own checkpoint.
	Incremental bool
	// DisableDeltas makes every incremental snapshot a native base: a native checkpoint
	// whose new SST files, compaction output included, are uploaded. By default a
	// snapshot uploads only the entries changed since the latest confirmed checkpoint,
	// as one SST file per state, and a share of the next base (see BaseShare, delta.go).
	DisableDeltas bool
	// BaseShare is the share of its deltas' bytes that a delta snapshot adds of the next
	// base: uploads stay within about 1 + BaseShare times the changed entries, and a
	// restore reads the base and up to about 2/BaseShare times the state in deltas.
	// 0 means DefaultBaseShare.
	BaseShare float64
	// LocalDir is where the backends create their instance directories. Empty uses
	// state.KeyedOptions.LocalDir, else the system's temporary directory.
	LocalDir string
	// NoClaim: the files of restored snapshots are not this job's (a checkpoint of
	// another job, a savepoint), so incremental snapshots do not reference them: the
	// first snapshot after a restore uploads every file (Flink's NO_CLAIM restore mode).
	NoClaim bool
	// OptionsFactory, if set, adjusts RocksDB's options last (see OptionsFactory).
	OptionsFactory OptionsFactory
	// CompactionStyle of every column family; CompactionAuto picks one from Incremental
	// and Predefined (see CompactionStyle).
	CompactionStyle CompactionStyle
	// DynamicLevelBytes (level_compaction_dynamic_level_bytes), TargetFileSizeBase
	// (target_file_size_base) and MaxBytesForLevelBase (max_bytes_for_level_base) tune
	// level compaction, and only it; nil and 0 keep Predefined's or RocksDB's default.
	DynamicLevelBytes    *bool
	TargetFileSizeBase   int64
	MaxBytesForLevelBase int64
	// UniversalSortedRuns is, with universal compaction, the number of sorted runs at
	// which a compaction starts (level0_file_num_compaction_trigger); 0 means 24.
	UniversalSortedRuns int
	// LocalRecovery, when its Dir is set, keeps the native checkpoint of the latest
	// confirmed snapshot on local disk so that a restore on this machine reads it
	// instead of the checkpoint storage (state.backend.local-recovery).
	LocalRecovery LocalRecovery
	// Log receives what the backend reports on its own (local recovery falling back to
	// the checkpoint storage, for one); nil discards it.
	Log *slog.Logger
}

// DefaultBaseShare is Config.BaseShare's default.
const DefaultBaseShare = 0.5

// LocalRecovery configures local recovery (see Config.LocalRecovery).
type LocalRecovery struct {
	// Dir is the task manager's local recovery root; empty turns local recovery off.
	// Copies live under <Dir>/<JobID>/, which survives the process: a task manager
	// restarted with the same Dir finds them.
	Dir string
	// JobID names the job's directory under Dir.
	JobID string
}

// MemoryConfig sizes the memory that all RocksDB instances of a task manager share (see
// NewMemory). It follows Flink's managed memory for RocksDB.
type MemoryConfig struct {
	// Size is the total: block cache (data, index and filter blocks) and memtables.
	Size int64
	// WriteBufferRatio is the share of Size for memtables: the write-buffer manager's
	// limit is 2/3 × ratio × Size (RocksDB lets memtables grow to 1.5 times the limit
	// before it forces flushes), and the cache has (3 - ratio)/3 × Size, memtable
	// memory included (charged to the cache). 0 means 0.5.
	WriteBufferRatio float64
	// HighPriorityPoolRatio is the share of the cache reserved for index and filter
	// blocks. 0 means 0.1.
	HighPriorityPoolRatio float64
}

func (m MemoryConfig) resolved() MemoryConfig {
	if m.WriteBufferRatio <= 0 || m.WriteBufferRatio >= 1 {
		m.WriteBufferRatio = 0.5
	}
	if m.HighPriorityPoolRatio <= 0 || m.HighPriorityPoolRatio >= 1 {
		m.HighPriorityPoolRatio = 0.1
	}
	return m
}

// CacheCapacity is the block cache's capacity (Flink's formula).
func (m MemoryConfig) CacheCapacity() int64 {
	m = m.resolved()
	return int64((3 - m.WriteBufferRatio) * float64(m.Size) / 3)
}

// WriteBufferLimit is the write-buffer manager's limit (Flink's formula).
func (m MemoryConfig) WriteBufferLimit() int64 {
	m = m.resolved()
	return int64(2 * float64(m.Size) * m.WriteBufferRatio / 3)
}

// MemoryUsage is what a Memory (or a backend's own cache) holds now.
type MemoryUsage struct {
	BlockCacheCapacity    uint64
	BlockCacheUsage       uint64 // memtables charged to the cache included
	BlockCachePinnedUsage uint64
	WriteBufferLimit      uint64 // 0: no write-buffer manager
	WriteBufferUsage      uint64
}

// Properties are RocksDB's native properties of one backend instance, summed over its
// column families where RocksDB reports them per column family. Backend.Properties
// reads them; they are for metrics and diagnosis.
type Properties struct {
	// ColumnFamilies is the number of column families (states, timers and default).
	ColumnFamilies int
	// EstimateNumKeys (rocksdb.estimate-num-keys) counts keys, roughly: deletions and
	// overwrites not yet compacted make it wrong either way.
	EstimateNumKeys uint64
	// EstimatePendingCompactionBytes (rocksdb.estimate-pending-compaction-bytes): what
	// compaction must rewrite to bring every level under its target; RocksDB slows and
	// then stops writes when it grows too large.
	EstimatePendingCompactionBytes uint64
	// NumRunningCompactions and NumRunningFlushes (rocksdb.num-running-compactions,
	// rocksdb.num-running-flushes), for the whole instance.
	NumRunningCompactions uint64
	NumRunningFlushes     uint64
	// NumFilesAtLevel0 (rocksdb.num-files-at-level0): many level-0 files slow reads and
	// eventually stall writes.
	NumFilesAtLevel0 uint64
	// ActualDelayedWriteRate (rocksdb.actual-delayed-write-rate, bytes/s; 0: writes are
	// not delayed) and IsWriteStopped (rocksdb.is-write-stopped) show write stalls.
	ActualDelayedWriteRate uint64
	IsWriteStopped         bool
	// LiveSSTFilesSize (rocksdb.live-sst-files-size) is the size of the SST files of the
	// current version; TotalSSTFilesSize (rocksdb.total-sst-files-size) also counts
	// obsolete files still held, e.g. by snapshots being uploaded.
	LiveSSTFilesSize  uint64
	TotalSSTFilesSize uint64
	// CurSizeAllMemTables (rocksdb.cur-size-all-mem-tables): memtable memory.
	CurSizeAllMemTables uint64
	// BlockCacheUsage (rocksdb.block-cache-usage) and BlockCachePinnedUsage: of the cache
	// the instance uses, shared with the task manager's other instances under managed
	// memory; BlockCacheCapacity is its capacity.
	BlockCacheUsage       uint64
	BlockCachePinnedUsage uint64
	BlockCacheCapacity    uint64
}

// ConfigFrom reads a Config from the state.backend.* keys of c. Tuning keys apply only
// when set, so that the predefined options keep theirs otherwise. OptionsFactory is
// left unset.
func ConfigFrom(c *config.Config) (Config, error) {
	p, err := ParsePredefinedOptions(c.String(config.RocksDBPredefined))
	if err != nil {
		return Config{}, err
	}
	cfg := Config{
		Predefined:      p,
		Incremental:     c.Bool(config.StateBackendIncremental),
		LocalDir:        c.String(config.RocksDBLocalDir),
		TransferThreads: c.Int(config.RocksDBTransferThreads),
		DisableDeltas:   !c.Bool(config.RocksDBDeltas),
		BaseShare:       c.Float(config.RocksDBBaseShare),
	}
	if c.IsSet(config.RocksDBBlockCacheSize) {
		cfg.BlockCacheSize = c.MemorySize(config.RocksDBBlockCacheSize)
	}
	if c.IsSet(config.RocksDBWriteBufferSize) {
		cfg.WriteBufferSize = c.MemorySize(config.RocksDBWriteBufferSize)
	}
	if c.IsSet(config.RocksDBWriteBufferCount) {
		cfg.WriteBufferCount = c.Int(config.RocksDBWriteBufferCount)
	}
	if c.IsSet(config.RocksDBThreads) {
		cfg.BackgroundJobs = c.Int(config.RocksDBThreads)
	}
	if c.IsSet(config.RocksDBCompactionStyle) {
		if cfg.CompactionStyle, err = ParseCompactionStyle(c.String(config.RocksDBCompactionStyle)); err != nil {
			return Config{}, err
		}
	}
	if c.IsSet(config.RocksDBDynamicLevelSize) {
		v := c.Bool(config.RocksDBDynamicLevelSize)
		cfg.DynamicLevelBytes = &v
	}
	if c.IsSet(config.RocksDBTargetFileSizeBase) {
		cfg.TargetFileSizeBase = c.MemorySize(config.RocksDBTargetFileSizeBase)
	}
	if c.IsSet(config.RocksDBMaxSizeLevelBase) {
		cfg.MaxBytesForLevelBase = c.MemorySize(config.RocksDBMaxSizeLevelBase)
	}
	if c.IsSet(config.RocksDBUniversalRuns) {
		cfg.UniversalSortedRuns = c.Int(config.RocksDBUniversalRuns)
	}
	return cfg, nil
}

// MemoryConfigFrom reads the state.backend.rocksdb.memory.* keys of c; managed is
// false when the task manager's instances should not share memory.
func MemoryConfigFrom(c *config.Config) (m MemoryConfig, managed bool) {
	return MemoryConfig{
		Size:                  c.MemorySize(config.RocksDBMemoryFixedPerTM),
		WriteBufferRatio:      c.Float(config.RocksDBWriteBufferRatio),
		HighPriorityPoolRatio: c.Float(config.RocksDBHighPrioRatio),
	}, c.Bool(config.RocksDBMemoryManaged)
}
