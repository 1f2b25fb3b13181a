package statetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// MemStore is an in-memory state.StateWriter and state.StateReader for tests. Files get
// unique paths "<n>/<name>", shared files "shared/<name>". Open verifies size and SHA-256 unless Trusting is set (which
// lets tests reach the format's own checks with corrupted files). It is safe for
// concurrent use.
type MemStore struct {
	// Trusting skips the SHA-256 verification in Open.
	Trusting bool

	mu      sync.Mutex
	files   map[string][]byte
	seq     int
	open    int // files created and not yet closed or aborted
	aborted int
}

var _ state.StateWriter = (*MemStore)(nil)
var _ state.StateReader = (*MemStore)(nil)

// NewMemStore returns an empty store.
func NewMemStore() *MemStore { return &MemStore{files: map[string][]byte{}} }

// Create implements state.StateWriter.
func (m *MemStore) Create(ctx context.Context, name string) (state.FileWriter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	m.open++
	return &memFile{m: m, path: fmt.Sprintf("%d/%s", m.seq, name), d: state.NewDigest()}, nil
}

// CreateShared implements state.StateWriter: shared files get the path
// "shared/<name>", so writing the same name twice replaces the file (backends must not).
func (m *MemStore) CreateShared(ctx context.Context, name string) (state.FileWriter, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.open++
	return &memFile{m: m, path: "shared/" + name, d: state.NewDigest()}, nil
}

type memFile struct {
	m    *MemStore
	path string
	buf  []byte
	d    *state.Digest
	done bool
}

func (f *memFile) Write(p []byte) (int, error) {
	if f.done {
		return 0, errors.New("memstore: write after close")
	}
	f.buf = append(f.buf, p...)
	f.d.Write(p)
	return len(p), nil
}

func (f *memFile) Close() (*sluicev1.StateFile, error) {
	if f.done {
		return nil, errors.New("memstore: closed twice")
	}
	f.done = true
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	f.m.open--
	f.m.files[f.path] = f.buf
	return f.d.StateFile(f.path), nil
}

func (f *memFile) Abort() error {
	if f.done {
		return nil
	}
	f.done = true
	f.m.mu.Lock()
	defer f.m.mu.Unlock()
	f.m.open--
	f.m.aborted++
	return nil
}

// Open implements state.StateReader.
func (m *MemStore) Open(ctx context.Context, f *sluicev1.StateFile) (state.FileReader, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	b, ok := m.files[f.GetPath()]
	m.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("memstore: state file %s does not exist", f.GetPath())
	}
	if !m.Trusting {
		if err := state.VerifyBytes(f, b); err != nil {
			return nil, err
		}
	}
	return state.BytesReader(b), nil
}

// Paths lists the stored files.
func (m *MemStore) Paths() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ps []string
	for p := range m.files {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// Bytes returns a copy of a stored file.
func (m *MemStore) Bytes(path string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.files[path])
}

// Set replaces a stored file's bytes (to corrupt it).
func (m *MemStore) Set(path string, b []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[path] = b
}

// Pending is the number of files created and neither closed nor aborted; Aborted counts
// aborted files.
func (m *MemStore) Pending() (pending, aborted int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.open, m.aborted
}
