package redlock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/clock"
)

// dialGate holds back new connections while it is shut: a slow network, or
// a node that takes a while to accept, for the connections dialled then.
type dialGate struct {
	mu   sync.Mutex
	open chan struct{} // closed while the gate is open
}

func newDialGate() *dialGate {
	g := &dialGate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *dialGate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
		g.open = make(chan struct{})
	default:
	}
}

func (g *dialGate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.open:
	default:
		close(g.open)
	}
}

func (g *dialGate) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		g.mu.Lock()
		open := g.open
		g.mu.Unlock()
		select {
		case <-open:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return next(ctx, network, addr)
	}
}
func (g *dialGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (g *dialGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// idleConns is how many connections a test's pool keeps open to each node:
// more than an acquisition, its cleanup and a release use at once.
const idleConns = 4

// acquireAndRelease acquires key with c in a goroutine, releases it at once
// and sends the first error (nil when both worked).
func acquireAndRelease(ctx context.Context, c *Client, key string, opts ...LockOption) <-chan error {
	got := make(chan error, 1)
	go func() {
		l, err := c.Acquire(ctx, key, opts...)
		if err == nil {
			err = l.Release(bg())
		}
		got <- err
	}()
	return got
}

// ownConns returns node clients of their own, as another process has them,
// with gate in front of the nodes for which gated is true.
func ownConns(t testing.TB, tn *testNodes, gate *dialGate, gated func(i int) bool) []redis.UniversalClient {
	t.Helper()
	var conns []redis.UniversalClient
	for i, mr := range tn.mr {
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: time.Minute, ContextTimeoutEnabled: true, MinIdleConns: idleConns})
		t.Cleanup(func() { _ = rdb.Close() })
		if gate != nil && gated(i) {
			rdb.AddHook(gate)
		}
		conns = append(conns, rdb)
	}
	return conns
}

func everyNode(int) bool { return true }

// shutAfterWarm bootstraps c, fills the pools of its conns and shuts the
// gate: only connections dialled from now on (the subscriptions) wait for
// it, until the test ends.
func shutAfterWarm(t *testing.T, c *Client, conns []redis.UniversalClient, gate *dialGate) {
	t.Helper()
	if err := c.Bootstrap(bg()); err != nil {
		t.Fatal(err)
	}
	warmPools(t, conns)
	gate.shut()
	t.Cleanup(gate.release)
}

// queuedOnAll is true once every node's queue for key holds n places.
func (tn *testNodes) queuedOnAll(t testing.TB, key string, n int) func() bool {
	return func() bool {
		for i := range tn.mr {
			if len(tn.queueEntries(t, i, key)) != n {
				return false
			}
		}
		return true
	}
}

// subscribedOnAll is true once every node counts n subscriptions to the
// release channel.
func (tn *testNodes) subscribedOnAll(n int) func() bool {
	return func() bool {
		for _, mr := range tn.mr {
			if mr.PubSubNumSub(releasedChannel)[releasedChannel] != n {
				return false
			}
		}
		return true
	}
}

// warmPools waits until every pool holds its idle connections.
func warmPools(t testing.TB, conns []redis.UniversalClient) {
	t.Helper()
	waitFor(t, func() bool {
		for _, c := range conns {
			if c.PoolStats().IdleConns < idleConns {
				return false
			}
		}
		return true
	})
}

// A release announced before the waiter's subscriptions are up is missed;
// once they are up, the waiter must try again rather than sleep out its
// place's refresh interval (a third of the TTL) when it queued behind the
// holder.
func TestWakeupMissedBeforeSubscribed(t *testing.T) {
	// The place's refresh interval is long (a TTL of 3 minutes: a minute),
	// the retry delay longer: only a wake-up can end the waiter's sleep
	// within the test's patience.
	const ttl = 3 * time.Minute
	tn := newNodes(t, 3)
	holder := newClient(t, tn, WithQuarantine(ttl))
	// The waiter's own connections, as another process has them.
	gate := newDialGate()
	conns := ownConns(t, tn, gate, everyNode)
	waiter, err := New(conns, WithQuarantine(ttl), WithTTL(ttl), WithRetryDelay(time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = waiter.Close() })
	shutAfterWarm(t, waiter, conns, gate)

	l, err := holder.TryAcquire(bg(), "missed", WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	// The holder's vote of the third node may land after the decision.
	waitFor(t, func() bool { return len(tn.holders("missed", l.Token())) == 3 })
	got := make(chan error, 1)
	ctx, cancel := context.WithTimeout(bg(), ttl/6) // half the sleep the waiter must not take
	defer cancel()
	go func() {
		l2, err := waiter.Acquire(ctx, "missed")
		if err == nil {
			err = l2.Release(bg())
		}
		got <- err
	}()
	// The waiter queued on every node, first in line behind the holder.
	waitFor(t, func() bool {
		for i := range tn.mr {
			if len(tn.queueEntries(t, i, "missed")) != 1 {
				return false
			}
		}
		return true
	})
	if err := l.Release(bg()); err != nil { // announced to nobody
		t.Fatal(err)
	}
	gate.release()
	if err := <-got; err != nil {
		t.Fatalf("the waiter did not get the lock released before its subscriptions were up: %v", err)
	}
}

// A majority of subscriptions is not enough when the release is announced
// by exactly a majority of nodes and one of them is not subscribed yet: the
// waiter hears less than a majority of the announcements. It must try again
// once that node's subscription is up.
func TestWakeupMissedOnNodeNotSubscribed(t *testing.T) {
	const ttl = 3 * time.Minute
	tn := newNodes(t, 3)
	holder := newClient(t, tn, WithQuarantine(ttl))
	gate := newDialGate() // in front of node 2 only
	conns := ownConns(t, tn, gate, func(i int) bool { return i == 2 })
	waiter, err := New(conns, WithQuarantine(ttl), WithTTL(ttl), WithRetryDelay(time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = waiter.Close() })
	shutAfterWarm(t, waiter, conns, gate)

	// The waiter waits once, so that its subscriptions to nodes 0 and 1 are
	// up (it hears the release there) while node 2's waits at the gate.
	l, err := holder.TryAcquire(bg(), "first", WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(tn.holders("first", l.Token())) == 3 })
	first := acquireAndRelease(bg(), waiter, "first")
	waitFor(t, func() bool {
		for i := range tn.mr {
			if len(tn.queueEntries(t, i, "first")) != 1 {
				return false
			}
		}
		return tn.mr[0].PubSubNumSub(releasedChannel)[releasedChannel] == 1 &&
			tn.mr[1].PubSubNumSub(releasedChannel)[releasedChannel] == 1
	})
	if err := l.Release(bg()); err != nil {
		t.Fatal(err)
	}
	if err := <-first; err != nil {
		t.Fatal(err)
	}

	// Now the holder's key is on nodes 1 and 2 only, so only they announce
	// its release: the waiter hears node 1 alone.
	tn.noVote[0].Store(true)
	l, err = holder.TryAcquire(bg(), "missed", WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(tn.holders("missed", l.Token())) == 2 })
	tn.noVote[0].Store(false)
	got := make(chan error, 1)
	ctx, cancel := context.WithTimeout(bg(), ttl/6) // half the sleep the waiter must not take
	defer cancel()
	go func() {
		l2, err := waiter.Acquire(ctx, "missed")
		if err == nil {
			err = l2.Release(bg())
		}
		got <- err
	}()
	// The waiter is first in line on nodes 1 and 2, behind the holder.
	waitFor(t, func() bool {
		return len(tn.queueEntries(t, 1, "missed")) == 1 && len(tn.queueEntries(t, 2, "missed")) == 1
	})
	if err := l.Release(bg()); err != nil {
		t.Fatal(err)
	}
	gate.release()
	if err := <-got; err != nil {
		t.Fatalf("the waiter did not get the lock whose release it heard from one node only: %v", err)
	}
}

// unqueuedVotes counts the acquisition scripts sent without a place in the
// queue (an empty waiter id).
type unqueuedVotes struct{ n *atomic.Int64 }

func (h unqueuedVotes) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h unqueuedVotes) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isAcquisition(cmd) && fmt.Sprint(cmd.Args()[acquisitionWaiter]) == "" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h unqueuedVotes) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// acquisitionWaiter is the waiter id argument of an acquisition script call.
const acquisitionWaiter = 16

// A Client that already listens for releases takes its place in the queue
// with its first attempt: an attempt without a place is refused wherever
// others queue, and costs the waiter, and the nodes, a round per contended
// acquisition.
func TestAcquireQueuesWithFirstAttempt(t *testing.T) {
	tn := newNodes(t, 3)
	holder := newClient(t, tn)
	var unqueued atomic.Int64
	var conns []redis.UniversalClient
	for _, mr := range tn.mr {
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, ContextTimeoutEnabled: true})
		t.Cleanup(func() { _ = rdb.Close() })
		rdb.AddHook(unqueuedVotes{&unqueued})
		conns = append(conns, rdb)
	}
	waiter, err := New(conns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = waiter.Close() })
	for _, key := range []string{"first", "second"} {
		l, err := holder.TryAcquire(bg(), key)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { return len(tn.holders(key, l.Token())) == 3 })
		before := unqueued.Load()
		got := acquireAndRelease(bg(), waiter, key)
		waitFor(t, func() bool {
			for i := range tn.mr {
				if len(tn.queueEntries(t, i, key)) != 1 {
					return false
				}
			}
			return true
		})
		if err := l.Release(bg()); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatal(err)
		}
		// The first wait starts the Client's subscriptions; from then on
		// the first attempt queues.
		if n := unqueued.Load() - before; key == "second" && n != 0 {
			t.Fatalf("%d acquisition scripts were sent without a place in the queue while the Client listened for releases", n)
		}
	}
}

// A waiter that gives up leaves the key's queue: its place would otherwise
// stay first for the rest of its lifetime, and a release would name it
// the next holder while the waiters behind it sleep.
func TestAcquireGivingUpLeavesQueue(t *testing.T) {
	const ttl = 3 * time.Minute // places last that long unless taken out
	tn := newNodes(t, 3)
	holder := newClient(t, tn, WithQuarantine(ttl), WithTTL(ttl))
	waiter := newClient(t, tn, WithQuarantine(ttl), WithTTL(ttl), WithRetryDelay(time.Millisecond, time.Millisecond))
	l, err := holder.TryAcquire(bg(), "gone")
	if err != nil {
		t.Fatal(err)
	}
	for _, tries := range []int{3, 1} { // the second Acquire listens already
		if _, err := waiter.Acquire(bg(), "gone", WithTries(tries)); !errors.Is(err, ErrTaken) {
			t.Fatalf("Acquire with %d tries: %v, want ErrTaken", tries, err)
		}
		waitFor(t, func() bool {
			for i := range tn.mr {
				if len(tn.queueEntries(t, i, "gone")) != 0 {
					return false
				}
			}
			return true
		})
	}
	if err := l.Release(bg()); err != nil {
		t.Fatal(err)
	}
}

// Announcements of two releases can interleave at a Client: each node's
// subscription delivers on its own, and a node that lags announces the
// previous release after the others announced the next one. A late
// announcement of the previous release must not wipe out what was heard of
// the next, or the waiter it names never hears a majority.
func TestWakeupCountsInterleavedReleases(t *testing.T) {
	tn := newNodes(t, 5)
	c := newClient(t, tn)
	wu := c.waker.register("key", "me", time.Hour)
	defer c.waker.unregister(wu)
	c.waker.deliver(0, "key", "next", "me")
	c.waker.deliver(1, "key", "next", "me")
	c.waker.deliver(2, "key", "previous", "") // a lagging node, its queue empty
	c.waker.deliver(3, "key", "previous", "me")
	c.waker.deliver(4, "key", "next", "me") // the third of five
	select {
	case <-wu.ch:
	default:
		t.Fatal("a majority announced the release that names this waiter, and it did not wake")
	}
}

// A waiter that some node names the next holder, while too few others do
// (their queues differ: a registration or a removal did not reach every
// node), tries once the release round is decided rather than sleeping out
// its place's refresh: the nodes that deleted the key have by then.
func TestWakeupNamedByMinority(t *testing.T) {
	tn := newNodes(t, 5)
	fake := clock.NewFake(time.Now())
	c := newClient(t, tn, withClock(fake))
	const grace = 50 * time.Millisecond
	wu := c.waker.register("key", "me", grace)
	defer c.waker.unregister(wu)
	c.waker.deliver(0, "key", "release", "me")
	c.waker.deliver(1, "key", "release", "someone else")
	select {
	case <-wu.ch:
		t.Fatal("woken by one announcement of five")
	default:
	}
	fake.Advance(grace)
	select {
	case <-wu.ch:
	case <-time.After(10 * time.Second): // the timer's function runs on a goroutine of its own
		t.Fatal("a waiter named the next holder by a node did not try once the release round was decided")
	}
}
