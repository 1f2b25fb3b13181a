package e2e

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// binDir holds the jobmanager, taskmanager and streamctl binaries built by TestMain.
var binDir string

const shortSkip = "end-to-end tests build and start the real binaries; skipped with -short"

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		// Every test skips itself (see bin) so that -v shows why; nothing to build.
		os.Exit(m.Run())
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	root, err := moduleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "sluice-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "./cmd/...")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/... in %s: %v\n%s", root, err, out)
		return 1
	}
	for _, name := range []string{"jobmanager", "taskmanager", "streamctl"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/... did not produce %s: %v\n", name, err)
			return 1
		}
	}
	binDir = dir
	return m.Run()
}

// moduleRoot finds the directory of the main module's go.mod: `go env GOMOD`, else by
// walking up from the working directory.
func moduleRoot() (string, error) {
	if out, err := exec.Command("go", "env", "GOMOD").Output(); err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			return filepath.Dir(gomod), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// bin returns the path of a built binary; it skips the test under -short.
func bin(t *testing.T, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip(shortSkip)
	}
	if binDir == "" {
		t.Fatal("binaries were not built (TestMain did not run the build)")
	}
	return filepath.Join(binDir, name)
}
