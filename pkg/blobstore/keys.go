package blobstore

import (
	"errors"
	"fmt"
	"strings"
)

// maxKeyLen is the longest key (with the store's prefix) that every driver accepts:
// S3 and GCS allow 1024 bytes, Azure more.
const maxKeyLen = 1024

// ErrInvalidKey is returned (wrapped) for a key that the store refuses: see checkKey.
var ErrInvalidKey = errors.New("invalid key")

// checkKey checks a key: "/"-separated elements (no leading, trailing or doubled "/"),
// each valid for checkElem. Keys are restricted to characters that no driver escapes,
// so a key names the same object, and on file:// the same path, everywhere.
func checkKey(key string) error {
	if key == "" {
		return fmt.Errorf("blobstore: %w: empty key", ErrInvalidKey)
	}
	if len(key) > maxKeyLen {
		return fmt.Errorf("blobstore: %w: key %.40q... is longer than %d bytes", ErrInvalidKey, key, maxKeyLen)
	}
	for elem := range strings.SplitSeq(key, "/") {
		if err := checkElem(elem); err != nil {
			return fmt.Errorf("blobstore: %w %q: %s", ErrInvalidKey, key, err)
		}
	}
	return nil
}

// checkPrefix checks a directory prefix: "" or a valid key followed by "/".
func checkPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	dir, ok := strings.CutSuffix(prefix, "/")
	if !ok {
		return fmt.Errorf("blobstore: %w: directory %q does not end in \"/\"", ErrInvalidKey, prefix)
	}
	return checkKey(dir)
}

// checkElem checks one path element. It returns a reason without the element.
func checkElem(elem string) error {
	switch {
	case elem == "":
		return errors.New(`empty path element (leading, trailing or doubled "/")`)
	case elem == "." || elem == "..":
		return fmt.Errorf("path element %q is not allowed", elem)
	case strings.HasSuffix(elem, ".attrs"):
		return errors.New(`the suffix ".attrs" is reserved (file:// sidecar files)`)
	case isTempName(elem):
		return errors.New(`the suffix ".<hex>.tmp" is reserved (file:// files being written)`)
	case strings.Contains(elem, "__0x"):
		return errors.New(`"__0x" is reserved (gocloud's key escaping)`)
	}
	for i := 0; i < len(elem); i++ {
		if !keyChar(elem[i]) {
			return fmt.Errorf("character %q is not allowed (use letters, digits and ._-=+~)", elem[i])
		}
	}
	return nil
}

func keyChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("._-=+~", c) >= 0
}

// isTempName reports whether a path element has the form fileblob gives the temporary
// file of a write in progress: "<name>.<hex nanoseconds>.tmp", next to the final file
// (the store opens file:// buckets with no_tmp_dir; see the package documentation).
func isTempName(elem string) bool {
	rest, ok := strings.CutSuffix(elem, ".tmp")
	if !ok {
		return false
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 || i == len(rest)-1 {
		return false
	}
	for _, c := range []byte(rest[i+1:]) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isTempKey reports whether the last element of key is a fileblob temporary file.
func isTempKey(key string) bool {
	return isTempName(key[strings.LastIndexByte(key, '/')+1:])
}
