package rocksdb

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/sluice-stream/sluice/pkg/keygroup"
)

// Local recovery layout (doc.go, docs/formats.md):
//
//	<Dir>/<job>/<uid>/kg-<first>-<last>/chk-<checkpoint>/   a native checkpoint
//	                                    .../sluice-local.manifest
//
// <job> and <uid> are the job ID and operator UID sanitized like
// state.KeyedOptions.FileName (characters other than [A-Za-z0-9._-] become '_'); the
// key-group range names the subtask, so that a restore finds the copy of the handle it
// reads whatever the subtask index became.

// LocalRecoveryJobDir is the directory under the local recovery root dir that holds
// every copy of job jobID: a task manager removes it when the job is gone for good
// (finished, cancelled, failed without restart). Backends never remove it.
func LocalRecoveryJobDir(dir, jobID string) string {
	return filepath.Join(dir, sanitizeName(jobID, "job"))
}

// localKGDir is the directory of the copies of one operator's key-group range.
func localKGDir(lr LocalRecovery, uid string, kgs keygroup.Range) string {
	return filepath.Join(LocalRecoveryJobDir(lr.Dir, lr.JobID), sanitizeName(uid, "op"), kgDirName(kgs))
}

func kgDirName(kgs keygroup.Range) string { return fmt.Sprintf("kg-%d-%d", kgs.Start, kgs.End) }

// parseKGDirName parses "kg-<first>-<last>".
func parseKGDirName(s string) (keygroup.Range, bool) {
	rest, ok := strings.CutPrefix(s, "kg-")
	if !ok {
		return keygroup.Range{}, false
	}
	a, b, ok := strings.Cut(rest, "-")
	if !ok {
		return keygroup.Range{}, false
	}
	start, err1 := strconv.Atoi(a)
	end, err2 := strconv.Atoi(b)
	if err1 != nil || err2 != nil || start < 0 || end < start || kgDirName(keygroup.Range{Start: start, End: end}) != s {
		return keygroup.Range{}, false
	}
	return keygroup.Range{Start: start, End: end}, true
}

func chkDirName(id int64) string { return "chk-" + strconv.FormatInt(id, 10) }

// parseChkDirName parses "chk-<checkpoint>" (canonical decimal, positive).
func parseChkDirName(s string) (int64, bool) {
	rest, ok := strings.CutPrefix(s, "chk-")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || id <= 0 || chkDirName(id) != s {
		return 0, false
	}
	return id, true
}

// sanitizeName makes s one path element: characters other than [A-Za-z0-9._-] become
// '_' (as in state.KeyedOptions.FileName), empty becomes empty, and "." or ".." all
// underscores.
func sanitizeName(s, empty string) string {
	if s == "" {
		return empty
	}
	b := []byte(s)
	for i, c := range b {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-'
		if !ok {
			b[i] = '_'
		}
	}
	if s := string(b); s == "." || s == ".." {
		return strings.Repeat("_", len(s))
	}
	return string(b)
}

// The manifest of a local copy, written once its checkpoint was uploaded:
//
//	"SLUICELR" | u16 version (1) | u64 checkpoint ID | u32 max parallelism |
//	u32 first key group | u32 last key group | 32 bytes SHA-256 of the meta file |
//	uvarint file count | per file: bytes local name | u64 size | 32 bytes SHA-256 |
//	u32 CRC-32C of the local file |
//	u32 CRC-32C of everything before it
//
// Integers are big-endian; bytes is a uvarint length and the bytes. The files are
// those of the snapshot's handle (OPTIONS is not one), in name order; the SHA-256 is
// the one the handle records for the file, the CRC-32C that of the local file's bytes.

const (
	localManifestName    = "sluice-local.manifest"
	localManifestMagic   = "SLUICELR"
	localManifestVersion = 1
	// maxLocalManifest bounds what a restore reads as a manifest.
	maxLocalManifest = 64 << 20
)

type manifestFile struct {
	name   string
	size   int64
	sha256 []byte
	crc    uint32
}

type localManifest struct {
	checkpointID int64
	maxP         int
	kgs          keygroup.Range
	metaSHA256   []byte
	files        []manifestFile
}

func (m *localManifest) encode() []byte {
	b := append([]byte(nil), localManifestMagic...)
	b = binary.BigEndian.AppendUint16(b, localManifestVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(m.checkpointID))
	b = binary.BigEndian.AppendUint32(b, uint32(m.maxP))
	b = binary.BigEndian.AppendUint32(b, uint32(m.kgs.Start))
	b = binary.BigEndian.AppendUint32(b, uint32(m.kgs.End))
	b = append(b, m.metaSHA256...)
	b = binary.AppendUvarint(b, uint64(len(m.files)))
	for _, f := range m.files {
		b = appendBytes(b, f.name)
		b = binary.BigEndian.AppendUint64(b, uint64(f.size))
		b = append(b, f.sha256...)
		b = binary.BigEndian.AppendUint32(b, f.crc)
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeLocalManifest parses a manifest; the error says what is wrong with it.
func decodeLocalManifest(b []byte) (*localManifest, error) {
	if len(b) < len(localManifestMagic)+2+4 || string(b[:len(localManifestMagic)]) != localManifestMagic {
		return nil, fmt.Errorf("not a local recovery manifest")
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, fmt.Errorf("manifest checksum mismatch")
	}
	d := &metaDecoder{b: body[len(localManifestMagic):]}
	if v := binary.BigEndian.Uint16(d.fixed(2)); v != localManifestVersion {
		return nil, fmt.Errorf("unsupported manifest version %d", v)
	}
	m := &localManifest{checkpointID: int64(binary.BigEndian.Uint64(d.fixed(8)))}
	m.maxP = int(binary.BigEndian.Uint32(d.fixed(4)))
	m.kgs.Start = int(binary.BigEndian.Uint32(d.fixed(4)))
	m.kgs.End = int(binary.BigEndian.Uint32(d.fixed(4)))
	m.metaSHA256 = bytes.Clone(d.fixed(sha256.Size))
	n := d.uvarint(uint64(len(d.b)))
	seen := map[string]bool{}
	for range n {
		f := manifestFile{name: d.bytes()}
		f.size = int64(binary.BigEndian.Uint64(d.fixed(8)))
		f.sha256 = bytes.Clone(d.fixed(sha256.Size))
		f.crc = binary.BigEndian.Uint32(d.fixed(4))
		if d.err != nil {
			break
		}
		if !validLocalName(f.name) || f.name == localManifestName || seen[f.name] || f.size < 0 {
			return nil, fmt.Errorf("bad manifest entry %q", f.name)
		}
		seen[f.name] = true
		m.files = append(m.files, f)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, fmt.Errorf("manifest: %w", d.err)
	}
	if m.checkpointID <= 0 || m.kgs.Len() == 0 || m.kgs.End >= m.maxP {
		return nil, fmt.Errorf("manifest: checkpoint %d, key groups %v of max parallelism %d", m.checkpointID, m.kgs, m.maxP)
	}
	return m, nil
}
