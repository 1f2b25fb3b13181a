//go:build cgo

package rocksdb_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// BenchmarkRestoreMerge measures a restore that merges two RocksDB handles (scaling in
// from 2 subtasks to 1): about 200k keys each with a 100-byte value, and an event-time
// timer for every tenth key, in full snapshots on a file:// blob store. "merge-ms" is
// the restore of both handles minus that of the base handle alone into its own range:
// the cost of bringing in the second handle (download, open, copy or ingest).
//
//	go test -run XXX -bench RestoreMerge -benchtime 5x ./pkg/state/rocksdb
func BenchmarkRestoreMerge(b *testing.B) {
	const n = 400_000
	store, _ := fileStore(b)
	keys := makeKeys(n, 128)
	rng := rand.New(rand.NewPCG(5, 5))
	val := make([]byte, 100)
	var hs []*sluicev1.KeyedStateHandle
	for i := range 2 {
		r := keygroup.RangeFor(i, 2, 128)
		o := opts(b, 128, r)
		o.Subtask = i // the two snapshots' files must not share names
		be := newBackend(b, rocksdb.Config{}, o)
		id, err := be.Register(state.StateDesc{Name: "v", Kind: state.KindValue})
		must(b, err)
		for j, k := range keys {
			if !r.Contains(k.kg) {
				continue
			}
			for x := range val {
				val[x] = byte(rng.Uint32())
			}
			be.SetCurrentKey(k.key, k.kg)
			must(b, be.Put(id, nil, val))
			if j%10 == 0 {
				must(b, be.Timers().RegisterEventTimer(int64(j), k.key, k.kg, nil))
			}
		}
		hs = append(hs, checkpoint(b, be, store, 1))
		must(b, be.Close())
	}
	base := 0
	if hs[1].GetFullSize() > hs[0].GetFullSize() {
		base = 1
	}
	baseRange := keygroup.Range{Start: int(hs[base].GetKeyGroupStart()), End: int(hs[base].GetKeyGroupEnd())}
	restoreTime := func(r keygroup.Range, handles []*sluicev1.KeyedStateHandle) time.Duration {
		be, err := rocksdb.New(opts(b, 128, r), rocksdb.Config{}, nil)
		must(b, err)
		defer be.Close()
		t0 := time.Now()
		must(b, be.Restore(context.Background(), handles, blobstoreFiles(store, 0)))
		return time.Since(t0)
	}
	var both, one time.Duration
	b.ResetTimer()
	for range b.N {
		both += restoreTime(all(128), hs)
		b.StopTimer()
		one += restoreTime(baseRange, hs[base:base+1])
		b.StartTimer()
	}
	b.ReportMetric(float64((both-one).Microseconds())/float64(b.N)/1000, "merge-ms")
	b.ReportMetric(float64(both.Microseconds())/float64(b.N)/1000, "restore-ms")
}
