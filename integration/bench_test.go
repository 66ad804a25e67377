package integration

import (
	"context"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"

	"github.com/quorumlock/quorumlock/bench"
	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
	"github.com/quorumlock/quorumlock/redlock"
)

// The benchmarks of issue #4 on five docker nodes; `quorumlock bench` runs
// the same code and prints the ratios. Run them with
//
//	go test -run '^$' -bench . -benchmem ./integration
//
// -short shortens the contention, slow-node and throughput runs.

func openNodes(b *testing.B) *bench.Nodes {
	b.Helper()
	// No libfaketime: the benchmark measures Redis, not the offset file.
	c := clustertest.New(b, cluster.Options{Backend: cluster.BackendDocker, Nodes: 5, NoClockFaults: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := bench.Open(ctx, bench.ClusterEnv(c))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = n.Close() })
	return n
}

func runOp(b *testing.B, keys []string, op bench.Op) {
	b.Helper()
	ctx := context.Background()
	for i := range 3 { // warm the pools and script caches
		_ = op(ctx, keys[i])
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if err := op(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkUncontended is figure 1: Acquire+Release of random keys.
func BenchmarkUncontended(b *testing.B) {
	n := openNodes(b)
	keys := n.Keys("uncontended", 4096)
	b.Run("quorumlock", func(b *testing.B) { runOp(b, keys, bench.OursOp(n.Ours)) })
	b.Run("redsync", func(b *testing.B) { runOp(b, keys, bench.RedsyncOp(n.Redsync)) })
	b.Run("raw", func(b *testing.B) { runOp(b, keys, bench.RawOp(n.Raw)) })
}

// BenchmarkFencing is figure 5a: the extra cost of WithFencing(true).
func BenchmarkFencing(b *testing.B) {
	n := openNodes(b)
	keys := n.Keys("fencing", 4096)
	b.Run("plain", func(b *testing.B) { runOp(b, keys, bench.OursOp(n.Ours)) })
	b.Run("fenced", func(b *testing.B) { runOp(b, keys, bench.OursOp(n.Fenced)) })
}

// BenchmarkGuard is figure 5b: one SET under a held lock through a guarded
// client and through a plain one.
func BenchmarkGuard(b *testing.B) {
	n := openNodes(b)
	g, err := bench.NewGuardPair(context.Background(), n)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = g.Close() })
	keys := n.Keys("guard", 1)
	for _, c := range []struct {
		name string
		op   bench.Op
	}{{"plain", bench.SetOp(g.Plain)}, {"guarded", bench.SetOp(g.Guarded)}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.op(g.Ctx, keys[0]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func pick(long, short time.Duration) time.Duration {
	if testing.Short() {
		return short
	}
	return long
}

// once runs a figure that has its own duration a single time, whatever b.N,
// and reports its metrics instead of ns/op.
func once(b *testing.B, f func() map[string]float64) {
	b.Helper()
	var m map[string]float64
	for b.Loop() {
		if m == nil {
			m = f()
		}
	}
	for unit, v := range m {
		b.ReportMetric(v, unit)
	}
	b.ReportMetric(0, "ns/op")
}

// BenchmarkContention is figure 2: 8 workers, one key, 2 ms critical section.
func BenchmarkContention(b *testing.B) {
	n := openNodes(b)
	d := pick(10*time.Second, 3*time.Second)
	const workers, critical = 8, 2 * time.Millisecond
	perWorker := make([]bench.Contender, workers)
	for i := range perWorker {
		c, _, err := n.NewProcessClient() // a process: a Client and connections of its own
		if err != nil {
			b.Fatal(err)
		}
		perWorker[i] = bench.OursContender(c)
	}
	shared, rs := bench.OursContender(n.Ours), bench.RedsyncContender(n.Redsync)
	for _, c := range []struct {
		name   string
		worker func(int) bench.Contender
	}{
		{"quorumlock", func(int) bench.Contender { return shared }},
		{"quorumlock-client-per-worker", func(i int) bench.Contender { return perWorker[i] }},
		{"redsync", func(int) bench.Contender { return rs }},
	} {
		b.Run(c.name, func(b *testing.B) {
			once(b, func() map[string]float64 {
				r := bench.Contention(context.Background(), c.name, n.Key("contention", c.name), workers, critical, bench.ContentionRun{For: d}, c.worker)
				if r.Overlaps != 0 {
					b.Errorf("%d overlapping holders", r.Overlaps)
				}
				return map[string]float64{"acq/s": r.PerSecond, "wait-p50-ms": r.WaitP50Ms, "wait-p99-ms": r.WaitP99Ms,
					"wait-max-ms": r.WaitMaxMs, "fairness": r.Fairness, "handoff-p50-ms": r.HandoffP50Ms, "handoff-p99-ms": r.HandoffP99Ms}
			})
		})
	}
}

// BenchmarkSlowNode is figure 3: Acquire latency with node 4 slowed by
// 50 ms, and with every node fast for reference.
func BenchmarkSlowNode(b *testing.B) {
	n := openNodes(b)
	ctx := context.Background()
	d := pick(5*time.Second, 1500*time.Millisecond)
	keys := n.Keys("slow", 4096)
	lat := func(name string, c bench.Contender) {
		b.Run(name, func(b *testing.B) {
			once(b, func() map[string]float64 {
				r := bench.AcquireLatency(ctx, name, keys, d, 20, 0, c)
				return map[string]float64{"p50-ms": r.P50Ms, "p99-ms": r.P99Ms, "errors": float64(r.Errors)}
			})
		})
	}
	lat("all-fast/quorumlock", bench.OursContender(n.Ours))
	lat("all-fast/redsync", bench.RedsyncContender(n.Redsync))
	if err := n.Latency(ctx, 4, 50*time.Millisecond); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = n.Latency(context.Background(), 4, 0) })
	lat("slow/quorumlock", bench.OursContender(n.Ours))
	lat("slow/redsync", bench.RedsyncContender(n.Redsync))
	lat("slow/redsync-failfast", bench.RedsyncContender(n.Redsync, redsyncFailFast()...))
}

// BenchmarkThroughput is figure 4: 64 goroutines on distinct keys.
func BenchmarkThroughput(b *testing.B) {
	n := openNodes(b)
	ctx := context.Background()
	d := pick(5*time.Second, 2*time.Second)
	if err := n.Warm(ctx, 128); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		c    bench.Contender
	}{
		{"quorumlock", bench.OursContender(n.Ours)},
		{"quorumlock-nodetimeout-400ms", bench.OursContender(n.Ours, redlock.WithNodeTimeout(400*time.Millisecond))},
		{"redsync", bench.RedsyncContender(n.Redsync)},
		{"raw", bench.RawContender(n.Raw)},
	} {
		b.Run(c.name, func(b *testing.B) {
			once(b, func() map[string]float64 {
				r := bench.Throughput(ctx, c.name, n.Keys("throughput-"+c.name, 64), d, c.c)
				return map[string]float64{"acq/s": r.PerSecond, "errors": float64(r.Errors)}
			})
		})
	}
}

// TestBenchSmoke runs every figure of `quorumlock bench` for about two
// seconds on docker nodes, so that the benchmark code cannot rot unseen.
func TestBenchSmoke(t *testing.T) {
	c := clustertest.NewDocker(t, 5)
	cfg := bench.Config{
		OpTime: 100 * time.Millisecond, Contention: 300 * time.Millisecond, Workers: 4,
		SlowTime: 100 * time.Millisecond, SlowDelay: 20 * time.Millisecond,
		Throughput: 200 * time.Millisecond, Goroutines: 8,
		HeldLocks: []int{20, 40}, HeldTTL: 1500 * time.Millisecond, Waiters: 20, ReleaseLocks: 40,
		StormTime: 1200 * time.Millisecond, StormTTL: 300 * time.Millisecond,
	}
	rep, err := bench.Run(ctxFor(t, 3*time.Minute), bench.ClusterEnv(c), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Uncontended) == 0 || len(rep.Contention) == 0 || len(rep.SlowNode) == 0 || len(rep.Throughput) == 0 ||
		len(rep.Fencing) == 0 || len(rep.Guard) == 0 || len(rep.Held) == 0 || len(rep.Waiters) == 0 ||
		len(rep.ReleaseStorm) == 0 || len(rep.Storm) == 0 || len(rep.Targets) == 0 {
		t.Fatalf("report misses figures: %+v", rep)
	}
	for _, r := range rep.Contention {
		if r.Overlaps != 0 {
			t.Errorf("%s: %d overlapping holders", r.Name, r.Overlaps)
		}
	}
	t.Logf("smoke run took %.1f s", rep.Seconds)
}

func redsyncFailFast() []redsync.Option { return []redsync.Option{redsync.WithFailFast(true)} }
