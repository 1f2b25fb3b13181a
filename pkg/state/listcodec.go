package state

import (
	"encoding/binary"
	"fmt"
)

// The canonical encoding of a list state's elements, used in snapshot files (and by
// the heap backend in memory): each element as uvarint(len) followed by its bytes.

// AppendListElem appends the encoding of one element to list.
func AppendListElem(list, v []byte) []byte {
	list = binary.AppendUvarint(list, uint64(len(v)))
	return append(list, v...)
}

// EncodeList returns the encoding of vs appended to dst.
func EncodeList(dst []byte, vs [][]byte) []byte {
	for _, v := range vs {
		dst = AppendListElem(dst, v)
	}
	return dst
}

// ForEachListElem calls fn with each element of an encoded list (sub-slices of list).
// A malformed list is an error wrapping ErrCorrupt.
func ForEachListElem(list []byte, fn func(v []byte) error) error {
	for len(list) > 0 {
		n, k := binary.Uvarint(list)
		if k <= 0 || n > uint64(len(list)-k) {
			return fmt.Errorf("%w: malformed list element", ErrCorrupt)
		}
		if err := fn(list[k : k+int(n) : k+int(n)]); err != nil {
			return err
		}
		list = list[k+int(n):]
	}
	return nil
}

// ValidList reports whether list is a well-formed encoded list.
func ValidList(list []byte) bool {
	return ForEachListElem(list, func([]byte) error { return nil }) == nil
}
