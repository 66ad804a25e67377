package integration

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/redlock"
)

// A rolling restart: the five nodes are killed and restarted without their
// data one after another, one every two TTLs, for 20 TTLs — a routine
// Kubernetes roll. A quorumlock holder that extends keeps its one lock
// throughout (extension repairs the emptied nodes, which serve their
// quarantine), and a contender that tries all along never gets it.
// redsync's holder, extending every TTL/3 as its users do, loses it: each
// restart takes a node out of its set until it has no majority.
func TestRollingRestartKeepsTheLock(t *testing.T) {
	const ttl = 2 * time.Second
	const restarts = 10 // 20×TTL at one restart every 2×TTL

	roll := func(t *testing.T, e *env, ttl time.Duration, lost <-chan struct{}) (done int) {
		t.Helper()
		ctx := context.Background()
		for r := 0; r < restarts; r++ {
			select {
			case <-lost:
				return done
			default:
			}
			begin := time.Now()
			i := r % len(e.clients)
			if err := e.c.Node(i).Restart(ctx, cluster.RestartOptions{WipeData: true}); err != nil {
				t.Fatalf("restart node %d: %v", i, err)
			}
			done++
			// The next restart two TTLs after this one began: the holder
			// extends at least once per TTL in between.
			select {
			case <-time.After(time.Until(begin.Add(2 * ttl))):
			case <-lost:
			}
		}
		return done
	}

	// hold runs the roll once with a quorumlock holder of ttl; it fails the
	// test on a refusal, and reports a loss in which every node only failed
	// to answer in time (starved: the run lost its shape).
	hold := func(t *testing.T, ttl time.Duration) (starved bool) {
		e := newEnv(t)
		holderC := e.newOurs(t, redlock.WithTTL(ttl))
		contender := e.newOurs(t, redlock.WithTTL(ttl))
		ctx := context.Background()
		l, err := holderC.Acquire(ctx, "rolling", redlock.WithAutoExtend(true), redlock.WithMaxHold(0))
		if err != nil {
			t.Fatal(err)
		}
		var stolen atomic.Int32
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // the contender tries all along
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				if c, err := contender.TryAcquire(ctx, "rolling"); err == nil {
					stolen.Add(1)
					_ = c.Release(ctx)
				}
			}
		}()
		n := roll(t, e, ttl, l.Done())
		close(stop)
		wg.Wait()
		if err := l.Err(); err != nil {
			if starvedLoss(err) {
				t.Logf("TTL %v: the holder lost its lock after %d restarts only because no node answered in time: %v", ttl, n, err)
				return true
			}
			t.Fatalf("the holder lost its lock after %d restarts: %v (stats %+v)", n, err, holderC.Stats())
		}
		if s := stolen.Load(); s != 0 {
			t.Fatalf("the contender acquired %d times while the holder held", s)
		}
		s := holderC.Stats()
		if s.Repaired < uint64(restarts/2) {
			t.Fatalf("stats %+v: %d repairs over %d restarts; the restarts did not empty the holder's nodes", s, s.Repaired, n)
		}
		t.Logf("held through %d restarts; holder %+v", n, s)
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		return false
	}

	t.Run("quorumlock", func(t *testing.T) {
		// A host too busy to answer within the node timeout on every node
		// at once takes the lock away from any holder: the roll runs
		// again with twice the TTL, once.
		if hold(t, ttl) && hold(t, 2*ttl) {
			t.Fatal("starved twice: the holder lost its lock with every node failing to answer in time, at TTL 2 s and 4 s")
		}
	})

	t.Run("redsync", func(t *testing.T) {
		e := newEnv(t)
		ctx := context.Background()
		m := e.rs.NewMutex("rolling", redsync.WithExpiry(ttl))
		if err := m.LockContext(ctx); err != nil {
			t.Fatal(err)
		}
		lost := make(chan struct{})
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // extend every TTL/3, stop on failure: the common pattern
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(ttl / 3):
				}
				if ok, err := m.ExtendContext(ctx); !ok || err != nil {
					close(lost)
					return
				}
			}
		}()
		n := roll(t, e, ttl, lost)
		close(stop)
		wg.Wait()
		select {
		case <-lost:
		default:
			t.Fatalf("redsync's holder kept its lock through %d restarts: the roll lost its shape", n)
		}
		t.Logf("expected: redsync's holder lost its lock at restart %d", n)
		if ok, err := m.UnlockContext(ctx); ok || err == nil {
			t.Logf("redsync unlock after the loss: ok=%v err=%v", ok, err)
		} else if !errors.Is(err, redsync.ErrLockAlreadyExpired) {
			t.Logf("redsync unlock after the loss: %v", err)
		}
	})
}

// starvedLoss reports a lost lock whose last extension no node refused:
// each one failed (a timeout, or the connection a restart broke). A refusal
// (the token gone, another holder) is a real loss.
func starvedLoss(err error) bool {
	var re *redlock.RoundError
	if !errors.As(err, &re) || len(re.Nodes) == 0 {
		return false
	}
	for _, n := range re.Nodes {
		if n.Reason != redlock.NodeFailed {
			return false
		}
	}
	return true
}
