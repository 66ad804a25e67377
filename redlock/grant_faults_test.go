package redlock

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// expectedGrant returns the token whose grants c's waiter for key counts now
// ("" when none, or no waiter).
func expectedGrant(c *Client, key string) string {
	c.waker.mu.Lock()
	defer c.waker.mu.Unlock()
	for wu := range c.waker.keys[key] {
		if !wu.watch && wu.id != "" {
			return wu.grant
		}
	}
	return ""
}

// A waiter that gives up deletes every key a release granted it (DESIGN.md,
// "Only grants that cannot be undone count": "A waiter that gives up deletes
// the key where it holds its registered token"). Schedule: the waiter's
// attempt k registered G; attempt k+1 takes G as its token and registers G'
// locally (token()), then waits for a free round slot (admit); meanwhile
// the holder releases and every node grants G, the registration it holds;
// the waiter's ctx ends while it still waits in admit, so the attempt with
// G never runs and nothing else cleans G up: leave() must delete G as well
// as G'.
func TestGiveUpInAdmissionDeletesGrantedKey(t *testing.T) {
	tn := newNodes(t, 3)
	holder := newClient(t, tn)
	h, err := holder.TryAcquire(bg(), "admit")
	if err != nil {
		t.Fatal(err)
	}
	w := newClient(t, tn, WithRetryDelay(20*time.Millisecond, 20*time.Millisecond))
	listening(t, w)
	ctx, cancel := context.WithCancel(bg())
	defer cancel()
	gone := make(chan error, 1)
	go func() {
		l, err := w.Acquire(ctx, "admit")
		if l != nil {
			_ = l.Release(bg())
		}
		gone <- err
	}()
	tn.queuedWithGrant(t, "admit")
	// Every round slot of the waiter's Client is taken: its next attempt
	// waits in admit, after token() chose its token.
	filled := 0
	for filled < cap(w.rounds) {
		w.rounds <- struct{}{}
		filled++
	}
	defer func() {
		for ; filled > 0; filled-- {
			<-w.rounds
		}
	}()
	var g string
	waitFor(t, func() bool {
		g = tn.queuedWithGrant(t, "admit")
		e := expectedGrant(w, "admit")
		// token() ran for the blocked attempt: it counts grants of a token
		// that is not the one the nodes hold for it.
		return e != "" && e != g
	})
	if err := h.Release(bg()); err != nil {
		t.Fatal(err)
	}
	if on := tn.holders("admit", g); len(on) != 3 {
		t.Fatalf("the release granted %q on nodes %v only", g, on)
	}
	cancel()
	if err := <-gone; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire: %v, want the ctx's error", err)
	}
	for ; filled > 0; filled-- {
		<-w.rounds
	}
	_ = w.Close() // waits for the background dequeue of leave()
	if on := tn.holders("admit", g); len(on) != 0 {
		other := newClient(t, tn)
		_, err := other.TryAcquire(bg(), "admit")
		t.Fatalf("the waiter gave up, yet the key still holds its granted token %q on nodes %v "+
			"(for the waiter's whole TTL); another client's TryAcquire: %v", g, on, err)
	}
}

// A node in the waiter's restart quarantine does not grant it the key: a
// grant is a vote for the waiter, and the waiter's own vote there would be
// refused. The releasing Client's quarantine is not enough: Clients'
// quarantines differ by default (each defaults to its own TTL), so the
// waiter registers its own with its token. Schedule: holder with TTL 2 s
// (quarantine 2 s), waiter with TTL 1 min (quarantine 1 min); node 0
// restarted with its data 10 s ago; the release must not grant there.
func TestGrantHonoursWaitersQuarantine(t *testing.T) {
	tn := newNodes(t, 3)
	holder := newClient(t, tn, WithTTL(2*time.Second))
	h, err := holder.TryAcquire(bg(), "young2")
	if err != nil {
		t.Fatal(err)
	}
	w := newClient(t, tn, WithTTL(time.Minute), WithRetryDelay(time.Minute, time.Minute))
	got, token := tn.queuedWaiter(t, w, "young2")
	// Node 0 restarted with its data 10 s ago: young for the waiter's
	// quarantine (1 min), old for the holder's (2 s).
	if err := tn.mr[0].Set(sentinelKey, strconv.FormatInt(time.Now().Add(-10*time.Second).UnixMilli(), 10)); err != nil {
		t.Fatal(err)
	}
	req, _ := w.newRequest("probe-young2", nil)
	probe := w.attemptProbe(t, req)
	if probe != voteQuarantined {
		t.Fatalf("node 0 answers the waiter's vote with status %d, want it quarantined", probe)
	}
	releaseTo(t, h, got)
	if v, _ := tn.mr[0].Get("young2"); v == token {
		t.Fatalf("node 0, in the waiter's restart quarantine, granted it the key (stats %+v)", w.Stats())
	}
}

// attemptProbe runs the acquisition script of req on node 0 with a fresh
// token and returns its status (then deletes what it set).
func (c *Client) attemptProbe(t *testing.T, req *request) int64 {
	t.Helper()
	args := req.acquire
	args[acquireToken], args[acquireWall] = newToken(), time.Now().UnixMilli()
	v, err := parseVote(acquireScript.calls(1, args[:]...).run(bg(), c.nodes[0].rdb, 0))
	if err != nil {
		t.Fatal(err)
	}
	return v.status
}

// A node that the Client refuses to count (ready: "the same Redis server as
// node j: it would vote twice") must not count as a grant either. The waker
// listens on every node, so one server listed twice delivers each of its
// grant announcements twice, under two node indexes; only one may count.
// Schedule: nodes [A, A again, B], node 1 marked a duplicate (as
// ready() marks it when INFO reports the same run id; miniredis reports
// none, so the test marks it); B no longer holds the releaser's key; A
// grants: the waiter must not hold the lock with its token on one server
// of two.
func TestDuplicateServerGrantCountsOnce(t *testing.T) {
	base := newNodes(t, 2)
	dup := redis.NewClient(&redis.Options{Addr: proxy(t, base.mr[0].Addr()), MaxRetries: -1})
	t.Cleanup(func() { _ = dup.Close() })
	tn := &testNodes{
		mr:      []*miniredis.Miniredis{base.mr[0], base.mr[0], base.mr[1]},
		clients: []redis.UniversalClient{base.clients[0], dup, base.clients[1]},
	}
	holder := newClient(t, tn)
	h, err := holder.TryAcquire(bg(), "dup")
	if err != nil {
		t.Fatal(err)
	}
	w := newClient(t, tn, WithTTL(time.Minute), WithRetryDelay(time.Minute, time.Minute))
	n := w.nodes[1]
	n.mu.Lock()
	n.fatal = errors.New("the same Redis server as node 0: it would vote twice; list each master once")
	n.mu.Unlock()
	n.probed.Store(true)
	listening(t, w)
	ctx, cancel := context.WithTimeout(bg(), 3*time.Second)
	defer cancel()
	got := make(chan *Lock, 1)
	go func() {
		l, _ := w.Acquire(ctx, "dup")
		got <- l
	}()
	token := tn.queuedWithGrant(t, "dup")
	// The holder's key on B expired (B's clock ran fast): B's delete finds
	// nothing and neither grants nor announces.
	base.mr[1].Del("dup")
	// The waiter sleeps, counting grants of the token the nodes hold for it.
	waitFor(t, func() bool { return expectedGrant(w, "dup") == tn.queuedWithGrant(t, "dup") })
	token = expectedGrant(w, "dup")
	t.Logf("before release: stats %+v expected %q", w.Stats(), token)
	_ = h.Release(bg()) // held on server A only by now: ErrNotHeld
	v, _ := base.mr[0].Get("dup")
	t.Logf("after release: A holds %q, stats %+v", v, w.Stats())
	l := <-got
	v0, _ := base.mr[0].Get("dup")
	t.Logf("registered %q; A holds %q; stats %+v", token, v0, w.Stats())
	if l != nil {
		defer func() { _ = l.Release(bg()) }()
		servers := 0
		for _, mr := range base.mr {
			if v, _ := mr.Get("dup"); v == token {
				servers++
			}
		}
		if servers >= 2 {
			return
		}
		t.Fatalf("the waiter holds (stats %+v) with its token on %d of 2 distinct servers: "+
			"the duplicate node's copy of server A's grant counted as a second vote", w.Stats(), servers)
	}
}

// proxy forwards a new local address to addr (another name for one server).
func proxy(t *testing.T, addr string) string {
	t.Helper()
	return serveLocal(t, func(c net.Conn, wg *sync.WaitGroup) []net.Conn {
		s, err := net.Dial("tcp", addr)
		if err != nil {
			_ = c.Close()
			return nil
		}
		wg.Add(2)
		go func() { defer wg.Done(); _, _ = io.Copy(s, c); _ = s.Close() }()
		go func() { defer wg.Done(); _, _ = io.Copy(c, s); _ = c.Close() }()
		return []net.Conn{c, s}
	})
}
