package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/heap"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// Smoke tests of the benchmark at a tiny size, so that CI notices when it breaks.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	smokeKeys    = 1000
	smokeJobKeys = 8
	smokePerKey  = 500
)

// TestCheckpointRestoresState: a checkpoint written through the blob store and restored
// into a fresh backend holds what was written.
func TestCheckpointRestoresState(t *testing.T) {
	ctx := t.Context()
	root, err := blobstore.Open(ctx, "file://"+t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	store, err := root.Sub(blobstore.JobDir(benchJobID))
	if err != nil {
		t.Fatal(err)
	}
	b, err := buildState(smokeKeys)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	files := blobstore.StateFiles{Store: store, ID: 7, Prefix: filePrefix}
	snap, err := b.Snapshot(7)
	if err != nil {
		t.Fatal(err)
	}
	if n := snap.Stats().Entries; n != smokeKeys {
		t.Fatalf("snapshot captured %d entries, want %d", n, smokeKeys)
	}
	h, err := snap.Run(ctx, files)
	if err != nil {
		t.Fatal(err)
	}
	if p := h.GetFile().GetPath(); !strings.HasPrefix(p, "chk-7/"+filePrefix) || h.GetFile().GetSize() == 0 {
		t.Fatalf("snapshot file %q of %d bytes, want a file under chk-7/", p, h.GetFile().GetSize())
	}

	nb, err := heap.New(stateOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer nb.Close()
	if err := nb.Restore(ctx, []*sluicev1.KeyedStateHandle{h}, files); err != nil {
		t.Fatal(err)
	}
	id, err := nb.Register(state.StateDesc{Name: stateName, Kind: state.KindValue})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	if err := nb.Keys(id, nil, func([]byte, int) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != smokeKeys {
		t.Fatalf("restored %d keys, want %d", n, smokeKeys)
	}
	for _, k := range []int64{0, 1, 42, 999} {
		kb := api.Int64Codec{}.Append(nil, k)
		nb.SetCurrentKey(kb, keygroup.Of(kb, stateMaxP))
		v, ok, err := nb.Get(id, nil)
		if err != nil || !ok {
			t.Fatalf("key %d: ok %v err %v", k, ok, err)
		}
		if got, _ := (api.Int64Codec{}).Decode(v); got != countOf(int(k)) {
			t.Errorf("key %d: restored count %d, want %d", k, got, countOf(int(k)))
		}
	}
	// checkState agrees, and notices a missing key.
	if err := checkState(nb, smokeKeys); err != nil {
		t.Error(err)
	}
	if err := checkState(nb, smokeKeys+1); err == nil {
		t.Error("checkState accepted a state with a key missing")
	}
}

func TestRunSnapshots(t *testing.T) {
	res, err := runSnapshots(t.Context(), t.TempDir(), smokeKeys, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.runs) != 2 {
		t.Fatalf("%d runs, want 2", len(res.runs))
	}
	m := res.median()
	if m.entries != smokeKeys || m.bytes <= 0 || m.async <= 0 || m.restore <= 0 || m.rawWrite <= 0 || m.rawRead <= 0 {
		t.Errorf("implausible median run %+v", m)
	}
}

func smokeJobOptions(t *testing.T) jobOptions {
	return jobOptions{
		dir: t.TempDir(), keys: smokeJobKeys, perKey: smokePerKey, parallelism: 2, taskManagers: 2, slots: 2,
		interval: 50 * time.Millisecond, timeout: 30 * time.Second,
		log: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// TestJobRuns: both keyed-count runs finish with exactly the expected output.
func TestJobRuns(t *testing.T) {
	o := smokeJobOptions(t)
	for _, eo := range []bool{false, true} {
		r, err := runJob(t.Context(), o, eo)
		if err != nil {
			t.Fatalf("exactly-once %v: %v", eo, err)
		}
		const want = smokeJobKeys * smokePerKey
		if r.records != want || r.lines != want {
			t.Errorf("exactly-once %v: sink consumed %d records and committed %d lines, want %d", eo, r.records, r.lines, want)
		}
		if r.elapsed <= 0 {
			t.Errorf("exactly-once %v: elapsed %v", eo, r.elapsed)
		}
		if eo && r.completed < 1 { // at least the final checkpoint
			t.Errorf("exactly-once run completed %d checkpoints", r.completed)
		}
		if !eo && r.completed != 0 {
			t.Errorf("run without checkpointing completed %d checkpoints", r.completed)
		}
	}
}

// TestRun: the whole program at a tiny size prints every figure.
func TestRun(t *testing.T) {
	o := options{keys: smokeKeys, runs: 1, parts: "state,job", dir: t.TempDir(), records: smokeJobKeys * smokePerKey}
	o.job = smokeJobOptions(t)
	var out bytes.Buffer
	if err := run(context.Background(), o, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{
		"checkpoint  sync phase", "restore ", "raw write ", "ratio checkpoint/raw write ", "ratio restore/raw read ",
		"none ", "exactly-once ", "checkpoints completed", "ratio exactly-once/none ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("output:\n%s", out.String())
	}
}

func TestParseLine(t *testing.T) {
	for _, c := range []struct {
		line        string
		k, seq, cnt int
		ok          bool
	}{
		{"key-3,17,17", 3, 17, 17, true},
		{"key-0,1,1", 0, 1, 1, true},
		{"key-3,17", 0, 0, 0, false},
		{"key-3,17,17,", 0, 0, 0, false},
		{"kez-3,17,17", 0, 0, 0, false},
		{"key-,1,1", 0, 0, 0, false},
		{"key-1,-1,1", 0, 0, 0, false},
	} {
		k, seq, cnt, ok := parseLine([]byte(c.line))
		if ok != c.ok || ok && (k != c.k || seq != c.seq || cnt != c.cnt) {
			t.Errorf("parseLine(%q) = %d %d %d %v", c.line, k, seq, cnt, ok)
		}
	}
}
