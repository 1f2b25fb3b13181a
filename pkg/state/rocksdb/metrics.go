//go:build cgo

package rocksdb

import (
	"math"

	"github.com/sluice-stream/sluice/pkg/state"
)

var _ state.MetricsReporter = (*Backend)(nil)

// NativeMetrics maps Properties to the backend-independent metrics. Like Properties it
// may be called on any goroutine; after Close it returns zero NativeMetrics.
func (b *Backend) NativeMetrics() state.NativeMetrics {
	p := b.Properties()
	if p.ColumnFamilies == 0 {
		return state.NativeMetrics{} // closed
	}
	pending := clampInt64(p.EstimatePendingCompactionBytes)
	if b.cfg.Compaction() == CompactionUniversal {
		// RocksDB estimates no pending bytes under universal compaction (it reports 0);
		// the debt there is the sorted runs beyond the compaction trigger.
		pending = max(pending, b.universalBacklog())
	}
	return state.NativeMetrics{
		Backends:               1,
		EstimatedKeys:          clampInt64(p.EstimateNumKeys),
		PendingCompactionBytes: pending,
		RunningCompactions:     clampInt64(p.NumRunningCompactions),
		RunningFlushes:         clampInt64(p.NumRunningFlushes),
		L0Files:                clampInt64(p.NumFilesAtLevel0),
		DelayedWriteRate:       clampInt64(p.ActualDelayedWriteRate),
		WriteStopped:           p.IsWriteStopped,
		LiveSSTBytes:           clampInt64(p.LiveSSTFilesSize),
		TotalSSTBytes:          clampInt64(p.TotalSSTFilesSize),
		MemTableBytes:          clampInt64(p.CurSizeAllMemTables),
		BlockCacheUsage:        clampInt64(p.BlockCacheUsage),
		BlockCachePinnedUsage:  clampInt64(p.BlockCachePinnedUsage),
		BlockCacheCapacity:     clampInt64(p.BlockCacheCapacity),
	}
}

func clampInt64(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

// universalBacklog estimates, under universal compaction, what compaction is behind
// by: per column family with more sorted runs than the trigger, the share of its live
// SST bytes in the runs beyond the trigger (runs are merged newest first, so those are
// what waits). 0 while every column family is at or under the trigger.
func (b *Backend) universalBacklog() int64 {
	trigger := b.cfg.UniversalSortedRuns
	if trigger <= 0 {
		trigger = universalRuns
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.db == nil {
		return 0
	}
	var backlog int64
	for _, c := range b.columns() {
		runs := b.sortedRuns(c)
		if runs <= trigger {
			continue
		}
		live, _ := b.nat.intProperty(c.c, "rocksdb.live-sst-files-size")
		backlog += clampInt64(live) / int64(runs) * int64(runs-trigger)
	}
	return backlog
}
