// Package statedata generates the keys and values the state benchmarks write and check.
package statedata

import (
	"encoding/binary"
	"math/rand/v2"
)

// Key appends key k (8 bytes, big-endian) to dst[:0].
func Key(dst []byte, k uint64) []byte { return binary.BigEndian.AppendUint64(dst[:0], k) }

// Value fills dst with pseudo-random (incompressible) bytes derived from k and seed, so
// that a restore can be checked without keeping the values, and returns it.
func Value(dst []byte, k, seed uint64) []byte {
	r := rand.New(rand.NewPCG(k, seed))
	for i := 0; i < len(dst); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(dst[i:], w[:])
	}
	return dst
}
