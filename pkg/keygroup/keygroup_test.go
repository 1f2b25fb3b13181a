package keygroup

import (
	"math/rand/v2"
	"testing"
)

func TestMurmur3KnownVectors(t *testing.T) {
	// Reference values of MurmurHash3_x86_32 with seed 0.
	tests := []struct {
		in   string
		want uint32
	}{
		{"", 0},
		{"a", 0x3c2569b2},
		{"abc", 0xb3dd93fa},
		{"Hello, world!", 0xc0363e43},
		{"The quick brown fox jumps over the lazy dog", 0x2e4ff723},
	}
	for _, tt := range tests {
		if got := Murmur3([]byte(tt.in)); got != tt.want {
			t.Errorf("Murmur3(%q) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
}

func TestDefaultMaxParallelism(t *testing.T) {
	tests := []struct{ p, want int }{
		{1, 128}, {2, 128}, {85, 128}, {86, 256}, {100, 256}, {1000, 2048},
		{20000, 32768}, {32768, 32768},
	}
	for _, tt := range tests {
		if got := DefaultMaxParallelism(tt.p); got != tt.want {
			t.Errorf("DefaultMaxParallelism(%d) = %d, want %d", tt.p, got, tt.want)
		}
	}
}

func TestRangesAndOperatorIndex(t *testing.T) {
	tests := []struct {
		i, p, maxP int
		want       Range
	}{
		{0, 1, 128, Range{0, 127}},
		{0, 2, 128, Range{0, 63}},
		{1, 2, 128, Range{64, 127}},
		{0, 3, 128, Range{0, 42}},
		{1, 3, 128, Range{43, 85}},
		{2, 3, 128, Range{86, 127}},
	}
	for _, tt := range tests {
		if got := RangeFor(tt.i, tt.p, tt.maxP); got != tt.want {
			t.Errorf("RangeFor(%d, %d, %d) = %v, want %v", tt.i, tt.p, tt.maxP, got, tt.want)
		}
	}
}

// checkPartition asserts that the ranges of (p, maxP) tile [0, maxP) in order, and that
// OperatorIndex agrees with them for every key group.
func checkPartition(t *testing.T, p, maxP int) {
	t.Helper()
	next := 0
	for i := 0; i < p; i++ {
		r := RangeFor(i, p, maxP)
		if r.Start != next {
			t.Fatalf("p=%d maxP=%d: range %d starts at %d, want %d", p, maxP, i, r.Start, next)
		}
		if r.Len() == 0 {
			t.Fatalf("p=%d maxP=%d: range %d is empty", p, maxP, i)
		}
		for _, kg := range []int{r.Start, r.End, (r.Start + r.End) / 2} {
			if got := OperatorIndex(kg, p, maxP); got != i {
				t.Fatalf("p=%d maxP=%d: OperatorIndex(%d) = %d, want %d", p, maxP, kg, got, i)
			}
		}
		next = r.End + 1
	}
	if next != maxP {
		t.Fatalf("p=%d maxP=%d: ranges end at %d, want %d", p, maxP, next, maxP)
	}
}

// TestRangesPartitionExactly checks every (p, maxP) with maxP up to 512 exhaustively and
// a random sample of pairs up to 32768, including the extremes.
func TestRangesPartitionExactly(t *testing.T) {
	for maxP := 1; maxP <= 512; maxP++ {
		for p := 1; p <= maxP; p++ {
			checkPartition(t, p, maxP)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 3000; n++ {
		maxP := 1 + rng.IntN(UpperBound)
		checkPartition(t, 1+rng.IntN(maxP), maxP)
	}
	for _, maxP := range []int{UpperBound - 1, UpperBound} {
		for _, p := range []int{1, 2, 3, 7, 1000, maxP - 1, maxP} {
			checkPartition(t, p, maxP)
		}
	}
}

// TestOperatorIndexExhaustive checks, for every key group of sampled pairs, that the
// subtask OperatorIndex names holds the key group in its range.
func TestOperatorIndexExhaustive(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for n := 0; n < 200; n++ {
		maxP := 1 + rng.IntN(UpperBound)
		p := 1 + rng.IntN(maxP)
		for kg := 0; kg < maxP; kg++ {
			i := OperatorIndex(kg, p, maxP)
			if !RangeFor(i, p, maxP).Contains(kg) {
				t.Fatalf("p=%d maxP=%d: key group %d maps to %d whose range is %v", p, maxP, kg, i, RangeFor(i, p, maxP))
			}
		}
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		p, maxP int
		ok      bool
	}{
		{1, 1, true}, {4, 128, true}, {129, 128, false}, {0, 128, false}, {1, 0, false}, {1, 32769, false},
	}
	for _, tt := range tests {
		if err := Validate(tt.p, tt.maxP); (err == nil) != tt.ok {
			t.Errorf("Validate(%d, %d) = %v, want ok=%v", tt.p, tt.maxP, err, tt.ok)
		}
	}
}

func BenchmarkOf(b *testing.B) {
	key := []byte("key-000123")
	for b.Loop() {
		Of(key, 128)
	}
}
