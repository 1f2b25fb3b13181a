// Package atomicfile replaces small files atomically on local disk.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces name with b: it writes a temporary file beside it, syncs it, renames it
// over name and syncs the directory, so that a crash leaves the old content or the new,
// never a part. On error the temporary file is removed and name is unchanged.
func Write(name string, b []byte) error {
	tmp := name + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	// The rename is durable once the directory is synced.
	if d, err := os.Open(filepath.Dir(name)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
