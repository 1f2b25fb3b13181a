package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// outputReport is what verifyKeyedCount found in a keyed-count output directory.
type outputReport struct {
	files        int
	lines        int
	lost         int // (key, seq) pairs missing
	duplicated   int // extra copies of (key, seq) pairs
	inconsistent int // lines with count != seq
	outOfOrder   int // lines whose seq is not above the previous one of its key in its file
	malformed    int // lines that are not key-<k>,<seq>,<count> within range
	splitKeys    int // keys written by more than one sink subtask
	leftovers    []string
	examples     []string
}

func (r *outputReport) example(format string, args ...any) {
	if len(r.examples) < 8 {
		r.examples = append(r.examples, fmt.Sprintf(format, args...))
	}
}

func (r *outputReport) ok(keys, perKey int) bool {
	return r.lines == keys*perKey && r.lost == 0 && r.duplicated == 0 && r.inconsistent == 0 &&
		r.outOfOrder == 0 && r.malformed == 0 && r.splitKeys == 0 && len(r.leftovers) == 0
}

func (r *outputReport) String() string {
	s := fmt.Sprintf("%d files, %d lines: lost %d, duplicated %d, inconsistent (count != seq) %d, out of order %d, malformed %d, keys in several files %d",
		r.files, r.lines, r.lost, r.duplicated, r.inconsistent, r.outOfOrder, r.malformed, r.splitKeys)
	if len(r.leftovers) > 0 {
		s += fmt.Sprintf(", unfinished in-progress files %v", r.leftovers)
	}
	if len(r.examples) > 0 {
		s += "\n  e.g. " + strings.Join(r.examples, "\n  e.g. ")
	}
	return s
}

// verifyKeyedCount checks the output of keyed-count in dir exactly: every key
// key-0..key-<keys-1> has seq 1..perKey exactly once, count == seq on every line, each
// key's seqs increase within its file, each key is written by one sink subtask, and
// nothing else is there.
func verifyKeyedCount(t *testing.T, dir string, keys, perKey int) {
	t.Helper()
	r := checkKeyedCount(t, dir, keys, perKey)
	if !r.ok(keys, perKey) {
		t.Fatalf("keyed-count output in %s is not exact (want %d lines = %d keys x %d): %s", dir, keys*perKey, keys, perKey, r)
	}
	t.Logf("output exact: %s", r)
}

func checkKeyedCount(t *testing.T, dir string, keys, perKey int) *outputReport {
	t.Helper()
	r := &outputReport{}
	files, err := filepath.Glob(filepath.Join(dir, "part-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no part-* files in %s", dir)
	}
	r.leftovers, _ = filepath.Glob(filepath.Join(dir, ".*inprogress*"))
	r.files = len(files)
	seen := make([][]uint8, keys) // seen[k][seq] counts, saturating
	for k := range seen {
		seen[k] = make([]uint8, perKey+1)
	}
	owner := make([]string, keys) // the file that wrote key k
	split := make([]bool, keys)
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(path)
		last := map[int]int{} // key -> last seq in this file
		sc := bufio.NewScanner(f)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			r.lines++
			k, seq, count, ok := parseLine(line)
			if !ok || k < 0 || k >= keys || seq < 1 || seq > perKey {
				r.malformed++
				r.example("%s:%d: unexpected line %q", name, n, line)
				continue
			}
			if count != seq {
				r.inconsistent++
				r.example("%s:%d: count %d != seq %d in %q", name, n, count, seq, line)
			}
			if prev, ok := last[k]; ok && seq <= prev {
				r.outOfOrder++
				r.example("%s:%d: key-%d seq %d after seq %d", name, n, k, seq, prev)
			}
			last[k] = seq
			if seen[k][seq] < 255 {
				seen[k][seq]++
			}
			switch owner[k] {
			case "":
				owner[k] = name
			case name:
			default:
				if !split[k] {
					split[k] = true
					r.splitKeys++
					r.example("key-%d written to both %s and %s", k, owner[k], name)
				}
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		f.Close()
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

// parseLine parses "key-<k>,<seq>,<count>".
func parseLine(line string) (k, seq, count int, ok bool) {
	parts := strings.Split(line, ",")
	if len(parts) != 3 || !strings.HasPrefix(parts[0], "key-") {
		return 0, 0, 0, false
	}
	var err1, err2, err3 error
	k, err1 = strconv.Atoi(strings.TrimPrefix(parts[0], "key-"))
	seq, err2 = strconv.Atoi(parts[1])
	count, err3 = strconv.Atoi(parts[2])
	return k, seq, count, err1 == nil && err2 == nil && err3 == nil
}

// TestVerifierCatchesBadOutput checks the verifier itself on hand-made output, so that
// a verifier that accepts anything cannot make the end-to-end tests pass.
func TestVerifierCatchesBadOutput(t *testing.T) {
	if testing.Short() {
		t.Skip(shortSkip)
	}
	write := func(t *testing.T, files map[string][]string) string {
		dir := t.TempDir()
		for name, lines := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	good := map[string][]string{
		"part-0": {"key-0,1,1", "key-0,2,2", "key-0,3,3"},
		"part-1": {"key-1,1,1", "key-1,2,2", "key-1,3,3"},
	}
	if r := checkKeyedCount(t, write(t, good), 2, 3); !r.ok(2, 3) {
		t.Fatalf("good output rejected: %s", r)
	}
	cases := []struct {
		name  string
		files map[string][]string
		check func(*outputReport) bool
	}{
		{"lost", map[string][]string{"part-0": {"key-0,1,1", "key-0,3,3"}, "part-1": good["part-1"]},
			func(r *outputReport) bool { return r.lost == 1 }},
		{"duplicated", map[string][]string{"part-0": {"key-0,1,1", "key-0,2,2", "key-0,3,3", "key-0,3,3"}, "part-1": good["part-1"]},
			func(r *outputReport) bool { return r.duplicated == 1 && r.outOfOrder == 1 }},
		{"inconsistent", map[string][]string{"part-0": {"key-0,1,1", "key-0,2,1", "key-0,3,3"}, "part-1": good["part-1"]},
			func(r *outputReport) bool { return r.inconsistent == 1 }},
		{"out of order", map[string][]string{"part-0": {"key-0,2,2", "key-0,1,1", "key-0,3,3"}, "part-1": good["part-1"]},
			func(r *outputReport) bool { return r.outOfOrder == 1 }},
		{"split key", map[string][]string{"part-0": {"key-0,1,1", "key-0,2,2"}, "part-1": {"key-0,3,3", "key-1,1,1", "key-1,2,2", "key-1,3,3"}},
			func(r *outputReport) bool { return r.splitKeys == 1 }},
		{"malformed", map[string][]string{"part-0": {"key-0,1,1", "key-0,2,2", "key-0,3,3", "key-7,1,1", "garbage"}, "part-1": good["part-1"]},
			func(r *outputReport) bool { return r.malformed == 2 }},
		{"leftover", map[string][]string{"part-0": good["part-0"], "part-1": good["part-1"], ".part-2.inprogress": {"key-0,1,1"}},
			func(r *outputReport) bool { return len(r.leftovers) == 1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := checkKeyedCount(t, write(t, tc.files), 2, 3)
			if r.ok(2, 3) || !tc.check(r) {
				t.Errorf("verifier missed it: %s", r)
			}
		})
	}
}
