package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/sluice-stream/sluice/pkg/exchange"
	"github.com/sluice-stream/sluice/pkg/rpc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/grpc"
)

// benchKey names the one channel of the exchange measurement.
var benchKey = exchange.ChannelKey{JobID: "bench", Attempt: 1, Edge: 0, Producer: 0, Consumer: 0}

func childLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// serve listens on a loopback port with Sluice's server options and announces the
// address on stdout for the driver.
func serve(register func(*grpc.Server)) (*grpc.Server, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := grpc.NewServer(rpc.ServerOptions()...)
	register(srv)
	go func() { _ = srv.Serve(lis) }()
	fmt.Printf("LISTEN %s\n", lis.Addr())
	return srv, nil
}

// stopServer waits for the consumer to hang up, but not forever.
func stopServer(srv *grpc.Server) {
	t := time.AfterFunc(30*time.Second, srv.Stop)
	srv.GracefulStop()
	t.Stop()
}

// sluiceProducer emits warmup+records records into one channel of a registry served by
// the exchange server, as a producing task does.
func sluiceProducer(o options, prof *profiler) error {
	reg := exchange.NewRegistry(o.bufferSize, o.maxQueued)
	srv, err := serve(func(s *grpc.Server) {
		sluicev1.RegisterExchangeServiceServer(s, exchange.NewServer(reg, childLogger()))
	})
	if err != nil {
		return err
	}
	p := reg.NewPartition(context.Background(), []exchange.ChannelKey{benchKey})
	rec := make([]byte, o.recordSize)
	for i := range rec {
		rec[i] = byte(i)
	}
	total := o.warmup + o.records
	for i := int64(0); i < total; i++ {
		if i == o.warmup {
			prof.start()
		}
		// A user's serializer writes each record; the sequence number stands for it.
		binary.LittleEndian.PutUint64(rec, uint64(i))
		if err := p.Emit(0, rec); err != nil {
			return fmt.Errorf("emit record %d: %w", i, err)
		}
	}
	if err := p.Finish(); err != nil {
		return fmt.Errorf("finish: %w", err)
	}
	// The subpartition leaves the registry once the sender took end-of-partition.
	for reg.Len() > 0 {
		time.Sleep(time.Millisecond)
	}
	prof.stop()
	stopServer(srv)
	return nil
}

// sluiceConsumer reads the channel through an exchange client and an input gate, as a
// consuming task does, touching every record.
func sluiceConsumer(o options, prof *profiler) error {
	var conns rpc.Conns
	defer conns.Close()
	client := exchange.NewClient(func(addr string) (grpc.ClientConnInterface, error) { return conns.Get(addr) }, exchange.NewPool(o.bufferSize), childLogger())
	defer client.Close()
	gate := exchange.NewInputGate(1, o.credits)
	defer gate.Close()
	if err := client.ConnectRemote(gate, 0, 0, o.addr, benchKey); err != nil {
		return err
	}

	var (
		n, atStart int64
		sum        uint64
		t0         time.Time
		started    bool
	)
	for {
		d, ok := gate.Poll()
		if !ok {
			select {
			case <-gate.Ready():
			case <-gate.Failed():
				return gate.Err()
			}
			continue
		}
		if d.Buf.Kind == exchange.KindEndOfPartition {
			elapsed := time.Since(t0)
			gate.Recycle(d)
			prof.stop()
			if want := o.warmup + o.records; n != want {
				return fmt.Errorf("received %d records, want %d", n, want)
			}
			timed := n - atStart
			r := result{records: timed, bytes: timed * int64(o.recordSize), nanos: elapsed.Nanoseconds(), sum: sum}
			fmt.Println(r.line())
			return nil
		}
		if !started && n >= o.warmup {
			started, t0, atStart = true, time.Now(), n
			prof.start()
		}
		recs := exchange.NewRecords(d.Buf.Data)
		for rec, ok := recs.Next(); ok; rec, ok = recs.Next() {
			sum += uint64(rec[0])
			n++
		}
		gate.Recycle(d)
		if err := recs.Err(); err != nil {
			return err
		}
	}
}

// rawPayload is the number of bytes per raw message: with kind raw, what the exchange
// puts into one buffer (whole framed records), so that both send messages of the same
// size; with kind raw-full, the whole buffer size.
//
// The difference matters beyond the few bytes: grpc-go marshals and reads messages into
// pooled buffers whose tiers are 16 KiB, 32 KiB, then 1 MiB, zeroed on every Get, so a
// message of 32 KiB of payload plus its few bytes of protobuf framing costs a 1 MiB clear
// on each side, which a full exchange buffer of 100-byte records (32724 bytes) avoids.
func rawPayload(o options) int {
	if o.kind == "raw-full" {
		return o.bufferSize
	}
	framed := o.recordSize + uvarintLen(uint64(o.recordSize))
	limit := exchange.NewPool(o.bufferSize).Limit()
	return limit / framed * framed
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// rawServer sends pre-filled buffers of rawPayload bytes on the first stream opened,
// as fast as HTTP/2 flow control allows, then an end-of-partition frame.
type rawServer struct {
	sluicev1.UnimplementedExchangeServiceServer
	o    options
	prof *profiler
	done chan error
}

func (s *rawServer) Exchange(stream sluicev1.ExchangeService_ExchangeServer) error {
	err := s.send(stream)
	select {
	case s.done <- err:
	default:
	}
	return err
}

func (s *rawServer) send(stream sluicev1.ExchangeService_ExchangeServer) error {
	if _, err := stream.Recv(); err != nil { // the consumer's channel request
		return err
	}
	buf := make([]byte, rawPayload(s.o))
	for i := range buf {
		buf[i] = byte(i)
	}
	total := (s.o.warmup + s.o.records) * int64(s.o.recordSize)
	warm := s.o.warmup * int64(s.o.recordSize)
	frame := &sluicev1.ExchangeFrame{Channel: 1, Kind: sluicev1.BufferKind_BUFFER_KIND_DATA}
	for sent := int64(0); sent < total; {
		if sent >= warm {
			s.prof.start()
		}
		n := min(int64(len(buf)), total-sent)
		frame.Data = buf[:n]
		if err := stream.Send(frame); err != nil {
			return err
		}
		sent += n
	}
	return stream.Send(&sluicev1.ExchangeFrame{Channel: 1, Kind: sluicev1.BufferKind_BUFFER_KIND_END_OF_PARTITION})
}

func rawProducer(o options, prof *profiler) error {
	rs := &rawServer{o: o, prof: prof, done: make(chan error, 1)}
	srv, err := serve(func(s *grpc.Server) { sluicev1.RegisterExchangeServiceServer(s, rs) })
	if err != nil {
		return err
	}
	err = <-rs.done
	prof.stop()
	stopServer(srv)
	return err
}

// rawConsumer opens the stream, requests the channel and counts the bytes it receives,
// touching one byte per record's worth of bytes.
func rawConsumer(o options, prof *profiler) error {
	cc, err := rpc.Dial(o.addr)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := sluicev1.NewExchangeServiceClient(cc).Exchange(ctx)
	if err != nil {
		return err
	}
	req := &sluicev1.ExchangeFrame{Requests: []*sluicev1.ChannelRequest{{
		Id: 1, Credit: int32(o.credits),
		Key: &sluicev1.ChannelKey{JobId: benchKey.JobID, Attempt: benchKey.Attempt},
	}}}
	if err := stream.Send(req); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}

	var (
		n, atStart int64
		sum        uint64
		t0         time.Time
		started    bool
	)
	warm := o.warmup * int64(o.recordSize)
	step := o.recordSize
	for {
		f, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("after %d bytes: %w", n, err)
		}
		if f.GetKind() == sluicev1.BufferKind_BUFFER_KIND_END_OF_PARTITION {
			elapsed := time.Since(t0)
			prof.stop()
			if want := (o.warmup + o.records) * int64(o.recordSize); n != want {
				return fmt.Errorf("received %d bytes, want %d", n, want)
			}
			timed := n - atStart
			r := result{records: timed / int64(o.recordSize), bytes: timed, nanos: elapsed.Nanoseconds(), sum: sum}
			fmt.Println(r.line())
			return nil
		}
		if !started && n >= warm {
			started, t0, atStart = true, time.Now(), n
			prof.start()
		}
		data := f.GetData()
		for i := 0; i < len(data); i += step {
			sum += uint64(data[i])
		}
		n += int64(len(data))
	}
}
