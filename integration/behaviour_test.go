package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/go-redsync/redsync/v4"

	"github.com/quorumlock/quorumlock/redlock"
)

// outcome is what one library did in one situation.
type outcome struct {
	err  error
	took time.Duration
}

func (o outcome) String() string {
	if o.err == nil {
		return fmt.Sprintf("acquired in %v", o.took.Round(100*time.Microsecond))
	}
	return fmt.Sprintf("%s after %v", errClass(o.err), o.took.Round(100*time.Microsecond))
}

// errClass names the sentinels and types an error matches, for the table.
func errClass(err error) string {
	var names []string
	for _, s := range []struct {
		name string
		err  error
	}{
		{"ErrTaken", redlock.ErrTaken}, {"ErrNotHeld", redlock.ErrNotHeld},
		{"ErrExpired", redlock.ErrExpired}, {"ErrNoQuorum", redlock.ErrNoQuorum},
		{"DeadlineExceeded", context.DeadlineExceeded}, {"redsync.ErrFailed", redsync.ErrFailed},
		{"redsync.ErrLockAlreadyExpired", redsync.ErrLockAlreadyExpired},
	} {
		if errors.Is(err, s.err) {
			names = append(names, s.name)
		}
	}
	var taken *redsync.ErrTaken
	if errors.As(err, &taken) {
		names = append(names, "*redsync.ErrTaken")
	}
	var rerr *redsync.RedisError
	if errors.As(err, &rerr) {
		names = append(names, "*redsync.RedisError")
	}
	if len(names) == 0 {
		return "error " + err.Error()
	}
	return strings.Join(names, "+")
}

func timed(f func() error) outcome {
	start := time.Now()
	err := f()
	return outcome{err: err, took: time.Since(start)}
}

// row is one line of the behaviour table.
type row struct {
	situation, ours, redsync, difference string
}

// TestBehaviourTable runs both libraries through the same situations on
// the same nodes, logs what each did, and asserts the outcome of each side;
// where quorumlock deliberately differs, the row names the difference and
// both sides of it are asserted.
//
// The host may be busy: TTLs, delays and waits derive from the measured time
// of a round on these nodes, and a situation whose set-up did not take shape
// (a vote lost to a timeout, a round longer than the TTL it should fit in)
// is run again with larger budgets instead of being judged.
func TestBehaviourTable(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 5*time.Minute)
	holder := e.newOurs(t) // another process holding keys
	round := e.roundTime(t, ctx)
	t.Logf("an uncontended acquisition and release take %v here now", round)
	var table []row
	add := func(situation string, ours, rs outcome, difference string) {
		table = append(table, row{situation, ours.String(), rs.String(), difference})
	}
	rsRelease := func(t *testing.T, m *redsync.Mutex) {
		t.Helper()
		if ok, err := m.UnlockContext(ctx); !ok {
			t.Errorf("redsync Unlock: %v", err)
		}
	}
	oursRelease := func(t *testing.T, l *redlock.Lock) {
		t.Helper()
		if err := l.Release(ctx); err != nil {
			t.Errorf("quorumlock Release: %v", err)
		}
	}

	t.Run("taken key, one attempt", func(t *testing.T) {
		shape(t, 4, func(_ int, lost func(string, ...any)) {
			k := key(t)
			h, err := holder.Acquire(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			defer oursRelease(t, h)
			ours := timed(func() error { _, err := e.ours.TryAcquire(ctx, k); return err })
			rs := timed(func() error { return e.rs.NewMutex(k).TryLockContext(ctx) })
			if f := transportFailed(ours.err); len(f) > 0 {
				lost("quorumlock's votes of nodes %v failed: %v", f, ours.err)
				return
			}
			if f := redsyncFailed(rs.err); len(f) > 0 {
				lost("redsync's votes of nodes %v failed: %v", f, rs.err)
				return
			}
			var re *redlock.RoundError
			if !errors.Is(ours.err, redlock.ErrTaken) || !errors.As(ours.err, &re) || len(re.Nodes) == 0 || re.Nodes[0].Reason != redlock.NodeTaken || re.Nodes[0].Wait <= 0 {
				t.Errorf("quorumlock: %v, want ErrTaken with each node's taken vote carrying the holder's TTL", ours.err)
			}
			var rt *redsync.ErrTaken
			if !errors.As(rs.err, &rt) {
				t.Errorf("redsync: %v, want *redsync.ErrTaken", rs.err)
			}
			add("taken key, one attempt", ours, rs, "same refusal; ours also reports the holder's remaining TTL per node")
		})
	})

	t.Run("taken key, context ends the wait", func(t *testing.T) {
		// The retry delay is longer than the wait, so the context ends
		// while both sleep after their first attempt, never inside one:
		// the attempt's votes are then complete. The wait must hold that
		// attempt, so it is a multiple of a measured round.
		const retry = time.Hour // ours cuts it to the holder's TTL, still longer than the wait
		shape(t, 4, func(scale int, lost func(string, ...any)) {
			wait := time.Duration(scale) * max(300*time.Millisecond, 10*round)
			k := key(t)
			// The holder's key must outlive the wait.
			h, err := holder.Acquire(ctx, k, redlock.WithTTL(max(redlock.DefaultTTL, 10*wait)))
			if err != nil {
				t.Fatal(err)
			}
			defer oursRelease(t, h)
			waitCtx := func() context.Context {
				c, cancel := context.WithTimeout(ctx, wait)
				t.Cleanup(cancel)
				return c
			}
			ours := timed(func() error {
				_, err := e.ours.Acquire(waitCtx(), k, redlock.WithRetryDelay(retry, retry))
				return err
			})
			rs := timed(func() error { return e.rs.NewMutex(k, redsync.WithRetryDelay(retry)).LockContext(waitCtx()) })
			if f := transportFailed(ours.err); len(f) > 0 {
				lost("quorumlock's first attempt did not complete within %v: nodes %v: %v", wait, f, ours.err)
				return
			}
			// Difference: distinct errors for "context done" vs "taken".
			var re *redlock.RoundError
			if !errors.Is(ours.err, context.DeadlineExceeded) || !errors.As(ours.err, &re) || len(re.Nodes) == 0 || re.Nodes[0].Reason != redlock.NodeTaken {
				t.Errorf("quorumlock: %v, want DeadlineExceeded with the last attempt's taken votes", ours.err)
			}
			if !errors.Is(rs.err, redsync.ErrFailed) || errors.Is(rs.err, context.DeadlineExceeded) {
				t.Errorf("redsync: %v, want ErrFailed and not DeadlineExceeded (as in its issues #164, #165)", rs.err)
			}
			add(fmt.Sprintf("taken key, ctx deadline %v", wait), ours, rs,
				"DIFFERS: ours says why (ctx deadline and taken); redsync returns ErrFailed as for exhausted tries")
		})
	})

	t.Run("expired lock", func(t *testing.T) {
		shape(t, 4, func(scale int, lost func(string, ...any)) {
			// Short, so that the test does not wait long for the expiry,
			// and long enough for an acquisition to leave some validity:
			// a lock is only granted if the round took less than its TTL.
			ttl := time.Duration(scale) * max(400*time.Millisecond, 20*round)
			k := key(t)
			// TryAcquire, not Acquire: a lock from Acquire that is left to
			// expire trips the race detector, because Acquire sets
			// Lock.leaveQueue after newLock armed the expiry timer that reads it.
			h, err := holder.TryAcquire(ctx, k, redlock.WithTTL(ttl))
			if err != nil {
				lost("the holder got no lock with TTL %v: %v", ttl, err)
				return
			}
			k2 := key(t)
			hm := e.rs.NewMutex(k2, redsync.WithExpiry(ttl))
			if err := hm.LockContext(ctx); err != nil {
				_ = h.Release(ctx)
				lost("the redsync holder got no lock with expiry %v: %v", ttl, err)
				return
			}
			e.waitGone(t, ctx, k, k2)
			ours := timed(func() error {
				l, err := e.ours.TryAcquire(ctx, k)
				if err == nil {
					oursRelease(t, l)
				}
				return err
			})
			rs := timed(func() error {
				m := e.rs.NewMutex(k2)
				err := m.TryLockContext(ctx)
				if err == nil {
					rsRelease(t, m)
				}
				return err
			})
			if f := transportFailed(ours.err); len(f) > 0 {
				lost("quorumlock's votes of nodes %v failed: %v", f, ours.err)
				return
			}
			if f := redsyncFailed(rs.err); len(f) > 0 {
				lost("redsync's votes of nodes %v failed: %v", f, rs.err)
				return
			}
			if ours.err != nil || rs.err != nil {
				t.Errorf("after expiry: quorumlock %v, redsync %v; want both acquired", ours.err, rs.err)
			}
			add(fmt.Sprintf("lock expired (TTL %v, holder gone)", ttl), ours, rs, "same")
			// The late holders release.
			oursLate := timed(func() error { return h.Release(ctx) })
			rsLate := timed(func() error { _, err := hm.UnlockContext(ctx); return err })
			if !errors.Is(oursLate.err, redlock.ErrExpired) {
				t.Errorf("quorumlock late Release: %v, want ErrExpired", oursLate.err)
			}
			if !errors.Is(rsLate.err, redsync.ErrLockAlreadyExpired) {
				t.Errorf("redsync late Unlock: %v, want ErrLockAlreadyExpired", rsLate.err)
			}
			add("late holder releases an expired lock", oursLate, rsLate, "both report it; ours knows locally, without asking the nodes")
		})
	})

	t.Run("minority down", func(t *testing.T) {
		e.partition(t, 3, 4)
		shape(t, 4, func(_ int, lost func(string, ...any)) {
			k := key(t)
			var l *redlock.Lock
			ours := timed(func() (err error) { l, err = e.ours.TryAcquire(ctx, k); return err })
			m := e.rs.NewMutex(key(t))
			rs := timed(func() error { return m.TryLockContext(ctx) })
			release := func() {
				if ours.err == nil {
					_ = l.Release(ctx)
				}
				if rs.err == nil {
					_, _ = m.UnlockContext(ctx)
				}
			}
			if f := slices.DeleteFunc(transportFailed(ours.err), func(n int) bool { return n >= 3 }); len(f) > 0 {
				release()
				lost("quorumlock's votes of the live nodes %v failed: %v", f, ours.err)
				return
			}
			if f := slices.DeleteFunc(redsyncFailed(rs.err), func(n int) bool { return n >= 3 }); len(f) > 0 {
				release()
				lost("redsync's votes of the live nodes %v failed: %v", f, rs.err)
				return
			}
			if ours.err != nil || rs.err != nil {
				release()
				t.Fatalf("2 of 5 nodes down: quorumlock %v, redsync %v; want both acquired", ours.err, rs.err)
			}
			// Every live node must answer the release: a load spike that
			// costs one of them its answer costs the majority.
			before := e.failures()
			oursRel := timed(func() error { return l.Release(ctx) })
			rsRel := timed(func() error {
				if ok, err := m.UnlockContext(ctx); !ok {
					return err
				}
				return nil
			})
			if f := failedSince(before, e.failures(), 3); len(f) > 0 && (oursRel.err != nil || rsRel.err != nil) {
				lost("live nodes %v did not answer a release (quorumlock %v, redsync %v)", f, oursRel.err, rsRel.err)
				return
			}
			if oursRel.err != nil || rsRel.err != nil {
				t.Errorf("release with 2 of 5 down: quorumlock %v, redsync %v; want both nil", oursRel.err, rsRel.err)
			}
			add("minority down (2 of 5 refused)", ours, rs, "same outcome; redsync waits for the dead nodes up to its node timeout")
		})
	})

	t.Run("majority down", func(t *testing.T) {
		e.partition(t, 2, 3, 4)
		k := key(t)
		ours := timed(func() error { _, err := e.ours.TryAcquire(ctx, k); return err })
		rs := timed(func() error { return e.rs.NewMutex(k).TryLockContext(ctx) })
		var ore *redlock.RoundError
		if !errors.Is(ours.err, redlock.ErrNoQuorum) || errors.Is(ours.err, redlock.ErrTaken) {
			t.Errorf("quorumlock: %v, want ErrNoQuorum, not ErrTaken", ours.err)
		}
		if !errors.As(ours.err, &ore) || len(ore.Nodes) == 0 || ore.Nodes[0].Reason != redlock.NodeFailed {
			t.Errorf("quorumlock: %v carries no failed node", ours.err)
		}
		var re *redsync.RedisError
		if !errors.As(rs.err, &re) {
			t.Errorf("redsync: %v, want a *redsync.RedisError", rs.err)
		}
		add("majority down (3 of 5 refused)", ours, rs, "same refusal, both name the failed nodes")
	})

	t.Run("slow node", func(t *testing.T) {
		t.Cleanup(func() { _ = e.c.Node(4).ClearLatency(context.Background()) })
		shape(t, 4, func(scale int, lost func(string, ...any)) {
			// The delay must be long against a round of the fast nodes,
			// or an early decision cannot be seen; both node timeouts are
			// longer than the delay, so that both could wait for it.
			delay := time.Duration(scale) * max(300*time.Millisecond, 10*round)
			if err := e.c.Node(4).Latency(ctx, delay, 0); err != nil {
				t.Fatal(err)
			}
			k := key(t)
			var l *redlock.Lock
			ours := timed(func() (err error) {
				l, err = e.ours.TryAcquire(ctx, k, redlock.WithNodeTimeout(3*delay), redlock.WithTTL(max(redlock.DefaultTTL, 10*delay)))
				return err
			})
			// redsync's node timeout is its expiry × timeout factor.
			m := e.rs.NewMutex(key(t), redsync.WithExpiry(40*delay), redsync.WithTimeoutFactor(0.05))
			rs := timed(func() error { return m.TryLockContext(ctx) })
			if ours.err == nil {
				defer oursRelease(t, l)
			}
			if rs.err == nil {
				defer rsRelease(t, m)
			}
			if f := transportFailed(ours.err); len(f) > 0 {
				lost("quorumlock's votes of nodes %v failed: %v", f, ours.err)
				return
			}
			if f := redsyncFailed(rs.err); len(f) > 0 {
				lost("redsync's votes of nodes %v failed: %v", f, rs.err)
				return
			}
			if ours.err != nil || rs.err != nil {
				t.Fatalf("one slow node: quorumlock %v, redsync %v; want both acquired", ours.err, rs.err)
			}
			// Difference: early decision. redsync waits for every node, so it
			// cannot return before the slow one answers.
			if rs.took < delay {
				t.Errorf("redsync acquired in %v, before the slow node could answer (%v)", rs.took, delay)
			}
			if ours.took >= delay {
				// Either ours waited for the slow node, or the fast nodes
				// were as slow as it on this host: a longer delay tells.
				lost("quorumlock acquired in %v, not before the slow node's %v", ours.took, delay)
				return
			}
			add(fmt.Sprintf("one node +%v (both node timeouts longer)", delay), ours, rs,
				"DIFFERS: ours decides on the first majority; redsync waits for every node")
		})
	})

	t.Run("holder releases while others wait", func(t *testing.T) {
		// The holder releases once the waiter has made its first attempt
		// (and ours has subscribed to release announcements), so both
		// sides are asleep in their retry delay when the key is freed;
		// only a wake-up can beat that delay.
		shape(t, 3, func(scale int, lost func(string, ...any)) {
			retry := time.Duration(scale) * max(2*time.Second, 20*round)
			// answers is how many answers to the waiter's first attempt
			// make it complete; waiting is what else the waiter does
			// before it sleeps.
			run := func(answers int, acquire func(k string) error, waiting func(k string) error) outcome {
				k := key(t)
				h, err := holder.Acquire(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				seen := e.watch(k, answers)
				wctx, cancel := context.WithCancel(ctx)
				defer cancel()
				released := make(chan struct{})
				go func() {
					defer close(released)
					select {
					case <-seen:
					case <-wctx.Done():
					}
					if err := waiting(k); err != nil && wctx.Err() == nil {
						t.Errorf("waiting for the waiter: %v", err)
					}
					_ = h.Release(context.Background())
				}()
				o := timed(func() error { return acquire(k) })
				cancel()
				<-released
				return o
			}
			// One answer suffices for ours: it listens for releases once it
			// has waited (the Client keeps one subscription per node, and in
			// this test only e.ours waits, so a subscriber is its).
			ours := run(1, func(k string) error {
				l, err := e.ours.Acquire(ctx, k, redlock.WithRetryDelay(retry, retry))
				if err == nil {
					oursRelease(t, l)
				}
				return err
			}, func(string) error { return e.waitSubscribed(ctx, releasedChannel) })
			// redsync's first attempt is a SET on each node.
			rs := run(len(e.clients), func(k string) error {
				m := e.rs.NewMutex(k, redsync.WithRetryDelay(retry))
				err := m.LockContext(ctx)
				if err == nil {
					rsRelease(t, m)
				}
				return err
			}, func(string) error { return nil })
			if ours.err != nil || rs.err != nil {
				t.Fatalf("waiters: quorumlock %v, redsync %v; want both acquired", ours.err, rs.err)
			}
			// Difference: wake-up on release. redsync sleeps its retry delay
			// whatever happens; ours is told the key was released.
			if rs.took < retry {
				t.Errorf("redsync acquired after %v, before its retry delay %v", rs.took, retry)
			}
			if ours.took >= retry {
				lost("quorumlock acquired after %v, not before its retry delay %v", ours.took, retry)
				return
			}
			add(fmt.Sprintf("holder releases during the wait (retry delay %v)", retry), ours, rs,
				"DIFFERS: ours wakes up on the release (pub/sub); redsync sleeps its retry delay")
		})
	})

	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "situation\tquorumlock\tredsync\tdifference")
	for _, r := range table {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.situation, r.ours, r.redsync, r.difference)
	}
	_ = tw.Flush()
	t.Logf("behaviour on 5 docker nodes:\n%s", b.String())
}

// failedSince lists the nodes below limit whose transport failures grew
// between two counts of env.failures.
func failedSince(before, after []int64, limit int) []int {
	var out []int
	for i := range min(limit, len(after)) {
		if after[i] > before[i] {
			out = append(out, i)
		}
	}
	return out
}

// partition cuts the given nodes off until the end of the (sub)test.
func (e *env) partition(t *testing.T, nodes ...int) {
	t.Helper()
	for _, i := range nodes {
		if err := e.c.Node(i).Partition(context.Background()); err != nil {
			t.Fatalf("partition node %d: %v", i, err)
		}
	}
	t.Cleanup(func() {
		for _, i := range nodes {
			if err := e.c.Node(i).Heal(context.Background()); err != nil {
				t.Errorf("heal node %d: %v", i, err)
			}
		}
	})
}

// waitGone waits until keys have expired on every node; ctx bounds the
// wait (a key that never expires is the failure).
func (e *env) waitGone(t *testing.T, ctx context.Context, keys ...string) {
	t.Helper()
	for _, k := range keys {
		for {
			gone := true
			for _, v := range e.values(t, k) {
				gone = gone && v == ""
			}
			if gone {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("key %s still on the nodes after its TTL: %v", k, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}
