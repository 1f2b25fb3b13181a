package rocksdb

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/pkg/keygroup"
)

// TestLocalManifestRoundTrip: a manifest decodes to what was encoded, and every
// truncation, flipped bit or trailing byte is refused.
func TestLocalManifestRoundTrip(t *testing.T) {
	sum := func(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }
	m := &localManifest{
		checkpointID: 7, maxP: 128, kgs: keygroup.Range{Start: 64, End: 127}, metaSHA256: sum("meta"),
		files: []manifestFile{
			{name: "000012.sst", size: 123456, sha256: sum("a"), crc: 0xdeadbeef},
			{name: "CURRENT", size: 16, sha256: sum("b"), crc: 1},
			{name: "MANIFEST-000005", size: 0, sha256: sum("c"), crc: 0},
		},
	}
	b := m.encode()
	got, err := decodeLocalManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.checkpointID != 7 || got.maxP != 128 || got.kgs != m.kgs || !bytes.Equal(got.metaSHA256, m.metaSHA256) || len(got.files) != 3 {
		t.Fatalf("decoded %+v", got)
	}
	for i, f := range got.files {
		w := m.files[i]
		if f.name != w.name || f.size != w.size || f.crc != w.crc || !bytes.Equal(f.sha256, w.sha256) {
			t.Fatalf("file %d: %+v, want %+v", i, f, w)
		}
	}
	for n := range len(b) {
		if _, err := decodeLocalManifest(b[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: decoded", n)
		}
	}
	for i := range len(b) * 8 {
		c := bytes.Clone(b)
		c[i/8] ^= 1 << (i % 8)
		if _, err := decodeLocalManifest(c); err == nil {
			t.Fatalf("bit %d flipped: decoded", i)
		}
	}
	if _, err := decodeLocalManifest(append(bytes.Clone(b), 0)); err == nil {
		t.Fatal("trailing byte: decoded")
	}
	// A valid checksum over a bad entry.
	m.files[1].name = "../CURRENT"
	if _, err := decodeLocalManifest(m.encode()); err == nil || !strings.Contains(err.Error(), "bad manifest entry") {
		t.Fatalf("path as a file name: %v", err)
	}
}

// TestLocalRecoveryLayout: names are sanitized into single path elements, and the
// directory names parse back only in their canonical form.
func TestLocalRecoveryLayout(t *testing.T) {
	lr := LocalRecovery{Dir: "/root", JobID: "job/../x"}
	if got := localKGDir(lr, "my op", keygroup.Range{Start: 3, End: 9}); got != "/root/job_.._x/my_op/kg-3-9" {
		t.Fatalf("kg directory %q", got)
	}
	for in, want := range map[string]string{"": "op", ".": "_", "..": "__", "a.b-c_d": "a.b-c_d", "ü": "__"} {
		if got := sanitizeName(in, "op"); got != want {
			t.Fatalf("sanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := LocalRecoveryJobDir("/root", ""); got != "/root/job" {
		t.Fatalf("job directory %q", got)
	}
	for s, ok := range map[string]bool{"chk-1": true, "chk-42": true, "chk-0": false, "chk-01": false, "chk--1": false, "chk-1.tmp": false, "chk-": false} {
		if _, got := parseChkDirName(s); got != ok {
			t.Fatalf("parseChkDirName(%q): %v", s, got)
		}
	}
	for s, ok := range map[string]bool{"kg-0-127": true, "kg-5-5": true, "kg-5-4": false, "kg-05-6": false, "kg-1": false, "kg-a-b": false} {
		if _, got := parseKGDirName(s); got != ok {
			t.Fatalf("parseKGDirName(%q): %v", s, got)
		}
	}
}
