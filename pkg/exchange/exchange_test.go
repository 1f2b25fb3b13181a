package exchange

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"testing"
	"time"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startServer serves reg's exchange on a loopback port until the test ends.
func startServer(t *testing.T, reg *Registry) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	sluicev1.RegisterExchangeServiceServer(srv, NewServer(reg, slog.Default()))
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

func newClient(t *testing.T) *Client {
	var conns []*grpc.ClientConn
	c := NewClient(func(addr string) (grpc.ClientConnInterface, error) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err == nil {
			conns = append(conns, cc)
		}
		return cc, err
	}, NewPool(4096), slog.Default())
	t.Cleanup(func() {
		c.Close()
		for _, cc := range conns {
			_ = cc.Close()
		}
	})
	return c
}

// produce writes n records (channel, seq) to every channel of p and finishes it.
func produce(ctx context.Context, p *Partition, n int) error {
	rec := make([]byte, 100)
	for i := 0; i < n; i++ {
		for ch := 0; ch < p.NumChannels(); ch++ {
			binary.BigEndian.PutUint32(rec, uint32(ch))
			binary.BigEndian.PutUint64(rec[4:], uint64(i))
			if err := p.Emit(ch, rec); err != nil {
				return err
			}
		}
	}
	return p.Finish()
}

// consume reads g until every channel ended, checking per-channel order; it returns the
// number of records per channel.
func consume(t *testing.T, g *InputGate) []int {
	t.Helper()
	counts := make([]int, g.NumChannels())
	open := g.NumChannels()
	timeout := time.After(30 * time.Second)
	for open > 0 {
		d, ok := g.Poll()
		if !ok {
			select {
			case <-g.Ready():
			case <-g.Failed():
				t.Fatalf("gate failed: %v", g.Err())
			case <-timeout:
				t.Fatalf("timed out with %d channels open, counts %v", open, counts)
			}
			continue
		}
		if d.Buf.Kind == KindEndOfPartition {
			open--
		} else {
			recs := NewRecords(d.Buf.Data)
			for rec, ok := recs.Next(); ok; rec, ok = recs.Next() {
				if got := binary.BigEndian.Uint64(rec[4:]); got != uint64(counts[d.Channel]) {
					t.Fatalf("channel %d: record %d out of order (want %d)", d.Channel, got, counts[d.Channel])
				}
				counts[d.Channel]++
			}
			if recs.Err() != nil {
				t.Fatal(recs.Err())
			}
		}
		g.Recycle(d)
	}
	return counts
}

func TestLocalAndRemoteChannels(t *testing.T) {
	tests := []struct {
		name   string
		remote bool
	}{{"local", false}, {"remote", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prodReg := NewRegistry(4096, 2)
			addr := ""
			if tt.remote {
				addr = startServer(t, prodReg)
			}
			client := newClient(t)
			const channels, n = 3, 20000
			keys := make([]ChannelKey, channels)
			for i := range keys {
				keys[i] = ChannelKey{JobID: "j", Attempt: 1, Edge: 0, Producer: 0, Consumer: int32(i)}
			}
			// One gate per consumer channel would be the real shape; one gate of three
			// channels exercises multiplexing on one stream.
			g := NewInputGate(channels, 2)
			for i, k := range keys {
				var err error
				if tt.remote {
					err = client.ConnectRemote(g, i, 0, addr, k)
				} else {
					err = g.ConnectLocal(prodReg, i, 0, k)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := prodReg.NewPartition(ctx, keys)
			errc := make(chan error, 1)
			go func() { errc <- produce(ctx, p, n) }()
			counts := consume(t, g)
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			g.Close()
			for ch, c := range counts {
				if c != n {
					t.Errorf("channel %d: %d records, want %d", ch, c, n)
				}
			}
			if prodReg.Len() != 0 {
				t.Errorf("%d subpartitions left after end of partition", prodReg.Len())
			}
		})
	}
}

// TestBackpressureBlocksProducer: a consumer that grants no more credit stops the
// producer after the bounded queue fills, and cancellation unblocks it.
func TestBackpressureBlocksProducer(t *testing.T) {
	for _, remote := range []bool{false, true} {
		reg := NewRegistry(1024, 2)
		key := ChannelKey{JobID: "j", Attempt: 1}
		g := NewInputGate(1, 1)
		if remote {
			addr := startServer(t, reg)
			if err := newClient(t).ConnectRemote(g, 0, 0, addr, key); err != nil {
				t.Fatal(err)
			}
		} else if err := g.ConnectLocal(reg, 0, 0, key); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		p := reg.NewPartition(ctx, []ChannelKey{key})
		written := make(chan int, 1000)
		done := make(chan error, 1)
		go func() {
			rec := make([]byte, 500)
			for i := 0; ; i++ {
				if err := p.Emit(0, rec); err != nil {
					done <- err
					return
				}
				written <- i
			}
		}()
		// One buffer delivered (credit 1) + two queued + one being filled: the producer
		// must stall after a handful of 500-byte records.
		deadline := time.After(300 * time.Millisecond)
		last := -1
	wait:
		for {
			select {
			case i := <-written:
				last = i
			case <-deadline:
				break wait
			}
		}
		if last > 12 || last < 2 {
			t.Fatalf("remote=%v: producer wrote %d records without credit; want it blocked after a few", remote, last+1)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("remote=%v: blocked producer returned %v, want context.Canceled", remote, err)
		}
		g.Close()
	}
}

// TestProducerFailureFailsGate: an aborted partition fails its consumers' gates.
func TestProducerFailureFailsGate(t *testing.T) {
	for _, remote := range []bool{false, true} {
		reg := NewRegistry(1024, 2)
		key := ChannelKey{JobID: "j", Attempt: 2}
		g := NewInputGate(1, 2)
		if remote {
			addr := startServer(t, reg)
			if err := newClient(t).ConnectRemote(g, 0, 0, addr, key); err != nil {
				t.Fatal(err)
			}
		} else if err := g.ConnectLocal(reg, 0, 0, key); err != nil {
			t.Fatal(err)
		}
		p := reg.NewPartition(context.Background(), []ChannelKey{key})
		waitAttached(t, reg, key)
		p.Abort(errors.New("task failed"))
		select {
		case <-g.Failed():
		case <-time.After(10 * time.Second):
			t.Fatalf("remote=%v: gate did not fail", remote)
		}
		g.Close()
	}
}

// waitAttached polls until the consumer's request for key reached the registry.
func waitAttached(t *testing.T, reg *Registry, key ChannelKey) {
	t.Helper()
	sp := reg.get(key)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		sp.mu.Lock()
		attached := sp.reader != nil
		sp.mu.Unlock()
		if attached {
			return
		}
	}
	t.Fatalf("channel %s never attached", key)
}

func TestRecordsDetectsCorruptFraming(t *testing.T) {
	r := NewRecords([]byte{10, 1, 2})
	if _, ok := r.Next(); ok || !errors.Is(r.Err(), ErrCorruptBuffer) {
		t.Fatalf("Next on truncated record: ok=%v err=%v", ok, r.Err())
	}
}

func FuzzRecords(f *testing.F) {
	f.Add(appendRecord(appendRecord(nil, []byte("ab")), []byte("c")))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewRecords(data)
		total := 0
		for rec, ok := r.Next(); ok; rec, ok = r.Next() {
			total += framedLen(rec)
		}
		if r.Err() == nil && total != len(data) {
			t.Fatalf("consumed %d of %d bytes without error", total, len(data))
		}
	})
}

// TestPriorityBufferOvertakes: with the consumer out of credit, a priority buffer still
// goes through, ahead of the queued buffers, which the producer gets back as copies; the
// consumer's gate hands it out before the buffers it already holds, and its recycling
// returns no credit.
func TestPriorityBufferOvertakes(t *testing.T) {
	for _, remote := range []bool{false, true} {
		t.Run(map[bool]string{false: "local", true: "remote"}[remote], func(t *testing.T) {
			reg := NewRegistry(4096, 8)
			key := ChannelKey{JobID: "j", Attempt: 1}
			g := NewInputGate(1, 2)
			client := newClient(t)
			if remote {
				if err := client.ConnectRemote(g, 0, 0, startServer(t, reg), key); err != nil {
					t.Fatal(err)
				}
			} else if err := g.ConnectLocal(reg, 0, 0, key); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			p := reg.NewPartition(ctx, []ChannelKey{key})
			waitAttached(t, reg, key)
			for i := 0; i < 5; i++ { // two go out on credit, three stay queued
				if err := p.Emit(0, []byte{byte(i)}); err != nil {
					t.Fatal(err)
				}
				if err := p.Flush(); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Emit(0, []byte{5}); err != nil { // partially filled: overtaken too
				t.Fatal(err)
			}
			waitQueued(t, g, 2)
			over, err := p.BroadcastPriority([]byte("barrier"))
			if err != nil {
				t.Fatal(err)
			}
			var got []byte
			for _, b := range over[0] {
				recs := NewRecords(b)
				for r, ok := recs.Next(); ok; r, ok = recs.Next() {
					got = append(got, r[0])
				}
			}
			if string(got) != string([]byte{2, 3, 4, 5}) {
				t.Fatalf("overtaken records %v, want [2 3 4 5]", got)
			}
			// The priority buffer arrives without credit and is taken first.
			waitQueued(t, g, 3)
			d := next(t, g)
			if d.Buf.Kind != KindPriorityBarrier || string(d.Buf.Data) != "barrier" || d.Seq != 2 {
				t.Fatalf("first delivery %v %q seq %d, want the priority buffer after seq 2", d.Buf.Kind, d.Buf.Data, d.Seq)
			}
			g.Recycle(d)
			var order []byte
			for len(order) < 6 {
				d := next(t, g)
				if d.Buf.Kind != KindData {
					t.Fatalf("unexpected %v", d.Buf.Kind)
				}
				recs := NewRecords(d.Buf.Data)
				for r, ok := recs.Next(); ok; r, ok = recs.Next() {
					order = append(order, r[0])
				}
				g.Recycle(d)
			}
			if string(order) != string([]byte{0, 1, 2, 3, 4, 5}) {
				t.Fatalf("data order %v, want 0..5 (overtaken buffers still follow the barrier)", order)
			}
			if err := p.Finish(); err != nil {
				t.Fatal(err)
			}
			if d := next(t, g); d.Buf.Kind != KindEndOfPartition {
				t.Fatalf("got %v, want end of partition", d.Buf.Kind)
			}
			g.Close()
		})
	}
}

// waitQueued polls until the gate holds n buffers.
func waitQueued(t *testing.T, g *InputGate, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := 0
		g.Queued(func(Delivery) { got++ })
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gate holds %d buffers, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// next waits for the gate's next buffer.
func next(t *testing.T, g *InputGate) Delivery {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		if d, ok := g.Poll(); ok {
			return d
		}
		select {
		case <-g.Ready():
		case <-g.Failed():
			t.Fatalf("gate failed: %v", g.Err())
		case <-timeout:
			t.Fatal("no buffer arrived")
		}
	}
}
