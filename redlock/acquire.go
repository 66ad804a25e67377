package redlock

import (
	"context"
	"math/rand/v2"
	"time"
)

// TryAcquire makes exactly one attempt to acquire the lock on key. When it
// fails the error is a *RoundError whose Reason says why: ErrTaken when
// another owner holds the key on enough nodes to block a majority,
// ErrNoQuorum when too few nodes said yes for other reasons (unreachable,
// in their restart quarantine, skewed clocks: see its Nodes), ErrExpired, or
// the ctx's error.
func (c *Client) TryAcquire(ctx context.Context, key string, opts ...LockOption) (*Lock, error) {
	ctx = orBackground(ctx)
	req, err := c.newRequest(key, opts)
	if err != nil {
		return nil, err
	}
	if !c.enter() {
		return nil, c.closedError(req)
	}
	defer c.calls.done()
	l, rerr := c.attempt(ctx, req, newToken())
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
// Goroutines of one Client waiting for the same key queue in FIFO order and
// only the first of them contends over the network, so waiters in one
// process are served fairly and do not flood the nodes. While another
// process holds the key, the first waiter retries when the holder releases
// (an announcement over pub/sub, see WithWakeup) or after a random delay
// (WithRetryDelay), whichever comes first.
func (c *Client) Acquire(ctx context.Context, key string, opts ...LockOption) (*Lock, error) {
	ctx = orBackground(ctx)
	req, err := c.newRequest(key, opts)
	if err != nil {
		return nil, err
	}
	if !c.enter() {
		return nil, c.closedError(req)
	}
	defer c.calls.done()
	leave, err := c.queues.enter(ctx, c.done, key)
	if err != nil {
		return nil, &RoundError{Op: "acquire", Key: key, Needed: c.Quorum(), Reason: err, detail: "while waiting behind this Client's other waiters"}
	}
	var wake *wakeup
	defer func() {
		if wake != nil {
			c.waker.unregister(wake)
		}
	}()
	for attempt := 1; ; attempt++ {
		// A fresh token for every attempt: the cleanup of a failed attempt
		// can reach a node late, after the next attempt set the key there,
		// and must not delete that key.
		l, rerr := c.attempt(ctx, req, newToken())
		if rerr == nil {
			if c.isClosed() {
				l.abandon()
				leave()
				return nil, c.closedError(req)
			}
			// Nothing after the attempt may block; still, a lock is
			// returned only while valid.
			if !l.Valid() {
				l.abandon()
				continue
			}
			l.setLeave(leave)
			return l, nil
		}
		rerr.Attempts = attempt
		switch {
		case ctx.Err() != nil:
			rerr.Reason = ctx.Err()
		case c.isClosed():
			rerr.Reason = ErrClosed
		case req.s.tries > 0 && attempt >= req.s.tries:
		default:
			if c.ns.wakeup && wake == nil {
				wake = c.waker.register(key)
			}
			// Contend again only once this attempt's own keys are gone,
			// waiting at most a node timeout for a node that hangs.
			if err := c.await(ctx, rerr.cleanup, req.s.nodeTimeout); err != nil {
				rerr.Reason = err
				break
			}
			if err := c.sleep(ctx, retryDelay(req.s, rerr), wake); err == nil {
				continue
			} else {
				rerr.Reason = err
			}
		}
		leave()
		return nil, rerr
	}
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

// sleep waits d, or less when a release is announced; it ends early with
// the ctx's error, or ErrClosed when the Client closes.
func (c *Client) sleep(ctx context.Context, d time.Duration, wake *wakeup) error {
	t := c.clk.NewTimer(d)
	defer t.Stop()
	var woken <-chan struct{}
	if wake != nil {
		woken = wake.ch
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	case <-t.C():
		return nil
	case <-woken:
		return nil
	}
}
