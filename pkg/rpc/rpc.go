// Package rpc holds the gRPC plumbing shared by the daemons and the CLI: connection
// options, a connection cache and the single place where errors become status codes.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// MaxMessageSize bounds one gRPC message: exchange buffers and job graphs fit well within.
const MaxMessageSize = 64 << 20

// Dial returns a client connection to addr (connections are lazy; errors show on use).
func Dial(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// Reconnect quickly once a peer is back: gRPC's default backoff grows to two
		// minutes, which would keep a task manager from registering long after its
		// jobmanager restarted.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize)),
	)
}

// ServerOptions are the options of every Sluice gRPC server.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize), grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.ChainUnaryInterceptor(statusInterceptor),
	}
}

// Errors that map to specific status codes. Wrap them with %w.
var (
	ErrNotFound           = errors.New("not found")
	ErrInvalid            = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrUnavailable        = errors.New("unavailable")
)

// Status maps an error to its gRPC status; this is the one place that does so.
func Status(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	msg := err.Error()
	for _, c := range []struct {
		sentinel error
		code     codes.Code
	}{
		{ErrNotFound, codes.NotFound}, {ErrInvalid, codes.InvalidArgument},
		{ErrFailedPrecondition, codes.FailedPrecondition}, {ErrUnavailable, codes.Unavailable},
	} {
		if errors.Is(err, c.sentinel) {
			// The code carries the category; the user reads the rest.
			return status.Error(c.code, strings.TrimPrefix(msg, c.sentinel.Error()+": "))
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, msg)
}

func statusInterceptor(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	resp, err := h(ctx, req)
	return resp, Status(err)
}

// Message returns the human part of an RPC error: the server's message, or for transport
// failures a sentence saying the peer could not be reached.
func Message(err error, peer, addr string) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	switch st.Code() {
	case codes.Unavailable:
		if peer == "jobmanager" {
			return fmt.Sprintf("cannot reach the jobmanager at %s (is it running? set --jobmanager or SLUICE_JOBMANAGER)", addr)
		}
		return fmt.Sprintf("cannot reach the %s at %s", peer, addr)
	case codes.DeadlineExceeded:
		return fmt.Sprintf("the %s at %s did not answer in time", peer, addr)
	}
	return st.Message()
}

// Conns caches client connections by address. Close closes them all.
type Conns struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

// Get returns the cached connection to addr, dialing it on first use.
func (c *Conns) Get(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := Dial(addr)
	if err != nil {
		return nil, err
	}
	if c.conns == nil {
		c.conns = map[string]*grpc.ClientConn{}
	}
	c.conns[addr] = cc
	return cc, nil
}

// Close closes every connection.
func (c *Conns) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cc := range c.conns {
		_ = cc.Close()
	}
	c.conns = nil
}
