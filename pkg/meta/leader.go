package meta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Leadership is held by the process that won Campaign, until it is lost or resigned.
// Pass it to every write: the writes are fenced by its Revision.
type Leadership struct {
	s         *Store
	candidate string
	address   string
	rev       int64
	sess      *concurrency.Session

	done     chan struct{} // closed when lost or resigned
	stop     context.CancelFunc
	exited   chan struct{} // closed when the watcher goroutine returned
	lostOnce sync.Once
}

// Done is closed when this leadership ends: its lease expired or was revoked (e.g. the
// process was paused or cut off from etcd for longer than the lease TTL), the leader key
// was deleted, Resign was called, or the Store was closed. After that every fenced write
// with it fails with ErrNotLeader. Done may close late (only the fencing is exact); a
// leader must stop acting as leader when it closes.
func (l *Leadership) Done() <-chan struct{} { return l.done }

// Revision is the leader key's CreateRevision: the fencing token.
func (l *Leadership) Revision() int64 { return l.rev }

// CandidateID is the ID this leadership campaigned with.
func (l *Leadership) CandidateID() string { return l.candidate }

// Address is the address this leadership published (WithAddress); empty if none.
func (l *Leadership) Address() string { return l.address }

// LeaseID is the etcd lease the leader key is attached to.
func (l *Leadership) LeaseID() clientv3.LeaseID { return l.sess.Lease() }

// Resign gives up the leadership: it revokes the lease, which deletes the leader key so
// that another candidate takes over at once. Done is closed when Resign returns. If etcd
// cannot be reached the leadership still ends, at the latest when the lease expires
// (the lease is no longer renewed); the error says so.
func (l *Leadership) Resign(ctx context.Context) error {
	l.stop()
	<-l.exited
	l.sess.Orphan() // stop renewing
	rctx, cancel := l.s.reqCtx(ctx)
	defer cancel()
	_, err := l.s.cli.Revoke(rctx, l.sess.Lease())
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("meta: resign: revoking the lease (it expires in at most %s): %w", l.s.opts.leaseTTL, err)
	}
	return nil
}

func (l *Leadership) markLost() {
	l.lostOnce.Do(func() { close(l.done) })
}

// LeaderInfo describes the current leader. The zero value means that nobody leads.
type LeaderInfo struct {
	CandidateID string
	// Address is where the leader serves (WithAddress); empty if it published none.
	Address  string
	Revision int64 // the leader key's CreateRevision
}

// leaderValue is the leader key's value when the leader published an address: JSON
// {"id":"<candidate>","address":"<host:port>"}. Without an address the value is the
// candidate ID alone.
type leaderValue struct {
	ID      string `json:"id"`
	Address string `json:"address"`
}

func encodeLeader(candidateID, address string) string {
	if address == "" {
		return candidateID
	}
	b, _ := json.Marshal(leaderValue{ID: candidateID, Address: address}) // cannot fail
	return string(b)
}

func decodeLeader(kv *mvccpb.KeyValue) LeaderInfo {
	li := LeaderInfo{CandidateID: string(kv.Value), Revision: kv.CreateRevision}
	var v leaderValue
	if len(kv.Value) > 0 && kv.Value[0] == '{' && json.Unmarshal(kv.Value, &v) == nil && v.ID != "" {
		li.CandidateID, li.Address = v.ID, v.Address
	}
	return li
}

// Leader reads who leads now. ErrNotFound if nobody does.
func (s *Store) Leader(ctx context.Context) (LeaderInfo, error) {
	rctx, cancel := s.reqCtx(ctx)
	defer cancel()
	resp, err := s.cli.Get(rctx, s.leaderKey())
	if err != nil {
		return LeaderInfo{}, readErr("leader", err)
	}
	if len(resp.Kvs) == 0 {
		return LeaderInfo{}, fmt.Errorf("meta: leader: %w", ErrNotFound)
	}
	return decodeLeader(resp.Kvs[0]), nil
}

// ObserveLeader follows the leader key for processes that need to find the leader
// (task managers): the channel receives the current leader (the zero LeaderInfo while
// nobody leads), then every change. A slow receiver gets the latest value only: an
// unread value is replaced by a newer one. Through etcd outages it keeps trying (with
// pauses, never busily), so the value may be stale while etcd is unreachable. The
// channel is closed when ctx ends or the Store closes; its goroutine belongs to the
// Store, which waits for it in Close.
func (s *Store) ObserveLeader(ctx context.Context) <-chan LeaderInfo {
	ch := make(chan LeaderInfo, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		close(ch)
		return ch
	}
	s.wg.Add(1)
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		defer s.wg.Done()
		defer close(ch)
		// Close must not wait for a read stuck on an unreachable etcd: it ends ctx.
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			select {
			case <-s.closing:
				cancel()
			case <-ctx.Done():
			}
		}()
		s.observeLeader(ctx, ch)
		cancel()
		<-closed
	}()
	return ch
}

func (s *Store) observeLeader(ctx context.Context, ch chan LeaderInfo) {
	var last *LeaderInfo
	emit := func(li LeaderInfo) {
		if last != nil && *last == li {
			return
		}
		last = &li
		// This goroutine is the only sender: after dropping an unread value the send
		// cannot block.
		select {
		case <-ch:
		default:
		}
		ch <- li
	}
	key := s.leaderKey()
	backoff := newBackoff()
	for ctx.Err() == nil {
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Get(rctx, key)
		cancel()
		if err != nil {
			if s.sleepCtx(ctx, backoff.next()) != nil {
				return
			}
			continue
		}
		backoff.reset()
		if len(resp.Kvs) == 0 {
			emit(LeaderInfo{})
		} else {
			emit(decodeLeader(resp.Kvs[0]))
		}
		s.watchLeader(ctx, key, resp.Header.Revision+1, emit)
		// The watch broke (no etcd leader, compaction, reconnect): read again after a
		// pause.
		if s.sleepCtx(ctx, backoff.next()) != nil {
			return
		}
	}
}

// watchLeader passes every change of the leader key from revision from to emit, until
// the watch breaks or ctx ends.
func (s *Store) watchLeader(ctx context.Context, key string, from int64, emit func(LeaderInfo)) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, key, clientv3.WithRev(from))
	for {
		select {
		case <-ctx.Done():
			return
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil || wr.Canceled {
				return
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					emit(LeaderInfo{})
				} else {
					emit(decodeLeader(ev.Kv))
				}
			}
		}
	}
}

// errSessionLost: the campaign's lease was lost before it won; start over.
var errSessionLost = errors.New("meta: lease lost during campaign")

// CampaignOption configures Campaign.
type CampaignOption func(*campaignOptions)

type campaignOptions struct{ address string }

// WithAddress publishes address (host:port) with the leadership, in the leader key's
// value, so that followers find the leader (Leader, ObserveLeader).
func WithAddress(address string) CampaignOption {
	return func(o *campaignOptions) { o.address = address }
}

// Campaign blocks until this process is the leader, and returns its Leadership. The
// candidate ID (e.g. the jobmanager's ID) becomes the leader key's value, with the
// address if one is given (WithAddress). It waits through etcd outages; it returns
// early only when ctx ends or the Store closes.
func (s *Store) Campaign(ctx context.Context, candidateID string, opts ...CampaignOption) (*Leadership, error) {
	if candidateID == "" {
		return nil, errors.New("meta: campaign: empty candidate ID")
	}
	var o campaignOptions
	for _, opt := range opts {
		opt(&o)
	}
	backoff := newBackoff()
	for {
		if s.isClosed() {
			return nil, ErrClosed
		}
		sess, err := s.newSession(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("meta: campaign: %w", ctx.Err())
			}
			s.log.Info("meta: campaign: cannot create lease, retrying", "err", err)
			if err := s.sleepCtx(ctx, backoff.next()); err != nil {
				return nil, fmt.Errorf("meta: campaign: %w", err)
			}
			continue
		}
		l, err := s.campaign(ctx, sess, candidateID, o.address)
		if err == nil {
			return l, nil
		}
		s.dropSession(sess)
		if !errors.Is(err, errSessionLost) {
			return nil, fmt.Errorf("meta: campaign: %w", err)
		}
	}
}

func (s *Store) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Store) newSession(ctx context.Context) (*concurrency.Session, error) {
	ttl := int64(math.Ceil(s.opts.leaseTTL.Seconds()))
	rctx, cancel := s.reqCtx(ctx)
	resp, err := s.cli.Grant(rctx, ttl)
	cancel()
	if err != nil {
		return nil, err
	}
	// The session keeps the lease alive until it is orphaned or the client closes;
	// its context is the client's, not the campaign's.
	sess, err := concurrency.NewSession(s.cli, concurrency.WithLease(resp.ID), concurrency.WithTTL(int(ttl)))
	if err != nil {
		s.revokeQuietly(resp.ID)
		return nil, err
	}
	return sess, nil
}

// dropSession stops renewing the session's lease and revokes it, best effort.
func (s *Store) dropSession(sess *concurrency.Session) {
	sess.Orphan()
	s.revokeQuietly(sess.Lease())
}

func (s *Store) revokeQuietly(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, _ = s.cli.Revoke(ctx, id)
}

// campaign tries to create the leader key with sess's lease, waiting for the current
// leader's key to go away as often as needed.
func (s *Store) campaign(ctx context.Context, sess *concurrency.Session, candidateID, address string) (*Leadership, error) {
	key := s.leaderKey()
	value := encodeLeader(candidateID, address)
	lease := sess.Lease()
	backoff := newBackoff()
	for {
		select {
		case <-sess.Done():
			return nil, errSessionLost
		default:
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, value, clientv3.WithLease(lease))).
			Else(clientv3.OpGet(key)).
			Commit()
		cancel()
		if err != nil {
			// Possibly committed: the next round finds our own key (same lease).
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			s.log.Info("meta: campaign: etcd request failed, retrying", "err", err)
			if err := s.sleepCtx(ctx, backoff.next()); err != nil {
				return nil, err
			}
			continue
		}
		backoff.reset()
		var rev int64
		if resp.Succeeded {
			rev = resp.Header.Revision
		} else if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 && clientv3.LeaseID(kvs[0].Lease) == lease {
			rev = kvs[0].CreateRevision // an earlier try of ours committed
		}
		if rev != 0 {
			return s.startLeadership(sess, candidateID, address, rev)
		}
		if err := s.waitDeleted(ctx, sess, key, resp.Header.Revision+1); err != nil {
			return nil, err
		}
	}
}

// waitDeleted returns when key may have been deleted at or after revision from (the
// caller re-checks), or with an error when ctx ends, the session is lost or the store
// closes.
func (s *Store) waitDeleted(ctx context.Context, sess *concurrency.Session, key string, from int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, key, clientv3.WithRev(from), clientv3.WithFilterPut())
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return ErrClosed
		case <-sess.Done():
			return errSessionLost
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil || wr.Canceled {
				// Watch broken (no etcd leader, compaction, reconnect): re-check after
				// a pause so that an etcd outage does not become a busy loop.
				return s.sleepCtx(ctx, 200*time.Millisecond)
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return nil
				}
			}
		}
	}
}

func (s *Store) startLeadership(sess *concurrency.Session, candidateID, address string, rev int64) (*Leadership, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	// The session's context ends with the lease's keep-alive, so that a Watch call that
	// blocks while etcd is unreachable returns when the lease is lost.
	ctx, stop := context.WithCancel(sess.Ctx())
	l := &Leadership{
		s:         s,
		candidate: candidateID,
		address:   address,
		rev:       rev,
		sess:      sess,
		done:      make(chan struct{}),
		stop:      stop,
		exited:    make(chan struct{}),
	}
	s.leaderships[l] = struct{}{}
	s.wg.Add(1)
	go l.watch(ctx)
	s.log.Info("meta: leadership acquired", "candidate", candidateID, "revision", rev, "lease", fmt.Sprintf("%x", sess.Lease()))
	return l, nil
}

// watch closes Done when the leadership ends: the session's lease is lost (revoked,
// expired, or not renewed in time), the leader key is deleted or replaced, or ctx
// ends (Resign, Store.Close).
func (l *Leadership) watch(ctx context.Context) {
	s := l.s
	reason := "resigned"
	defer func() {
		l.markLost()
		s.mu.Lock()
		delete(s.leaderships, l)
		s.mu.Unlock()
		if reason != "resigned" {
			s.log.Warn("meta: leadership lost", "candidate", l.candidate, "revision", l.rev, "reason", reason)
			// If etcd still has the lease (we merely could not renew it in time), revoke
			// it so that the next leader need not wait for it to expire.
			s.dropSession(l.sess)
		}
		close(l.exited)
		s.wg.Done()
	}()
	key := s.leaderKey()
	next := l.rev + 1
	backoff := newBackoff()
	for {
		lost := l.watchFrom(ctx, key, &next)
		select {
		case <-l.sess.Done(): // closed before the session cancels ctx
			reason = "lease lost"
			return
		default:
		}
		if ctx.Err() != nil {
			return
		}
		if lost != "" {
			reason = lost
			return
		}
		// The watch broke; after a pause (no busy loop while etcd has no leader), read
		// the key to learn what we may have missed.
		select {
		case <-ctx.Done():
			return
		case <-l.sess.Done():
			reason = "lease lost"
			return
		case <-time.After(backoff.next()):
		}
		rctx, cancel := s.reqCtx(ctx)
		resp, err := s.cli.Get(rctx, key)
		cancel()
		if err != nil {
			continue
		}
		if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != l.rev {
			reason = "leader key deleted"
			return
		}
		next = resp.Header.Revision + 1
	}
}

// watchFrom watches the leader key from *next. It returns a non-empty reason when the
// leadership is lost, or an empty one when the watch broke or ctx ended.
func (l *Leadership) watchFrom(ctx context.Context, key string, next *int64) string {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := l.s.cli.Watch(wctx, key, clientv3.WithRev(*next))
	for {
		select {
		case <-ctx.Done():
			return ""
		case <-l.sess.Done():
			return "lease lost"
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil || wr.Canceled {
				return "" // broken: no etcd leader, compacted, client closing
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE || ev.Kv.CreateRevision != l.rev {
					return "leader key deleted"
				}
			}
			*next = wr.Header.Revision + 1
		}
	}
}

// backoff is a small exponential backoff for retries against etcd.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{} }

func (b *backoff) next() time.Duration {
	switch {
	case b.d == 0:
		b.d = 50 * time.Millisecond
	case b.d < 2*time.Second:
		b.d *= 2
	}
	return b.d
}

func (b *backoff) reset() { b.d = 0 }
