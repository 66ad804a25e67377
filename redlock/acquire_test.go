package redlock

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/clock"
)

// For N = 1, 3, 5 and every subset of unavailable nodes, an acquisition
// succeeds exactly when a majority is available; a failed one leaves the key
// on no node, and a release removes it from every node.
func TestEverySubsetOfDownNodes(t *testing.T) {
	for _, n := range []int{1, 3, 5} {
		tn := newNodes(t, n)
		c := newClient(t, tn, WithNodeTimeout(200*time.Millisecond))
		for mask := 0; mask < 1<<n; mask++ {
			t.Run(fmt.Sprintf("n=%d/down=%0*b", n, n, mask), func(t *testing.T) {
				down := 0
				for i := 0; i < n; i++ {
					if mask&(1<<i) != 0 {
						tn.down[i].Store(true)
						down++
					}
				}
				defer func() {
					for _, d := range tn.down {
						d.Store(false)
					}
				}()
				key := fmt.Sprintf("subset-%d-%d", n, mask)
				l, err := c.TryAcquire(bg(), key, WithTTL(5*time.Second))
				want := n-down >= n/2+1
				if (err == nil) != want {
					t.Fatalf("%d of %d nodes down: err = %v, want success %v", down, n, err, want)
				}
				if err != nil {
					var re *RoundError
					if !errors.As(err, &re) || !errors.Is(err, ErrNoQuorum) {
						t.Fatalf("error %v is not a *RoundError with ErrNoQuorum", err)
					}
					if len(re.Nodes) == 0 || re.Nodes[0].Addr == "" || re.Nodes[0].Reason != NodeFailed {
						t.Fatalf("error %v carries no failed node with an address", err)
					}
					for i, mr := range tn.mr { // cleanup runs in the background
						waitFor(t, func() bool { return !mr.Exists(key) })
						_ = i
					}
					return
				}
				// A straggler may still be setting the key; a majority has it.
				if h := tn.holders(key, l.Token()); len(h) < n/2+1 || len(h) > n-down {
					t.Fatalf("key on nodes %v, want on a majority of the %d available nodes", h, n-down)
				}
				if err := l.Release(bg()); err != nil {
					t.Fatalf("release: %v", err)
				}
				// A majority deleted it; the rest follow in the background.
				waitFor(t, func() bool { return len(tn.holders(key, l.Token())) == 0 })
			})
		}
	}
}

// A node that never answers delays neither a success nor a failure that
// the other nodes decide, and its late answer cannot leave a key behind.
func TestStalledNodeDoesNotDelay(t *testing.T) {
	tn := newNodes(t, 3)
	clients := append([]redis.UniversalClient{}, tn.clients...)
	for i := 0; i < 2; i++ {
		rdb := redis.NewClient(&redis.Options{Addr: stalledNode(t), MaxRetries: -1, ContextTimeoutEnabled: true})
		t.Cleanup(func() { _ = rdb.Close() })
		clients = append(clients, rdb)
	}
	const timeout = 2 * time.Second
	c, err := New(clients, WithNodeTimeout(timeout), WithQuarantine(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	begin := time.Now()
	l, err := c.TryAcquire(bg(), "stalled")
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took >= timeout {
		t.Fatalf("acquisition took %v: waited for the stalled nodes (timeout %v)", took, timeout)
	}
	if err := l.Release(bg()); err != nil {
		t.Fatalf("release with a stalled minority: %v", err)
	}
}

// With the key taken on a majority, the attempt fails at once and removes
// the key from the nodes that granted it.
func TestFailedAttemptCleansUp(t *testing.T) {
	tn := newNodes(t, 5)
	c := newClient(t, tn)
	for i := 0; i < 3; i++ {
		if err := tn.mr[i].Set("shared", "someone-else"); err != nil {
			t.Fatal(err)
		}
		tn.mr[i].SetTTL("shared", 7*time.Second)
	}
	_, err := c.TryAcquire(bg(), "shared")
	var re *RoundError
	if !errors.Is(err, ErrTaken) || !errors.As(err, &re) {
		t.Fatalf("err = %v, want a *RoundError with ErrTaken", err)
	}
	// The refusals decide the round; a grant still on its way is left out.
	if re.Op != "acquire" || re.Granted > 2 || re.Needed != 3 || len(re.Nodes) != 3 {
		t.Fatalf("err = %v, want at most 2 granted of 3 needed and 3 refusing nodes", re)
	}
	for _, ne := range re.Nodes {
		if ne.Reason != NodeTaken || ne.Wait <= 0 || ne.Wait > 7*time.Second {
			t.Fatalf("node error %+v, want taken with the holder's TTL", ne)
		}
	}
	for i := 3; i < 5; i++ { // cleanup runs in the background
		waitFor(t, func() bool { return !tn.mr[i].Exists("shared") })
	}
	for i := 0; i < 3; i++ {
		if v, _ := tn.mr[i].Get("shared"); v != "someone-else" {
			t.Fatalf("node %d: the holder's value became %q", i, v)
		}
	}
}

// The key is exactly the caller's key and its value exactly the token (the
// redsync interop contract), with the TTL asked for.
func TestKeyLayout(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	l, err := c.TryAcquire(bg(), "orders:7", WithTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for i, mr := range tn.mr {
		waitFor(t, func() bool { return mr.Exists("orders:7") }) // a straggler may lag
		if v, _ := mr.Get("orders:7"); v != l.Token() {
			t.Fatalf("node %d holds %q, want the token %q", i, v, l.Token())
		}
		if ttl := mr.TTL("orders:7"); ttl != 3*time.Second {
			t.Fatalf("node %d TTL %v, want 3s", i, ttl)
		}
	}
	if l.Key() != "orders:7" || len(l.Token()) < 20 {
		t.Fatalf("Key %q Token %q", l.Key(), l.Token())
	}
	if left := time.Until(l.Until()); left <= 0 || left > 3*time.Second-drift(3*time.Second, defaultDriftFactor) {
		t.Fatalf("Until is %v away, want within TTL − drift", left)
	}
	if err := l.Release(bg()); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(bg()); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("second release: %v, want ErrNotHeld", err)
	}
}

// Extend and Release after the validity ended return ErrExpired; Extend
// while valid moves Until and the nodes' TTL.
func TestExtendAndReleaseAfterValidity(t *testing.T) {
	tn := newNodes(t, 3)
	fake := clock.NewFake(time.Now())
	c := newClient(t, tn, withClock(fake))
	const ttl = 2 * time.Second
	l, err := c.TryAcquire(bg(), "extend", WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	fake.Advance(time.Second)
	tn.fastForward(time.Second)
	before := l.Until()
	if err := l.Extend(bg()); err != nil {
		t.Fatalf("extend while valid: %v", err)
	}
	if !l.Until().After(before) {
		t.Fatalf("Until did not move: %v → %v", before, l.Until())
	}
	// A majority answered; a straggler may still be applying the PEXPIRE.
	for _, mr := range tn.mr {
		waitFor(t, func() bool { return mr.TTL("extend") == ttl })
	}
	fake.Advance(ttl)
	tn.fastForward(ttl)
	if err := l.Extend(bg()); !errors.Is(err, ErrExpired) {
		t.Fatalf("extend after validity: %v, want ErrExpired", err)
	}
	<-l.Done()
	if !errors.Is(l.Err(), ErrLockLost) || !errors.Is(l.Err(), ErrExpired) {
		t.Fatalf("Err = %v, want ErrLockLost wrapping ErrExpired", l.Err())
	}
	if err := l.Release(bg()); !errors.Is(err, ErrExpired) {
		t.Fatalf("release after validity: %v, want ErrExpired", err)
	}
}

// Extend returns ErrNotHeld when a majority lost the token even though the
// local validity has not ended; the lock then counts as lost.
func TestExtendAfterTokenGone(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	l, err := c.TryAcquire(bg(), "gone")
	if err != nil {
		t.Fatal(err)
	}
	// Let the straggling vote land and be counted before tampering: a vote
	// still being read when Release starts leaves its node out of the
	// release's round (its delete follows in the background), and the
	// verdict would rest on two nodes.
	<-l.acq.Done()
	// Another owner's token on a majority (a missing key would be repaired:
	// see TestExtendRepairsRollingRestart).
	tn.mr[0].Set("gone", "intruder")
	tn.mr[1].Set("gone", "intruder")
	if err := l.Extend(bg()); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("extend: %v, want ErrNotHeld", err)
	}
	select {
	case <-l.Done():
	case <-time.After(time.Second):
		t.Fatal("Done did not close after a refused extension")
	}
	if !errors.Is(l.Err(), ErrLockLost) {
		t.Fatalf("Err = %v", l.Err())
	}
	if err := l.Release(bg()); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("release: %v, want ErrNotHeld", err)
	}
	if v, _ := tn.mr[1].Get("gone"); v != "intruder" {
		t.Fatalf("release deleted another owner's key: %q", v)
	}
}

// A lock whose validity is gone by the time the votes are in is not held:
// the TTL is shorter than the time the nodes take to answer.
func TestValidityExhaustedDuringAcquire(t *testing.T) {
	tn := newNodes(t, 3)
	fake := clock.NewFake(time.Now())
	c := newClient(t, tn, withClock(fake))
	// Advance the fake clock from inside the round: every node answers
	// "after" the TTL has passed.
	for _, rdb := range tn.clients {
		rdb.AddHook(advanceHook{fake: fake, by: time.Second})
	}
	_, err := c.TryAcquire(bg(), "slow", WithTTL(time.Second))
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("err = %v, want ErrExpired", err)
	}
	for _, mr := range tn.mr { // cleanup runs in the background
		waitFor(t, func() bool { return !mr.Exists("slow") })
	}
}

type advanceHook struct {
	fake *clock.Fake
	by   time.Duration
}

func (h advanceHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h advanceHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if strings.HasPrefix(strings.ToLower(cmd.Name()), "eval") && len(cmd.Args()) > 3 && cmd.Args()[3] == "slow" {
			h.fake.Advance(h.by)
		}
		return err
	}
}
func (h advanceHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// Acquire waits while the key is taken and returns an error matching both
// the context's error when the context ends first.
func TestAcquireContextDone(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	held, err := c.TryAcquire(bg(), "busy")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Release(bg())
	ctx, cancel := context.WithTimeout(bg(), 300*time.Millisecond)
	defer cancel()
	other := newClient(t, tn)
	_, err = other.Acquire(ctx, "busy")
	var re *RoundError
	if !errors.As(err, &re) || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrTaken) {
		t.Fatalf("err = %v, want a *RoundError with DeadlineExceeded as its one reason", err)
	}
	if re.Attempts < 2 || len(re.Nodes) < 2 {
		t.Fatalf("err = %v: want several attempts and the last one's taken votes", err)
	}
	for _, ne := range re.Nodes {
		if ne.Reason != NodeTaken {
			t.Fatalf("err = %v: node %d %v, want taken", err, ne.Node, ne.Reason)
		}
	}
	// Waiting in the client-local queue ends with the context too.
	ctx2, cancel2 := context.WithTimeout(bg(), 100*time.Millisecond)
	defer cancel2()
	if _, err := c.Acquire(ctx2, "busy"); !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &re) {
		t.Fatalf("err = %v, want a *RoundError with DeadlineExceeded", err)
	}
}

// Many goroutines, spread over several clients, acquire one key: never two
// holders at once, and every one of them gets the lock.
func TestMutualExclusionUnderContention(t *testing.T) {
	tn := newNodes(t, 5)
	const clients, perClient, rounds = 5, 12, 2
	var cs []*Client
	for i := 0; i < clients; i++ {
		cs = append(cs, newClient(t, tn, WithRetryDelay(time.Millisecond, 10*time.Millisecond)))
	}
	var inside, maxInside atomic.Int32
	var got [clients * perClient]atomic.Int32
	ctx, cancel := context.WithTimeout(bg(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, clients*perClient)
	for g := 0; g < clients*perClient; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := cs[g%clients]
			for r := 0; r < rounds; r++ {
				l, err := c.Acquire(ctx, "contended")
				if err != nil {
					errs <- err
					return
				}
				if n := inside.Add(1); n > maxInside.Load() {
					maxInside.Store(n)
				}
				got[g].Add(1)
				time.Sleep(100 * time.Microsecond)
				inside.Add(-1)
				// A delete that timed out on a starved host leaves the key
				// to expire: the others wait longer, which the test allows.
				if err := l.Release(ctx); err != nil && !starvedRelease(err) {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if m := maxInside.Load(); m != 1 {
		t.Fatalf("%d holders at once", m)
	}
	for g := range got {
		if n := got[g].Load(); n != rounds {
			t.Fatalf("goroutine %d acquired %d times, want %d", g, n, rounds)
		}
	}
}

// Waiters of one client are served in arrival order.
func TestLocalQueueIsFIFO(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	first, err := c.Acquire(bg(), "fifo")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	order := make(chan int, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := c.Acquire(bg(), "fifo")
			if err != nil {
				t.Error(err)
				return
			}
			order <- i
			_ = l.Release(bg())
		}()
		// Wait until goroutine i contends (the first) or is queued behind
		// the one that contends, before starting the next.
		if i == 0 {
			waitFor(t, func() bool { return c.Stats().Attempts >= 2 })
		} else {
			waitFor(t, func() bool { return c.queueLen("fifo") == i })
		}
	}
	if err := first.Release(bg()); err != nil {
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
}

func (c *Client) queueLen(key string) int {
	c.queues.mu.Lock()
	defer c.queues.mu.Unlock()
	if kq := c.queues.m[key]; kq != nil {
		return len(kq.waiters)
	}
	return 0
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// A release announces itself so that a waiter in another process retries at
// once instead of after its retry delay.
func TestWakeupOnRelease(t *testing.T) {
	tn := newNodes(t, 3)
	holder := newClient(t, tn)
	waiter := newClient(t, tn, WithRetryDelay(30*time.Second, 30*time.Second))
	l, err := holder.TryAcquire(bg(), "wake")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(bg(), 20*time.Second)
		defer cancel()
		l2, err := waiter.Acquire(ctx, "wake")
		if err == nil {
			err = l2.Release(bg())
		}
		got <- err
	}()
	// Wait until the waiter has failed once and subscribed on every node.
	waitFor(t, func() bool {
		for _, mr := range tn.mr {
			if mr.PubSubNumSub(releasedChannel)[releasedChannel] == 0 {
				return false
			}
		}
		return true
	})
	begin := time.Now()
	if err := l.Release(bg()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > 10*time.Second {
		t.Fatalf("waiter took %v after the release: it slept its retry delay", took)
	}
}

func TestBadInput(t *testing.T) {
	tn := newNodes(t, 3)
	rdb0 := tn.clients[0]
	same := redis.NewClient(&redis.Options{Addr: tn.mr[1].Addr(), DB: 2, ContextTimeoutEnabled: true})
	defer same.Close()
	plain := redis.NewClient(&redis.Options{Addr: tn.mr[0].Addr()})
	defer plain.Close()
	cases := []struct {
		name  string
		nodes []redis.UniversalClient
		opts  []Option
		want  string
	}{
		{"no nodes", nil, nil, "no nodes"},
		{"nil node", []redis.UniversalClient{rdb0, nil}, nil, "node 1 is nil"},
		{"same client twice", []redis.UniversalClient{rdb0, tn.clients[1], rdb0}, nil, "node 2 is the same client as node 0"},
		{"same address twice", []redis.UniversalClient{rdb0, tn.clients[1], same}, nil, "node 2 (" + tn.mr[1].Addr() + ") is the same server as node 1"},
		{"zero TTL", tn.clients, []Option{WithTTL(0)}, "WithTTL(0s): the TTL must be positive"},
		{"negative TTL", tn.clients, []Option{WithTTL(-time.Second)}, "WithTTL(-1s): the TTL must be positive"},
		{"TTL of years", tn.clients, []Option{WithTTL(56 * 365 * 24 * time.Hour)}, "longer than 24h0m0s"},
		{"TTL not above drift", tn.clients, []Option{WithTTL(2 * time.Millisecond)}, "WithTTL(2ms): must be longer than the clock-drift allowance 2.02ms"},
		{"drift factor", tn.clients, []Option{WithDriftFactor(0.7)}, "WithDriftFactor(0.7): must be in [0, 0.5)"},
		{"node timeout above TTL", tn.clients, []Option{WithTTL(time.Second), WithNodeTimeout(2 * time.Second)}, "WithNodeTimeout(2s): must be shorter than the TTL 1s"},
		{"negative node timeout", tn.clients, []Option{WithNodeTimeout(-time.Second)}, "WithNodeTimeout(-1s): must be positive"},
		{"retry range", tn.clients, []Option{WithRetryDelay(time.Second, time.Millisecond)}, "WithRetryDelay(1s, 1ms)"},
		{"tries", tn.clients, []Option{WithTries(-1)}, "WithTries(-1)"},
		{"skew below resolution", tn.clients, []Option{WithMaxSkew(time.Microsecond)}, "WithMaxSkew(1µs): below the 1ms resolution"},
		{"quarantine shorter than the TTL", tn.clients, []Option{WithTTL(10 * time.Second), WithQuarantine(5 * time.Second)}, "TTL 10s is longer than the Client's restart quarantine 5s"},
		{"fencing without the quarantine", tn.clients, []Option{WithFencing(true), WithQuarantine(0)}, "WithFencing needs the restart quarantine"},
		{"fencing with a wide skew", tn.clients, []Option{WithFencing(true), WithMaxSkew(4 * time.Second)}, "must exceed 2×max skew + 2×node timeout + request timeout"},
		{"nil option", tn.clients, []Option{nil}, "option 0 is nil"},
		{"nil clock", tn.clients, []Option{withClock(nil)}, "nil clock"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.nodes, tc.opts...)
			if err == nil {
				c.Close()
				t.Fatalf("New accepted %s", tc.name)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "redlock: ") {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
	c := newClient(t, tn)
	if _, err := c.TryAcquire(bg(), ""); err == nil || err.Error() != "redlock: empty key" {
		t.Fatalf("empty key: %v", err)
	}
	if _, err := c.Acquire(bg(), "k", WithTTL(-1)); err == nil || !strings.Contains(err.Error(), "WithTTL(-1ns): the TTL must be positive") {
		t.Fatalf("bad lock option: %v", err)
	}
	if _, err := c.Acquire(bg(), "k", WithTTL(time.Minute)); err == nil || !strings.Contains(err.Error(), "longer than the Client's restart quarantine") {
		t.Fatalf("a lock TTL beyond the quarantine: %v", err)
	}
	// Bad input loses nothing: a rejected call leaves no key behind.
	for i, mr := range tn.mr {
		if keys := mr.Keys(); len(keys) != 1 || keys[0] != sentinelKey {
			t.Fatalf("node %d holds %v after rejected calls", i, keys)
		}
	}
}

// An unreachable node is named in the error with its address.
func TestUnreachableNodeNamed(t *testing.T) {
	addr := downNode(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ContextTimeoutEnabled: true})
	defer rdb.Close()
	c, err := New([]redis.UniversalClient{rdb})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.TryAcquire(bg(), "k")
	var re *RoundError
	if !errors.As(err, &re) || len(re.Nodes) != 1 {
		t.Fatalf("err = %v, want a *RoundError with one node", err)
	}
	if ne := re.Nodes[0]; ne.Addr != addr || ne.Node != 0 || ne.Reason != NodeFailed || !strings.Contains(err.Error(), addr) {
		t.Fatalf("err = %v, want node 0 failed, naming %s", err, addr)
	}
}

func TestClosedClient(t *testing.T) {
	tn := newNodes(t, 1)
	c := newClient(t, tn)
	_ = c.Close()
	if _, err := c.TryAcquire(bg(), "k"); !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
}

// Every attempt of one acquisition uses a fresh token: the cleanup of a
// failed attempt may reach a node after the next attempt set the key there,
// and with a shared token it would delete the key the new holder counts on.
// Each attempt sends its token to each node once, so a token seen twice on
// one node was reused.
func TestEveryAttemptHasItsOwnToken(t *testing.T) {
	tn := newNodes(t, 3)
	var mu sync.Mutex
	seen := make([]map[string]int, len(tn.clients))
	for i, rdb := range tn.clients {
		seen[i] = map[string]int{}
		rdb.AddHook(tokenSpy{mu: &mu, tokens: seen[i]})
	}
	holder := newClient(t, tn)
	c := newClient(t, tn, WithRetryDelay(time.Millisecond, 2*time.Millisecond), WithWakeup(false))
	held, err := holder.TryAcquire(bg(), "retry")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg(), 200*time.Millisecond)
	defer cancel()
	_, err = c.Acquire(ctx, "retry")
	var ne *RoundError
	if !errors.As(err, &ne) || ne.Attempts < 3 {
		t.Fatalf("err = %v, want several attempts", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, tokens := range seen {
		if len(tokens) < ne.Attempts-1 { // the last attempt may be cut by the ctx before it is sent
			t.Errorf("node %d saw %d tokens over %d attempts", i, len(tokens), ne.Attempts)
		}
		for tok, n := range tokens {
			if n > 1 {
				t.Errorf("node %d: token %s sent by %d attempts", i, tok, n)
			}
		}
	}
	_ = held.Release(bg())
}

// tokenSpy counts the tokens of acquisition scripts sent to one node.
type tokenSpy struct {
	mu     *sync.Mutex
	tokens map[string]int
}

func (h tokenSpy) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h tokenSpy) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isAcquisition(cmd) && len(cmd.Args()) > acquisitionToken && cmd.Name() == "evalsha" {
			h.mu.Lock()
			h.tokens[fmt.Sprint(cmd.Args()[acquisitionToken])]++
			h.mu.Unlock()
		}
		return next(ctx, cmd)
	}
}
func (h tokenSpy) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestFewNodesWarn checks that one or two nodes are accepted with a
// warning that says what they cost, and three without one.
func TestFewNodesWarn(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{{1, "one node is not Redlock"}, {2, "two nodes tolerate no failure"}, {3, ""}} {
		var buf bytes.Buffer
		nodes := newNodes(t, tc.n)
		c, err := New(nodes.clients, WithLogger(slog.New(slog.NewTextHandler(&buf, nil))))
		if err != nil {
			t.Fatalf("%d nodes: %v", tc.n, err)
		}
		_ = c.Close()
		got := buf.String()
		if tc.want == "" && strings.Contains(got, "level=WARN") {
			t.Errorf("%d nodes: unexpected warning: %s", tc.n, got)
		}
		if tc.want != "" && !strings.Contains(got, tc.want) {
			t.Errorf("%d nodes: log %q lacks %q", tc.n, got, tc.want)
		}
	}
}
