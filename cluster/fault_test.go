package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
)

var backends = []cluster.Backend{cluster.BackendEmbedded, cluster.BackendDocker}

// forBackends runs f once per owning backend, each with a fresh n-node cluster.
func forBackends(t *testing.T, n int, f func(t *testing.T, c *cluster.Cluster)) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			c := clustertest.New(t, cluster.Options{Backend: b, Nodes: n})
			f(t, c)
		})
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// ping sends one PING with its own deadline and reports how long it took.
func ping(c redis.UniversalClient, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := c.Ping(ctx).Err()
	return time.Since(start), err
}

// eventually polls f until it returns nil; the test's context (testCtx)
// bounds the wait, so that a slow host makes the test slower, not red.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	ctx := testCtx(t)
	for {
		err := f()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: still failing when the test's time ran out: %v", what, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func mustPing(t *testing.T, c redis.UniversalClient) {
	t.Helper()
	eventually(t, "PING", func() error { _, err := ping(c, time.Second); return err })
}

// isTimeout tells a request that got no answer in time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// isRefusal tells a request turned away at once: connection refused, reset
// or closed. That, and not how fast it came, is what tells a node that is
// gone or cut off from one that is silent (paused, blackholed).
func isRefusal(err error) bool {
	return !isTimeout(err) && (errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF))
}

// fastestPing is the shortest of n PINGs: one sample on a busy host can
// be slow for reasons that have nothing to do with the node.
func fastestPing(t *testing.T, c redis.UniversalClient, n int) time.Duration {
	t.Helper()
	fastest := time.Duration(1<<63 - 1)
	for range n {
		took, err := ping(c, 10*time.Second)
		if err != nil {
			t.Fatalf("PING: %v", err)
		}
		fastest = min(fastest, took)
	}
	return fastest
}

func TestNodesComeUpReachable(t *testing.T) {
	for _, b := range backends {
		t.Run(string(b), func(t *testing.T) {
			start := time.Now()
			c := clustertest.New(t, cluster.Options{Backend: b, Nodes: 5})
			t.Logf("%d %s nodes up in %v", c.Len(), b, time.Since(start).Round(time.Millisecond))
			if c.Len() != 5 || len(c.Clients()) != 5 || len(c.Addrs()) != 5 {
				t.Fatalf("want 5 nodes/clients/addrs, got %d/%d/%d", c.Len(), len(c.Clients()), len(c.Addrs()))
			}
			seen := map[string]bool{}
			for i, cl := range c.Clients() {
				mustPing(t, cl)
				n := c.Node(i)
				if n.Index() != i || n.Addr() != c.Addrs()[i] || seen[n.Addr()] {
					t.Fatalf("node %d: index %d addr %s (addrs %v)", i, n.Index(), n.Addr(), c.Addrs())
				}
				seen[n.Addr()] = true
				if err := n.Client().Set(testCtx(t), "k", fmt.Sprint(i), 0).Err(); err != nil {
					t.Fatal(err)
				}
			}
			// The nodes are independent: each holds its own value.
			for i, cl := range c.Clients() {
				if v, err := cl.Get(testCtx(t), "k").Result(); err != nil || v != fmt.Sprint(i) {
					t.Fatalf("node %d: GET k = %q, %v", i, v, err)
				}
			}
		})
	}
}

func TestKillRefusesThenStart(t *testing.T) {
	forBackends(t, 3, func(t *testing.T, c *cluster.Cluster) {
		ctx := testCtx(t)
		n := c.Node(0)
		addr := n.Addr()
		if err := n.Kill(ctx); err != nil {
			t.Fatal(err)
		}
		took, err := ping(n.Client(), 10*time.Second)
		if err == nil {
			t.Fatal("PING to a killed node succeeded")
		}
		if !isRefusal(err) {
			t.Fatalf("PING to a killed node: %v after %v; want it refused, not left unanswered", err, took)
		}
		t.Logf("PING to killed node failed after %v: %v", took, err)
		mustPing(t, c.Node(1).Client())
		if err := n.Start(ctx, cluster.StartOptions{}); err != nil {
			t.Fatal(err)
		}
		mustPing(t, n.Client())
		if n.Addr() != addr {
			t.Fatalf("address changed across restart: %s -> %s", addr, n.Addr())
		}
		if err := n.Start(ctx, cluster.StartOptions{}); err == nil {
			t.Fatal("Start on a running node: want an error")
		}
	})
}

func TestRestartWipeLosesData(t *testing.T) {
	forBackends(t, 3, func(t *testing.T, c *cluster.Cluster) {
		ctx := testCtx(t)
		n := c.Node(1)
		// Even with AOF always, a wipe loses everything.
		if err := n.Restart(ctx, cluster.RestartOptions{Persistence: cluster.PersistAOFAlways}); err != nil {
			t.Fatal(err)
		}
		mustPing(t, n.Client())
		if err := n.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := n.Restart(ctx, cluster.RestartOptions{WipeData: true}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "GET after wipe", func() error {
			err := n.Client().Get(ctx, "k").Err()
			if errors.Is(err, redis.Nil) {
				return nil
			}
			return fmt.Errorf("GET k: %v (want nil reply)", err)
		})
	})
}

func TestRestartKeepsDataWithAOFAlways(t *testing.T) {
	forBackends(t, 3, func(t *testing.T, c *cluster.Cluster) {
		ctx := testCtx(t)
		n := c.Node(2)
		if err := n.Restart(ctx, cluster.RestartOptions{Persistence: cluster.PersistAOFAlways}); err != nil {
			t.Fatal(err)
		}
		if got := n.Persistence(); got != cluster.PersistAOFAlways {
			t.Fatalf("persistence %q", got)
		}
		mustPing(t, n.Client())
		if err := n.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := n.Restart(ctx, cluster.RestartOptions{Delay: 300 * time.Millisecond}); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Fatalf("restart with 300ms delay took %v", took)
		}
		eventually(t, "GET after restart", func() error {
			v, err := n.Client().Get(ctx, "k").Result()
			if err != nil || v != "v" {
				return fmt.Errorf("GET k = %q, %v", v, err)
			}
			return nil
		})
		// Without persistence the same restart loses the key.
		if err := n.Restart(ctx, cluster.RestartOptions{Persistence: cluster.PersistNone}); err != nil {
			t.Fatal(err)
		}
		if err := n.Client().Set(ctx, "k2", "v", 0).Err(); err != nil {
			// first command after a restart may hit a pooled dead connection
			mustPing(t, n.Client())
			if err := n.Client().Set(ctx, "k2", "v", 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
		if err := n.Restart(ctx, cluster.RestartOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "GET after restart without persistence", func() error {
			if err := n.Client().Get(ctx, "k2").Err(); !errors.Is(err, redis.Nil) {
				return fmt.Errorf("GET k2: %v (want nil reply)", err)
			}
			return nil
		})
	})
}

func TestPauseResume(t *testing.T) {
	forBackends(t, 3, func(t *testing.T, c *cluster.Cluster) {
		ctx := testCtx(t)
		n := c.Node(0)
		mustPing(t, n.Client())
		if err := n.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		took, err := ping(n.Client(), 300*time.Millisecond)
		if err == nil {
			t.Fatal("PING to a paused node succeeded")
		}
		if !isTimeout(err) {
			t.Fatalf("PING to a paused node failed after %v (%v); want a timeout", took, err)
		}
		mustPing(t, c.Node(1).Client())
		if err := n.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		mustPing(t, n.Client())
	})
}

func TestPartitionHeal(t *testing.T) {
	forBackends(t, 3, func(t *testing.T, c *cluster.Cluster) {
		ctx := testCtx(t)
		n := c.Node(1)
		mustPing(t, n.Client())
		if err := n.Partition(ctx); err != nil {
			t.Fatal(err)
		}
		if took, err := ping(n.Client(), 10*time.Second); !isRefusal(err) {
			t.Fatalf("PING through a partition: %v after %v; want it refused", err, took)
		}
		if err := n.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		mustPing(t, n.Client())
	})
}

func TestPartitionOneViewOnly(t *testing.T) {
	forBackends(t, 3, func(t *testing.T, c *cluster.Cluster) {
		ctx := testCtx(t)
		other, err := c.View("other")
		if err != nil {
			t.Fatal(err)
		}
		if again, _ := c.View("other"); again != other || other.Name() != "other" {
			t.Fatal("View(name) must return the same view")
		}
		if other.Addrs()[2] == c.Addrs()[2] {
			t.Fatal("views must have their own proxies")
		}
		if err := other.Partition(ctx, 2); err != nil {
			t.Fatal(err)
		}
		if _, err := ping(other.Clients()[2], time.Second); err == nil {
			t.Fatal("partitioned view still reaches node 2")
		}
		mustPing(t, c.Clients()[2])
		mustPing(t, other.Clients()[1])
		if err := other.Heal(ctx, 2); err != nil {
			t.Fatal(err)
		}
		mustPing(t, other.Clients()[2])
		if err := other.Partition(ctx, 7); err == nil || err.Error() != "cluster: node index 7 out of range [0,3)" {
			t.Fatalf("bad index error: %v", err)
		}
	})
}

func TestLatency(t *testing.T) {
	forBackends(t, 3, func(t *testing.T, c *cluster.Cluster) {
		ctx := testCtx(t)
		n := c.Node(0)
		mustPing(t, n.Client())
		// The added latency must stand out from what a PING costs on this
		// host now; node 1, without it, must stay below it.
		base := max(fastestPing(t, n.Client(), 5), fastestPing(t, c.Node(1).Client(), 5))
		latency := max(50*time.Millisecond, 10*base)
		t.Logf("fastest PING %v; latency %v", base, latency)
		if err := n.Latency(ctx, latency, 0); err != nil {
			t.Fatal(err)
		}
		took, err := ping(n.Client(), 10*latency)
		if err != nil || took < latency {
			t.Fatalf("PING with %v latency: %v after %v", latency, err, took)
		}
		if took := fastestPing(t, c.Node(1).Client(), 5); took >= latency {
			t.Fatalf("node 1 should be unaffected: its fastest of 5 PINGs took %v", took)
		}
		if err := n.ClearLatency(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, "fast PING after clearing latency", func() error {
			took, err := ping(n.Client(), 10*latency)
			if err == nil && took >= latency {
				err = fmt.Errorf("took %v", took)
			}
			return err
		})
	})
}

func TestReset(t *testing.T) {
	forBackends(t, 3, func(t *testing.T, c *cluster.Cluster) {
		ctx := testCtx(t)
		n := c.Node(0)
		mustPing(t, n.Client())
		if err := n.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		if took, err := ping(n.Client(), 10*time.Second); !isRefusal(err) {
			t.Fatalf("PING through reset_peer: %v after %v; want the connection reset or closed", err, took)
		}
		if err := n.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		mustPing(t, n.Client())
	})
}

func TestBlackhole(t *testing.T) {
	forBackends(t, 3, func(t *testing.T, c *cluster.Cluster) {
		ctx := testCtx(t)
		n := c.Node(0)
		mustPing(t, n.Client())
		if err := n.Blackhole(ctx); err != nil {
			t.Fatal(err)
		}
		if took, err := ping(n.Client(), 300*time.Millisecond); !isTimeout(err) {
			t.Fatalf("PING into a blackhole: %v after %v; want a timeout", err, took)
		}
		if err := n.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		mustPing(t, n.Client())
	})
}

// clockSlack covers the resolution of the clocks compared (TIME has
// microseconds; libfaketime's offset file is read at each call).
const clockSlack = 10 * time.Millisecond

// bracket is the interval of local time within which a reading was taken.
type bracket struct{ lo, hi time.Time }

// redisTimeIn reads the node's clock and the local clock just before and
// just after: whatever the host's load, the node took its reading inside
// that bracket.
func redisTimeIn(t *testing.T, c *redis.Client) (time.Time, bracket) {
	t.Helper()
	lo := time.Now()
	tm, err := c.Time(testCtx(t)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return tm, bracket{lo, time.Now()}
}

func TestClockJumpExpiresKeys(t *testing.T) {
	forBackends(t, 3, func(t *testing.T, c *cluster.Cluster) {
		if !c.Supports(cluster.FaultClockJump) {
			t.Skip("backend reports clock jumps unsupported")
		}
		ctx := testCtx(t)
		n := c.Node(0)
		mustPing(t, n.Client())
		if err := n.Client().Set(ctx, "lock", "token", 60*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.Node(1).Client().Set(ctx, "lock", "token", 60*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
		before, local0 := redisTimeIn(t, n.Client())
		if err := n.ClockJump(ctx, 120*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := n.Client().Get(ctx, "lock").Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("GET lock after a 120s jump: %v; want the key expired", err)
		}
		after, local1 := redisTimeIn(t, n.Client())
		// The node's clock moved by the jump plus the time that passed
		// here, which lies between the two brackets.
		lo, hi := 120*time.Second+local1.lo.Sub(local0.hi), 120*time.Second+local1.hi.Sub(local0.lo)
		if jump := after.Sub(before); jump < lo-clockSlack || jump > hi+clockSlack {
			t.Fatalf("TIME moved by %v; want 120s plus the %v–%v that passed here", jump, lo-120*time.Second, hi-120*time.Second)
		}
		if n.ClockOffset() != 120*time.Second {
			t.Fatalf("ClockOffset %v", n.ClockOffset())
		}
		// Other nodes keep their clock and their key.
		if v, err := c.Node(1).Client().Get(ctx, "lock").Result(); err != nil || v != "token" {
			t.Fatalf("node 1 lost its key: %q, %v", v, err)
		}
		// The clock keeps running after the jump, at the rate of ours.
		t1, b1 := redisTimeIn(t, n.Client())
		time.Sleep(200 * time.Millisecond) // an interval to measure, not a wait for anything
		t2, b2 := redisTimeIn(t, n.Client())
		lo, hi = b2.lo.Sub(b1.hi), b2.hi.Sub(b1.lo)
		if d := t2.Sub(t1); d < lo-clockSlack || d > hi+clockSlack {
			t.Fatalf("skewed clock advanced %v while %v–%v passed here", d, lo, hi)
		}
	})
}

func TestClockRate(t *testing.T) {
	forBackends(t, 3, func(t *testing.T, c *cluster.Cluster) {
		if !c.Supports(cluster.FaultClockRate) {
			t.Skip("backend reports clock rate unsupported")
		}
		ctx := testCtx(t)
		n := c.Node(0)
		mustPing(t, n.Client())
		if err := n.ClockRate(ctx, 5); err != nil {
			t.Fatal(err)
		}
		t0, b0 := redisTimeIn(t, n.Client())
		time.Sleep(600 * time.Millisecond) // an interval to measure, not a wait for anything
		t1, b1 := redisTimeIn(t, n.Client())
		// Each reading was taken somewhere inside its bracket, so the
		// node's interval is 5× something between the inner and the outer
		// distance of the brackets (10% for how libfaketime applies a
		// rate).
		lo, hi := b1.lo.Sub(b0.hi), b1.hi.Sub(b0.lo)
		if d := t1.Sub(t0); float64(d) < 0.9*5*float64(lo) || float64(d) > 1.1*5*float64(hi) {
			t.Fatalf("node clock advanced %v while %v–%v passed here; want 5×", d, lo, hi)
		}
		if err := n.ClockRate(ctx, 0); err == nil {
			t.Fatal("rate 0 must be rejected")
		}
	})
}

// A paused node can still be killed, restarted and closed.
func TestKillAndCloseWhilePaused(t *testing.T) {
	forBackends(t, 2, func(t *testing.T, c *cluster.Cluster) {
		ctx := testCtx(t)
		n := c.Node(0)
		if err := n.ClockJump(ctx, time.Second); err != nil && !errors.Is(err, cluster.ErrUnsupported) {
			t.Fatal(err)
		}
		if err := n.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		restartStart := time.Now()
		if err := n.Restart(ctx, cluster.RestartOptions{}); err != nil {
			t.Fatal(err)
		}
		restart := time.Since(restartStart)
		mustPing(t, n.Client())
		if err := n.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		if err := c.Node(1).Pause(ctx); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		// Closing two paused nodes is a few container operations: it
		// must not take longer than several restarts of a paused node
		// took here (a Close that waited for the nodes to answer would
		// hang).
		if took, bound := time.Since(start), max(15*time.Second, 5*restart); took > bound {
			t.Fatalf("Close with paused nodes took %v; a restart of a paused node took %v", took, restart)
		}
	})
}
