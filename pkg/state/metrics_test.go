package state

import "testing"

// TestNativeMetricsAdd: sums, except the most delayed write rate, either's write stop
// and the larger block cache (a cache shared by backends counts once).
func TestNativeMetricsAdd(t *testing.T) {
	a := NativeMetrics{Backends: 1, EstimatedKeys: 10, PendingCompactionBytes: 100, RunningCompactions: 1, RunningFlushes: 1,
		L0Files: 3, DelayedWriteRate: 16 << 20, LiveSSTBytes: 1000, TotalSSTBytes: 1200, MemTableBytes: 64,
		BlockCacheUsage: 500, BlockCachePinnedUsage: 50, BlockCacheCapacity: 1 << 20}
	b := NativeMetrics{Backends: 1, EstimatedKeys: 5, PendingCompactionBytes: 50, L0Files: 1, DelayedWriteRate: 8 << 20,
		WriteStopped: true, LiveSSTBytes: 10, TotalSSTBytes: 10, MemTableBytes: 32, BlockCacheUsage: 700, BlockCachePinnedUsage: 10,
		BlockCacheCapacity: 1 << 20}
	want := NativeMetrics{Backends: 2, EstimatedKeys: 15, PendingCompactionBytes: 150, RunningCompactions: 1, RunningFlushes: 1,
		L0Files: 4, DelayedWriteRate: 8 << 20, WriteStopped: true, LiveSSTBytes: 1010, TotalSSTBytes: 1210, MemTableBytes: 96,
		BlockCacheUsage: 700, BlockCachePinnedUsage: 50, BlockCacheCapacity: 1 << 20}
	if got := a.Add(b); got != want {
		t.Errorf("a+b = %+v, want %+v", got, want)
	}
	if got := b.Add(a); got != want {
		t.Errorf("b+a = %+v, want %+v", got, want)
	}
	undelayed := NativeMetrics{Backends: 1}
	if got := undelayed.Add(a).DelayedWriteRate; got != a.DelayedWriteRate {
		t.Errorf("delayed write rate with an undelayed backend: %d, want %d", got, a.DelayedWriteRate)
	}
	if got := (NativeMetrics{}).Add(NativeMetrics{}); got != (NativeMetrics{}) {
		t.Errorf("zero + zero = %+v", got)
	}
}
