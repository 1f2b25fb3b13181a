package jobmanager

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sluice-stream/sluice/pkg/rpc"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

func TestParseRestorePath(t *testing.T) {
	for _, tc := range []struct {
		path string
		want restoreSource
	}{
		{"file:///ckpt/abc/chk-42", restoreSource{storage: "file:///ckpt/abc", metadataKey: "chk-42/_metadata", jobID: "abc", id: 42}},
		{"file:///ckpt/abc/chk-42/_metadata", restoreSource{storage: "file:///ckpt/abc", metadataKey: "chk-42/_metadata", jobID: "abc", id: 42}},
		{"s3://b/p/abc/chk-7/?region=x", restoreSource{storage: "s3://b/p/abc?region=x", metadataKey: "chk-7/_metadata", jobID: "abc", id: 7}},
		{"file:///sp/savepoint-abcdef-0123456789ab", restoreSource{storage: "file:///sp/savepoint-abcdef-0123456789ab", metadataKey: "_metadata", savepoint: true}},
		{"file:///moved/anything/_metadata", restoreSource{storage: "file:///moved/anything", metadataKey: "_metadata", savepoint: true}},
		{"s3://bucket/sp/x/?region=eu", restoreSource{storage: "s3://bucket/sp/x?region=eu", metadataKey: "_metadata", savepoint: true}},
		{"mem://sp/savepoint-1", restoreSource{storage: "mem://sp/savepoint-1", metadataKey: "_metadata", savepoint: true}},
	} {
		got, err := parseRestorePath(tc.path)
		tc.want.path = tc.path
		if err != nil || got != tc.want {
			t.Errorf("parseRestorePath(%q) = %+v, %v; want %+v", tc.path, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "savepoint-x", "/abs/path", "s3://bucket", "file://", "file:///"} {
		if _, err := parseRestorePath(bad); !errors.Is(err, rpc.ErrInvalid) {
			t.Errorf("parseRestorePath(%q): %v, want an invalid-argument error", bad, err)
		}
	}
}

func TestURLHelpers(t *testing.T) {
	if got := joinURL("s3://b/sp/?region=x", "savepoint-a-b/"); got != "s3://b/sp/savepoint-a-b?region=x" {
		t.Errorf("joinURL: %q", got)
	}
	if got := readOnlyURL("file:///a/b"); got != "file:///a/b?create_dir=" {
		t.Errorf("readOnlyURL: %q", got)
	}
	if got := readOnlyURL("file:///a/b?no_tmp_dir=1&create_dir=1"); got != "file:///a/b?no_tmp_dir=1&create_dir=1" {
		t.Errorf("readOnlyURL keeps an explicit create_dir: %q", got)
	}
	if got := readOnlyURL("s3://b/p"); got != "s3://b/p" {
		t.Errorf("readOnlyURL of s3: %q", got)
	}
	if !sameLocation("file:///a/b/", "file:///a/b?create_dir=") || sameLocation("file:///a/b", "file:///a/bc") {
		t.Error("sameLocation")
	}
}

// TestCheckFit: state of an operator the job lacks (unless allowed), another max
// parallelism, keyed state for an operator that is not keyed, and another backend's
// native format are refused with one line naming the operator.
func TestCheckFit(t *testing.T) {
	g := &sluicev1.JobGraph{MaxParallelism: 128, Operators: []*sluicev1.Operator{
		{Uid: "src", Kind: "source"}, {Uid: "count", Kind: "keyed-process"}, {Uid: "map", Kind: "map"},
	}}
	keyed := func(h *sluicev1.KeyedStateHandle) []*sluicev1.SubtaskState {
		return []*sluicev1.SubtaskState{{Keyed: []*sluicev1.KeyedStateHandle{h}}}
	}
	canonical := &sluicev1.KeyedStateHandle{KeyGroupEnd: 127, Backend: "heap", File: &sluicev1.StateFile{Path: "chk-3/x"}}
	native := &sluicev1.KeyedStateHandle{KeyGroupEnd: 127, Backend: "rocksdb", PrivateFiles: []*sluicev1.StateFile{{Path: "chk-3/y"}}}
	ops := func(extra ...*sluicev1.OperatorState) *sluicev1.CheckpointMetadata {
		return &sluicev1.CheckpointMetadata{CheckpointId: 3, Kind: sluicev1.SnapshotKind_SNAPSHOT_KIND_SAVEPOINT, Operators: append([]*sluicev1.OperatorState{
			{Uid: "src", MaxParallelism: 128, Subtasks: []*sluicev1.SubtaskState{{OperatorState: []*sluicev1.OperatorListState{{Name: "p", Entries: [][]byte{{1}}}}}}},
		}, extra...)}
	}
	src := restoreSource{storage: "file:///sp/savepoint-x", savepoint: true}
	for _, tc := range []struct {
		name    string
		md      *sluicev1.CheckpointMetadata
		allow   bool
		backend string
		want    string
	}{
		{"fits", ops(&sluicev1.OperatorState{Uid: "count", MaxParallelism: 128, Subtasks: keyed(canonical)}), false, "rocksdb", ""},
		{"canonical into another backend", ops(&sluicev1.OperatorState{Uid: "count", MaxParallelism: 128, Subtasks: keyed(canonical)}), false, "rocksdb", ""},
		{"native into the same backend", ops(&sluicev1.OperatorState{Uid: "count", MaxParallelism: 128, Subtasks: keyed(native)}), false, "rocksdb", ""},
		{"native into another backend", ops(&sluicev1.OperatorState{Uid: "count", MaxParallelism: 128, Subtasks: keyed(native)}), false, "hashmap", `native format`},
		{"unknown operator", ops(&sluicev1.OperatorState{Uid: "gone", MaxParallelism: 128, Subtasks: keyed(canonical)}), false, "", `"gone", which the job does not have (submit with --allow-non-restored-state`},
		{"unknown operator allowed", ops(&sluicev1.OperatorState{Uid: "gone", MaxParallelism: 128, Subtasks: keyed(canonical)}), true, "", ""},
		{"unknown operator without state", ops(&sluicev1.OperatorState{Uid: "gone", MaxParallelism: 128, Subtasks: []*sluicev1.SubtaskState{{}}}), false, "", ""},
		{"max parallelism", ops(&sluicev1.OperatorState{Uid: "count", MaxParallelism: 256, Subtasks: keyed(canonical)}), false, "", "max parallelism 256, the job has 128"},
		{"keyed state of a map", ops(&sluicev1.OperatorState{Uid: "map", MaxParallelism: 128, Subtasks: keyed(canonical)}), false, "", `operator "map", which is not keyed`},
	} {
		err := checkFit(tc.md, src, g, tc.allow, tc.backend)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, rpc.ErrFailedPrecondition)):
			t.Errorf("%s: %v; want a failed precondition saying %q", tc.name, err, tc.want)
		}
	}
}

func TestRestoreTimeoutsGrowWithTheState(t *testing.T) {
	small := &sluicev1.DeployTaskRequest{}
	big := &sluicev1.DeployTaskRequest{Restore: []*sluicev1.OperatorRestore{{Keyed: []*sluicev1.KeyedStateHandle{
		{PrivateFiles: []*sluicev1.StateFile{{Path: "a", Size: 40 << 30}}},
	}}}}
	if d := deployTimeout(small); d != rpcTimeout {
		t.Errorf("deploy timeout without state: %v", d)
	}
	if d := deployTimeout(big); d != rpcTimeout+2560*time.Second {
		t.Errorf("deploy timeout for 40 GiB: %v, want %v", d, rpcTimeout+2560*time.Second)
	}
	md := &sluicev1.CheckpointMetadata{Operators: []*sluicev1.OperatorState{{Subtasks: []*sluicev1.SubtaskState{{Keyed: big.Restore[0].Keyed}}}}}
	if d := verifyTimeout(md, true); d != restoreBase+2560*time.Second {
		t.Errorf("deep verification of 40 GiB: %v", d)
	}
	if d := verifyTimeout(md, false); d != restoreBase {
		t.Errorf("quick verification: %v", d)
	}
}
