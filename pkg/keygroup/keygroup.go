// Package keygroup implements the key-group arithmetic that assigns keyed state to
// subtasks. The formulas are Flink's, kept exactly, so that a key lands in the same key
// group in every process, machine and release, and key-group ranges stay contiguous.
package keygroup

import (
	"fmt"
	"math/bits"
)

// Limits on max parallelism (the number of key groups).
const (
	MinMaxParallelism = 1
	// UpperBound is the largest allowed max parallelism: key groups are encoded in at
	// most two bytes.
	UpperBound = 1 << 15
	// DefaultLowerBound is the smallest default max parallelism.
	DefaultLowerBound = 128
)

// DefaultMaxParallelism returns min(max(roundUpToPowerOfTwo(p + p/2), 128), 32768).
func DefaultMaxParallelism(parallelism int) int {
	n := roundUpToPowerOfTwo(parallelism + parallelism/2)
	return min(max(n, DefaultLowerBound), UpperBound)
}

func roundUpToPowerOfTwo(x int) int {
	if x <= 1 {
		return 1
	}
	return 1 << bits.Len(uint(x-1))
}

// Of returns the key group of a serialized key: murmur3_32(key) mod maxParallelism.
func Of(key []byte, maxParallelism int) int {
	return int(Murmur3(key) % uint32(maxParallelism))
}

// OperatorIndex returns the subtask that owns keyGroup: keyGroup * parallelism / maxParallelism.
func OperatorIndex(keyGroup, parallelism, maxParallelism int) int {
	return keyGroup * parallelism / maxParallelism
}

// Range is an inclusive range of key groups [Start, End]. It is empty when End < Start.
type Range struct {
	Start, End int
}

// Contains reports whether kg is inside the range.
func (r Range) Contains(kg int) bool { return kg >= r.Start && kg <= r.End }

// Len is the number of key groups in the range.
func (r Range) Len() int { return max(0, r.End-r.Start+1) }

// Intersect returns the key groups both ranges hold (possibly empty).
func (r Range) Intersect(o Range) Range { return Range{max(r.Start, o.Start), min(r.End, o.End)} }

func (r Range) String() string { return fmt.Sprintf("[%d, %d]", r.Start, r.End) }

// RangeFor returns the key groups of subtask i of p subtasks:
// start = (i*maxP + p - 1) / p, end = ((i+1)*maxP - 1) / p.
func RangeFor(i, parallelism, maxParallelism int) Range {
	return Range{
		Start: (i*maxParallelism + parallelism - 1) / parallelism,
		End:   ((i+1)*maxParallelism - 1) / parallelism,
	}
}

// PrefixLen is the number of bytes of the big-endian key-group prefix of state keys:
// 1 when maxParallelism <= 128, else 2.
func PrefixLen(maxParallelism int) int {
	if maxParallelism <= 128 {
		return 1
	}
	return 2
}

// Validate checks a (parallelism, maxParallelism) pair.
func Validate(parallelism, maxParallelism int) error {
	if maxParallelism < MinMaxParallelism || maxParallelism > UpperBound {
		return fmt.Errorf("max parallelism %d is out of range [1, %d]", maxParallelism, UpperBound)
	}
	if parallelism < 1 {
		return fmt.Errorf("parallelism %d must be at least 1", parallelism)
	}
	if parallelism > maxParallelism {
		return fmt.Errorf("parallelism %d exceeds max parallelism %d", parallelism, maxParallelism)
	}
	return nil
}
