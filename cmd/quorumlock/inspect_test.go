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

// holdLock acquires key on tn with a fence token and releases it at the end
// of the test.
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
	locks, err := redlock.New(nodes, redlock.WithNodeTimeout(250*time.Millisecond), redlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = locks.Close() })
	if err := locks.Bootstrap(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	l, err := locks.TryAcquire(testCtx(t), key, redlock.WithFencing(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Release(testCtx(t)) })
	return l
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
		if n.Skew < -1000 || n.Skew > 1000 {
			t.Errorf("node %d: skew %d ms for a node on this host", n.Node, n.Skew)
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
	tn := newNodes(t, 3)
	// Node 0: another token with 4 s left; node 1: a clock 90 s ahead, data
	// from a minute ago; node 2: nothing.
	tn.mr[0].Set("k", "tok-a")
	tn.mr[0].SetTTL("k", 4*time.Second)
	tn.mr[0].Set(redlock.KeyPrefix+"fence:k", "7")
	ahead := time.Now().Add(90 * time.Second)
	tn.mr[1].SetTime(ahead)
	tn.mr[1].Set(redlock.KeyPrefix+"node", stringInt(ahead.Add(-time.Minute).UnixMilli()))

	out, err := execInspect(t, "--nodes", strings.Join(tn.urls, ","), "--json", "k")
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
	n0, n1, n2 := v.PerNode[0], v.PerNode[1], v.PerNode[2]
	if !n0.Exists || n0.PTTL != 4000 || n0.Fence != 7 || n0.Sentinel != nil {
		t.Errorf("node 0: %+v", n0)
	}
	if n1.Exists || n1.Skew < 85000 || n1.Skew > 95000 || n1.Sentinel == nil || n1.NodeTime-*n1.Sentinel != 60000 {
		t.Errorf("node 1: %+v, want skew about +90 s and data 60 s old", n1)
	}
	if n2.Exists || n2.Error != "" {
		t.Errorf("node 2: %+v", n2)
	}

	out, err = execInspect(t, "--nodes", strings.Join(tn.urls, ","), "k")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"not held by a majority: token tok-a on 1 of 3 nodes", "4s", "data age 1m0s", "none", "absent"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestInspectNodesDown(t *testing.T) {
	tn := newNodes(t, 3)
	nodes := strings.Join(tn.urls, ",")
	tn.mr[2].Close()
	out, err := execInspect(t, "--nodes", nodes, "--timeout", "500ms", "k")
	if err != nil {
		t.Fatalf("a majority answered, yet: %v", err)
	}
	if !strings.Contains(out, "not held on any of the 2 nodes that answered") || !strings.Contains(out, "error: ") {
		t.Errorf("output does not show the down node:\n%s", out)
	}
	tn.mr[1].Close()
	_, err = execInspect(t, "--nodes", nodes, "--timeout", "500ms", "k")
	if err == nil || !strings.Contains(err.Error(), "only 1 of 3 nodes answered") {
		t.Errorf("error %v, want one saying only 1 of 3 nodes answered", err)
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
