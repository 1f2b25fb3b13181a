package config

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestDefaults(t *testing.T) {
	for _, c := range []*Config{New(), {}, nil} {
		if got := c.String(JobManagerRPCAddress); got != "127.0.0.1" {
			t.Errorf("jobmanager.rpc.address = %q", got)
		}
		for _, tc := range []struct {
			key  string
			want int
		}{
			{JobManagerRPCPort, 6123}, {TaskManagerRPCPort, 0}, {NumberOfTaskSlots, 1},
			{DefaultParallelism, 1}, {MaxParallelism, -1}, {BuffersPerChannel, 8},
			{MaxBuffersPerChannel, 8}, {FixedDelayAttempts, 3}, {ExponentialDelayAttemptsBeforeReset, 2147483647},
		} {
			if got := c.Int(tc.key); got != tc.want {
				t.Errorf("%s = %d, want %d", tc.key, got, tc.want)
			}
		}
		for _, tc := range []struct {
			key  string
			want time.Duration
		}{
			{HeartbeatInterval, time.Second}, {HeartbeatTimeout, 10 * time.Second},
			{BufferTimeout, 100 * time.Millisecond}, {SlotRequestTimeout, 5 * time.Minute},
			{FixedDelayDelay, time.Second}, {ExponentialDelayInitialBackoff, time.Second},
			{ExponentialDelayMaxBackoff, time.Minute}, {ExponentialDelayResetThreshold, time.Hour},
		} {
			if got := c.Duration(tc.key); got != tc.want {
				t.Errorf("%s = %v, want %v", tc.key, got, tc.want)
			}
		}
		if got := c.MemorySize(SegmentSize); got != 32<<10 {
			t.Errorf("segment size = %d", got)
		}
		if got := c.Float(ExponentialDelayBackoffMultiplier); got != 2 {
			t.Errorf("multiplier = %v", got)
		}
		if got := c.Float(ExponentialDelayJitterFactor); got != 0.1 {
			t.Errorf("jitter = %v", got)
		}
		if got := c.String(RestartStrategyType); got != "fixed-delay" {
			t.Errorf("restart-strategy.type = %q", got)
		}
		if got := c.String(TaskManagerResourceID); got != "" {
			t.Errorf("resource id = %q", got)
		}
		if len(c.Map()) != 0 || c.IsSet(HeartbeatTimeout) {
			t.Errorf("defaults are reported as set: %v", c.Map())
		}
	}
}

func TestKeyTable(t *testing.T) {
	keys := Keys()
	desc := Describe()
	for _, k := range keys {
		if k.Description == "" || !strings.HasSuffix(k.Description, ".") {
			t.Errorf("%s: description %q should be a sentence", k.Name, k.Description)
		}
		if got, ok := Lookup(k.Name); !ok || got.Name != k.Name {
			t.Errorf("Lookup(%q) = %v, %v", k.Name, got.Name, ok)
		}
		for _, a := range k.Aliases {
			if got, ok := Lookup(a); !ok || got.Name != k.Name {
				t.Errorf("Lookup(alias %q) = %v, %v", a, got.Name, ok)
			}
		}
		if !strings.Contains(desc, "| `"+k.Name+"` | "+k.Kind.String()) {
			t.Errorf("Describe() lacks %s", k.Name)
		}
		// Every default is accepted by Set, and reads back as itself.
		c := New()
		if err := c.Set(k.Name, k.Default); err != nil {
			t.Errorf("Set(%s, default): %v", k.Name, err)
		}
	}
	if _, ok := Lookup("no.such.key"); ok {
		t.Error("Lookup of an unknown key succeeded")
	}
	if lines := strings.Count(desc, "\n"); lines != len(keys)+2 {
		t.Errorf("Describe() has %d lines, want %d:\n%s", lines, len(keys)+2, desc)
	}
	for _, want := range []string{"Legacy key: `execution.buffer-timeout`", "`off` = `none`", "Enum: none, fixed-delay, exponential-delay"} {
		if !strings.Contains(desc, want) {
			t.Errorf("Describe() lacks %q", want)
		}
	}
	// Keys returns copies.
	keys[0].Aliases = append(keys[0].Aliases, "x")
	for _, k := range Keys() {
		if k.Kind == Enum {
			k.Enum[0] = "changed"
		}
	}
	if Keys()[0].Aliases != nil || New().String(RestartStrategyType) != "fixed-delay" || New().Set(RestartStrategyType, "none") != nil {
		t.Error("Keys() exposes the registry")
	}
}

func TestSet(t *testing.T) {
	for _, tc := range []struct {
		key, value string
		get        func(*Config) any
		want       any
	}{
		{"jobmanager.rpc.address", "jm.example.com", func(c *Config) any { return c.String(JobManagerRPCAddress) }, "jm.example.com"},
		{"taskmanager.resource-id", "  tm-1 ", func(c *Config) any { return c.String(TaskManagerResourceID) }, "  tm-1 "},
		{"jobmanager.rpc.port", " 7000 ", func(c *Config) any { return c.Int(JobManagerRPCPort) }, 7000},
		{"pipeline.max-parallelism", "32768", func(c *Config) any { return c.Int(MaxParallelism) }, 32768},
		{"pipeline.max-parallelism", "-1", func(c *Config) any { return c.Int(MaxParallelism) }, -1},
		{"heartbeat.timeout", "5s", func(c *Config) any { return c.Duration(HeartbeatTimeout) }, 5 * time.Second},
		{"heartbeat.timeout", "5000", func(c *Config) any { return c.Duration(HeartbeatTimeout) }, 5 * time.Second},
		{"execution.buffer-timeout.interval", "0 ms", func(c *Config) any { return c.Duration(BufferTimeout) }, time.Duration(0)},
		{"execution.buffer-timeout", "5 ms", func(c *Config) any { return c.Duration(BufferTimeout) }, 5 * time.Millisecond},
		{"taskmanager.memory.segment-size", "64kb", func(c *Config) any { return c.MemorySize(SegmentSize) }, int64(64 << 10)},
		{"restart-strategy.exponential-delay.backoff-multiplier", "1.5", func(c *Config) any { return c.Float(ExponentialDelayBackoffMultiplier) }, 1.5},
		{"restart-strategy.exponential-delay.jitter-factor", "0", func(c *Config) any { return c.Float(ExponentialDelayJitterFactor) }, 0.0},
		{"restart-strategy.exponential-delay.jitter-factor", "1", func(c *Config) any { return c.Float(ExponentialDelayJitterFactor) }, 1.0},
		{"restart-strategy.fixed-delay.attempts", "0", func(c *Config) any { return c.Int(FixedDelayAttempts) }, 0},
		{"restart-strategy.type", "exponential-delay", func(c *Config) any { return c.String(RestartStrategyType) }, "exponential-delay"},
		{"restart-strategy.type", "NONE", func(c *Config) any { return c.String(RestartStrategyType) }, "none"},
		{"restart-strategy.type", "Fixed-Delay", func(c *Config) any { return c.String(RestartStrategyType) }, "fixed-delay"},
		{"restart-strategy.type", "off", func(c *Config) any { return c.String(RestartStrategyType) }, "none"},
		{"restart-strategy.type", "disable", func(c *Config) any { return c.String(RestartStrategyType) }, "none"},
		{"restart-strategy.type", "FixedDelay", func(c *Config) any { return c.String(RestartStrategyType) }, "fixed-delay"},
		{"restart-strategy.type", "exponentialdelay", func(c *Config) any { return c.String(RestartStrategyType) }, "exponential-delay"},
		{"restart-strategy", "none", func(c *Config) any { return c.String(RestartStrategyType) }, "none"},
	} {
		c := New()
		if err := c.Set(tc.key, tc.value); err != nil {
			t.Errorf("Set(%q, %q): %v", tc.key, tc.value, err)
			continue
		}
		if got := tc.get(c); got != tc.want {
			t.Errorf("Set(%q, %q): got %v (%T), want %v (%T)", tc.key, tc.value, got, got, tc.want, tc.want)
		}
		// Map round-trips, under the canonical name.
		c2, err := FromMap(c.Map())
		if err != nil || tc.get(c2) != tc.want {
			t.Errorf("FromMap(%v) = %v, %v", c.Map(), c2, err)
		}
		if k, _ := Lookup(tc.key); !c.IsSet(k.Name) || !c.IsSet(tc.key) || len(c.Map()) != 1 || c.Map()[k.Name] == "" && tc.value != "" {
			t.Errorf("Set(%q, %q): Map() = %v", tc.key, tc.value, c.Map())
		}
	}
}

func TestSetErrors(t *testing.T) {
	for _, tc := range []struct{ key, value, want string }{
		{"heartbeat.timeout", "ten", `heartbeat.timeout: invalid duration "ten" (use e.g. "10 s" or "500 ms")`},
		{"heartbeat.timeout", "0 s", `heartbeat.timeout: invalid value "0 s" (must be positive)`},
		{"taskmanager.memory.segment-size", "lots", `taskmanager.memory.segment-size: invalid memory size "lots" (use e.g. "32 kb" or "64 mb")`},
		{"taskmanager.memory.segment-size", "0", `taskmanager.memory.segment-size: invalid value "0" (must be positive)`},
		{"parallelism.default", "0", `parallelism.default: invalid value "0" (must be at least 1)`},
		{"parallelism.default", "1.5", `parallelism.default: invalid integer "1.5"`},
		{"jobmanager.rpc.port", "65536", `jobmanager.rpc.port: invalid value "65536" (must be between 0 and 65535)`},
		{"jobmanager.rpc.address", " ", `jobmanager.rpc.address: invalid value " " (must not be empty)`},
		{"pipeline.max-parallelism", "0", `pipeline.max-parallelism: invalid value "0" (must be -1 or between 1 and 32768)`},
		{"pipeline.max-parallelism", "32769", `(must be -1 or between 1 and 32768)`},
		{"restart-strategy.type", "sometimes", `restart-strategy.type: invalid value "sometimes" (use one of none, fixed-delay, exponential-delay)`},
		{"restart-strategy", "failure-rate", `restart-strategy: invalid value "failure-rate" (use one of none, fixed-delay, exponential-delay)`},
		{"restart-strategy.exponential-delay.backoff-multiplier", "0.5", `invalid value "0.5" (must be at least 1)`},
		{"restart-strategy.exponential-delay.jitter-factor", "1.1", `invalid value "1.1" (must be between 0 and 1)`},
		{"restart-strategy.exponential-delay.jitter-factor", "NaN", `invalid number "NaN"`},
		{"restart-strategy.fixed-delay.attempts", "-1", `invalid value "-1" (must be at least 0)`},
		{"heartbeat.timout", "5 s", `unknown configuration key "heartbeat.timout" (did you mean "heartbeat.timeout"?)`},
		{"taskmanager.numberoftaskslots", "2", `unknown configuration key "taskmanager.numberoftaskslots" (did you mean "taskmanager.numberOfTaskSlots"?)`},
		{"paralelism.default", "2", `(did you mean "parallelism.default"?)`},
		{"execution.bufer-timeout", "2", `(did you mean "execution.buffer-timeout.interval"?)`},
		{"state.backend", "rocksdb", `unknown configuration key "state.backend"`},
		{"", "x", `unknown configuration key ""`},
	} {
		c := New()
		err := c.Set(tc.key, tc.value)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Set(%q, %q) = %v, want an error containing %q", tc.key, tc.value, err, tc.want)
		}
		if strings.HasPrefix(tc.want, "unknown") && !errors.Is(err, ErrUnknownKey) {
			t.Errorf("Set(%q): %v does not wrap ErrUnknownKey", tc.key, err)
		}
		if len(c.Map()) != 0 {
			t.Errorf("failed Set(%q, %q) changed the config: %v", tc.key, tc.value, c.Map())
		}
	}
	if err := New().Set("state.backend", "x"); strings.Contains(err.Error(), "did you mean") {
		t.Errorf("far-off key got a suggestion: %v", err)
	}
}

func TestGetterPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"unknown key": func() { New().Int("no.such.key") },
		"typo":        func() { New().Duration("heartbeat.timout") },
		"wrong kind":  func() { New().Int(HeartbeatTimeout) },
		"string":      func() { New().String(JobManagerRPCPort) },
		"bool":        func() { New().Bool(JobManagerRPCPort) },
		"float":       func() { New().Float(FixedDelayAttempts) },
		"memory":      func() { New().MemorySize(HeartbeatTimeout) },
		"IsSet":       func() { New().IsSet("nope") },
	} {
		func() {
			defer func() {
				if r := recover(); r == nil {
					t.Errorf("%s: no panic", name)
				} else if !strings.HasPrefix(r.(string), "config: ") {
					t.Errorf("%s: panic %q", name, r)
				}
			}()
			f()
		}()
	}
	// Getters accept aliases.
	if got := New().Duration("execution.buffer-timeout"); got != 100*time.Millisecond {
		t.Errorf("getter by alias = %v", got)
	}
}

func TestMapAndMerge(t *testing.T) {
	c := New()
	for k, v := range map[string]string{
		"heartbeat.timeout":        "5 s ",
		"restart-strategy":         "OFF",
		"execution.buffer-timeout": "7",
		"taskmanager.resource-id":  " id ",
	} {
		if err := c.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{
		"heartbeat.timeout":                 "5 s",
		"restart-strategy.type":             "none",
		"execution.buffer-timeout.interval": "7",
		"taskmanager.resource-id":           " id ",
	}
	if got := c.Map(); !maps.Equal(got, want) {
		t.Errorf("Map() = %v, want %v", got, want)
	}
	c.Map()["heartbeat.timeout"] = "1 s"
	if c.Duration(HeartbeatTimeout) != 5*time.Second {
		t.Error("Map() exposes the config")
	}

	if _, err := FromMap(map[string]string{"heartbeat.timeout": "1 s", "a.bad.key": "x", "z.bad": "y"}); err == nil || !strings.Contains(err.Error(), `"a.bad.key"`) {
		t.Errorf("FromMap with bad keys: %v", err)
	}
	if c, err := FromMap(nil); err != nil || len(c.Map()) != 0 {
		t.Errorf("FromMap(nil) = %v, %v", c, err)
	}

	base, _ := FromMap(map[string]string{"heartbeat.timeout": "1 s", "heartbeat.interval": "100 ms"})
	over, _ := FromMap(map[string]string{"heartbeat.timeout": "3 s", "parallelism.default": "4"})
	base.Merge(over)
	base.Merge(nil)
	want = map[string]string{"heartbeat.timeout": "3 s", "heartbeat.interval": "100 ms", "parallelism.default": "4"}
	if got := base.Map(); !maps.Equal(got, want) {
		t.Errorf("after Merge: %v, want %v", got, want)
	}
	var zero Config
	zero.Merge(over)
	if zero.Int(DefaultParallelism) != 4 {
		t.Error("Merge into a zero Config")
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"kitten", "sitting", 3},
		{"heartbeat.timout", "heartbeat.timeout", 1}, {"abc", "abc", 0}, {"ab", "ba", 2},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := editDistance(tc.b, tc.a); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.b, tc.a, got, tc.want)
		}
	}
}

func TestKindString(t *testing.T) {
	if String.String() != "String" || Float.String() != "Float" || Kind(99).String() != "Kind(99)" {
		t.Error("Kind.String")
	}
}
