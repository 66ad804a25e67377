package integration

import (
	"context"
	"errors"
	"fmt"
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
func TestBehaviourTable(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 3*time.Minute)
	holder := e.newOurs(t) // another process holding keys
	var table []row
	add := func(situation string, ours, rs outcome, difference string) {
		table = append(table, row{situation, ours.String(), rs.String(), difference})
	}
	rsRelease := func(m *redsync.Mutex) {
		t.Helper()
		if ok, err := m.UnlockContext(ctx); !ok {
			t.Errorf("redsync Unlock: %v", err)
		}
	}
	oursRelease := func(l *redlock.Lock) {
		t.Helper()
		if err := l.Release(ctx); err != nil {
			t.Errorf("quorumlock Release: %v", err)
		}
	}

	t.Run("taken key, one attempt", func(t *testing.T) {
		k := key(t)
		h, err := holder.Acquire(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		defer oursRelease(h)
		ours := timed(func() error { _, err := e.ours.TryAcquire(ctx, k); return err })
		rs := timed(func() error { return e.rs.NewMutex(k).TryLockContext(ctx) })
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

	t.Run("taken key, context ends the wait", func(t *testing.T) {
		k := key(t)
		h, err := holder.Acquire(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		defer oursRelease(h)
		wait := func() context.Context {
			c, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			t.Cleanup(cancel)
			return c
		}
		ours := timed(func() error { _, err := e.ours.Acquire(wait(), k); return err })
		rs := timed(func() error { return e.rs.NewMutex(k).LockContext(wait()) })
		// Difference: distinct errors for "context done" vs "taken".
		var re *redlock.RoundError
		if !errors.Is(ours.err, context.DeadlineExceeded) || !errors.As(ours.err, &re) || len(re.Nodes) == 0 || re.Nodes[0].Reason != redlock.NodeTaken {
			t.Errorf("quorumlock: %v, want DeadlineExceeded with the last attempt's taken votes", ours.err)
		}
		if !errors.Is(rs.err, redsync.ErrFailed) || errors.Is(rs.err, context.DeadlineExceeded) {
			t.Errorf("redsync: %v, want ErrFailed and not DeadlineExceeded (as in its issues #164, #165)", rs.err)
		}
		add("taken key, ctx deadline 300ms", ours, rs, "DIFFERS: ours says why (ctx deadline and taken); redsync returns ErrFailed as for exhausted tries")
	})

	t.Run("expired lock", func(t *testing.T) {
		k := key(t)
		const ttl = 400 * time.Millisecond
		// TryAcquire, not Acquire: a lock from Acquire that is left to
		// expire trips the race detector, because Acquire sets
		// Lock.leaveQueue after newLock armed the expiry timer that reads it.
		h, err := holder.TryAcquire(ctx, k, redlock.WithTTL(ttl))
		if err != nil {
			t.Fatal(err)
		}
		k2 := key(t)
		hm := e.rs.NewMutex(k2, redsync.WithExpiry(ttl))
		if err := hm.LockContext(ctx); err != nil {
			t.Fatal(err)
		}
		e.waitGone(t, k, k2)
		ours := timed(func() error {
			l, err := e.ours.TryAcquire(ctx, k)
			if err == nil {
				oursRelease(l)
			}
			return err
		})
		rs := timed(func() error {
			m := e.rs.NewMutex(k2)
			err := m.TryLockContext(ctx)
			if err == nil {
				rsRelease(m)
			}
			return err
		})
		if ours.err != nil || rs.err != nil {
			t.Errorf("after expiry: quorumlock %v, redsync %v; want both acquired", ours.err, rs.err)
		}
		add("lock expired (TTL 400ms, holder gone)", ours, rs, "same")
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

	t.Run("minority down", func(t *testing.T) {
		e.partition(t, 3, 4)
		k := key(t)
		var l *redlock.Lock
		ours := timed(func() (err error) { l, err = e.ours.TryAcquire(ctx, k); return err })
		m := e.rs.NewMutex(key(t))
		rs := timed(func() error { return m.TryLockContext(ctx) })
		if ours.err != nil || rs.err != nil {
			t.Fatalf("2 of 5 nodes down: quorumlock %v, redsync %v; want both acquired", ours.err, rs.err)
		}
		add("minority down (2 of 5 refused)", ours, rs, "same outcome; redsync waits for the dead nodes up to its node timeout")
		oursRel := timed(func() error { return l.Release(ctx) })
		rsRel := timed(func() error {
			if ok, err := m.UnlockContext(ctx); !ok {
				return err
			}
			return nil
		})
		if oursRel.err != nil || rsRel.err != nil {
			t.Errorf("release with 2 of 5 down: quorumlock %v, redsync %v; want both nil", oursRel.err, rsRel.err)
		}
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
		const delay = 300 * time.Millisecond // below redsync's 400 ms node timeout: it waits for the answer
		if err := e.c.Node(4).Latency(ctx, delay, 0); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.c.Node(4).ClearLatency(context.Background()) })
		k := key(t)
		var l *redlock.Lock
		// A node timeout longer than the delay: without an early decision
		// ours would wait for the slow node too.
		ours := timed(func() (err error) {
			l, err = e.ours.TryAcquire(ctx, k, redlock.WithNodeTimeout(time.Second))
			return err
		})
		m := e.rs.NewMutex(key(t))
		rs := timed(func() error { return m.TryLockContext(ctx) })
		if ours.err != nil || rs.err != nil {
			t.Fatalf("one slow node: quorumlock %v, redsync %v; want both acquired", ours.err, rs.err)
		}
		// Difference: early decision. redsync waits for every node, so it
		// cannot return before the slow one answers.
		if rs.took < delay {
			t.Errorf("redsync acquired in %v, before the slow node could answer (%v)", rs.took, delay)
		}
		if ours.took >= delay {
			t.Errorf("quorumlock acquired in %v: it waited for the slow node (%v) instead of deciding on the fast majority", ours.took, delay)
		}
		add("one node +300ms (ours node timeout 1s)", ours, rs, "DIFFERS: ours decides on the first majority; redsync waits for every node")
		oursRelease(l)
		rsRelease(m)
	})

	t.Run("holder releases while others wait", func(t *testing.T) {
		const retry = 2 * time.Second // both sides' retry delay: only a wake-up can beat it
		const holdFor = 300 * time.Millisecond
		run := func(acquire func(k string) error) outcome {
			k := key(t)
			h, err := holder.Acquire(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() {
				defer close(done)
				time.Sleep(holdFor)
				_ = h.Release(context.Background())
			}()
			o := timed(func() error { return acquire(k) })
			<-done
			return o
		}
		ours := run(func(k string) error {
			l, err := e.ours.Acquire(ctx, k, redlock.WithRetryDelay(retry, retry))
			if err == nil {
				oursRelease(l)
			}
			return err
		})
		rs := run(func(k string) error {
			m := e.rs.NewMutex(k, redsync.WithRetryDelay(retry))
			err := m.LockContext(ctx)
			if err == nil {
				rsRelease(m)
			}
			return err
		})
		if ours.err != nil || rs.err != nil {
			t.Fatalf("waiters: quorumlock %v, redsync %v; want both acquired", ours.err, rs.err)
		}
		// Difference: wake-up on release. redsync sleeps its retry delay
		// whatever happens; ours is told the key was released.
		if rs.took < retry {
			t.Errorf("redsync acquired after %v, before its retry delay %v", rs.took, retry)
		}
		if ours.took >= retry {
			t.Errorf("quorumlock acquired after %v: not woken by the release at %v (retry delay %v)", ours.took, holdFor, retry)
		}
		add("holder releases after 300ms (retry delay 2s)", ours, rs, "DIFFERS: ours wakes up on the release (pub/sub); redsync sleeps its retry delay")
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

// waitGone waits (bounded) until keys have expired on every node.
func (e *env) waitGone(t *testing.T, keys ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, k := range keys {
		for {
			gone := true
			for _, v := range e.values(t, k) {
				gone = gone && v == ""
			}
			if gone {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("key %s still on the nodes after its TTL", k)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
