// Package builtin holds the connectors every job can use without configuration: a
// deterministic keyed sequence source, a print sink and a blackhole sink.
package builtin

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/sluice-stream/sluice/pkg/api"
)

// Sequence emits, for keys 0..Keys-1, the sequence numbers 1..PerKey (unbounded when
// PerKey is 0). Subtask i of p owns the keys k with k % p == i and emits them
// round-robin, so each key's sequence is in order and a rerun emits the same records:
// the replayable source that exactly-once tests need. Its position (the next sequence
// number of every key) is checkpointed as operator state, split over the subtasks on
// restore, so a restored subtask continues each of its keys where the checkpoint left it.
type Sequence[T any] struct {
	Keys   int
	PerKey int64
	// Rate limits the whole source to this many records per second (0: unlimited).
	Rate float64
	// Make builds the record for (key, seq).
	Make func(key int, seq int64) T

	keys    []int   // keys of this subtask
	nexts   []int64 // next sequence number of each key
	cur     int     // index of the key to emit next
	live    int     // keys not finished
	emitted int64
	start   time.Time
	rate    float64 // this subtask's share

	pos *api.OperatorListState[position]
}

// position is a key and the next sequence number it emits.
type position struct{ Key, Next int64 }

type positionCodec struct{}

func (positionCodec) Append(dst []byte, p position) []byte {
	dst = binary.AppendVarint(dst, p.Key)
	return binary.AppendVarint(dst, p.Next)
}

func (positionCodec) Decode(b []byte) (position, error) {
	k, n := binary.Varint(b)
	if n <= 0 {
		return position{}, errors.New("sequence: bad position")
	}
	next, m := binary.Varint(b[n:])
	if m <= 0 || n+m != len(b) {
		return position{}, errors.New("sequence: bad position")
	}
	return position{Key: k, Next: next}, nil
}

// Open takes the subtask's keys: the restored positions, or its share of the keys.
func (s *Sequence[T]) Open(_ context.Context, rc *api.RuntimeContext) error {
	if s.Keys < 1 {
		return fmt.Errorf("sequence: keys must be at least 1, got %d", s.Keys)
	}
	pos, err := api.NewOperatorListState[position](rc, "sequence-positions", positionCodec{}, api.SplitRedistribution)
	if err != nil {
		return err
	}
	s.pos = pos
	s.start = time.Now()
	s.rate = s.Rate / float64(rc.Parallelism)
	if pos.Restored() {
		ps, err := pos.Get()
		if err != nil {
			return err
		}
		for _, p := range ps {
			s.keys = append(s.keys, int(p.Key))
			s.nexts = append(s.nexts, p.Next)
		}
	} else {
		for k := rc.Subtask; k < s.Keys; k += rc.Parallelism {
			s.keys = append(s.keys, k)
			s.nexts = append(s.nexts, 1)
		}
	}
	for _, n := range s.nexts {
		if !s.done(n) {
			s.live++
		}
	}
	return nil
}

func (s *Sequence[T]) done(next int64) bool { return s.PerKey > 0 && next > s.PerKey }

// SnapshotState records the next sequence number of every key of the subtask.
func (s *Sequence[T]) SnapshotState(int64) error {
	ps := make([]position, len(s.keys))
	for i, k := range s.keys {
		ps[i] = position{Key: int64(k), Next: s.nexts[i]}
	}
	s.pos.Update(ps)
	return nil
}

const batch = 1024

// Poll emits up to a batch of records, respecting the rate.
func (s *Sequence[T]) Poll(out api.Emitter[T]) (api.PollResult, error) {
	if s.live == 0 {
		return api.End, nil
	}
	n := int64(batch)
	if s.rate > 0 {
		allowed := int64(time.Since(s.start).Seconds()*s.rate) + 1 - s.emitted
		if allowed <= 0 {
			wait := time.Duration(float64(time.Second) / s.rate)
			return api.Idle(min(max(wait, time.Millisecond), 100*time.Millisecond)), nil
		}
		n = min(n, allowed)
	}
	for ; n > 0 && s.live > 0; s.cur = (s.cur + 1) % len(s.keys) {
		next := s.nexts[s.cur]
		if s.done(next) {
			continue
		}
		out.Emit(s.Make(s.keys[s.cur], next))
		s.emitted++
		n--
		s.nexts[s.cur] = next + 1
		if s.done(next + 1) {
			s.live--
		}
	}
	if s.live == 0 {
		return api.End, nil
	}
	return api.More, nil
}

// Close does nothing.
func (s *Sequence[T]) Close() error { return nil }

// Print writes each record as a line "<subtask>> <record>" to W (default stdout), like
// Flink's print sink.
type Print[T any] struct {
	W      io.Writer
	Format func(T) string
	prefix string
	bw     *bufio.Writer
}

var stdoutMu sync.Mutex

// Open prepares the writer.
func (p *Print[T]) Open(_ context.Context, rc *api.RuntimeContext) error {
	if p.W == nil {
		p.W = lockedStdout{}
	}
	p.bw = bufio.NewWriter(p.W)
	if rc.Parallelism > 1 {
		p.prefix = fmt.Sprintf("%d> ", rc.Subtask+1)
	}
	return nil
}

// Write prints one record.
func (p *Print[T]) Write(v T) error {
	s := ""
	if p.Format != nil {
		s = p.Format(v)
	} else {
		s = fmt.Sprint(v)
	}
	p.bw.WriteString(p.prefix)
	p.bw.WriteString(s)
	if err := p.bw.WriteByte('\n'); err != nil {
		return err
	}
	if p.bw.Buffered() > 32<<10 {
		return p.bw.Flush()
	}
	return nil
}

// Finish flushes.
func (p *Print[T]) Finish() error { return p.bw.Flush() }

// Close flushes what is left.
func (p *Print[T]) Close() error { return p.bw.Flush() }

type lockedStdout struct{}

func (lockedStdout) Write(b []byte) (int, error) {
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	return os.Stdout.Write(b)
}

// Blackhole discards records (for benchmarks and tests).
type Blackhole[T any] struct{ api.Base }

// Write discards v.
func (Blackhole[T]) Write(T) error { return nil }

// Finish does nothing.
func (Blackhole[T]) Finish() error { return nil }
