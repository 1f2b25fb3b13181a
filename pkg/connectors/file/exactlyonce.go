package file

import (
	"context"

	"github.com/sluice-stream/sluice/pkg/api"
	"github.com/sluice-stream/sluice/pkg/connectors/twophase"
)

// TransactionalSink writes records as lines into Dir through two-phase commit: with the
// exactly-once guarantee a file becomes visible (renamed from a hidden name) only once
// the checkpoint that covers its records completed, so readers see every record exactly
// once across failures and restores. Files are part-<subtask>-<random>-<n>.
type TransactionalSink[T any] struct {
	Dir       string
	Format    func(dst []byte, v T) []byte
	Guarantee twophase.Guarantee // default exactly-once

	ctx   context.Context
	tx    *Transactions[T]
	sink  *twophase.Sink[T]
	state *api.OperatorListState[[]byte]
}

type bytesCodec = api.BytesCodec

// Open restores the subtask's transactions: the pre-committed ones of the restored
// checkpoint are committed, the one left open is aborted.
func (s *TransactionalSink[T]) Open(ctx context.Context, rc *api.RuntimeContext) error {
	g := s.Guarantee
	if g == "" {
		g = twophase.ExactlyOnce
	}
	st, err := api.NewOperatorListState[[]byte](rc, "file-sink-transactions", bytesCodec{}, api.SplitRedistribution)
	if err != nil {
		return err
	}
	s.ctx, s.state = ctx, st
	tx := &Transactions[T]{Dir: s.Dir, Subtask: rc.Subtask, Format: s.Format}
	s.tx, s.sink = tx, twophase.New[T](tx, g)
	restored, err := st.Get()
	if err != nil {
		return err
	}
	if err := s.restore(ctx, rc, g, restored); err != nil {
		return err
	}
	// What is left of earlier attempts (transactions begun after the last checkpoint
	// they reached) never became output: remove it.
	return tx.RemoveStale(s.sink.Current())
}

func (s *TransactionalSink[T]) restore(ctx context.Context, rc *api.RuntimeContext, g twophase.Guarantee, restored [][]byte) error {
	if len(restored) == 0 {
		return s.sink.Open(ctx, nil)
	}
	// After a rescale a subtask may hold the entries of several old subtasks: recover
	// all of them, then start its own.
	for _, r := range restored[1:] {
		extra := twophase.New[T](&Transactions[T]{Dir: s.Dir, Subtask: rc.Subtask, Format: s.Format}, g)
		if err := extra.Open(ctx, r); err != nil {
			return err
		}
		if err := extra.Close(ctx); err != nil {
			return err
		}
	}
	return s.sink.Open(ctx, restored[0])
}

// Write adds a record to the open transaction.
func (s *TransactionalSink[T]) Write(v T) error { return s.sink.Write(v) }

// SnapshotState pre-commits the open transaction for checkpoint id.
func (s *TransactionalSink[T]) SnapshotState(id int64) error {
	b, err := s.sink.Snapshot(s.ctx, id)
	if err != nil {
		return err
	}
	s.state.Update([][]byte{b})
	return nil
}

// SnapshotSavepointState pre-commits the open transaction for savepoint id under a name
// of its own (see Transactions.Savepoint), which the cleanup after a failover keeps: a
// failover to an earlier checkpoint, before the next checkpoint committed it, must not
// delete what a restore from the savepoint commits.
func (s *TransactionalSink[T]) SnapshotSavepointState(id int64) error {
	s.tx.Savepoint = true
	defer func() { s.tx.Savepoint = false }()
	return s.SnapshotState(id)
}

// NotifyCheckpointComplete commits the transactions of checkpoints up to id.
func (s *TransactionalSink[T]) NotifyCheckpointComplete(id int64) error {
	return s.sink.NotifyComplete(s.ctx, id)
}

// Finish commits everything at the end of input.
func (s *TransactionalSink[T]) Finish() error { return s.sink.Finish(s.ctx) }

// Close aborts the open transaction (pre-committed ones wait for the next attempt).
func (s *TransactionalSink[T]) Close() error {
	if s.sink == nil {
		return nil
	}
	return s.sink.Close(context.Background())
}
