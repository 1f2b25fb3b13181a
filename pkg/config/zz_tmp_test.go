package config

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

func TestZZCorpusTiming(t *testing.T) {
	dir := os.Getenv("CORPUS")
	ents, _ := os.ReadDir(dir)
	var worst time.Duration
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		// format: go test fuzz v1\n[]byte("...")
		lines := string(b)
		i := len("go test fuzz v1\n[]byte(")
		s, err := strconv.Unquote(lines[i : len(lines)-2])
		if err != nil {
			t.Fatal(err, lines)
		}
		start := time.Now()
		parseYAML("x", []byte(s))
		if d := time.Since(start); d > worst {
			worst = d
		}
	}
	t.Logf("%d inputs, worst %v", len(ents), worst)
}
