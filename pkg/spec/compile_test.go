package spec

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/pkg/api"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestCompileExamples compiles every shipped example spec.
func TestCompileExamples(t *testing.T) {
	files, _ := filepath.Glob("../../examples/*.yaml")
	if len(files) == 0 {
		t.Fatal("no example specs found")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Compile(f, data, api.Defaults{}, quietLog()); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestCompileGraphShape(t *testing.T) {
	src := `name: shape
parallelism: 2
operators:
  - uid: a
    type: sequence
    keys: 3
  - uid: b
    type: sequence
    keys: 3
    parallelism: 1
  - uid: agg
    type: aggregate
    inputs: [a, b]
    keyBy: key
    function: count
  - uid: out
    type: blackhole
    input: agg
`
	prog, err := Compile("shape.yaml", []byte(src), api.Defaults{Parallelism: 4}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, op := range prog.Graph.GetOperators() {
		got = append(got, op.GetUid())
	}
	if strings.Join(got, ",") != "a,b,agg.union,agg,out" {
		t.Fatalf("operators %v", got)
	}
	// -p 4 replaced the default parallelism 2, not b's own 1.
	par := map[string]int32{}
	for _, op := range prog.Graph.GetOperators() {
		par[op.GetUid()] = op.GetParallelism()
	}
	if par["a"] != 4 || par["b"] != 1 || par["agg"] != 4 {
		t.Fatalf("parallelism %v", par)
	}
	var keyed int
	for _, e := range prog.Graph.GetEdges() {
		if e.GetPartitioner() == sluicev1.Partitioner_PARTITIONER_KEY_GROUP {
			keyed++
		}
	}
	if keyed != 1 {
		t.Fatalf("%d key-group edges, want 1 (union -> agg)", keyed)
	}
}

func TestCompileRejectsParallelismAboveMax(t *testing.T) {
	src := "name: x\nmaxParallelism: 4\noperators:\n  - uid: a\n    type: sequence\n    keys: 1\n  - uid: o\n    type: blackhole\n    input: a\n"
	_, err := Compile("x.yaml", []byte(src), api.Defaults{Parallelism: 8}, quietLog())
	if err == nil || !strings.HasPrefix(err.Error(), "x.yaml:4:") || !strings.Contains(err.Error(), "exceeds maxParallelism 4") {
		t.Fatalf("err = %v", err)
	}
}

func TestAppendCSV(t *testing.T) {
	tests := []struct {
		v    any
		want string
	}{
		{"plain", "plain"}, {`a,b`, `"a,b"`}, {`say "hi"`, `"say ""hi"""`}, {int64(-3), "-3"}, {nil, ""}, {1.5, "1.5"},
	}
	for _, tt := range tests {
		if got := string(appendCSV(nil, tt.v)); got != tt.want {
			t.Errorf("appendCSV(%v) = %s, want %s", tt.v, got, tt.want)
		}
	}
}
