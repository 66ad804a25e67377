package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
	"github.com/quorumlock/quorumlock/redlock"
)

// sentinelTimeout is the per-node bound of the Sentinel tests' Clients: a
// first vote through a FailoverClient asks the Sentinel, dials, reads INFO
// twice and may load the script, which on a loaded host can outlast the
// default bound; a vote lost that way is not what these tests are about.
const sentinelTimeout = 2 * time.Second

// TestSentinel runs quorumlock on three Sentinel-managed masters (go-redis
// FailoverClients), one of them with a replica. The subtests share the set
// and run in order; the last one fails m0 over.
func TestSentinel(t *testing.T) {
	clustertest.RequireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	set, err := cluster.StartSentinel(ctx, cluster.SentinelOptions{
		Masters: 3, Replicas: []int{0}, Label: t.Name(), Logf: t.Logf,
	})
	if err != nil {
		t.Fatalf("start sentinel set: %v", err)
	}
	t.Cleanup(func() {
		if err := set.Close(); err != nil {
			t.Errorf("close sentinel set: %v", err)
		}
	})
	t.Run("FailoverClientsAreThreeNodes", func(t *testing.T) { testSentinelThreeNodes(t, set) })
	t.Run("SameMasterTwice", func(t *testing.T) { testSentinelSameMasterTwice(t, set) })
	t.Run("SameMasterTwiceExtends", func(t *testing.T) { testSentinelSameMasterTwiceExtends(t, set) })
	t.Run("FailoverIsQuarantined", func(t *testing.T) { testSentinelFailover(t, set) })
}

// failoverClients returns one new FailoverClient per master name, closed
// at the end of the test.
func failoverClients(t *testing.T, set *cluster.SentinelSet, names ...string) []redis.UniversalClient {
	t.Helper()
	out := make([]redis.UniversalClient, len(names))
	for i, name := range names {
		fc := set.FailoverClient(name)
		t.Cleanup(func() { _ = fc.Close() })
		out[i] = fc
	}
	return out
}

// sentinelClient returns a Client on nodes that logs to the returned
// buffer, closed at the end of the test, after its nodes are declared
// (Bootstrap is idempotent; it is repeated while a first connection on a
// loaded host outlasts its bound).
func sentinelClient(t *testing.T, nodes []redis.UniversalClient) (*redlock.Client, *lockedLog) {
	t.Helper()
	log := &lockedLog{}
	c, err := redlock.New(nodes, redlock.WithQuarantine(quarantine), redlock.WithNodeTimeout(sentinelTimeout),
		redlock.WithLogger(slog.New(slog.NewTextHandler(log, nil))))
	if err != nil {
		t.Fatalf("redlock.New refused FailoverClients: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := ctxFor(t, time.Minute)
	for {
		err := c.Bootstrap(ctx)
		if err == nil {
			return c, log
		}
		if ctx.Err() != nil {
			t.Fatalf("bootstrap: %v", err)
		}
		t.Logf("bootstrap, again: %v", err)
	}
}

// runID returns the run id of the server rdb talks to now.
func runID(ctx context.Context, t *testing.T, rdb redis.UniversalClient) string {
	t.Helper()
	txt, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		t.Fatalf("INFO server: %v", err)
	}
	for _, line := range strings.Split(txt, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v
		}
	}
	t.Fatalf("INFO server without run_id: %q", txt)
	return ""
}

// holdAll reports whether every node's key holds token.
func holdAll(states []redlock.NodeState, token string) bool {
	for _, st := range states {
		if st.Holder != token {
			return false
		}
	}
	return true
}

func testSentinelThreeNodes(t *testing.T, set *cluster.SentinelSet) {
	ctx := ctxFor(t, 30*time.Second)
	nodes := failoverClients(t, set, set.Names()...)
	c, _ := sentinelClient(t, nodes)
	k := key(t)
	l, err := c.Acquire(ctx, k)
	if err != nil {
		t.Fatalf("acquire on three Sentinel-managed masters: %v", err)
	}
	// Acquire returns once a majority said yes: the third vote may still
	// be on its way, on a busy host, when the nodes are first read.
	states := inspect(ctx, t, c, k)
	for !holdAll(states, l.Token()) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
		states = inspect(ctx, t, c, k)
	}
	seen := map[string]int{}
	for i, st := range states {
		if st.Holder != l.Token() {
			t.Errorf("node %d holds %q, want the lock's token %q", i, st.Holder, l.Token())
		}
		if st.Quarantine != 0 {
			t.Errorf("node %d in quarantine for %v after Bootstrap", i, st.Quarantine)
		}
		// Each node is the server the Sentinel names for its master.
		direct := redis.NewClient(&redis.Options{Addr: set.MasterAddrs()[i]})
		want := runID(ctx, t, direct)
		_ = direct.Close()
		if st.RunID != want {
			t.Errorf("node %d: run id %q, want %q (the server of %s)", i, st.RunID, want, set.Names()[i])
		}
		if j, dup := seen[st.RunID]; dup {
			t.Errorf("nodes %d and %d report the same run id %q", j, i, st.RunID)
		}
		seen[st.RunID] = i
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	for i, v := range valuesOn(ctx, t, nodes, k) {
		if v != "" {
			t.Errorf("node %d still holds %q after Release", i, v)
		}
	}
}

func testSentinelSameMasterTwice(t *testing.T, set *cluster.SentinelSet) {
	ctx := ctxFor(t, 30*time.Second)
	// Two FailoverClients for m0: New cannot tell (both say
	// "FailoverClient"); first contact must.
	nodes := failoverClients(t, set, "m0", "m0", "m1")
	c, log := sentinelClient(t, nodes)
	// Another owner holds the key on m1 only. Were the one server behind
	// nodes 0 and 1 to vote twice, its two grants would make a majority
	// on their own; kept to one vote, it has none. Every answer counts
	// towards the decision, so the duplicate's refusal is always in the
	// error.
	k := key(t)
	if err := nodes[2].Set(ctx, k, "another owner", time.Minute).Err(); err != nil {
		t.Fatalf("SET on m1: %v", err)
	}
	var err2 error
	var dup []int
	for try := 1; len(dup) == 0; try++ {
		if try > 1 && len(transportFailed(err2)) == 0 {
			t.Fatalf("no node refused as the same Redis server as another: %v", err2)
		}
		if try > 5 {
			t.Fatalf("votes failed in transport %d times; last: %v", try-1, err2)
		}
		var l *redlock.Lock
		l, err2 = c.TryAcquire(ctx, k)
		if err2 == nil {
			_ = l.Release(ctx)
			t.Fatalf("acquired with m0 alone: one server's votes were counted twice")
		}
		var re *redlock.RoundError
		if !errors.As(err2, &re) {
			t.Fatalf("TryAcquire: %v, want a *RoundError", err2)
		}
		for _, ne := range re.Nodes {
			switch {
			case ne.Reason == redlock.NodeFailed && ne.Err != nil && strings.Contains(ne.Err.Error(), "the same Redis server as node"):
				dup = append(dup, ne.Node)
				other := "node 0"
				if ne.Node == 0 {
					other = "node 1"
				}
				if !strings.Contains(ne.Err.Error(), "the same Redis server as "+other) {
					t.Errorf("node %d: %v, want it to name %s", ne.Node, ne.Err, other)
				}
			case ne.Reason == redlock.NodeFailed: // in transport, on a loaded host: asked again
				t.Logf("node %d: %v", ne.Node, ne)
			case ne.Node == 2 && ne.Reason == redlock.NodeTaken:
			default:
				t.Errorf("unexpected answer: %v", ne)
			}
		}
	}
	if len(dup) != 1 || dup[0] > 1 {
		t.Errorf("nodes refused as a server listed twice: %v, want exactly one of 0 and 1 (error: %v)", dup, err2)
	}
	if !strings.Contains(log.String(), "one server listed twice") {
		t.Errorf("no log line about the server listed twice; log:\n%s", log.String())
	}
	t.Logf("the user sees: %v", err2)
}

// testSentinelSameMasterTwiceExtends: the server listed twice is kept from
// voting for an extension too. Nodes 0 and 1 are one server; after the
// acquisition the key on node 2 (m1) holds another token, as after m1 lost
// it and granted it to someone else. Only m0 holds the lock's token: one
// server of the two, one vote of the two needed. Counted twice, m0 alone
// would extend the lock.
func testSentinelSameMasterTwiceExtends(t *testing.T, set *cluster.SentinelSet) {
	ctx := ctxFor(t, 30*time.Second)
	nodes := failoverClients(t, set, "m0", "m0", "m1")
	c, _ := sentinelClient(t, nodes)
	k := key(t)
	l, err := c.Acquire(ctx, k, redlock.WithAutoExtend(false))
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	defer func() { _ = l.Release(ctx) }()
	// The acquisition made first contact with both m0 nodes (a vote left
	// out of an early decision still runs it): wait until one is refused.
	for {
		_, err := c.TryAcquire(ctx, k)
		if err != nil && strings.Contains(err.Error(), "the same Redis server as node") {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no node refused as the same server: %v", err)
		}
	}
	if err := nodes[2].Set(ctx, k, "another owner", time.Minute).Err(); err != nil {
		t.Fatalf("SET on m1: %v", err)
	}
	err = l.Extend(ctx)
	if err == nil {
		t.Fatalf("extended with m0 alone: the server listed twice voted twice")
	}
	// m0 says yes once, its duplicate is refused and m1 says no: the
	// decision needs both refusals, so the duplicate's is in the error.
	if !strings.Contains(err.Error(), "the same Redis server as node") {
		t.Errorf("extend: %v, want the server listed twice named", err)
	}
	t.Logf("the user sees: %v", err)
}

func testSentinelFailover(t *testing.T, set *cluster.SentinelSet) {
	ctx := ctxFor(t, time.Minute)
	nodes := failoverClients(t, set, set.Names()...)
	a, _ := sentinelClient(t, nodes)
	b, blog := sentinelClient(t, nodes) // another process, as far as the lock is concerned
	k := key(t)
	l, err := a.Acquire(ctx, k, redlock.WithTTL(time.Minute), redlock.WithAutoExtend(false))
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	// The replica has every write of m0, the lock key and the node's
	// restart records included, before m0 fails over.
	if n, err := nodes[0].Do(ctx, "wait", 1, 10000).Int64(); err != nil || n != 1 {
		t.Fatalf("WAIT for m0's replica: %d replicas, %v", n, err)
	}
	oldRun := runID(ctx, t, nodes[0])
	replica := redis.NewClient(&redis.Options{Addr: set.ReplicaAddr(0)})
	defer replica.Close()
	newRun := runID(ctx, t, replica)
	if v, err := replica.Get(ctx, k).Result(); err != nil || v != l.Token() {
		t.Fatalf("replica of m0 holds %q (%v), want the lock's token", v, err)
	}

	addr, err := set.Failover(ctx, "m0")
	if err != nil {
		t.Fatal(err)
	}
	if addr != set.ReplicaAddr(0) {
		t.Fatalf("m0 failed over to %s, want its replica %s", addr, set.ReplicaAddr(0))
	}
	// The FailoverClient follows the Sentinel to the promoted replica.
	for {
		id, err := nodes[0].Info(ctx, "server").Result()
		if err == nil && strings.Contains(id, "run_id:"+newRun) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the FailoverClient of m0 did not follow the failover to %s (run id %.8s…, was %.8s…): %v", addr, newRun, oldRun, err)
		}
		time.Sleep(20 * time.Millisecond) // polling the client's own view; no event to wait on
	}

	// Before any vote, an operator sees node 0 as a new server process.
	states := inspect(ctx, t, b, k)
	if st := states[0]; st.Err != nil || st.RunID != newRun || st.Quarantine == 0 {
		t.Errorf("Inspect node 0 after the failover: run id %q (want %q), quarantine %v (want > 0), err %v",
			st.RunID, newRun, st.Quarantine, st.Err)
	}
	for _, st := range states[1:] {
		if st.Quarantine != 0 {
			t.Errorf("Inspect node %d in quarantine for %v; only m0 failed over", st.Node, st.Quarantine)
		}
	}

	// The canonical case the quarantine is for: the holder has the key on
	// a bare majority, nodes 0 and 1 (node 2 missed it), and the failover
	// loses it on node 0 (asynchronous replication can lose the last
	// writes). Node 2 grants the key to another owner and node 1 refuses,
	// so node 0 decides: counted, its vote would give the key a second
	// owner while the first still holds it.
	if err := nodes[0].Del(ctx, k).Err(); err != nil {
		t.Fatalf("DEL on the new master: %v", err)
	}
	start := time.Now()
	var node0 *redlock.NodeError
	var err2 error
	for try := 1; node0 == nil; try++ {
		if try > 5 {
			t.Fatalf("node 0's vote failed in transport %d times; last: %v", try-1, err2)
		}
		// Node 2 missed the key (again: a failed try leaves the other
		// owner's token there until its cleanup).
		if err := nodes[2].Del(ctx, k).Err(); err != nil {
			t.Fatalf("DEL on node 2: %v", err)
		}
		var l2 *redlock.Lock
		l2, err2 = b.TryAcquire(ctx, k)
		if err2 == nil {
			_ = l2.Release(ctx)
			t.Fatalf("another owner acquired %s while it is held: node 0, a new server process without the key, voted", k)
		}
		var re *redlock.RoundError
		if !errors.As(err2, &re) {
			t.Fatalf("TryAcquire: %v, want a *RoundError", err2)
		}
		for _, ne := range re.Nodes {
			switch {
			case ne.Node == 0 && ne.Reason != redlock.NodeFailed:
				node0 = ne
			case ne.Reason == redlock.NodeFailed:
				t.Logf("node %d: %v", ne.Node, ne) // in transport, on a loaded host: asked again if node 0's
			case ne.Node == 2:
				t.Errorf("node 2: %v, want a grant (the key is gone there)", ne)
			case ne.Node == 1 && ne.Reason != redlock.NodeTaken:
				t.Errorf("node 1: %v, want taken", ne)
			}
		}
	}
	switch {
	case node0.Reason != redlock.NodeQuarantined:
		t.Errorf("node 0: %v, want quarantined", node0)
	case node0.Wait < quarantine-time.Since(start)-time.Minute:
		// The whole quarantine, not what was left of the old master's
		// (none: Bootstrap dated its data long ago): the new run id
		// restarted it.
		t.Errorf("node 0 quarantined for %v more, want the whole %v: the new run id was not seen", node0.Wait, quarantine)
	}
	if b.Stats().VotesQuarantined == 0 {
		t.Errorf("no quarantined vote counted")
	}
	if !strings.Contains(blog.String(), "redlock: node restarted") {
		t.Errorf("no log line about the new server process; log:\n%s", blog.String())
	}
	if !l.Valid() {
		t.Errorf("the holder's lock ended: %v", l.Err())
	}
	t.Logf("after the failover: %v", err2)
}

// inspect reads every node's state of key, again while a node could not
// be read (a transport failure on a loaded host) until ctx ends.
func inspect(ctx context.Context, t *testing.T, c *redlock.Client, key string) []redlock.NodeState {
	t.Helper()
	for {
		states, err := c.Inspect(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		var failed error
		for _, st := range states {
			if st.Err != nil {
				failed = fmt.Errorf("node %d: %w", st.Node, st.Err)
			}
		}
		if failed == nil {
			return states
		}
		if ctx.Err() != nil {
			t.Fatalf("inspect: %v", failed)
		}
		t.Logf("inspect, again: %v", failed)
	}
}

// valuesOn returns what each client's server stores under key.
func valuesOn(ctx context.Context, t *testing.T, nodes []redis.UniversalClient, key string) []string {
	t.Helper()
	out := make([]string, len(nodes))
	for i, c := range nodes {
		v, err := c.Get(ctx, key).Result()
		if err != nil && err != redis.Nil {
			t.Fatalf("node %d: GET %s: %v", i, key, err)
		}
		out[i] = v
	}
	return out
}

// lockedLog is a log destination safe for concurrent writers.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
