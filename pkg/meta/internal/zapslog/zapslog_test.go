package zapslog

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func TestRouting(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	zl := New(log, Quiet).Named("raft").With(zap.String("member", "m1"))
	zl.Info("became leader")                                                // demoted to Debug: dropped
	zl.Warn("slow fdatasync", zap.Duration("took", 2e9))                    // kept as Warn
	zl.Error("failed", zap.Error(errors.New("disk full")), zap.Int("n", 3)) // kept as Error
	out := buf.String()
	if strings.Contains(out, "became leader") {
		t.Errorf("Info not demoted below the handler's level:\n%s", out)
	}
	for _, want := range []string{
		`level=WARN msg="slow fdatasync" member=m1 logger=raft took=2s`,
		`level=ERROR msg=failed member=m1 logger=raft error="disk full" n=3`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestLevelMaps(t *testing.T) {
	tests := []struct {
		m    LevelMap
		in   zapcore.Level
		want slog.Level
	}{
		{Quiet, zapcore.DebugLevel, slog.LevelDebug},
		{Quiet, zapcore.InfoLevel, slog.LevelDebug},
		{Quiet, zapcore.WarnLevel, slog.LevelWarn},
		{Quiet, zapcore.ErrorLevel, slog.LevelError},
		{Quiet, zapcore.DPanicLevel, slog.LevelError},
		{Quieter, zapcore.WarnLevel, slog.LevelDebug},
		{Quieter, zapcore.ErrorLevel, slog.LevelError},
	}
	for _, tc := range tests {
		if got := tc.m(tc.in); got != tc.want {
			t.Errorf("%v -> %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestNilLogger(t *testing.T) {
	New(nil, nil).Error("dropped") // must not panic
}
