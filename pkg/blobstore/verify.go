package blobstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// verifier reads a file and checks it against its StateFile: it fails as soon as more
// bytes arrive than the size says, when the last expected byte arrives and the SHA-256
// differs (the read that would deliver it returns the error instead), and at the end of
// the file, instead of io.EOF, when the size differs. Errors are sticky.
type verifier struct {
	r    io.ReadCloser
	name string
	size int64
	sum  []byte
	h    hash.Hash
	n    int64
	err  error
}

func newVerifier(r io.ReadCloser, name string, f *sluicev1.StateFile) *verifier {
	return &verifier{r: r, name: name, size: f.GetSize(), sum: f.GetSha256(), h: sha256.New()}
}

func (v *verifier) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.r.Read(p)
	v.h.Write(p[:n])
	v.n += int64(n)
	if v.n > v.size {
		v.err = fmt.Errorf("blobstore: read %s: %w: size mismatch: expected %d bytes, read more", v.name, ErrCorrupt, v.size)
		// Return no data: none of this file can be trusted.
		return 0, v.err
	}
	if n > 0 && v.n == v.size {
		// All the bytes are in: check the sum now rather than at io.EOF, for a caller
		// that stops reading at the known size.
		if err := v.check(); err != io.EOF {
			v.err = err
			return 0, v.err
		}
	}
	switch {
	case err == io.EOF:
		v.err = v.check()
		return n, v.err
	case err != nil:
		v.err = fmt.Errorf("blobstore: read %s: %w", v.name, err)
		return n, v.err
	}
	return n, nil
}

// check runs at the end of the file: io.EOF if all is well.
func (v *verifier) check() error {
	if v.n != v.size {
		return fmt.Errorf("blobstore: read %s: %w: size mismatch: expected %d bytes, read %d", v.name, ErrCorrupt, v.size, v.n)
	}
	if got := v.h.Sum(nil); !bytes.Equal(got, v.sum) {
		return fmt.Errorf("blobstore: read %s: %w: sha256 mismatch: expected %s, read %s", v.name, ErrCorrupt, hex.EncodeToString(v.sum), hex.EncodeToString(got))
	}
	return io.EOF
}

func (v *verifier) Close() error { return v.r.Close() }
