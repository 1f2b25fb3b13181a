//go:build !cgo

package rocksdb

import "github.com/sluice-stream/sluice/pkg/state"

// This build has no cgo, so no RocksDB: the types exist so that code selecting a
// backend compiles, and every constructor returns ErrUnavailable.

// OptionsFactory adjusts RocksDB options (see the cgo build). Without cgo there are
// none to adjust.
type OptionsFactory func(column string, opts noRocksDB)

type noRocksDB struct{}

// Factory would create RocksDB backends; without cgo NewKeyed fails.
type Factory struct {
	Config Config
	Memory *Memory
}

var _ state.Factory = Factory{}

// Name returns "rocksdb".
func (Factory) Name() string { return Name }

// NewKeyed returns ErrUnavailable.
func (Factory) NewKeyed(state.KeyedOptions) (state.KeyedBackend, error) { return nil, ErrUnavailable }

// Memory would be a task manager's shared RocksDB memory.
type Memory struct{}

// NewMemory returns ErrUnavailable.
func NewMemory(MemoryConfig) (*Memory, error) { return nil, ErrUnavailable }

// Usage returns nothing.
func (*Memory) Usage() MemoryUsage { return MemoryUsage{} }

// Close does nothing.
func (*Memory) Close() {}
