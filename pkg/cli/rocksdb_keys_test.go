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

// TestTaskStateConfigSendsDeltaKeys: the jobmanager's delta settings always reach the
// tasks (its defaults when unset), whatever a task manager's own config says.
func TestTaskStateConfigSendsDeltaKeys(t *testing.T) {
	m := taskStateConfig(config.New(), map[string]string{})
	if m[config.RocksDBDeltas] != "true" || m[config.RocksDBBaseShare] != "0.5" {
		t.Errorf("defaults sent: deltas %q, base-share %q", m[config.RocksDBDeltas], m[config.RocksDBBaseShare])
	}
	c := config.New()
	for k, v := range map[string]string{config.RocksDBDeltas: "false", config.RocksDBBaseShare: "0.2"} {
		if err := c.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	m = taskStateConfig(c, map[string]string{})
	if m[config.RocksDBDeltas] != "false" || m[config.RocksDBBaseShare] != "0.2" {
		t.Errorf("set sent: deltas %q, base-share %q", m[config.RocksDBDeltas], m[config.RocksDBBaseShare])
	}
	if err := c.Set(config.RocksDBBaseShare, "0"); err == nil {
		t.Error("base-share 0 accepted")
	}
}
