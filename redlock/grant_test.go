package redlock

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quorumlock/quorumlock/clock"
)

// grantToken returns the token the waiter at the head of key's queue on
// node i registered for a grant ("" when none).
func (tn *testNodes) grantToken(i int, key string) string {
	ids, err := tn.mr[i].ZMembers(queuePrefix + key)
	if err != nil || len(ids) == 0 {
		return ""
	}
	v := tn.mr[i].HGet(queueExpPrefix+key, "g:"+ids[0])
	token, _, _ := strings.Cut(v, " ")
	return token
}

// queuedWithGrant waits until one waiter leads key's queue on every node
// with a grant token, the same everywhere, and returns that token.
func (tn *testNodes) queuedWithGrant(t *testing.T, key string) string {
	t.Helper()
	var token string
	waitFor(t, func() bool {
		token = tn.grantToken(0, key)
		if token == "" {
			return false
		}
		for i := range tn.mr {
			if len(tn.queueEntries(t, i, key)) != 1 || tn.grantToken(i, key) != token {
				return false
			}
		}
		return true
	})
	return token
}

// queuedWaiter starts w's Acquire of key in the background, once w listens
// for releases, and waits until it leads key's queue on every node with a
// grant token, which it returns with the channel of the lock.
func (tn *testNodes) queuedWaiter(t *testing.T, w *Client, key string) (got <-chan *Lock, token string) {
	t.Helper()
	listening(t, w)
	got = acquiring(t, w, key)
	return got, tn.queuedWithGrant(t, key)
}

// releaseTo releases h and returns the lock the waiter behind it got; the
// test fails when there is none, and the lock is released when it ends.
func releaseTo(t *testing.T, h *Lock, got <-chan *Lock) *Lock {
	t.Helper()
	if err := h.Release(bg()); err != nil {
		t.Fatal(err)
	}
	l := <-got
	if l == nil {
		t.FailNow()
	}
	t.Cleanup(func() { _ = l.Release(bg()) })
	return l
}

// acquiring runs c.Acquire(key) in the background and sends the lock (nil
// after an error, which fails the test).
func acquiring(t *testing.T, c *Client, key string, opts ...LockOption) <-chan *Lock {
	got := make(chan *Lock, 1)
	go func() {
		l, err := c.Acquire(bg(), key, opts...)
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	return got
}

// listening opens c's subscriptions to the release channel and waits until
// every node confirmed its own: a confirmation wakes every waiter to try
// again (see waker.confirmed), and a test that counts a waiter's attempts
// must not meet one.
func listening(t *testing.T, c *Client) {
	t.Helper()
	wu := c.waker.register("listening", "", 0)
	defer c.waker.unregister(wu)
	waitFor(t, func() bool {
		c.waker.mu.Lock()
		defer c.waker.mu.Unlock()
		return c.waker.confirms >= len(c.nodes)
	})
}

// A release hands the key to the waiter of another process that leads the
// queue: the nodes set the key to the waiter's registered token as they
// delete the holder's, and the waiter holds the lock once a majority said
// so, with no round of its own after the release.
func TestReleaseGrantsQueueHead(t *testing.T) {
	tn := newNodes(t, 5)
	holder := newClient(t, tn)
	h, err := holder.TryAcquire(bg(), "grant")
	if err != nil {
		t.Fatal(err)
	}
	// Only a release can end the waiter's sleeps before the holder's TTL,
	// and the waiter's place lasts long enough not to need a refresh.
	w := newClient(t, tn, WithTTL(time.Minute), WithRetryDelay(time.Minute, time.Minute))
	got, token := tn.queuedWaiter(t, w, "grant")
	released := time.Now()
	l := releaseTo(t, h, got)
	if s := w.Stats(); s.Granted != 1 || l.Token() != token {
		t.Fatalf("stats %+v, token %q (registered %q): want the lock granted by the release", s, l.Token(), token)
	}
	if on := tn.holders("grant", token); len(on) < w.Quorum() {
		t.Fatalf("the granted token is on nodes %v, fewer than a majority", on)
	}
	// The validity counts from the attempt that registered the token, which
	// started before the release.
	if !l.Until().Before(released.Add(l.TTL())) {
		t.Fatalf("validity until %v, later than the release (%v) + TTL", l.Until(), released)
	}
	for i := range tn.mr {
		if q := tn.queueEntries(t, i, "grant"); len(q) != 0 {
			waitFor(t, func() bool { return len(tn.queueEntries(t, i, "grant")) == 0 })
		}
	}
}

// The granted lock's validity is counted from the start of the attempt that
// registered the token, not from the grant or from when the waiter heard of
// it: the key on each node expires a TTL after the grant, and the grant came
// after the registration. Time passes only on the fake clock, so the
// deadline is exact.
func TestGrantValidityFromRegistration(t *testing.T) {
	tn := newNodes(t, 3)
	fake := clock.NewFake(time.Now())
	holder := newClient(t, tn)
	h, err := holder.TryAcquire(bg(), "since")
	if err != nil {
		t.Fatal(err)
	}
	w := newClient(t, tn, withClock(fake), WithRetryDelay(time.Minute, time.Minute))
	registered := fake.Now() // the fake clock moves only when told
	got, token := tn.queuedWaiter(t, w, "since")
	// Some time passes on the waiter's clock between its registration and
	// the release: less than its sleep (a third of the TTL), so that no
	// attempt registers again.
	elapsed := w.defaults.ttl / 4
	fake.Advance(elapsed)
	l := releaseTo(t, h, got)
	if l.Token() != token || w.Stats().Granted != 1 {
		t.Fatalf("token %q (registered %q), stats %+v: want the lock granted", l.Token(), token, w.Stats())
	}
	want := deadline(registered, w.defaults.ttl, w.defaults.driftFactor)
	if !l.Until().Equal(want) {
		t.Fatalf("validity until %v, want registration + TTL − drift = %v (the release came %v later)", l.Until(), want, elapsed)
	}
}

// A waiter whose process died while it led the queue is granted the key by
// the next release; nobody releases it, and it expires within one TTL, after
// which the next waiter is served.
func TestGrantToDeadWaiterExpires(t *testing.T) {
	tn := newNodes(t, 3)
	for _, mr := range tn.mr {
		mr.ClockTTL(true) // keys and entries expire in real time
	}
	const ttl = 400 * time.Millisecond
	holder := newClient(t, tn, WithTTL(ttl), WithAutoExtend(true))
	h, err := holder.TryAcquire(bg(), "dead")
	if err != nil {
		t.Fatal(err)
	}
	dead := newClient(t, tn, WithTTL(ttl), WithRetryDelay(time.Minute, time.Minute))
	listening(t, dead)
	gone := make(chan error, 1)
	go func() { _, err := dead.Acquire(bg(), "dead"); gone <- err }()
	token := tn.queuedWithGrant(t, "dead")
	// Its process stops: the Client closes without taking its place out.
	_ = dead.Close()
	<-gone
	if err := h.Release(bg()); err != nil {
		t.Fatal(err)
	}
	if on := tn.holders("dead", token); len(on) < 2 {
		// The entry expired before the release (a slow host): the test lost
		// its shape, not its property.
		t.Logf("the dead waiter's token is on nodes %v only: its entry expired first", on)
	}
	live := newClient(t, tn, WithTTL(ttl), WithRetryDelay(10*time.Millisecond, 20*time.Millisecond))
	ctx, cancel := context.WithTimeout(bg(), 20*ttl)
	defer cancel()
	l, err := live.Acquire(ctx, "dead")
	if err != nil {
		t.Fatalf("a key granted to a dead waiter blocked the next one: %v", err)
	}
	_ = l.Release(bg())
}

// A waiter that gives up after a release granted it the key deletes the
// key, and says so to the waiters behind it.
func TestGiveUpDeletesGrantedKey(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	req, err := c.newRequest("given", nil)
	if err != nil {
		t.Fatal(err)
	}
	// As release.lua leaves it: the key set to the waiter's token, the
	// waiter out of the queue, another waiter behind it.
	for _, mr := range tn.mr {
		if err := mr.Set("given", "granted-token"); err != nil {
			t.Fatal(err)
		}
		mr.ZAdd(queuePrefix+"given", 2, "behind")
		mr.HSet(queueExpPrefix+"given", "behind", "99999999999999")
	}
	ps := tn.clients[0].Subscribe(bg(), releasedChannel)
	defer func() { _ = ps.Close() }()
	if _, err := ps.Receive(bg()); err != nil {
		t.Fatal(err)
	}
	c.dequeue(req, "waiter", "granted-token", "", nil, true).Wait()
	if on := tn.holders("given", "granted-token"); len(on) != 0 {
		t.Fatalf("the granted key is still on nodes %v", on)
	}
	ctx, cancel := context.WithTimeout(bg(), 10*time.Second)
	defer cancel()
	m, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m.Payload != "waiter behind given" {
		t.Fatalf("announcement %q, want the next waiter named", m.Payload)
	}
	// Another token is never deleted.
	for _, mr := range tn.mr {
		_ = mr.Set("given", "someone-else")
	}
	c.dequeue(req, "waiter", "granted-token", "", nil, true).Wait()
	if on := tn.holders("given", "someone-else"); len(on) != 3 {
		t.Fatalf("another holder's key is on nodes %v only after the dequeue", on)
	}
}

// A node in its restart quarantine does not grant: its grant would be a
// vote, and it votes for nobody until the quarantine is over. The others
// grant.
func TestQuarantinedNodeDoesNotGrant(t *testing.T) {
	tn := newNodes(t, 5)
	holder := newClient(t, tn)
	h, err := holder.TryAcquire(bg(), "young")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(tn.holders("young", h.Token())) == 5 })
	w := newClient(t, tn, WithTTL(time.Minute), WithRetryDelay(time.Minute, time.Minute))
	got, token := tn.queuedWaiter(t, w, "young")
	// Node 0 restarted with its data (the holder's key and the queue
	// survived): its data is now younger than the quarantine.
	if err := tn.mr[0].Set(sentinelKey, "99999999999999"); err != nil {
		t.Fatal(err)
	}
	l := releaseTo(t, h, got)
	if l.Token() != token || w.Stats().Granted != 1 {
		t.Fatalf("token %q (registered %q), stats %+v: want the lock granted by the other four", l.Token(), token, w.Stats())
	}
	if on := tn.holders("young", token); slices.Contains(on, 0) || len(on) < 3 {
		t.Fatalf("the granted token is on nodes %v: want the four out of quarantine (three at least), not node 0", on)
	}
}
