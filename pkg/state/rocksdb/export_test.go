//go:build cgo

package rocksdb

// SetMinChunk sets the credit at which a stage writes a chunk, for tests of stages on
// small states; it returns the previous value.
func SetMinChunk(n float64) float64 {
	old := minChunk
	minChunk = n
	return old
}
