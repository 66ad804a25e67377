package redlock

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A waiter that a release named the next holder, and that gives up before
// it tries, takes its place out of the queue; the waiter behind it must then
// hear that the free lock is its turn. Otherwise it sleeps out its place's
// refresh interval (a third of the TTL) while the lock is free: the release
// named the one that left, and nothing else is announced.
func TestReview1_GivingUpNamedWaiterWakesNext(t *testing.T) {
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
	var conns []redis.UniversalClient
	for _, mr := range tn.mr {
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: time.Minute, ContextTimeoutEnabled: true, MinIdleConns: idleConns})
		t.Cleanup(func() { _ = rdb.Close() })
		rdb.AddHook(gate)
		conns = append(conns, rdb)
	}
	first, err := New(conns, WithQuarantine(ttl), WithTTL(ttl), WithRetryDelay(time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = first.Close() })
	if err := first.Bootstrap(bg()); err != nil {
		t.Fatal(err)
	}
	warmPools(t, conns)
	gate.shut()
	defer gate.release()
	second := newClient(t, tn, WithQuarantine(ttl), WithTTL(ttl), WithRetryDelay(time.Hour, time.Hour))

	l, err := holder.TryAcquire(bg(), key, WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(tn.holders(key, l.Token())) == 3 })
	queued := func(n int) func() bool {
		return func() bool {
			for i := range tn.mr {
				if len(tn.queueEntries(t, i, key)) != n {
					return false
				}
			}
			return true
		}
	}
	fctx, fcancel := context.WithCancel(bg())
	defer fcancel()
	firstGot := make(chan error, 1)
	go func() {
		l1, err := first.Acquire(fctx, key)
		if err == nil {
			_ = l1.Release(bg())
		}
		firstGot <- err
	}()
	waitFor(t, queued(1))
	ctx, cancel := context.WithTimeout(bg(), ttl/6) // half the sleep the second waiter must not take
	defer cancel()
	secondGot := make(chan error, 1)
	go func() {
		l2, err := second.Acquire(ctx, key)
		if err == nil {
			err = l2.Release(bg())
		}
		secondGot <- err
	}()
	waitFor(t, queued(2))
	// The second waiter listens on every node (the first does nowhere).
	waitFor(t, func() bool {
		for _, mr := range tn.mr {
			if mr.PubSubNumSub(releasedChannel)[releasedChannel] != 1 {
				return false
			}
		}
		return true
	})
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
