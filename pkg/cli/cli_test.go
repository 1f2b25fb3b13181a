package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/sluice-stream/sluice/examples/jobs"
)

// TestSubmitDefaultsFromConfig: parallelism.default and pipeline.max-parallelism from
// streamctl's config file shape the submitted graph; -p wins over the file.
func TestSubmitDefaultsFromConfig(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("parallelism.default: 3\npipeline.max-parallelism: 256\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		p          int
		wantP      int32
		wantMaxP   int32
		configFile string
	}{
		{0, 3, 256, cfg},
		{2, 2, 256, cfg},
		{0, 1, 128, ""},
	}
	for _, tt := range tests {
		c := &ctl{configFile: tt.configFile}
		d, err := c.defaults(tt.p)
		if err != nil {
			t.Fatal(err)
		}
		g, err := compileJob("keyed-count", d, map[string]string{"out": t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		for _, op := range g.GetOperators() {
			if op.GetParallelism() != tt.wantP {
				t.Errorf("p=%d config=%q: operator %s parallelism %d, want %d", tt.p, tt.configFile, op.GetUid(), op.GetParallelism(), tt.wantP)
			}
		}
		wantProgram := int32(0)
		if tt.configFile != "" {
			wantProgram = tt.wantMaxP // travels to the task managers
		}
		if g.GetMaxParallelism() != tt.wantMaxP || g.GetProgram().GetMaxParallelism() != wantProgram {
			t.Errorf("p=%d config=%q: max parallelism %d (program %d), want %d", tt.p, tt.configFile, g.GetMaxParallelism(), g.GetProgram().GetMaxParallelism(), tt.wantMaxP)
		}
	}
}

func TestBadInputIsOneLine(t *testing.T) {
	tests := [][]string{
		{"status"},
		{"submit", "no-such-job"},
		{"list", "-o", "yaml"},
		{"submit", "keyed-count", "--arg", "novalue"},
		{"submit", "keyed-count", "--claim-mode", "mine", "--from-checkpoint", "file:///x/j/chk-1"},
		{"submit", "keyed-count", "--claim-mode", "claim"},
		{"checkpoints", "verify"},
		{"checkpoints", "verify", "a", "b"},
		{"checkpoints", "verify", "-o", "yaml", "abcd"},
		{"state"},
		{"state", "-o", "yaml", "abcd"},
		{"savepoint"},
		{"savepoint", "abcd", "file:///sp", "extra"},
		{"savepoint", "abcd", "--format", "bogus"},
		{"savepoint", "dispose"},
		{"stop"},
		{"stop", "abcd", "--format", "bogus"},
		{"cancel", "abcd", "file:///sp"},
		{"cancel", "abcd", "--format", "native"},
		{"rescale", "abcd"},
		{"rescale", "abcd", "-p", "2", "--claim-mode", "mine"},
		{"submit", "keyed-count", "--allow-non-restored-state"},
		{"submit", "keyed-count", "--from-savepoint", "file:///sp/x", "--from-checkpoint", "file:///c/j/chk-1"},
	}
	for _, args := range tests {
		var out, errOut bytes.Buffer
		root := Streamctl(&out, &errOut)
		root.SetArgs(append([]string{"--jobmanager", "127.0.0.1:1"}, args...))
		err := root.Execute()
		if err == nil {
			t.Errorf("%v: no error", args)
			continue
		}
		if strings.Contains(strings.TrimSpace(err.Error()), "\n") {
			t.Errorf("%v: error spans lines: %q", args, err)
		}
	}
}

func TestParseClaimMode(t *testing.T) {
	for _, tt := range []struct {
		mode, from string
		want       string
	}{
		{"", "", "CLAIM_MODE_UNSPECIFIED"},
		{"", "file:///c/j/chk-1", "CLAIM_MODE_UNSPECIFIED"},
		{"claim", "file:///c/j/chk-1", "CLAIM_MODE_CLAIM"},
		{"no-claim", "file:///c/j/chk-1", "CLAIM_MODE_NO_CLAIM"},
		{"claim", "", "error"},
		{"CLAIM", "file:///c/j/chk-1", "error"},
	} {
		m, err := parseClaimMode(tt.mode, tt.from)
		got := m.String()
		if err != nil {
			got = "error"
		}
		if got != tt.want {
			t.Errorf("--claim-mode %q --from-checkpoint %q: %s (%v), want %s", tt.mode, tt.from, got, err, tt.want)
		}
	}
}
