package redlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// storage is the store a lock protects: a separate Redis, guarded.
func storage(t testing.TB) (*miniredis.Miniredis, *redis.Client) {
	t.Helper()
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	Guard(rdb)
	return mr, rdb
}

// A critical section that outlives the lock sees its ctx cancelled with the
// cause, and a guarded write issued afterwards is refused before it is sent.
func TestDoSignalsExpiryAndGuardRefuses(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	smr, store := storage(t)
	if err := store.Set(bg(), "balance", "100", 0).Err(); err != nil {
		t.Fatal(err)
	}
	var cause error
	err := c.Do(bg(), "account", func(ctx context.Context) error {
		if err := store.Set(ctx, "balance", "90", 0).Err(); err != nil {
			t.Errorf("guarded write while valid: %v", err)
		}
		<-ctx.Done() // the section outlives the lock
		cause = context.Cause(ctx)
		return store.Set(ctx, "balance", "80", 0).Err()
	}, WithTTL(300*time.Millisecond), WithAutoExtend(false))
	if !errors.Is(cause, ErrLockLost) || !errors.Is(cause, ErrExpired) {
		t.Fatalf("cause = %v, want ErrLockLost wrapping ErrExpired", cause)
	}
	if !errors.Is(err, ErrLockLost) {
		t.Fatalf("Do returned %v, want the refused write's ErrLockLost", err)
	}
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("Do returned %v, want the release's ErrExpired joined", err)
	}
	if v, _ := smr.Get("balance"); v != "90" {
		t.Fatalf("balance = %q: the write after expiry reached the store", v)
	}
	// Pipelines are refused too, and commands without a lock pass.
	l, err := c.TryAcquire(bg(), "account", WithTTL(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	lctx, cancel := l.Context(bg())
	defer cancel()
	<-lctx.Done()
	_, perr := store.Pipelined(lctx, func(p redis.Pipeliner) error {
		p.Set(lctx, "balance", "70", 0)
		return nil
	})
	if !errors.Is(perr, ErrLockLost) {
		t.Fatalf("pipeline after expiry: %v", perr)
	}
	if err := store.Set(bg(), "other", "x", 0).Err(); err != nil {
		t.Fatalf("unguarded command refused: %v", err)
	}
	if v, _ := smr.Get("balance"); v != "90" {
		t.Fatalf("balance = %q after a refused pipeline", v)
	}
}

// Do returns fn's error unchanged and releases the lock.
func TestDoReturnsFnErrorAndReleases(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	boom := errors.New("boom")
	var token string
	err := c.Do(bg(), "job", func(ctx context.Context) error {
		token = FromContext(ctx).Token()
		return boom
	})
	if err != boom {
		t.Fatalf("Do = %v, want fn's error unchanged", err)
	}
	if h := tn.holders("job", token); len(h) > 1 {
		t.Fatalf("key still on nodes %v: a majority should have deleted it", h)
	}
	waitFor(t, func() bool { return len(tn.holders("job", token)) == 0 })
}

// A panic in fn releases the lock and is passed on.
func TestDoPanicReleases(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	var token string
	func() {
		defer func() {
			if p := recover(); p != "kaboom" {
				t.Fatalf("recovered %v, want the panic passed on", p)
			}
		}()
		_ = c.Do(bg(), "panicky", func(ctx context.Context) error {
			token = FromContext(ctx).Token()
			panic("kaboom")
		})
	}()
	if h := tn.holders("panicky", token); len(h) > 1 {
		t.Fatalf("key still on nodes %v after a panic", h)
	}
	waitFor(t, func() bool { return len(tn.holders("panicky", token)) == 0 })
	if _, err := c.TryAcquire(bg(), "panicky"); err != nil {
		t.Fatalf("lock not free after a panic: %v", err)
	}
}

// Auto-extension keeps a lock for ten times its TTL on nodes whose TTLs run
// in real time; when a majority of nodes disappears the signal fires within
// one TTL. A host too starved to answer an extension within the node
// timeout for a third of the TTL loses the lock for that reason alone: the
// run lost its shape, and runs again on fresh nodes with twice the TTL.
func TestAutoExtendAndLossSignal(t *testing.T) {
	for try, ttl := 1, 400*time.Millisecond; ; try, ttl = try+1, 2*ttl {
		lost := autoExtendAndLoss(t, ttl)
		if lost == nil || t.Failed() {
			return
		}
		if !starvedRound(lost) || try == 3 {
			t.Fatalf("lock lost while extending: %v", lost)
		}
		t.Logf("TTL %v: extensions timed out on a starved host (%v); again with twice the TTL", ttl, lost)
	}
}

// autoExtendAndLoss runs TestAutoExtendAndLossSignal once with ttl; it
// returns the cause when the lock was lost before the nodes went away.
func autoExtendAndLoss(t *testing.T, ttl time.Duration) (lostEarly error) {
	tn := newNodes(t, 3)
	for _, mr := range tn.mr {
		mr.ClockTTL(true)
	}
	c := newClient(t, tn)
	other := newClient(t, tn)
	var gone time.Time
	var lostAfter time.Duration
	var cause error
	err := c.Do(bg(), "long", func(ctx context.Context) error {
		end := time.Now().Add(10 * ttl)
		for time.Now().Before(end) {
			if ctx.Err() != nil {
				lostEarly = context.Cause(ctx)
				return nil
			}
			// The property is that the other client never holds it; on a
			// loaded host its round may also end undecided (ErrNoQuorum).
			if l, err := other.TryAcquire(bg(), "long", WithTTL(ttl)); err == nil {
				t.Errorf("another client got the lock (token %s) while it was extended", l.Token())
				return nil
			} else if !errors.Is(err, ErrTaken) && !errors.Is(err, ErrNoQuorum) {
				t.Errorf("another client's attempt failed oddly: %v", err)
				return nil
			}
			time.Sleep(ttl / 4)
		}
		gone = time.Now()
		tn.mr[1].Close()
		tn.mr[2].Close()
		<-ctx.Done()
		lostAfter = time.Since(gone)
		cause = context.Cause(ctx)
		return nil
	}, WithTTL(ttl))
	if lostEarly != nil || t.Failed() {
		return lostEarly
	}
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("Do = %v, want the release to report the validity ended", err)
	}
	if !errors.Is(cause, ErrLockLost) || !errors.Is(cause, ErrExpired) {
		t.Fatalf("cause = %v, want ErrLockLost and ErrExpired", cause)
	}
	var re *RoundError
	if !errors.As(cause, &re) || re.Op != "extend" || !errors.Is(re, ErrNoQuorum) {
		t.Fatalf("cause = %v, want the last failed extension's *RoundError behind it", cause)
	}
	if lostAfter > ttl+100*time.Millisecond {
		t.Fatalf("loss signalled %v after the majority disappeared, want within one TTL (%v)", lostAfter, ttl)
	}
	if c.Stats().Extended < 10 {
		t.Fatalf("only %d extensions over 10 TTLs", c.Stats().Extended)
	}
	return nil
}

// Auto-extension stops at the maximum hold time and says so.
func TestMaxHold(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	l, err := c.Acquire(bg(), "capped", WithTTL(200*time.Millisecond), WithAutoExtend(true), WithMaxHold(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	<-l.Done()
	if !errors.Is(l.Err(), ErrLockLost) || !errors.Is(l.Err(), ErrExpired) || !strings.Contains(l.Err().Error(), "maximum hold time") {
		t.Fatalf("Err = %v, want ErrLockLost wrapping ErrExpired, saying the maximum hold time was reached", l.Err())
	}
	_ = l.Release(bg())
}

// Fence tokens strictly increase in acquisition order over 500
// acquisitions (at least 200 when a loaded host makes them slow) by many goroutines and clients, with a different pair of
// nodes unreachable for each acquisition so that successive majorities
// differ. (Releases and cleanups still reach every node, so that keys of
// failed attempts do not pile up and stall the test.)
func TestFenceTokensIncreaseAcrossMajorities(t *testing.T) {
	tn := newNodes(t, 5)
	for _, mr := range tn.mr { // keys left on a node that went down expire
		mr.ClockTTL(true)
	}
	const clients, perClient, total, enough = 3, 2, 500, 200
	var cs []*Client
	for i := 0; i < clients; i++ {
		cs = append(cs, newClient(t, tn, WithFencing(true), WithTTL(time.Second), WithRetryDelay(0, 2*time.Millisecond)))
	}
	var mu sync.Mutex // guards last and down, only touched under the lock
	var last uint64
	var count atomic.Int32
	var violations atomic.Int32
	down := map[int]bool{}
	allUp := func() {
		for i := range down {
			tn.noVote[i].Store(false)
		}
		down = map[int]bool{}
	}
	setDown := func(r *rand.Rand) {
		allUp()
		for len(down) < 2 {
			down[r.IntN(5)] = true
		}
		for i := range down {
			tn.noVote[i].Store(true)
		}
	}
	// The deadline bounds the sample, not the property: each acquisition
	// waits out the unreachable pair's node timeout, which a loaded host
	// stretches.
	ctx, cancel := context.WithTimeout(bg(), 3*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for g := 0; g < clients*perClient; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			c := cs[g%clients]
			for count.Load() < total && ctx.Err() == nil {
				l, err := c.Acquire(ctx, "fenced")
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("acquire: %v", err)
					}
					return
				}
				mu.Lock()
				if l.Fence() <= last {
					violations.Add(1)
				}
				last = l.Fence()
				allUp()
				mu.Unlock()
				count.Add(1)
				_ = l.Release(ctx)
				mu.Lock()
				setDown(r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if n := count.Load(); n < enough {
		t.Fatalf("only %d acquisitions in %v", n, 3*time.Minute)
	}
	for i, c := range cs {
		t.Logf("client %d: %+v", i, c.Stats())
	}
	if v := violations.Load(); v != 0 {
		t.Fatalf("%d fence tokens did not increase", v)
	}
	if last < uint64(count.Load()) {
		t.Fatalf("last fence %d after %d acquisitions", last, count.Load())
	}
}

// A stale holder's fenced write after a newer holder's is refused and the
// newer value survives, even though the stale holder's lock expired without
// a release.
func TestStaleFencedWriteRejected(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn, WithFencing(true))
	smr, store := storage(t)
	a, err := c.TryAcquire(bg(), "doc")
	if err != nil {
		t.Fatal(err)
	}
	for _, mr := range tn.mr { // A's lock expires while A is paused
		mr.Del("doc")
	}
	b, err := c.TryAcquire(bg(), "doc")
	if err != nil {
		t.Fatal(err)
	}
	if b.Fence() <= a.Fence() {
		t.Fatalf("B's fence %d not above A's %d", b.Fence(), a.Fence())
	}
	if err := FencedSet(bg(), store, "doc:body", "written by B", b.Fence()); err != nil {
		t.Fatal(err)
	}
	err = FencedSet(bg(), store, "doc:body", "written by A", a.Fence())
	if !errors.Is(err, ErrStaleFence) || !strings.Contains(err.Error(), fmt.Sprintf("token %d already accepted", b.Fence())) {
		t.Fatalf("stale write: %v", err)
	}
	if v, _ := smr.Get("doc:body"); v != "written by B" {
		t.Fatalf("doc:body = %q, want B's value", v)
	}
	// The same token again is accepted (a holder may write more than once).
	if err := FencedSet(bg(), store, "doc:body", "B again", b.Fence()); err != nil {
		t.Fatal(err)
	}
	if err := FencedSet(bg(), store, "doc:body", "x", 0); err == nil {
		t.Fatal("fence 0 accepted")
	}
	_ = b.Release(bg())
	_ = a.Release(bg())
}

// Done closes on release with ErrReleased, not a loss.
func TestDoneOnRelease(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	l, err := c.TryAcquire(bg(), "d")
	if err != nil {
		t.Fatal(err)
	}
	if l.Err() != nil || !l.Valid() {
		t.Fatalf("fresh lock: Err %v Valid %v", l.Err(), l.Valid())
	}
	if err := l.Release(bg()); err != nil {
		t.Fatal(err)
	}
	<-l.Done()
	if l.Err() != ErrReleased || l.Valid() {
		t.Fatalf("after release: Err %v Valid %v", l.Err(), l.Valid())
	}
}

// Extension repairs: a node that lost the key of a valid lock (a restart
// without its data) gets it back, so a lock survives the nodes restarting
// one after another. Without the quarantine there is no repair, and the
// lock is lost once a majority restarted.
func TestExtendRepairsRollingRestart(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprintf("quarantine=%v", on), func(t *testing.T) {
			tn := newNodes(t, 3)
			var opts []Option
			if !on {
				opts = append(opts, WithQuarantine(0))
			}
			c := newClient(t, tn, opts...)
			other := newClient(t, tn, opts...)
			l, err := c.TryAcquire(bg(), "roll")
			if err != nil {
				t.Fatal(err)
			}
			for _, mr := range tn.mr {
				waitFor(t, func() bool { return mr.Exists("roll") })
			}
			for i, mr := range tn.mr {
				mr.FlushAll() // node i restarts without its data
				err := l.Extend(bg())
				if on {
					if err != nil {
						t.Fatalf("after node %d restarted: %v", i, err)
					}
					waitFor(t, func() bool { v, _ := mr.Get("roll"); return v == l.Token() })
					if _, err := other.TryAcquire(bg(), "roll"); !errors.Is(err, ErrTaken) && !errors.Is(err, ErrNoQuorum) {
						t.Fatalf("another client during the rolling restart: %v", err)
					}
					continue
				}
				if i == 0 && err != nil {
					t.Fatalf("one node restarted, quarantine off: %v", err)
				}
				if i == 1 {
					if !errors.Is(err, ErrNotHeld) {
						t.Fatalf("a majority restarted with no repair: %v, want ErrNotHeld", err)
					}
					if mr.Exists("roll") {
						t.Fatal("repaired with the quarantine off")
					}
					return
				}
			}
			if s := c.Stats(); s.Repaired != 3 || !l.Valid() {
				t.Fatalf("stats %+v, valid %v: want 3 repairs and the lock held", s, l.Valid())
			}
			_ = l.Release(bg())
		})
	}
}
