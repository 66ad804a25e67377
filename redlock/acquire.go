package redlock

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/quorumlock/quorumlock/internal/reintroduce"
)

// TryAcquire makes exactly one attempt to acquire the lock on key. When it
// fails the error is a *RoundError whose Reason says why: ErrTaken when
// another owner holds the key on enough nodes to block a majority,
// ErrNoQuorum when too few nodes said yes for other reasons (unreachable,
// in their restart quarantine, skewed clocks: see its Nodes), ErrExpired, or
// the ctx's error.
func (c *Client) TryAcquire(ctx context.Context, key string, opts ...LockOption) (l *Lock, err error) {
	ctx = orBackground(ctx)
	defer c.recordAcquire(time.Now(), &err)
	req, err := c.newRequest(key, opts)
	if err != nil {
		return nil, err
	}
	if !c.enter() {
		return nil, c.closedError(req)
	}
	defer c.calls.done()
	l, rerr := c.attempt(ctx, req, newToken(), nil)
	if rerr != nil {
		return nil, rerr
	}
	if c.isClosed() {
		l.abandon()
		return nil, c.closedError(req)
	}
	return l, nil
}

// Acquire blocks until the lock on key is held or ctx ends; the error is then
// a *RoundError whose Reason is the ctx's error (or ErrClosed), with the
// last attempt's votes behind it.
//
// Waiting is fair. Goroutines of one Client waiting for the same key queue in
// FIFO order and only the first of them contends over the network. Across
// processes, a waiter whose first attempt failed takes a place in the key's
// queue on the nodes (WithFairness), so that waiters are served in arrival
// order; a release wakes only the next one (WithWakeup), the others sleep. A
// lock released while another goroutine of the same Client waits first in
// line is handed over without a round trip (same token, same validity;
// not for fenced locks, which need a new token). A waiter of another
// process that leads the key's queue on a majority is granted the key by
// the release itself: it holds the lock once it hears so, with no round of
// its own (not for fenced locks either).
func (c *Client) Acquire(ctx context.Context, key string, opts ...LockOption) (_ *Lock, err error) {
	ctx = orBackground(ctx)
	defer c.recordAcquire(time.Now(), &err)
	c.stats.waiting.Add(1)
	defer c.stats.waiting.Add(-1)
	req, err := c.newRequest(key, opts)
	if err != nil {
		return nil, err
	}
	if !c.enter() {
		return nil, c.closedError(req)
	}
	defer c.calls.done()
	leave, err := c.queues.enter(ctx, c.done, key)
	if err == nil {
		// A holder handed the lock over leaves the nodes' queue first.
		if err = c.await(ctx, c.queues.settling(key), req.s.nodeTimeout); err != nil {
			leave()
		}
	}
	if err != nil {
		return nil, &RoundError{Op: "acquire", Key: key, Needed: c.Quorum(), Reason: err, detail: "while waiting behind this Client's other waiters"}
	}
	// The next of this Client's waiters contends as soon as this one holds:
	// it takes its place in the nodes' queue and can be handed the lock.
	defer leave()
	w := &acquisition{c: c, req: req}
	defer w.stop()
	w.queueAtOnce()
	for attempt := 1; ; attempt++ {
		l, rerr := c.attempt(ctx, req, w.token(), w.queued)
		if rerr == nil {
			return w.done(l)
		}
		w.cleanup = rerr.cleanup
		if l := w.handedOver(); l != nil {
			return w.done(l)
		}
		rerr.Attempts = attempt
		switch {
		case ctx.Err() != nil:
			rerr.Reason = ctx.Err()
		case c.isClosed():
			rerr.Reason = ErrClosed
		case req.s.tries > 0 && attempt >= req.s.tries:
		default:
			l, err := w.wait(ctx, rerr)
			switch {
			case l != nil:
				return w.done(l)
			case err == nil:
				continue
			}
			rerr.Reason = err
		}
		w.leave(rerr)
		return nil, rerr
	}
}

// acquisition is the waiting state of one Acquire between its attempts.
type acquisition struct {
	c      *Client
	req    *request
	queued *waiter  // its place in the nodes' queue, once it took one
	wake   *wakeup  // its release subscription
	offer  *handoff // its offer to take the lock over within the Client
	used   string   // the token of its last attempt
	// cleanup is closed once the last failed attempt's calls are over
	// (nil: none, or done).
	cleanup <-chan struct{}
}

// leave takes a waiter that gives up out of the key's queue on every node:
// its place would stay first there until it expires, a release would name
// it the next holder, and the waiters behind it would sleep. A release may
// have named it already: where it led and the key is free, the nodes
// announce its removal, which wakes the next waiter. The last attempt's
// stragglers come first, or one of them could queue it again.
func (a *acquisition) leave(rerr *RoundError) {
	c := a.c
	if a.queued == nil || c.isClosed() {
		return
	}
	// The last attempt's token was registered by the attempt before: a
	// release may have granted it, where the attempt did not delete it
	// (it never reached the nodes: it gave up waiting for admission).
	a.dequeueAfter(rerr.cleanup, a.used)
}

// dequeueAfter takes the waiter out of the key's queue on every node, with
// a key a release set to its registered token or to used ("" for none),
// once the calls of its last failed attempt are over (cleanup; nil: none):
// a vote still on its way would queue it again. The returned channel is
// closed once that is done.
func (a *acquisition) dequeueAfter(cleanup <-chan struct{}, used string) <-chan struct{} {
	c, req, id, grant := a.c, a.req, a.queued.id, a.queued.grant
	a.queued.grant = ""
	done := make(chan struct{})
	c.background(func() {
		defer close(done)
		if cleanup != nil {
			<-cleanup // bounded: each of those calls by its request timeout
		}
		c.dequeue(req, id, grant, used, nil, true).Wait()
	})
	return done
}

// token returns the next attempt's token. A fresh token for every attempt:
// the cleanup of a failed attempt can reach a node late, after the next
// attempt set the key there, and must not delete that key. A waiter that
// takes grants (see granted) registers with each attempt the token of the
// next one, so that a release can set the key to it meanwhile; the next
// attempt then finds the key its own there, and renews it. Grants of the
// token an attempt uses stop counting when it starts: it may fail, and its
// cleanup delete them.
func (a *acquisition) token() string {
	q, c := a.queued, a.c
	if q == nil || a.wake == nil || a.req.s.fencing {
		a.used = newToken()
		return a.used
	}
	a.used = q.grant
	if a.used == "" {
		a.used = newToken()
	}
	q.grant, q.since = newToken(), c.clk.Now()
	c.waker.expect(a.wake, q.grant)
	return a.used
}

// granted returns the lock when a majority of nodes announced that a
// release granted this waiter its registered token (release.lua): the key
// holds the token there for the waiter's TTL from the grant. Each grant came
// after the registration reached its node, and that after the registering
// attempt started, so the validity counts from then (since): every key
// counted outlives it. With less than half the TTL left, the next attempt
// renews the keys instead, with that same token.
func (a *acquisition) granted() *Lock {
	c, req, q := a.c, a.req, a.queued
	if q == nil || a.wake == nil || q.grant == "" {
		return nil
	}
	if c.waker.grants(a.wake, q.grant) < c.Quorum() {
		return nil
	}
	until := deadline(q.since, req.s.ttl, req.s.driftFactor)
	if until.Sub(c.clk.Now()) < req.s.ttl/2 {
		return nil
	}
	token := q.grant
	q.grant, a.used = "", token
	c.waker.expect(a.wake, "")
	c.stats.acquired.Add(1)
	c.stats.granted.Add(1)
	l := c.newLock(req, token, 0, until, nil)
	// A node that did not grant (or whose grant was not heard yet) may
	// still queue the waiter, first: no other waiter can win a majority
	// there while this one holds one anyway, the release takes it out
	// (holder), and it expires a TTL after the last attempt. Taking it out
	// now would cost every hand-off a call to most nodes.
	l.waiter = q.id
	return l
}

// leaveQueue takes a waiter that got the lock handed over within the
// Client out of the key's queue on every node, with a key a release granted
// it meanwhile (that key would block everyone else for a TTL): it would stay
// first there while it holds the lock, and the attempt of this Client's
// next waiter, finding it first, would not offer itself for the next
// hand-over; that attempt waits until this is done (keyQueues.settle). A
// lock of its own attempt, or granted, took it out of the queue already
// (see attempt and granted).
func (a *acquisition) leaveQueue(l *Lock) {
	if a.queued == nil || l.token == a.used {
		return
	}
	a.c.queues.settle(a.req.key, a.dequeueAfter(a.cleanup, ""))
}

// queueAtOnce gives the first attempt a place in the key's queue when the
// Client already listens for releases (it waited before). Where others
// queue, an attempt without a place is refused whatever the key's state, so
// that a contended acquisition would take one round more, competing with
// the round of the waiter the release woke. The place and the wake-up are
// taken together, before the attempt: a waiter that queued and only then
// listened could miss the release it waits for. A Client that never waited
// keeps its first attempt plain, and opens no subscription for it.
func (a *acquisition) queueAtOnce() {
	c := a.c
	if !c.ns.fair || !c.ns.wakeup || !c.waker.listening() {
		return
	}
	a.queued = newWaiter()
	a.wake = c.waker.register(a.req.key, a.queued.id, a.req.s.nodeTimeout)
}

// wait sleeps between two attempts: until this attempt's cleanup is done,
// then until a release wakes it, the retry delay passes, or a holder of this
// Client hands it the lock.
func (a *acquisition) wait(ctx context.Context, rerr *RoundError) (*Lock, error) {
	c, req := a.c, a.req
	joining := false
	if c.ns.fair && a.queued == nil {
		a.queued = newWaiter() // queues with the next attempt
		joining = true
	}
	if c.ns.wakeup && a.wake == nil {
		id := ""
		if a.queued != nil {
			id = a.queued.id
		}
		a.wake = c.waker.register(req.key, id, req.s.nodeTimeout)
	}
	// Contend again only once this attempt's own keys are gone, waiting
	// at most a node timeout for a node that hangs.
	if err := c.await(ctx, rerr.cleanup, req.s.nodeTimeout); err != nil {
		return nil, err
	}
	d := retryDelay(req.s, rerr)
	switch {
	case joining:
		d = 0 // take a place in the queue now
	case a.queued != nil && queuedBehind(rerr, c.Quorum()):
		// Others are first: sleep until a release names this waiter the
		// head, refreshing the place in the queue before it expires.
		d = queueLife(req.s) / 3
	case a.queued != nil:
		d = min(d, queueLife(req.s)/3) // refresh the place in time
	}
	a.offerHandoff(rerr)
	l, err := c.sleep(ctx, d, a.wake, a.offer)
	if l != nil || err != nil {
		return l, err
	}
	if l = a.granted(); l == nil && a.granting() {
		// Some nodes granted, and the rest of the release is on its way:
		// an attempt now would meet the holder's key where the release has
		// not arrived yet, fail, and delete the grants it renewed. Wait
		// for the other grants, as long as the release round may take.
		if l, err = c.sleep(ctx, req.s.nodeTimeout, a.wake, a.offer); l == nil && err == nil {
			l = a.granted()
		}
	}
	return l, err
}

// granting reports whether some node announced a grant of the token this
// waiter registered last.
func (a *acquisition) granting() bool {
	q := a.queued
	return q != nil && a.wake != nil && q.grant != "" && a.c.waker.grants(a.wake, q.grant) > 0
}

// offerHandoff offers to take the lock over when the last attempt showed
// this waiter first in the key's queue on a majority: the nodes refused it
// only because the key is held. A hand-over then keeps the arrival order.
func (a *acquisition) offerHandoff(rerr *RoundError) {
	c, req := a.c, a.req
	if !c.ns.fair || a.queued == nil || req.s.fencing || !firstInQueue(rerr, c.Quorum()) {
		if a.offer != nil && c.queues.withdraw(a.offer) {
			a.offer = nil
		}
		return
	}
	if a.offer == nil {
		a.offer = &handoff{req: req, w: a.queued, ch: make(chan *Lock, 1)}
	}
	c.queues.offer(req.key, a.offer, c.clk.Now().Add(queueLife(req.s)/2))
}

// handedOver returns the lock a holder of this Client handed over, if any.
func (a *acquisition) handedOver() *Lock {
	if a.offer == nil {
		return nil
	}
	select {
	case l := <-a.offer.ch:
		return l
	default:
		return nil
	}
}

// done hands the caller l, unless the Client closed meanwhile or l is no
// longer valid; nothing after the attempt may block.
func (a *acquisition) done(l *Lock) (*Lock, error) {
	if reintroduce.ValidityBeforeCleanup.Load() {
		return a.doneDefect6(l)
	}
	a.stop()
	a.leaveQueue(l)
	if a.c.isClosed() {
		l.abandon()
		return nil, a.c.closedError(a.req)
	}
	if !l.Valid() {
		l.abandon()
		return nil, &RoundError{Op: "acquire", Key: a.req.key, Needed: a.c.Quorum(), Reason: ErrExpired, detail: "the lock's validity ended before it could be returned"}
	}
	return l, nil
}

// doneDefect6 is done as it was before the fix of defect 6 (see package
// reintroduce): the validity is checked first, and the cleanup after it
// waits on every node of a subscription without a deadline.
func (a *acquisition) doneDefect6(l *Lock) (*Lock, error) {
	if !l.Valid() {
		a.stop()
		l.abandon()
		return nil, &RoundError{Op: "acquire", Key: a.req.key, Needed: a.c.Quorum(), Reason: ErrExpired, detail: "the lock's validity ended before it could be returned"}
	}
	subscribed := a.wake != nil
	a.stop()
	if subscribed {
		var wg sync.WaitGroup
		for _, n := range a.c.nodes {
			wg.Go(func() { _ = n.rdb.Ping(context.Background()).Err() })
		}
		wg.Wait()
	}
	return l, nil
}

// stop ends the waiting: the subscription and the offer go; a lock handed
// over meanwhile is given up.
func (a *acquisition) stop() {
	if a.wake != nil {
		a.c.waker.unregister(a.wake)
		a.wake = nil
	}
	if a.offer != nil {
		if !a.c.queues.withdraw(a.offer) {
			if l := a.handedOver(); l != nil {
				l.abandon()
			}
		}
		a.offer = nil
	}
}

// queueLife is how long a waiter's place in a queue lasts without a refresh.
func queueLife(s settings) time.Duration { return s.ttl }

// queuedBehind reports whether enough nodes put other waiters first that
// this one cannot win a majority now.
func queuedBehind(e *RoundError, quorum int) bool {
	n := 0
	for _, ne := range e.Nodes {
		if ne.Reason == NodeQueued {
			n++
		}
	}
	return n > 0 && e.Granted+len(e.Nodes)-n < quorum
}

// firstInQueue reports whether a majority refused only because the key is
// held: each of them checked the queue first, so this waiter leads it there.
func firstInQueue(e *RoundError, quorum int) bool {
	n := 0
	for _, ne := range e.Nodes {
		switch ne.Reason {
		case NodeTaken:
			n++
		case NodeQueued:
			return false
		}
	}
	return n >= quorum
}

func (c *Client) closedError(req *request) *RoundError {
	return &RoundError{Op: "acquire", Key: req.key, Needed: c.Quorum(), Reason: ErrClosed}
}

// retryDelay is a random delay in the configured range, cut to the holder's
// remaining TTL when the nodes reported one: there is no point sleeping past
// the moment the key expires.
func retryDelay(s settings, e *RoundError) time.Duration {
	d := s.retryMin
	if s.retryMax > s.retryMin {
		d += rand.N(s.retryMax - s.retryMin)
	}
	shortest := time.Duration(-1)
	for _, n := range e.Nodes {
		if n.Reason == NodeTaken && n.Wait >= 0 && (shortest < 0 || n.Wait < shortest) {
			shortest = n.Wait
		}
	}
	if shortest >= 0 && shortest+time.Millisecond < d {
		d = shortest + time.Millisecond
	}
	return d
}

// await waits until done is closed (nil: at once) or at most d; it ends
// early with the ctx's error, or ErrClosed when the Client closes.
func (c *Client) await(ctx context.Context, done <-chan struct{}, d time.Duration) error {
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	t := c.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C():
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
	return nil
}

// sleep waits d, or less when a release is announced or a lock handed
// over; it ends early with the ctx's error, or ErrClosed when the Client
// closes.
func (c *Client) sleep(ctx context.Context, d time.Duration, wake *wakeup, offer *handoff) (*Lock, error) {
	t := c.clk.NewTimer(d)
	defer t.Stop()
	var woken <-chan struct{}
	if wake != nil {
		woken = wake.ch
	}
	var handed <-chan *Lock
	if offer != nil {
		handed = offer.ch
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.done:
		return nil, ErrClosed
	case <-t.C():
	case <-woken:
	case l := <-handed:
		return l, nil
	}
	return nil, nil
}
