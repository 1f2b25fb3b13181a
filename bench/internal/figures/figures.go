// Package figures formats the benchmark programs' measurements alike.
package figures

import (
	"fmt"
	"time"
)

// Dur prints a duration with about three significant digits in a fitting unit.
func Dur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	case d < time.Second:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	}
	return fmt.Sprintf("%.2f s", d.Seconds())
}

// Durs prints each duration with Dur.
func Durs(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = Dur(d)
	}
	return out
}

// MB prints a byte count in decimal kB or MB.
func MB(n int64) string {
	if n < 1e6 {
		return fmt.Sprintf("%.1f kB", float64(n)/1e3)
	}
	return fmt.Sprintf("%.1f MB", float64(n)/1e6)
}

// Rate prints n bytes over d in MB/s.
func Rate(n int64, d time.Duration) string {
	return fmt.Sprintf("%.0f MB/s", float64(n)/1e6/d.Seconds())
}
