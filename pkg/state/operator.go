package state

import (
	"fmt"
	"slices"
	"sort"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// OperatorStateBackend holds the non-keyed (operator) state of one subtask: named list
// states, each with a redistribution mode that says how its entries are spread over the
// subtasks when the parallelism changes (Redistribute). It is small state, kept on the
// heap whatever the keyed backend is. Like a keyed backend it is used by the task
// goroutine only; the result of Snapshot may be used on any goroutine.
type OperatorStateBackend struct {
	lists map[string]*ListState
}

// NewOperatorStateBackend returns an empty operator state backend.
func NewOperatorStateBackend() *OperatorStateBackend {
	return &OperatorStateBackend{lists: map[string]*ListState{}}
}

// ListState is a named operator list state. Stored entries are immutable copies.
type ListState struct {
	name    string
	mode    sluicev1.RedistributionMode
	entries [][]byte
}

func normalizeMode(m sluicev1.RedistributionMode) sluicev1.RedistributionMode {
	if m == sluicev1.RedistributionMode_REDISTRIBUTION_MODE_UNSPECIFIED {
		return sluicev1.RedistributionMode_REDISTRIBUTION_MODE_SPLIT
	}
	return m
}

// List declares (or re-opens, e.g. after Restore) the list state name. UNSPECIFIED means
// SPLIT. Re-opening with another mode is an error wrapping ErrWrongKind.
func (b *OperatorStateBackend) List(name string, mode sluicev1.RedistributionMode) (*ListState, error) {
	if name == "" {
		return nil, fmt.Errorf("state: empty operator state name")
	}
	mode = normalizeMode(mode)
	if mode != sluicev1.RedistributionMode_REDISTRIBUTION_MODE_SPLIT && mode != sluicev1.RedistributionMode_REDISTRIBUTION_MODE_UNION {
		return nil, fmt.Errorf("state: operator state %q: unknown redistribution mode %v", name, mode)
	}
	if l, ok := b.lists[name]; ok {
		if l.mode != mode {
			return nil, fmt.Errorf("%w: operator state %q has mode %v, requested %v", ErrWrongKind, name, l.mode, mode)
		}
		return l, nil
	}
	l := &ListState{name: name, mode: mode}
	b.lists[name] = l
	return l, nil
}

// Name is the state's name.
func (l *ListState) Name() string { return l.name }

// Mode is the state's redistribution mode.
func (l *ListState) Mode() sluicev1.RedistributionMode { return l.mode }

// Append adds a copy of v.
func (l *ListState) Append(v []byte) { l.entries = append(l.entries, slices.Clone(v)) }

// Get returns the entries. The outer slice is the caller's; the entries must not be
// modified.
func (l *ListState) Get() [][]byte { return slices.Clone(l.entries) }

// Update replaces the entries with copies of vs.
func (l *ListState) Update(vs [][]byte) {
	l.entries = make([][]byte, len(vs))
	for i, v := range vs {
		l.entries[i] = slices.Clone(v)
	}
}

// Clear removes all entries.
func (l *ListState) Clear() { l.entries = nil }

// Snapshot returns the states, sorted by name (every declared state, even empty). It
// copies only slice headers (entries are immutable), so it suits the synchronous phase;
// the result shares entry bytes with the backend and must not be modified.
func (b *OperatorStateBackend) Snapshot() []*sluicev1.OperatorListState {
	out := make([]*sluicev1.OperatorListState, 0, len(b.lists))
	for _, l := range b.lists {
		out = append(out, &sluicev1.OperatorListState{Name: l.name, Mode: l.mode, Entries: slices.Clone(l.entries)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Restore adds the entries of states (typically one subtask's share computed by
// Redistribute) to the backend, copying them. A state restored under an existing name
// with another mode is an error wrapping ErrWrongKind.
func (b *OperatorStateBackend) Restore(states []*sluicev1.OperatorListState) error {
	for _, s := range states {
		if s == nil {
			continue
		}
		l, err := b.List(s.GetName(), s.GetMode())
		if err != nil {
			return err
		}
		for _, e := range s.GetEntries() {
			l.Append(e)
		}
	}
	return nil
}

// Redistribute computes the operator state of newParallelism subtasks from the states of
// the old subtasks (old[i] is what subtask i snapshotted). Every new subtask gets every
// state name (possibly with no entries), sorted by name. Per name:
//
//   - SPLIT (or UNSPECIFIED): the entries of all old subtasks, concatenated in subtask
//     order, are dealt round-robin: entry j goes to new subtask j % newParallelism. No
//     entry is lost or duplicated, and the shares differ in size by at most one.
//   - UNION: every new subtask gets all entries of all old subtasks, in subtask order.
//
// If the old subtasks disagree on a name's mode, UNION wins (nothing is lost). The
// function is pure and deterministic; the result shares entry bytes with old. It returns
// nil when newParallelism < 1.
func Redistribute(old [][]*sluicev1.OperatorListState, newParallelism int) [][]*sluicev1.OperatorListState {
	if newParallelism < 1 {
		return nil
	}
	type agg struct {
		mode    sluicev1.RedistributionMode
		entries [][]byte
	}
	byName := map[string]*agg{}
	var names []string
	for _, sub := range old {
		for _, s := range sub {
			if s == nil {
				continue
			}
			a := byName[s.GetName()]
			if a == nil {
				a = &agg{mode: normalizeMode(s.GetMode())}
				byName[s.GetName()] = a
				names = append(names, s.GetName())
			} else if normalizeMode(s.GetMode()) == sluicev1.RedistributionMode_REDISTRIBUTION_MODE_UNION {
				a.mode = sluicev1.RedistributionMode_REDISTRIBUTION_MODE_UNION
			}
			a.entries = append(a.entries, s.GetEntries()...)
		}
	}
	sort.Strings(names)
	out := make([][]*sluicev1.OperatorListState, newParallelism)
	for i := range out {
		out[i] = make([]*sluicev1.OperatorListState, 0, len(names))
	}
	for _, name := range names {
		a := byName[name]
		for i := range newParallelism {
			s := &sluicev1.OperatorListState{Name: name, Mode: a.mode}
			if a.mode == sluicev1.RedistributionMode_REDISTRIBUTION_MODE_UNION {
				s.Entries = slices.Clone(a.entries)
			} else {
				for j := i; j < len(a.entries); j += newParallelism {
					s.Entries = append(s.Entries, a.entries[j])
				}
			}
			out[i] = append(out[i], s)
		}
	}
	return out
}
