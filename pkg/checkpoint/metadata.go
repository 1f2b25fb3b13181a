package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/protobuf/proto"
)

// The _metadata file of a checkpoint or savepoint is framed as
//
//	offset  size  field
//	0       8     magic "SLUICECP"
//	8       2     format version, big-endian uint16 (MetadataVersion)
//	10      8     length n of the body, big-endian uint64
//	18      n     body: the CheckpointMetadata protobuf, deterministically encoded
//	18+n    32    SHA-256 of bytes [0, 18+n)
//
// and nothing after the checksum. SHA-256 is the checksum the metadata records for every
// state file too, so one tool verifies both.
//
// The body must be exactly the encoding EncodeMetadata writes (Go protobuf's
// deterministic encoding): a file therefore has one valid encoding, and any file that
// decodes re-encodes to the same bytes. A body that parses as protobuf but is not in
// that form (fields out of order, a repeated singular field, non-minimal varints) was
// not written by Sluice and is rejected as invalid.

// MetadataMagic starts every _metadata file.
const MetadataMagic = "SLUICECP"

// MetadataVersion is the version of the framing that EncodeMetadata writes and
// DecodeMetadata reads.
const MetadataVersion uint16 = 1

const (
	metadataHeaderLen   = len(MetadataMagic) + 2 + 8
	metadataChecksumLen = sha256.Size
)

// The errors of DecodeMetadata, wrapped with details; test for them with errors.Is.
var (
	// ErrNotMetadata: the bytes do not start with the magic, so they are not a Sluice
	// checkpoint or savepoint _metadata file at all.
	ErrNotMetadata = errors.New("not a Sluice checkpoint metadata file")
	// ErrUnsupportedVersion: a _metadata file of a format version this build cannot read.
	ErrUnsupportedVersion = errors.New("unsupported checkpoint metadata version")
	// ErrTruncated: the file ends before its header, body or checksum does.
	ErrTruncated = errors.New("truncated checkpoint metadata")
	// ErrTrailingData: bytes follow the checksum.
	ErrTrailingData = errors.New("trailing data after checkpoint metadata")
	// ErrChecksum: the SHA-256 does not match the bytes before it: the file is corrupt.
	ErrChecksum = errors.New("checkpoint metadata checksum mismatch")
	// ErrInvalidBody: the checksum matches but the body is not a valid, canonically
	// encoded CheckpointMetadata.
	ErrInvalidBody = errors.New("invalid checkpoint metadata body")
)

var marshalOptions = proto.MarshalOptions{Deterministic: true}

// EncodeMetadata returns the _metadata file for md. It fails only if md cannot be
// encoded as protobuf (a string field with invalid UTF-8).
func EncodeMetadata(md *sluicev1.CheckpointMetadata) ([]byte, error) {
	size := marshalOptions.Size(md)
	buf := make([]byte, metadataHeaderLen, metadataHeaderLen+size+metadataChecksumLen)
	copy(buf, MetadataMagic)
	binary.BigEndian.PutUint16(buf[len(MetadataMagic):], MetadataVersion)
	buf, err := marshalOptions.MarshalAppend(buf, md)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: encode metadata of checkpoint %d: %w", md.GetCheckpointId(), err)
	}
	body := len(buf) - metadataHeaderLen
	binary.BigEndian.PutUint64(buf[len(MetadataMagic)+2:], uint64(body))
	sum := sha256.Sum256(buf)
	return append(buf, sum[:]...), nil
}

// DecodeMetadata parses and verifies a _metadata file. Its errors wrap ErrNotMetadata,
// ErrUnsupportedVersion, ErrTruncated, ErrTrailingData, ErrChecksum or ErrInvalidBody.
func DecodeMetadata(data []byte) (*sluicev1.CheckpointMetadata, error) {
	m := len(MetadataMagic)
	if len(data) < m {
		if bytes.HasPrefix([]byte(MetadataMagic), data) {
			return nil, fmt.Errorf("%w: %d bytes, shorter than the header", ErrTruncated, len(data))
		}
		return nil, fmt.Errorf("%w (it does not start with %q)", ErrNotMetadata, MetadataMagic)
	}
	if string(data[:m]) != MetadataMagic {
		return nil, fmt.Errorf("%w (it starts with %q, not %q)", ErrNotMetadata, printable(data[:m]), MetadataMagic)
	}
	if len(data) < m+2 {
		return nil, fmt.Errorf("%w: %d bytes, the header is %d", ErrTruncated, len(data), metadataHeaderLen)
	}
	if v := binary.BigEndian.Uint16(data[m:]); v != MetadataVersion {
		return nil, fmt.Errorf("%w: version %d (this build reads version %d; use a newer Sluice)", ErrUnsupportedVersion, v, MetadataVersion)
	}
	if len(data) < metadataHeaderLen {
		return nil, fmt.Errorf("%w: %d bytes, the header is %d", ErrTruncated, len(data), metadataHeaderLen)
	}
	n := binary.BigEndian.Uint64(data[m+2:])
	rest := uint64(len(data) - metadataHeaderLen)
	if n > rest || n > math.MaxInt-uint64(metadataHeaderLen+metadataChecksumLen) {
		return nil, fmt.Errorf("%w: the header announces a %d-byte body, only %d bytes follow", ErrTruncated, n, rest)
	}
	end := metadataHeaderLen + int(n)
	if len(data) < end+metadataChecksumLen {
		return nil, fmt.Errorf("%w: %d of the %d checksum bytes present", ErrTruncated, len(data)-end, metadataChecksumLen)
	}
	sum := sha256.Sum256(data[:end])
	if !bytes.Equal(sum[:], data[end:end+metadataChecksumLen]) {
		return nil, fmt.Errorf("%w: the file is corrupt (SHA-256 %x recorded, %x computed)", ErrChecksum, data[end:end+metadataChecksumLen], sum)
	}
	if extra := len(data) - end - metadataChecksumLen; extra > 0 {
		return nil, fmt.Errorf("%w: %d bytes after the checksum", ErrTrailingData, extra)
	}
	body := data[metadataHeaderLen:end]
	md := &sluicev1.CheckpointMetadata{}
	if err := proto.Unmarshal(body, md); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidBody, err)
	}
	canon, err := marshalOptions.Marshal(md)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidBody, err)
	}
	if !bytes.Equal(canon, body) {
		return nil, fmt.Errorf("%w: the protobuf body is not in the canonical encoding Sluice writes", ErrInvalidBody)
	}
	return md, nil
}

// printable quotes b for an error message, replacing bytes that are not printable ASCII.
func printable(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		out[i] = c
	}
	return string(out)
}
