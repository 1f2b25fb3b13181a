package config

import (
	"io"
	"maps"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// testEnabled is a Bool key for the tests.
var testEnabled = define(Key{Name: "test.enabled", Default: "false", Kind: Bool, Description: "A key registered by the tests."})

func TestBoolFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--test.enabled"}, true},
		{[]string{"--test.enabled=false"}, false},
		{[]string{"--test.enabled=TRUE"}, true},
		{[]string{"-D", "test.enabled=true"}, true},
	} {
		c := New()
		if err := newFlagSet(c).Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if got := c.Bool(testEnabled); got != tc.want {
			t.Errorf("Parse(%q): %s = %v, want %v", tc.args, testEnabled, got, tc.want)
		}
	}
	if err := newFlagSet(New()).Parse([]string{"--test.enabled=yes"}); err == nil || !strings.Contains(err.Error(), `invalid boolean "yes" (use true or false)`) {
		t.Errorf("--test.enabled=yes: %v", err)
	}
	if u := newFlagSet(New()).FlagUsages(); !strings.Contains(u, "--test.enabled ") || strings.Contains(u, "--test.enabled bool") || strings.Contains(u, "test.enabled[=true]") {
		t.Errorf("usage of a bool flag:\n%s", u)
	}
}

func newFlagSet(c *Config) *pflag.FlagSet {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	BindFlags(fs, c)
	return fs
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want map[string]string
	}{
		{"none", nil, map[string]string{}},
		{"key flag", []string{"--heartbeat.timeout=5s"}, map[string]string{"heartbeat.timeout": "5s"}},
		{"key flag, separate value", []string{"--heartbeat.timeout", "5 s"}, map[string]string{"heartbeat.timeout": "5 s"}},
		{"-D", []string{"-D", "heartbeat.timeout=6s"}, map[string]string{"heartbeat.timeout": "6s"}},
		{"-D attached", []string{"-Dheartbeat.timeout=6s"}, map[string]string{"heartbeat.timeout": "6s"}},
		{"-D=", []string{"-D=parallelism.default=2"}, map[string]string{"parallelism.default": "2"}},
		{"--define", []string{"--define", "parallelism.default=2"}, map[string]string{"parallelism.default": "2"}},
		{"-D alias", []string{"-D", "execution.buffer-timeout=0"}, map[string]string{"execution.buffer-timeout.interval": "0"}},
		{"-D value with =", []string{"-D", "taskmanager.resource-id=a=b"}, map[string]string{"taskmanager.resource-id": "a=b"}},
		{"repeated -D", []string{"-D", "parallelism.default=2", "-D", "heartbeat.interval=1ms"},
			map[string]string{"parallelism.default": "2", "heartbeat.interval": "1ms"}},
		{"last wins", []string{"-D", "parallelism.default=2", "--parallelism.default=3", "-D", "parallelism.default=4"},
			map[string]string{"parallelism.default": "4"}},
		{"enum", []string{"--restart-strategy.type=Off"}, map[string]string{"restart-strategy.type": "none"}},
		{"short flag", []string{"--etcd-endpoints=http://etcd-0:2379"}, map[string]string{"high-availability.etcd.endpoints": "http://etcd-0:2379"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New()
			if err := newFlagSet(c).Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			if got := c.Map(); !maps.Equal(got, tc.want) {
				t.Errorf("Map() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--heartbeat.timeout=ten"},
			`invalid argument "ten" for "--heartbeat.timeout" flag: invalid duration "ten" (use e.g. "10 s" or "500 ms")`},
		{[]string{"--parallelism.default=0"}, `invalid value "0" (must be at least 1)`},
		{[]string{"-D", "heartbeat.timeout=ten"}, `heartbeat.timeout: invalid duration "ten"`},
		{[]string{"-D", "heartbeat.timout=1s"}, `unknown configuration key "heartbeat.timout" (did you mean "heartbeat.timeout"?)`},
		{[]string{"-D", "heartbeat.timeout"}, `expected key=value, got "heartbeat.timeout"`},
		{[]string{"--heartbeat.timout=1s"}, `unknown flag: --heartbeat.timout`},
		{[]string{"--execution.buffer-timeout=1"}, `unknown flag`}, // aliases have no flags
	} {
		c := New()
		err := newFlagSet(c).Parse(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
		if len(c.Map()) != 0 {
			t.Errorf("Parse(%q) set %v", tc.args, c.Map())
		}
	}
}

// Precedence: default < file < flags, the file being read after the flags are parsed.
func TestFlagPrecedence(t *testing.T) {
	path := writeFile(t, t.TempDir(), "heartbeat.timeout: 5 s\nheartbeat.interval: 2 s\nparallelism.default: 2\n")
	flags := New()
	fs := newFlagSet(flags)
	if err := fs.Parse([]string{"--heartbeat.timeout=7s", "-D", "parallelism.default=8"}); err != nil {
		t.Fatal(err)
	}
	c, err := LoadWithOverrides(path, flags)
	if err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{
		HeartbeatTimeout:   "7s",      // flag over file
		HeartbeatInterval:  "2 s",     // file over default
		DefaultParallelism: "8",       // -D over file
		SlotRequestTimeout: "(unset)", // default
	} {
		got, ok := c.Map()[key]
		if !ok {
			got = "(unset)"
		}
		if got != want {
			t.Errorf("%s = %q, want %q", key, got, want)
		}
	}
	if c.Duration(SlotRequestTimeout).Minutes() != 5 {
		t.Errorf("slot.request.timeout = %v", c.Duration(SlotRequestTimeout))
	}
}

// Flags bound to a Config already loaded from a file override it directly.
func TestFlagsOverLoadedConfig(t *testing.T) {
	c, err := Load(writeFile(t, t.TempDir(), "heartbeat.timeout: 5 s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := newFlagSet(c).Parse([]string{"--heartbeat.timeout=9s"}); err != nil {
		t.Fatal(err)
	}
	if got := c.Duration(HeartbeatTimeout).Seconds(); got != 9 {
		t.Errorf("heartbeat.timeout = %vs", got)
	}
}

func TestFlagUsage(t *testing.T) {
	fs := newFlagSet(New())
	usage := fs.FlagUsages()
	for _, want := range []string{
		`--heartbeat.timeout duration`,
		`(default 10 s)`,
		`--jobmanager.rpc.address string`,
		`(default "127.0.0.1")`,
		`--taskmanager.memory.segment-size size`,
		`--restart-strategy.type string`,
		`One of none, fixed-delay, exponential-delay. (default "fixed-delay")`,
		`--restart-strategy.exponential-delay.jitter-factor float`,
		`-D, --define key=value`,
	} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage lacks %q:\n%s", want, usage)
		}
	}
	for _, k := range Keys() {
		f := fs.Lookup(k.Name)
		if f == nil || f.DefValue != k.Default {
			t.Errorf("flag %s: %+v", k.Name, f)
		}
	}
	if fs.Lookup("execution.buffer-timeout") != nil {
		t.Error("an alias got a flag")
	}
}
