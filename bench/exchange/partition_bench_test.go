package main

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/sluice-stream/sluice/pkg/exchange"
)

// BenchmarkPartitionEmit emits 100-byte records into a local (in-process) channel that a
// consumer goroutine drains through an input gate, so that the allocations and the cost
// per record of the exchange's hot path show without the network.
func BenchmarkPartitionEmit(b *testing.B) {
	const recordSize = 100
	reg := exchange.NewRegistry(32<<10, 4)
	key := exchange.ChannelKey{JobID: "bench", Attempt: 1}
	gate := exchange.NewInputGate(1, 4)
	defer gate.Close()
	if err := gate.ConnectLocal(reg, 0, 0, key); err != nil {
		b.Fatal(err)
	}
	p := reg.NewPartition(context.Background(), []exchange.ChannelKey{key})

	type drained struct {
		n   int64
		sum uint64
		err error
	}
	done := make(chan drained, 1)
	go func() {
		var d drained
		for {
			dl, ok := gate.Poll()
			if !ok {
				select {
				case <-gate.Ready():
				case <-gate.Failed():
					d.err = gate.Err()
					done <- d
					return
				}
				continue
			}
			if dl.Buf.Kind == exchange.KindEndOfPartition {
				gate.Recycle(dl)
				done <- d
				return
			}
			recs := exchange.NewRecords(dl.Buf.Data)
			for rec, ok := recs.Next(); ok; rec, ok = recs.Next() {
				d.sum += uint64(rec[0])
				d.n++
			}
			gate.Recycle(dl)
			if d.err = recs.Err(); d.err != nil {
				done <- d
				return
			}
		}
	}()

	rec := make([]byte, recordSize)
	b.SetBytes(recordSize)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		binary.LittleEndian.PutUint64(rec, uint64(i))
		if err := p.Emit(0, rec); err != nil {
			b.Fatal(err)
		}
	}
	if err := p.Finish(); err != nil {
		b.Fatal(err)
	}
	d := <-done
	b.StopTimer()
	if d.err != nil {
		b.Fatal(d.err)
	}
	if d.n != int64(b.N) {
		b.Fatalf("drained %d records, want %d", d.n, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}
