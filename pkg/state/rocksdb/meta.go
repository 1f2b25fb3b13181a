package rocksdb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
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
//	[version 2: uvarint delta count | per delta: bytes column family | bytes local name] |
//	u32 CRC-32C of everything before it
//
// Integers are big-endian; bytes is a uvarint length and the bytes. The local names
// (e.g. "000012.sst", "MANIFEST-000005", "CURRENT") are in the order of the handle's
// shared_files and private_files[1:]: a file's name in the blob store says nothing
// about its name in the database directory, and inline files have no name at all.
// Version 2 (written only when there are deltas, see delta.go) adds the deltas: SST
// files of changed entries, each for one column family, to ingest in order after
// opening the database; they are the last shared files of the handle, after those
// the shared names list.

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
}

// metaDelta is a delta file: its local name and the column family it goes into.
type metaDelta struct {
	column string
	name   string
}

func appendBytes(dst []byte, b string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(b)))
	return append(dst, b...)
}

func (m *snapshotMeta) encode() []byte {
	b := append([]byte(nil), metaMagic...)
	version := uint16(metaVersion)
	if len(m.deltas) > 0 {
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
		b = binary.AppendUvarint(b, uint64(len(m.deltas)))
		for _, d := range m.deltas {
			b = appendBytes(b, d.column)
			b = appendBytes(b, d.name)
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
		n := d.uvarint(uint64(len(d.b)))
		for range n {
			md := metaDelta{column: d.bytes(), name: d.bytes()}
			if d.err == nil && !validColumn(md.column) && md.column != eventColumn && md.column != processingColumn {
				return nil, corrupt(fmt.Sprintf("bad column family name %q", md.column))
			}
			if d.err == nil && !validLocalName(md.name) {
				return nil, corrupt(fmt.Sprintf("bad file name %q", md.name))
			}
			m.deltas = append(m.deltas, md)
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
		names = append(names, md.name)
	}
	for _, name := range names {
		if seen["f:"+name] {
			return nil, corrupt(fmt.Sprintf("file %q twice", name))
		}
		seen["f:"+name] = true
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
