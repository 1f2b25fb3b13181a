package fullsnap

import (
	"bytes"
	"errors"
	"testing"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
)

type rec struct {
	kind          string
	st            int
	key, ns, a, b string
	ts            int64
}

type collector struct{ recs []rec }

func (c *collector) Value(st int, key, ns, v []byte) error {
	c.recs = append(c.recs, rec{"value", st, string(key), string(ns), string(v), "", 0})
	return nil
}
func (c *collector) List(st int, key, ns, l []byte) error {
	c.recs = append(c.recs, rec{"list", st, string(key), string(ns), string(l), "", 0})
	return nil
}
func (c *collector) MapEntry(st int, key, ns, uk, uv []byte) error {
	c.recs = append(c.recs, rec{"map", st, string(key), string(ns), string(uk), string(uv), 0})
	return nil
}
func (c *collector) Timer(d state.TimeDomain, ts int64, key, ns []byte) error {
	c.recs = append(c.recs, rec{d.String(), 0, string(key), string(ns), "", "", ts})
	return nil
}

var descs = []state.StateDesc{{Name: "v", Kind: state.KindValue}, {Name: "l", Kind: state.KindList}, {Name: "m", Kind: state.KindMap}, {Name: "r", Kind: state.KindReducing}}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	kgs := keygroup.Range{Start: 300, End: 310}
	e, err := NewEncoder(&buf, 1000, kgs, descs)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(e.BeginKeyGroup(302))
	must(e.Value(0, []byte("k"), nil, []byte("v")))
	must(e.Value(3, []byte("k"), []byte("n"), []byte("r")))
	must(e.List(1, []byte("k"), nil, state.EncodeList(nil, [][]byte{[]byte("a"), []byte("b")})))
	must(e.MapEntry(2, []byte("k"), nil, []byte("uk"), bytes.Repeat([]byte("U"), 100_000)))
	must(e.Timer(state.EventTime, -7, []byte("k"), []byte("n")))
	must(e.BeginKeyGroup(310))
	must(e.Timer(state.ProcessingTime, 1<<62, []byte("z"), nil))
	// Misuse is refused.
	if err := (&Encoder{}).check(0, recValue); err == nil {
		t.Fatal("record outside a section accepted")
	}
	offsets, err := e.Finish()
	must(err)
	if len(offsets) != kgs.Len() {
		t.Fatalf("%d offsets", len(offsets))
	}
	f, err := Open(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	must(err)
	if f.Header.MaxParallelism != 1000 || f.Header.KeyGroups != kgs || len(f.Header.States) != 4 || f.Header.States[3] != descs[3] {
		t.Fatalf("header %+v", f.Header)
	}
	must(f.CheckOffsets(offsets))
	var c collector
	for kg := kgs.Start; kg <= kgs.End; kg++ {
		must(f.ReadKeyGroup(kg, &c))
	}
	if len(c.recs) != 6 || c.recs[3].b != string(bytes.Repeat([]byte("U"), 100_000)) || c.recs[4].ts != -7 || c.recs[5].ts != 1<<62 {
		t.Fatalf("records %+v", c.recs[:2])
	}
	if err := f.ReadKeyGroup(299, &c); err == nil {
		t.Fatal("key group outside the file read")
	}
	stop := errors.New("stop")
	if err := f.ReadKeyGroup(302, stopper{stop}); !errors.Is(err, stop) {
		t.Fatalf("visitor error: %v", err)
	}
}

type stopper struct{ err error }

func (s stopper) Value(int, []byte, []byte, []byte) error             { return s.err }
func (s stopper) List(int, []byte, []byte, []byte) error              { return s.err }
func (s stopper) MapEntry(int, []byte, []byte, []byte, []byte) error  { return s.err }
func (s stopper) Timer(state.TimeDomain, int64, []byte, []byte) error { return s.err }

func TestEncoderMisuse(t *testing.T) {
	kgs := keygroup.Range{Start: 0, End: 3}
	for name, fn := range map[string]func(e *Encoder) error{
		"out of order": func(e *Encoder) error { e.BeginKeyGroup(2); return e.BeginKeyGroup(1) },
		"beyond range": func(e *Encoder) error { return e.BeginKeyGroup(4) },
		"no section":   func(e *Encoder) error { return e.Value(0, nil, nil, nil) },
		"wrong kind":   func(e *Encoder) error { e.BeginKeyGroup(0); return e.List(0, nil, nil, nil) },
		"bad state":    func(e *Encoder) error { e.BeginKeyGroup(0); return e.Value(9, nil, nil, nil) },
		"bad domain":   func(e *Encoder) error { e.BeginKeyGroup(0); return e.Timer(0, 0, nil, nil) },
		"finish twice": func(e *Encoder) error { e.Finish(); _, err := e.Finish(); return err },
	} {
		e, err := NewEncoder(&bytes.Buffer{}, 128, kgs, descs)
		if err != nil {
			t.Fatal(err)
		}
		if fn(e) == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := NewEncoder(&bytes.Buffer{}, 128, keygroup.Range{Start: 0, End: 128}, descs); err == nil {
		t.Error("range beyond max parallelism accepted")
	}
	if _, err := NewEncoder(&bytes.Buffer{}, 128, kgs, []state.StateDesc{{Name: "", Kind: state.KindValue}}); err == nil {
		t.Error("empty state name accepted")
	}
}

func TestEveryTruncationAndFlipIsCorrupt(t *testing.T) {
	var buf bytes.Buffer
	e, _ := NewEncoder(&buf, 128, keygroup.Range{Start: 0, End: 2}, descs)
	e.BeginKeyGroup(1)
	e.Value(0, []byte("key"), nil, []byte("value"))
	e.Timer(state.EventTime, 5, []byte("key"), nil)
	e.Finish()
	good := buf.Bytes()
	read := func(b []byte) error {
		f, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return err
		}
		for kg := 0; kg <= 2; kg++ {
			if err := f.ReadKeyGroup(kg, &collector{}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := read(good); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < len(good); n++ {
		if err := read(good[:n]); !errors.Is(err, state.ErrCorrupt) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	for i := range good {
		for _, x := range []byte{1, 0x80, 0xff} {
			bad := bytes.Clone(good)
			bad[i] ^= x
			if err := read(bad); !errors.Is(err, state.ErrCorrupt) {
				t.Fatalf("byte %d ^ %#x: %v", i, x, err)
			}
		}
	}
}
