// Package statetest is the conformance suite every keyed state backend runs:
//
//	func TestConformance(t *testing.T) { statetest.Run(t, heap.Factory{}) }
//
// It checks the primitives, timers, snapshots (including an asynchronous phase running
// concurrently with updates: run it with -race), restore with rescaling and merging,
// corruption detection, savepoints (state.SavepointSnapshotter, or Snapshot for
// backends without it: self-contained, and in the canonical format restorable by the
// heap backend), and the operator-state redistribution. MemStore is an in-memory
// StateWriter/StateReader for tests of the runtime too.
package statetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/fullsnap"
	"github.com/sluice-stream/sluice/pkg/state/heap"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/protobuf/proto"
)

// Run runs the conformance suite against backends made by f.
func Run(t *testing.T, f state.Factory) {
	s := &suite{f: f}
	t.Run("Value", s.testValue)
	t.Run("List", s.testList)
	t.Run("Map", s.testMap)
	t.Run("KeysAcrossKeyGroups", s.testKeys)
	t.Run("Errors", s.testErrors)
	t.Run("InputsAreCopied", s.testInputsCopied)
	t.Run("EventTimers", s.testEventTimers)
	t.Run("ProcessingTimers", s.testProcessingTimers)
	t.Run("TimerOrderRandom", s.testTimerOrderRandom)
	t.Run("SnapshotRestore", s.testSnapshotRestore)
	t.Run("SnapshotInline", s.testSnapshotInline)
	t.Run("AsyncSnapshotConcurrentUpdates", s.testAsyncConcurrent)
	t.Run("SnapshotReleaseAndCancel", s.testReleaseCancel)
	t.Run("RescaleMaxP128", func(t *testing.T) { s.testRescale(t, 128) })
	t.Run("RescaleMaxP1000", func(t *testing.T) { s.testRescale(t, 1000) })
	t.Run("RestoreMergesTwoHandles", s.testMerge)
	t.Run("RestoreErrors", s.testRestoreErrors)
	t.Run("CorruptFile", s.testCorrupt)
	t.Run("Empty", s.testEmpty)
	t.Run("LargeValues", s.testLarge)
	t.Run("Savepoint", s.testSavepoint)
	t.Run("OperatorState", testOperatorState)
	t.Run("Redistribute", testRedistribute)
}

type suite struct{ f state.Factory }

func (s *suite) backend(t testing.TB, maxP int, r keygroup.Range, mod ...func(*state.KeyedOptions)) state.KeyedBackend {
	t.Helper()
	opts := state.KeyedOptions{OperatorUID: "op/1", KeyGroups: r, MaxParallelism: maxP, LocalDir: t.TempDir()}
	for _, m := range mod {
		m(&opts)
	}
	b, err := s.f.NewKeyed(opts)
	must(t, err)
	t.Cleanup(func() { b.Close() })
	if b.KeyGroups() != r || b.MaxParallelism() != maxP {
		t.Fatalf("backend reports %v of %d, want %v of %d", b.KeyGroups(), b.MaxParallelism(), r, maxP)
	}
	return b
}

func all(maxP int) keygroup.Range { return keygroup.Range{Start: 0, End: maxP - 1} }

func noInline(o *state.KeyedOptions) { o.InlineThreshold = -1 }

func (s *suite) restore(t testing.TB, maxP int, r keygroup.Range, hs []*sluicev1.KeyedStateHandle, rd state.StateReader) state.KeyedBackend {
	t.Helper()
	b := s.backend(t, maxP, r)
	must(t, b.Restore(context.Background(), hs, rd))
	return b
}

func get(t testing.TB, b state.KeyedBackend, id state.StateID, ns string) (string, bool) {
	t.Helper()
	v, ok, err := b.Get(id, []byte(ns))
	must(t, err)
	return string(v), ok
}

func list(t testing.TB, b state.KeyedBackend, id state.StateID, ns string) []string {
	t.Helper()
	var out []string
	must(t, b.ListGet(id, []byte(ns), func(v []byte) error {
		out = append(out, string(v))
		return nil
	}))
	return out
}

func (s *suite) testValue(t *testing.T) {
	b := s.backend(t, 128, all(128))
	ids := registerStd(t, b)
	v, r := ids[0], ids[1]
	setKey(b, "alice")
	if _, ok := get(t, b, v, ""); ok {
		t.Fatal("fresh state has a value")
	}
	must(t, b.Put(v, nil, []byte("1")))
	must(t, b.Put(v, []byte("w1"), []byte("ns")))
	must(t, b.Put(r, nil, []byte("r")))
	if got, ok := get(t, b, v, ""); !ok || got != "1" {
		t.Fatalf("Get = %q, %v", got, ok)
	}
	if got, _ := get(t, b, v, "w1"); got != "ns" {
		t.Fatalf("namespace w1 = %q", got)
	}
	if got, _ := get(t, b, r, ""); got != "r" {
		t.Fatalf("reducing = %q", got)
	}
	// Overwrite with longer and shorter values.
	must(t, b.Put(v, nil, bytes.Repeat([]byte("x"), 100)))
	must(t, b.Put(v, nil, []byte("22")))
	if got, _ := get(t, b, v, ""); got != "22" {
		t.Fatalf("after overwrite Get = %q", got)
	}
	// An empty value is a value.
	must(t, b.Put(r, []byte("e"), nil))
	if got, ok := get(t, b, r, "e"); !ok || got != "" {
		t.Fatalf("empty value: %q, %v", got, ok)
	}
	// Key isolation.
	setKey(b, "bob")
	if _, ok := get(t, b, v, ""); ok {
		t.Fatal("bob sees alice's value")
	}
	must(t, b.Put(v, nil, []byte("bob")))
	setKey(b, "alice")
	if got, _ := get(t, b, v, ""); got != "22" {
		t.Fatalf("alice = %q after bob's put", got)
	}
	// Key and namespace bytes do not run together: ("ab", "c") != ("a", "bc").
	setKey(b, "ab")
	must(t, b.Put(v, []byte("c"), []byte("ab|c")))
	setKey(b, "a")
	if _, ok := get(t, b, v, "bc"); ok {
		t.Fatal(`key "a" ns "bc" sees key "ab" ns "c"`)
	}
	// Delete is per key and namespace.
	setKey(b, "alice")
	must(t, b.Delete(v, nil))
	must(t, b.Delete(v, nil)) // no-op
	if _, ok := get(t, b, v, ""); ok {
		t.Fatal("deleted value still there")
	}
	if got, _ := get(t, b, v, "w1"); got != "ns" {
		t.Fatalf("delete of the default namespace removed w1: %q", got)
	}
	// Empty and nil namespaces are the same.
	must(t, b.Put(v, []byte{}, []byte("empty-ns")))
	if got, _ := get(t, b, v, ""); got != "empty-ns" {
		t.Fatalf("nil namespace = %q", got)
	}
}

func (s *suite) testList(t *testing.T) {
	b := s.backend(t, 128, all(128))
	l := registerStd(t, b)[2]
	setKey(b, "k")
	if got := list(t, b, l, ""); len(got) != 0 {
		t.Fatalf("fresh list = %q", got)
	}
	for _, v := range []string{"a", "", "ccc"} {
		must(t, b.ListAppend(l, nil, []byte(v)))
	}
	must(t, b.ListAppend(l, []byte("w1"), []byte("other")))
	if got := list(t, b, l, ""); !slices.Equal(got, []string{"a", "", "ccc"}) {
		t.Fatalf("list = %q", got)
	}
	must(t, b.ListUpdate(l, nil, [][]byte{[]byte("x"), []byte("y")}))
	if got := list(t, b, l, ""); !slices.Equal(got, []string{"x", "y"}) {
		t.Fatalf("after update = %q", got)
	}
	// Update with slices handed out by ListGet (copied by the caller).
	var keep [][]byte
	must(t, b.ListGet(l, nil, func(v []byte) error { keep = append(keep, bytes.Clone(v)); return nil }))
	must(t, b.ListUpdate(l, nil, append(keep, []byte("z"))))
	if got := list(t, b, l, ""); !slices.Equal(got, []string{"x", "y", "z"}) {
		t.Fatalf("after self update = %q", got)
	}
	// An error from fn stops the iteration.
	stop := errors.New("stop")
	n := 0
	if err := b.ListGet(l, nil, func([]byte) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
		t.Fatalf("ListGet with failing fn: %v after %d calls", err, n)
	}
	must(t, b.ListUpdate(l, nil, nil))
	if got := list(t, b, l, ""); len(got) != 0 {
		t.Fatalf("after empty update = %q", got)
	}
	if got := list(t, b, l, "w1"); !slices.Equal(got, []string{"other"}) {
		t.Fatalf("w1 = %q", got)
	}
	must(t, b.Delete(l, []byte("w1")))
	if got := list(t, b, l, "w1"); len(got) != 0 {
		t.Fatalf("after delete w1 = %q", got)
	}
	setKey(b, "k2")
	if got := list(t, b, l, ""); len(got) != 0 {
		t.Fatalf("k2 sees %q", got)
	}
}

func (s *suite) testMap(t *testing.T) {
	b := s.backend(t, 128, all(128))
	m := registerStd(t, b)[3]
	setKey(b, "k")
	if _, ok, err := b.MapGet(m, nil, []byte("a")); err != nil || ok {
		t.Fatalf("fresh MapGet: %v %v", ok, err)
	}
	must(t, b.MapPut(m, nil, []byte("a"), []byte("1")))
	must(t, b.MapPut(m, nil, []byte("b"), []byte("2")))
	must(t, b.MapPut(m, nil, []byte("a"), []byte("11")))
	must(t, b.MapPut(m, []byte("w1"), []byte("a"), []byte("ns")))
	if v, ok, err := b.MapGet(m, nil, []byte("a")); err != nil || !ok || string(v) != "11" {
		t.Fatalf("MapGet a = %q %v %v", v, ok, err)
	}
	got := map[string]string{}
	must(t, b.MapIterate(m, nil, func(k, v []byte) error { got[string(k)] = string(v); return nil }))
	if len(got) != 2 || got["a"] != "11" || got["b"] != "2" {
		t.Fatalf("MapIterate = %v", got)
	}
	must(t, b.MapDelete(m, nil, []byte("a")))
	must(t, b.MapDelete(m, nil, []byte("zz"))) // absent: no-op
	if _, ok, _ := b.MapGet(m, nil, []byte("a")); ok {
		t.Fatal("deleted user key still there")
	}
	// Deleting the last user key clears the entry.
	must(t, b.MapDelete(m, nil, []byte("b")))
	var keys []string
	must(t, b.Keys(m, nil, func(k []byte, _ int) error { keys = append(keys, string(k)); return nil }))
	if len(keys) != 0 {
		t.Fatalf("Keys after emptying the map = %q", keys)
	}
	if v, ok, _ := b.MapGet(m, []byte("w1"), []byte("a")); !ok || string(v) != "ns" {
		t.Fatalf("w1 = %q %v", v, ok)
	}
	must(t, b.Delete(m, []byte("w1")))
	if _, ok, _ := b.MapGet(m, []byte("w1"), []byte("a")); ok {
		t.Fatal("Delete did not clear the map")
	}
}

func (s *suite) testKeys(t *testing.T) {
	for _, maxP := range []int{128, 1000} {
		b := s.backend(t, maxP, all(maxP))
		v := registerStd(t, b)[0]
		want := map[string]int{}
		groups := map[int]bool{}
		for i := range 500 {
			k := fmt.Sprintf("user-%d", i)
			kg := setKey(b, k)
			groups[kg] = true
			must(t, b.Put(v, nil, []byte(k)))
			if i%3 == 0 {
				must(t, b.Put(v, []byte("w1"), []byte("w")))
			}
			want[k] = kg
		}
		if len(groups) < 50 {
			t.Fatalf("keys landed in only %d key groups", len(groups))
		}
		got := map[string]int{}
		must(t, b.Keys(v, nil, func(k []byte, kg int) error {
			if _, dup := got[string(k)]; dup {
				t.Fatalf("Keys reported %q twice", k)
			}
			got[string(k)] = kg
			return nil
		}))
		if len(got) != len(want) {
			t.Fatalf("maxP %d: Keys reported %d keys, want %d", maxP, len(got), len(want))
		}
		for k, kg := range want {
			if got[k] != kg {
				t.Fatalf("maxP %d: key %q in key group %d, want %d", maxP, k, got[k], kg)
			}
			b.SetCurrentKey([]byte(k), kg)
			if val, _ := get(t, b, v, ""); val != k {
				t.Fatalf("key %q = %q", k, val)
			}
		}
		n := 0
		must(t, b.Keys(v, []byte("w1"), func([]byte, int) error { n++; return nil }))
		if n != 167 {
			t.Fatalf("Keys in w1 = %d, want 167", n)
		}
		stop := errors.New("stop")
		if err := b.Keys(v, nil, func([]byte, int) error { return stop }); !errors.Is(err, stop) {
			t.Fatalf("Keys with failing fn = %v", err)
		}
	}
}

func (s *suite) testErrors(t *testing.T) {
	r := keygroup.RangeFor(0, 2, 128)
	b := s.backend(t, 128, r)
	ids := registerStd(t, b)
	if _, _, err := b.Get(ids[0], nil); !errors.Is(err, state.ErrNoCurrentKey) {
		t.Fatalf("Get without a key: %v", err)
	}
	if _, _, ok := b.CurrentKey(); ok {
		t.Fatal("CurrentKey ok before SetCurrentKey")
	}
	// A key of another subtask's key group.
	var other string
	for i := 0; ; i++ {
		other = fmt.Sprint(i)
		if !r.Contains(keygroup.Of([]byte(other), 128)) {
			break
		}
	}
	setKey(b, other)
	if err := b.Put(ids[0], nil, []byte("x")); !errors.Is(err, state.ErrKeyGroupOutOfRange) {
		t.Fatalf("Put out of range: %v", err)
	}
	if err := b.Timers().RegisterEventTimer(1, []byte(other), keygroup.Of([]byte(other), 128), nil); !errors.Is(err, state.ErrKeyGroupOutOfRange) {
		t.Fatalf("timer out of range: %v", err)
	}
	var mine string
	for i := 0; ; i++ {
		mine = fmt.Sprint("mine", i)
		if r.Contains(keygroup.Of([]byte(mine), 128)) {
			break
		}
	}
	setKey(b, mine)
	if err := b.Put(state.StateID(99), nil, nil); !errors.Is(err, state.ErrUnknownState) {
		t.Fatalf("unknown id: %v", err)
	}
	checks := []struct {
		name string
		err  error
	}{
		{"Get on list", func() error { _, _, err := b.Get(ids[2], nil); return err }()},
		{"Put on map", b.Put(ids[3], nil, nil)},
		{"ListAppend on value", b.ListAppend(ids[0], nil, nil)},
		{"ListGet on map", b.ListGet(ids[3], nil, func([]byte) error { return nil })},
		{"ListUpdate on value", b.ListUpdate(ids[0], nil, nil)},
		{"MapPut on list", b.MapPut(ids[2], nil, nil, nil)},
		{"MapGet on value", func() error { _, _, err := b.MapGet(ids[1], nil, nil); return err }()},
		{"MapDelete on value", b.MapDelete(ids[0], nil, nil)},
		{"MapIterate on list", b.MapIterate(ids[2], nil, func(_, _ []byte) error { return nil })},
	}
	for _, c := range checks {
		if !errors.Is(c.err, state.ErrWrongKind) {
			t.Errorf("%s: %v, want ErrWrongKind", c.name, c.err)
		}
	}
	if id, err := b.Register(state.StateDesc{Name: "v", Kind: state.KindValue}); err != nil || id != ids[0] {
		t.Fatalf("re-register: %v %v", id, err)
	}
	if _, err := b.Register(state.StateDesc{Name: "v", Kind: state.KindList}); !errors.Is(err, state.ErrWrongKind) {
		t.Fatalf("re-register with another kind: %v", err)
	}
	if _, err := b.Register(state.StateDesc{Name: "", Kind: state.KindList}); err == nil {
		t.Fatal("empty name accepted")
	}
	if _, err := b.Register(state.StateDesc{Name: "x", Kind: 9}); err == nil {
		t.Fatal("bad kind accepted")
	}
	if _, err := s.f.NewKeyed(state.KeyedOptions{KeyGroups: keygroup.Range{Start: 0, End: 128}, MaxParallelism: 128}); err == nil {
		t.Fatal("range beyond max parallelism accepted")
	}
}

func (s *suite) testInputsCopied(t *testing.T) {
	b := s.backend(t, 128, all(128))
	ids := registerStd(t, b)
	key := []byte("key")
	kg := keygroup.Of(key, 128)
	b.SetCurrentKey(key, kg)
	copy(key, "xxx") // the backend copied the key
	v := []byte("value")
	ns := []byte("w1")
	uk := []byte("uk")
	must(t, b.Put(ids[0], ns, v))
	must(t, b.ListAppend(ids[2], ns, v))
	must(t, b.ListUpdate(ids[2], nil, [][]byte{v}))
	must(t, b.MapPut(ids[3], ns, uk, v))
	must(t, b.Timers().RegisterEventTimer(5, []byte("key"), kg, ns))
	copy(v, "VALUE")
	copy(ns, "W1")
	copy(uk, "UK")
	b.SetCurrentKey([]byte("key"), kg)
	if got, _ := get(t, b, ids[0], "w1"); got != "value" {
		t.Fatalf("value = %q", got)
	}
	if got := list(t, b, ids[2], "w1"); !slices.Equal(got, []string{"value"}) {
		t.Fatalf("list = %q", got)
	}
	if got := list(t, b, ids[2], ""); !slices.Equal(got, []string{"value"}) {
		t.Fatalf("updated list = %q", got)
	}
	if got, _, _ := b.MapGet(ids[3], []byte("w1"), []byte("uk")); string(got) != "value" {
		t.Fatalf("map = %q", got)
	}
	d := dumpTimers(t, b)
	if _, ok := d[item{Kind: 'E', KG: kg, Key: "key", NS: "w1", TS: 5}]; !ok || len(d) != 1 {
		t.Fatalf("timers = %v", d)
	}
}

func (s *suite) testEventTimers(t *testing.T) {
	b := s.backend(t, 128, all(128))
	v := registerStd(t, b)[0]
	ts := b.Timers()
	if wm := ts.CurrentWatermark(); wm != math.MinInt64 {
		t.Fatalf("initial watermark %d", wm)
	}
	kg := func(k string) int { return keygroup.Of([]byte(k), 128) }
	reg := func(at int64, k, ns string) {
		t.Helper()
		must(t, ts.RegisterEventTimer(at, []byte(k), kg(k), []byte(ns)))
	}
	type fired struct {
		ts     int64
		key    string
		ns     string
		domain state.TimeDomain
	}
	var got []fired
	collect := func(tm state.Timer) error {
		k, g, ok := b.CurrentKey()
		if !ok || string(k) != string(tm.Key) || g != tm.KeyGroup || g != kg(string(tm.Key)) {
			t.Fatalf("current key %q/%d while firing %q/%d", k, g, tm.Key, tm.KeyGroup)
		}
		got = append(got, fired{tm.Timestamp, string(tm.Key), string(tm.Namespace), tm.Domain})
		return nil
	}
	reg(30, "a", "")
	reg(10, "b", "w")
	reg(20, "c", "")
	reg(10, "b", "w") // duplicate
	reg(10, "a", "")
	reg(20, "c", "x")
	reg(math.MinInt64, "min", "")
	must(t, ts.DeleteEventTimer(20, []byte("c"), kg("c"), []byte("x")))
	must(t, ts.DeleteEventTimer(99, []byte("c"), kg("c"), nil)) // absent: no-op
	must(t, ts.AdvanceWatermark(15, collect))
	want := []fired{{math.MinInt64, "min", "", state.EventTime}, {10, "a", "", state.EventTime}, {10, "b", "w", state.EventTime}}
	if !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	if wm := ts.CurrentWatermark(); wm != 15 {
		t.Fatalf("watermark %d", wm)
	}
	got = nil
	must(t, ts.AdvanceWatermark(15, collect))
	if len(got) != 0 {
		t.Fatalf("fired again: %v", got)
	}
	// A timer registered in the past fires at the next advance.
	reg(12, "late", "")
	// A callback may use state and register timers; due ones fire in the same call.
	must(t, ts.AdvanceWatermark(40, func(tm state.Timer) error {
		if err := collect(tm); err != nil {
			return err
		}
		if err := b.Put(v, nil, []byte(fmt.Sprint("fired@", tm.Timestamp))); err != nil {
			return err
		}
		if string(tm.Key) == "late" {
			reg(25, "new", "")
			reg(50, "future", "")
			must(t, ts.DeleteEventTimer(30, []byte("a"), kg("a"), nil))
		}
		return nil
	}))
	want = []fired{{12, "late", "", state.EventTime}, {20, "c", "", state.EventTime}, {25, "new", "", state.EventTime}}
	if !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}
	setKey(b, "new")
	if val, _ := get(t, b, v, ""); val != "fired@25" {
		t.Fatalf("state written by the callback = %q", val)
	}
	// The watermark does not go back.
	must(t, ts.AdvanceWatermark(10, collect))
	if wm := ts.CurrentWatermark(); wm != 40 {
		t.Fatalf("watermark went back to %d", wm)
	}
	// Re-entrant firing is refused; errors stop the firing and are returned.
	reg(60, "e1", "")
	reg(61, "e2", "")
	boom := errors.New("boom")
	err := ts.AdvanceWatermark(100, func(tm state.Timer) error {
		if err := ts.AdvanceWatermark(200, collect); !errors.Is(err, state.ErrReentrant) {
			t.Fatalf("re-entrant AdvanceWatermark: %v", err)
		}
		if err := ts.FireProcessingTimers(200, collect); !errors.Is(err, state.ErrReentrant) {
			t.Fatalf("re-entrant FireProcessingTimers: %v", err)
		}
		if tm.Timestamp == 60 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("AdvanceWatermark = %v, want boom", err)
	}
	got = nil
	must(t, ts.AdvanceWatermark(100, collect))
	want = []fired{{61, "e2", "", state.EventTime}}
	if !slices.Equal(got, want) {
		t.Fatalf("after the failing callback fired %v, want %v (50 fired already)", got, want)
	}
}

func (s *suite) testProcessingTimers(t *testing.T) {
	b := s.backend(t, 128, all(128))
	ts := b.Timers()
	if _, ok := ts.NextProcessingTimer(); ok {
		t.Fatal("fresh backend has a processing timer")
	}
	kg := func(k string) int { return keygroup.Of([]byte(k), 128) }
	reg := func(at int64, k, ns string) {
		t.Helper()
		must(t, ts.RegisterProcessingTimer(at, []byte(k), kg(k), []byte(ns)))
	}
	reg(100, "a", "")
	reg(50, "b", "")
	reg(50, "b", "") // duplicate
	reg(70, "c", "n")
	// Event and processing timers are separate.
	must(t, ts.RegisterEventTimer(50, []byte("b"), kg("b"), nil))
	if next, ok := ts.NextProcessingTimer(); !ok || next != 50 {
		t.Fatalf("next = %d %v", next, ok)
	}
	must(t, ts.DeleteProcessingTimer(50, []byte("b"), kg("b"), nil))
	if next, _ := ts.NextProcessingTimer(); next != 70 {
		t.Fatalf("next after delete = %d", next)
	}
	var got []string
	fire := func(tm state.Timer) error {
		if k, _, _ := b.CurrentKey(); string(k) != string(tm.Key) {
			t.Fatalf("current key %q firing %q", k, tm.Key)
		}
		if tm.Domain != state.ProcessingTime {
			t.Fatalf("domain %v", tm.Domain)
		}
		got = append(got, fmt.Sprintf("%d/%s/%s", tm.Timestamp, tm.Key, tm.Namespace))
		return nil
	}
	must(t, ts.FireProcessingTimers(80, fire))
	if !slices.Equal(got, []string{"70/c/n"}) {
		t.Fatalf("fired %q", got)
	}
	must(t, ts.FireProcessingTimers(80, fire))
	if len(got) != 1 {
		t.Fatalf("fired twice: %q", got)
	}
	if next, _ := ts.NextProcessingTimer(); next != 100 {
		t.Fatalf("next = %d", next)
	}
	must(t, ts.FireProcessingTimers(1000, fire))
	if !slices.Equal(got, []string{"70/c/n", "100/a/"}) {
		t.Fatalf("fired %q", got)
	}
	if _, ok := ts.NextProcessingTimer(); ok {
		t.Fatal("timers left")
	}
	// The event timer is still there.
	n := 0
	must(t, ts.AdvanceWatermark(50, func(state.Timer) error { n++; return nil }))
	if n != 1 {
		t.Fatalf("event timers fired: %d", n)
	}
}

func (s *suite) testTimerOrderRandom(t *testing.T) {
	b := s.backend(t, 128, all(128))
	rng := rand.New(rand.NewPCG(7, 8))
	want := dump{}
	for i := range 3000 {
		k := fmt.Sprint("k", rng.IntN(200))
		kg := keygroup.Of([]byte(k), 128)
		at := int64(rng.IntN(1000)) - 500
		switch i % 100 {
		case 0:
			at = math.MaxInt64
		case 1:
			at = math.MinInt64
		}
		ns := namespaces[rng.IntN(3)]
		it := item{Kind: 'E', KG: kg, Key: k, NS: ns, TS: at}
		if rng.IntN(5) == 0 {
			must(t, b.Timers().DeleteEventTimer(at, []byte(k), kg, []byte(ns)))
			delete(want, it)
			continue
		}
		must(t, b.Timers().RegisterEventTimer(at, []byte(k), kg, []byte(ns)))
		want[it] = ""
		pt := it
		pt.Kind = 'P'
		must(t, b.Timers().RegisterProcessingTimer(at, []byte(k), kg, []byte(ns)))
		want[pt] = ""
	}
	compare(t, "timers", dumpTimers(t, b), want)
}

// testSnapshotRestore: snapshot, update further, restore into a fresh backend: exactly
// the snapshot's state and timers; the original keeps its later updates.
func (s *suite) testSnapshotRestore(t *testing.T) {
	store := NewMemStore()
	b := s.backend(t, 128, all(128), noInline)
	w := newWorkload(t, b, 1, 400)
	w.run(6000)
	want := w.m.clone()
	h := snapshot(t, b, store, 1)
	if h == nil || len(files(h)) == 0 {
		t.Fatalf("expected a handle with files, got %v", h)
	}
	var size int64
	for _, f := range files(h) {
		if f.GetPath() == "" || len(f.GetInlineData()) != 0 || f.GetSize() <= 0 || len(f.GetSha256()) != 32 {
			t.Fatalf("inlining is off: expected stored files with size and SHA-256, got %v", f)
		}
		size += f.GetSize()
	}
	if h.GetKeyGroupStart() != 0 || h.GetKeyGroupEnd() != 127 {
		t.Fatalf("handle covers [%d, %d]", h.GetKeyGroupStart(), h.GetKeyGroupEnd())
	}
	if h.GetFile() != nil && len(h.GetKeyGroupOffsets()) != 128 {
		t.Fatalf("full-snapshot handle has %d key-group offsets", len(h.GetKeyGroupOffsets()))
	}
	if h.GetBackend() != s.f.Name() || h.GetFullSize() != size || h.GetIncrementalSize() <= 0 || h.GetIncrementalSize() > size {
		t.Fatalf("handle metadata: backend %q full size %d incremental size %d, files of %d bytes", h.GetBackend(), h.GetFullSize(), h.GetIncrementalSize(), size)
	}
	w.run(6000)
	after := w.m.clone()
	r := s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{h}, store)
	compare(t, "restored", dumpAll(t, r), want)
	compare(t, "original after further updates", dumpAll(t, b), after)
	if p, _ := store.Pending(); p != 0 {
		t.Fatalf("%d files left open", p)
	}
	// A restored backend snapshots again to the same content.
	r2 := s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{h}, store)
	h2 := snapshot(t, r2, store, 2)
	compare(t, "restored twice", dumpAll(t, s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{h2}, store)), want)
	// Registering after the restore finds the restored states; the wrong kind fails.
	r3 := s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{h}, store)
	if _, err := r3.Register(state.StateDesc{Name: "l", Kind: state.KindMap}); !errors.Is(err, state.ErrWrongKind) {
		t.Fatalf("registering a restored state with another kind: %v", err)
	}
	// The same checkpoint through a directory store.
	dir := state.DirStore{Dir: t.TempDir()}
	b2 := s.backend(t, 128, all(128), noInline)
	w2 := newWorkload(t, b2, 1, 400)
	w2.run(6000)
	hd := snapshot(t, b2, dir, 3)
	compare(t, "restored from a directory", dumpAll(t, s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{hd}, dir)), w2.m)
}

func (s *suite) testSnapshotInline(t *testing.T) {
	store := NewMemStore()
	b := s.backend(t, 128, all(128))
	w := newWorkload(t, b, 2, 10)
	w.run(30)
	h := snapshot(t, b, store, 1)
	if h == nil || len(files(h)) == 0 {
		t.Fatalf("no snapshot: %v", h)
	}
	// Every file is inline, except shared files (which later checkpoints reference).
	var shared []string
	for _, f := range h.GetSharedFiles() {
		shared = append(shared, f.GetPath())
	}
	for _, f := range unshared(h) {
		if f.GetPath() != "" || len(f.GetInlineData()) == 0 {
			t.Fatalf("small snapshot not inlined: %v", h)
		}
		if int64(len(f.GetInlineData())) != f.GetSize() || len(f.GetSha256()) != 32 {
			t.Fatal("inline file lacks size or sha256")
		}
	}
	if !slices.Equal(store.Paths(), slices.Sorted(slices.Values(shared))) {
		t.Fatalf("inline snapshot wrote files %v (shared files %v)", store.Paths(), shared)
	}
	var rd state.StateReader // inline files need no reader
	if len(shared) > 0 {
		rd = store
	}
	compare(t, "restored inline", dumpAll(t, s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{h}, rd)), w.m)
	// A threshold: the same state with a tiny threshold goes to a file.
	b2 := s.backend(t, 128, all(128), func(o *state.KeyedOptions) { o.InlineThreshold = 64 })
	w2 := newWorkload(t, b2, 2, 10)
	w2.run(30)
	h2 := snapshot(t, b2, store, 1)
	stored := false
	for _, f := range unshared(h2) {
		stored = stored || f.GetPath() != ""
	}
	if !stored {
		t.Fatal("snapshot above the threshold was inlined")
	}
}

// testAsyncConcurrent runs asynchronous phases while the task goroutine keeps updating,
// with two overlapping snapshots per round finishing in different orders: both run
// concurrently; the older completes before the newer starts; the newer completes first.
func (s *suite) testAsyncConcurrent(t *testing.T) {
	store := NewMemStore()
	b := s.backend(t, 128, all(128))
	w := newWorkload(t, b, 3, 300)
	w.run(4000)
	for round := range 3 {
		want := []dump{w.m.clone()}
		s1, err := b.Snapshot(int64(2*round + 1))
		must(t, err)
		w.run(500)
		want = append(want, w.m.clone())
		s2, err := b.Snapshot(int64(2*round + 2))
		must(t, err)
		if st := s2.Stats(); st.Timers == 0 || st.Entries == 0 || st.CheckpointID != int64(2*round+2) {
			t.Fatalf("stats %+v", st)
		}
		snaps := []state.AsyncSnapshot{s1, s2}
		hs := make([]*sluicev1.KeyedStateHandle, 2)
		errs := make([]error, 2)
		var async []int // run concurrently with updates
		switch round {
		case 0:
			async = []int{0, 1}
		case 1:
			hs[0], errs[0] = s1.Run(context.Background(), store)
			w.run(500)
			async = []int{1}
		case 2:
			hs[1], errs[1] = s2.Run(context.Background(), store)
			w.run(500)
			async = []int{0}
		}
		var wg sync.WaitGroup
		done := make(chan struct{})
		for _, i := range async {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hs[i], errs[i] = snaps[i].Run(context.Background(), store)
			}()
		}
		go func() { wg.Wait(); close(done) }()
		// Keep updating (including deletes and timer firing) until the runs are done.
	loop:
		for i := 0; ; i++ {
			w.step()
			if i > 3000 {
				select {
				case <-done:
					break loop
				default:
				}
			}
		}
		for i := range 2 {
			must(t, errs[i])
			compare(t, fmt.Sprintf("round %d snapshot %d", round, i), dumpAll(t, s.restore(t, 128, all(128), hs[i:i+1], store)), want[i])
		}
	}
	// The live backend is still right.
	compare(t, "live backend", dumpAll(t, b), w.m.clone())
}

func (s *suite) testReleaseCancel(t *testing.T) {
	store := NewMemStore()
	b := s.backend(t, 128, all(128), noInline)
	w := newWorkload(t, b, 4, 200)
	w.run(2000)
	sn, err := b.Snapshot(1)
	must(t, err)
	sn.Release()
	sn.Release() // idempotent
	w.run(2000)
	if _, err := sn.Run(context.Background(), store); err == nil {
		t.Fatal("Run after Release succeeded")
	}
	// A cancelled Run fails and leaves no file behind.
	sn, err = b.Snapshot(2)
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sn.Run(ctx, store); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Run: %v", err)
	}
	if p, _ := store.Pending(); p != 0 {
		t.Fatalf("%d files left open", p)
	}
	if len(store.Paths()) != 0 {
		t.Fatalf("cancelled snapshot left files %v", store.Paths())
	}
	if _, err := sn.Run(context.Background(), store); err == nil {
		t.Fatal("second Run succeeded")
	}
	// Later snapshots are fine.
	want := w.m.clone()
	h := snapshot(t, b, store, 3)
	compare(t, "after release and cancel", dumpAll(t, s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{h}, store)), want)
}

// testRescale: 1 -> 3 -> 2 -> 1 subtasks; every backend sees exactly its key groups'
// state and timers, restoring from whichever handles intersect its range.
func (s *suite) testRescale(t *testing.T, maxP int) {
	store := NewMemStore()
	src := s.backend(t, maxP, all(maxP), noInline)
	w := newWorkload(t, src, 5, 2000)
	w.maxV = 20
	w.run(15000)
	want := w.m.clone()
	handles := []*sluicev1.KeyedStateHandle{snapshot(t, src, store, 1)}
	for _, p := range []int{3, 2, 1} {
		var next []*sluicev1.KeyedStateHandle
		for i := range p {
			r := keygroup.RangeFor(i, p, maxP)
			var mine []*sluicev1.KeyedStateHandle
			for _, h := range handles {
				hr := keygroup.Range{Start: int(h.GetKeyGroupStart()), End: int(h.GetKeyGroupEnd())}
				if hr.Intersect(r).Len() > 0 {
					mine = append(mine, h)
				}
			}
			b := s.restore(t, maxP, r, mine, store)
			wantSt, wantTimers := want.filter(r).split()
			if len(wantSt) == 0 {
				t.Fatalf("p=%d subtask %d: no state in %v: test too small", p, i, r)
			}
			compare(t, fmt.Sprintf("maxP %d p %d subtask %d %v state", maxP, p, i, r), dumpState(t, b), wantSt)
			// Restoring from all handles gives the same: clipping to the range is the
			// backend's job.
			if p == 3 && i == 1 {
				b2 := s.restore(t, maxP, r, handles, store)
				compare(t, "restore from all handles", dumpState(t, b2), wantSt)
			}
			h := snapshot(t, b, store, int64(p*10+i))
			if h == nil {
				t.Fatalf("p=%d subtask %d: nil handle", p, i)
			}
			if int(h.GetKeyGroupStart()) != r.Start || int(h.GetKeyGroupEnd()) != r.End {
				t.Fatalf("handle covers [%d, %d], want %v", h.GetKeyGroupStart(), h.GetKeyGroupEnd(), r)
			}
			next = append(next, h)
			compare(t, fmt.Sprintf("maxP %d p %d subtask %d timers", maxP, p, i), dumpTimers(t, b), wantTimers)
		}
		handles = next
	}
}

func (s *suite) testMerge(t *testing.T) {
	store := NewMemStore()
	want := dump{}
	var hs []*sluicev1.KeyedStateHandle
	for i := range 2 {
		r := keygroup.RangeFor(i, 2, 128)
		b := s.backend(t, 128, r)
		w := newWorkload(t, b, uint64(10+i), 500)
		w.run(3000)
		for k, v := range w.m {
			want[k] = v
		}
		hs = append(hs, snapshot(t, b, store, 1))
	}
	b := s.restore(t, 128, all(128), hs, store)
	compare(t, "merged", dumpAll(t, b), want)
}

func (s *suite) testRestoreErrors(t *testing.T) {
	store := NewMemStore()
	b := s.backend(t, 128, all(128), noInline)
	w := newWorkload(t, b, 6, 100)
	w.run(500)
	h := snapshot(t, b, store, 1)
	ctx := context.Background()
	// Max parallelism is fixed for the life of keyed state.
	other := s.backend(t, 256, all(256))
	h256 := proto1(h)
	h256.KeyGroupEnd = 255
	if len(h256.KeyGroupOffsets) > 0 {
		h256.KeyGroupOffsets = make([]int64, 256)
	}
	if err := other.Restore(ctx, []*sluicev1.KeyedStateHandle{h256}, store); err == nil || !strings.Contains(err.Error(), "max parallelism") {
		t.Fatalf("restore at another max parallelism: %v", err)
	}
	// Two handles for the same key groups.
	if err := s.backend(t, 128, all(128)).Restore(ctx, []*sluicev1.KeyedStateHandle{h, h}, store); err == nil {
		t.Fatal("overlapping handles accepted")
	}
	// A missing file.
	gone := proto1(h)
	stored(t, gone).Path = "nowhere/x"
	if err := s.backend(t, 128, all(128)).Restore(ctx, []*sluicev1.KeyedStateHandle{gone}, store); err == nil || !strings.Contains(err.Error(), "nowhere/x") {
		t.Fatalf("missing file: %v", err)
	}
	if len(h.GetKeyGroupOffsets()) > 0 {
		// Tampered offsets (of a full-snapshot file).
		off := proto1(h)
		off.KeyGroupOffsets[3]++
		if err := s.backend(t, 128, all(128)).Restore(ctx, []*sluicev1.KeyedStateHandle{off}, store); !errors.Is(err, state.ErrCorrupt) {
			t.Fatalf("tampered offsets: %v", err)
		}
		short := proto1(h)
		short.KeyGroupOffsets = short.KeyGroupOffsets[:5]
		if err := s.backend(t, 128, all(128)).Restore(ctx, []*sluicev1.KeyedStateHandle{short}, store); err == nil {
			t.Fatal("short offsets accepted")
		}
	}
	// A handle whose range disagrees with the file's.
	rng := proto1(h)
	rng.KeyGroupEnd = 100
	if len(rng.KeyGroupOffsets) > 0 {
		rng.KeyGroupOffsets = rng.KeyGroupOffsets[:101]
	}
	if err := s.backend(t, 128, all(128)).Restore(ctx, []*sluicev1.KeyedStateHandle{rng}, store); !errors.Is(err, state.ErrCorrupt) {
		t.Fatalf("range mismatch: %v", err)
	}
}

// proto1 deep-copies a handle for the tests to tamper with it.
func proto1(h *sluicev1.KeyedStateHandle) *sluicev1.KeyedStateHandle {
	return proto.Clone(h).(*sluicev1.KeyedStateHandle)
}

// files lists every file of a handle: the full-snapshot file, the shared files, the
// private files.
func files(h *sluicev1.KeyedStateHandle) []*sluicev1.StateFile {
	var fs []*sluicev1.StateFile
	if h.GetFile() != nil {
		fs = append(fs, h.GetFile())
	}
	fs = append(fs, h.GetSharedFiles()...)
	return append(fs, h.GetPrivateFiles()...)
}

// unshared lists the files of a handle that are its own (not shared files).
func unshared(h *sluicev1.KeyedStateHandle) []*sluicev1.StateFile {
	var fs []*sluicev1.StateFile
	if h.GetFile() != nil {
		fs = append(fs, h.GetFile())
	}
	return append(fs, h.GetPrivateFiles()...)
}

// stored returns the first file of h that is stored rather than inline.
func stored(t testing.TB, h *sluicev1.KeyedStateHandle) *sluicev1.StateFile {
	t.Helper()
	for _, f := range files(h) {
		if f.GetPath() != "" {
			return f
		}
	}
	t.Fatalf("handle has no stored file: %v", h)
	return nil
}

// largest returns the largest stored file of h (the full-snapshot file, or the bulk of
// an incremental backend's data).
func largest(t testing.TB, h *sluicev1.KeyedStateHandle) *sluicev1.StateFile {
	t.Helper()
	var l *sluicev1.StateFile
	for _, f := range files(h) {
		if f.GetPath() != "" && (l == nil || f.GetSize() > l.GetSize()) {
			l = f
		}
	}
	if l == nil {
		t.Fatalf("handle has no stored file: %v", h)
	}
	return l
}

func (s *suite) testCorrupt(t *testing.T) {
	store := NewMemStore()
	b := s.backend(t, 128, all(128), noInline)
	w := newWorkload(t, b, 7, 300)
	w.run(3000)
	h := snapshot(t, b, store, 1)
	path := largest(t, h).GetPath()
	orig := store.Bytes(path)
	ctx := context.Background()
	restore := func(rd state.StateReader, h *sluicev1.KeyedStateHandle) error {
		return s.backend(t, 128, all(128)).Restore(ctx, []*sluicev1.KeyedStateHandle{h}, rd)
	}
	expectCorrupt := func(what string, err error, name string) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: restore succeeded", what)
		}
		if !errors.Is(err, state.ErrCorrupt) {
			t.Fatalf("%s: error %q does not wrap ErrCorrupt", what, err)
		}
		if !strings.Contains(err.Error(), name) {
			t.Fatalf("%s: error %q does not name %s", what, err, name)
		}
	}
	// Verified reads: a flipped byte anywhere and a truncated file are caught by the
	// SHA-256 and size checks.
	for _, pos := range []int{0, 9, len(orig) / 3, len(orig) / 2, len(orig) - 1} {
		bad := slices.Clone(orig)
		bad[pos] ^= 0x20
		store.Set(path, bad)
		expectCorrupt(fmt.Sprintf("byte %d flipped", pos), restore(store, h), path)
	}
	store.Set(path, orig[:len(orig)-7])
	expectCorrupt("truncated", restore(store, h), path)
	if err := restore(store, h); !strings.Contains(err.Error(), "size") {
		t.Fatalf("truncation error %q does not mention the size", err)
	}
	// Unverified reads: the format's own checksums, or the backend's own verification,
	// catch what the hash would have.
	trusting := NewMemStore()
	trusting.Trusting = true
	for _, p := range store.Paths() {
		trusting.Set(p, store.Bytes(p))
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range 200 {
		pos := rng.IntN(len(orig))
		if i < 40 {
			pos = len(orig) - 1 - i // the footer and trailer
		}
		bad := slices.Clone(orig)
		bad[pos] ^= byte(1 + rng.IntN(255))
		trusting.Set(path, bad)
		expectCorrupt(fmt.Sprintf("unverified, byte %d of %d changed", pos, len(orig)), restore(trusting, h), path)
	}
	for _, n := range []int{0, 1, 20, len(orig) / 2, len(orig) - 1} {
		trusting.Set(path, orig[:n])
		expectCorrupt(fmt.Sprintf("unverified, truncated to %d", n), restore(trusting, h), path)
	}
	// Inline data is verified too.
	bi := s.backend(t, 128, all(128))
	wi := newWorkload(t, bi, 8, 5)
	wi.run(20)
	hi := snapshot(t, bi, store, 2)
	var inline *sluicev1.StateFile
	bad := proto1(hi)
	for _, f := range files(bad) {
		if len(f.GetInlineData()) > 0 && inline == nil {
			inline = f
		}
	}
	if inline == nil {
		t.Fatal("expected inline data")
	}
	inline.InlineData[len(inline.InlineData)/2] ^= 1
	expectCorrupt("inline", restore(store, bad), "<inline>")
}

func (s *suite) testEmpty(t *testing.T) {
	store := NewMemStore()
	ctx := context.Background()
	b := s.backend(t, 128, all(128))
	registerStd(t, b)
	h := snapshot(t, b, store, 1)
	r := s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{h}, store)
	compare(t, "empty", dumpAll(t, r), dump{})
	// State that was written and then removed.
	w := newWorkload(t, b, 9, 20)
	w.run(200)
	for _, k := range w.keys {
		setKey(b, k)
		for _, id := range w.ids {
			for _, ns := range namespaces {
				must(t, b.Delete(id, []byte(ns)))
			}
		}
	}
	must(t, b.Timers().AdvanceWatermark(math.MaxInt64, func(state.Timer) error { return nil }))
	must(t, b.Timers().FireProcessingTimers(math.MaxInt64, func(state.Timer) error { return nil }))
	h = snapshot(t, b, store, 2)
	compare(t, "emptied", dumpAll(t, s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{h}, store)), dump{})
	// No handles at all, and nil handles.
	must(t, s.backend(t, 128, all(128)).Restore(ctx, nil, nil))
	must(t, s.backend(t, 128, all(128)).Restore(ctx, []*sluicev1.KeyedStateHandle{nil}, nil))
	// An empty snapshot of a range that restores into a wider backend.
	e := s.backend(t, 128, keygroup.RangeFor(1, 4, 128), noInline)
	he := snapshot(t, e, store, 3)
	compare(t, "empty part", dumpAll(t, s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{he}, store)), dump{})
}

func (s *suite) testLarge(t *testing.T) {
	store := NewMemStore()
	b := s.backend(t, 128, all(128))
	ids := registerStd(t, b)
	big := func(seed byte) []byte {
		// Random bytes: a backend that compresses cannot shrink them.
		v := make([]byte, 1<<20)
		rand.NewChaCha8([32]byte{seed}).Read(v)
		return v
	}
	setKey(b, "big")
	must(t, b.Put(ids[0], nil, big(1)))
	must(t, b.ListAppend(ids[2], nil, big(2)))
	must(t, b.ListAppend(ids[2], nil, []byte("small")))
	must(t, b.ListAppend(ids[2], nil, big(3)))
	must(t, b.MapPut(ids[3], nil, []byte("uk"), big(4)))
	must(t, b.Timers().RegisterEventTimer(1, bytes.Repeat([]byte("K"), 4096), keygroup.Of(bytes.Repeat([]byte("K"), 4096), 128), big(5)[:65536]))
	setKey(b, "small")
	must(t, b.Put(ids[0], nil, []byte("s")))
	h := snapshot(t, b, store, 1)
	if h.GetFullSize() < 4<<20 {
		t.Fatalf("snapshot of 4 MiB of values is %d bytes", h.GetFullSize())
	}
	r := s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{h}, store)
	setKey(r, "big")
	if v, _, _ := r.Get(ids[0], nil); !bytes.Equal(v, big(1)) {
		t.Fatal("large value differs")
	}
	var elems [][]byte
	must(t, r.ListGet(ids[2], nil, func(v []byte) error { elems = append(elems, bytes.Clone(v)); return nil }))
	if len(elems) != 3 || !bytes.Equal(elems[0], big(2)) || string(elems[1]) != "small" || !bytes.Equal(elems[2], big(3)) {
		t.Fatal("large list differs")
	}
	if v, _, _ := r.MapGet(ids[3], nil, []byte("uk")); !bytes.Equal(v, big(4)) {
		t.Fatal("large map value differs")
	}
	n := 0
	must(t, r.Timers().AdvanceWatermark(1, func(tm state.Timer) error {
		n++
		if len(tm.Key) != 4096 || !bytes.Equal(tm.Namespace, big(5)[:65536]) {
			t.Fatal("large timer differs")
		}
		return nil
	}))
	if n != 1 {
		t.Fatalf("%d timers", n)
	}
}

// savepointOf takes the synchronous phase of a savepoint of b in format: through
// state.SavepointSnapshotter when b has it, else (canonical only) through Snapshot.
func savepointOf(t testing.TB, b state.KeyedBackend, id int64, format state.SnapshotFormat) state.AsyncSnapshot {
	t.Helper()
	var sn state.AsyncSnapshot
	var err error
	if sp, ok := b.(state.SavepointSnapshotter); ok {
		sn, err = sp.SnapshotSavepoint(id, format)
	} else {
		sn, err = b.Snapshot(id)
	}
	must(t, err)
	return sn
}

// notify tells b that checkpoint (or savepoint) id completed, if it listens.
func notify(b state.KeyedBackend, id int64) {
	if l, ok := b.(state.CheckpointListener); ok {
		l.NotifyCheckpointComplete(id)
	}
}

// testSavepoint: a savepoint holds the state of its synchronous phase, references no
// shared file and no file of an earlier snapshot, and no later snapshot references its
// files (its completion notwithstanding). In the canonical format (every backend) it is
// one full-snapshot file that the heap backend and this backend restore, at the same
// parallelism and split; in the native format (backends implementing
// state.SavepointSnapshotter) this backend restores it the same way.
func (s *suite) testSavepoint(t *testing.T) {
	formats := []state.SnapshotFormat{state.FormatCanonical}
	if _, ok := s.backend(t, 128, all(128)).(state.SavepointSnapshotter); ok {
		formats = append(formats, state.FormatNative)
	}
	for _, format := range formats {
		t.Run(format.String(), func(t *testing.T) {
			store := NewMemStore()
			b := s.backend(t, 128, all(128), noInline)
			w := newWorkload(t, b, 21, 400)
			w.run(6000)
			before := snapshot(t, b, store, 1)
			notify(b, 1)
			w.run(300)
			want := w.m.clone()
			sn := savepointOf(t, b, 2, format)
			w.run(1000) // after the synchronous phase: not in the savepoint
			h, err := sn.Run(context.Background(), store)
			must(t, err)
			notify(b, 2)
			w.run(300)
			after := snapshot(t, b, store, 3)
			notify(b, 3)
			w.run(300)
			later := snapshot(t, b, store, 4)

			if h == nil || len(files(h)) == 0 {
				t.Fatalf("savepoint handle %v", h)
			}
			if len(h.GetSharedFiles()) > 0 {
				t.Fatalf("the savepoint references %d shared files", len(h.GetSharedFiles()))
			}
			mine := map[string]bool{}
			for _, f := range files(h) {
				if f.GetPath() == "" {
					t.Fatalf("inlining is off, the savepoint has an inline file")
				}
				mine[f.GetPath()] = true
			}
			for _, f := range files(before) {
				if mine[f.GetPath()] {
					t.Fatalf("the savepoint references %s of an earlier snapshot", f.GetPath())
				}
			}
			for _, o := range []*sluicev1.KeyedStateHandle{after, later} {
				for _, f := range files(o) {
					if mine[f.GetPath()] {
						t.Fatalf("a later snapshot references the savepoint's file %s", f.GetPath())
					}
				}
			}
			if format == state.FormatCanonical {
				if h.GetFile() == nil || len(h.GetKeyGroupOffsets()) != 128 || len(h.GetPrivateFiles()) > 0 ||
					h.GetBackend() != fullsnap.HandleBackend || h.GetIncrementalSize() != h.GetFullSize() {
					t.Fatalf("canonical savepoint handle: file %v, %d offsets, %d private files, backend %q, sizes %d/%d", h.GetFile() != nil,
						len(h.GetKeyGroupOffsets()), len(h.GetPrivateFiles()), h.GetBackend(), h.GetIncrementalSize(), h.GetFullSize())
				}
				hb, err := heap.New(state.KeyedOptions{OperatorUID: "op/1", KeyGroups: all(128), MaxParallelism: 128})
				must(t, err)
				must(t, hb.Restore(context.Background(), []*sluicev1.KeyedStateHandle{h}, store))
				compare(t, "canonical savepoint restored by the heap backend", dumpAll(t, hb), want)
				r := keygroup.RangeFor(1, 2, 128)
				hs, err := heap.New(state.KeyedOptions{OperatorUID: "op/1", KeyGroups: r, MaxParallelism: 128})
				must(t, err)
				must(t, hs.Restore(context.Background(), []*sluicev1.KeyedStateHandle{h}, store))
				compare(t, "canonical savepoint restored by the heap backend, split", dumpAll(t, hs), want.filter(r))
			}
			compare(t, "savepoint restored", dumpAll(t, s.restore(t, 128, all(128), []*sluicev1.KeyedStateHandle{h}, store)), want)
			r := keygroup.RangeFor(0, 2, 128)
			compare(t, "savepoint restored, split", dumpAll(t, s.restore(t, 128, r, []*sluicev1.KeyedStateHandle{h}, store)), want.filter(r))
			if p, _ := store.Pending(); p != 0 {
				t.Fatalf("%d files left open", p)
			}
		})
	}
}
