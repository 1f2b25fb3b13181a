package checkpoint

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

func sampleMetadata() *sluicev1.CheckpointMetadata {
	file := func(p string) *sluicev1.StateFile {
		sum := sha256.Sum256([]byte(p))
		return &sluicev1.StateFile{Path: p, Size: 4096, Sha256: sum[:]}
	}
	return &sluicev1.CheckpointMetadata{
		JobId: "3f2a9c", JobName: "wordcount", CheckpointId: 42, Kind: sluicev1.SnapshotKind_SNAPSHOT_KIND_CHECKPOINT,
		TriggerTimeUnixMs: 1700000000000, CompletionTimeUnixMs: 1700000001234,
		Operators: []*sluicev1.OperatorState{
			{Uid: "source", Parallelism: 2, MaxParallelism: 128, Subtasks: []*sluicev1.SubtaskState{
				{Subtask: 0, OperatorState: []*sluicev1.OperatorListState{{Name: "offsets", Mode: sluicev1.RedistributionMode_REDISTRIBUTION_MODE_SPLIT, Entries: [][]byte{{1, 2}, {3}}}}},
				{Subtask: 1, OperatorState: []*sluicev1.OperatorListState{{Name: "offsets", Mode: sluicev1.RedistributionMode_REDISTRIBUTION_MODE_UNION}}},
			}},
			{Uid: "count", Parallelism: 1, MaxParallelism: 128, Subtasks: []*sluicev1.SubtaskState{
				{Subtask: 0, Timers: 17, Keyed: []*sluicev1.KeyedStateHandle{{
					KeyGroupStart: 0, KeyGroupEnd: 127, Backend: "rocksdb", IncrementalSize: 10, FullSize: 100,
					SharedFiles: []*sluicev1.StateFile{file("shared/a.sst"), file("shared/b.sst")}, PrivateFiles: []*sluicev1.StateFile{file("chk-42/MANIFEST")},
				}, {
					KeyGroupStart: 0, KeyGroupEnd: 1, Backend: "heap", File: &sluicev1.StateFile{InlineData: []byte("xyz")}, KeyGroupOffsets: []int64{0, 9},
				}}, ChannelState: []*sluicev1.ChannelState{{Edge: 1, Producer: 0, Consumer: 0, Input: true, File: file("chk-42/ch-1")}}},
			}},
		},
	}
}

// frame builds a _metadata file from its parts; sum nil computes the right checksum.
func frame(magic string, version uint16, length uint64, body, sum []byte) []byte {
	b := []byte(magic)
	b = binary.BigEndian.AppendUint16(b, version)
	b = binary.BigEndian.AppendUint64(b, length)
	b = append(b, body...)
	if sum == nil {
		s := sha256.Sum256(b)
		sum = s[:]
	}
	return append(b, sum...)
}

func mustEncode(t testing.TB, md *sluicev1.CheckpointMetadata) []byte {
	t.Helper()
	b, err := EncodeMetadata(md)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMetadataRoundTrip(t *testing.T) {
	for _, md := range []*sluicev1.CheckpointMetadata{sampleMetadata(), {}, {CheckpointId: 1}} {
		b := mustEncode(t, md)
		body, _ := proto.MarshalOptions{Deterministic: true}.Marshal(md)
		if want := frame(MetadataMagic, 1, uint64(len(body)), body, nil); !bytes.Equal(b, want) {
			t.Errorf("layout:\n got %x\nwant %x", b, want)
		}
		got, err := DecodeMetadata(b)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, md) {
			t.Errorf("round trip: got %v, want %v", got, md)
		}
		if again := mustEncode(t, got); !bytes.Equal(again, b) {
			t.Error("re-encoding differs")
		}
	}
}

func TestEncodeMetadataInvalidUTF8(t *testing.T) {
	if _, err := EncodeMetadata(&sluicev1.CheckpointMetadata{JobId: "\xff"}); err == nil {
		t.Error("invalid UTF-8 encoded")
	}
}

var decodeErrors = []error{ErrNotMetadata, ErrUnsupportedVersion, ErrTruncated, ErrTrailingData, ErrChecksum, ErrInvalidBody}

// checkOneSentinel fails unless err wraps exactly want among the decode errors.
func checkOneSentinel(t testing.TB, err, want error) {
	t.Helper()
	for _, e := range decodeErrors {
		if errors.Is(err, e) != (e == want) {
			t.Fatalf("error %q: errors.Is(%q) = %v", err, e, errors.Is(err, e))
		}
	}
}

func TestDecodeMetadataErrors(t *testing.T) {
	good := mustEncode(t, sampleMetadata())
	body := good[metadataHeaderLen : len(good)-metadataChecksumLen]
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x10
		return b
	}
	// A body in the wrong field order: the same message, not canonically encoded.
	var reordered []byte
	reordered = protowire.AppendTag(reordered, 2, protowire.VarintType)
	reordered = protowire.AppendVarint(reordered, 5)
	reordered = protowire.AppendTag(reordered, 1, protowire.BytesType)
	reordered = protowire.AppendString(reordered, "job")
	// A non-minimal varint for checkpoint_id = 5.
	nonMinimal := []byte{2 << 3, 0x85, 0x00}
	// A string field with invalid UTF-8.
	var badUTF8 []byte
	badUTF8 = protowire.AppendTag(badUTF8, 1, protowire.BytesType)
	badUTF8 = protowire.AppendString(badUTF8, "\xff")
	garbage := []byte{0xff, 0xff, 0xff}

	for _, tc := range []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrTruncated, "0 bytes"},
		{"magic prefix", []byte("SLUIC"), ErrTruncated, "shorter than the header"},
		{"short other", []byte("PK\x03"), ErrNotMetadata, "not a Sluice checkpoint metadata file"},
		{"zip file", append([]byte("PK\x03\x04\x14\x00\x00\x00"), good...), ErrNotMetadata, `starts with "PK......"`},
		{"a Flink _metadata", append([]byte{0x4a, 0x6d, 0x5c, 0x9e, 0, 0, 0, 3}, good...), ErrNotMetadata, "not a Sluice"},
		{"version 2", frame(MetadataMagic, 2, uint64(len(body)), body, nil), ErrUnsupportedVersion, "version 2 (this build reads version 1"},
		{"version 0", frame(MetadataMagic, 0, uint64(len(body)), body, nil), ErrUnsupportedVersion, "version 0"},
		{"version truncated", []byte("SLUICECP\x00"), ErrTruncated, "the header is 18"},
		{"length truncated", good[:15], ErrTruncated, "the header is 18"},
		{"body truncated", good[:metadataHeaderLen+3], ErrTruncated, "only 3 bytes follow"},
		{"checksum missing", good[:len(good)-metadataChecksumLen], ErrTruncated, "0 of the 32 checksum bytes"},
		{"checksum truncated", good[:len(good)-1], ErrTruncated, "31 of the 32 checksum bytes"},
		{"huge length", frame(MetadataMagic, 1, 1<<63, body, nil), ErrTruncated, "announces a 9223372036854775808-byte body"},
		{"trailing byte", append(bytes.Clone(good), 0), ErrTrailingData, "1 bytes after the checksum"},
		{"two files", append(bytes.Clone(good), good...), ErrTrailingData, "after the checksum"},
		{"body bit flip", flip(metadataHeaderLen + 5), ErrChecksum, "the file is corrupt"},
		{"checksum bit flip", flip(len(good) - 1), ErrChecksum, "the file is corrupt"},
		{"length shortened", func() []byte {
			b := bytes.Clone(good)
			binary.BigEndian.PutUint64(b[10:], uint64(len(body)-1))
			return b
		}(), ErrChecksum, "corrupt"},
		{"garbage body", frame(MetadataMagic, 1, 3, garbage, nil), ErrInvalidBody, "invalid checkpoint metadata body"},
		{"fields out of order", frame(MetadataMagic, 1, uint64(len(reordered)), reordered, nil), ErrInvalidBody, "not in the canonical encoding"},
		{"non-minimal varint", frame(MetadataMagic, 1, uint64(len(nonMinimal)), nonMinimal, nil), ErrInvalidBody, "not in the canonical encoding"},
		{"invalid UTF-8", frame(MetadataMagic, 1, uint64(len(badUTF8)), badUTF8, nil), ErrInvalidBody, "UTF-8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md, err := DecodeMetadata(tc.data)
			if md != nil || err == nil {
				t.Fatalf("decoded %v", md)
			}
			checkOneSentinel(t, err, tc.want)
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestDecodeMetadataEveryTruncation(t *testing.T) {
	good := mustEncode(t, sampleMetadata())
	for i := range good {
		if _, err := DecodeMetadata(good[:i]); !errors.Is(err, ErrTruncated) {
			t.Fatalf("truncated at %d of %d: %v", i, len(good), err)
		}
	}
}

func TestDecodeMetadataEveryBitFlip(t *testing.T) {
	good := mustEncode(t, sampleMetadata())
	for i := range good {
		for bit := range 8 {
			b := bytes.Clone(good)
			b[i] ^= 1 << bit
			if md, err := DecodeMetadata(b); err == nil {
				t.Fatalf("flipping bit %d of byte %d went unnoticed: %v", bit, i, md)
			}
		}
	}
}

func FuzzDecodeMetadata(f *testing.F) {
	good := mustEncode(f, sampleMetadata())
	f.Add(good)
	f.Add(mustEncode(f, &sluicev1.CheckpointMetadata{}))
	f.Add(mustEncode(f, &sluicev1.CheckpointMetadata{CheckpointId: 7, JobId: "j"}))
	f.Add(good[:len(good)/2])
	f.Add(append(bytes.Clone(good), 1))
	f.Add([]byte(MetadataMagic))
	f.Add([]byte{})
	body := []byte{2 << 3, 0x85, 0x00}
	f.Add(frame(MetadataMagic, 1, uint64(len(body)), body, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		md, err := DecodeMetadata(data)
		if err != nil {
			if md != nil {
				t.Fatal("a message with an error")
			}
			n := 0
			for _, e := range decodeErrors {
				if errors.Is(err, e) {
					n++
				}
			}
			if n != 1 {
				t.Fatalf("error %q wraps %d of the decode errors", err, n)
			}
			return
		}
		again, err := EncodeMetadata(md)
		if err != nil {
			t.Fatalf("decoded metadata does not encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding differs:\n got %x\nwant %x", again, data)
		}
		for i := range data {
			if _, err := DecodeMetadata(data[:i]); err == nil {
				t.Fatalf("truncated at %d of %d, it decodes", i, len(data))
			}
		}
	})
}
