package redlock

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/clock"
)

// A waiter that a release named the next holder, and that gives up before
// it tries, takes its place out of the queue; the waiter behind it must then
// hear that the free lock is its turn. Otherwise it sleeps out its place's
// refresh interval (a third of the TTL) while the lock is free: the release
// named the one that left, and nothing else is announced.
func TestGivingUpNamedWaiterWakesNext(t *testing.T) {
	// The place's refresh interval is long (a TTL of 3 minutes: a minute),
	// the retry delay longer: only a wake-up can end a sleep within the
	// test's patience.
	const ttl = 3 * time.Minute
	const key = "named"
	tn := newNodes(t, 3)
	holder := newClient(t, tn, WithQuarantine(ttl))
	// The first waiter's own connections; its subscriptions never come up,
	// so that it sleeps through the release that names it (as a waiter
	// whose ctx ends just as the release is announced).
	gate := newDialGate()
	conns := ownConns(t, tn, gate, everyNode)
	first, err := New(conns, WithQuarantine(ttl), WithTTL(ttl), WithRetryDelay(time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = first.Close() })
	shutAfterWarm(t, first, conns, gate)
	second := newClient(t, tn, WithQuarantine(ttl), WithTTL(ttl), WithRetryDelay(time.Hour, time.Hour))

	l, err := holder.TryAcquire(bg(), key, WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(tn.holders(key, l.Token())) == 3 })
	queued := func(n int) func() bool { return tn.queuedOnAll(t, key, n) }
	fctx, fcancel := context.WithCancel(bg())
	defer fcancel()
	firstGot := acquireAndRelease(fctx, first, key)
	waitFor(t, queued(1))
	ctx, cancel := context.WithTimeout(bg(), ttl/6) // half the sleep the second waiter must not take
	defer cancel()
	secondGot := acquireAndRelease(ctx, second, key)
	waitFor(t, queued(2))
	// The second waiter listens on every node (the first does nowhere).
	waitFor(t, tn.subscribedOnAll(1))
	if err := l.Release(bg()); err != nil { // names the first waiter
		t.Fatal(err)
	}
	fcancel()
	if err := <-firstGot; !errors.Is(err, context.Canceled) {
		t.Fatalf("the first waiter: %v, want context.Canceled (the test lost its shape)", err)
	}
	if err := <-secondGot; err != nil {
		t.Fatalf("the waiter behind one that gave up after a release named it did not get the free lock: %v", err)
	}
}

// closeHook holds an acquisition script back, once armed, until its Client
// closes: an attempt under way as the Client closes.
type closeHook struct {
	armed    *atomic.Bool
	closed   <-chan struct{}
	inflight chan struct{} // buffered 1: an attempt is held back
}

func (h closeHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h closeHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.Load() && isAcquisition(cmd) {
			select {
			case h.inflight <- struct{}{}:
			default:
			}
			<-h.closed
		}
		return next(ctx, cmd)
	}
}
func (h closeHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// An Acquire that wins the lock as its Client closes gives the lock up
// (the key is deleted at once); the waiter of another Client behind it must
// hear that the lock is free, as it would from a release. Otherwise it
// sleeps out its place's refresh interval, a third of the TTL, with the
// lock free: the release that woke the closing Client's waiter named that
// one, and the key's deletion is announced to nobody.
func TestAbandonedLockWakesNext(t *testing.T) {
	const ttl = 3 * time.Minute
	const key = "abandoned"
	tn := newNodes(t, 3)
	holder := newClient(t, tn, WithQuarantine(ttl))
	// The first waiter's Client: a fake clock (its sleeps end only when the
	// test moves it), subscriptions that never come up (no wake-up), and
	// its attempts held back, once armed, until it closes.
	fake := clock.NewFake(time.Now())
	gate := newDialGate()
	var armed atomic.Bool
	inflight := make(chan struct{}, 1)
	conns := ownConns(t, tn, nil, nil)
	first, err := New(conns, WithQuarantine(ttl), WithTTL(ttl), withClock(fake))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = first.Close() })
	for _, rdb := range conns {
		rdb.(*redis.Client).AddHook(gate)
		rdb.(*redis.Client).AddHook(closeHook{armed: &armed, closed: first.done, inflight: inflight})
	}
	shutAfterWarm(t, first, conns, gate)
	second := newClient(t, tn, WithQuarantine(ttl), WithTTL(ttl), WithRetryDelay(time.Hour, time.Hour))

	l, err := holder.TryAcquire(bg(), key, WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(tn.holders(key, l.Token())) == 3 })
	queued := func(n int) func() bool { return tn.queuedOnAll(t, key, n) }
	// A node timeout long enough for the held-back attempt to outlast
	// the Client's closing on a slow host.
	firstGot := acquireAndRelease(bg(), first, key, WithNodeTimeout(ttl/4))
	waitFor(t, queued(1))
	ctx, cancel := context.WithTimeout(bg(), ttl/6) // half the sleep the second waiter must not take
	defer cancel()
	secondGot := acquireAndRelease(ctx, second, key)
	waitFor(t, queued(2))
	waitFor(t, tn.subscribedOnAll(1))
	if err := l.Release(bg()); err != nil { // names the first waiter, which does not hear it
		t.Fatal(err)
	}
	// The first waiter's retry delay passes: it tries, and is held back.
	armed.Store(true)
	waitFor(t, func() bool {
		select {
		case <-inflight:
			return true
		default:
			fake.Advance(time.Second)
			return false
		}
	})
	closeErr := make(chan error, 1)
	go func() { closeErr <- first.Close() }()
	if err := <-firstGot; !errors.Is(err, ErrClosed) {
		t.Fatalf("the first waiter: %v, want ErrClosed (the test lost its shape)", err)
	}
	if err := <-closeErr; err != nil {
		t.Fatal(err)
	}
	if err := <-secondGot; err != nil {
		t.Fatalf("the waiter behind one whose Client closed as it won the lock did not get the free lock: %v", err)
	}
}
