package spec

import (
	"errors"
	"fmt"
	"strings"
)

// Error is one problem in a spec. Parse returns them joined (errors.Join), sorted by
// position, one line each: "file:line: message".
type Error struct {
	File string
	Line int // 1-based
	// Column is the 1-based column of the offending YAML node, 0 when unknown. It is
	// not part of the message.
	Column int
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Errors returns the spec errors in an error returned by Parse, in order.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if e, ok := err.(*Error); ok {
			out = append(out, e)
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		var e *Error
		if errors.As(err, &e) {
			out = append(out, e)
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// suggest returns the candidate closest to word by edit distance (ignoring case),
// or "" when none is close enough to be a likely typo.
func suggest(word string, candidates []string) string {
	limit := max(1, len(word)/3)
	best, bestD := "", limit+1
	lw := strings.ToLower(word)
	for _, c := range candidates {
		if c == word {
			continue
		}
		// Replacing every character is no typo.
		if d := editDistance(lw, strings.ToLower(c), bestD); d < bestD && d < len(word) && d < len(c) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b (insertions,
// deletions, substitutions and transpositions of adjacent bytes cost 1). Distances
// of at least bound are reported as bound.
func editDistance(a, b string, bound int) int {
	if d := len(a) - len(b); d >= bound || -d >= bound {
		return bound
	}
	if len(a) > 64 || len(b) > 64 {
		return bound
	}
	var rows [3][65]int
	prev2, prev, cur := &rows[0], &rows[1], &rows[2]
	for j := 0; j <= len(b); j++ {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			v := min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				v = min(v, prev2[j-2]+1)
			}
			cur[j] = v
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return min(prev[len(b)], bound)
}
