// Package metastore opens the metadata store of the jobmanager (an external etcd cluster,
// or an etcd server embedded in the process) and of task managers that find the leading
// jobmanager through etcd.
package metastore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/sluice-stream/sluice/pkg/meta"
	"github.com/sluice-stream/sluice/pkg/meta/embedded"
)

// Options say which etcd to use.
type Options struct {
	// Endpoints of an external etcd; empty embeds one.
	Endpoints []string
	// EmbeddedDir is the embedded server's data directory (empty: a temporary one).
	EmbeddedDir string
	// ClusterID separates clusters sharing one etcd: keys live under /sluice/<id>/.
	ClusterID string
	// UnsafeNoFsync speeds up an embedded server in tests.
	UnsafeNoFsync bool
	// LeaseTTL is the leadership lease's time to live (0: meta.DefaultLeaseTTL).
	LeaseTTL time.Duration
	// RequestTimeout bounds every etcd request (0: meta.DefaultRequestTimeout).
	RequestTimeout time.Duration
}

// ParseEndpoints splits a comma-separated endpoint list.
func ParseEndpoints(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// Prefix is the key prefix of a cluster: /sluice/<cluster-id>/ ("default" when empty).
func Prefix(clusterID string) string {
	if clusterID == "" {
		clusterID = "default"
	}
	return "/sluice/" + clusterID + "/"
}

func (o Options) metaOptions() []meta.Option {
	var opts []meta.Option
	if o.LeaseTTL > 0 {
		opts = append(opts, meta.WithLeaseTTL(o.LeaseTTL))
	}
	if o.RequestTimeout > 0 {
		opts = append(opts, meta.WithRequestTimeout(o.RequestTimeout))
	}
	return opts
}

// Open connects to the store; close stops the connection and any embedded server.
func Open(ctx context.Context, o Options, log *slog.Logger) (*meta.Store, func(), error) {
	endpoints := o.Endpoints
	var srv *embedded.Server
	if len(endpoints) == 0 {
		var err error
		srv, err = embedded.Start(ctx, embedded.Options{Dir: o.EmbeddedDir, UnsafeNoFsync: o.UnsafeNoFsync, Log: log.With("component", "etcd")})
		if err != nil {
			return nil, nil, fmt.Errorf("start embedded etcd in %q: %w", o.EmbeddedDir, err)
		}
		endpoints = srv.Endpoints()
		log.Info("embedded etcd started", "endpoints", endpoints, "dir", o.EmbeddedDir)
	}
	store, err := meta.Connect(ctx, endpoints, Prefix(o.ClusterID), log.With("component", "meta"), o.metaOptions()...)
	if err != nil {
		if srv != nil {
			srv.Close()
		}
		return nil, nil, fmt.Errorf("connect to etcd %v: %w", endpoints, err)
	}
	return store, func() {
		store.Close()
		if srv != nil {
			srv.Close()
		}
	}, nil
}

// Follow connects a process that only follows the cluster's leader (a task manager) to
// the external etcd at o.Endpoints; it never embeds a server, since an embedded etcd
// lives in the jobmanager's process and cannot be shared.
func Follow(ctx context.Context, o Options, log *slog.Logger) (*meta.Store, error) {
	if len(o.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints to find the leading jobmanager through")
	}
	store, err := meta.Connect(ctx, o.Endpoints, Prefix(o.ClusterID), log.With("component", "meta"), o.metaOptions()...)
	if err != nil {
		return nil, fmt.Errorf("connect to etcd %v: %w", o.Endpoints, err)
	}
	return store, nil
}
