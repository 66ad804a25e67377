//go:build unix

package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/redlock"
)

// execInspect runs `quorumlock inspect` with args through cobra.
func execInspect(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return execCmd(t, newInspectCmd(), args...)
}

// holdLock acquires key on tn with a fence token, on every node, and
// releases it at the end of the test.
func holdLock(t *testing.T, tn *testNodes, key string, ttl time.Duration) *redlock.Lock {
	t.Helper()
	clients, err := openNodes(tn.urls)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = closeNodes(clients) })
	nodes := make([]redis.UniversalClient, len(clients))
	for i, c := range clients {
		nodes[i] = c
	}
	const nodeTimeout = 250 * time.Millisecond
	locks, err := redlock.New(nodes, redlock.WithNodeTimeout(nodeTimeout), redlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = locks.Close() })
	ctx := testCtx(t)
	if err := locks.Bootstrap(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		// Acquire, not TryAcquire: on a loaded host one attempt can lose
		// votes to its node timeout.
		l, err := locks.Acquire(ctx, key, redlock.WithFencing(true))
		if err != nil {
			t.Fatal(err)
		}
		// The lock is decided on a majority; the test wants it on every
		// node, which the last SET reaches within the node timeout or
		// never.
		deadline := time.Now().Add(2 * nodeTimeout)
		for tn.holders(key) < len(tn.mr) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if tn.holders(key) == len(tn.mr) {
			t.Cleanup(func() { _ = l.Release(testCtx(t)) })
			return l
		}
		t.Logf("the lock reached only %d of %d nodes; again", tn.holders(key), len(tn.mr))
		_ = l.Release(ctx)
	}
}

func TestInspectShowsHolder(t *testing.T) {
	tn := newNodes(t, 3)
	l := holdLock(t, tn, "nightly-report", 10*time.Second)
	nodes := strings.Join(tn.urls, ",")

	out, err := execInspect(t, "--nodes", nodes, "--json", "nightly-report")
	if err != nil {
		t.Fatal(err)
	}
	var v lockView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v in\n%s", err, out)
	}
	if !v.Held || v.HeldOn != 3 || v.Token != l.Token() || v.Quorum != 2 || v.Answered != 3 || v.Fence != l.Fence() {
		t.Errorf("summary %+v, want held on 3 nodes by %s with fence %d", v, l.Token(), l.Fence())
	}
	for _, n := range v.PerNode {
		if n.Error != "" || !n.Exists || n.Token != l.Token() {
			t.Errorf("node %d: %+v, want the holder's token", n.Node, n)
		}
		if n.PTTL <= 0 || n.PTTL > 10000 {
			t.Errorf("node %d: PTTL %d ms, want in (0, 10000]", n.Node, n.PTTL)
		}
		if n.Sentinel == nil || *n.Sentinel != 0 {
			t.Errorf("node %d: sentinel %v, want 0 (bootstrapped)", n.Node, n.Sentinel)
		}
		// The node read its clock somewhere in the round trip: the skew
		// of a node on this host is within half of it (and the
		// milliseconds both sides round to).
		if bound := int64(n.RTT/2) + 2; n.Skew < -bound || n.Skew > bound {
			t.Errorf("node %d: skew %d ms for a node on this host, round trip %.1f ms", n.Node, n.Skew, n.RTT)
		}
		if n.State != stateOK {
			t.Errorf("node %d: state %q, want %q", n.Node, n.State, stateOK)
		}
	}

	out, err = execInspect(t, "--nodes", nodes, "nightly-report")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`key "nightly-report": held on 3 of 3 nodes (majority 2) by token ` + l.Token(), "bootstrapped", "present"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestInspectNodeStates(t *testing.T) {
	tn := newNodes(t, 4)
	// Node 0: another token with 4 s left, no sentinel yet (its next vote
	// starts a quarantine); node 1: a clock 90 s ahead, data from a minute
	// ago; node 2: data 3 s old, so in quarantine for 5 s more of the 8 s
	// TTL; node 3: bootstrapped, nothing else.
	tn.mr[0].Set("k", "tok-a")
	tn.mr[0].SetTTL("k", 4*time.Second)
	tn.mr[0].Set(fenceKey("k"), "7")
	set := time.Now()
	ahead := set.Add(90 * time.Second)
	tn.mr[1].SetTime(ahead)
	tn.mr[1].Set(sentinelKey, stringInt(ahead.Add(-time.Minute).UnixMilli()))
	tn.mr[2].SetTime(set)
	tn.mr[2].Set(sentinelKey, stringInt(set.Add(-3*time.Second).UnixMilli()))
	tn.mr[3].Set(sentinelKey, "0")

	out, err := execInspect(t, "--nodes", strings.Join(tn.urls, ","), "--json", "k")
	elapsed := time.Since(set)
	if err != nil {
		t.Fatal(err)
	}
	var v lockView
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("%v in\n%s", err, out)
	}
	if v.Held || v.HeldOn != 1 || v.Token != "tok-a" || v.Fence != 7 {
		t.Errorf("summary %+v, want tok-a on 1 node, not held, fence 7", v)
	}
	n0, n1, n2, n3 := v.PerNode[0], v.PerNode[1], v.PerNode[2], v.PerNode[3]
	if !n0.Exists || n0.PTTL != 4000 || n0.Fence != 7 || n0.Sentinel != nil || n0.State != stateQuarantined || n0.QuarantineLeft != 8000 {
		t.Errorf("node 0: %+v, want the key, no sentinel and a whole quarantine ahead", n0)
	}
	// Node 1's clock stands at ahead: the further this host's clock got
	// since, the smaller the skew.
	if lo, hi := 90000-elapsed.Milliseconds()-2, int64(90000+2); n1.Exists || n1.Skew < lo || n1.Skew > hi ||
		n1.Sentinel == nil || n1.NodeTime-*n1.Sentinel != 60000 || n1.State != stateSkewed {
		t.Errorf("node 1: %+v, want skewed by %d–%d ms and data 60 s old", n1, lo, hi)
	}
	if n2.Exists || n2.State != stateQuarantined || n2.QuarantineLeft != 5000 {
		t.Errorf("node 2: %+v, want quarantined for 5000 ms more", n2)
	}
	if n3.Exists || n3.Error != "" || n3.State != stateOK {
		t.Errorf("node 3: %+v", n3)
	}

	out, err = execInspect(t, "--nodes", strings.Join(tn.urls, ","), "k")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"not held by a majority: token tok-a on 1 of 4 nodes", "4s", "data age 1m0s", "none", "absent",
		"quarantined 8s", "quarantined 5s", "skewed", "bootstrapped"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// A node that does not answer makes inspect exit 69, saying which and why,
// and whether the others are enough to know the lock's state.
func TestInspectNodesDown(t *testing.T) {
	tn := newNodes(t, 3)
	nodes := strings.Join(tn.urls, ",")
	tn.down(t, 2)
	out, err := execInspect(t, "--nodes", nodes, "k")
	if code := exitCode(err); code != exitUnavailable {
		t.Fatalf("exit status %d (%v), want %d", code, err, exitUnavailable)
	}
	addr2 := strings.TrimPrefix(tn.urls[2], "redis://")
	if want := "unreachable: node 2 (" + addr2 + "): connection refused; 2 of 3 nodes answered, enough to know the lock's state"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	if !strings.Contains(out, "not held on any of the 2 nodes that answered") || !strings.Contains(out, "unreachable: connection refused") {
		t.Errorf("output does not show the down node:\n%s", out)
	}
	tn.down(t, 1)
	_, err = execInspect(t, "--nodes", nodes, "k")
	if code := exitCode(err); code != exitUnavailable || !strings.Contains(err.Error(), "only 1 of 3 nodes answered, a majority needs 2: the lock's state is unknown") {
		t.Errorf("exit status %d, error %v; want %d saying only 1 of 3 nodes answered", code, err, exitUnavailable)
	}
}

func TestInspectCommandLine(t *testing.T) {
	tn := newNodes(t, 3)
	nodes := strings.Join(tn.urls, ",")
	t.Setenv(nodesEnv, "")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no key", []string{"--nodes", nodes}, "need exactly one KEY"},
		{"two keys", []string{"--nodes", nodes, "a", "b"}, `need exactly one KEY, got 2 arguments ["a" "b"]`},
		{"empty key", []string{"--nodes", nodes, ""}, "KEY is empty"},
		{"no nodes", []string{"k"}, "no nodes"},
		{"duplicate node", []string{"--nodes", nodes + "," + tn.urls[0], "k"}, `node 4 "` + tn.urls[0] + `" is the same server`},
		{"bad timeout", []string{"--nodes", nodes, "--timeout", "0s", "k"}, "--timeout 0s"},
		{"bad ttl", []string{"--nodes", nodes, "--ttl", "-2s", "k"}, "--ttl -2s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := execInspect(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func stringInt(n int64) string { return strconv.FormatInt(n, 10) }
