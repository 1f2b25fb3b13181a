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
	return state.NativeMetrics{
		Backends:               1,
		EstimatedKeys:          clampInt64(p.EstimateNumKeys),
		PendingCompactionBytes: clampInt64(p.EstimatePendingCompactionBytes),
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
