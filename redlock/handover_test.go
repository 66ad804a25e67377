package redlock

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// lateVoteHook holds back the first acquisition script sent once armed, and
// sends it only once open is closed (with no deadline: a request the node
// receives late, as a slow network delivers it).
type lateVoteHook struct {
	armed  *atomic.Bool
	held   chan struct{} // closed once a call is held
	open   chan struct{} // closed by the test: send it
	landed chan struct{} // closed once the node answered it
}

func newLateVote() *lateVoteHook {
	return &lateVoteHook{armed: new(atomic.Bool), held: make(chan struct{}), open: make(chan struct{}), landed: make(chan struct{})}
}

func (h *lateVoteHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *lateVoteHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isAcquisition(cmd) && h.armed.CompareAndSwap(true, false) {
			close(h.held)
			<-h.open
			err := next(context.Background(), cmd)
			close(h.landed)
			return err
		}
		return next(ctx, cmd)
	}
}
func (h *lateVoteHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// offered reports whether c has a contender ready to take key over.
func offered(c *Client, key string) bool {
	c.queues.mu.Lock()
	defer c.queues.mu.Unlock()
	kq := c.queues.m[key]
	return kq != nil && kq.ready != nil
}

// A waiter handed the lock within its Client leaves the nodes' queue on
// every node (acquisition.leaveQueue: "it would stay first there while it
// holds the lock, and the attempt of this Client's next waiter, finding it
// first, would not offer itself for the next hand-over"). Schedule: W2
// offers itself; its next attempt's call to node 2 is delayed in the
// network; the holder of the same Client releases and hands W2 the lock
// meanwhile; leaveQueue's dequeue reaches node 2 first; then the delayed
// vote lands and would queue W2 again, first, while W2 holds the lock:
// leaveQueue, like give-up (acquisition.leave), waits for the last
// attempt's stragglers first.
func TestHandedOverHolderNotRequeuedByStraggler(t *testing.T) {
	tn := newNodes(t, 3)
	gate := newLateVote()
	tn.clients[2].AddHook(gate)
	defer func() {
		select {
		case <-gate.open:
		default:
			close(gate.open)
		}
	}()
	c := newClient(t, tn, WithTTL(20*time.Second), WithRetryDelay(20*time.Millisecond, 20*time.Millisecond),
		WithNodeTimeout(100*time.Millisecond))
	h, err := c.TryAcquire(bg(), "hand")
	if err != nil {
		t.Fatal(err)
	}
	got := acquiring(t, c, "hand")
	waitFor(t, func() bool { return offered(c, "hand") })
	gate.armed.Store(true)
	select {
	case <-gate.held:
	case <-time.After(10 * time.Second):
		t.Fatal("W2 made no further attempt")
	}
	l := releaseTo(t, h, got)
	if l.Token() != h.Token() {
		t.Fatalf("not handed over: token %q, holder's %q; the test lost its shape", l.Token(), h.Token())
	}
	close(gate.open)
	<-gate.landed
	// Once the late vote landed, the holder leaves every queue.
	for i := range tn.mr {
		waitFor(t, func() bool { return !slices.Contains(tn.queueEntries(t, i, "hand"), l.waiter) })
	}
	if !l.Valid() {
		t.Log("the lock ended before the check; the test lost its shape")
	}
}

// A lock handed over within a Client keeps the old holder's validity, and
// the new holder extends it with its own TTL: a new holder whose TTL is
// shorter would set keys that expire before Until (an extension never moves
// the lease backwards), and another client could take the key while the
// lock is still valid. So only a waiter with the same TTL (and drift) takes
// a lock over; this one gets its own through the nodes. Schedule: H holds
// with TTL 1 min; W of the same Client waits WithTTL(2s) and offers; H
// releases.
func TestHandOverShorterTTLExtendOutlivesKeys(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn, WithTTL(time.Minute))
	h, err := c.TryAcquire(bg(), "short")
	if err != nil {
		t.Fatal(err)
	}
	got := acquiring(t, c, "short", WithTTL(2*time.Second), WithRetryDelay(20*time.Millisecond, 20*time.Millisecond))
	waitFor(t, func() bool { return offered(c, "short") })
	l := releaseTo(t, h, got)
	if l.Token() == h.Token() || c.Stats().HandedOff != 0 {
		t.Fatalf("the 1 min lock was handed over to a waiter with a 2 s TTL (stats %+v)", c.Stats())
	}
	if left := time.Until(l.Until()); left > 2*time.Second {
		t.Fatalf("the 2 s lock is valid for %v more", left)
	}
}

// waiterGrants returns how many nodes announced a grant of the token c's
// waiter for key counts now.
func waiterGrants(c *Client, key string) int {
	c.waker.mu.Lock()
	defer c.waker.mu.Unlock()
	for wu := range c.waker.keys[key] {
		if !wu.watch && wu.id != "" {
			return len(wu.granted)
		}
	}
	return 0
}

// A waiter woken by a majority of announcements of which only some granted
// waits up to a node timeout "for the rest of the release" (DESIGN.md, Grant
// by release; acquisition.wait). When every node has already announced the
// release there is no rest to wait for, yet the waiter sleeps the full node
// timeout before its next attempt. Schedule: 3 nodes; the waiter (node
// timeout 1 s) leads the queue everywhere, with its grant token registered
// on node 0 only; the release reaches node 0 first (grant heard), then
// nodes 1 and 2 (announced, no grant): the waiter wakes on the majority,
// finds one grant, and sleeps 1 s although all 3 nodes have announced.
func TestPartialGrantNoWaitOnceAllAnnounced(t *testing.T) {
	tn := newNodes(t, 3)
	holder := newClient(t, tn)
	h, err := holder.TryAcquire(bg(), "rest")
	if err != nil {
		t.Fatal(err)
	}
	w := newClient(t, tn, WithTTL(20*time.Second), WithRetryDelay(time.Minute, time.Minute), WithNodeTimeout(time.Second))
	listening(t, w)
	got := acquiring(t, w, "rest")
	tn.queuedWithGrant(t, "rest")
	id := tn.queueEntries(t, 0, "rest")[0]
	for _, i := range []int{1, 2} {
		tn.mr[i].HDel(queueExpPrefix+"rest", "g:"+id)
	}
	tn.mr[1].Lock()
	tn.mr[2].Lock()
	released := make(chan error, 1)
	go func() { released <- h.Release(bg()) }()
	waitFor(t, func() bool { return waiterGrants(w, "rest") == 1 })
	tn.mr[1].Unlock()
	tn.mr[2].Unlock()
	start := time.Now()
	if err := <-released; err != nil {
		t.Fatal(err)
	}
	l := <-got
	took := time.Since(start)
	if l == nil {
		return
	}
	defer l.Release(bg())
	if took > 500*time.Millisecond {
		t.Fatalf("the release reached every node (all 3 announced) yet the waiter took %v to acquire: "+
			"it slept the node timeout waiting for grants that could no longer come", took.Round(time.Millisecond))
	}
}

// A lock found lost (an extension refused by a majority: Err wraps
// ErrNotHeld, Done is closed) is still handed over by its Release within
// the Client: Lock.Release hands over whenever the validity has not run
// out, whether the lease ended by release or by loss (lease.endState says
// ended, not why). The waiter receives a valid lock on a key another
// owner holds. Schedule: H holds; W of the same Client offers; another
// owner's token replaces H's on every node (H's keys were lost and another
// client took the key); H's Extend is refused (lost); H.Release hands the
// lost lock to W and returns nil; W's Acquire returns a lock valid for
// the rest of H's validity on a key none of whose nodes holds its token.
func TestLostLockNotHandedOver(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	h, err := c.TryAcquire(bg(), "lost")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *Lock, 1)
	go func() {
		l, err := c.Acquire(bg(), "lost", WithRetryDelay(20*time.Millisecond, 20*time.Millisecond))
		if err != nil {
			t.Log(err)
		}
		got <- l
	}()
	waitFor(t, func() bool { return offered(c, "lost") })
	// Another owner's token replaces H's on every node (H's keys were lost
	// and another client took the key).
	for _, mr := range tn.mr {
		if err := mr.Set("lost", "another-owner"); err != nil {
			t.Fatal(err)
		}
		mr.SetTTL("lost", 8*time.Second)
	}
	if err := h.Extend(bg()); !errors.Is(err, ErrNotHeld) || h.Valid() {
		t.Fatalf("Extend: %v, valid %v; want the lock lost", err, h.Valid())
	}
	waitFor(t, func() bool { return offered(c, "lost") })
	rerr := h.Release(bg())
	var l *Lock
	select {
	case l = <-got:
	case <-time.After(2 * time.Second):
		t.Logf("no hand-over; Release: %v", rerr)
		return
	}
	if l != nil {
		defer l.Release(bg())
		if on := tn.holders("lost", l.Token()); l.Valid() && len(on) < 2 {
			t.Fatalf("the lost lock (Err: %v) was handed over (Release: %v): the waiter's lock is valid until %v "+
				"(%v from now) while another owner holds the key on every node (its token on nodes %v)",
				h.Err(), rerr, l.Until().Format(time.TimeOnly), time.Until(l.Until()).Round(time.Second), on)
		}
	}
}
