package exchange

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

func keyToProto(k ChannelKey) *sluicev1.ChannelKey {
	return &sluicev1.ChannelKey{JobId: k.JobID, Attempt: k.Attempt, Edge: k.Edge, Producer: k.Producer, Consumer: k.Consumer}
}

func keyFromProto(k *sluicev1.ChannelKey) ChannelKey {
	return ChannelKey{JobID: k.GetJobId(), Attempt: k.GetAttempt(), Edge: k.GetEdge(), Producer: k.GetProducer(), Consumer: k.GetConsumer()}
}

// Server serves this task manager's subpartitions to consumers on other task managers.
type Server struct {
	sluicev1.UnimplementedExchangeServiceServer
	reg *Registry
	log *slog.Logger
}

// NewServer returns the exchange service over reg.
func NewServer(reg *Registry, log *slog.Logger) *Server { return &Server{reg: reg, log: log} }

// remoteReader is a subpartition's reader on a server stream.
type remoteReader struct {
	ss     *serverStream
	id     uint64
	sp     *subpartition
	queued bool  // in ss.ready; guarded by ss.mu
	err    error // guarded by ss.mu; sent once as an error frame
}

// available claims the drain: the goroutine that queued the buffer or granted the
// credit (the producing task, or the stream's receive loop) sends it itself, so a buffer
// goes from the task to gRPC without a hand-off to another goroutine.
func (r *remoteReader) available(sp *subpartition) bool {
	if sp.draining {
		return false
	}
	sp.draining = true
	return true
}

func (r *remoteReader) drain(sp *subpartition) {
	for {
		sp.mu.Lock()
		b := sp.pollLocked()
		if b == nil {
			sp.draining = false
			sp.mu.Unlock()
			return
		}
		sp.mu.Unlock()
		if err := r.ss.sendBuffer(r.id, b); err != nil {
			// The stream broke: the handler sees it too, and releases the channel.
			sp.mu.Lock()
			sp.draining = false
			sp.mu.Unlock()
			return
		}
	}
}

// fail has the sender goroutine send an error frame (fail runs under the lock).
func (r *remoteReader) fail(err error) { r.ss.markReady(r, err) }

type serverStream struct {
	stream     sluicev1.ExchangeService_ExchangeServer
	notify     chan struct{}
	frameCodec bool // the client speaks frameCodec (content-subtype sluice-exchange)
	cancel     context.CancelFunc

	// sendMu serializes sends on the stream: drains of several channels and error
	// frames share it.
	sendMu sync.Mutex
	closed bool                   // the handler returned: the stream takes no more sends
	frame  sluicev1.ExchangeFrame // reused under sendMu
	out    outFrame               // reused under sendMu

	mu      sync.Mutex
	ready   []*remoteReader
	readers map[uint64]*remoteReader
}

func (ss *serverStream) markReady(r *remoteReader, err error) {
	ss.mu.Lock()
	if err != nil && r.err == nil {
		r.err = err
	}
	if !r.queued {
		r.queued = true
		ss.ready = append(ss.ready, r)
	}
	ss.mu.Unlock()
	select {
	case ss.notify <- struct{}{}:
	default:
	}
}

func (ss *serverStream) popReady() (*remoteReader, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if len(ss.ready) == 0 {
		return nil, nil
	}
	r := ss.ready[0]
	ss.ready = ss.ready[1:]
	r.queued = false
	err := r.err
	if err != nil {
		delete(ss.readers, r.id)
	}
	return r, err
}

// Exchange serves one consumer task manager: it reads channel requests, credits and
// releases, and a sender goroutine (owned by this call) sends buffers against credit.
func (s *Server) Exchange(stream sluicev1.ExchangeService_ExchangeServer) error {
	ctx, cancel := context.WithCancel(stream.Context())
	ss := &serverStream{stream: stream, notify: make(chan struct{}, 1), readers: map[uint64]*remoteReader{}, cancel: cancel}
	if md, ok := metadata.FromIncomingContext(stream.Context()); ok {
		for _, ct := range md.Get("content-type") {
			ss.frameCodec = ss.frameCodec || strings.HasSuffix(ct, "+"+frameCodecName)
		}
	}
	sendErr := make(chan error, 1)
	go func() { sendErr <- ss.sendLoop(ctx) }()

	recvErr := ss.recvLoop(s.reg)
	cancel()
	err := <-sendErr
	// Drains running on task goroutines finish their send; later ones see closed.
	ss.sendMu.Lock()
	ss.closed = true
	ss.sendMu.Unlock()
	// The consumer is gone: its channels are released so their producers do not block.
	ss.mu.Lock()
	readers := ss.readers
	ss.readers = nil
	ss.mu.Unlock()
	for _, r := range readers {
		r.sp.release(fmt.Errorf("%w: consumer connection of %s closed", ErrReleased, r.sp.key))
	}
	if recvErr != nil && !errors.Is(recvErr, io.EOF) {
		return recvErr
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

func (ss *serverStream) recvLoop(reg *Registry) error {
	for {
		f, err := ss.stream.Recv()
		if err != nil {
			return err
		}
		for _, req := range f.GetRequests() {
			sp := reg.get(keyFromProto(req.GetKey()))
			r := &remoteReader{ss: ss, id: req.GetId(), sp: sp}
			ss.mu.Lock()
			ss.readers[r.id] = r
			ss.mu.Unlock()
			if err := sp.attach(r, int(req.GetCredit())); err != nil {
				ss.markReady(r, err)
			}
		}
		for _, c := range f.GetCredits() {
			ss.mu.Lock()
			r := ss.readers[c.GetId()]
			ss.mu.Unlock()
			if r != nil {
				r.sp.addCredit(int(c.GetCredit()))
			}
		}
		for _, id := range f.GetReleases() {
			ss.mu.Lock()
			r := ss.readers[id]
			delete(ss.readers, id)
			ss.mu.Unlock()
			if r != nil {
				r.sp.release(fmt.Errorf("%w: consumer of %s released it", ErrReleased, r.sp.key))
			}
		}
	}
}

// sendBuffer sends one buffer of channel id; from here the buffer belongs to gRPC (with
// the frame codec it is recycled once written, without a copy) or is recycled here.
func (ss *serverStream) sendBuffer(id uint64, b *Buffer) error {
	eop := b.Kind == KindEndOfPartition
	ss.sendMu.Lock()
	var err error
	if ss.closed {
		ss.sendMu.Unlock()
		b.Recycle()
		return errStreamClosed
	}
	if ss.frameCodec {
		ss.out = outFrame{channel: id, buf: b}
		err = ss.stream.SendMsg(&ss.out)
		ss.out = outFrame{}
	} else {
		ss.frame = sluicev1.ExchangeFrame{Channel: id, Kind: sluicev1.BufferKind(b.Kind), Data: b.Data}
		err = ss.stream.Send(&ss.frame)
		ss.frame = sluicev1.ExchangeFrame{}
		b.Recycle()
	}
	ss.sendMu.Unlock()
	if err != nil {
		ss.cancel()
		return err
	}
	if eop {
		// The channel is complete: forget it (streams live as long as the task
		// managers, channels only as long as their attempt).
		ss.mu.Lock()
		delete(ss.readers, id)
		ss.mu.Unlock()
	}
	return nil
}

// sendLoop sends the error frames of failed channels; buffers are sent by drains.
func (ss *serverStream) sendLoop(ctx context.Context) error {
	for {
		select {
		case <-ss.notify:
		case <-ctx.Done():
			return ctx.Err()
		}
		for {
			r, ferr := ss.popReady()
			if r == nil {
				break
			}
			if ferr == nil {
				continue
			}
			ss.sendMu.Lock()
			ss.frame = sluicev1.ExchangeFrame{Channel: r.id, Error: ferr.Error()}
			err := ss.stream.Send(&ss.frame)
			ss.sendMu.Unlock()
			if err != nil {
				return err
			}
		}
	}
}

var errStreamClosed = errors.New("exchange: stream closed")

// Dialer returns a client connection to a task manager's exchange address. Connections
// are owned by the dialer's caller and shared.
type Dialer func(addr string) (grpc.ClientConnInterface, error)

// Client opens channels to subpartitions on other task managers: one stream per producer
// task manager, shared by all channels from it.
type Client struct {
	ctx    context.Context
	cancel context.CancelFunc
	dial   Dialer
	log    *slog.Logger
	wg     sync.WaitGroup

	mu      sync.Mutex
	streams map[string]*clientStream
	pool    *Pool // buffers that received data lands in
}

// NewClient returns a client whose streams live until Close. Received buffers are taken
// from pool (normally the task manager's registry pool, so they recycle into it).
func NewClient(dial Dialer, pool *Pool, log *slog.Logger) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	return &Client{ctx: ctx, cancel: cancel, dial: dial, log: log, streams: map[string]*clientStream{}, pool: pool}
}

// Close ends every stream and waits for their goroutines.
func (c *Client) Close() {
	c.cancel()
	c.wg.Wait()
}

type remoteChannel struct {
	cs   *clientStream
	id   uint64
	gate *InputGate
	ch   int
	key  ChannelKey
	eop  bool // end-of-partition received; guarded by cs.mu

	unannounced int // recycled buffers whose credit was not sent yet
	batch       int
	credit      sluicev1.ChannelCredit
	creditFrame sluicev1.ExchangeFrame
}

// recycle returns one credit. Credit is announced in batches of half the channel's
// credits, in a frame reused across calls (recycle runs on the task goroutine only).
// The producer keeps at least half of the credits meanwhile, so it never starves.
func (rc *remoteChannel) recycle() {
	rc.unannounced++
	if rc.unannounced < rc.batch {
		return
	}
	rc.credit = sluicev1.ChannelCredit{Id: rc.id, Credit: int32(rc.unannounced)}
	rc.unannounced = 0
	rc.cs.send(&rc.creditFrame)
}

func (rc *remoteChannel) close() {
	rc.cs.mu.Lock()
	delete(rc.cs.channels, rc.id)
	eop := rc.eop
	rc.cs.mu.Unlock()
	if !eop {
		rc.cs.send(&sluicev1.ExchangeFrame{Releases: []uint64{rc.id}})
	}
}

type clientStream struct {
	addr   string
	stream sluicev1.ExchangeService_ExchangeClient
	cancel context.CancelFunc

	sendMu sync.Mutex

	mu       sync.Mutex
	channels map[uint64]*remoteChannel
	nextID   uint64
	err      error // set once the stream broke
	pool     *Pool
}

func (cs *clientStream) send(f *sluicev1.ExchangeFrame) {
	cs.sendMu.Lock()
	err := cs.stream.Send(f)
	cs.sendMu.Unlock()
	if err != nil {
		// The receive loop sees the broken stream too and fails every channel.
		cs.cancel()
	}
}

func (c *Client) stream(addr string) (*clientStream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs := c.streams[addr]; cs != nil {
		cs.mu.Lock()
		broken := cs.err != nil
		cs.mu.Unlock()
		if !broken {
			return cs, nil
		}
		delete(c.streams, addr)
	}
	if c.ctx.Err() != nil {
		return nil, fmt.Errorf("exchange client closed")
	}
	conn, err := c.dial(addr)
	if err != nil {
		return nil, fmt.Errorf("dial task manager %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(c.ctx)
	s, err := sluicev1.NewExchangeServiceClient(conn).Exchange(ctx, grpc.ForceCodecV2(frameCodec{}))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("open exchange stream to %s: %w", addr, err)
	}
	cs := &clientStream{addr: addr, stream: s, cancel: cancel, channels: map[uint64]*remoteChannel{}, pool: c.pool}
	c.streams[addr] = cs
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		cs.recvLoop()
	}()
	return cs, nil
}

func (cs *clientStream) recvLoop() {
	f := inFrame{pool: cs.pool}
	for {
		err := cs.stream.RecvMsg(&f)
		if err != nil {
			cs.cancel()
			cs.mu.Lock()
			cs.err = fmt.Errorf("exchange stream to %s broke: %w", cs.addr, err)
			chans := cs.channels
			cs.channels = map[uint64]*remoteChannel{}
			cs.mu.Unlock()
			for _, rc := range chans {
				if !rc.eop {
					rc.gate.fail(fmt.Errorf("input channel %s: %w", rc.key, cs.err))
				}
			}
			return
		}
		cs.mu.Lock()
		rc := cs.channels[f.channel]
		if rc != nil && f.kind == KindEndOfPartition {
			rc.eop = true
		}
		cs.mu.Unlock()
		b := f.buf
		if b == nil {
			b = &Buffer{}
		}
		b.Kind = f.kind
		if rc == nil {
			b.Recycle()
			continue // released by the consumer meanwhile
		}
		if f.err != "" {
			b.Recycle()
			rc.gate.fail(fmt.Errorf("input channel %s: producer side: %s", rc.key, f.err))
			continue
		}
		rc.gate.deliver(rc.ch, b)
	}
}

// ConnectRemote requests channel key from the task manager at addr and attaches it as
// input channel ch (of logical input) of g.
func (c *Client) ConnectRemote(g *InputGate, ch, input int, addr string, key ChannelKey) error {
	cs, err := c.stream(addr)
	if err != nil {
		return err
	}
	cs.mu.Lock()
	if cs.err != nil {
		cs.mu.Unlock()
		return cs.err
	}
	cs.nextID++
	rc := &remoteChannel{cs: cs, id: cs.nextID, gate: g, ch: ch, key: key, batch: max(1, g.credits/2)}
	rc.creditFrame.Credits = []*sluicev1.ChannelCredit{&rc.credit}
	cs.channels[rc.id] = rc
	cs.mu.Unlock()
	g.channels[ch] = rc
	g.input[ch] = input
	cs.send(&sluicev1.ExchangeFrame{Requests: []*sluicev1.ChannelRequest{{Id: rc.id, Key: keyToProto(key), Credit: int32(g.credits)}}})
	return nil
}
