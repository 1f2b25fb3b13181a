//go:build cgo

package rocksdb

import "strconv"

// Properties reads RocksDB's native properties of the instance (see Properties). It
// may be called from any goroutine; after Close it returns zero Properties.
func (b *Backend) Properties() Properties {
	b.mu.Lock()
	defer b.mu.Unlock()
	var p Properties
	if b.db == nil {
		return p
	}
	cols := b.columns()
	p.ColumnFamilies = len(cols)
	sum := func(name string) uint64 {
		var n uint64
		for _, c := range cols {
			v, _ := b.nat.intProperty(c.c, name)
			n += v
		}
		return n
	}
	db := func(name string) uint64 {
		v, _ := b.nat.intProperty(b.def.c, name)
		return v
	}
	p.EstimateNumKeys = sum("rocksdb.estimate-num-keys")
	p.EstimatePendingCompactionBytes = sum("rocksdb.estimate-pending-compaction-bytes")
	p.LiveSSTFilesSize = sum("rocksdb.live-sst-files-size")
	p.TotalSSTFilesSize = sum("rocksdb.total-sst-files-size")
	p.CurSizeAllMemTables = sum("rocksdb.cur-size-all-mem-tables")
	for _, c := range cols {
		if s, ok := b.nat.property(c.c, "rocksdb.num-files-at-level0"); ok {
			n, _ := strconv.ParseUint(s, 10, 64)
			p.NumFilesAtLevel0 += n
		}
	}
	p.NumRunningCompactions = db("rocksdb.num-running-compactions")
	p.NumRunningFlushes = db("rocksdb.num-running-flushes")
	p.ActualDelayedWriteRate = db("rocksdb.actual-delayed-write-rate")
	p.IsWriteStopped = db("rocksdb.is-write-stopped") != 0
	// Every column family uses the same cache.
	p.BlockCacheUsage = db("rocksdb.block-cache-usage")
	p.BlockCachePinnedUsage = db("rocksdb.block-cache-pinned-usage")
	p.BlockCacheCapacity = db("rocksdb.block-cache-capacity")
	return p
}
