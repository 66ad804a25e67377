package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
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

	// failed counts, per node, the commands of either library that failed
	// in transport (timed out, connection refused or reset) rather than
	// with a reply: on a loaded host these are what can leave a key behind
	// or cost a vote, so the tests tell them from misbehaviour.
	failed []atomic.Int64

	mu      sync.Mutex
	watches map[string]*watch // see env.watch
}

var keySeq atomic.Int64

func newEnv(t *testing.T) *env {
	t.Helper()
	c := clustertest.NewDocker(t, 5)
	e := &env{c: c, clients: c.Clients(), failed: make([]atomic.Int64, c.Len()), watches: map[string]*watch{}}
	for i, cl := range e.clients {
		cl.AddHook(observer{e: e, node: i})
	}
	e.ours = e.newOurs(t)
	// Fresh nodes: without this they would serve a restart quarantine.
	// Bootstrap needs every node; on a loaded host a first connection can
	// outlast its per-node bound, so it is repeated (it is idempotent)
	// until the test's own deadline.
	ctx := ctxFor(t, time.Minute)
	for {
		err := e.ours.Bootstrap(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("bootstrap: %v", err)
		}
		t.Logf("bootstrap, again: %v", err)
	}
	e.rs = redsyncadapter.New(e.clients)
	return e
}

// quarantine is the restart quarantine of the tests' Clients: no node
// restarts in these tests, and the behaviour table derives TTLs from the
// measured time of a round, which on a loaded host can exceed the default
// (one default TTL); a lock's TTL may not exceed the quarantine.
const quarantine = time.Hour

// newOurs returns another redlock.Client on the nodes (another process, as
// far as the locks are concerned), closed at the end of the test.
func (e *env) newOurs(t *testing.T, opts ...redlock.Option) *redlock.Client {
	t.Helper()
	c, err := redlock.New(e.clients, append([]redlock.Option{redlock.WithQuarantine(quarantine)}, opts...)...)
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

// holdsEverywhere reports whether every node stores value under key.
func (e *env) holdsEverywhere(t *testing.T, key, value string) bool {
	t.Helper()
	for _, v := range e.values(t, key) {
		if v != value {
			return false
		}
	}
	return true
}

// failures returns the transport failures counted so far, per node.
func (e *env) failures() []int64 {
	out := make([]int64, len(e.failed))
	for i := range e.failed {
		out[i] = e.failed[i].Load()
	}
	return out
}

// watch returns a channel closed once n commands naming key have been
// answered by the nodes (or failed there), counting from now.
func (e *env) watch(key string, n int) <-chan struct{} {
	e.mu.Lock()
	defer e.mu.Unlock()
	w := &watch{left: n, done: make(chan struct{})}
	e.watches[key] = w
	return w.done
}

type watch struct {
	left int
	done chan struct{}
}

func (e *env) observe(cmd redis.Cmder) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.watches) == 0 {
		return
	}
	for _, a := range cmd.Args() {
		s, ok := a.(string)
		if !ok {
			continue
		}
		if w, ok := e.watches[s]; ok {
			if w.left--; w.left == 0 {
				close(w.done)
				delete(e.watches, s)
			}
			return
		}
	}
}

// releasedChannel is where the nodes announce releases (redlock.KeyPrefix
// documents it).
const releasedChannel = redlock.KeyPrefix + "released"

// waitSubscribed waits until a node has a subscriber on channel.
func (e *env) waitSubscribed(ctx context.Context, channel string) error {
	for {
		for _, c := range e.clients {
			n, err := c.PubSubNumSub(ctx, channel).Result()
			if err == nil && n[channel] > 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no subscriber on %s: %w", channel, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// observer is the hook env installs on every node client.
type observer struct {
	e    *env
	node int
}

func (o observer) DialHook(next redis.DialHook) redis.DialHook { return next }

func (o observer) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		o.count(err)
		o.e.observe(cmd)
		return err
	}
}

func (o observer) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		o.count(err)
		for _, c := range cmds {
			o.e.observe(c)
		}
		return err
	}
}

func (o observer) count(err error) {
	if err != nil && !isReply(err) {
		o.e.failed[o.node].Add(1)
	}
}

// isReply tells an error the server replied (redis.Nil, NOSCRIPT, a
// script's error) from a failure to get a reply.
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re)
}

// transportFailed lists the nodes whose answer to a quorumlock round was a
// transport failure (no reply in time, refused, reset): on a loaded host a
// round can lose votes that way, which is not what a test asserts about.
func transportFailed(err error) []int {
	var re *redlock.RoundError
	if !errors.As(err, &re) {
		return nil
	}
	var out []int
	for _, n := range re.Nodes {
		if n.Reason == redlock.NodeFailed {
			out = append(out, n.Node)
		}
	}
	return out
}

// redsyncFailed lists the nodes whose answer to a redsync call was a
// transport failure.
func redsyncFailed(err error) []int {
	var out []int
	var walk func(error)
	walk = func(err error) {
		switch x := err.(type) {
		case nil:
		case *redsync.RedisError:
			out = append(out, x.Node)
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(x.Unwrap())
		}
	}
	walk(err)
	slices.Sort(out)
	return out
}

// shape runs one situation until its set-up took the intended shape. The
// body asserts the property with t as usual, and calls lost (then returns)
// when something the situation needs did not happen for a reason that is
// not the property: a vote that timed out on a loaded host, a TTL shorter
// than the round that should have fit in it. It is then run again with
// scale doubled, for bodies that derive a time budget from it; after tries
// runs without the shape the test fails, since it could not test anything.
func shape(t *testing.T, tries int, body func(scale int, lost func(format string, args ...any))) {
	t.Helper()
	scale := 1
	for try := 1; ; try++ {
		var why string
		body(scale, func(format string, args ...any) { why = fmt.Sprintf(format, args...) })
		if why == "" || t.Failed() {
			return
		}
		if try == tries {
			t.Fatalf("the set-up did not take its shape in %d tries: %s", tries, why)
		}
		t.Logf("set-up lost its shape (%s); again with scale %d", why, 2*scale)
		scale *= 2
	}
}

// roundTime measures how long an uncontended acquisition and release take
// on these nodes now: the unit the behaviour table derives its TTLs and
// delays from. It is the longest of three.
func (e *env) roundTime(t *testing.T, ctx context.Context) time.Duration {
	t.Helper()
	var longest time.Duration
	for range 3 {
		k := key(t)
		start := time.Now()
		l, err := e.ours.Acquire(ctx, k)
		if err != nil {
			t.Fatalf("measuring a round: %v", err)
		}
		if err := l.Release(ctx); err != nil {
			t.Logf("measuring a round: release: %v", err)
		}
		longest = max(longest, time.Since(start))
	}
	return longest
}
