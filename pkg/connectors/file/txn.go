package file

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sluice-stream/sluice/pkg/connectors/twophase"
)

// Transactions writes records as lines into transaction files in Dir, for the
// two-phase-commit sink: a transaction is the hidden file .<name>.inprogress while it is
// written, the hidden .<name>.pending once pre-committed (synced), and <name> once
// committed (an atomic rename, so readers never see part of a transaction). Names are
// part-<subtask>-<random>-<n>, unique across attempts and processes.
type Transactions[T any] struct {
	Dir     string
	Subtask int
	Format  func(dst []byte, v T) []byte
	// Savepoint: PreCommit pre-commits for a savepoint, to the hidden
	// .<name>.savepoint, which RemoveStale keeps (a restore from the savepoint commits
	// it; a checkpoint after it commits it too). Such a file is left behind only when
	// the job failed over before the next checkpoint and the savepoint is never
	// restored.
	Savepoint bool

	token string
	seq   int
	line  []byte
}

var _ twophase.Transactions[int] = (*Transactions[int])(nil)

// emptyPrefix marks the handle of a transaction that received no record: it commits to
// nothing rather than to an empty file.
const emptyPrefix = "empty:"

type txn struct {
	name  string
	f     *os.File
	bw    *bufio.Writer
	n     int64
	empty bool
}

func (t *txn) Handle() []byte {
	if t.empty {
		return []byte(emptyPrefix + t.name)
	}
	return []byte(t.name)
}

func (x *Transactions[T]) path(name, state string) string {
	switch state {
	case "inprogress", "pending", "savepoint":
		return filepath.Join(x.Dir, "."+name+"."+state)
	}
	return filepath.Join(x.Dir, name)
}

// Begin creates the in-progress file of a new transaction.
func (x *Transactions[T]) Begin(context.Context) (twophase.Txn, error) {
	if x.token == "" {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		x.token = hex.EncodeToString(b[:])
		if err := os.MkdirAll(x.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("file sink: %w", err)
		}
	}
	x.seq++
	name := fmt.Sprintf("part-%d-%s-%d", x.Subtask, x.token, x.seq)
	f, err := os.Create(x.path(name, "inprogress"))
	if err != nil {
		return nil, fmt.Errorf("file sink: %w", err)
	}
	return &txn{name: name, f: f, bw: bufio.NewWriterSize(f, 64<<10)}, nil
}

// Write appends one line to the transaction.
func (x *Transactions[T]) Write(t twophase.Txn, v T) error {
	tx := t.(*txn)
	x.line = append(x.Format(x.line[:0], v), '\n')
	tx.n++
	_, err := tx.bw.Write(x.line)
	return err
}

// PreCommit syncs the transaction's file and renames it to pending.
func (x *Transactions[T]) PreCommit(_ context.Context, t twophase.Txn) error {
	tx := t.(*txn)
	if err := tx.bw.Flush(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if tx.n == 0 {
		tx.empty = true
		tx.f.Close()
		return os.Remove(x.path(tx.name, "inprogress"))
	}
	if err := tx.f.Sync(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if err := tx.f.Close(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	to := "pending"
	if x.Savepoint {
		to = "savepoint"
	}
	if err := os.Rename(x.path(tx.name, "inprogress"), x.path(tx.name, to)); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	return syncDir(x.Dir)
}

// Commit renames a pending file into place; a transaction already committed is fine.
func (x *Transactions[T]) Commit(_ context.Context, handle []byte) error {
	name := string(handle)
	if strings.HasPrefix(name, emptyPrefix) {
		return nil
	}
	err := os.Rename(x.path(name, "pending"), x.path(name, "committed"))
	if errors.Is(err, fs.ErrNotExist) {
		err = os.Rename(x.path(name, "savepoint"), x.path(name, "committed"))
	}
	if errors.Is(err, fs.ErrNotExist) {
		if _, serr := os.Stat(x.path(name, "committed")); serr == nil {
			return nil // committed before (a repeated notification, or recovery)
		}
		return fmt.Errorf("file sink: transaction %s is neither pending nor committed in %s: its records are lost", name, x.Dir)
	}
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	return syncDir(x.Dir)
}

// Abort removes the files of a transaction that never committed.
func (x *Transactions[T]) Abort(_ context.Context, handle []byte) error {
	name := strings.TrimPrefix(string(handle), emptyPrefix)
	// Not a .savepoint file: aborting the transaction a restored checkpoint left open
	// must not discard it if a later savepoint pre-committed it (see Savepoint).
	for _, state := range []string{"inprogress", "pending"} {
		if err := os.Remove(x.path(name, state)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("file sink: %w", err)
		}
	}
	return nil
}

// RemoveStale deletes this subtask's hidden transaction files other than keep's: those
// of crashed attempts that no checkpoint recorded (or whose restore already committed or
// aborted what it recorded), but not those pre-committed for a savepoint (see
// Savepoint). Call it once the restored transactions are settled.
func (x *Transactions[T]) RemoveStale(keep twophase.Txn) error {
	ents, err := os.ReadDir(x.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	prefix := fmt.Sprintf(".part-%d-", x.Subtask)
	mine := ""
	if t, ok := keep.(*txn); ok {
		mine = "." + t.name + "."
	}
	for _, e := range ents {
		n := e.Name()
		if !strings.HasPrefix(n, prefix) || (mine != "" && strings.HasPrefix(n, mine)) {
			continue
		}
		if strings.HasSuffix(n, ".inprogress") || strings.HasSuffix(n, ".pending") {
			if err := os.Remove(filepath.Join(x.Dir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("file sink: %w", err)
			}
		}
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("file sink: sync %s: %w", dir, err)
	}
	return nil
}
