package safety

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
	"github.com/quorumlock/quorumlock/redlock"
)

// ttl is every lock's TTL and the quarantine a restart serves.
const ttl = 2 * time.Second

// nodes is the cluster size: a bare majority is three.
const nodes = 5

// newCluster starts five docker nodes and declares them fresh (Bootstrap),
// which also records each node's run id so that later restarts are seen.
func newCluster(t *testing.T, p cluster.Persistence) *cluster.Cluster {
	t.Helper()
	c := clustertest.New(t, cluster.Options{Backend: cluster.BackendDocker, Nodes: nodes, Persistence: p})
	boot, err := redlock.New(c.Clients(), redlock.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	if err := boot.Bootstrap(ctxFor(t, 10*time.Second)); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	return c
}

func view(t *testing.T, c *cluster.Cluster, name string) *cluster.View {
	t.Helper()
	v, err := c.View(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

var keySeq atomic.Int64

// key returns a key no other test uses.
func key(t *testing.T) string {
	return "safety:" + t.Name() + ":" + strconv.FormatInt(keySeq.Add(1), 10)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// values returns what every node stores under key ("" when missing), read
// through the default view.
func values(t *testing.T, c *cluster.Cluster, key string) []string {
	t.Helper()
	out := make([]string, c.Len())
	for i, cl := range c.Clients() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		v, err := cl.Get(ctx, key).Result()
		cancel()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatalf("node %d: GET %s: %v", i, key, err)
		}
		out[i] = v
	}
	return out
}

func holders(vals []string, token string) []int {
	var out []int
	for i, v := range vals {
		if v == token {
			out = append(out, i)
		}
	}
	return out
}

// nodeRefused reports whether err names node i (any node when i < 0) as
// refusing for the given reason.
func nodeRefused(err error, i int, reason redlock.NodeReason) bool {
	var re *redlock.RoundError
	if !errors.As(err, &re) {
		return false
	}
	for _, n := range re.Nodes {
		if (i < 0 || n.Node == i) && n.Reason == reason {
			return true
		}
	}
	return false
}
