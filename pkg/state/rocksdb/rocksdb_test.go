//go:build cgo

package rocksdb_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	"github.com/sluice-stream/sluice/pkg/state/statetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestConformance runs the suite with full snapshots (every file private), with
// incremental ones (SST files shared), and with the task manager's shared memory.
func TestConformance(t *testing.T) {
	t.Run("Full", func(t *testing.T) { statetest.Run(t, rocksdb.Factory{}) })
	t.Run("Incremental", func(t *testing.T) {
		statetest.Run(t, rocksdb.Factory{Config: rocksdb.Config{Incremental: true}})
	})
	t.Run("SharedMemory", func(t *testing.T) {
		mem, err := rocksdb.NewMemory(rocksdb.MemoryConfig{Size: 64 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		statetest.Run(t, rocksdb.Factory{Config: rocksdb.Config{Incremental: true}, Memory: mem})
	})
}
