//go:build cgo

package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestRun: the whole program at a tiny size prints every figure for every mode, and
// LEVEL's compactions really ran during the measured checkpoints.
func TestRun(t *testing.T) {
	o := options{keys: 2000, value: 100, change: 0.01, warmup: 30, checkpoints: 20, levelWarmup: 5, levelCps: 20,
		writeBuffer: 1 << 20, baseShare: 0.5, modes: "DELTAS,UNIVERSAL,LEVEL", dir: t.TempDir()}
	var out bytes.Buffer
	if err := run(t.Context(), o, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		"DELTAS (universal compaction at 24 sorted runs, deltas, base share 0.5", "UNIVERSAL (universal compaction at 24 sorted runs, every checkpoint a base",
		"LEVEL (level compaction", "10 checkpoints ", "20 checkpoints ",
		"10-checkpoint windows: ratio lowest", "sorted runs most", "write stalls", "restoring the last checkpoint read",
		"DELTAS    over 10 checkpoints while compaction runs", "UNIVERSAL over 10 checkpoints while compaction runs",
		"LEVEL     over 10 checkpoints while compaction runs",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "LEVEL     over 10 checkpoints while compaction runs 0.00") ||
		!strings.Contains(out.String(), "steady state over 20 checkpoints") {
		t.Errorf("implausible figures")
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("output:\n%s", out.String())
	}
}

func TestFlagsChecked(t *testing.T) {
	o := options{keys: 2000, value: 100, change: 0.01, warmup: 1, checkpoints: 15, levelWarmup: 1, levelCps: 10, writeBuffer: 1 << 20, baseShare: 0.5, modes: "LEVEL"}
	if err := run(t.Context(), o, &bytes.Buffer{}); err == nil {
		t.Error("-checkpoints 15 accepted")
	}
	o.checkpoints, o.modes = 10, "FIFO"
	if err := run(t.Context(), o, &bytes.Buffer{}); err == nil {
		t.Error("mode FIFO accepted")
	}
}
