package config

import (
	"math"
	"strings"
	"testing"
	"time"
)

func TestParseDuration(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
	}{
		{"10 s", 10 * time.Second},
		{"10s", 10 * time.Second},
		{"  10   s  ", 10 * time.Second},
		{"10 S", 10 * time.Second},
		{"3 sec", 3 * time.Second},
		{"3 secs", 3 * time.Second},
		{"1 second", time.Second},
		{"2 seconds", 2 * time.Second},
		{"100 ms", 100 * time.Millisecond},
		{"100ms", 100 * time.Millisecond},
		{"5 millis", 5 * time.Millisecond},
		{"5 milliseconds", 5 * time.Millisecond},
		{"100", 100 * time.Millisecond},
		{"0", 0},
		{"007", 7 * time.Millisecond},
		{"1 min", time.Minute},
		{"1min", time.Minute},
		{"5 m", 5 * time.Minute},
		{"2 minutes", 2 * time.Minute},
		{"2 h", 2 * time.Hour},
		{"2 hours", 2 * time.Hour},
		{"1d", 24 * time.Hour},
		{"3 days", 72 * time.Hour},
		{"15 µs", 15 * time.Microsecond},
		{"15 us", 15 * time.Microsecond},
		{"15 micros", 15 * time.Microsecond},
		{"7 ns", 7},
		{"7 nanos", 7},
		{"106751 d", 106751 * 24 * time.Hour},
		{"9223372036854775807 ns", math.MaxInt64},
	} {
		got, err := ParseDuration(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseDurationErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"ten", `invalid duration "ten" (use e.g. "10 s" or "500 ms")`},
		{"", `invalid duration ""`},
		{"s", `invalid duration "s"`},
		{"-1 s", `invalid duration "-1 s"`},
		{"+1 s", `invalid duration "+1 s"`},
		{"1.5 s", `invalid duration "1.5 s"`},
		{"1 fortnight", `invalid duration "1 fortnight"`},
		{"1s30ms", `invalid duration "1s30ms"`},
		{"1 s s", `invalid duration "1 s s"`},
		{"106752 d", `duration "106752 d" is too large`},
		{"9223372036854775808 ns", `is too large`},
		{"99999999999999999999999999", `is too large`},
	} {
		_, err := ParseDuration(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseDuration(%q) error = %v; want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestParseMemorySize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{
		{"32 kb", 32 << 10},
		{"32kb", 32 << 10},
		{"32 KB", 32 << 10},
		{"32k", 32 << 10},
		{"32 kibibytes", 32 << 10},
		{"64m", 64 << 20},
		{"64 mb", 64 << 20},
		{"64 mebibytes", 64 << 20},
		{"1 gb", 1 << 30},
		{"1g", 1 << 30},
		{"2 tb", 2 << 40},
		{"100", 100},
		{"100 b", 100},
		{"100 bytes", 100},
		{"0", 0},
		{" 4096 ", 4096},
		{"8388607 tb", 8388607 << 40},
		{"9223372036854775807", math.MaxInt64},
	} {
		got, err := ParseMemorySize(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("ParseMemorySize(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseMemorySizeErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"big", `invalid memory size "big" (use e.g. "32 kb" or "64 mb")`},
		{"", `invalid memory size ""`},
		{"-1", `invalid memory size "-1"`},
		{"1.5 mb", `invalid memory size "1.5 mb"`},
		{"1 kib", `invalid memory size "1 kib"`},
		{"32 s", `invalid memory size "32 s"`},
		{"8388608 tb", `memory size "8388608 tb" is too large`},
		{"9223372036854775808", `is too large`},
	} {
		_, err := ParseMemorySize(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseMemorySize(%q) error = %v; want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestParseScalars(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    int
		wantErr string
	}{
		{"0", 0, ""},
		{"-1", -1, ""},
		{"+5", 5, ""},
		{"2147483647", math.MaxInt32, ""},
		{"-2147483648", math.MinInt32, ""},
		{"2147483648", 0, `integer "2147483648" out of range [-2147483648, 2147483647]`},
		{"1.0", 0, `invalid integer "1.0"`},
		{"0x10", 0, `invalid integer "0x10"`},
		{"four", 0, `invalid integer "four"`},
		{"", 0, `invalid integer ""`},
	} {
		got, err := parseInt(tc.in)
		if tc.wantErr == "" && (err != nil || got != tc.want) || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
			t.Errorf("parseInt(%q) = %v, %v; want %v, %q", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"2.0", 2, true}, {"2", 2, true}, {"0.1", 0.1, true}, {"1e3", 1000, true}, {"-0.5", -0.5, true},
		{"NaN", 0, false}, {"inf", 0, false}, {"-Inf", 0, false}, {"1e400", 0, false}, {"two", 0, false}, {"", 0, false},
	} {
		got, err := parseFloat(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseFloat(%q) = %v, %v; want %v (ok=%v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for _, tc := range []struct {
		in       string
		want, ok bool
	}{
		{"true", true, true}, {"TRUE", true, true}, {"False", false, true}, {"false", false, true},
		{"yes", false, false}, {"1", false, false}, {"t", false, false}, {"", false, false},
	} {
		got, err := parseBool(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseBool(%q) = %v, %v; want %v (ok=%v)", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// checkParsed verifies the invariants of a parser's result on arbitrary input: a value
// is non-negative and parsed from text that starts with a digit; an error is one line.
func checkParsed[T time.Duration | int64](t *testing.T, name, s string, v T, err error) {
	t.Helper()
	if err != nil {
		if v != 0 || strings.Contains(err.Error(), "\n") {
			t.Fatalf("%s(%q) = %v, %q", name, s, v, err)
		}
		return
	}
	if v < 0 {
		t.Fatalf("%s(%q) = %v: negative", name, s, v)
	}
	if trimmed := strings.TrimSpace(s); trimmed == "" || trimmed[0] < '0' || trimmed[0] > '9' {
		t.Fatalf("%s(%q) = %v: accepted text that does not start with a digit", name, s, v)
	}
}

func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"10 s", "100", "1 min", "2h", "1d", "9223372036854775807 ns", "5 µs", "", " ", "1e9", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		checkParsed(t, "ParseDuration", s, d, err)
	})
}

func FuzzParseMemorySize(f *testing.F) {
	for _, s := range []string{"32 kb", "64m", "1 gb", "100", "8388607 tb", "", "kb", "-1 b", "1.5g"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseMemorySize(s)
		checkParsed(t, "ParseMemorySize", s, n, err)
	})
}
