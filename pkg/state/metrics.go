package state

// NativeMetrics are a keyed backend's native metrics (RocksDB's properties), for
// monitoring and diagnosis. Sizes are in bytes.
type NativeMetrics struct {
	// Backends is the number of open backends the metrics cover: 1 for one backend's
	// own, 0 once it is closed (every other field is then zero).
	Backends int
	// EstimatedKeys is a rough count of the keys: deletions and overwrites not yet
	// compacted make it wrong either way.
	EstimatedKeys int64
	// PendingCompactionBytes is what compaction must rewrite to bring every level under
	// its target; writes are slowed, then stopped, when it grows too large.
	PendingCompactionBytes int64
	RunningCompactions     int64
	RunningFlushes         int64
	// L0Files is the number of level-0 files: many slow reads and eventually stall
	// writes.
	L0Files int64
	// DelayedWriteRate is the rate writes are delayed to (bytes/s; 0: not delayed), and
	// WriteStopped says writes are stopped.
	DelayedWriteRate int64
	WriteStopped     bool
	// LiveSSTBytes are the SST files of the current version; TotalSSTBytes also counts
	// obsolete ones still held (e.g. by a snapshot being uploaded).
	LiveSSTBytes  int64
	TotalSSTBytes int64
	// MemTableBytes is the memory of the memtables.
	MemTableBytes int64
	// BlockCacheUsage, BlockCachePinnedUsage and BlockCacheCapacity describe the block
	// cache the backend uses, which backends may share (RocksDB's managed memory: one
	// cache per task manager).
	BlockCacheUsage       int64
	BlockCachePinnedUsage int64
	BlockCacheCapacity    int64
}

// Add returns the metrics of the backends m and o cover together (e.g. the keyed
// operators of one subtask): sums, except that DelayedWriteRate is the lowest non-zero
// rate (the most delayed backend), WriteStopped is either's, and the block cache fields
// are the larger ones (backends sharing a cache would otherwise count it twice).
func (m NativeMetrics) Add(o NativeMetrics) NativeMetrics {
	r := NativeMetrics{
		Backends:               m.Backends + o.Backends,
		EstimatedKeys:          m.EstimatedKeys + o.EstimatedKeys,
		PendingCompactionBytes: m.PendingCompactionBytes + o.PendingCompactionBytes,
		RunningCompactions:     m.RunningCompactions + o.RunningCompactions,
		RunningFlushes:         m.RunningFlushes + o.RunningFlushes,
		L0Files:                m.L0Files + o.L0Files,
		WriteStopped:           m.WriteStopped || o.WriteStopped,
		LiveSSTBytes:           m.LiveSSTBytes + o.LiveSSTBytes,
		TotalSSTBytes:          m.TotalSSTBytes + o.TotalSSTBytes,
		MemTableBytes:          m.MemTableBytes + o.MemTableBytes,
		BlockCacheUsage:        max(m.BlockCacheUsage, o.BlockCacheUsage),
		BlockCachePinnedUsage:  max(m.BlockCachePinnedUsage, o.BlockCachePinnedUsage),
		BlockCacheCapacity:     max(m.BlockCacheCapacity, o.BlockCacheCapacity),
	}
	switch {
	case m.DelayedWriteRate == 0:
		r.DelayedWriteRate = o.DelayedWriteRate
	case o.DelayedWriteRate == 0:
		r.DelayedWriteRate = m.DelayedWriteRate
	default:
		r.DelayedWriteRate = min(m.DelayedWriteRate, o.DelayedWriteRate)
	}
	return r
}

// MetricsReporter is implemented by backends with native metrics. NativeMetrics may
// be called on any goroutine, concurrently with every method of the backend, Close
// included; after Close it returns zero NativeMetrics.
type MetricsReporter interface {
	NativeMetrics() NativeMetrics
}
