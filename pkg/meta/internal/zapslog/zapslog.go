// Package zapslog routes the zap logs of the etcd server and client libraries into a
// *slog.Logger, so that Sluice processes have one log stream.
//
// etcd logs at zap levels; a LevelMap decides what each becomes in slog. Sluice keeps
// etcd quiet: its Info chatter (elections, snapshots, every connection) becomes slog
// Debug, while warnings and errors keep their level.
package zapslog

import (
	"context"
	"log/slog"
	"sort"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// LevelMap maps a zap level to the slog level it is logged at.
type LevelMap func(zapcore.Level) slog.Level

// Quiet demotes zap Debug and Info to slog Debug and keeps Warn and Error; zap's
// DPanic, Panic and Fatal are logged as slog Error (zap still panics or exits after
// writing them, as it would with any core).
func Quiet(l zapcore.Level) slog.Level {
	switch {
	case l < zapcore.WarnLevel:
		return slog.LevelDebug
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// Quieter demotes everything below Error to slog Debug. Client libraries use it: their
// warnings (a retried request, a reconnect) are expected during an etcd outage and are
// reported to the caller as errors anyway.
func Quieter(l zapcore.Level) slog.Level {
	if l < zapcore.ErrorLevel {
		return slog.LevelDebug
	}
	return slog.LevelError
}

// New returns a zap logger writing to log, with levels mapped by m (Quiet if nil).
// A nil log gives a no-op logger.
func New(log *slog.Logger, m LevelMap) *zap.Logger {
	if log == nil {
		return zap.NewNop()
	}
	if m == nil {
		m = Quiet
	}
	return zap.New(&core{h: log.Handler(), m: m})
}

type core struct {
	h slog.Handler
	m LevelMap
}

func (c *core) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), c.m(l))
}

func (c *core) With(fields []zapcore.Field) zapcore.Core {
	if len(fields) == 0 {
		return c
	}
	return &core{h: c.h.WithAttrs(attrs(fields)), m: c.m}
}

func (c *core) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *core) Write(e zapcore.Entry, fields []zapcore.Field) error {
	r := slog.NewRecord(e.Time, c.m(e.Level), e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(attrs(fields)...)
	return c.h.Handle(context.Background(), r)
}

func (c *core) Sync() error { return nil }

// attrs converts zap fields to slog attributes, sorted by key so that output is
// deterministic (zap's map encoder loses the order).
func attrs(fields []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		out = append(out, slog.Any(k, enc.Fields[k]))
	}
	return out
}
