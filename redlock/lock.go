package redlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/quorumlock/quorumlock/clock"
	"github.com/quorumlock/quorumlock/quorum"
)

// Lock is a held Redlock lock. It is safe for use from several goroutines.
//
// What a Lock guarantees: while the local clock is before Until, no other
// client following the algorithm can hold the same key — provided the
// nodes' clocks run at about the same rate as the caller's, nodes do not
// lose data inside a TTL (see the restart quarantine), and the caller is not
// paused. What it does not guarantee: that the holder notices in time. A
// process paused (GC, swap, a stopped VM) past Until keeps running its
// critical section after another client took the lock. Use Done (or the
// context given by Client.Do) to stop work when validity ends, and fence
// tokens (WithFencing, FencedSet) to make the storage refuse late writes.
type Lock struct {
	c        *Client
	req      *request
	token    string
	fence    uint64
	acquired time.Time

	ctx    context.Context // done when the lock ends; its cause says why
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	until    time.Time
	timer    clock.Timer
	released bool
	ended    bool
	lastErr  error // last failed extension, for the loss cause
	capped   bool  // auto-extension stopped at the maximum hold time

	// acquisition is the round that acquired the lock: nodes that had not
	// answered when it was decided may still set the key, so Release waits
	// for them before deleting there.
	acquisition interface {
		Collect() []quorum.Vote[vote]
		Wait() []quorum.Vote[vote]
	}

	leaveQueue func() // passes the client-local turn on; nil for TryAcquire
	extStop    chan struct{}
	extDone    chan struct{}
}

func (c *Client) newLock(req *request, token string, fence uint64, until time.Time) *Lock {
	l := &Lock{c: c, req: req, token: token, fence: fence, until: until, acquired: c.clk.Now()}
	l.ctx, l.cancel = context.WithCancelCause(context.Background())
	l.mu.Lock()
	l.armLocked()
	l.mu.Unlock()
	if req.s.autoExtend {
		l.extStop = make(chan struct{})
		l.extDone = make(chan struct{})
		go l.autoExtend()
	}
	return l
}

// Key returns the locked key.
func (l *Lock) Key() string { return l.req.key }

// Token returns the random value stored under the key on the nodes.
func (l *Lock) Token() string { return l.token }

// Fence returns the fence token of this acquisition: strictly larger than
// that of every earlier holder of the key. It is 0 unless the lock was
// acquired WithFencing.
func (l *Lock) Fence() uint64 { return l.fence }

// TTL returns the TTL the lock was acquired with.
func (l *Lock) TTL() time.Duration { return l.req.s.ttl }

// Until returns the local instant at which the lock's validity ends (the
// time of the first request + TTL − drift, moved by each extension).
func (l *Lock) Until() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.until
}

// Valid reports whether the lock is still held by the local reckoning: not
// released, not lost, and before Until.
func (l *Lock) Valid() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.ended && l.c.clk.Now().Before(l.until)
}

// Done returns a channel closed once, when the lock ends: released, expired,
// or lost. Err then says which.
func (l *Lock) Done() <-chan struct{} { return l.ctx.Done() }

// Err returns nil while the lock is held; afterwards ErrReleased, or a
// *LostError (matching ErrLockLost) wrapping the reason.
func (l *Lock) Err() error {
	if l.ctx.Err() == nil {
		return nil
	}
	return context.Cause(l.ctx)
}

// setLeave hands the lock the client-local queue turn it must pass on when
// it ends; if it has already ended (a tiny TTL), the turn passes at once.
func (l *Lock) setLeave(leave func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended {
		leave()
		return
	}
	l.leaveQueue = leave
}

// armLocked (re)starts the timer that ends the lock at until.
func (l *Lock) armLocked() {
	if l.timer != nil {
		l.timer.Stop()
	}
	l.timer = l.c.clk.AfterFunc(l.until.Sub(l.c.clk.Now()), l.onDeadline)
}

func (l *Lock) onDeadline() {
	l.mu.Lock()
	if l.ended {
		l.mu.Unlock()
		return
	}
	if l.c.clk.Now().Before(l.until) { // extended since the timer was set
		l.armLocked()
		l.mu.Unlock()
		return
	}
	var reason error = ErrExpired
	switch {
	case l.capped:
		reason = fmt.Errorf("%w: %w", ErrExpired, ErrMaxHold)
	case l.lastErr != nil:
		reason = fmt.Errorf("%w after failed extension: %w", ErrExpired, l.lastErr)
	}
	l.endLocked(&LostError{Key: l.req.key, Reason: reason})
	l.mu.Unlock()
}

// endLocked marks the lock ended with cause, once.
func (l *Lock) endLocked(cause error) {
	if l.ended {
		return
	}
	l.ended = true
	if l.timer != nil {
		l.timer.Stop()
	}
	if errors.Is(cause, ErrLockLost) {
		l.c.stats.lost.Add(1)
		l.c.logWarn("redlock: lock lost", "key", l.req.key, "reason", cause)
	}
	l.cancel(cause)
	if l.leaveQueue != nil {
		l.leaveQueue()
	}
}

// Extend resets the lock's TTL on the nodes and moves Until accordingly. It
// needs a majority and only works while the lock is still valid: it returns
// an error matching ErrNotHeld when the validity has ended or a majority no
// longer holds the token (the lock is then lost: Done closes), and one
// matching ErrNoQuorum when too few nodes answered (the lock stays valid
// until the old Until; try again).
func (l *Lock) Extend(ctx context.Context) error {
	l.mu.Lock()
	if l.ended || !l.c.clk.Now().Before(l.until) {
		l.mu.Unlock()
		return &QuorumError{Op: "extend", Key: l.req.key, Needed: l.c.Quorum(), Reason: fmt.Errorf("%w: %w", ErrNotHeld, ErrExpired)}
	}
	l.mu.Unlock()

	s := l.req.s
	start := l.c.clk.Now()
	r := quorum.Start(ctx, len(l.c.nodes), s.nodeTimeout, func(ctx context.Context, i int) (struct{}, bool, error) {
		n, err := extendScript.Run(ctx, l.c.nodes[i].rdb, []string{l.req.key}, l.token, l.req.ttlMs).Int64()
		return struct{}{}, n == 1, err
	})
	d := r.Decide()
	if d.OK && clock.Validity(s.ttl, l.c.clk.Since(start), s.driftFactor) > 0 {
		until := clock.Deadline(start, s.ttl, s.driftFactor)
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.ended {
			return &QuorumError{Op: "extend", Key: l.req.key, Done: d.Yes, Needed: r.Need(), Reason: ErrNotHeld}
		}
		if until.After(l.until) {
			l.until = until
			l.armLocked()
		}
		l.lastErr = nil
		l.c.stats.extended.Add(1)
		return nil
	}
	qe := l.quorumError("extend", r.Wait(), d.OK)
	l.mu.Lock()
	defer l.mu.Unlock()
	if errors.Is(qe.Reason, ErrNotHeld) {
		l.endLocked(&LostError{Key: l.req.key, Reason: qe})
	} else {
		l.lastErr = qe
	}
	return qe
}

// quorumError summarises a failed extend or release round.
func (l *Lock) quorumError(op string, votes []quorum.Vote[struct{}], slow bool) *QuorumError {
	qe := &QuorumError{Op: op, Key: l.req.key, Needed: quorum.Majority(len(l.c.nodes))}
	no := 0
	for _, v := range votes {
		switch v.Outcome {
		case quorum.Yes:
			qe.Done++
			continue
		case quorum.No:
			no++
			qe.Nodes = append(qe.Nodes, l.c.nodeError(v.Node, ErrNotHeld))
		default:
			qe.Nodes = append(qe.Nodes, l.c.nodeError(v.Node, v.Err))
		}
	}
	switch {
	case no >= qe.Needed:
		qe.Reason = ErrNotHeld
	case slow:
		qe.Reason = fmt.Errorf("%w: the round took longer than the TTL allows", ErrNoQuorum)
	default:
		qe.Reason = ErrNoQuorum
	}
	return qe
}

// Release deletes the key on every node where it still holds this lock's
// token (waiting for all of them, each bounded by the node timeout) and ends
// the lock. It returns nil when a majority deleted it; an error matching
// ErrNotHeld when the validity had already ended or a majority no longer held
// the token; one matching ErrNoQuorum when too few nodes answered (the key
// then expires on its own). Releasing twice returns ErrNotHeld.
func (l *Lock) Release(ctx context.Context) error {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return &QuorumError{Op: "release", Key: l.req.key, Needed: l.c.Quorum(), Reason: fmt.Errorf("%w: already released", ErrNotHeld)}
	}
	l.released = true
	expired := l.ended || !l.c.clk.Now().Before(l.until)
	l.mu.Unlock()
	l.stopAutoExtend()

	votes := l.releaseAll(ctx)

	l.mu.Lock()
	cause := error(ErrReleased)
	if expired && !l.ended {
		cause = &LostError{Key: l.req.key, Reason: ErrExpired}
	}
	l.endLocked(cause)
	l.mu.Unlock()

	qe := l.quorumError("release", votes, false)
	if expired {
		qe.Reason = fmt.Errorf("%w: %w", ErrNotHeld, ErrExpired)
		return qe
	}
	if qe.Done >= qe.Needed {
		l.c.stats.released.Add(1)
		return nil
	}
	return qe
}

// releaseAll deletes the key from every node where it still holds the
// token and returns the votes, indexed by node. A node that had not answered
// the acquisition may still set the key, so it is released only once its
// acquisition call has ended; the nodes that have answered are released at
// once, without waiting for it.
func (l *Lock) releaseAll(ctx context.Context) []quorum.Vote[struct{}] {
	n := len(l.c.nodes)
	buf := make([]int, 2*n)
	answered, pending := buf[:0:n], buf[n:n]
	if l.acquisition != nil {
		for _, v := range l.acquisition.Collect() {
			if v.Outcome == quorum.Pending {
				pending = append(pending, v.Node)
			} else {
				answered = append(answered, v.Node)
			}
		}
	} else {
		for i := 0; i < n; i++ {
			answered = append(answered, i)
		}
	}
	announce := l.req.s.wakeup
	if len(pending) == 0 { // every node, in order: votes are indexed by node
		return l.c.startRelease(ctx, l.req, l.token, answered, announce).Wait()
	}
	var now *quorum.Round[struct{}]
	if len(answered) > 0 {
		now = l.c.startRelease(ctx, l.req, l.token, answered, announce)
	}
	l.acquisition.Wait()
	later := l.c.startRelease(ctx, l.req, l.token, pending, announce)
	votes := make([]quorum.Vote[struct{}], n)
	for _, part := range []struct {
		r     *quorum.Round[struct{}]
		nodes []int
	}{{now, answered}, {later, pending}} {
		if part.r == nil {
			continue
		}
		for j, v := range part.r.Wait() {
			v.Node = part.nodes[j]
			votes[v.Node] = v
		}
	}
	return votes
}

// autoExtend extends the lock each time a third of its TTL is left, retrying
// failed extensions while the lock is still valid. It stops when the lock
// ends or is released, or at the maximum hold time.
func (l *Lock) autoExtend() {
	defer close(l.extDone)
	s := l.req.s
	ctx := l.ctx
	for {
		l.mu.Lock()
		until := l.until
		failing := l.lastErr != nil
		l.mu.Unlock()
		wait := until.Add(-s.ttl / 3).Sub(l.c.clk.Now())
		if failing {
			left := until.Sub(l.c.clk.Now())
			if left <= 0 {
				return // the deadline timer ends the lock with the failure as cause
			}
			wait = min(s.ttl/20, left)
		}
		if s.maxHold > 0 && l.c.clk.Now().Add(max(wait, 0)).Sub(l.acquired)+s.ttl > s.maxHold {
			l.mu.Lock()
			l.capped = true
			l.mu.Unlock()
			return
		}
		if wait > 0 {
			t := l.c.clk.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-l.extStop:
				t.Stop()
				return
			case <-t.C():
			}
		}
		select {
		case <-l.extStop:
			return
		default:
		}
		if err := l.Extend(ctx); err != nil && l.ctx.Err() != nil {
			return
		}
	}
}

func (l *Lock) stopAutoExtend() {
	if l.extStop == nil {
		return
	}
	l.mu.Lock()
	select {
	case <-l.extStop:
	default:
		close(l.extStop)
	}
	l.mu.Unlock()
	<-l.extDone
}
