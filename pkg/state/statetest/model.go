package statetest

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// item is one entry of a dump: a value ('V'), a list ('L', the encoded list), a map
// entry ('M') or a timer ('E' event time, 'P' processing time).
type item struct {
	Kind  byte
	State string
	KG    int
	Key   string
	NS    string
	UK    string
	TS    int64
}

func (it item) String() string {
	switch it.Kind {
	case 'E', 'P':
		return fmt.Sprintf("%c timer ts=%d key=%q ns=%q kg=%d", it.Kind, it.TS, it.Key, it.NS, it.KG)
	case 'M':
		return fmt.Sprintf("M %s key=%q ns=%q uk=%q kg=%d", it.State, it.Key, it.NS, it.UK, it.KG)
	}
	return fmt.Sprintf("%c %s key=%q ns=%q kg=%d", it.Kind, it.State, it.Key, it.NS, it.KG)
}

// dump is the whole content of a backend, comparable with ==-semantics per item.
type dump map[item]string

func (d dump) clone() dump {
	c := make(dump, len(d))
	for k, v := range d {
		c[k] = v
	}
	return c
}

// filter keeps the items of the key groups in r.
func (d dump) filter(r keygroup.Range) dump {
	c := dump{}
	for k, v := range d {
		if r.Contains(k.KG) {
			c[k] = v
		}
	}
	return c
}

// split separates state items from timers.
func (d dump) split() (st, timers dump) {
	st, timers = dump{}, dump{}
	for k, v := range d {
		if k.Kind == 'E' || k.Kind == 'P' {
			timers[k] = v
		} else {
			st[k] = v
		}
	}
	return st, timers
}

// compare reports the differences between got and want (at most 10).
func compare(t testing.TB, what string, got, want dump) {
	t.Helper()
	var diffs []string
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("missing %v", k))
		case g != w:
			diffs = append(diffs, fmt.Sprintf("%v = %s, want %s", k, abbrev(g), abbrev(w)))
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("unexpected %v = %s", k, abbrev(g)))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		n := len(diffs)
		if n > 10 {
			diffs = diffs[:10]
		}
		t.Fatalf("%s: %d differences (%d items, want %d):\n  %s", what, n, len(got), len(want), strings.Join(diffs, "\n  "))
	}
}

func abbrev(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q...(%d bytes)", s[:40], len(s))
	}
	return fmt.Sprintf("%q", s)
}

// Standard states and namespaces of the suite.
var (
	stdStates = []state.StateDesc{
		{Name: "v", Kind: state.KindValue},
		{Name: "r", Kind: state.KindReducing},
		{Name: "l", Kind: state.KindList},
		{Name: "m", Kind: state.KindMap},
	}
	namespaces = []string{"", "w1", "window-2"}
)

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func setKey(b state.KeyedBackend, key string) int {
	kg := keygroup.Of([]byte(key), b.MaxParallelism())
	b.SetCurrentKey([]byte(key), kg)
	return kg
}

func registerStd(t testing.TB, b state.KeyedBackend) []state.StateID {
	t.Helper()
	ids := make([]state.StateID, len(stdStates))
	for i, d := range stdStates {
		id, err := b.Register(d)
		must(t, err)
		ids[i] = id
	}
	return ids
}

// dumpState reads every entry of the standard states (non-destructive).
func dumpState(t testing.TB, b state.KeyedBackend) dump {
	t.Helper()
	d := dump{}
	for _, desc := range stdStates {
		id, err := b.Register(desc)
		must(t, err)
		for _, ns := range namespaces {
			type kk struct {
				key string
				kg  int
			}
			var keys []kk
			must(t, b.Keys(id, []byte(ns), func(key []byte, kg int) error {
				keys = append(keys, kk{string(key), kg})
				return nil
			}))
			for _, k := range keys {
				if want := keygroup.Of([]byte(k.key), b.MaxParallelism()); want != k.kg {
					t.Fatalf("Keys reported key %q in key group %d, want %d", k.key, k.kg, want)
				}
				if !b.KeyGroups().Contains(k.kg) {
					t.Fatalf("Keys reported key %q of key group %d outside %v", k.key, k.kg, b.KeyGroups())
				}
				b.SetCurrentKey([]byte(k.key), k.kg)
				it := item{State: desc.Name, KG: k.kg, Key: k.key, NS: ns}
				switch desc.Kind {
				case state.KindValue, state.KindReducing:
					v, ok, err := b.Get(id, []byte(ns))
					must(t, err)
					if !ok {
						t.Fatalf("Keys reported %v but Get finds nothing", it)
					}
					it.Kind = 'V'
					d[it] = string(v)
				case state.KindList:
					var enc []byte
					must(t, b.ListGet(id, []byte(ns), func(v []byte) error {
						enc = state.AppendListElem(enc, v)
						return nil
					}))
					if len(enc) == 0 {
						t.Fatalf("Keys reported %v but the list is empty", it)
					}
					it.Kind = 'L'
					d[it] = string(enc)
				case state.KindMap:
					n := 0
					must(t, b.MapIterate(id, []byte(ns), func(uk, v []byte) error {
						n++
						mi := it
						mi.Kind, mi.UK = 'M', string(uk)
						d[mi] = string(v)
						return nil
					}))
					if n == 0 {
						t.Fatalf("Keys reported %v but the map is empty", it)
					}
				}
			}
		}
	}
	return d
}

// dumpTimers fires every timer (destructive), checking order and the current key.
func dumpTimers(t testing.TB, b state.KeyedBackend) dump {
	t.Helper()
	d := dump{}
	collect := func(kind byte) func(state.Timer) error {
		last := int64(math.MinInt64)
		return func(tm state.Timer) error {
			if tm.Timestamp < last {
				t.Fatalf("timer at %d fired after one at %d", tm.Timestamp, last)
			}
			last = tm.Timestamp
			if k, kg, ok := b.CurrentKey(); !ok || !bytes.Equal(k, tm.Key) || kg != tm.KeyGroup {
				t.Fatalf("firing timer of key %q: current key is %q (kg %d)", tm.Key, k, kg)
			}
			it := item{Kind: kind, KG: tm.KeyGroup, Key: string(tm.Key), NS: string(tm.Namespace), TS: tm.Timestamp}
			if _, dup := d[it]; dup {
				t.Fatalf("timer %v fired twice", it)
			}
			d[it] = ""
			return nil
		}
	}
	must(t, b.Timers().AdvanceWatermark(math.MaxInt64, collect('E')))
	must(t, b.Timers().FireProcessingTimers(math.MaxInt64, collect('P')))
	return d
}

// dumpAll is dumpState and dumpTimers.
func dumpAll(t testing.TB, b state.KeyedBackend) dump {
	t.Helper()
	d := dumpState(t, b)
	for k, v := range dumpTimers(t, b) {
		d[k] = v
	}
	return d
}

// workload applies random operations to a backend and to a model of it.
type workload struct {
	t     testing.TB
	rng   *rand.Rand
	b     state.KeyedBackend
	ids   []state.StateID
	m     dump
	nKeys int
	maxV  int
	wm    int64 // event-time watermark driven by the workload
	now   int64 // processing time
	keys  []string
}

func newWorkload(t testing.TB, b state.KeyedBackend, seed uint64, nKeys int) *workload {
	w := &workload{t: t, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), b: b, ids: registerStd(t, b), m: dump{}, nKeys: nKeys, maxV: 40}
	for i := range nKeys {
		k := fmt.Sprintf("key-%d", i)
		switch i % 5 {
		case 1:
			k += "\x00w1" // looks like a namespace suffix
		case 2:
			k = string([]byte{byte(i), byte(i >> 8), 0xff, 0})
		}
		w.keys = append(w.keys, k)
	}
	return w
}

// inRange picks keys of the backend's key groups only.
func (w *workload) key() (string, int) {
	for {
		k := w.keys[w.rng.IntN(len(w.keys))]
		kg := keygroup.Of([]byte(k), w.b.MaxParallelism())
		if w.b.KeyGroups().Contains(kg) {
			return k, kg
		}
	}
}

func (w *workload) value() []byte {
	v := make([]byte, w.rng.IntN(w.maxV+1))
	for i := range v {
		v[i] = byte(w.rng.IntN(256))
	}
	return v
}

// step applies one random operation.
func (w *workload) step() {
	t, b := w.t, w.b
	key, kg := w.key()
	b.SetCurrentKey([]byte(key), kg)
	ns := namespaces[w.rng.IntN(len(namespaces))]
	base := item{KG: kg, Key: key, NS: ns}
	vi := func(st int) item { it := base; it.Kind, it.State = 'V', stdStates[st].Name; return it }
	li := func() item { it := base; it.Kind, it.State = 'L', "l"; return it }
	mi := func(uk string) item { it := base; it.Kind, it.State, it.UK = 'M', "m", uk; return it }
	timer := func(kind byte, ts int64) item { it := base; it.Kind, it.TS = kind, ts; return it }
	switch op := w.rng.IntN(20); op {
	case 0, 1, 2: // value put
		st := op % 2
		v := w.value()
		must(t, b.Put(w.ids[st], []byte(ns), v))
		w.m[vi(st)] = string(v)
	case 3: // value delete
		st := w.rng.IntN(2)
		must(t, b.Delete(w.ids[st], []byte(ns)))
		delete(w.m, vi(st))
	case 4: // read-modify-write of the reducing state
		old, ok, err := b.Get(w.ids[1], []byte(ns))
		must(t, err)
		if want, wantOK := w.m[vi(1)]; ok != wantOK || string(old) != want {
			t.Fatalf("Get %v = %q, %v, want %q, %v", vi(1), old, ok, want, wantOK)
		}
		v := append(append([]byte(nil), old...), byte(w.rng.IntN(256)))
		must(t, b.Put(w.ids[1], []byte(ns), v))
		w.m[vi(1)] = string(v)
	case 5, 6, 7: // list append
		v := w.value()
		must(t, b.ListAppend(w.ids[2], []byte(ns), v))
		w.m[li()] = string(state.AppendListElem([]byte(w.m[li()]), v))
	case 8: // list update
		var vs [][]byte
		for range w.rng.IntN(3) {
			vs = append(vs, w.value())
		}
		must(t, b.ListUpdate(w.ids[2], []byte(ns), vs))
		if len(vs) == 0 {
			delete(w.m, li())
		} else {
			w.m[li()] = string(state.EncodeList(nil, vs))
		}
	case 9: // list delete
		must(t, b.Delete(w.ids[2], []byte(ns)))
		delete(w.m, li())
	case 10, 11, 12: // map put
		uk := fmt.Sprintf("uk%d", w.rng.IntN(6))
		v := w.value()
		must(t, b.MapPut(w.ids[3], []byte(ns), []byte(uk), v))
		w.m[mi(uk)] = string(v)
	case 13: // map delete
		uk := fmt.Sprintf("uk%d", w.rng.IntN(6))
		must(t, b.MapDelete(w.ids[3], []byte(ns), []byte(uk)))
		delete(w.m, mi(uk))
	case 14: // clear a whole map
		if w.rng.IntN(4) == 0 {
			must(t, b.Delete(w.ids[3], []byte(ns)))
			for k := range w.m {
				if k.Kind == 'M' && k.Key == key && k.NS == ns {
					delete(w.m, k)
				}
			}
		}
	case 15, 16: // event timer register or delete
		ts := w.wm + int64(w.rng.IntN(500))
		if w.rng.IntN(4) == 0 {
			must(t, b.Timers().DeleteEventTimer(ts, []byte(key), kg, []byte(ns)))
			delete(w.m, timer('E', ts))
		} else {
			must(t, b.Timers().RegisterEventTimer(ts, []byte(key), kg, []byte(ns)))
			w.m[timer('E', ts)] = ""
		}
	case 17: // processing timer register or delete
		ts := w.now + int64(w.rng.IntN(500))
		if w.rng.IntN(4) == 0 {
			must(t, b.Timers().DeleteProcessingTimer(ts, []byte(key), kg, []byte(ns)))
			delete(w.m, timer('P', ts))
		} else {
			must(t, b.Timers().RegisterProcessingTimer(ts, []byte(key), kg, []byte(ns)))
			w.m[timer('P', ts)] = ""
		}
	case 18: // advance the watermark a little
		if w.rng.IntN(8) == 0 {
			w.wm += int64(w.rng.IntN(20))
			w.fire('E', w.wm)
		}
	case 19: // processing time passes
		if w.rng.IntN(8) == 0 {
			w.now += int64(w.rng.IntN(20))
			w.fire('P', w.now)
		}
	}
}

// fire fires due timers of one domain and checks them against the model.
func (w *workload) fire(kind byte, limit int64) {
	t := w.t
	fn := func(tm state.Timer) error {
		it := item{Kind: kind, KG: tm.KeyGroup, Key: string(tm.Key), NS: string(tm.Namespace), TS: tm.Timestamp}
		if _, ok := w.m[it]; !ok {
			t.Fatalf("fired %v, which is not registered", it)
		}
		if tm.Timestamp > limit {
			t.Fatalf("fired %v beyond %d", it, limit)
		}
		delete(w.m, it)
		return nil
	}
	if kind == 'E' {
		must(t, w.b.Timers().AdvanceWatermark(limit, fn))
	} else {
		must(t, w.b.Timers().FireProcessingTimers(limit, fn))
	}
	for k := range w.m {
		if k.Kind == kind && k.TS <= limit {
			t.Fatalf("%v is due at %d but did not fire", k, limit)
		}
	}
}

func (w *workload) run(n int) {
	for range n {
		w.step()
	}
}

// snapshot runs a whole snapshot on the calling goroutine.
func snapshot(t testing.TB, b state.KeyedBackend, w state.StateWriter, id int64) *sluicev1.KeyedStateHandle {
	t.Helper()
	s, err := b.Snapshot(id)
	must(t, err)
	h, err := s.Run(context.Background(), w)
	must(t, err)
	return h
}
