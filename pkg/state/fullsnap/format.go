// Package fullsnap is the backend-neutral format of a full keyed-state snapshot: one
// file per backend holding, for every key group of the backend's range in order, a
// section with every state's entries and the key group's timers. The offset of each
// section is recorded in the KeyedStateHandle (key_group_offsets) and in the file's
// footer, so a restore at another parallelism reads only the sections of the key groups
// it owns. Any backend can read what any backend wrote (a heap snapshot restores into
// RocksDB and the reverse), which is what savepoints need.
//
// # Layout (integers big-endian; uvarint as in encoding/binary; bytes = uvarint length
// followed by that many bytes)
//
//	header   magic "SLUICEKS" | u16 version (1) | u16 flags (0) | u32 max parallelism |
//	         u32 first key group | u32 last key group | uvarint state count |
//	         per state: u8 kind | bytes name |
//	         u32 CRC-32C of the header bytes before it
//	section  (one per key group, first to last, none omitted)
//	         uvarint key group | records | u8 0 | u32 CRC-32C of the section bytes before it
//	record   u8 type, then
//	         1 value:            uvarint state | bytes key | bytes namespace | bytes value
//	         2 list:             uvarint state | bytes key | bytes namespace | bytes list
//	                             (the list in state.AppendListElem encoding)
//	         3 map entry:        uvarint state | bytes key | bytes namespace |
//	                             bytes user key | bytes user value
//	         4 event timer:      u64 timestamp | bytes key | bytes namespace
//	         5 processing timer: u64 timestamp | bytes key | bytes namespace
//	footer   u32 section count | per section: u64 offset
//	trailer  u64 footer offset | u32 CRC-32C of footer and footer offset | magic "SLUICEKE"
//
// Value records serve Value and Reducing states. "state" indexes the header's state
// table. Entries within a section are in no particular order. Besides the CRCs of the
// format, whole files are verified against the SHA-256 of their StateFile on open
// (state.StateReader).
package fullsnap

import (
	"hash/crc32"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state"
)

// Version is the format version this package writes and reads.
const Version = 1

// HandleBackend is KeyedStateHandle.backend of a handle whose file is in this format,
// whichever backend wrote it: the heap backend's snapshots and every backend's
// canonical savepoints (state.FormatCanonical). It is the heap backend's name, which
// wrote the format first; restores tell a handle's format by this field (the RocksDB
// backend reads a handle of its own name as its native files, any other with a file as
// this format).
const HandleBackend = "heap"

const (
	headMagic = "SLUICEKS"
	tailMagic = "SLUICEKE"
	// trailerLen is the fixed-size end of the file: footer offset, CRC, magic.
	trailerLen = 8 + 4 + 8
	// minSection is the smallest section: a one-byte key group, the end byte, the CRC.
	minSection = 1 + 1 + 4
)

const (
	recEnd       = 0
	recValue     = 1
	recList      = 2
	recMap       = 3
	recEventTime = 4
	recProcTime  = 5
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Header is what a file's header says.
type Header struct {
	Version        int
	MaxParallelism int
	KeyGroups      keygroup.Range
	// States is the state table: records refer to states by their index in it.
	States []state.StateDesc
}
