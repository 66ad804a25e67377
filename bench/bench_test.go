package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/quorumlock/quorumlock/bench"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// miniEnv starts n miniredis nodes and clients for them.
func miniEnv(t *testing.T, n int) bench.Env {
	t.Helper()
	env := bench.Env{Label: "miniredis"}
	for range n {
		s := miniredis.RunT(t)
		c := redis.NewClient(&redis.Options{Addr: s.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
		t.Cleanup(func() { _ = c.Close() })
		env.Clients = append(env.Clients, c)
	}
	return env
}

// TestRunSmoke runs every figure briefly so that the code path of `go test
// -bench` and `quorumlock bench` cannot rot; it checks the report's shape,
// not its numbers.
func TestRunSmoke(t *testing.T) {
	env := miniEnv(t, 5)
	cfg := bench.Config{
		OpTime: 100 * time.Millisecond, Contention: 300 * time.Millisecond, Workers: 4,
		SlowTime: 100 * time.Millisecond, Throughput: 200 * time.Millisecond, Goroutines: 8,
		Logf: t.Logf,
	}
	rep, err := bench.Run(context.Background(), env, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Uncontended) != 3 || len(rep.Contention) != 3 || len(rep.Throughput) != 4 || len(rep.Fencing) != 2 || len(rep.Guard) != 2 {
		t.Fatalf("report misses figures: %+v", rep)
	}
	if len(rep.SlowNode) != 0 {
		t.Errorf("slow-node figure ran without latency injection: %+v", rep.SlowNode)
	}
	for _, o := range append(append(rep.Uncontended, rep.Fencing...), rep.Guard...) {
		// Errors are reported, not failed on: on a loaded machine a
		// request can outlast the node timeout.
		if o.Ops == 0 {
			t.Errorf("%s: no operation completed (%d errors)", o.Name, o.Errors)
		}
	}
	for _, c := range rep.Contention {
		if c.Overlaps != 0 {
			t.Errorf("%s: %d overlapping holders", c.Name, c.Overlaps)
		}
		if c.Acquisitions == 0 {
			t.Errorf("%s: no acquisition", c.Name)
		}
	}
	var table, js bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back bench.Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("JSON does not read back: %v", err)
	}
	t.Logf("\n%s", table.String())
}
