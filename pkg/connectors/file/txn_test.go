package file

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sluice-stream/sluice/pkg/connectors/twophase"
)

func intLine(dst []byte, v int) []byte { return strconv.AppendInt(dst, int64(v), 10) }

// committed reads every committed line in dir; hidden files are not output.
func committed(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.Fields(string(b))...)
	}
	slices.Sort(lines)
	return lines
}

func hidden(t *testing.T, dir string) int {
	ents, _ := os.ReadDir(dir)
	n := 0
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			n++
		}
	}
	return n
}

func write(t *testing.T, s *twophase.Sink[int], from, to int) {
	for i := from; i <= to; i++ {
		if err := s.Write(i); err != nil {
			t.Fatal(err)
		}
	}
}

// TestExactlyOnceFileSink walks the two-phase commit through checkpoints, a lost
// notification, a crash and a restore.
func TestExactlyOnceFileSink(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tx := &Transactions[int]{Dir: dir, Format: intLine}
	s := twophase.New[int](tx, twophase.ExactlyOnce)
	if err := s.Open(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, 1, 3)
	if got := committed(t, dir); len(got) != 0 {
		t.Fatalf("visible before any checkpoint: %v", got)
	}
	if _, err := s.Snapshot(ctx, 1); err != nil {
		t.Fatal(err)
	}
	write(t, s, 4, 5)
	if got := committed(t, dir); len(got) != 0 {
		t.Fatalf("visible before checkpoint 1 completed: %v", got)
	}
	state2, err := s.Snapshot(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	// The notification of 1 is lost; 2's commits both (rule 7).
	if err := s.NotifyComplete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, dir); !slices.Equal(got, []string{"1", "2", "3", "4", "5"}) {
		t.Fatalf("after checkpoint 2: %v", got)
	}
	// A repeated notification is harmless.
	if err := s.NotifyComplete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	write(t, s, 6, 7)
	state3, err := s.Snapshot(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, 8, 9) // in the open transaction when the process "crashes"
	// Crash: no Close. Checkpoint 3 completed but its notification never came.
	s2 := twophase.New[int](&Transactions[int]{Dir: dir, Format: intLine}, twophase.ExactlyOnce)
	if err := s2.Open(ctx, state3); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, dir); !slices.Equal(got, []string{"1", "2", "3", "4", "5", "6", "7"}) {
		t.Fatalf("after restore from 3: %v (8 and 9 must not appear)", got)
	}
	// Restoring from an older checkpoint again (its transactions are committed already)
	// is idempotent.
	s3 := twophase.New[int](&Transactions[int]{Dir: dir, Format: intLine}, twophase.ExactlyOnce)
	if err := s3.Open(ctx, state2); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s3.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := hidden(t, dir); n != 1 {
		// The crashed attempt's open transaction (8, 9) stays hidden until the restore
		// aborts it: here s2 aborted it; only s.current of the crashed sink remains.
		t.Logf("hidden files left: %d", n)
	}
	if got := committed(t, dir); !slices.Equal(got, []string{"1", "2", "3", "4", "5", "6", "7"}) {
		t.Fatalf("final: %v", got)
	}
}

func TestCommitOfLostTransactionFails(t *testing.T) {
	tx := &Transactions[int]{Dir: t.TempDir(), Format: intLine}
	err := tx.Commit(context.Background(), []byte("part-0-x-1"))
	if err == nil || !strings.Contains(err.Error(), "lost") {
		t.Fatalf("Commit of a missing transaction = %v, want an error saying records are lost", err)
	}
}

func TestAtLeastOnceCommitsAtBarrier(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := twophase.New[int](&Transactions[int]{Dir: dir, Format: intLine}, twophase.AtLeastOnce)
	if err := s.Open(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, 1, 2)
	if _, err := s.Snapshot(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, dir); !slices.Equal(got, []string{"1", "2"}) {
		t.Fatalf("at-least-once did not commit at the barrier: %v", got)
	}
	write(t, s, 3, 3)
	if err := s.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, dir); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Fatalf("at end: %v", got)
	}
}

func TestEmptyTransactionsLeaveNoFiles(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := twophase.New[int](&Transactions[int]{Dir: dir, Format: intLine}, twophase.ExactlyOnce)
	if err := s.Open(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for id := int64(1); id <= 3; id++ {
		if _, err := s.Snapshot(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.NotifyComplete(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("empty transactions left %d files", len(ents))
	}
}

func FuzzDecodeState(f *testing.F) {
	f.Add(twophase.State{Pending: []twophase.PendingTxn{{Checkpoint: 3, Handle: []byte("a")}}, Open: []byte("b")}.Encode())
	f.Add(twophase.State{}.Encode())
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := twophase.DecodeState(data)
		if err != nil {
			return
		}
		// Varints may be written in more than one way; the state they mean must survive
		// a round trip.
		again, err := twophase.DecodeState(st.Encode())
		if err != nil || string(again.Encode()) != string(st.Encode()) {
			t.Fatalf("re-encoded state does not decode to the same state: %v", err)
		}
	})
}

// TestSavepointTransactionSurvivesFailover: a transaction open at checkpoint 1 is
// pre-committed for savepoint 2; the job fails over to checkpoint 1, whose restore
// aborts the transaction it left open and removes the leftovers, but keeps the
// savepoint's file; a later restore from the savepoint commits it.
func TestSavepointTransactionSurvivesFailover(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tx := &Transactions[int]{Dir: dir, Format: intLine}
	s := twophase.New[int](tx, twophase.ExactlyOnce)
	if err := s.Open(ctx, nil); err != nil {
		t.Fatal(err)
	}
	write(t, s, 1, 3)
	cp1, err := s.Snapshot(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.NotifyComplete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	write(t, s, 4, 6)
	tx.Savepoint = true
	sp2, err := s.Snapshot(ctx, 2)
	tx.Savepoint = false
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, 7, 8) // lost with the crash
	if got, _ := filepath.Glob(filepath.Join(dir, ".part-0-*.savepoint")); len(got) != 1 {
		t.Fatalf("savepoint files %v, want 1", got)
	}

	// Failover to checkpoint 1.
	tx1 := &Transactions[int]{Dir: dir, Format: intLine}
	r1 := twophase.New[int](tx1, twophase.ExactlyOnce)
	if err := r1.Open(ctx, cp1); err != nil {
		t.Fatal(err)
	}
	if err := tx1.RemoveStale(r1.Current()); err != nil {
		t.Fatal(err)
	}
	if got, _ := filepath.Glob(filepath.Join(dir, ".part-0-*.savepoint")); len(got) != 1 {
		t.Fatalf("after the failover's cleanup: savepoint files %v, want it kept", got)
	}
	if got := committed(t, dir); !slices.Equal(got, []string{"1", "2", "3"}) {
		t.Fatalf("committed after the failover: %v", got)
	}
	if err := r1.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// A new job from the savepoint commits what it pre-committed.
	tx2 := &Transactions[int]{Dir: dir, Format: intLine}
	r2 := twophase.New[int](tx2, twophase.ExactlyOnce)
	if err := r2.Open(ctx, sp2); err != nil {
		t.Fatal(err)
	}
	if err := tx2.RemoveStale(r2.Current()); err != nil {
		t.Fatal(err)
	}
	if got := committed(t, dir); !slices.Equal(got, []string{"1", "2", "3", "4", "5", "6"}) {
		t.Fatalf("committed after the restore from the savepoint: %v", got)
	}
	if err := r2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := hidden(t, dir); n != 0 {
		t.Fatalf("%d hidden files left", n)
	}
}
