//go:build cgo

package rocksdb

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/linxGnu/grocksdb"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
)

// TestNativeHandles: the C handles behind grocksdb's objects are where cptr looks, and
// a value written through them reads back through grocksdb (the version is pinned; this
// fails if an upgrade moves them).
func TestNativeHandles(t *testing.T) {
	o := grocksdb.NewDefaultOptions()
	defer o.Destroy()
	o.SetCreateIfMissing(true)
	db, err := grocksdb.OpenDb(o, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ro, wo := grocksdb.NewDefaultReadOptions(), grocksdb.NewDefaultWriteOptions()
	defer ro.Destroy()
	defer wo.Destroy()
	cf, err := db.CreateColumnFamily(o, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer cf.Destroy()
	n := newNative(db, ro, wo)
	if err := n.put(cfPtr(cf), []byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	got, err := db.GetCF(ro, cf, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	defer got.Free()
	if string(got.Data()) != "v" {
		t.Fatalf("grocksdb reads %q", got.Data())
	}
	if v, ok, err := n.get(cfPtr(cf), []byte("k"), nil); err != nil || !ok || string(v) != "v" {
		t.Fatalf("get: %q %v %v", v, ok, err)
	}
	// Values longer than the buffer are read again into a larger one.
	long := bytes.Repeat([]byte("x"), 10000)
	if err := n.put(cfPtr(cf), []byte("k"), long); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := n.get(cfPtr(cf), []byte("k"), make([]byte, 0, 10)); err != nil || !ok || !bytes.Equal(v, long) {
		t.Fatalf("long get: %d bytes %v %v", len(v), ok, err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("cptr of an object without a C handle did not panic")
		}
	}()
	cptr(&struct{ x int }{})
}

func TestKeyEncoding(t *testing.T) {
	for _, maxP := range []int{1, 128, 129, 32768} {
		plen := keygroup.PrefixLen(maxP)
		var prev []byte
		for kg := 0; kg <= maxP; kg += max(1, maxP/100) {
			b := keyGroupBound(kg, plen)
			if len(b) != plen || (kg < maxP && keyGroupOf(b, plen) != kg) {
				t.Fatalf("maxP %d: bound of %d = %x", maxP, kg, b)
			}
			if prev != nil && bytes.Compare(prev, b) >= 0 {
				t.Fatalf("maxP %d: bounds out of order at %d", maxP, kg)
			}
			prev = b
		}
	}
	k := appendKeyGroup(nil, 300, 2)
	k = append(k, 2, 'a', 'b', 1, 'c', 'u', 'k')
	kg, key, ns, rest, ok := parseStateKey(k, 2)
	if !ok || kg != 300 || string(key) != "ab" || string(ns) != "c" || string(rest) != "uk" {
		t.Fatalf("parse: %d %q %q %q %v", kg, key, ns, rest, ok)
	}
	for _, bad := range [][]byte{{}, {0}, {0, 5, 'a'}, {0, 1, 'a', 9}} {
		if _, _, _, _, ok := parseStateKey(bad, 1); ok {
			t.Fatalf("parsed malformed %x", bad)
		}
	}
	// Timer IDs sort by time, negative times first.
	var ids [][]byte
	for _, ts := range []int64{math.MinInt64, -5, 0, 7, math.MaxInt64} {
		id := appendTimerID(nil, ts, []byte("key"), []byte("ns"))
		got, key, ns, ok := parseTimerID(id)
		if !ok || got != ts || string(key) != "key" || string(ns) != "ns" {
			t.Fatalf("timer %d: %d %q %q %v", ts, got, key, ns, ok)
		}
		ids = append(ids, id)
	}
	for i := 1; i < len(ids); i++ {
		if bytes.Compare(ids[i-1], ids[i]) >= 0 {
			t.Fatalf("timer IDs out of order at %d", i)
		}
	}
	if e := prefixEnd([]byte{1, 0xff, 0xff}); !bytes.Equal(e, []byte{2}) {
		t.Fatalf("prefixEnd = %x", e)
	}
	if e := prefixEnd([]byte{0xff}); e != nil {
		t.Fatalf("prefixEnd of 0xff = %x", e)
	}
}

func sampleMeta() *snapshotMeta {
	return &snapshotMeta{
		maxP: 128, kgs: keygroup.Range{Start: 0, End: 63},
		states: []metaState{{state.StateDesc{Name: "count", Kind: state.KindValue}, "state-0"}, {state.StateDesc{Name: "l", Kind: state.KindList}, "state-1"}},
		shared: []string{"000012.sst", "000014.sst"}, private: []string{"CURRENT", "MANIFEST-000005"},
	}
}

func TestMetaRoundTrip(t *testing.T) {
	m := sampleMeta()
	got, err := decodeMeta(m.encode(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if got.maxP != m.maxP || got.kgs != m.kgs || len(got.states) != 2 || got.states[1] != m.states[1] ||
		len(got.shared) != 2 || got.shared[1] != "000014.sst" || got.private[1] != "MANIFEST-000005" {
		t.Fatalf("decoded %+v", got)
	}
	bad := []*snapshotMeta{
		{maxP: 128, kgs: keygroup.Range{Start: 0, End: 200}},
		{maxP: 128, kgs: keygroup.Range{Start: 0, End: 1}, shared: []string{"../x"}},
		{maxP: 128, kgs: keygroup.Range{Start: 0, End: 1}, shared: []string{"a"}, private: []string{"a"}},
		{maxP: 128, kgs: keygroup.Range{Start: 0, End: 1}, states: []metaState{{state.StateDesc{Name: "a", Kind: 1}, "default"}}},
	}
	for _, m := range bad {
		if _, err := decodeMeta(m.encode(), "x"); !errors.Is(err, state.ErrCorrupt) {
			t.Fatalf("%+v decoded: %v", m, err)
		}
	}

	// Version 2: deltas (a chunk first) and staged chunks.
	d := sampleDeltaMeta()
	got, err = decodeMeta(d.encode(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.deltas, d.deltas) || !slices.Equal(got.staged, d.staged) || got.deltas[1].name() != "delta-7-timers-event.sst" ||
		got.deltas[0].name() != "base-5-state-0-0.sst" || !bytes.Equal(got.encode(), d.encode()) {
		t.Fatalf("decoded %+v", got)
	}
	if v := binary.BigEndian.Uint16(d.encode()[len(metaMagic):]); v != metaVersionDelta {
		t.Fatalf("version %d with deltas", v)
	}
	badDeltas := []*snapshotMeta{
		{maxP: 128, kgs: keygroup.Range{Start: 0, End: 1}, deltas: []metaDelta{{column: "default", ckpt: 1}}},
		{maxP: 128, kgs: keygroup.Range{Start: 0, End: 1}, deltas: []metaDelta{{column: "state-0", ckpt: 1}, {column: "state-0", ckpt: 1}}},
		{maxP: 128, kgs: keygroup.Range{Start: 0, End: 1}, staged: []metaDelta{{column: "state-0", ckpt: 1, chunk: true}, {column: "state-0", ckpt: 1, chunk: true}}},
	}
	for _, m := range badDeltas {
		if _, err := decodeMeta(m.encode(), "x"); !errors.Is(err, state.ErrCorrupt) {
			t.Fatalf("%+v decoded: %v", m, err)
		}
	}
}

// sampleDeltaMeta is the meta file of a delta snapshot on a base of chunks, with
// chunks of the next base staged.
func sampleDeltaMeta() *snapshotMeta {
	m := sampleMeta()
	m.shared, m.private = nil, nil
	m.deltas = []metaDelta{
		{column: "state-0", ckpt: 5, chunk: true},
		{column: "timers-event", ckpt: 7},
		{column: "state-1", ckpt: 7},
	}
	m.staged = []metaDelta{{column: "state-1", ckpt: 6, chunk: true, seq: 3}}
	return m
}

// FuzzDecodeMeta: no input makes the decoder panic; what it refuses is ErrCorrupt, and
// what it accepts decodes again the same after re-encoding.
func FuzzDecodeMeta(f *testing.F) {
	f.Add(sampleMeta().encode())
	f.Add(sampleDeltaMeta().encode())
	f.Add([]byte(metaMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b, "fuzz")
		if err != nil {
			if !errors.Is(err, state.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		again, err := decodeMeta(m.encode(), "fuzz")
		if err != nil || !bytes.Equal(again.encode(), m.encode()) {
			t.Fatalf("accepted input does not survive re-encoding: %v", err)
		}
	})
}
