//go:build cgo

package rocksdb

import (
	"math"
	"strconv"
	"sync"

	"github.com/linxGnu/grocksdb"
)

// OptionsFactory adjusts RocksDB options after the predefined options and the Config
// have been applied: once with the database options (column == ""), then once per column
// family, with its name ("default", "timers-event", "timers-processing", "state-<n>" for
// registered states). It must not keep opts, and must not replace what the backend relies
// on: the list merge operator of column families, and, with shared Memory, the block
// cache and write-buffer manager (setting another table factory drops them).
type OptionsFactory func(column string, opts *grocksdb.Options)

// Memory is the memory all RocksDB instances of a task manager share: one LRU block
// cache (data, index and filter blocks; index and filter blocks at high priority) and
// one write-buffer manager that charges every memtable to that cache and flushes when
// memtables exceed its limit, so memory stays bounded however many slots, operators and
// states there are. It is safe for concurrent use. Close it when the task manager shuts
// down: backends still open keep what they use until they close.
type Memory struct {
	cfg MemoryConfig

	mu     sync.Mutex
	c      cMemory
	closed bool
}

// NewMemory creates the shared memory.
func NewMemory(cfg MemoryConfig) (*Memory, error) {
	if cfg.Size <= 0 {
		return nil, errorf("memory size %d must be positive", cfg.Size)
	}
	cfg = cfg.resolved()
	return &Memory{cfg: cfg, c: newCMemory(cfg.CacheCapacity(), cfg.HighPriorityPoolRatio, cfg.WriteBufferLimit())}, nil
}

// Config is the memory's configuration.
func (m *Memory) Config() MemoryConfig { return m.cfg }

// Usage reports what the cache and the write buffers hold.
func (m *Memory) Usage() MemoryUsage {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return MemoryUsage{}
	}
	return cMemoryUsage(m.c)
}

// Close drops the task manager's reference; the cache and the write-buffer manager are
// freed when the last database using them closes.
func (m *Memory) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		destroyCMemory(m.c)
		m.c = nil
	}
}

// use applies the memory to new options, under the lock so that Close cannot free it
// meanwhile.
func (m *Memory) use(t *grocksdb.BlockBasedTableOptions, db *grocksdb.Options) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return errorf("the task manager's RocksDB memory is closed")
	}
	useMemory(m.c, t, db)
	return nil
}

// options are the RocksDB options of one backend instance. The backend destroys them
// after it closed the database.
type options struct {
	cfg    Config
	db     *grocksdb.Options
	table  *grocksdb.BlockBasedTableOptions
	ro     *grocksdb.ReadOptions
	wo     *grocksdb.WriteOptions
	cfs    map[string]*grocksdb.Options
	own    cMemory // the instance's own cache when memory is not shared
	events cEvents // counts the background work of the databases opened with db
}

// maxManifestFileSize bounds the MANIFEST, which every snapshot uploads whole (it is a
// private file): RocksDB appends an edit per flush and compaction, and past this size
// starts a new MANIFEST holding only the current version (a few KiB for a few dozen
// files). RocksDB's default, 1 GiB, lets it grow by every checkpoint's flush for the
// life of the job.
const maxManifestFileSize = 16 << 10

// Universal compaction as CompactionUniversal tunes it (see the package documentation
// for the measurements behind these).
const (
	// universalRuns is the default of Config.UniversalSortedRuns.
	universalRuns = 24
	// universalSizeAmp is max_size_amplification_percent: everything is merged into one
	// run when the newer runs hold this percentage of the oldest run's bytes.
	universalSizeAmp = 100
	// universalSizeRatio is size_ratio: a run joins a merge of newer runs when it is at
	// most this percentage larger than them together.
	universalSizeRatio = 1
	// universalBloomBits is the bloom filter's bits per key (about 1% false positives),
	// so that a point read skips the runs that do not hold its key.
	universalBloomBits = 10
)

func newOptions(cfg Config, mem *Memory) (*options, error) {
	o := &options{cfg: cfg, cfs: map[string]*grocksdb.Options{}}
	o.table = grocksdb.NewDefaultBlockBasedTableOptions()
	o.table.SetCacheIndexAndFilterBlocksWithHighPriority(true)
	o.db = grocksdb.NewDefaultOptions()
	o.db.SetCreateIfMissing(true)
	o.db.SetCreateIfMissingColumnFamilies(true)
	// The database's durability is the checkpoints: no file or directory is ever
	// synced (setNoSync), no WAL (see wo), a quiet info log.
	setNoSync(o.db)
	o.db.SetInfoLogLevel(grocksdb.WarnInfoLogLevel)
	o.db.SetKeepLogFileNum(2)
	o.db.SetMaxLogFileSize(8 << 20)
	o.db.SetStatsDumpPeriodSec(0)
	o.db.SetMaxManifestFileSize(maxManifestFileSize)
	o.events = newCEvents()
	addEvents(o.db, o.events)
	switch cfg.Predefined {
	case SpinningDiskOptimized, SpinningDiskOptimizedHighMem, FlashSSDOptimized:
		o.db.IncreaseParallelism(4)
		o.db.SetMaxOpenFiles(-1)
	}
	if cfg.BackgroundJobs > 0 {
		o.db.SetMaxBackgroundJobs(cfg.BackgroundJobs)
	}
	if cfg.Predefined == SpinningDiskOptimizedHighMem {
		o.table.SetBlockSize(128 << 10)
		o.table.SetFilterPolicy(grocksdb.NewBloomFilter(10)) // the table options own it
	} else if cfg.Compaction() == CompactionUniversal {
		o.table.SetFilterPolicy(grocksdb.NewBloomFilterFull(universalBloomBits))
	}
	if mem != nil {
		// Flink's managed-memory settings: index and filter blocks live in the cache
		// (bounded), level-0 ones pinned.
		o.table.SetCacheIndexAndFilterBlocks(true)
		o.table.SetPinL0FilterAndIndexBlocksInCache(true)
		if err := mem.use(o.table, o.db); err != nil {
			o.destroy()
			return nil, err
		}
	} else {
		size := cfg.BlockCacheSize
		if size <= 0 {
			size = 8 << 20
			if cfg.Predefined == SpinningDiskOptimizedHighMem {
				size = 256 << 20
			}
		}
		o.own = newCMemory(size, 0, 0)
		useMemory(o.own, o.table, nil)
	}
	if cfg.OptionsFactory != nil {
		cfg.OptionsFactory("", o.db)
	}
	o.ro = grocksdb.NewDefaultReadOptions()
	o.wo = grocksdb.NewDefaultWriteOptions()
	o.wo.DisableWAL(true)
	return o, nil
}

// column returns the options of a column family (created once per name).
func (o *options) column(name string) *grocksdb.Options {
	if c := o.cfs[name]; c != nil {
		return c
	}
	c := grocksdb.NewDefaultOptions()
	setNoSync(c) // what an SstFileWriter with these options writes is not synced either
	switch o.cfg.Predefined {
	case SpinningDiskOptimized, SpinningDiskOptimizedHighMem:
		c.SetCompactionStyle(grocksdb.LevelCompactionStyle)
		c.SetLevelCompactionDynamicLevelBytes(true)
	}
	if o.cfg.Predefined == SpinningDiskOptimizedHighMem {
		c.SetTargetFileSizeBase(256 << 20)
		c.SetMaxBytesForLevelBase(1 << 30)
		c.SetWriteBufferSize(64 << 20)
		c.SetMinWriteBufferNumberToMerge(3)
		c.SetMaxWriteBufferNumber(4)
	}
	if o.cfg.Compaction() == CompactionUniversal {
		runs := o.cfg.UniversalSortedRuns
		if runs <= 0 {
			runs = universalRuns
		}
		setUniversal(c, runs)
	} else {
		c.SetCompactionStyle(grocksdb.LevelCompactionStyle)
		if o.cfg.DynamicLevelBytes != nil {
			c.SetLevelCompactionDynamicLevelBytes(*o.cfg.DynamicLevelBytes)
		}
		if o.cfg.TargetFileSizeBase > 0 {
			c.SetTargetFileSizeBase(uint64(o.cfg.TargetFileSizeBase))
		}
		if o.cfg.MaxBytesForLevelBase > 0 {
			c.SetMaxBytesForLevelBase(uint64(o.cfg.MaxBytesForLevelBase))
		}
	}
	if o.cfg.WriteBufferSize > 0 {
		c.SetWriteBufferSize(uint64(o.cfg.WriteBufferSize))
	}
	if o.cfg.WriteBufferCount > 0 {
		c.SetMaxWriteBufferNumber(o.cfg.WriteBufferCount)
	}
	c.SetBlockBasedTableFactory(o.table)
	setListMerge(c)
	if o.cfg.OptionsFactory != nil {
		o.cfg.OptionsFactory(name, c)
	}
	o.cfs[name] = c
	return c
}

// setUniversal sets column family options c to universal compaction as
// CompactionUniversal describes it, a compaction starting at runs sorted runs.
func setUniversal(c *grocksdb.Options, runs int) {
	c.SetCompactionStyle(grocksdb.UniversalCompactionStyle)
	u := grocksdb.NewDefaultUniversalCompactionOptions()
	u.SetSizeRatio(universalSizeRatio)
	u.SetMinMergeWidth(2)
	u.SetMaxMergeWidth(math.MaxUint32)
	u.SetMaxSizeAmplificationPercent(universalSizeAmp)
	c.SetUniversalCompactionOptions(u) // copies and destroys u
	c.SetLevel0FileNumCompactionTrigger(runs)
	// RocksDB slows writes at level0_slowdown_writes_trigger sorted runs and stops them
	// at level0_stop_writes_trigger (20 and 36 by default): far above the trigger, so
	// that only a compaction falling far behind stalls writes.
	c.SetLevel0SlowdownWritesTrigger(3 * runs)
	c.SetLevel0StopWritesTrigger(4 * runs)
}

// CompactionStats describe a backend's database: its background work since the
// backend was created (counts and bytes of the SST files flushes and compactions
// wrote, which incremental snapshots upload), and its sorted runs now.
type CompactionStats struct {
	Flushes         int64
	FlushBytes      int64
	Compactions     int64 // completed, trivial moves (which write nothing) included
	CompactionBytes int64
	// WriteStalls counts the times writes began to be delayed or stopped because
	// compaction fell behind.
	WriteStalls int64
	// SortedRuns is the number of level-0 files plus non-empty deeper levels, over all
	// column families: the most places a point read may look (bloom filters skip most).
	SortedRuns int
}

// CompactionStats returns the database's compaction statistics. It may be called on any
// goroutine; after Close it returns zero CompactionStats.
func (b *Backend) CompactionStats() CompactionStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.db == nil {
		return CompactionStats{}
	}
	var s CompactionStats
	f, fb, c, cb, st := cEventCounts(b.o.events)
	s.Flushes, s.FlushBytes, s.Compactions, s.CompactionBytes, s.WriteStalls = int64(f), int64(fb), int64(c), int64(cb), int64(st)
	for _, col := range b.columns() {
		s.SortedRuns += b.sortedRuns(col)
	}
	return s
}

// sortedRuns counts the sorted runs of column family c: its level-0 files and its
// non-empty deeper levels; b.mu is held and the database open.
func (b *Backend) sortedRuns(c *column) int {
	runs := 0
	for level := 0; ; level++ {
		v, ok := b.nat.property(c.c, "rocksdb.num-files-at-level"+strconv.Itoa(level))
		if !ok {
			return runs
		}
		n, _ := strconv.Atoi(v)
		if level == 0 {
			runs += n
		} else if n > 0 {
			runs++
		}
	}
}

func (o *options) destroy() {
	for _, c := range o.cfs {
		c.Destroy()
	}
	o.cfs = nil
	if o.db != nil {
		o.db.Destroy()
		o.db = nil
	}
	if o.table != nil {
		o.table.Destroy()
		o.table = nil
	}
	if o.ro != nil {
		o.ro.Destroy()
		o.wo.Destroy()
		o.ro, o.wo = nil, nil
	}
	if o.own != nil {
		destroyCMemory(o.own)
		o.own = nil
	}
	if o.events != nil {
		destroyCEvents(o.events)
		o.events = nil
	}
}
