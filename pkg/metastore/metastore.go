// Package metastore opens the jobmanager's metadata store: an external etcd cluster, or
// an etcd server embedded in the process.
package metastore

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

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
	id := o.ClusterID
	if id == "" {
		id = "default"
	}
	store, err := meta.Connect(ctx, endpoints, "/sluice/"+id+"/", log.With("component", "meta"))
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
