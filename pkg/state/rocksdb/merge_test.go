//go:build cgo

package rocksdb_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/pkg/keygroup"
	"github.com/sluice-stream/sluice/pkg/state/rocksdb"
	sluicev1 "github.com/sluice-stream/sluice/proto/sluice/v1"
)

// TestMergeByIngestion: three subtasks' checkpoints (one incremental, lists with
// unmerged appends) restore into one backend and into ranges that clip the database's
// handle; the ingested key groups then take further updates (appends onto ingested
// lists, overwrites, deletions, timers), and the merged database checkpoints and
// restores. No temporary directory stays behind.
func TestMergeByIngestion(t *testing.T) {
	for _, maxP := range []int{128, 1000} {
		t.Run(fmt.Sprintf("maxP=%d", maxP), func(t *testing.T) {
			store, _ := fileStore(t)
			want := content{}
			var hs []*sluicev1.KeyedStateHandle
			for i := range 3 {
				o := opts(t, maxP, keygroup.RangeFor(i, 3, maxP))
				o.Subtask = i
				b := newBackend(t, rocksdb.Config{Incremental: i == 1}, o)
				mixed(t, b, want, uint64(40+i), 900, 9000)
				hs = append(hs, checkpoint(t, b, store, 1))
			}
			for i, r := range []keygroup.Range{
				all(maxP),
				{Start: maxP / 5, End: maxP - 1}, // the database's handle clipped below
				{Start: maxP / 5, End: maxP / 2}, // clipped above, the others in part
			} {
				b := restore(t, rocksdb.Config{Incremental: true}, opts(t, maxP, r), store, hs...)
				ents, err := os.ReadDir(b.Dir())
				must(t, err)
				for _, e := range ents {
					if strings.HasPrefix(e.Name(), "restore-") {
						t.Fatalf("%v: %s left in the instance directory", r, e.Name())
					}
				}
				got := want.in(r)
				mixed(t, b, got, 50, 900, 6000)
				h := checkpoint(t, b, store, int64(2+i))
				sameContent(t, fmt.Sprintf("%v, updated and restored", r), contentOf(t, restore(t, rocksdb.Config{}, opts(t, maxP, r), store, h)), got)
				sameContent(t, fmt.Sprintf("%v, updated", r), contentOf(t, b), got)
			}
		})
	}
}
