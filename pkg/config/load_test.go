package config

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFile writes content to dir/sluice.yaml and returns the path.
func writeFile(t testing.TB, dir, content string) string {
	t.Helper()
	p := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       map[string]string // c.Map()
	}{
		{"empty", "", map[string]string{}},
		{"comments only", "# nothing here\n", map[string]string{}},
		{"null document", "~\n", map[string]string{}},
		{"empty map", "{}\n", map[string]string{}},
		{"flat", "heartbeat.timeout: 5 s\nparallelism.default: 4\n",
			map[string]string{"heartbeat.timeout": "5 s", "parallelism.default": "4"}},
		{"nested", "heartbeat:\n  timeout: 5 s\n  interval: 500 ms\n",
			map[string]string{"heartbeat.timeout": "5 s", "heartbeat.interval": "500 ms"}},
		{"flow map", "heartbeat: {timeout: 5 s}\n", map[string]string{"heartbeat.timeout": "5 s"}},
		{"deeply nested", "restart-strategy:\n  type: exponential-delay\n  exponential-delay:\n    initial-backoff: 2 s\n    jitter-factor: 0\n",
			map[string]string{"restart-strategy.type": "exponential-delay",
				"restart-strategy.exponential-delay.initial-backoff": "2 s",
				"restart-strategy.exponential-delay.jitter-factor":   "0"}},
		{"mixed", "taskmanager:\n  numberOfTaskSlots: 4\n  network.memory:\n    buffers-per-channel: 2\ntaskmanager.memory.segment-size: 64 kb\n",
			map[string]string{"taskmanager.numberOfTaskSlots": "4",
				"taskmanager.network.memory.buffers-per-channel": "2",
				"taskmanager.memory.segment-size":                "64 kb"}},
		{"alias", "execution.buffer-timeout: 10 ms\nrestart-strategy: OFF\n",
			map[string]string{"execution.buffer-timeout.interval": "10 ms", "restart-strategy.type": "none"}},
		{"nested under alias", "execution:\n  buffer-timeout:\n    interval: 0\n",
			map[string]string{"execution.buffer-timeout.interval": "0"}},
		{"quoted and typed scalars", "jobmanager.rpc.address: \"10.0.0.1\"\njobmanager.rpc.port: 7000\nrestart-strategy.exponential-delay.backoff-multiplier: 1.5\n",
			map[string]string{"jobmanager.rpc.address": "10.0.0.1", "jobmanager.rpc.port": "7000",
				"restart-strategy.exponential-delay.backoff-multiplier": "1.5"}},
		{"null string", "taskmanager.resource-id:\n", map[string]string{"taskmanager.resource-id": ""}},
		{"anchored scalar", "heartbeat.interval: &d 3 s\nheartbeat.timeout: *d\n",
			map[string]string{"heartbeat.interval": "3 s", "heartbeat.timeout": "3 s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(writeFile(t, t.TempDir(), tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Map(); !maps.Equal(got, tc.want) {
				t.Errorf("Map() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestLoadTypedValues(t *testing.T) {
	c, err := Load(writeFile(t, t.TempDir(), `
heartbeat:
  timeout: 5 s
taskmanager.memory.segment-size: 64kb
restart-strategy.type: exponentialdelay
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Duration(HeartbeatTimeout).Seconds() != 5 || c.MemorySize(SegmentSize) != 64<<10 ||
		c.String(RestartStrategyType) != "exponential-delay" || c.Int(DefaultParallelism) != 1 {
		t.Errorf("loaded %v", c.Map())
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, yaml, want string // want: the error after "<dir>/"
	}{
		{"unknown key", "heartbeat.interval: 1 s\n\nheartbeat.timout: 5 s\n",
			`sluice.yaml:3: unknown configuration key "heartbeat.timout" (did you mean "heartbeat.timeout"?)`},
		{"unknown nested key", "heartbeat:\n  interval: 1 s\n  timout: 5 s\n",
			`sluice.yaml:3: unknown configuration key "heartbeat.timout" (did you mean "heartbeat.timeout"?)`},
		{"unknown key without suggestion", "# comment\nstate.backend: rocksdb\n",
			`sluice.yaml:2: unknown configuration key "state.backend"`},
		{"prefix only", "heartbeat:\n", `sluice.yaml:1: unknown configuration key "heartbeat"`},
		{"bad duration", "# Sluice\nparallelism.default: 2\n\nheartbeat.timeout: ten\n",
			`sluice.yaml:4: heartbeat.timeout: invalid duration "ten" (use e.g. "10 s" or "500 ms")`},
		{"bad nested value", "restart-strategy:\n  type: sometimes\n",
			`sluice.yaml:2: restart-strategy.type: invalid value "sometimes" (use one of none, fixed-delay, exponential-delay)`},
		{"out of range", "jobmanager.rpc.port: 99999\n",
			`sluice.yaml:1: jobmanager.rpc.port: invalid value "99999" (must be between 0 and 65535)`},
		{"null duration", "heartbeat.timeout: ~\n", `sluice.yaml:1: heartbeat.timeout: invalid duration ""`},
		{"duplicate", "heartbeat.timeout: 1 s\nheartbeat.timeout: 2 s\n",
			`sluice.yaml:2: duplicate key "heartbeat.timeout" (already set on line 1)`},
		{"duplicate flat and nested", "heartbeat:\n  timeout: 1 s\nheartbeat.timeout: 2 s\n",
			`sluice.yaml:3: duplicate key "heartbeat.timeout" (already set on line 2)`},
		{"duplicate via alias", "execution.buffer-timeout.interval: 1\nexecution.buffer-timeout: 2\n",
			`sluice.yaml:2: duplicate key "execution.buffer-timeout" (already set on line 1 as "execution.buffer-timeout.interval")`},
		{"list value", "parallelism.default:\n  - 1\n  - 2\n",
			`sluice.yaml:1: parallelism.default: expected a single value or a map`},
		{"list document", "- a\n- b\n", `sluice.yaml:1: expected a map of configuration keys to values`},
		{"scalar document", "hello\n", `sluice.yaml:1: expected a map of configuration keys to values`},
		{"syntax error", "heartbeat.timeout: 1 s\n  bad: indent\n", `sluice.yaml:2: invalid YAML: mapping values are not allowed in this context`},
		{"tab", "heartbeat:\n\ttimeout: 1 s\n", `sluice.yaml:2: invalid YAML: found character that cannot start any token`},
		{"two documents", "heartbeat.timeout: 1 s\n---\nheartbeat.timeout: 2 s\n", `sluice.yaml:2: more than one YAML document`},
		{"map key", "? {a: b}\n: c\n", `sluice.yaml:1: a configuration key must be a string`},
		{"empty key", "\"\": 1\n", `sluice.yaml:1: empty configuration key`},
		{"merge key", "base: &b {timeout: 1 s}\nheartbeat:\n  <<: *b\n", `sluice.yaml:1: unknown configuration key "base.timeout"`},
		{"merge key alone", "heartbeat:\n  <<: {timeout: 1 s}\n", `sluice.yaml:2: YAML merge keys (<<) are not supported`},
		{"map alias only", "heartbeat: {interval: &h {a: 1}}\n", `sluice.yaml:1: unknown configuration key "heartbeat.interval.a"`},
		{"list under unknown key", "\"a\\nb\": [1]\n", `sluice.yaml:1: unknown configuration key "a\nb"`},
		{"alias under unknown key", "heartbeat.timeout: &t {a: 1}\nx: *t\n", `sluice.yaml:1: unknown configuration key "heartbeat.timeout.a"`},
		{"deep nesting", strings.Repeat("{a: ", 40) + "1" + strings.Repeat("}", 40) + "\n", `sluice.yaml:1: maps nested too deeply`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, dir, tc.yaml)
			c, err := Load(p)
			if err == nil {
				t.Fatalf("loaded %v", c.Map())
			}
			want := dir + string(filepath.Separator) + tc.want
			if !strings.HasPrefix(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error:\n  %v\nwant prefix:\n  %v", err, want)
			}
		})
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !os.IsNotExist(err) {
		t.Errorf("Load of a missing file: %v", err)
	}
}

// An alias may refer to a map only in keys that are then unknown; aliases of maps as
// values are refused, which also rules out exponential expansion ("billion laughs").
func TestLoadMapAliasRefused(t *testing.T) {
	p := writeFile(t, t.TempDir(), "taskmanager.host: x\nheartbeat: &h\n  timeout: 1 s\nrestart-strategy: *h\n")
	_, err := Load(p)
	if err == nil || !strings.HasSuffix(err.Error(), "sluice.yaml:4: restart-strategy: YAML aliases are supported for single values only") {
		t.Errorf("error = %v", err)
	}
}

func TestLoadWithOverrides(t *testing.T) {
	p := writeFile(t, t.TempDir(), "heartbeat.timeout: 5 s\nheartbeat.interval: 2 s\n")
	over, _ := FromMap(map[string]string{"heartbeat.timeout": "7 s", "parallelism.default": "3"})
	c, err := LoadWithOverrides(p, over)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"heartbeat.timeout": "7 s", "heartbeat.interval": "2 s", "parallelism.default": "3"}
	if got := c.Map(); !maps.Equal(got, want) {
		t.Errorf("Map() = %v, want %v", got, want)
	}
	if c, err := LoadWithOverrides("", over); err != nil || !maps.Equal(c.Map(), over.Map()) {
		t.Errorf("LoadWithOverrides(\"\") = %v, %v", c.Map(), err)
	}
	if c, err := LoadWithOverrides("", nil); err != nil || len(c.Map()) != 0 {
		t.Errorf("LoadWithOverrides(\"\", nil) = %v, %v", c.Map(), err)
	}
	if _, err := LoadWithOverrides(p+".missing", over); err == nil {
		t.Error("missing file accepted")
	}
}

func FuzzLoad(f *testing.F) {
	for _, s := range []string{
		"", "heartbeat.timeout: 5 s\n", "heartbeat: {timeout: 5 s}\n", "a: [1, 2]\n", "- x\n",
		"heartbeat:\n  timeout: ten\n", "&a x: *a\n", "? [a]\n: b\n", "execution.buffer-timeout: 1\n",
		"x: &a [*a]\n", "{a: {b: {c: {d: 1}}}}", "---\n...\n---\n", "restart-strategy: OFF\n",
		"\"\\u0000\": 1\n", "\"a\\nb\": [1]\n", "heartbeat: &h {timeout: 1 s}\nx: *h\n",
	} {
		f.Add([]byte(s))
	}
	// Each fuzzing process runs its inputs one at a time, so they can share one file.
	p := filepath.Join(f.TempDir(), "sluice.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(p)
		if err != nil {
			if !strings.HasPrefix(err.Error(), p+":") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error not one line starting with the file name: %q", err)
			}
			return
		}
		// What loads survives the trip through a map.
		m := c.Map()
		c2, err := FromMap(m)
		if err != nil || !maps.Equal(c2.Map(), m) {
			t.Fatalf("FromMap(%v) = %v, %v", m, c2, err)
		}
	})
}
