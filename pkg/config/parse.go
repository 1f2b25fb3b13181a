package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// durationUnits are Flink's duration units (case-insensitive).
var durationUnits = map[string]time.Duration{
	"ns": time.Nanosecond, "nano": time.Nanosecond, "nanos": time.Nanosecond,
	"nanosecond": time.Nanosecond, "nanoseconds": time.Nanosecond,
	"µs": time.Microsecond, "μs": time.Microsecond, "us": time.Microsecond,
	"micro": time.Microsecond, "micros": time.Microsecond,
	"microsecond": time.Microsecond, "microseconds": time.Microsecond,
	"": time.Millisecond, "ms": time.Millisecond, "milli": time.Millisecond,
	"millis": time.Millisecond, "millisecond": time.Millisecond, "milliseconds": time.Millisecond,
	"s": time.Second, "sec": time.Second, "secs": time.Second,
	"second": time.Second, "seconds": time.Second,
	"m": time.Minute, "min": time.Minute, "mins": time.Minute,
	"minute": time.Minute, "minutes": time.Minute,
	"h": time.Hour, "hour": time.Hour, "hours": time.Hour,
	"d": 24 * time.Hour, "day": 24 * time.Hour, "days": 24 * time.Hour,
}

// memoryUnits are Flink's memory size units (case-insensitive, powers of 1024).
var memoryUnits = map[string]int64{
	"": 1, "b": 1, "bytes": 1,
	"k": 1 << 10, "kb": 1 << 10, "kibibytes": 1 << 10,
	"m": 1 << 20, "mb": 1 << 20, "mebibytes": 1 << 20,
	"g": 1 << 30, "gb": 1 << 30, "gibibytes": 1 << 30,
	"t": 1 << 40, "tb": 1 << 40, "tebibytes": 1 << 40,
}

// ParseDuration parses a duration in Flink's format: a non-negative integer, optional
// spaces and an optional unit: ns, µs (us), ms, s, min (m), h, d, or their long forms
// (e.g. "millis", "seconds", "minute", "days"), case-insensitively. A bare number is
// milliseconds. Examples: "10 s", "10s", "100 ms", "1 min", "2 h", "1d", "500".
func ParseDuration(s string) (time.Duration, error) {
	n, mult, ok := splitNumber(s, durationUnits)
	if !ok {
		return 0, fmt.Errorf("invalid duration %q (use e.g. \"10 s\" or \"500 ms\")", s)
	}
	if n > math.MaxInt64/uint64(mult) {
		return 0, fmt.Errorf("duration %q is too large (at most %d d)", s, math.MaxInt64/int64(24*time.Hour))
	}
	return time.Duration(n) * mult, nil
}

// ParseMemorySize parses a memory size in Flink's format and returns it in bytes: a
// non-negative integer, optional spaces and an optional unit: b, k (kb), m (mb), g (gb),
// t (tb), or bytes, kibibytes, mebibytes, gibibytes, tebibytes, case-insensitively. Units
// are powers of 1024; a bare number is bytes. Examples: "32 kb", "32kb", "64m", "1 gb".
func ParseMemorySize(s string) (int64, error) {
	n, mult, ok := splitNumber(s, memoryUnits)
	if !ok {
		return 0, fmt.Errorf("invalid memory size %q (use e.g. \"32 kb\" or \"64 mb\")", s)
	}
	if n > math.MaxInt64/uint64(mult) {
		return 0, fmt.Errorf("memory size %q is too large (at most %d tb)", s, math.MaxInt64>>40)
	}
	return int64(n) * mult, nil
}

// splitNumber splits s into leading decimal digits and a unit from units (after optional
// spaces) and returns the number and the unit's multiplier. A number too large for a
// uint64 is returned as math.MaxUint64, so that callers report it as too large.
func splitNumber[M time.Duration | int64](s string, units map[string]M) (n uint64, mult M, ok bool) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, 0, false
	}
	mult, ok = units[strings.ToLower(strings.TrimSpace(t[i:]))]
	if !ok {
		return 0, 0, false
	}
	n, err := strconv.ParseUint(t[:i], 10, 64)
	if err != nil { // only possible: out of range
		n = math.MaxUint64
	}
	return n, mult, true
}

func parseInt(s string) (int, error) {
	n, err := strconv.ParseInt(s, 10, 32)
	if errors.Is(err, strconv.ErrRange) {
		return 0, fmt.Errorf("integer %q out of range [%d, %d]", s, math.MinInt32, math.MaxInt32)
	}
	if err != nil {
		return 0, fmt.Errorf("invalid integer %q", s)
	}
	return int(n), nil
}

func parseBool(s string) (bool, error) {
	switch {
	case strings.EqualFold(s, "true"):
		return true, nil
	case strings.EqualFold(s, "false"):
		return false, nil
	}
	return false, fmt.Errorf("invalid boolean %q (use true or false)", s)
}

func parseFloat(s string) (float64, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("invalid number %q", s)
	}
	return f, nil
}

// Value constraints for Key.check.

func atLeast(lo int) func(any) error {
	return func(v any) error {
		if v.(int) < lo {
			return fmt.Errorf("must be at least %d", lo)
		}
		return nil
	}
}

func intBetween(lo, hi int) func(any) error {
	return func(v any) error {
		if n := v.(int); n < lo || n > hi {
			return fmt.Errorf("must be between %d and %d", lo, hi)
		}
		return nil
	}
}

func floatBetween(lo, hi float64) func(any) error {
	return func(v any) error {
		if f := v.(float64); f < lo || f > hi {
			if math.IsInf(hi, 1) {
				return fmt.Errorf("must be at least %g", lo)
			}
			return fmt.Errorf("must be between %g and %g", lo, hi)
		}
		return nil
	}
}

func positive(v any) error {
	switch n := v.(type) {
	case time.Duration:
		if n <= 0 {
			return errors.New("must be positive")
		}
	case int64:
		if n <= 0 {
			return errors.New("must be positive")
		}
	default:
		panic(fmt.Sprintf("config: positive on %T", v))
	}
	return nil
}

func nonEmpty(v any) error {
	if strings.TrimSpace(v.(string)) == "" {
		return errors.New("must not be empty")
	}
	return nil
}

// FormatBytes renders a byte count for people, with one decimal and a binary unit
// ("1.5 MiB", "512 B").
func FormatBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
