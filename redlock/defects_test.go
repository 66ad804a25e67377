package redlock

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fence tokens stay strictly increasing when a minority of nodes loses its
// data: holders on {0,1} raise the counter there while node 2 is away; node 0
// then restarts empty and serves its quarantine; the next holder wins {0,2},
// where no node remembers the counter. Its token must still be larger, and a
// paused earlier holder's write must be refused after the new holder's.
func TestFenceSurvivesMinorityDataLoss(t *testing.T) {
	tn := newNodes(t, 3)
	const ttl = 300 * time.Millisecond
	c := newClient(t, tn, WithFencing(true), WithTTL(ttl))
	_, store := storage(t)

	tn.noVote[2].Store(true)
	var last *Lock
	for i := 0; i < 3; i++ {
		l, err := acquireSoon(t, c, "doc")
		if err != nil {
			t.Fatal(err)
		}
		if last != nil && l.Fence() <= last.Fence() {
			t.Fatalf("token %d after %d", l.Fence(), last.Fence())
		}
		if i < 2 {
			if err := l.Release(bg()); err != nil {
				t.Fatal(err)
			}
		}
		last = l
	}
	stale := last // paused: its lock expires without a release
	for _, mr := range tn.mr {
		mr.Del("doc")
	}
	tn.mr[0].FlushAll() // node 0 restarts without its data
	tn.noVote[2].Store(false)
	tn.noVote[1].Store(true) // the next majority is {0, 2}

	var next *Lock
	waitFor(t, func() bool { // until node 0 has served its quarantine
		l, err := acquireSoon(t, c, "doc")
		if err != nil {
			return false
		}
		next = l
		return true
	})
	defer next.Release(bg())
	if next.Fence() <= stale.Fence() {
		t.Fatalf("after node 0 lost its data the next token is %d, not above the earlier holder's %d", next.Fence(), stale.Fence())
	}
	if err := FencedSet(bg(), store, "doc:body", "new", next.Fence()); err != nil {
		t.Fatal(err)
	}
	if err := FencedSet(bg(), store, "doc:body", "stale", stale.Fence()); !errors.Is(err, ErrStaleFence) {
		t.Fatalf("the earlier holder's write after the new holder's: %v, want ErrStaleFence", err)
	}
}

// Bootstrap never hides a restart: a node that lost its data while the
// others stayed in service keeps its quarantine, even when no vote touched it
// since (a crontab line that bootstraps on every run).
func TestBootstrapNeverHidesRestart(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn, WithTTL(5*time.Second))
	if l, err := c.TryAcquire(bg(), "k"); err != nil {
		t.Fatal(err)
	} else {
		_ = l.Release(bg())
		// Release returns once a majority deleted; the last delete may
		// still be on its way (after a vote that was still on its way when
		// the lock was returned), and a key left on node 2 would answer for
		// node 0 below. So every call of the Client has returned first.
		waitFor(t, func() bool { return c.bg.n.Load() == 0 && len(tn.holders("k", l.Token())) == 0 })
	}
	tn.mr[0].FlushAll() // node 0 restarts empty
	if err := c.Bootstrap(bg()); err != nil {
		t.Logf("bootstrap: %v", err)
	}
	tn.noVote[1].Store(true) // a majority now needs node 0
	l, err := c.TryAcquire(bg(), "k")
	if err == nil {
		_ = l.Release(bg())
		t.Fatal("Bootstrap after a restart let the emptied node vote at once")
	}
	if !strings.Contains(err.Error(), "quarantine") {
		t.Fatalf("err = %v, want node 0 in quarantine", err)
	}
}

// Once a majority said the token is gone, the lock ends at once: Extend does
// not wait for the nodes that have not answered before signalling the loss.
func TestLossSignalledOnMajorityRefusal(t *testing.T) {
	tn := newNodes(t, 5)
	const nodeTimeout = 3 * time.Second
	c := newClient(t, tn, WithTTL(20*time.Second), WithNodeTimeout(nodeTimeout))
	l, err := c.TryAcquire(bg(), "lost")
	if err != nil {
		t.Fatal(err)
	}
	for _, mr := range tn.mr { // let every vote land before the key goes
		waitFor(t, func() bool { return mr.Exists("lost") })
	}
	for i := 0; i < 3; i++ { // another owner's token on a majority
		tn.mr[i].Set("lost", "intruder")
	}
	tn.stall[3].Store(true)
	tn.stall[4].Store(true)
	begin := time.Now()
	err = l.Extend(bg())
	took := time.Since(begin)
	if !errors.Is(err, ErrNotHeld) {
		t.Fatalf("extend: %v, want ErrNotHeld", err)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Extend returned ErrNotHeld and the lock is not done")
	}
	if !errors.Is(l.Err(), ErrLockLost) || l.Valid() {
		t.Fatalf("after a majority refused: Err %v, Valid %v", l.Err(), l.Valid())
	}
	if took >= nodeTimeout/2 {
		t.Fatalf("the loss was signalled after %v: Extend waited for the stalled nodes (node timeout %v)", took, nodeTimeout)
	}
}

// A lock is valid when Acquire returns it: the waiting machinery (release
// subscriptions on a node that hangs) never delays the return past the
// validity, and the call returns by its ctx.
func TestAcquireReturnsValidLock(t *testing.T) {
	tn := newNodes(t, 2)
	hung := redis.NewClient(&redis.Options{Addr: stalledNode(t), MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = hung.Close() })
	nodes := append(append([]redis.UniversalClient{}, tn.clients...), hung)
	const ttl = 600 * time.Millisecond
	holder, err := New(nodes, WithTTL(ttl), WithQuarantine(0))
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	waiter, err := New(nodes, WithTTL(ttl), WithQuarantine(0), WithRetryDelay(time.Second, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer waiter.Close()
	// The holder's first round dials and probes every node: on a busy host
	// it can miss the node timeout everywhere, which is the setup's trouble,
	// not the property's. It tries again then, a few times.
	h, err := holder.TryAcquire(bg(), "cold")
	for try := 1; err != nil && starvedRound(err) && try < 5; try++ {
		t.Logf("setup starved (%v); again", err)
		h, err = holder.TryAcquire(bg(), "cold")
	}
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		l   *Lock
		err error
		at  time.Time
	}
	got := make(chan result, 1)
	const wait = 2 * time.Second
	begin := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(bg(), wait)
		defer cancel()
		l, err := waiter.Acquire(ctx, "cold")
		got <- result{l, err, time.Now()}
	}()
	waitFor(t, func() bool { return waiter.Stats().Attempts >= 1 })
	_ = h.Release(bg())
	r := <-got
	if r.err == nil {
		defer r.l.Release(bg())
		if !r.l.Until().After(r.at) {
			t.Fatalf("Acquire returned a lock whose validity ended %v before the return", r.at.Sub(r.l.Until()))
		}
	}
	if took := r.at.Sub(begin); took > wait+ttl {
		t.Fatalf("Acquire with a %v ctx returned after %v (err %v)", wait, took, r.err)
	}
}

// Release returns by its ctx even when a node hangs: neither the straggling
// acquisition call on that node nor the deletes hold the caller; they finish
// in the background, bounded by the node timeout.
func TestReleaseBoundedByCtx(t *testing.T) {
	tn := newNodes(t, 3)
	const nodeTimeout = 2 * time.Second
	c := newClient(t, tn, WithTTL(60*time.Second), WithNodeTimeout(nodeTimeout))
	tn.stall[2].Store(true) // node 2 does not answer the acquisition either
	l, err := c.TryAcquire(bg(), "r")
	if err != nil {
		t.Fatal(err)
	}
	const budget = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(bg(), budget)
	defer cancel()
	begin := time.Now()
	err = l.Release(ctx)
	if took := time.Since(begin); took > budget+nodeTimeout/2 {
		t.Fatalf("Release with a %v ctx took %v (err %v): it waited for the hung node", budget, took, err)
	}
	if err != nil {
		t.Fatalf("release on the answering majority: %v", err)
	}
	if len(tn.holders("r", l.Token())) != 0 {
		t.Fatal("an answering node kept the key")
	}
}

// Do returns by its ctx: when fn ends because ctx ended, the release goes on
// in the background instead of holding the caller for the node timeout.
func TestDoBoundedByCtx(t *testing.T) {
	tn := newNodes(t, 3)
	const nodeTimeout = 2 * time.Second
	c := newClient(t, tn, WithTTL(60*time.Second), WithNodeTimeout(nodeTimeout))
	const budget = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(bg(), budget)
	defer cancel()
	begin := time.Now()
	err := c.Do(ctx, "do", func(ctx context.Context) error {
		tn.stall[2].Store(true)
		<-ctx.Done()
		return ctx.Err()
	})
	if took := time.Since(begin); took > budget+nodeTimeout/2 {
		t.Fatalf("Do with a %v ctx took %v: it waited for the hung node", budget, took)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do: %v, want fn's DeadlineExceeded", err)
	}
	waitFor(t, func() bool { return !tn.mr[0].Exists("do") && !tn.mr[1].Exists("do") })
}

// A failed attempt returns as soon as it is decided; cleaning up after the
// nodes that did not answer happens in the background.
func TestFailedAttemptBoundedByCtx(t *testing.T) {
	tn := newNodes(t, 3)
	const nodeTimeout = 2 * time.Second
	c := newClient(t, tn, WithTTL(60*time.Second), WithNodeTimeout(nodeTimeout))
	other := newClient(t, tn, WithTTL(60*time.Second), WithNodeTimeout(nodeTimeout))
	held, err := other.TryAcquire(bg(), "f")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(bg())
	tn.stall[2].Store(true)
	defer tn.stall[2].Store(false)
	const budget = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(bg(), budget)
	defer cancel()
	begin := time.Now()
	_, err = c.TryAcquire(ctx, "f")
	if took := time.Since(begin); took > budget+nodeTimeout/2 {
		t.Fatalf("a failed attempt with a %v ctx took %v: it waited for the hung node", budget, took)
	}
	if err == nil {
		t.Fatal("acquired a held key")
	}
}

// Close ends blocked waiters at once, and no waiter acquires after Close
// returned.
func TestCloseEndsWaiters(t *testing.T) {
	tn := newNodes(t, 3)
	holder := newClient(t, tn)
	const retry = 5 * time.Second
	w, err := New(tn.clients, WithRetryDelay(retry, retry))
	if err != nil {
		t.Fatal(err)
	}
	h, err := holder.TryAcquire(bg(), "c")
	if err != nil {
		t.Fatal(err)
	}
	const waiters = 4
	errs := make(chan error, waiters)
	locks := make(chan *Lock, waiters)
	for i := 0; i < waiters; i++ {
		go func() {
			l, err := w.Acquire(bg(), "c")
			if l != nil {
				locks <- l
			}
			errs <- err
		}()
	}
	waitFor(t, func() bool { return w.Stats().Attempts >= 1 && w.queueLen("c") == waiters-1 })
	begin := time.Now()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = h.Release(bg())
	for i := 0; i < waiters; i++ {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Errorf("waiter %d: %v, want ErrClosed", i, err)
		}
	}
	if took := time.Since(begin); took >= retry/2 {
		t.Fatalf("waiters returned %v after Close: they slept out their retry delay", took)
	}
	close(locks)
	for l := range locks {
		t.Errorf("a waiter acquired %q after Close", l.Key())
		_ = l.Release(bg())
	}
}

// Option values that would silently turn a safety feature off are refused;
// only the documented 0 means off.
func TestUnsafeOptionValuesRejected(t *testing.T) {
	tn := newNodes(t, 3)
	for name, opt := range map[string]Option{
		"negative quarantine":  WithQuarantine(-time.Second),
		"negative max skew":    WithMaxSkew(-1),
		"negative max hold":    WithMaxHold(-1),
		"NaN drift factor":     WithDriftFactor(math.NaN()),
		"infinite drift":       WithDriftFactor(math.Inf(1)),
		"negative retry delay": WithRetryDelay(-time.Second, time.Second),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := New(tn.clients, opt)
			if err == nil {
				c.Close()
				t.Fatal("accepted")
			}
		})
	}
}

// Keys under the library's own prefix are refused: locking
// "quorumlock:fence:x" would corrupt x's fence counter.
func TestReservedKeysRefused(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	for _, key := range []string{"quorumlock:fence:x", "quorumlock:node"} {
		if l, err := c.TryAcquire(bg(), key); err == nil {
			_ = l.Release(bg())
			t.Fatalf("%q accepted as a lock key", key)
		} else if !strings.Contains(err.Error(), "reserved") {
			t.Fatalf("%q: %v, want a reserved-prefix error", key, err)
		}
	}
}

// A nil ctx means context.Background, and Release(nil) leaves nothing
// half-done.
func TestNilContext(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	var nilCtx context.Context
	l, err := c.TryAcquire(nilCtx, "n")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Extend(nilCtx); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(nilCtx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(tn.holders("n", l.Token())) == 0 })
	if err := c.Do(nilCtx, "n", func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
}

// One server reached under two names is one node: it would vote twice.
func TestSameServerUnderTwoNames(t *testing.T) {
	tn := newNodes(t, 2)
	port := tn.mr[0].Port()
	alias := redis.NewClient(&redis.Options{Addr: "localhost:" + port})
	t.Cleanup(func() { _ = alias.Close() })
	c, err := New([]redis.UniversalClient{tn.clients[0], tn.clients[1], alias})
	if err == nil {
		c.Close()
		t.Fatal("127.0.0.1 and localhost on the same port accepted as two nodes")
	}
	if !strings.Contains(err.Error(), "node 2") || !strings.Contains(err.Error(), "node 0") {
		t.Fatalf("error %q does not name both nodes", err)
	}
}

// A cluster client is refused when the Client is made: every vote would
// otherwise fail with CROSSSLOT.
func TestClusterClientRefused(t *testing.T) {
	tn := newNodes(t, 2)
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{tn.mr[0].Addr()}})
	t.Cleanup(func() { _ = cc.Close() })
	c, err := New([]redis.UniversalClient{tn.clients[0], tn.clients[1], cc})
	if err == nil {
		c.Close()
		t.Fatal("cluster client accepted")
	}
	if !strings.Contains(strings.ToLower(err.Error()), "cluster") {
		t.Fatalf("error %q does not say why", err)
	}
}

// Plain go-redis clients (ContextTimeoutEnabled off, the go-redis default)
// are accepted, and the library still bounds every node by its node timeout:
// a hung node delays no decision.
func TestPlainClientsBoundedByNodeTimeout(t *testing.T) {
	tn := newNodes(t, 2)
	var nodes []redis.UniversalClient
	for _, mr := range tn.mr {
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		t.Cleanup(func() { _ = rdb.Close() })
		nodes = append(nodes, rdb)
	}
	const readTimeout = 3 * time.Second // go-redis' default
	hung := redis.NewClient(&redis.Options{Addr: stalledNode(t), ReadTimeout: readTimeout})
	t.Cleanup(func() { _ = hung.Close() })
	nodes = append(nodes, hung)
	const nodeTimeout = 300 * time.Millisecond
	c, err := New(nodes, WithNodeTimeout(nodeTimeout), WithQuarantine(0))
	if err != nil {
		t.Fatalf("plain clients refused: %v", err)
	}
	defer c.Close()
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		begin := time.Now()
		l, err := c.TryAcquire(bg(), fmt.Sprint("plain", i))
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(begin); took > readTimeout/2 {
			t.Fatalf("acquisition took %v with a hung node: bounded by its read timeout, not the node timeout", took)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = l.Release(bg()) }()
	}
	wg.Wait()
}

// Many locks released at the same instant queue for the nodes' pooled
// connections; a delete still waiting for a connection while the lock is
// valid is still useful and must not fail for the wait (issue #12). With two
// connections per node, a few hundred releases make the queue longer than
// a request timeout.
func TestReleaseStormAllDeleted(t *testing.T) {
	tn := newNodesWith(t, 3, func(o *redis.Options) { o.PoolSize = 2 })
	// A long TTL keeps every lock valid through the storm on a slow host;
	// the request timeout stays short whatever the TTL.
	c := newClient(t, tn, WithTTL(time.Minute))
	const n = 600
	locks := make([]*Lock, n)
	for i := range locks {
		l, err := c.TryAcquire(bg(), fmt.Sprintf("storm-%d", i))
		if err != nil {
			t.Fatalf("lock %d: %v", i, err)
		}
		locks[i] = l
	}
	start := make(chan struct{})
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, l := range locks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = l.Release(bg())
		}()
	}
	begin := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(begin)
	failed := failures(t, "release", errs)
	if failed > 0 {
		t.Errorf("%d of %d releases failed (all released in %v, request timeout %v)", failed, n, took, c.defaults.requestTimeout)
	}
	for i, l := range locks {
		if h := tn.holders(l.Key(), l.Token()); len(h) != 0 {
			t.Fatalf("lock %d: key left on nodes %v after its release", i, h)
		}
	}
}

// acquireSoon is a test's setup acquisition: it waits for the lock, since
// on a loaded host a single round can miss a short node timeout.
func acquireSoon(t *testing.T, c *Client, key string) (*Lock, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg(), 20*time.Second)
	defer cancel()
	return c.Acquire(ctx, key)
}
