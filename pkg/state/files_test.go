package state_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
	"github.com/sluice-stream/sluice/pkg/state/statetest"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func fileOf(path string, b []byte) *sluicev1.StateFile {
	sum := sha256.Sum256(b)
	return &sluicev1.StateFile{Path: path, Size: int64(len(b)), Sha256: sum[:]}
}

func TestVerify(t *testing.T) {
	data := bytes.Repeat([]byte("state"), 1000)
	f := fileOf("chk-1/a.state", data)
	if err := state.VerifyFile(f, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	if err := state.VerifyBytes(f, data); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(data)
	bad[100] ^= 1
	for name, b := range map[string][]byte{"flipped": bad, "truncated": data[:10], "extended": append(bytes.Clone(data), 0)} {
		err := state.VerifyFile(f, bytes.NewReader(b))
		var ce *state.CorruptError
		if !errors.Is(err, state.ErrCorrupt) || !errors.As(err, &ce) || ce.Path != "chk-1/a.state" || !strings.Contains(err.Error(), "chk-1/a.state") {
			t.Fatalf("%s: %v", name, err)
		}
		// The streaming verifier reports the same at the end of the stream.
		_, err = io.Copy(io.Discard, state.NewVerifyingReader(f, bytes.NewReader(b)))
		if !errors.Is(err, state.ErrCorrupt) {
			t.Fatalf("%s: verifying reader: %v", name, err)
		}
	}
	var sink bytes.Buffer
	if _, err := io.Copy(&sink, state.NewVerifyingReader(f, bytes.NewReader(data))); err != nil || !bytes.Equal(sink.Bytes(), data) {
		t.Fatalf("verifying reader on good data: %v", err)
	}
	if err := state.VerifyBytes(&sluicev1.StateFile{Size: 1, Sha256: []byte{1}}, []byte{0}); !errors.Is(err, state.ErrCorrupt) || !strings.Contains(err.Error(), "<inline>") {
		t.Fatalf("short hash: %v", err)
	}
	boom := errors.New("boom")
	if err := state.VerifyFile(f, io.MultiReader(bytes.NewReader(data[:5]), errReader{boom})); !errors.Is(err, boom) {
		t.Fatalf("read error: %v", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestSpillWriter(t *testing.T) {
	ctx := context.Background()
	store := statetest.NewMemStore()
	sw := state.NewSpillWriter(ctx, store, "small", 100)
	sw.Write([]byte("hello "))
	sw.Write([]byte("world"))
	f, err := sw.Close()
	if err != nil || f.GetPath() != "" || string(f.GetInlineData()) != "hello world" || state.VerifyBytes(f, f.GetInlineData()) != nil {
		t.Fatalf("inline: %v %v", f, err)
	}
	sw = state.NewSpillWriter(ctx, store, "big", 10)
	sw.Write([]byte("hello "))
	sw.Write([]byte("world"))
	sw.Write([]byte("!"))
	f, err = sw.Close()
	if err != nil || f.GetPath() == "" || len(f.GetInlineData()) != 0 || string(store.Bytes(f.GetPath())) != "hello world!" {
		t.Fatalf("spilled: %v %v", f, err)
	}
	fr, err := state.OpenStateFile(ctx, f, store)
	if err != nil || fr.Size() != 12 {
		t.Fatalf("open: %v", err)
	}
	fr.Close()
	sw = state.NewSpillWriter(ctx, store, "never", 0)
	sw.Write([]byte("x"))
	if f, _ := sw.Close(); f.GetPath() == "" {
		t.Fatal("threshold 0 inlined")
	}
	sw = state.NewSpillWriter(ctx, store, "aborted", 1)
	sw.Write([]byte("xyz"))
	sw.Abort()
	if p, a := store.Pending(); p != 0 || a != 1 {
		t.Fatalf("pending %d aborted %d", p, a)
	}
	if _, err := state.OpenStateFile(ctx, &sluicev1.StateFile{Path: "p"}, nil); err == nil {
		t.Fatal("file without a reader opened")
	}
}

func TestDirStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	d := state.DirStore{Dir: dir}
	w, err := d.Create(ctx, "chk-1/op-0.state")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("contents"))
	f, err := w.Close()
	if err != nil || f.GetPath() != "chk-1/op-0.state" || f.GetSize() != 8 {
		t.Fatalf("close: %v %v", f, err)
	}
	r, err := d.Open(ctx, f)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if _, err := r.ReadAt(buf, 0); err != nil || string(buf) != "contents" {
		t.Fatalf("read %q %v", buf, err)
	}
	r.Close()
	// Aborted files leave nothing behind; no temporary files either.
	w, _ = d.Create(ctx, "chk-1/aborted")
	w.Write([]byte("x"))
	w.Abort()
	entries, _ := os.ReadDir(filepath.Join(dir, "chk-1"))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries", len(entries))
	}
	os.WriteFile(filepath.Join(dir, "chk-1/op-0.state"), []byte("CONTENTS"), 0o644)
	if _, err := d.Open(ctx, f); !errors.Is(err, state.ErrCorrupt) || !strings.Contains(err.Error(), "chk-1/op-0.state") {
		t.Fatalf("corrupt file: %v", err)
	}
	if _, err := d.Create(ctx, "../escape"); err == nil {
		t.Fatal("non-local name accepted")
	}
	if _, err := d.Open(ctx, &sluicev1.StateFile{Path: "missing"}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("missing: %v", err)
	}
}

func TestKeyedOptions(t *testing.T) {
	ok := state.KeyedOptions{OperatorUID: "a b/c", KeyGroups: keygroup.Range{Start: 0, End: 127}, MaxParallelism: 128, Subtask: 2}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := ok.FileName(7, "keyed"); got != "a_b_c-2-7-keyed" {
		t.Fatalf("FileName = %q", got)
	}
	if ok.InlineLimit() != state.DefaultInlineThreshold {
		t.Fatal("default inline limit")
	}
	ok.InlineThreshold = -1
	if ok.InlineLimit() != 0 {
		t.Fatal("disabled inline limit")
	}
	for _, bad := range []state.KeyedOptions{
		{KeyGroups: keygroup.Range{Start: 0, End: 127}, MaxParallelism: 0},
		{KeyGroups: keygroup.Range{Start: 0, End: 128}, MaxParallelism: 128},
		{KeyGroups: keygroup.Range{Start: 5, End: 4}, MaxParallelism: 128},
		{KeyGroups: keygroup.Range{Start: 0, End: 1}, MaxParallelism: 1 << 16},
	} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestListCodec(t *testing.T) {
	vs := [][]byte{[]byte("a"), {}, bytes.Repeat([]byte("x"), 300)}
	enc := state.EncodeList(nil, vs)
	var got [][]byte
	if err := state.ForEachListElem(enc, func(v []byte) error { got = append(got, v); return nil }); err != nil || len(got) != 3 || len(got[2]) != 300 {
		t.Fatalf("decode: %v %d", err, len(got))
	}
	if state.ValidList(enc[:len(enc)-1]) || state.ValidList([]byte{0xff}) || !state.ValidList(nil) {
		t.Fatal("ValidList")
	}
}
