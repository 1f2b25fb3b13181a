package rocksdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"slices"
	"strings"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
)

// The meta file is the first private file of every RocksDB handle: what a restore must
// know besides the database files themselves (docs/formats.md):
//
//	"SLUICERM" | u16 version (1) | u32 max parallelism | u32 first key group |
//	u32 last key group | uvarint state count |
//	per state: u8 kind | bytes name | bytes column family |
//	uvarint shared count | per shared file: bytes local name |
//	uvarint private count | per other private file: bytes local name |
//	[version 2: uvarint column family count | per column family: bytes name |
//	 uvarint delta count | per delta: u8 kind (0 delta, 1 chunk) | uvarint checkpoint |
//	   uvarint column family index | chunk: uvarint sequence number |
//	 uvarint staged count | per staged chunk: uvarint checkpoint |
//	   uvarint column family index | uvarint sequence number] |
//	u32 CRC-32C of everything before it
//
// Integers are big-endian; bytes is a uvarint length and the bytes. The local names
// (e.g. "000012.sst", "MANIFEST-000005", "CURRENT") are in the order of the handle's
// shared_files and private_files[1:]: a file's name in the blob store says nothing
// about its name in the database directory, and inline files have no name at all.
// Version 2 (written only when there are deltas or staged files, see delta.go) adds the
// deltas: SST files, each for one column family, to ingest in order after opening the
// database (or into an empty one when there are no shared names: a base of chunks);
// they are the shared files of the handle after those the shared names list. Then the
// staged files, the last shared files: chunks of the next base, referenced so that
// they are kept, and not restored. A delta's local name is "delta-<checkpoint>-<column
// family>.sst", a chunk's "base-<checkpoint>-<column family>-<sequence number>.sst",
// so the meta file grows by a few bytes per delta.

const (
	metaMagic        = "SLUICERM"
	metaVersion      = 1
	metaVersionDelta = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

type metaState struct {
	desc   state.StateDesc
	column string
}

type snapshotMeta struct {
	maxP    int
	kgs     keygroup.Range
	states  []metaState
	shared  []string
	private []string
	deltas  []metaDelta
	staged  []metaDelta
}

// metaDelta is a delta, or a chunk of a base: the column family it goes into, the
// checkpoint that wrote it (a chunk: the one its stage started at) and a chunk's
// sequence number in its stage. They make its local name.
type metaDelta struct {
	column string
	ckpt   int64
	chunk  bool
	seq    int
}

func (d metaDelta) name() string {
	if d.chunk {
		return fmt.Sprintf("base-%d-%s-%d.sst", d.ckpt, d.column, d.seq)
	}
	return fmt.Sprintf("delta-%d-%s.sst", d.ckpt, d.column)
}

func appendBytes(dst []byte, b string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func (m *snapshotMeta) encode() []byte {
	b := append([]byte(nil), metaMagic...)
	version := uint16(metaVersion)
	if len(m.deltas) > 0 || len(m.staged) > 0 {
		version = metaVersionDelta
	}
	b = binary.BigEndian.AppendUint16(b, version)
	b = binary.BigEndian.AppendUint32(b, uint32(m.maxP))
	b = binary.BigEndian.AppendUint32(b, uint32(m.kgs.Start))
	b = binary.BigEndian.AppendUint32(b, uint32(m.kgs.End))
	b = binary.AppendUvarint(b, uint64(len(m.states)))
	for _, s := range m.states {
		b = append(b, byte(s.desc.Kind))
		b = appendBytes(b, s.desc.Name)
		b = appendBytes(b, s.column)
	}
	for _, names := range [][]string{m.shared, m.private} {
		b = binary.AppendUvarint(b, uint64(len(names)))
		for _, n := range names {
			b = appendBytes(b, n)
		}
	}
	if version == metaVersionDelta {
		var cols []string
		idx := map[string]int{}
		for _, d := range append(slices.Clone(m.deltas), m.staged...) {
			if _, ok := idx[d.column]; !ok {
				idx[d.column] = len(cols)
				cols = append(cols, d.column)
			}
		}
		b = binary.AppendUvarint(b, uint64(len(cols)))
		for _, c := range cols {
			b = appendBytes(b, c)
		}
		b = binary.AppendUvarint(b, uint64(len(m.deltas)))
		for _, d := range m.deltas {
			kind := byte(0)
			if d.chunk {
				kind = 1
			}
			b = append(b, kind)
			b = binary.AppendUvarint(b, uint64(d.ckpt))
			b = binary.AppendUvarint(b, uint64(idx[d.column]))
			if d.chunk {
				b = binary.AppendUvarint(b, uint64(d.seq))
			}
		}
		b = binary.AppendUvarint(b, uint64(len(m.staged)))
		for _, d := range m.staged {
			b = binary.AppendUvarint(b, uint64(d.ckpt))
			b = binary.AppendUvarint(b, uint64(idx[d.column]))
			b = binary.AppendUvarint(b, uint64(d.seq))
		}
	}
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// metaDecoder reads the meta file; the first problem sticks.
type metaDecoder struct {
	b   []byte
	err error
}

func (d *metaDecoder) fail(what string) {
	if d.err == nil {
		d.err = errors.New(what)
	}
}

func (d *metaDecoder) fixed(n int) []byte {
	if d.err != nil || len(d.b) < n {
		d.fail("truncated")
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *metaDecoder) uvarint(limit uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 || v > limit {
		d.fail("bad count or length")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *metaDecoder) bytes() string {
	n := d.uvarint(uint64(len(d.b)))
	return string(d.fixed(int(n)))
}

// decodeMeta parses a meta file; a problem is a *state.CorruptError naming label.
func decodeMeta(b []byte, label string) (*snapshotMeta, error) {
	corrupt := func(reason string) error {
		return &state.CorruptError{Path: label, Reason: "RocksDB meta file: " + reason}
	}
	if len(b) < len(metaMagic)+2+4 || string(b[:len(metaMagic)]) != metaMagic {
		return nil, corrupt("not a Sluice RocksDB meta file")
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(body, castagnoli) != sum {
		return nil, corrupt("checksum mismatch")
	}
	d := &metaDecoder{b: body[len(metaMagic):]}
	version := binary.BigEndian.Uint16(d.fixed(2))
	if version != metaVersion && version != metaVersionDelta {
		return nil, corrupt(fmt.Sprintf("unsupported version %d", version))
	}
	m := &snapshotMeta{maxP: int(binary.BigEndian.Uint32(d.fixed(4)))}
	m.kgs.Start = int(binary.BigEndian.Uint32(d.fixed(4)))
	m.kgs.End = int(binary.BigEndian.Uint32(d.fixed(4)))
	n := d.uvarint(uint64(len(d.b)))
	for range n {
		kind := state.Kind(d.fixed(1)[0])
		s := metaState{desc: state.StateDesc{Kind: kind, Name: d.bytes()}, column: d.bytes()}
		if d.err == nil {
			if err := s.desc.Validate(); err != nil {
				return nil, corrupt(err.Error())
			}
			if !validColumn(s.column) {
				return nil, corrupt(fmt.Sprintf("bad column family name %q", s.column))
			}
		}
		m.states = append(m.states, s)
	}
	for _, names := range []*[]string{&m.shared, &m.private} {
		n := d.uvarint(uint64(len(d.b)))
		for range n {
			name := d.bytes()
			if d.err == nil && !validLocalName(name) {
				return nil, corrupt(fmt.Sprintf("bad file name %q", name))
			}
			*names = append(*names, name)
		}
	}
	if version == metaVersionDelta {
		var cols []string
		for range d.uvarint(uint64(len(d.b))) {
			c := d.bytes()
			if d.err == nil && !validColumn(c) && c != eventColumn && c != processingColumn {
				return nil, corrupt(fmt.Sprintf("bad column family name %q", c))
			}
			cols = append(cols, c)
		}
		entry := func(chunk bool) metaDelta {
			md := metaDelta{chunk: chunk, ckpt: int64(d.uvarint(math.MaxInt64))}
			if i := d.uvarint(uint64(len(cols))); d.err == nil && i < uint64(len(cols)) {
				md.column = cols[i]
			} else {
				d.fail("bad column family index")
			}
			if chunk {
				md.seq = int(d.uvarint(math.MaxInt32))
			}
			return md
		}
		for range d.uvarint(uint64(len(d.b))) {
			kind := d.fixed(1)[0]
			if kind > 1 {
				d.fail("bad delta kind")
			}
			m.deltas = append(m.deltas, entry(kind == 1))
		}
		for range d.uvarint(uint64(len(d.b))) {
			m.staged = append(m.staged, entry(true))
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("trailing bytes")
	}
	if d.err != nil {
		return nil, corrupt(d.err.Error())
	}
	if m.maxP < keygroup.MinMaxParallelism || m.maxP > keygroup.UpperBound || m.kgs.Len() == 0 || m.kgs.End >= m.maxP {
		return nil, corrupt(fmt.Sprintf("key groups %v of max parallelism %d", m.kgs, m.maxP))
	}
	seen := map[string]bool{}
	for _, s := range m.states {
		if seen["s:"+s.desc.Name] || seen["c:"+s.column] {
			return nil, corrupt(fmt.Sprintf("state %q or column family %q twice", s.desc.Name, s.column))
		}
		seen["s:"+s.desc.Name], seen["c:"+s.column] = true, true
	}
	names := append(append([]string(nil), m.shared...), m.private...)
	for _, md := range m.deltas {
		names = append(names, md.name())
	}
	for _, name := range names {
		if seen["f:"+name] {
			return nil, corrupt(fmt.Sprintf("file %q twice", name))
		}
		seen["f:"+name] = true
	}
	// Staged files are never restored: their names need only be distinct among them.
	for _, md := range m.staged {
		if seen["g:"+md.name()] {
			return nil, corrupt(fmt.Sprintf("staged file %q twice", md.name()))
		}
		seen["g:"+md.name()] = true
	}
	return m, nil
}

// validLocalName: a database file name written by RocksDB, never a path.
func validLocalName(s string) bool {
	return s != "" && s != "." && s != ".." && len(s) <= 255 && !strings.ContainsAny(s, "/\\\x00")
}

// validColumn: a column family name this package creates ("state-<n>").
func validColumn(s string) bool {
	if !strings.HasPrefix(s, statePrefix) || len(s) == len(statePrefix) || len(s) > len(statePrefix)+9 {
		return false
	}
	for _, c := range s[len(statePrefix):] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// Column family names. RocksDB requires "default"; states get "state-<n>"; each time
// domain's timers have one.
const (
	defaultColumn    = "default"
	statePrefix      = "state-"
	eventColumn      = "timers-event"
	processingColumn = "timers-processing"
)
