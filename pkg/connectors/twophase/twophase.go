// Package twophase is the two-phase-commit sink framework: records go into a
// transaction that is pre-committed when a checkpoint's barrier passes the sink and
// committed only once that checkpoint completed, so a sink's output contains exactly the
// records of completed checkpoints.
//
// The contract, which every Transactions implementation must keep:
//   - Begin opens a transaction; Write adds records to it; nothing is visible to readers.
//   - PreCommit makes the transaction durable and ready to commit (e.g. fsync a file,
//     PREPARE TRANSACTION); nothing is visible yet, and no record is added afterwards.
//   - Commit makes a pre-committed transaction visible. It must be idempotent: it runs
//     again after a failure between commit and the next checkpoint, and for every
//     transaction restored from a checkpoint (recover-and-commit).
//   - Abort discards a transaction that was not pre-committed by a completed
//     checkpoint; also idempotent (it runs for transactions left open by a crash).
//
// Notifications of completed checkpoints may be lost or arrive late (ARCHITECTURE rule 7):
// a notification for checkpoint n commits every pending transaction of a checkpoint <= n.
package twophase

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Txn is an open transaction.
type Txn interface {
	// Handle identifies the transaction durably (e.g. a file name or a prepared
	// transaction ID): it is stored in checkpoints and given to Commit or Abort after a
	// restore, possibly by another process.
	Handle() []byte
}

// Transactions is what a two-phase-commit sink implements for records of type T.
type Transactions[T any] interface {
	Begin(ctx context.Context) (Txn, error)
	Write(txn Txn, v T) error
	PreCommit(ctx context.Context, txn Txn) error
	Commit(ctx context.Context, handle []byte) error
	Abort(ctx context.Context, handle []byte) error
}

// Guarantee is a sink's delivery guarantee.
type Guarantee string

const (
	// ExactlyOnce commits on checkpoint completion: every record exactly once.
	ExactlyOnce Guarantee = "exactly-once"
	// AtLeastOnce commits at every checkpoint barrier: records after the last completed
	// checkpoint may be written again after a failure.
	AtLeastOnce Guarantee = "at-least-once"
	// None commits as it goes (at barriers and at the end); no guarantee across failures.
	None Guarantee = "none"
)

// ParseGuarantee parses a delivery guarantee name.
func ParseGuarantee(s string) (Guarantee, error) {
	switch g := Guarantee(s); g {
	case ExactlyOnce, AtLeastOnce, None:
		return g, nil
	}
	return "", fmt.Errorf("delivery guarantee %q: use exactly-once, at-least-once or none", s)
}

type pending struct {
	checkpoint int64
	handle     []byte
}

// Sink drives a Transactions implementation through checkpoints. It is used by one
// goroutine (the sink's task loop).
type Sink[T any] struct {
	tx        Transactions[T]
	guarantee Guarantee
	current   Txn
	pending   []pending // pre-committed, waiting for their checkpoint to complete
}

// New returns a sink with the given guarantee.
func New[T any](tx Transactions[T], g Guarantee) *Sink[T] {
	return &Sink[T]{tx: tx, guarantee: g}
}

// Open restores the sink from its checkpointed state (nil when starting fresh): the
// transactions pre-committed for the restored checkpoint are committed (they belong to
// it, which completed, even if the notification never arrived), the transaction that was
// open is aborted, and a new transaction begins.
func (s *Sink[T]) Open(ctx context.Context, restored []byte) error {
	if restored != nil {
		st, err := DecodeState(restored)
		if err != nil {
			return err
		}
		for _, p := range st.Pending {
			if err := s.tx.Commit(ctx, p.Handle); err != nil {
				return fmt.Errorf("recover and commit transaction %q of checkpoint %d: %w", p.Handle, p.Checkpoint, err)
			}
		}
		if st.Open != nil {
			if err := s.tx.Abort(ctx, st.Open); err != nil {
				return fmt.Errorf("abort transaction %q left open: %w", st.Open, err)
			}
		}
	}
	return s.begin(ctx)
}

func (s *Sink[T]) begin(ctx context.Context) error {
	txn, err := s.tx.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	s.current = txn
	return nil
}

// Write adds a record to the open transaction.
func (s *Sink[T]) Write(v T) error { return s.tx.Write(s.current, v) }

// Snapshot pre-commits the open transaction for checkpoint id, begins the next one and
// returns the state to checkpoint. With a weaker guarantee than exactly-once the
// transaction is committed right away.
func (s *Sink[T]) Snapshot(ctx context.Context, id int64) ([]byte, error) {
	if err := s.tx.PreCommit(ctx, s.current); err != nil {
		return nil, fmt.Errorf("pre-commit for checkpoint %d: %w", id, err)
	}
	h := s.current.Handle()
	s.current = nil
	if s.guarantee == ExactlyOnce {
		s.pending = append(s.pending, pending{checkpoint: id, handle: h})
	} else if err := s.tx.Commit(ctx, h); err != nil {
		return nil, fmt.Errorf("commit at checkpoint %d: %w", id, err)
	}
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	st := State{Open: s.current.Handle()}
	for _, p := range s.pending {
		st.Pending = append(st.Pending, PendingTxn{Checkpoint: p.checkpoint, Handle: p.handle})
	}
	return st.Encode(), nil
}

// NotifyComplete commits every pending transaction of a checkpoint <= id.
func (s *Sink[T]) NotifyComplete(ctx context.Context, id int64) error {
	var keep []pending
	for _, p := range s.pending {
		if p.checkpoint > id {
			keep = append(keep, p)
			continue
		}
		if err := s.tx.Commit(ctx, p.handle); err != nil {
			return fmt.Errorf("commit transaction of checkpoint %d: %w", p.checkpoint, err)
		}
	}
	s.pending = keep
	return nil
}

// Current is the open transaction.
func (s *Sink[T]) Current() Txn { return s.current }

// Pending lists the checkpoints whose transactions wait for completion.
func (s *Sink[T]) Pending() []int64 {
	var ids []int64
	for _, p := range s.pending {
		ids = append(ids, p.checkpoint)
	}
	return ids
}

// Finish ends the input and commits everything: the pending transactions and the open
// one. End of input reaches a sink only after every source saw a checkpoint that
// followed its last record complete (the runtime holds sources back until then), so no
// record committed here can be replayed by a restore.
func (s *Sink[T]) Finish(ctx context.Context) error {
	if err := s.tx.PreCommit(ctx, s.current); err != nil {
		return err
	}
	h := s.current.Handle()
	s.current = nil
	for _, p := range s.pending {
		if err := s.tx.Commit(ctx, p.handle); err != nil {
			return fmt.Errorf("commit transaction of checkpoint %d: %w", p.checkpoint, err)
		}
	}
	s.pending = nil
	return s.tx.Commit(ctx, h)
}

// Close aborts the open transaction (after a failure or cancel); pre-committed ones stay
// for the next attempt to commit or abort.
func (s *Sink[T]) Close(ctx context.Context) error {
	if s.current == nil {
		return nil
	}
	h := s.current.Handle()
	s.current = nil
	return s.tx.Abort(ctx, h)
}

// PendingTxn is a pre-committed transaction in checkpointed state.
type PendingTxn struct {
	Checkpoint int64
	Handle     []byte
}

// State is a sink's checkpointed state.
type State struct {
	Pending []PendingTxn
	Open    []byte
}

const stateVersion = 1

// Encode serializes the state.
func (st State) Encode() []byte {
	b := []byte{stateVersion}
	b = binary.AppendUvarint(b, uint64(len(st.Pending)))
	for _, p := range st.Pending {
		b = binary.AppendVarint(b, p.Checkpoint)
		b = binary.AppendUvarint(b, uint64(len(p.Handle)))
		b = append(b, p.Handle...)
	}
	if st.Open == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendUvarint(b, uint64(len(st.Open)))
	return append(b, st.Open...)
}

// ErrBadState says checkpointed sink state does not decode.
var ErrBadState = errors.New("twophase: malformed sink state")

// DecodeState parses what Encode wrote.
func DecodeState(b []byte) (State, error) {
	var st State
	if len(b) == 0 || b[0] != stateVersion {
		return st, fmt.Errorf("%w: unknown version", ErrBadState)
	}
	b = b[1:]
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)) {
		return st, ErrBadState
	}
	b = b[w:]
	bytesField := func() ([]byte, bool) {
		l, w := binary.Uvarint(b)
		if w <= 0 || uint64(len(b)-w) < l {
			return nil, false
		}
		v := slices.Clone(b[w : w+int(l)])
		b = b[w+int(l):]
		return v, true
	}
	for i := uint64(0); i < n; i++ {
		id, w := binary.Varint(b)
		if w <= 0 {
			return st, ErrBadState
		}
		b = b[w:]
		h, ok := bytesField()
		if !ok {
			return st, ErrBadState
		}
		st.Pending = append(st.Pending, PendingTxn{Checkpoint: id, Handle: h})
	}
	if len(b) == 0 {
		return st, ErrBadState
	}
	hasOpen := b[0]
	b = b[1:]
	switch hasOpen {
	case 0:
	case 1:
		h, ok := bytesField()
		if !ok {
			return st, ErrBadState
		}
		st.Open = h
	default:
		return st, ErrBadState
	}
	if len(b) != 0 {
		return st, fmt.Errorf("%w: trailing bytes", ErrBadState)
	}
	return st, nil
}
