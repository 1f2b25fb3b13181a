// Package file reads lines from files and writes records as lines into a directory,
// transactionally (see TransactionalSink).
package file

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/sluice-stream/sluice/pkg/api"
)

// Lines reads the lines of a file, or of every regular file in a directory (sorted by
// name). Subtask i of p reads the files whose index modulo p is i; a single file is read
// by subtask 0.
type Lines[T any] struct {
	Path string
	// Make builds a record from a line, its 1-based number and the file's base name.
	Make func(line string, number int64, file string) T

	files []string
	cur   *os.File
	sc    *bufio.Scanner
	name  string
	num   int64
}

// Open lists the subtask's files.
func (l *Lines[T]) Open(_ context.Context, rc *api.RuntimeContext) error {
	st, err := os.Stat(l.Path)
	if err != nil {
		return fmt.Errorf("file source: %w", err)
	}
	var all []string
	if st.IsDir() {
		ents, err := os.ReadDir(l.Path)
		if err != nil {
			return fmt.Errorf("file source: %w", err)
		}
		for _, e := range ents {
			if e.Type().IsRegular() {
				all = append(all, filepath.Join(l.Path, e.Name()))
			}
		}
		slices.Sort(all)
	} else {
		all = []string{l.Path}
	}
	for i, f := range all {
		if i%rc.Parallelism == rc.Subtask {
			l.files = append(l.files, f)
		}
	}
	return nil
}

// Poll emits up to a batch of lines.
func (l *Lines[T]) Poll(out api.Emitter[T]) (api.PollResult, error) {
	for n := 0; n < 1024; {
		if l.sc == nil {
			if len(l.files) == 0 {
				return api.End, nil
			}
			f, err := os.Open(l.files[0])
			if err != nil {
				return api.More, fmt.Errorf("file source: %w", err)
			}
			l.cur, l.name, l.num = f, filepath.Base(l.files[0]), 0
			l.files = l.files[1:]
			l.sc = bufio.NewScanner(f)
			l.sc.Buffer(make([]byte, 64<<10), 16<<20)
		}
		if !l.sc.Scan() {
			err := l.sc.Err()
			l.cur.Close()
			l.sc, l.cur = nil, nil
			if err != nil {
				return api.More, fmt.Errorf("file source: %s: %w", l.name, err)
			}
			continue
		}
		l.num++
		out.Emit(l.Make(l.sc.Text(), l.num, l.name))
		n++
	}
	return api.More, nil
}

// Close closes the open file.
func (l *Lines[T]) Close() error {
	if l.cur != nil {
		return l.cur.Close()
	}
	return nil
}
