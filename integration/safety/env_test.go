package safety

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
	"github.com/quorumlock/quorumlock/redlock"
)

// ttl is every lock's TTL. A container restart takes about half a second
// here, so two seconds leave B well over a second of A's validity to try in.
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

// sleepUntil sleeps until the monotonic instant at (no-op when past).
func sleepUntil(at time.Time) {
	if d := time.Until(at); d > 0 {
		time.Sleep(d)
	}
}

// holding is one acquired lock, whichever the library.
type holding struct {
	token   string
	until   time.Time // validity deadline; carries a monotonic reading
	release func(ctx context.Context) error
}

// locker is one client of a library, as the experiments drive it.
type locker struct {
	// try makes exactly one attempt.
	try func(ctx context.Context, key string) (holding, error)
	// acquire retries until it holds or ctx ends.
	acquire func(ctx context.Context, key string) (holding, error)
}

// library makes clients of one Redlock implementation.
type library struct {
	name string
	new  func(t *testing.T, nodes []redis.UniversalClient) locker
}

// quorumlock is this project's library with its defaults: restart
// quarantine of one TTL, clock-skew guard of TTL/10.
var quorumlock = library{
	name: "quorumlock",
	new: func(t *testing.T, nodes []redis.UniversalClient) locker {
		t.Helper()
		c, err := redlock.New(nodes, redlock.WithTTL(ttl))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		wrap := func(l *redlock.Lock, err error) (holding, error) {
			if err != nil {
				return holding{}, err
			}
			return holding{token: l.Token(), until: l.Until(), release: l.Release}, nil
		}
		return locker{
			try:     func(ctx context.Context, key string) (holding, error) { return wrap(c.TryAcquire(ctx, key)) },
			acquire: func(ctx context.Context, key string) (holding, error) { return wrap(c.Acquire(ctx, key)) },
		}
	},
}

// redsyncLib is go-redsync/redsync v4 with its defaults but for the expiry,
// which is the same TTL.
var redsyncLib = library{
	name: "redsync",
	new: func(t *testing.T, nodes []redis.UniversalClient) locker {
		pools := make([]redsyncredis.Pool, len(nodes))
		for i, n := range nodes {
			pools[i] = goredis.NewPool(n)
		}
		rs := redsync.New(pools...)
		lock := func(ctx context.Context, key string, tries int) (holding, error) {
			opts := []redsync.Option{redsync.WithExpiry(ttl)}
			if tries > 0 {
				opts = append(opts, redsync.WithTries(tries))
			}
			m := rs.NewMutex(key, opts...)
			if err := m.LockContext(ctx); err != nil {
				return holding{}, err
			}
			return holding{token: m.Value(), until: m.Until(), release: func(ctx context.Context) error {
				ok, err := m.UnlockContext(ctx)
				if err == nil && !ok {
					err = errors.New("redsync: unlock not confirmed by a majority")
				}
				return err
			}}, nil
		}
		return locker{
			try:     func(ctx context.Context, key string) (holding, error) { return lock(ctx, key, 1) },
			acquire: func(ctx context.Context, key string) (holding, error) { return lock(ctx, key, 0) },
		}
	},
}

// checker records holding intervals on one monotonic clock and finds the
// overlaps between different clients.
type checker struct {
	t0    time.Time
	mu    sync.Mutex
	holds []hold
}

// hold is one holding interval, as offsets from the checker's origin.
type hold struct {
	client, how string
	acquired    time.Duration
	until       time.Duration
	released    time.Duration // -1 while held
}

func (h hold) end() time.Duration {
	if h.released >= 0 {
		return min(h.released, h.until)
	}
	return h.until
}

// overlap is a span during which two clients both held the lock.
type overlap struct {
	a, b       hold
	start, end time.Duration
}

func (o overlap) String() string {
	return fmt.Sprintf("%s (%s) and %s (%s) both held for %v, from %v to %v",
		o.a.client, o.a.how, o.b.client, o.b.how, (o.end - o.start).Round(time.Microsecond),
		o.start.Round(time.Millisecond), o.end.Round(time.Millisecond))
}

func newChecker() *checker { return &checker{t0: time.Now()} }

func (c *checker) off(at time.Time) time.Duration { return at.Sub(c.t0) }

// acquired records that client obtained h when its call returned, now.
func (c *checker) acquired(client, how string, h holding) int {
	at := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holds = append(c.holds, hold{client: client, how: how, acquired: c.off(at), until: c.off(h.until), released: -1})
	return len(c.holds) - 1
}

// released records that hold i ended now (before its release call).
func (c *checker) released(i int) {
	at := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holds[i].released = c.off(at)
}

// overlaps returns every pair of holds by different clients whose intervals
// intersect.
func (c *checker) overlaps() []overlap {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []overlap
	for i, a := range c.holds {
		for _, b := range c.holds[i+1:] {
			if a.client == b.client {
				continue
			}
			start, end := max(a.acquired, b.acquired), min(a.end(), b.end())
			if start < end {
				out = append(out, overlap{a: a, b: b, start: start, end: end})
			}
		}
	}
	return out
}

func (c *checker) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	for _, h := range c.holds {
		fmt.Fprintf(&b, "\n  %s %-7s [%v, %v]", h.client, h.how, h.acquired.Round(time.Millisecond), h.end().Round(time.Millisecond))
	}
	return b.String()
}

// keep runs a holding: records it, keeps it until at (not at all when at
// is past), records its end and releases it.
func (c *checker) keep(t *testing.T, client, how string, h holding, at time.Time) {
	t.Helper()
	i := c.acquired(client, how, h)
	sleepUntil(at)
	c.released(i)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.release(ctx); err != nil {
		t.Logf("%s: release after %s: %v", client, how, err)
	}
}
