package taskmanager

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClaimLocalState(t *testing.T) {
	dir := t.TempDir()

	first, err := ClaimLocalState(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(first.ID, "tm-") {
		t.Fatalf("generated ID %q", first.ID)
	}
	// A second task manager on the same directory is refused while the first holds it.
	if _, err := ClaimLocalState(dir, ""); err == nil || !strings.Contains(err.Error(), "in use by another task manager") {
		t.Fatalf("second claim: %v", err)
	}
	first.Release()

	tests := []struct {
		name string
		id   string
		want string
	}{
		{"restart keeps the recorded identity", "", first.ID},
		{"an explicit identity wins and is recorded", "tm-explicit", "tm-explicit"},
		{"the explicit identity is kept by the next restart", "", "tm-explicit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ClaimLocalState(dir, tt.id)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release()
			if l.ID != tt.want || l.Dir != dir {
				t.Fatalf("claimed %q in %s, want %q in %s", l.ID, l.Dir, tt.want, dir)
			}
		})
	}

	// An unusable directory gets one error saying what to set.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ClaimLocalState(filepath.Join(file, "sub"), ""); err == nil || !strings.Contains(err.Error(), "taskmanager.state.local.root-dirs") {
		t.Fatalf("unusable directory: %v", err)
	}
}
