//go:build !cgo

// Command bench-incremental needs RocksDB, which a build without cgo cannot link.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "bench-incremental: this build has no RocksDB (built without cgo): rebuild with CGO_ENABLED=1 and librocksdb-dev")
	os.Exit(1)
}
