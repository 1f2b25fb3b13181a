package cli

import (
	"testing"

	"github.com/sluice-stream/sluice/pkg/config"
)

// TestTaskStateConfigSendsCompactionKeys: the RocksDB compaction keys reach the tasks
// when the jobmanager's configuration sets them, and only then (so that the predefined
// options and the incremental default keep their style otherwise).
func TestTaskStateConfigSendsCompactionKeys(t *testing.T) {
	keys := map[string]string{
		config.RocksDBCompactionStyle:    "UNIVERSAL",
		config.RocksDBDynamicLevelSize:   "true",
		config.RocksDBTargetFileSizeBase: "32 mb",
		config.RocksDBMaxSizeLevelBase:   "512 mb",
		config.RocksDBUniversalRuns:      "48",
	}
	m := taskStateConfig(config.New(), map[string]string{})
	for k := range keys {
		if v, ok := m[k]; ok {
			t.Errorf("%s sent unset (%q)", k, v)
		}
	}
	c := config.New()
	for k, v := range keys {
		if err := c.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	m = taskStateConfig(c, map[string]string{})
	for k := range keys {
		if m[k] != c.Map()[k] || m[k] == "" {
			t.Errorf("%s: sent %q, set %q", k, m[k], c.Map()[k])
		}
	}
}
