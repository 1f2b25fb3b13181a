// Package embedded runs a single-member etcd server inside the process
// (go.etcd.io/etcd/server/v3/embed): the metadata store of a local Sluice cluster and
// of tests. Real deployments point pkg/meta at an external etcd cluster instead.
//
// The server is configured for Sluice's use of etcd: transactions may hold many
// operations (a completed checkpoint and all its shared-file registry updates are one
// transaction, see pkg/meta), the database quota is modest, the HTTP/JSON gRPC gateway
// is off, history is compacted every 10 minutes, and etcd's logs go to the given
// *slog.Logger with its Info chatter demoted to Debug.
//
// Close leaves no goroutine behind (the tests check it with goleak and no ignores).
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"go.etcd.io/etcd/server/v3/embed"

	"github.com/sluice-stream/sluice/pkg/meta/internal/zapslog"
)

// Defaults for the limits the embedded server runs with.
const (
	// DefaultMaxTxnOps is the most operations one transaction may hold (etcd's own
	// default is 128). One completed checkpoint writes one registry entry per shared
	// file it references, atomically, so this bounds the shared files of one checkpoint.
	DefaultMaxTxnOps = 10000
	// DefaultMaxRequestBytes bounds one request (etcd's default is 1.5 MiB); enough for
	// DefaultMaxTxnOps registry entries with long file names.
	DefaultMaxRequestBytes = 8 << 20
	// DefaultQuotaBackendBytes is the database size at which etcd raises its NOSPACE
	// alarm and refuses writes (etcd's default is 2 GiB). Sluice's metadata is small.
	DefaultQuotaBackendBytes = 512 << 20
	// DefaultAutoCompactionRetention: history older than this is compacted.
	DefaultAutoCompactionRetention = "10m"
)

// Options configures Start. The zero value is usable: a temporary data directory and
// free loopback ports.
type Options struct {
	// Dir is the data directory. It is created if missing; a server restarted on the
	// same Dir has all the data committed before. Empty: a temporary directory that
	// Close removes.
	Dir string
	// ClientURL and PeerURL are where the server listens, as "host:port" or
	// "http://host:port". Empty or port 0 (e.g. "127.0.0.1:0"): a free loopback port is
	// chosen. To restart a server where its clients find it again, pass the URLs that
	// the first Server reported (Server.ClientURL, Server.PeerURL).
	ClientURL, PeerURL string
	// Log receives etcd's logs (Info demoted to Debug). Nil discards them.
	Log *slog.Logger
	// Limits; zero means the Default* constant above.
	MaxTxnOps         uint
	MaxRequestBytes   uint
	QuotaBackendBytes int64
	// UnsafeNoFsync turns off fsync: faster, and loses data on a machine crash. For
	// tests only.
	UnsafeNoFsync bool
}

// Server is a running embedded etcd server.
type Server struct {
	etcd      *embed.Etcd
	dir       string
	removeDir bool
	clientURL string
	peerURL   string
	closeOnce sync.Once
}

// Start starts the server and waits until it serves clients (or ctx ends, or it fails).
func Start(ctx context.Context, opts Options) (*Server, error) {
	dir, removeDir := opts.Dir, false
	if dir == "" {
		d, err := os.MkdirTemp("", "sluice-etcd-")
		if err != nil {
			return nil, fmt.Errorf("embedded etcd: %w", err)
		}
		dir, removeDir = d, true
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd: data dir: %w", err)
	}
	s, err := start(ctx, opts, dir)
	if err != nil {
		if removeDir {
			_ = os.RemoveAll(dir)
		}
		return nil, err
	}
	s.removeDir = removeDir
	return s, nil
}

func start(ctx context.Context, opts Options, dir string) (*Server, error) {
	// Ports picked here are free when picked but could be taken before etcd binds them;
	// then try again with new ones. Ports the caller chose are tried once.
	const attempts = 5
	var lastErr error
	for i := 0; i < attempts; i++ {
		clientURL, pickedC, err := resolveURL(opts.ClientURL)
		if err != nil {
			return nil, fmt.Errorf("embedded etcd: client URL: %w", err)
		}
		peerURL, pickedP, err := resolveURL(opts.PeerURL)
		if err != nil {
			return nil, fmt.Errorf("embedded etcd: peer URL: %w", err)
		}
		s, err := startOnce(ctx, opts, dir, clientURL, peerURL)
		if err == nil {
			return s, nil
		}
		lastErr = err
		if !(pickedC || pickedP) || !errors.Is(err, syscall.EADDRINUSE) || ctx.Err() != nil {
			break
		}
	}
	return nil, lastErr
}

func startOnce(ctx context.Context, opts Options, dir string, clientURL, peerURL *url.URL) (*Server, error) {
	cfg := embed.NewConfig()
	cfg.Name = "sluice"
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{*clientURL}
	cfg.AdvertiseClientUrls = []url.URL{*clientURL}
	cfg.ListenPeerUrls = []url.URL{*peerURL}
	cfg.AdvertisePeerUrls = []url.URL{*peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.InitialClusterToken = "sluice"
	cfg.EnableGRPCGateway = false
	cfg.Metrics = "basic"
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = DefaultAutoCompactionRetention
	cfg.MaxTxnOps = orDefault(opts.MaxTxnOps, DefaultMaxTxnOps)
	cfg.MaxRequestBytes = orDefault(opts.MaxRequestBytes, DefaultMaxRequestBytes)
	cfg.QuotaBackendBytes = opts.QuotaBackendBytes
	if cfg.QuotaBackendBytes == 0 {
		cfg.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	cfg.UnsafeNoFsync = opts.UnsafeNoFsync
	cfg.Logger = "zap"
	cfg.LogLevel = "info" // what reaches Log is then filtered by Log's handler
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(
		zapslog.New(log.With("component", "etcd"), zapslog.Quiet))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd: start: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: waiting until ready: %w", ctx.Err())
	}
	return &Server{
		etcd:      e,
		dir:       dir,
		clientURL: clientURL.String(),
		peerURL:   peerURL.String(),
	}, nil
}

func orDefault(v, d uint) uint {
	if v == 0 {
		return d
	}
	return v
}

// resolveURL parses "host:port" or "http://host:port"; an empty string or port 0 gets
// a free port on the host (127.0.0.1 when empty). picked reports that.
func resolveURL(s string) (u *url.URL, picked bool, err error) {
	if s == "" {
		s = "127.0.0.1:0"
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err = url.Parse(s)
	if err != nil {
		return nil, false, err
	}
	if u.Scheme != "http" {
		return nil, false, fmt.Errorf("%q: only http:// is supported by the embedded server", s)
	}
	host, port := u.Hostname(), u.Port()
	if host == "" {
		return nil, false, fmt.Errorf("%q: no host", s)
	}
	if port != "" && port != "0" {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return nil, false, fmt.Errorf("%q: bad port", s)
		}
		return &url.URL{Scheme: "http", Host: u.Host}, false, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, false, fmt.Errorf("finding a free port on %s: %w", host, err)
	}
	addr := l.Addr().(*net.TCPAddr)
	_ = l.Close()
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(host, strconv.Itoa(addr.Port))}, true, nil
}

// Endpoints returns the client endpoints, for pkg/meta.Connect.
func (s *Server) Endpoints() []string { return []string{s.clientURL} }

// ClientURL is the URL clients connect to, e.g. "http://127.0.0.1:41234".
func (s *Server) ClientURL() string { return s.clientURL }

// PeerURL is the URL the server listens on for peers.
func (s *Server) PeerURL() string { return s.peerURL }

// Dir is the data directory.
func (s *Server) Dir() string { return s.dir }

// Err reports a fatal error of the running server (e.g. a listener failing). It is
// closed by Close.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Close stops the server gracefully and releases everything it holds: listeners,
// goroutines, the database file, and the data directory if Start created it. Data in a
// caller-given Dir stays for a restart. Close is idempotent. It waits up to about 7 s
// for clients' open streams (watches, lease keep-alives) to end, so close the clients
// (pkg/meta.Store) first for a fast shutdown.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		s.etcd.Close()
		if s.removeDir {
			_ = os.RemoveAll(s.dir)
		}
	})
}
