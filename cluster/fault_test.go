package cluster_test

import (
	"context"
	"errors"
	"fmt"
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

// eventually polls f until it returns nil or the deadline passes.
func eventually(t *testing.T, within time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustPing(t *testing.T, c redis.UniversalClient) {
	t.Helper()
	eventually(t, 5*time.Second, "PING", func() error { _, err := ping(c, time.Second); return err })
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
		took, err := ping(n.Client(), 5*time.Second)
		if err == nil {
			t.Fatal("PING to a killed node succeeded")
		}
		if took > time.Second {
			t.Fatalf("PING to a killed node took %v to fail (%v); want a quick error", took, err)
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
		eventually(t, 5*time.Second, "GET after wipe", func() error {
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
		eventually(t, 5*time.Second, "GET after restart", func() error {
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
		eventually(t, 5*time.Second, "GET after restart without persistence", func() error {
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
		if took < 250*time.Millisecond {
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
		if took, err := ping(n.Client(), 2*time.Second); err == nil || took > time.Second {
			t.Fatalf("PING through a partition: %v after %v; want a quick error", err, took)
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
		if err := n.Latency(ctx, 50*time.Millisecond, 0); err != nil {
			t.Fatal(err)
		}
		took, err := ping(n.Client(), 2*time.Second)
		if err != nil || took < 50*time.Millisecond {
			t.Fatalf("PING with 50ms latency: %v after %v", err, took)
		}
		if took, err := ping(c.Node(1).Client(), 2*time.Second); err != nil || took >= 50*time.Millisecond {
			t.Fatalf("node 1 should be unaffected: %v after %v", err, took)
		}
		if err := n.ClearLatency(ctx); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Second, "fast PING after clearing latency", func() error {
			took, err := ping(n.Client(), time.Second)
			if err == nil && took >= 50*time.Millisecond {
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
		if took, err := ping(n.Client(), 2*time.Second); err == nil || took > time.Second {
			t.Fatalf("PING through reset_peer: %v after %v; want a quick error", err, took)
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
		if took, err := ping(n.Client(), 300*time.Millisecond); err == nil || took < 250*time.Millisecond {
			t.Fatalf("PING into a blackhole: %v after %v; want a timeout", err, took)
		}
		if err := n.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		mustPing(t, n.Client())
	})
}

func redisTime(t *testing.T, c *redis.Client) time.Time {
	t.Helper()
	tm, err := c.Time(testCtx(t)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return tm
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
		before := redisTime(t, n.Client())
		if err := n.ClockJump(ctx, 120*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := n.Client().Get(ctx, "lock").Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("GET lock after a 120s jump: %v; want the key expired", err)
		}
		after := redisTime(t, n.Client())
		if jump := after.Sub(before); jump < 119*time.Second || jump > 130*time.Second {
			t.Fatalf("TIME moved by %v; want about 120s", jump)
		}
		if n.ClockOffset() != 120*time.Second {
			t.Fatalf("ClockOffset %v", n.ClockOffset())
		}
		// Other nodes keep their clock and their key.
		if v, err := c.Node(1).Client().Get(ctx, "lock").Result(); err != nil || v != "token" {
			t.Fatalf("node 1 lost its key: %q, %v", v, err)
		}
		// The clock keeps running after the jump.
		t1 := redisTime(t, n.Client())
		time.Sleep(1100 * time.Millisecond)
		if d := redisTime(t, n.Client()).Sub(t1); d < time.Second || d > 3*time.Second {
			t.Fatalf("skewed clock advanced %v in 1.1s", d)
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
		t0, r0 := redisTime(t, n.Client()), time.Now()
		time.Sleep(600 * time.Millisecond)
		t1, r1 := redisTime(t, n.Client()), time.Now()
		ratio := float64(t1.Sub(t0)) / float64(r1.Sub(r0))
		if ratio < 3.5 || ratio > 6.5 {
			t.Fatalf("clock ran %.2fx real time; want about 5x", ratio)
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
		if err := n.Restart(ctx, cluster.RestartOptions{}); err != nil {
			t.Fatal(err)
		}
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
		if took := time.Since(start); took > 15*time.Second {
			t.Fatalf("Close with paused nodes took %v", took)
		}
	})
}
