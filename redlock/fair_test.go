package redlock

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// queueEntries returns the waiter ids in key's queue on node i.
func (tn *testNodes) queueEntries(t testing.TB, i int, key string) []string {
	t.Helper()
	members, err := tn.mr[i].ZMembers(queuePrefix + key)
	if err != nil {
		return nil
	}
	return members
}

// Waiters of different Clients are served in the order they queued, and a
// release wakes only the next one.
func TestFairQueueOrdersClients(t *testing.T) {
	tn := newNodes(t, 3)
	holder := newClient(t, tn)
	h, err := holder.TryAcquire(bg(), "fair")
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	order := make(chan int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		c := newClient(t, tn, WithRetryDelay(time.Minute, time.Minute)) // only a wake-up can end a sleep
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := c.Acquire(bg(), "fair")
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			_ = l.Release(bg())
		}()
		// Waiter i has queued on every node before the next one starts.
		waitFor(t, func() bool {
			for j := range tn.mr {
				if len(tn.queueEntries(t, j, "fair")) != i+1 {
					return false
				}
			}
			return true
		})
	}
	if err := h.Release(bg()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(order)
	want := 0
	for got := range order {
		if got != want {
			t.Fatalf("waiter %d served in position %d", got, want)
		}
		want++
	}
	for j := range tn.mr {
		waitFor(t, func() bool { return len(tn.queueEntries(t, j, "fair")) == 0 })
	}
}

// A waiter that dies leaves the queue on its own: its entry expires, and
// the waiters behind it are served.
func TestDeadWaiterDoesNotBlock(t *testing.T) {
	tn := newNodes(t, 3)
	for _, mr := range tn.mr {
		mr.ClockTTL(true) // entries and keys expire in real time
	}
	const ttl = 400 * time.Millisecond
	holder := newClient(t, tn, WithTTL(ttl))
	h, err := holder.TryAcquire(bg(), "dead")
	if err != nil {
		t.Fatal(err)
	}
	// The dead waiter: it queues, then its process stops (its Client
	// closes: unlike a waiter that gives up, it cannot take its place out,
	// and leaves the entry to expire).
	dead := newClient(t, tn, WithTTL(ttl), WithRetryDelay(time.Millisecond, time.Millisecond))
	gone := make(chan error, 1)
	go func() { _, err := dead.Acquire(bg(), "dead"); gone <- err }()
	waitFor(t, func() bool { return len(tn.queueEntries(t, 0, "dead")) == 1 })
	_ = dead.Close()
	<-gone
	if err := h.Release(bg()); err != nil {
		t.Fatal(err)
	}
	// The live waiter queues behind the dead one and is served once the
	// dead one's entry expired (one TTL), not never. When the release
	// granted the dead waiter the key, the key expires within one TTL too.
	live := newClient(t, tn, WithTTL(ttl), WithRetryDelay(10*time.Millisecond, 20*time.Millisecond))
	actx, acancel := context.WithTimeout(bg(), 20*ttl)
	defer acancel()
	l, err := live.Acquire(actx, "dead")
	if err != nil {
		t.Fatalf("a dead waiter blocked the queue: %v", err)
	}
	_ = l.Release(bg())
	if s := live.Stats(); s.VotesQueued == 0 && s.VotesTaken == 0 {
		t.Fatalf("stats %+v: the live waiter never waited for the dead one; the test lost its shape", s)
	}
}

// A node that missed a waiter's registration cannot block it: the waiter
// leads the queue on a majority and acquires there.
func TestMissedRegistrationDoesNotBlock(t *testing.T) {
	tn := newNodes(t, 3)
	holder := newClient(t, tn)
	h, err := holder.TryAcquire(bg(), "missed")
	if err != nil {
		t.Fatal(err)
	}
	// Another waiter sits at the head of node 2's queue only: it reached no
	// other node (and stays there, alive).
	tn.mr[2].ZAdd(queuePrefix+"missed", 1, "elsewhere")
	tn.mr[2].HSet(queueExpPrefix+"missed", "elsewhere", "99999999999999")
	w := newClient(t, tn, WithRetryDelay(time.Millisecond, 5*time.Millisecond))
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(bg(), 10*time.Second)
		defer cancel()
		l, err := w.Acquire(ctx, "missed")
		if err == nil {
			err = l.Release(bg())
		}
		got <- err
	}()
	waitFor(t, func() bool { return len(tn.queueEntries(t, 0, "missed")) == 1 })
	if err := h.Release(bg()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiter at the head of a majority was blocked by node 2's queue: %v", err)
	}
}

// A lock released while another goroutine of the same Client is first in
// the queue is handed over without a round trip: same token, valid, the key
// untouched. A waiter of another process that queued first is not overtaken.
func TestLocalHandoff(t *testing.T) {
	tn := newNodes(t, 3)
	// A long TTL: the handed-over lock must stay valid however slowly a busy
	// host runs the steps below.
	const ttl = time.Minute
	c := newClient(t, tn, WithTTL(ttl), WithRetryDelay(time.Millisecond, 2*time.Millisecond))
	first, err := c.Acquire(bg(), "hand")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(tn.holders("hand", first.Token())) == 3 }) // a straggler may lag
	next := make(chan *Lock, 1)
	go func() {
		l, err := c.Acquire(bg(), "hand")
		if err != nil {
			t.Error(err)
		}
		next <- l
	}()
	// The waiter has shown it is first: it queued on every node and offered.
	waitFor(t, func() bool {
		c.queues.mu.Lock()
		defer c.queues.mu.Unlock()
		kq := c.queues.m["hand"]
		return kq != nil && kq.ready != nil
	})
	if err := first.Release(bg()); err != nil {
		t.Fatal(err)
	}
	l := <-next
	if l == nil {
		t.FailNow()
	}
	if l.Token() != first.Token() || !l.Valid() || c.Stats().HandedOff != 1 {
		t.Fatalf("token %q (first %q), valid %v, stats %+v: want the lock handed over", l.Token(), first.Token(), l.Valid(), c.Stats())
	}
	if h := tn.holders("hand", l.Token()); len(h) != 3 {
		t.Fatalf("key on nodes %v after the hand-over, want all three", h)
	}
	if !errors.Is(first.Err(), ErrReleased) {
		t.Fatalf("the first holder's lock: %v, want released", first.Err())
	}

	// Now another process queues first; this Client's next waiter may not
	// overtake it.
	remote := newClient(t, tn, WithTTL(ttl), WithRetryDelay(time.Minute, time.Minute))
	served := make(chan string, 2)
	go func() {
		rl, err := remote.Acquire(bg(), "hand")
		if err != nil {
			t.Error(err)
			served <- ""
			return
		}
		served <- "remote"
		_ = rl.Release(bg())
	}()
	// The holder's own place stays in the queue while it holds a lock
	// handed over to it: count the others'.
	others := func(i int) int {
		n := 0
		for _, id := range tn.queueEntries(t, i, "hand") {
			if id != l.waiter {
				n++
			}
		}
		return n
	}
	queued := func(n int) func() bool {
		return func() bool {
			for i := range tn.mr {
				if others(i) != n {
					return false
				}
			}
			return true
		}
	}
	waitFor(t, queued(1)) // the remote waiter queued on every node
	go func() {
		ll, err := c.Acquire(bg(), "hand")
		if err != nil {
			t.Error(err)
			served <- ""
			return
		}
		served <- "local"
		_ = ll.Release(bg())
	}()
	waitFor(t, queued(2)) // and the local one behind it
	if err := l.Release(bg()); err != nil {
		t.Fatal(err)
	}
	if who := <-served; who != "remote" {
		t.Fatalf("%s served first: the local hand-over overtook a waiter that queued earlier", who)
	}
	<-served
	if s := c.Stats(); s.HandedOff != 1 {
		t.Fatalf("stats %+v: a second hand-over happened", s)
	}
}

// With fairness off there is no queue on the nodes.
func TestFairnessOff(t *testing.T) {
	tn := newNodes(t, 3)
	holder := newClient(t, tn, WithFairness(false))
	h, err := holder.TryAcquire(bg(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	w := newClient(t, tn, WithFairness(false), WithRetryDelay(time.Millisecond, 2*time.Millisecond))
	ctx, cancel := context.WithTimeout(bg(), 100*time.Millisecond)
	defer cancel()
	if _, err := w.Acquire(ctx, "plain"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	for i := range tn.mr {
		if q := tn.queueEntries(t, i, "plain"); len(q) != 0 {
			t.Fatalf("node %d has a queue %v with fairness off", i, q)
		}
	}
	_ = h.Release(bg())
}

// An offer is handed one lock at most: offered again after it was taken (its
// waiter had not yet noticed), it is not taken twice.
func TestHandoffOfferTakenOnce(t *testing.T) {
	var q keyQueues
	leave, err := q.enter(bg(), nil, "k")
	if err != nil {
		t.Fatal(err)
	}
	defer leave()
	now := time.Now()
	h := &handoff{ch: make(chan *Lock, 1), w: &waiter{id: "w"}}
	q.offer("k", h, now.Add(time.Minute))
	if q.take("k", now, func(*request) bool { return true }) != h {
		t.Fatal("a standing offer was not taken")
	}
	q.offer("k", h, now.Add(time.Minute)) // the waiter's loop offers again before it sees the lock
	if got := q.take("k", now, func(*request) bool { return true }); got != nil {
		t.Fatal("a spent offer was taken a second time: its lock would sit in a channel nobody reads, the key held by no one")
	}
	if q.withdraw(h) {
		t.Fatal("withdraw of a taken offer reported no hand-over")
	}
}
