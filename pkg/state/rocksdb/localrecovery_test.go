//go:build cgo

package rocksdb_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/sluice-stream/sluice/pkg/blobstore"
	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

const manifestName = "sluice-local.manifest"

// countingReader is a StateReader that counts the bytes read from the checkpoint
// storage, by path.
type countingReader struct {
	r     blobstore.StateFiles
	mu    sync.Mutex
	bytes map[string]int64
}

func newCountingReader(store *blobstore.Store) *countingReader {
	return &countingReader{r: blobstore.StateFiles{Store: store}, bytes: map[string]int64{}}
}

func (c *countingReader) add(path string, n int64) {
	c.mu.Lock()
	c.bytes[path] += n
	c.mu.Unlock()
}

func (c *countingReader) Open(ctx context.Context, f *sluicev1.StateFile) (state.FileReader, error) {
	fr, err := c.r.Open(ctx, f)
	if err == nil {
		c.add(f.GetPath(), fr.Size()) // read whole
	}
	return fr, err
}

func (c *countingReader) OpenStream(ctx context.Context, f *sluicev1.StateFile) (io.ReadCloser, error) {
	rc, err := c.r.OpenStream(ctx, f)
	if err != nil {
		return nil, err
	}
	return &countingStream{rc, c, f.GetPath()}, nil
}

type countingStream struct {
	io.ReadCloser
	c    *countingReader
	path string
}

func (s *countingStream) Read(p []byte) (int, error) {
	n, err := s.ReadCloser.Read(p)
	s.c.add(s.path, int64(n))
	return n, err
}

// read sums the bytes read of the paths match selects.
func (c *countingReader) read(match func(path string) bool) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var n int64
	for p, b := range c.bytes {
		if match(p) {
			n += b
		}
	}
	return n
}

func anyPath(string) bool   { return true }
func sstPath(p string) bool { return strings.HasSuffix(p, ".sst") }
func pathOf(name string) func(string) bool {
	return func(p string) bool { return strings.HasSuffix(p, "-"+name) }
}

func lrConfig(root string, inc bool) rocksdb.Config {
	return rocksdb.Config{Incremental: inc, LocalRecovery: rocksdb.LocalRecovery{Dir: root, JobID: job}}
}

// kgDir is where the local copies of operator "count" over kgs live.
func kgDir(root string, kgs keygroup.Range) string {
	return filepath.Join(root, job, "count", fmt.Sprintf("kg-%d-%d", kgs.Start, kgs.End))
}

// localCopies lists the checkpoints of the chk-<n> directories of dir.
func localCopies(t testing.TB, dir string) []int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	must(t, err)
	var ids []int64
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "chk-")
		if !ok {
			t.Fatalf("unexpected entry %s in %s", e.Name(), dir)
		}
		id, err := strconv.ParseInt(rest, 10, 64)
		must(t, err)
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func restoreOpts(t testing.TB, kgs keygroup.Range, id int64) state.KeyedOptions {
	o := opts(t, 128, kgs)
	o.RestoreCheckpointID = id
	return o
}

func incName(inc bool) string { return fmt.Sprintf("incremental=%v", inc) }

// localSetup runs a backend with local recovery through checkpoints 1 (confirmed), 2
// (confirmed) and 3 (never confirmed), then closes it, as a task manager whose process
// then ends. It returns the handle and expected state of checkpoint 2.
type localSetup struct {
	root  string
	cfg   rocksdb.Config
	store *blobstore.Store
	h1    *sluicev1.KeyedStateHandle
	h2    *sluicev1.KeyedStateHandle
	m1    *model
	m2    *model
}

func newLocalSetup(t *testing.T, inc bool) *localSetup {
	t.Helper()
	s := &localSetup{root: t.TempDir()}
	s.cfg = lrConfig(s.root, inc)
	s.store, _ = fileStore(t)
	b, err := rocksdb.New(opts(t, 128, all(128)), s.cfg, nil)
	must(t, err)
	m := newModel()
	rng := newRand(21)
	write(t, b, m, rng, 2000, 20000)
	s.m1 = m.clone()
	s.h1 = checkpoint(t, b, s.store, 1)
	b.NotifyCheckpointComplete(1)
	write(t, b, m, rng, 2000, 3000)
	s.m2 = m.clone()
	s.h2 = checkpoint(t, b, s.store, 2)
	b.NotifyCheckpointComplete(2)
	write(t, b, m, rng, 2000, 3000) // after checkpoint 2: not restored
	checkpoint(t, b, s.store, 3)
	dir := kgDir(s.root, all(128))
	if got := localCopies(t, dir); !slices.Equal(got, []int64{2, 3}) {
		t.Fatalf("local copies before Close: %v, want [2 3]", got)
	}
	must(t, b.Close())
	// Checkpoint 3 may have completed without the backend hearing of it: its copy stays
	// too, until a later backend of the range restores or confirms a checkpoint.
	if got := localCopies(t, dir); !slices.Equal(got, []int64{2, 3}) {
		t.Fatalf("local copies after Close: %v, want [2 3]", got)
	}
	return s
}

// restore restores h with RestoreCheckpointID id in a new backend and checks the state
// (firing its timers) unless want is nil.
func (s *localSetup) restore(t *testing.T, id int64, h *sluicev1.KeyedStateHandle, want *model) (*rocksdb.Backend, *countingReader, state.RestoreStats) {
	t.Helper()
	b := newBackend(t, s.cfg, restoreOpts(t, all(128), id))
	cr := newCountingReader(s.store)
	must(t, b.Restore(context.Background(), []*sluicev1.KeyedStateHandle{h}, cr))
	st := b.LastRestore()
	if st.RemoteBytes != cr.read(anyPath) {
		t.Fatalf("RestoreStats.RemoteBytes %d, the reader read %d", st.RemoteBytes, cr.read(anyPath))
	}
	t.Logf("restore: %+v", st)
	if want != nil {
		check(t, "restored", b, want)
	}
	return b, cr, st
}

func sstFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	must(t, err)
	var ssts []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".sst") {
			ssts = append(ssts, e.Name())
		}
	}
	if len(ssts) == 0 {
		t.Fatalf("no SST file in %s", dir)
	}
	return ssts
}

// TestLocalRecoveryRestore: a new backend (as after a task manager restart) restores
// checkpoint 2 from the copy the first one left, reading no SST file remotely; SSTs are
// hard links to the copy's. It then snapshots on: the restored shared files are reused,
// and the next confirmation replaces the copy.
func TestLocalRecoveryRestore(t *testing.T) {
	for _, inc := range []bool{false, true} {
		t.Run(incName(inc), func(t *testing.T) {
			s := newLocalSetup(t, inc)
			_, cr, st := s.restore(t, 2, s.h2, s.m2)
			if st.LocalBytes == 0 || st.LocalCheckpointID != 2 || st.Fallback != "" || cr.read(sstPath) != 0 {
				t.Fatalf("restore from the local copy: %+v, %d SST bytes read remotely", st, cr.read(sstPath))
			}
			// Again (the copy stays until a confirmation), to go on with the backend.
			b, cr, st := s.restore(t, 2, s.h2, nil)
			if st.LocalCheckpointID != 2 || st.Fallback != "" || cr.read(sstPath) != 0 {
				t.Fatalf("second restore from the local copy: %+v, %d SST bytes read remotely", st, cr.read(sstPath))
			}
			dir := kgDir(s.root, all(128))
			links := 0
			for _, name := range sstFiles(t, filepath.Join(dir, "chk-2")) {
				a, err := os.Stat(filepath.Join(dir, "chk-2", name))
				must(t, err)
				d, err := os.Stat(filepath.Join(b.Dir(), "db", name))
				if err != nil {
					continue // compacted away since
				}
				if !os.SameFile(a, d) {
					t.Fatalf("%s is not a hard link of the local copy's", name)
				}
				links++
			}
			if links == 0 {
				t.Fatal("no SST file of the database is a link of the local copy's")
			}
			if got := localCopies(t, dir); !slices.Equal(got, []int64{2}) {
				t.Fatalf("local copies after the restore: %v", got)
			}

			m := s.m2.clone()
			write(t, b, m, newRand(31), 2000, 500)
			h4 := checkpoint(t, b, s.store, 4)
			if inc && h4.GetIncrementalSize()*2 > h4.GetFullSize() {
				t.Fatalf("after a local restore, checkpoint 4 uploaded %d of %d bytes", h4.GetIncrementalSize(), h4.GetFullSize())
			}
			if got := localCopies(t, dir); !slices.Equal(got, []int64{2, 4}) {
				t.Fatalf("local copies after checkpoint 4: %v", got)
			}
			b.NotifyCheckpointComplete(4)
			if got := localCopies(t, dir); !slices.Equal(got, []int64{4}) {
				t.Fatalf("local copies after confirming 4: %v", got)
			}
			must(t, b.Close())
			_, cr, st = s.restore(t, 4, h4, m)
			if st.LocalCheckpointID != 4 || cr.read(sstPath) != 0 {
				t.Fatalf("restore of checkpoint 4: %+v, %d SST bytes remote", st, cr.read(sstPath))
			}
		})
	}
}

// TestLocalRecoveryBadFile: a local file that fails verification, or is gone, is
// downloaded instead; the other files still come from the copy.
func TestLocalRecoveryBadFile(t *testing.T) {
	for _, inc := range []bool{false, true} {
		for _, c := range []struct {
			name  string
			spoil func(t *testing.T, path string)
			why   string
		}{
			{"flipped byte", func(t *testing.T, path string) {
				f, err := os.OpenFile(path, os.O_RDWR, 0)
				must(t, err)
				defer f.Close()
				b := []byte{0}
				_, err = f.ReadAt(b, 100)
				must(t, err)
				b[0] ^= 0x10
				_, err = f.WriteAt(b, 100)
				must(t, err)
			}, "CRC-32C"},
			{"truncated", func(t *testing.T, path string) { must(t, os.Truncate(path, 10)) }, "manifest says"},
			{"missing", func(t *testing.T, path string) { must(t, os.Remove(path)) }, "no such file"},
		} {
			t.Run(incName(inc)+"/"+c.name, func(t *testing.T) {
				s := newLocalSetup(t, inc)
				chk := filepath.Join(kgDir(s.root, all(128)), "chk-2")
				// The largest SST: above the inline threshold in full mode too.
				var bad string
				var size int64
				for _, name := range sstFiles(t, chk) {
					info, err := os.Stat(filepath.Join(chk, name))
					must(t, err)
					if info.Size() > size {
						bad, size = name, info.Size()
					}
				}
				c.spoil(t, filepath.Join(chk, bad))
				_, cr, st := s.restore(t, 2, s.h2, s.m2)
				if !strings.Contains(st.Fallback, bad) || !strings.Contains(st.Fallback, c.why) {
					t.Fatalf("Fallback %q does not say that %s failed (%s)", st.Fallback, bad, c.why)
				}
				if st.LocalCheckpointID != 2 || st.LocalBytes == 0 || cr.read(pathOf(bad)) == 0 || cr.read(sstPath) != cr.read(pathOf(bad)) {
					t.Fatalf("%+v; %d bytes of %s and %d of all SSTs read remotely", st, cr.read(pathOf(bad)), bad, cr.read(sstPath))
				}
			})
		}
	}
}

// TestLocalRecoveryUnusableCopy: when the copy cannot be used as a whole, every file
// is downloaded, and Fallback says why.
func TestLocalRecoveryUnusableCopy(t *testing.T) {
	type tc struct {
		name  string
		id    int64
		h     func(s *localSetup) *sluicev1.KeyedStateHandle
		spoil func(t *testing.T, chk string)
		why   string
	}
	h2 := func(s *localSetup) *sluicev1.KeyedStateHandle { return s.h2 }
	flip := func(off int) func(t *testing.T, chk string) {
		return func(t *testing.T, chk string) {
			p := filepath.Join(chk, manifestName)
			b, err := os.ReadFile(p)
			must(t, err)
			b[off%len(b)] ^= 1
			must(t, os.WriteFile(p, b, 0o644))
		}
	}
	for _, inc := range []bool{false, true} {
		for _, c := range []tc{
			{"no local directory", 2, h2, func(t *testing.T, chk string) { must(t, os.RemoveAll(filepath.Dir(chk))) }, "no local copy of checkpoint 2"},
			{"no manifest", 2, h2, func(t *testing.T, chk string) { must(t, os.Remove(filepath.Join(chk, manifestName))) }, "no local copy of checkpoint 2"},
			{"checkpoint unknown", 0, h2, nil, "unknown"},
			{"other checkpoint", 1, func(s *localSetup) *sluicev1.KeyedStateHandle { return s.h1 }, nil, "no local copy of checkpoint 1"},
			{"handle of another checkpoint", 2, func(s *localSetup) *sluicev1.KeyedStateHandle { return s.h1 }, nil, "meta file differs"},
			{"copy renamed", 5, h2, func(t *testing.T, chk string) {
				must(t, os.Rename(chk, filepath.Join(filepath.Dir(chk), "chk-5")))
			}, "its manifest is of checkpoint 2"},
			{"manifest bit flip", 2, h2, flip(40), "checksum mismatch"},
			{"manifest magic", 2, h2, flip(0), "not a local recovery manifest"},
			{"manifest truncated", 2, h2, func(t *testing.T, chk string) { must(t, os.Truncate(filepath.Join(chk, manifestName), 30)) }, "checksum mismatch"},
			{"manifest empty", 2, h2, func(t *testing.T, chk string) { must(t, os.Truncate(filepath.Join(chk, manifestName), 0)) }, "not a local recovery manifest"},
		} {
			t.Run(incName(inc)+"/"+c.name, func(t *testing.T) {
				s := newLocalSetup(t, inc)
				if c.spoil != nil {
					c.spoil(t, filepath.Join(kgDir(s.root, all(128)), "chk-2"))
				}
				h := c.h(s)
				want := s.m2
				if h == s.h1 {
					want = s.m1
				}
				b := newBackend(t, s.cfg, restoreOpts(t, all(128), c.id))
				cr := newCountingReader(s.store)
				must(t, b.Restore(context.Background(), []*sluicev1.KeyedStateHandle{h}, cr))
				st := b.LastRestore()
				check(t, "restored", b, want)
				if st.LocalBytes != 0 || st.LocalCheckpointID != 0 || st.RemoteBytes != cr.read(anyPath) || cr.read(sstPath) == 0 {
					t.Fatalf("%+v, %d SST bytes read remotely", st, cr.read(sstPath))
				}
				if !strings.Contains(st.Fallback, c.why) {
					t.Fatalf("Fallback %q, want it to say %q", st.Fallback, c.why)
				}
			})
		}
	}
}

// TestLocalRecoveryUnusableRoot: a local recovery root that cannot be written never
// fails a snapshot: snapshots take the native checkpoint in the instance directory,
// the failure is logged once (not at every checkpoint), and a restore reads remotely.
func TestLocalRecoveryUnusableRoot(t *testing.T) {
	regularFile := func(t *testing.T) string {
		p := filepath.Join(t.TempDir(), "file")
		must(t, os.WriteFile(p, []byte("x"), 0o644))
		return p
	}
	for _, inc := range []bool{false, true} {
		for _, c := range []struct {
			name string
			root func(t *testing.T) string
		}{
			{"root is a file", regularFile},
			{"root under a file", func(t *testing.T) string { return filepath.Join(regularFile(t), "sub") }},
			{"root on a file system without new directories", func(t *testing.T) string {
				if _, err := os.Stat("/proc/self"); err != nil {
					t.Skip("no /proc")
				}
				return "/proc/sluice-local-recovery"
			}},
			{"read-only root", func(t *testing.T) string {
				if os.Geteuid() == 0 {
					t.Skip("permissions do not bind root")
				}
				d := t.TempDir()
				must(t, os.Chmod(d, 0o555))
				t.Cleanup(func() { os.Chmod(d, 0o755) })
				return d
			}},
		} {
			t.Run(incName(inc)+"/"+c.name, func(t *testing.T) {
				var logs bytes.Buffer
				cfg := lrConfig(c.root(t), inc)
				cfg.Log = slog.New(slog.NewTextHandler(&logs, nil))
				store, _ := fileStore(t)
				b := newBackend(t, cfg, opts(t, 128, all(128)))
				m := newModel()
				rng := newRand(41)
				var h *sluicev1.KeyedStateHandle
				for id := int64(1); id <= 3; id++ {
					write(t, b, m, rng, 1000, 3000)
					h = checkpoint(t, b, store, id)
					b.NotifyCheckpointComplete(id)
				}
				if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
					t.Fatalf("%d warnings, want 1:\n%s", n, logs.String())
				}
				// db/, and with deltas the stage of the next base.
				entries, _ := os.ReadDir(b.Dir())
				for _, e := range entries {
					if e.Name() != "db" && !strings.HasPrefix(e.Name(), "stage-") {
						t.Fatalf("instance directory holds %s after the uploads, want only db/ and a stage", e.Name())
					}
				}
				must(t, b.Close())
				r := newBackend(t, cfg, restoreOpts(t, all(128), 3))
				cr := newCountingReader(store)
				must(t, r.Restore(context.Background(), []*sluicev1.KeyedStateHandle{h}, cr))
				check(t, "restored", r, m)
				if st := r.LastRestore(); st.LocalBytes != 0 || st.Fallback == "" || st.RemoteBytes == 0 {
					t.Fatalf("restore: %+v", st)
				}
			})
		}
	}
}

// failingWriter fails every file.
type failingWriter struct{}

func (failingWriter) Create(context.Context, string) (state.FileWriter, error) {
	return nil, errors.New("storage down")
}

func (failingWriter) CreateShared(context.Context, string) (state.FileWriter, error) {
	return nil, errors.New("storage down")
}

// TestLocalRecoveryPruning: confirming a checkpoint removes the copies of earlier
// ones, stale copies of an earlier process and the directories of overlapping
// key-group ranges; unconfirmed copies are bounded, removed at Close, and never kept
// for a snapshot that failed or was released.
func TestLocalRecoveryPruning(t *testing.T) {
	for _, inc := range []bool{false, true} {
		t.Run(incName(inc), func(t *testing.T) {
			root := t.TempDir()
			cfg := lrConfig(root, inc)
			store, _ := fileStore(t)
			kgs := keygroup.Range{Start: 0, End: 63}
			dir := kgDir(root, kgs)
			// Left by an earlier process: a copy of this range, one of an overlapping
			// range (another parallelism), one of a disjoint range and one of another
			// operator.
			stale := []string{filepath.Join(dir, "chk-1"), kgDir(root, all(128)) + "/chk-1",
				kgDir(root, keygroup.Range{Start: 64, End: 127}) + "/chk-1", filepath.Join(root, job, "other", "kg-0-63", "chk-1")}
			for _, d := range stale {
				must(t, os.MkdirAll(d, 0o755))
			}
			o := opts(t, 128, kgs)
			o.InlineThreshold = -1 // every file is written: the failing writer fails
			b := newBackend(t, cfg, o)
			m := newModel()
			rng := newRand(51)
			for id := int64(2); id <= 5; id++ {
				write(t, b, m, rng, 1000, 1000)
				checkpoint(t, b, store, id)
			}
			if got := localCopies(t, dir); !slices.Equal(got, []int64{1, 2, 3, 4, 5}) {
				t.Fatalf("local copies: %v", got)
			}
			b.NotifyCheckpointComplete(3)
			if got := localCopies(t, dir); !slices.Equal(got, []int64{3, 4, 5}) {
				t.Fatalf("after confirming 3: %v, want [3 4 5]", got)
			}
			for i, d := range stale[1:] {
				if _, err := os.Stat(d); (err == nil) != (i > 0) {
					t.Fatalf("%s: %v", d, err)
				}
			}

			// A released snapshot and a failed one leave nothing behind.
			write(t, b, m, rng, 1000, 1000)
			s, err := b.Snapshot(6)
			must(t, err)
			s.Release()
			s, err = b.Snapshot(7)
			must(t, err)
			if _, err := s.Run(context.Background(), failingWriter{}); err == nil {
				t.Fatal("snapshot with a failing writer succeeded")
			}
			if got := localCopies(t, dir); !slices.Equal(got, []int64{3, 4, 5}) {
				t.Fatalf("after a released and a failed snapshot: %v", got)
			}

			// Unconfirmed copies are bounded.
			for id := int64(8); id <= 30; id++ {
				write(t, b, m, rng, 1000, 100)
				checkpoint(t, b, store, id)
			}
			if got := localCopies(t, dir); len(got) != 1+16 || got[0] != 3 || got[1] != 15 || got[16] != 30 {
				t.Fatalf("after 23 unconfirmed checkpoints: %v, want 3 and 15..30", got)
			}

			// A snapshot still uploading when a later checkpoint is confirmed is removed
			// when its upload ends; Close keeps the confirmed copy only.
			s, err = b.Snapshot(31)
			must(t, err)
			checkpoint(t, b, store, 32)
			b.NotifyCheckpointComplete(32)
			if got := localCopies(t, dir); !slices.Equal(got, []int64{31, 32}) {
				t.Fatalf("confirmed 32 while 31 uploads: %v", got)
			}
			_, err = s.Run(context.Background(), blobstoreFiles(store, 31))
			must(t, err)
			checkpoint(t, b, store, 33)
			if got := localCopies(t, dir); !slices.Equal(got, []int64{32, 33}) {
				t.Fatalf("after 31's upload and checkpoint 33: %v", got)
			}
			// Two snapshots of one checkpoint: the second has no local copy, and does not
			// disturb the first's.
			s1, err := b.Snapshot(35)
			must(t, err)
			s2, err := b.Snapshot(35)
			must(t, err)
			for _, s := range []state.AsyncSnapshot{s2, s1} {
				_, err := s.Run(context.Background(), blobstoreFiles(store, 35))
				must(t, err)
			}
			if got := localCopies(t, dir); !slices.Equal(got, []int64{32, 33, 35}) {
				t.Fatalf("after two snapshots of checkpoint 35: %v", got)
			}
			s, err = b.Snapshot(34)
			must(t, err)
			must(t, b.Close())
			_, err = s.Run(context.Background(), blobstoreFiles(store, 34))
			must(t, err)
			// The copies written stay; the one uploaded after Close does not.
			if got := localCopies(t, dir); !slices.Equal(got, []int64{32, 33, 35}) {
				t.Fatalf("after Close: %v, want [32 33 35]", got)
			}
		})
	}
}

// TestLocalRecoveryRescaled: a subtask whose range is part of the handle's restores
// from the copy of that handle's range, and its first confirmation removes that
// earlier parallelism's directory.
func TestLocalRecoveryRescaled(t *testing.T) {
	s := newLocalSetup(t, true)
	r := keygroup.RangeFor(0, 2, 128)
	b := newBackend(t, s.cfg, restoreOpts(t, r, 2))
	cr := newCountingReader(s.store)
	must(t, b.Restore(context.Background(), []*sluicev1.KeyedStateHandle{s.h2}, cr))
	if st := b.LastRestore(); st.LocalCheckpointID != 2 || cr.read(sstPath) != 0 {
		t.Fatalf("rescaled restore: %+v, %d SST bytes remote", st, cr.read(sstPath))
	}
	check(t, "rescaled", b, s.m2)
	checkpoint(t, b, s.store, 3)
	b.NotifyCheckpointComplete(3)
	if _, err := os.Stat(kgDir(s.root, all(128))); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the copies of key groups [0, 127] survived a confirmation of [0, 63]: %v", err)
	}
	if got := localCopies(t, kgDir(s.root, r)); !slices.Equal(got, []int64{3}) {
		t.Fatalf("local copies: %v", got)
	}
}

// TestLocalRecoveryOtherFileSystem: a root on another file system (tmpfs) holds copies
// rather than links, and a restore copies them back.
func TestLocalRecoveryOtherFileSystem(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "sluice-lr-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	var a, b syscall.Stat_t
	tmp := t.TempDir()
	if syscall.Stat(shm, &a) != nil || syscall.Stat(tmp, &b) != nil || a.Dev == b.Dev {
		t.Skip("/dev/shm is not another file system")
	}
	store, _ := fileStore(t)
	cfg := lrConfig(shm, true)
	src := newBackend(t, cfg, opts(t, 128, all(128)))
	m := newModel()
	write(t, src, m, newRand(61), 1000, 5000)
	h := checkpoint(t, src, store, 1)
	src.NotifyCheckpointComplete(1)
	must(t, src.Close())
	if got := localCopies(t, kgDir(shm, all(128))); !slices.Equal(got, []int64{1}) {
		t.Fatalf("local copies on tmpfs: %v", got)
	}
	r := newBackend(t, cfg, restoreOpts(t, all(128), 1))
	cr := newCountingReader(store)
	must(t, r.Restore(context.Background(), []*sluicev1.KeyedStateHandle{h}, cr))
	if st := r.LastRestore(); st.LocalCheckpointID != 1 || st.Fallback != "" || cr.read(sstPath) != 0 {
		t.Fatalf("restore across file systems: %+v", st)
	}
	check(t, "restored", r, m)
}
