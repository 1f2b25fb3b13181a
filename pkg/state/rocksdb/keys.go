package rocksdb

import (
	"encoding/binary"
)

// Key layout (docs/formats.md, "RocksDB keyed state"):
//
//	state key  kg | uvarint(len(key)) | key | uvarint(len(ns)) | ns [| user key]
//	timer key  kg | ts | uvarint(len(key)) | key | ns
//
// kg is the key group, big-endian, keygroup.PrefixLen bytes (1 when max parallelism
// <= 128, else 2), so the keys of a key-group range are one contiguous byte range; ts is
// the timestamp as 8 bytes big-endian with the sign bit flipped, so timers sort by time.
// The lengths make every key unambiguous: ("ab", "c") and ("a", "bc") differ, and the
// entries of one map (key, namespace) are exactly the keys with its prefix.

// appendKeyGroup appends the key-group prefix of kg (plen bytes).
func appendKeyGroup(dst []byte, kg, plen int) []byte {
	if plen == 1 {
		return append(dst, byte(kg))
	}
	return append(dst, byte(kg>>8), byte(kg))
}

// keyGroupOf reads the key-group prefix of a stored key (which has at least plen bytes).
func keyGroupOf(k []byte, plen int) int {
	if plen == 1 {
		return int(k[0])
	}
	return int(k[0])<<8 | int(k[1])
}

// keyGroupBound is the prefix of key group kg, the exclusive upper bound of the keys of
// the key groups before it. kg may be max parallelism (the bound of all keys).
func keyGroupBound(kg, plen int) []byte { return appendKeyGroup(nil, kg, plen) }

// uvarint decodes a uvarint at the start of b; n <= 0 when malformed.
func uvarint(b []byte) (uint64, int) { return binary.Uvarint(b) }

// parseStateKey splits a state key into its key group, key, namespace and the rest (the
// user key of map entries); ok is false for a malformed key.
func parseStateKey(k []byte, plen int) (kg int, key, ns, rest []byte, ok bool) {
	if len(k) < plen {
		return 0, nil, nil, nil, false
	}
	kg = keyGroupOf(k, plen)
	p := k[plen:]
	n, w := uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return 0, nil, nil, nil, false
	}
	key, p = p[w:w+int(n)], p[w+int(n):]
	n, w = uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return 0, nil, nil, nil, false
	}
	return kg, key, p[w : w+int(n)], p[w+int(n):], true
}

// appendTimerID appends a timer's ID, its key without the key-group prefix: the
// timestamp (sign bit flipped, big-endian), uvarint(len(key)), the key and the
// namespace. IDs compare in firing order: by time, then by key and namespace bytes.
func appendTimerID(dst []byte, ts int64, key, ns []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(ts)^(1<<63))
	dst = binary.AppendUvarint(dst, uint64(len(key)))
	dst = append(dst, key...)
	return append(dst, ns...)
}

// parseTimerID splits a timer ID; ok is false when it is malformed.
func parseTimerID(id []byte) (ts int64, key, ns []byte, ok bool) {
	if len(id) < 9 {
		return 0, nil, nil, false
	}
	ts = int64(binary.BigEndian.Uint64(id) ^ (1 << 63))
	p := id[8:]
	n, w := uvarint(p)
	if w <= 0 || n > uint64(len(p)-w) {
		return 0, nil, nil, false
	}
	return ts, p[w : w+int(n)], p[w+int(n):], true
}

// prefixEnd returns the smallest key greater than every key starting with p (nil when
// there is none: p is all 0xff), in a new slice.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
