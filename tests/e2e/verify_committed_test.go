package e2e

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The transactional file sink of keyed-count commits one file per checkpoint and sink
// subtask, part-<subtask>-<token>-<n>: <token> is random per sink instance (one per
// attempt), <n> counts that instance's transactions. Until its checkpoint completes a
// transaction is a hidden file (.<name>.inprogress, .<name>.pending) that is renamed into
// place, so a visible file is always complete.
var committedName = regexp.MustCompile(`^part-(\d+)-([0-9a-f]+)-(\d+)$`)

// committedReport is what checkCommittedOutput found in a keyed-count output directory
// written by the transactional sink.
type committedReport struct {
	files        int
	lines        int
	lost         int // (key, seq) pairs missing
	duplicated   int // extra copies of (key, seq) pairs
	inconsistent int // lines with count != seq
	undercount   int // lines with count < seq (a subset of inconsistent)
	outOfOrder   int // lines whose seq is not above the key's previous one in the files of the same sink instance
	malformed    int // lines that are not key-<k>,<seq>,<count> within range (count >= 1)
	splitKeys    int // keys written by more than one sink subtask
	partial      []string
	strays       []string // visible files not named like a committed transaction, or empty
	hidden       []string // transaction files never committed nor removed
	examples     []string
}

func (r *committedReport) example(format string, args ...any) {
	if len(r.examples) < 8 {
		r.examples = append(r.examples, fmt.Sprintf(format, args...))
	}
}

// wellFormed: every visible file is a complete, well-formed committed transaction and
// no transaction file was left behind.
func (r *committedReport) wellFormed() bool {
	return r.malformed == 0 && len(r.partial) == 0 && len(r.strays) == 0 && len(r.hidden) == 0
}

// exactlyOnce: every (key, seq) exactly once, count == seq, in order, one subtask per key.
func (r *committedReport) exactlyOnce(keys, perKey int) bool {
	return r.wellFormed() && r.lines == keys*perKey && r.lost == 0 && r.duplicated == 0 &&
		r.inconsistent == 0 && r.outOfOrder == 0 && r.splitKeys == 0
}

// atLeastOnce: every (key, seq) at least once, every line well-formed.
func (r *committedReport) atLeastOnce() bool { return r.wellFormed() && r.lost == 0 }

func (r *committedReport) String() string {
	s := fmt.Sprintf("%d files, %d lines: lost %d, duplicated %d, inconsistent (count != seq) %d (count < seq %d), out of order %d, malformed %d, keys in several subtasks' files %d",
		r.files, r.lines, r.lost, r.duplicated, r.inconsistent, r.undercount, r.outOfOrder, r.malformed, r.splitKeys)
	if len(r.partial) > 0 {
		s += fmt.Sprintf(", partial visible files %v", r.partial)
	}
	if len(r.strays) > 0 {
		s += fmt.Sprintf(", unexpected visible files %v", r.strays)
	}
	if len(r.hidden) > 0 {
		s += fmt.Sprintf(", transaction files left behind %v", r.hidden)
	}
	if len(r.examples) > 0 {
		s += "\n  e.g. " + strings.Join(r.examples, "\n  e.g. ")
	}
	return s
}

// committedFile is a visible file of the output directory.
type committedFile struct {
	name           string
	subtask, n     int
	token          string
	data           []byte
	partial, stray bool
}

// readCommitted reads every visible file of dir and lists the hidden ones.
func readCommitted(t *testing.T, dir string) (files []committedFile, hidden []string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("output directory: %v", err)
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			hidden = append(hidden, name)
			continue
		}
		f := committedFile{name: name}
		if f.data, err = os.ReadFile(filepath.Join(dir, name)); err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		m := committedName.FindStringSubmatch(name)
		f.stray = m == nil || e.IsDir() || len(f.data) == 0
		if m != nil {
			f.subtask, _ = strconv.Atoi(m[1])
			f.token = m[2]
			f.n, _ = strconv.Atoi(m[3])
		}
		f.partial = len(f.data) > 0 && f.data[len(f.data)-1] != '\n'
		files = append(files, f)
	}
	return files, hidden
}

// checkCommittedOutput checks the output of keyed-count's transactional sink in dir
// against keys x perKey records. It does not fail the test: the caller decides which of
// the report's findings matter for its delivery guarantee.
func checkCommittedOutput(t *testing.T, dir string, keys, perKey int) *committedReport {
	t.Helper()
	r := &committedReport{}
	files, hidden := readCommitted(t, dir)
	r.hidden = hidden
	// Within one sink instance (subtask, token) the transactions follow each other in
	// the order of n, so each key's seqs must increase across its files in that order.
	slices.SortFunc(files, func(a, b committedFile) int {
		if c := strings.Compare(fmt.Sprint(a.subtask, "-", a.token), fmt.Sprint(b.subtask, "-", b.token)); c != 0 {
			return c
		}
		return a.n - b.n
	})
	seen := make([][]uint8, keys) // seen[k][seq] counts, saturating
	for k := range seen {
		seen[k] = make([]uint8, perKey+1)
	}
	owner := make([]int, keys) // sink subtask that wrote key k, -1: none yet
	for k := range owner {
		owner[k] = -1
	}
	split := make([]bool, keys)
	var last map[int]int // key -> last seq in the current sink instance
	instance := ""
	for _, f := range files {
		if f.stray {
			r.strays = append(r.strays, f.name)
			continue
		}
		r.files++
		if f.partial {
			r.partial = append(r.partial, f.name)
		}
		if id := fmt.Sprint(f.subtask, "-", f.token); id != instance {
			instance, last = id, map[int]int{}
		}
		for n, line := range strings.Split(strings.TrimSuffix(string(f.data), "\n"), "\n") {
			r.lines++
			k, seq, count, ok := parseLine(line)
			if !ok || k < 0 || k >= keys || seq < 1 || seq > perKey || count < 1 {
				r.malformed++
				r.example("%s:%d: unexpected line %q", f.name, n+1, line)
				continue
			}
			if count != seq {
				r.inconsistent++
				r.example("%s:%d: count %d != seq %d in %q", f.name, n+1, count, seq, line)
			}
			if count < seq {
				r.undercount++
			}
			if prev, ok := last[k]; ok && seq <= prev {
				r.outOfOrder++
				r.example("%s:%d: key-%d seq %d after seq %d", f.name, n+1, k, seq, prev)
			}
			last[k] = seq
			if seen[k][seq] < 255 {
				seen[k][seq]++
			}
			switch owner[k] {
			case -1:
				owner[k] = f.subtask
			case f.subtask:
			default:
				if !split[k] {
					split[k] = true
					r.splitKeys++
					r.example("key-%d written by sink subtasks %d and %d", k, owner[k], f.subtask)
				}
			}
		}
	}
	for k := range seen {
		for seq := 1; seq <= perKey; seq++ {
			switch n := int(seen[k][seq]); {
			case n == 0:
				r.lost++
				r.example("key-%d seq %d lost", k, seq)
			case n > 1:
				r.duplicated += n - 1
				r.example("key-%d seq %d written %d times", k, seq, n)
			}
		}
	}
	return r
}

// committedSnapshot remembers the visible files of an output directory at one moment:
// committed output is final, so each must later still be there with the same bytes.
type committedSnapshot map[string][32]byte

// snapshotCommitted reads the visible files of dir while the job runs and checks that
// each is already complete and well-formed (readers never see part of a transaction).
func snapshotCommitted(t *testing.T, dir string, keys, perKey int, into committedSnapshot) {
	t.Helper()
	files, _ := readCommitted(t, dir)
	for _, f := range files {
		if f.stray || f.partial {
			t.Errorf("while the job runs, %s holds a visible file that is not a complete transaction: %s (%d bytes, ends %q)",
				dir, f.name, len(f.data), f.data[max(0, len(f.data)-20):])
			continue
		}
		for n, line := range bytes.Split(bytes.TrimSuffix(f.data, []byte("\n")), []byte("\n")) {
			k, seq, count, ok := parseLine(string(line))
			if !ok || k < 0 || k >= keys || seq < 1 || seq > perKey || count < 1 {
				t.Errorf("while the job runs, visible file %s:%d has a malformed line %q", f.name, n+1, line)
				break
			}
		}
		sum := sha256.Sum256(f.data)
		if prev, ok := into[f.name]; ok && prev != sum {
			t.Errorf("committed file %s changed while the job ran", f.name)
		}
		into[f.name] = sum
	}
}

// verifyCommittedUnchanged checks that every file of the snapshot is still in dir, unchanged.
func verifyCommittedUnchanged(t *testing.T, dir string, snap committedSnapshot) {
	t.Helper()
	changed := 0
	for name, sum := range snap {
		data, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case err != nil:
			t.Errorf("file %s, visible (committed) while the job ran, is gone: %v", name, err)
			changed++
		case sha256.Sum256(data) != sum:
			t.Errorf("file %s, visible (committed) while the job ran, changed afterwards", name)
			changed++
		}
	}
	if changed == 0 {
		t.Logf("all %d files seen committed while the job ran are unchanged at the end", len(snap))
	}
}

// TestCommittedVerifierCatchesBadOutput checks checkCommittedOutput on hand-made output.
func TestCommittedVerifierCatchesBadOutput(t *testing.T) {
	if testing.Short() {
		t.Skip(shortSkip)
	}
	write := func(t *testing.T, files map[string]string) string {
		dir := t.TempDir()
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	// Two attempts of subtask 0 (tokens aa, bb), one of subtask 1; key-0 on subtask 0,
	// key-1 on subtask 1; the second attempt picks up at seq 3.
	good := map[string]string{
		"part-0-aa-1": "key-0,1,1\n",
		"part-0-aa-2": "key-0,2,2\n",
		"part-0-bb-1": "key-0,3,3\n",
		"part-1-cc-1": "key-1,1,1\nkey-1,2,2\n",
		"part-1-cc-2": "key-1,3,3\n",
	}
	if r := checkCommittedOutput(t, write(t, good), 2, 3); !r.exactlyOnce(2, 3) || !r.atLeastOnce() {
		t.Fatalf("good output rejected: %s", r)
	}
	with := func(changes map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range good {
			m[k] = v
		}
		for k, v := range changes {
			if v == "-" {
				delete(m, k)
			} else {
				m[k] = v
			}
		}
		return m
	}
	cases := []struct {
		name        string
		files       map[string]string
		atLeastOnce bool // still acceptable at least once
		check       func(*committedReport) bool
	}{
		{"lost", with(map[string]string{"part-0-bb-1": "-"}), false, func(r *committedReport) bool { return r.lost == 1 }},
		{"duplicated", with(map[string]string{"part-0-bb-1": "key-0,2,2\nkey-0,3,3\n"}), true,
			func(r *committedReport) bool { return r.duplicated == 1 && r.outOfOrder == 0 }},
		{"inconsistent", with(map[string]string{"part-1-cc-2": "key-1,3,4\n"}), true, func(r *committedReport) bool { return r.inconsistent == 1 }},
		{"out of order across files", with(map[string]string{"part-1-cc-1": "key-1,1,1\nkey-1,3,3\n", "part-1-cc-2": "key-1,2,2\n"}), true,
			func(r *committedReport) bool { return r.outOfOrder == 1 }},
		{"split key", with(map[string]string{"part-0-bb-1": "-", "part-1-cc-2": "key-1,3,3\nkey-0,3,3\n"}), true,
			func(r *committedReport) bool { return r.splitKeys == 1 }},
		{"malformed", with(map[string]string{"part-1-cc-2": "key-1,3,3\nkey-7,1,1\n"}), false, func(r *committedReport) bool { return r.malformed == 1 }},
		{"partial", with(map[string]string{"part-1-cc-2": "key-1,3,3\nkey-1,"}), false,
			func(r *committedReport) bool { return len(r.partial) == 1 }},
		{"stray", with(map[string]string{"part-2": "key-1,3,3\n"}), false, func(r *committedReport) bool { return len(r.strays) == 1 }},
		{"empty", with(map[string]string{"part-1-cc-3": ""}), false, func(r *committedReport) bool { return len(r.strays) == 1 }},
		{"hidden", with(map[string]string{".part-1-cc-3.pending": "key-1,3,3\n"}), false, func(r *committedReport) bool { return len(r.hidden) == 1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := checkCommittedOutput(t, write(t, tc.files), 2, 3)
			if r.exactlyOnce(2, 3) || !tc.check(r) || r.atLeastOnce() != tc.atLeastOnce {
				t.Errorf("verifier missed it (at least once: %v, want %v): %s", r.atLeastOnce(), tc.atLeastOnce, r)
			}
		})
	}
}
