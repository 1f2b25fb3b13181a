package meta

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluice-stream/sluice/pkg/meta/internal/zapslog"
)

var (
	// ErrNotLeader: the write was fenced off because the given Leadership no longer
	// holds the leader key (or never did). Nothing was written. The caller must stop
	// acting as leader.
	ErrNotLeader = errors.New("meta: not the leader (fencing check failed)")
	// ErrOutcomeUnknown: the write may or may not have been applied (timeout, lost
	// connection, etcd leader change). Never delete what such a write points to.
	ErrOutcomeUnknown = errors.New("meta: outcome of the write is unknown")
	// ErrNotFound: the job, checkpoint or key does not exist.
	ErrNotFound = errors.New("meta: not found")
	// ErrTxnTooLarge: the transaction exceeds the etcd server's --max-txn-ops or
	// --max-request-bytes. Nothing was written.
	ErrTxnTooLarge = errors.New("meta: transaction exceeds the etcd server's limits")
	// ErrCheckpointExists: a record with this checkpoint ID already exists. After a
	// retry of an AddCheckpoint that returned ErrOutcomeUnknown it means the first try
	// committed.
	ErrCheckpointExists = errors.New("meta: checkpoint already recorded")
	// ErrCheckpointOrder: a checkpoint older than a recorded checkpoint was added (a
	// completed checkpoint subsumes all older pending ones, so this is a coordinator
	// bug). Nothing was written.
	ErrCheckpointOrder = errors.New("meta: checkpoint older than a recorded checkpoint")
	// ErrSharedFileMissing: a checkpoint reuses a shared file that is no longer in the
	// registry (see CompletedCheckpoint.NewSharedFiles). Nothing was written; the
	// checkpoint must be declined.
	ErrSharedFileMissing = errors.New("meta: reused shared file not registered")
	// ErrConflict: concurrent writes to the same job's checkpoints kept invalidating
	// this write (it was retried). Nothing was written.
	ErrConflict = errors.New("meta: concurrent modification")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("meta: store closed")
	// ErrUnavailable: a read could not be done: etcd did not answer in time or could not
	// be reached. Reads wrap it; nothing was written. A retry may succeed.
	ErrUnavailable = errors.New("meta: etcd unavailable")
)

// Unavailable reports whether err says that etcd could not be reached or did not
// answer (ErrUnavailable, or a write with ErrOutcomeUnknown): the request may succeed
// when retried once etcd is back. Errors of requests etcd rejected, ErrNotLeader and
// the store's own checks are not.
func Unavailable(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOutcomeUnknown)
}

// Defaults of the Options.
const (
	DefaultLeaseTTL       = 15 * time.Second
	DefaultRequestTimeout = 10 * time.Second
	DefaultDialTimeout    = 10 * time.Second
	// maxCallSendMsgSize is the client's bound on one request; the server's
	// --max-request-bytes is the one that normally applies first.
	maxCallSendMsgSize = 32 << 20
	// conflictRetries bounds the read-compute-write retries of one call. A conflict
	// means that another write of the same leader succeeded, so there is progress;
	// conflicts only arise between concurrent calls of one process.
	conflictRetries = 100
)

// Option configures Connect.
type Option func(*options)

type options struct {
	leaseTTL       time.Duration
	requestTimeout time.Duration
	dialTimeout    time.Duration
}

// WithLeaseTTL sets the TTL of the leadership lease (rounded up to whole seconds, at
// least 2 s): a leader that stops renewing its lease (crashed, paused, partitioned)
// loses leadership after at most this long, which bounds failover time. Default 15 s.
func WithLeaseTTL(d time.Duration) Option { return func(o *options) { o.leaseTTL = d } }

// WithRequestTimeout bounds each etcd request the Store makes (in addition to the
// caller's context). A write that times out returns ErrOutcomeUnknown. Default 10 s.
func WithRequestTimeout(d time.Duration) Option {
	return func(o *options) { o.requestTimeout = d }
}

// WithDialTimeout bounds Connect's first contact with etcd. Default 10 s.
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// Store is the metadata store of one Sluice cluster: an etcd client and a key prefix.
// It is safe for concurrent use.
type Store struct {
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger
	opts   options

	mu          sync.Mutex
	closed      bool
	closing     chan struct{}
	leaderships map[*Leadership]struct{}
	wg          sync.WaitGroup
}

// Connect opens a Store on the etcd cluster at endpoints (e.g. "http://127.0.0.1:2379"),
// with all keys under prefix (e.g. "/sluice/<cluster-id>/"; a trailing "/" is added if
// missing). It checks that etcd answers before returning. The client reconnects by
// itself after etcd outages. log may be nil.
func Connect(ctx context.Context, endpoints []string, prefix string, log *slog.Logger, opts ...Option) (*Store, error) {
	o := options{leaseTTL: DefaultLeaseTTL, requestTimeout: DefaultRequestTimeout, dialTimeout: DefaultDialTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	if o.leaseTTL < 2*time.Second {
		o.leaseTTL = 2 * time.Second
	}
	if len(endpoints) == 0 {
		return nil, errors.New("meta: no etcd endpoints")
	}
	if prefix == "" || strings.ContainsRune(prefix, 0) {
		return nil, errors.New("meta: empty or invalid key prefix")
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          o.dialTimeout,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		MaxCallSendMsgSize:   maxCallSendMsgSize,
		Logger:               zapslog.New(log.With("component", "etcd-client"), zapslog.Quieter),
		// Reconnect within seconds after an etcd outage (gRPC's default backoff grows
		// to two minutes).
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second},
			MinConnectTimeout: 5 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("meta: etcd client: %w", err)
	}
	s := &Store{
		cli:         cli,
		prefix:      prefix,
		log:         log,
		opts:        o,
		closing:     make(chan struct{}),
		leaderships: make(map[*Leadership]struct{}),
	}
	cctx, cancel := context.WithTimeout(ctx, o.dialTimeout)
	defer cancel()
	if _, err := cli.Get(cctx, s.leaderKey(), clientv3.WithCountOnly()); err != nil {
		_ = cli.Close()
		return nil, fmt.Errorf("meta: connecting to etcd at %s: %w", strings.Join(endpoints, ","), err)
	}
	return s, nil
}

// Close resigns every leadership still held through this Store (best effort, so that
// another candidate takes over at once instead of after the lease TTL) and closes the
// etcd client. Writes in flight fail.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	ls := make([]*Leadership, 0, len(s.leaderships))
	for l := range s.leaderships {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	for _, l := range ls {
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.requestTimeout)
		_ = l.Resign(ctx)
		cancel()
	}
	s.wg.Wait()
	return s.cli.Close()
}

// Prefix is the key prefix of this Store, ending in "/".
func (s *Store) Prefix() string { return s.prefix }

// Client is the underlying etcd client, for tools and tests. Writes through it are not
// fenced.
func (s *Store) Client() *clientv3.Client { return s.cli }

// reqCtx bounds one etcd request.
func (s *Store) reqCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.opts.requestTimeout)
}

// Keys.

func (s *Store) leaderKey() string               { return s.prefix + "leader" }
func (s *Store) jobsPrefix() string              { return s.prefix + "jobs/" }
func (s *Store) jobKey(id string) string         { return s.prefix + "jobs/" + id }
func (s *Store) jobSubPrefix(id string) string   { return s.prefix + "jobs/" + id + "/" }
func (s *Store) counterKey(id string) string     { return s.jobSubPrefix(id) + "checkpoint-counter" }
func (s *Store) cpPrefix(id string) string       { return s.jobSubPrefix(id) + "checkpoints/" }
func (s *Store) sharedPrefix(id string) string   { return s.jobSubPrefix(id) + "shared/" }
func (s *Store) cpKey(id string, n int64) string { return s.cpPrefix(id) + fmt.Sprintf("%020d", n) }
func (s *Store) sharedKey(id, file string) string {
	return s.sharedPrefix(id) + file
}

func validJobID(id string) error {
	if id == "" || strings.ContainsAny(id, "/\x00") || len(id) > 512 {
		return fmt.Errorf("meta: invalid job ID %q (non-empty, no '/', at most 512 bytes)", id)
	}
	return nil
}

func validFileName(f string) error {
	if f == "" || strings.ContainsRune(f, 0) || len(f) > 4096 {
		return fmt.Errorf("meta: invalid shared file name %q", f)
	}
	return nil
}

// fence is the comparison that every write carries.
func (s *Store) fence(l *Leadership) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(s.leaderKey()), "=", l.rev)
}

// writeErr classifies the error of a write request. Errors etcd returns for requests
// it rejected before applying them (invalid, too large, no space, auth) are definite:
// nothing was written. Every other error (timeouts, unavailable, cancelled, unknown)
// may hide a committed write and wraps ErrOutcomeUnknown.
func writeErr(op string, err error) error {
	if errors.Is(err, rpctypes.ErrTooManyOps) {
		return fmt.Errorf("meta: %s: %w: too many operations in one transaction; raise the etcd server's --max-txn-ops (%v)", op, ErrTxnTooLarge, err)
	}
	if errors.Is(err, rpctypes.ErrRequestTooLarge) {
		return fmt.Errorf("meta: %s: %w: request too large; raise the etcd server's --max-request-bytes (%v)", op, ErrTxnTooLarge, err)
	}
	code := codes.Unknown
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if st, ok := status.FromError(err); ok {
		code = st.Code()
	}
	if code == codes.ResourceExhausted && strings.Contains(err.Error(), "larger than max") {
		return fmt.Errorf("meta: %s: %w: request too large for the gRPC message limit (%v)", op, ErrTxnTooLarge, err)
	}
	switch code {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied,
		codes.Unauthenticated, codes.ResourceExhausted, codes.OutOfRange, codes.Unimplemented:
		return fmt.Errorf("meta: %s: rejected by etcd, nothing written: %w", op, err)
	}
	return fmt.Errorf("meta: %s: %w: %w", op, ErrOutcomeUnknown, err)
}

// readErr wraps the error of a read; unless etcd rejected the request, it wraps
// ErrUnavailable too.
func readErr(op string, err error) error {
	if rejected(err) {
		return fmt.Errorf("meta: %s: reading etcd: %w", op, err)
	}
	return fmt.Errorf("meta: %s: reading etcd: %w: %w", op, ErrUnavailable, err)
}

// readStepErr wraps the error of the read that starts a write: the write was not sent,
// so its outcome is known (nothing written). Unless etcd rejected the read, it wraps
// ErrUnavailable.
func readStepErr(op string, err error) error {
	if rejected(err) {
		return fmt.Errorf("meta: %s: reading etcd failed, nothing written: %w", op, err)
	}
	return fmt.Errorf("meta: %s: reading etcd failed, nothing written: %w: %w", op, ErrUnavailable, err)
}

// rejected reports whether etcd refused a request for what it is (invalid, too large,
// not permitted), as opposed to not answering it.
func rejected(err error) bool {
	code := codes.Unknown
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if st, ok := status.FromError(err); ok {
		code = st.Code()
	}
	switch code {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied,
		codes.Unauthenticated, codes.ResourceExhausted, codes.OutOfRange, codes.Unimplemented:
		return true
	}
	return false
}

// conflictPause spreads out the retries of concurrent callers after the attempt-th
// conflict: a random pause of up to attempt ms, at most 20 ms.
func (s *Store) conflictPause(ctx context.Context, attempt int) error {
	return s.sleepCtx(ctx, time.Duration(rand.Int64N(int64(min(attempt+1, 20))*int64(time.Millisecond))))
}

// sleepCtx waits d, or less if ctx ends or the store closes.
func (s *Store) sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing:
		return ErrClosed
	}
}
