package integration

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
	"github.com/quorumlock/quorumlock/lab/redsyncadapter"
	"github.com/quorumlock/quorumlock/redlock"
)

// env is five docker nodes with both libraries on them.
type env struct {
	c       *cluster.Cluster
	clients []redis.UniversalClient
	ours    *redlock.Client
	rs      *redsync.Redsync
}

var keySeq atomic.Int64

func newEnv(t *testing.T) *env {
	t.Helper()
	c := clustertest.NewDocker(t, 5)
	e := &env{c: c, clients: c.Clients()}
	e.ours = e.newOurs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Fresh nodes: without this they would serve a restart quarantine.
	if err := e.ours.Bootstrap(ctx); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	e.rs = redsyncadapter.New(e.clients)
	return e
}

// newOurs returns another redlock.Client on the nodes (another process, as
// far as the locks are concerned), closed at the end of the test.
func (e *env) newOurs(t *testing.T, opts ...redlock.Option) *redlock.Client {
	t.Helper()
	c, err := redlock.New(e.clients, opts...)
	if err != nil {
		t.Fatalf("redlock.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// key returns a key no other test uses.
func key(t *testing.T) string {
	return "it:" + t.Name() + ":" + strconv.FormatInt(keySeq.Add(1), 10)
}

// values returns what every node stores under key ("" when missing).
func (e *env) values(t *testing.T, key string) []string {
	t.Helper()
	out := make([]string, len(e.clients))
	for i, c := range e.clients {
		v, err := c.Get(context.Background(), key).Result()
		if err != nil && err != redis.Nil {
			t.Fatalf("node %d: GET %s: %v", i, key, err)
		}
		out[i] = v
	}
	return out
}

// pttls returns each node's remaining TTL of key.
func (e *env) pttls(t *testing.T, key string) []time.Duration {
	t.Helper()
	out := make([]time.Duration, len(e.clients))
	for i, c := range e.clients {
		d, err := c.PTTL(context.Background(), key).Result()
		if err != nil {
			t.Fatalf("node %d: PTTL %s: %v", i, key, err)
		}
		out[i] = d
	}
	return out
}

// wipe deletes key on every node, as a node-side loss would.
func (e *env) wipe(t *testing.T, key string) {
	t.Helper()
	for i, c := range e.clients {
		if err := c.Del(context.Background(), key).Err(); err != nil {
			t.Fatalf("node %d: DEL %s: %v", i, key, err)
		}
	}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
