package redlock

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/quorumlock/quorumlock/internal/reintroduce"
	"github.com/quorumlock/quorumlock/quorum"
)

// Lock is a held Redlock lock. It is safe for use from several goroutines.
//
// What a Lock guarantees: while the local clock is before Until, no other
// client following the algorithm holds the same key — provided the nodes'
// clocks run at about the rate of the caller's, the nodes keep their data
// for a TTL or serve the restart quarantine, and the caller is not paused.
// What it does not guarantee: that the holder notices in time. A process
// paused (GC, swap, a stopped VM) past Until keeps running its critical
// section after another client took the lock. Use Done (or the context
// given by Client.Do) to stop work when the lock ends, and fence tokens
// (WithFencing, FencedSet) to make the storage refuse late writes.
type Lock struct {
	c        *Client
	req      *request
	token    string
	fence    uint64
	acquired time.Time
	lease    lease
	released atomic.Bool
	// acq is the round that acquired the lock: a node that had not answered
	// when it was decided may still set the key, so Release deletes there
	// only once that call ended.
	acq *quorum.Round[vote]

	ka keepState // auto-extension bookkeeping, guarded by the keeper

	// waiter is the id this lock's holder had in the key's queue ("" when
	// it never queued): the release takes it out.
	waiter string

	// record is the election's leader record this lock carries (nil
	// outside elections): each extension extends it too, and writes it
	// again where a node lost it.
	record atomic.Pointer[leaderRecord]
}

func (c *Client) newLock(req *request, token string, fence uint64, until time.Time, acq *quorum.Round[vote]) *Lock {
	l := &Lock{c: c, req: req, token: token, fence: fence, acquired: c.clk.Now(), acq: acq}
	l.ka.index = -1
	c.stats.holding.Add(1)
	l.lease.start(c.clk, req.key, until, l.onEnd)
	if req.s.autoExtend {
		c.keeper.schedule(l)
	}
	return l
}

// onEnd runs once when the lease ends.
func (l *Lock) onEnd(cause error) {
	l.c.stats.holding.Add(-1)
	l.c.recordHeld(l.c.clk.Since(l.acquired), cause)
	if errors.Is(cause, ErrLockLost) {
		l.c.stats.lost.Add(1)
		l.c.log.warn("lost "+l.req.key, "redlock: lock lost", "key", l.req.key, "reason", reasonText(cause))
	}
	l.c.keeper.remove(l)
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

// Until returns the local instant at which the lock's validity ends (when
// the first request was sent + TTL − drift, moved by each extension).
func (l *Lock) Until() time.Time { return l.lease.deadline() }

// Valid reports whether the lock is still held by the local reckoning: not
// released, not lost, and before Until.
func (l *Lock) Valid() bool { return l.lease.valid() }

// Done returns a channel closed once, when the lock ends: released, expired,
// or lost. Err then says which.
func (l *Lock) Done() <-chan struct{} { return l.lease.ctx.Done() }

// Err returns nil while the lock is held; afterwards ErrReleased, or an
// error matching ErrLockLost that wraps why (ErrExpired, ErrNotHeld).
func (l *Lock) Err() error {
	if l.lease.ctx.Err() == nil {
		return nil
	}
	return context.Cause(l.lease.ctx)
}

// Extend resets the lock's TTL on the nodes and moves Until. It needs a
// majority and works only while the lock is valid. Its error is a
// *RoundError: ErrNotHeld when a majority no longer holds the token (the
// lock is then lost: Done closes at once, without waiting for the nodes that
// have not answered), ErrExpired when the validity had ended, ErrNoQuorum or
// the ctx's error when too few nodes answered (the lock stays valid until the
// old Until; try again).
func (l *Lock) Extend(ctx context.Context) error {
	ctx = orBackground(ctx)
	if l.released.Load() {
		return l.roundError("extend", withDetail(ErrNotHeld, "the lock was released"))
	}
	if !l.Valid() {
		return l.roundError("extend", ErrExpired)
	}
	start := l.c.clk.Now()
	r := l.c.startExtend(ctx, l.req, l.token, l.record.Load())
	return l.settleExtend(ctx, start, r.Decide(), func() *RoundError { return l.c.roundFailure("extend", l.req, r, nil) })
}

// settleExtend applies the decision d of an extension round started at
// start: the lock is extended, lost (a majority refused), or left to run out
// with the failure noted. ctx is the round's; explain describes its votes.
func (l *Lock) settleExtend(ctx context.Context, start time.Time, d quorum.Decision, explain func() *RoundError) error {
	s := l.req.s
	if d.OK && validity(s.ttl, l.c.clk.Since(start), s.driftFactor) > 0 {
		if l.lease.extendTo(deadline(start, s.ttl, s.driftFactor)) {
			l.c.stats.extended.Add(1)
			return nil
		}
		return l.roundError("extend", withDetail(ErrNotHeld, "the lock ended during the extension"))
	}
	e := explain()
	switch {
	case d.No >= e.Needed:
		e.Reason = ErrNotHeld
		l.c.stats.extendRefused.Add(1)
		l.lease.end(withDetail(ErrNotHeld, "a majority of nodes no longer holds the token"), true)
		return e
	case d.OK:
		e.Reason, e.detail = ErrExpired, "the round took longer than the TTL allows"
	case ctx.Err() != nil:
		e.Reason = ctx.Err()
	default:
		e.Reason = ErrNoQuorum
	}
	l.c.stats.extendFailed.Add(1)
	l.lease.noteFailure(e)
	return e
}

// Release ends the lock and deletes the key on every node where it still
// holds this lock's token. The lock ends first (Done closes, the guard
// refuses), then the deletes go out. Release returns when every node has
// answered, or ctx ends, whichever is first; deletes still under way go on
// in the background, so a cancelled ctx never leaves the key behind for its
// TTL. Each delete is bounded by the request timeout; one that waits for a
// free connection of its node (many locks released at once) waits until
// the lock's validity ends at most, and the wait does not count against its
// request timeout. A node that had not answered the acquisition is released
// in the background once that call ended.
//
// It returns nil when a majority deleted the key. Otherwise a *RoundError:
// ErrExpired when the validity had already ended (the critical section may
// have overlapped another holder's), ErrNotHeld when a majority no longer
// held the token or the lock was already released, ErrNoQuorum or the ctx's
// error when too few nodes answered in time (the key then expires on its
// own).
func (l *Lock) Release(ctx context.Context) error {
	ctx = orBackground(ctx)
	if !l.released.CompareAndSwap(false, true) {
		return l.roundError("release", withDetail(ErrNotHeld, "already released"))
	}
	ended, expired := l.lease.endState()
	if !ended {
		if expired {
			l.lease.end(ErrExpired, true)
		} else {
			l.lease.end(ErrReleased, false)
		}
	}
	// Only a lock this call ended can be handed over: one that was lost
	// (an extension refused) or ended otherwise is not held any more.
	if !ended && !expired && l.handOver() {
		return nil
	}
	rel := l.c.releaseAfter(l.req, l.token, l.acq, true, l.c.ns.wakeup, l.waiter, l.Until())
	done := true
	select {
	case <-rel.r.Done():
	case <-ctx.Done():
		done = false
	}
	// Every delete answered and a majority deleted: the usual case, told
	// by the round's counts without building the explanation of a failure.
	if done && !expired && rel.r.Decide().OK {
		l.c.stats.released.Add(1)
		return nil
	}
	e := l.c.roundFailure("release", l.req, rel.r, rel.nodes)
	switch {
	case expired:
		e.Reason, e.detail = ErrExpired, "the validity had ended before the release"
	case e.Granted >= e.Needed:
		l.c.stats.released.Add(1)
		return nil
	case !done:
		e.Reason, e.detail = ctx.Err(), "the deletes go on in the background"
	case len(e.Nodes) > 0 && countReason(e.Nodes, NodeNotHeld) >= e.Needed:
		e.Reason = ErrNotHeld
	default:
		e.Reason = ErrNoQuorum
	}
	return e
}

func countReason(nodes []*NodeError, r NodeReason) int {
	n := 0
	for _, ne := range nodes {
		if ne.Reason == r {
			n++
		}
	}
	return n
}

// handOver passes the lock to a waiter of this Client that showed it is
// first in the key's queue on the nodes: it takes the same token and the
// same validity, and the key stays where it is. The lock has already ended
// for this holder. It reports whether a waiter took it.
func (l *Lock) handOver() bool {
	// The new holder keeps this lock's validity and extends with its own
	// TTL: only a waiter with the same TTL and drift may take it, or an
	// extension would set a shorter TTL on the nodes than its validity.
	h := l.c.queues.take(l.req.key, l.c.clk.Now(), func(r *request) bool {
		return reintroduce.HandOverAnyTTL.Load() || r.s.ttl == l.req.s.ttl && r.s.driftFactor == l.req.s.driftFactor
	})
	if h == nil {
		return false
	}
	until := l.Until()
	next := &Lock{c: l.c, req: h.req, token: l.token, acquired: l.c.clk.Now(), acq: l.acq, waiter: h.w.id}
	next.ka.index = -1
	l.c.stats.holding.Add(1)
	next.lease.start(l.c.clk, h.req.key, until, next.onEnd)
	if h.req.s.autoExtend {
		l.c.keeper.schedule(next)
	}
	h.ch <- next
	l.c.stats.released.Add(1)
	l.c.stats.handedOff.Add(1)
	if l.waiter != "" {
		l.c.dequeue(l.req, l.waiter, "", "", nil, false) // this holder's place in the queue goes
	}
	return true
}

// dequeue takes a waiter out of the key's queue on the given nodes (all when
// nil), in the background. announce asks the nodes where it led the queue
// and the key is free to say so, waking the next waiter (see dequeue.lua).
// grant is the waiter's grant token, used the token of its last attempt
// (given up): a key a release set to either is deleted ("" for none; never
// the token of a lock the waiter holds).
func (c *Client) dequeue(req *request, id, grant, used string, nodes []int, announce bool) *quorum.Round[struct{}] {
	if nodes == nil {
		nodes = c.every
	}
	channel := argEmpty
	if announce && c.ns.wakeup {
		channel = argReleased
	}
	deq := dequeueScript.calls(len(nodes), 3, req.queue, req.queueExp, req.keyArg, id, channel, grant, used)
	c.bg.add(len(nodes))
	return quorum.Start(context.Background(), len(nodes), req.bounds(), func(ctx context.Context, j int) (struct{}, bool, error) {
		defer c.bg.done()
		i := nodes[j]
		n := c.nodes[i]
		if err := n.start(req.s.requestTimeout); err != nil {
			return struct{}{}, false, err
		}
		err := deq.run(ctx, n.rdb, j).Err()
		n.finish(err)
		return struct{}{}, err == nil, err
	})
}

// abandon gives up a lock that must not be returned (the Client closed, or
// its validity ended before the return): the key is deleted in the
// background, and announced like a release: the release that woke this
// lock's waiter named it the next holder, and the waiters behind it sleep
// until they hear the lock is free.
func (l *Lock) abandon() {
	if !l.released.CompareAndSwap(false, true) {
		return
	}
	l.lease.end(ErrReleased, false)
	l.c.releaseAfter(l.req, l.token, l.acq, true, l.c.ns.wakeup, l.waiter, l.Until())
}

func (l *Lock) roundError(op string, reason error) *RoundError {
	return &RoundError{Op: op, Key: l.req.key, Needed: l.c.Quorum(), Reason: reason}
}

// startExtend resets the key's TTL on every node where it holds token and,
// with the restart quarantine on, sets it again on the nodes that lost it
// (see scripts/extend.lua): a lock that is extended survives the nodes
// restarting one after another without their data. It is called only while
// the lock is valid. rec, when not nil, is an election's leader record,
// extended with the lock.
func (c *Client) startExtend(ctx context.Context, req *request, token string, rec *leaderRecord) *quorum.Round[bool] {
	ext := c.extendCalls(req, token, rec)
	c.bg.add(len(c.nodes))
	return quorum.Start(ctx, len(c.nodes), req.bounds(), func(ctx context.Context, i int) (bool, bool, error) {
		defer c.bg.done()
		n := c.nodes[i]
		if err := n.start(req.s.requestTimeout); err != nil {
			return false, false, err
		}
		// The node's first-contact verdict holds for extensions too: one
		// server listed twice would otherwise extend the lock twice.
		if err := c.ready(ctx, n); err != nil {
			n.finish(err)
			return false, false, err
		}
		got, err := ext.run(ctx, n.rdb, i).Int64()
		n.finish(err)
		if got == 2 {
			c.stats.repaired.Add(1)
			c.log.node(slog.LevelInfo, n, "redlock: lock key repaired", "key", req.key,
				"detail", "the node had lost the key of a valid lock (a restart without its data); the extension set it again")
		}
		return got > 0, got > 0, err
	})
}

// extendCalls is the extension script's call for the lock, one copy per
// node (see startExtend).
func (c *Client) extendCalls(req *request, token string, rec *leaderRecord) calls {
	repair := "0"
	if c.ns.quarantine > 0 {
		repair = "1"
	}
	if rec == nil {
		return extendScript.calls(len(c.nodes), 2, req.keyArg, req.gone, token, req.ttlMs, repair)
	}
	return extendScript.calls(len(c.nodes), 3, req.keyArg, req.gone, rec.key, token, req.ttlMs, repair, rec.id, rec.value, rec.fence, rec.seq)
}

// roundFailure explains a failed extend or release round by the votes in so
// far; nodes maps the round's votes to node indexes (nil: one per node). The
// caller sets the reason.
func (c *Client) roundFailure(op string, req *request, r *quorum.Round[bool], nodes []int) *RoundError {
	return c.roundFailureVotes(op, req, r.Collect(), r.Expired(), nodes)
}

// roundFailureVotes is roundFailure from the votes in so far; expired says
// whether the round ran out of time with votes still pending.
func (c *Client) roundFailureVotes(op string, req *request, votes []quorum.Vote[bool], expired bool, nodes []int) *RoundError {
	e := &RoundError{Op: op, Key: req.key, Needed: c.Quorum()}
	for j, v := range votes {
		i := j
		if nodes != nil {
			i = nodes[j]
		}
		switch v.Outcome {
		case quorum.Yes:
			e.Granted++
		case quorum.No:
			e.Nodes = append(e.Nodes, c.nodeError(i, NodeNotHeld, 0, nil))
		case quorum.Failed:
			e.Nodes = append(e.Nodes, c.nodeError(i, NodeFailed, 0, v.Err))
		default: // left out of an early decision, or out of time
			if expired {
				e.Nodes = append(e.Nodes, c.nodeError(i, NodeFailed, 0, errNoAnswer(req)))
			}
		}
	}
	return e
}

func errNoAnswer(req *request) error {
	return &noAnswerError{req.s.nodeTimeout}
}

type noAnswerError struct{ timeout time.Duration }

func (e *noAnswerError) Error() string {
	return "no answer within the node timeout " + e.timeout.String()
}

func (e *noAnswerError) Is(target error) bool { return target == context.DeadlineExceeded }
