// Package file reads lines from files and writes records as lines into a directory.
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

// Sink writes one line per record into Dir/part-<subtask>. The file is written as the
// hidden Dir/.part-<subtask>.inprogress and renamed into place at the end of input, so a
// reader never sees a partial file; a restarted attempt starts the file over.
//
// Without checkpoints a job restarts from the beginning, so rewriting the whole file
// per attempt is what keeps the output exact after failures.
type Sink[T any] struct {
	Dir    string
	Format func(dst []byte, v T) []byte

	f     *os.File
	bw    *bufio.Writer
	tmp   string
	final string
	line  []byte
}

// Open creates the in-progress file.
func (s *Sink[T]) Open(_ context.Context, rc *api.RuntimeContext) error {
	if s.Dir == "" {
		return fmt.Errorf("file sink: no directory")
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	name := fmt.Sprintf("part-%d", rc.Subtask)
	s.final = filepath.Join(s.Dir, name)
	s.tmp = filepath.Join(s.Dir, "."+name+".inprogress")
	f, err := os.Create(s.tmp)
	if err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	s.f = f
	s.bw = bufio.NewWriterSize(f, 64<<10)
	return nil
}

// Write appends one line.
func (s *Sink[T]) Write(v T) error {
	s.line = append(s.Format(s.line[:0], v), '\n')
	_, err := s.bw.Write(s.line)
	return err
}

// Finish syncs the file and renames it into place.
func (s *Sink[T]) Finish() error {
	if err := s.bw.Flush(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if err := s.f.Sync(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	s.f = nil
	if err := os.Rename(s.tmp, s.final); err != nil {
		return fmt.Errorf("file sink: %w", err)
	}
	return nil
}

// Close removes an unfinished in-progress file.
func (s *Sink[T]) Close() error {
	if s.f != nil {
		s.f.Close()
		s.f = nil
		return os.Remove(s.tmp)
	}
	return nil
}

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
