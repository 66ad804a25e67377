// Package bench measures quorumlock's redlock against go-redsync/redsync v4
// and against a raw floor on the same Redis nodes, in the same process. The
// go benchmarks in integration/ and `quorumlock bench` share this code, so
// the figures of one are the figures of the other.
//
// The raw floor is what any Redlock must pay: SET NX PX on every node at
// once, then a token-checked delete on every node at once, with no retry,
// validity math or error reporting.
//
// The package knows nothing about how the nodes were started: the caller
// passes one go-redis client per node and, for the slow-node figure, a
// function that adds latency to one node.
package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/lab/redsyncadapter"
	"github.com/quorumlock/quorumlock/redlock"
)

// Env is the set of nodes a benchmark runs on.
type Env struct {
	// Clients has one client per node. The benchmark makes its own copies
	// (same options, a pool large enough for the throughput figure) and
	// leaves these to the caller.
	Clients []*redis.Client
	// Latency adds delay to every reply of node i (0 removes it). Nil
	// skips the slow-node figure.
	Latency func(ctx context.Context, i int, delay time.Duration) error
	// Label names the nodes in the report ("docker", "embedded", ...).
	Label string
}

// Nodes is an Env opened for measuring: the benchmark's own clients and the
// three contenders built on them. Close it when done.
type Nodes struct {
	env     Env
	Clients []redis.UniversalClient
	Ours    *redlock.Client // defaults, shared by every goroutine
	Fenced  *redlock.Client // WithFencing(true)
	Redsync *redsync.Redsync
	Raw     *Raw
	prefix  string
	closers []func() error
}

// poolSize lets the throughput figure's goroutines each have a connection
// per node, so that the pool is not what is measured.
const poolSize = 128

// Open copies env's clients, builds the contenders and declares the nodes
// freshly deployed (redlock.Client.Bootstrap) so that their restart
// quarantine does not hide the figures.
func Open(ctx context.Context, env Env) (*Nodes, error) {
	if len(env.Clients) == 0 {
		return nil, errors.New("bench: no nodes")
	}
	n := &Nodes{env: env, prefix: "bench:" + strconv.FormatUint(rand.Uint64(), 36) + ":"}
	for _, c := range env.Clients {
		o := cloneOptions(c.Options())
		o.PoolSize = max(c.Options().PoolSize, poolSize)
		rc := redis.NewClient(o)
		n.closers = append(n.closers, rc.Close)
		n.Clients = append(n.Clients, rc)
	}
	var err error
	if n.Ours, err = n.NewClient(); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	if n.Fenced, err = n.NewClient(redlock.WithFencing(true)); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	if err := n.Ours.Bootstrap(ctx); err != nil {
		return nil, errors.Join(fmt.Errorf("bench: bootstrap: %w", err), n.Close())
	}
	n.Redsync = redsyncadapter.New(n.Clients)
	n.Raw = NewRaw(n.Clients, redlock.DefaultTTL)
	return n, nil
}

// NewClient returns a redlock.Client on the nodes, closed with n.
func (n *Nodes) NewClient(opts ...redlock.Option) (*redlock.Client, error) {
	c, err := redlock.New(n.Clients, opts...)
	if err != nil {
		return nil, err
	}
	n.closers = append(n.closers, c.Close)
	return c, nil
}

// OwnConnections returns new go-redis clients to the nodes, with the
// options (pool size included) of the Env's clients, closed with n: the
// connections of one more process.
func (n *Nodes) OwnConnections() []redis.UniversalClient {
	var out []redis.UniversalClient
	for _, c := range n.env.Clients {
		o := cloneOptions(c.Options())
		rc := redis.NewClient(o)
		n.closers = append(n.closers, rc.Close)
		out = append(out, rc)
	}
	return out
}

// NewProcessClient returns a redlock.Client on connections of its own (see
// OwnConnections), as another process would have, closed with n.
func (n *Nodes) NewProcessClient(opts ...redlock.Option) (*redlock.Client, []redis.UniversalClient, error) {
	conns := n.OwnConnections()
	c, err := redlock.New(conns, opts...)
	if err != nil {
		return nil, nil, err
	}
	n.closers = append(n.closers, c.Close)
	return c, conns, nil
}

// Key returns a key unique to this run.
func (n *Nodes) Key(parts ...string) string {
	k := n.prefix
	for i, p := range parts {
		if i > 0 {
			k += ":"
		}
		k += p
	}
	return k
}

// Keys returns count distinct keys unique to this run, for benchmarks that
// must not build a key inside the timed loop.
func (n *Nodes) Keys(name string, count int) []string {
	keys := make([]string, count)
	for i := range keys {
		keys[i] = n.Key(name, strconv.Itoa(i))
	}
	return keys
}

// Close closes what Open created, the redlock clients first (they use the
// node clients), in reverse order.
func (n *Nodes) Close() error {
	var errs []error
	for i := len(n.closers) - 1; i >= 0; i-- {
		errs = append(errs, n.closers[i]())
	}
	n.closers = nil
	return errors.Join(errs...)
}

// ClusterEnv is the Env of a cluster's default view: its clients, and
// latency through its proxies.
func ClusterEnv(c *cluster.Cluster) Env {
	env := Env{Label: string(c.Backend())}
	for _, u := range c.Clients() {
		env.Clients = append(env.Clients, u.(*redis.Client))
	}
	env.Latency = func(ctx context.Context, i int, delay time.Duration) error {
		return c.Node(i).Latency(ctx, delay, 0)
	}
	return env
}

// cloneOptions copies what identifies a node and how to reach it. Copying
// the whole struct would share go-redis's internal state between clients.
func cloneOptions(o *redis.Options) *redis.Options {
	return &redis.Options{
		Network: o.Network, Addr: o.Addr, ClientName: o.ClientName,
		Username: o.Username, Password: o.Password, CredentialsProvider: o.CredentialsProvider, DB: o.DB,
		Protocol: o.Protocol, TLSConfig: o.TLSConfig,
		DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
		MaxRetries: o.MaxRetries, PoolSize: o.PoolSize,
		ContextTimeoutEnabled: true,
		// Off, not auto: in auto mode, connections dialled at once race
		// inside go-redis on the fallback when a node refuses the
		// handshake (miniredis does), and nothing here uses it.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
}

// Warm opens conns connections to every node and returns them to the pool,
// so that a figure does not measure a storm of dials. Under such a storm a
// lock library with a per-node timeout (400 ms by default for both)
// gives up on connections still being dialled and never fills its pool,
// while a raw loop without timeout does: the figures would compare dial
// behaviour, not locking.
func (n *Nodes) Warm(ctx context.Context, conns int) error {
	return warm(ctx, n.Clients, min(conns, poolSize))
}

// warm opens conns connections to every node through clients (each
// client's pool size at most) and returns them to the pools.
func warm(ctx context.Context, clients []redis.UniversalClient, conns int) error {
	var errs []error
	for _, c := range clients {
		rc := c.(*redis.Client)
		k := min(conns, rc.Options().PoolSize)
		if k <= 0 {
			k = conns
		}
		errs = append(errs, warmOne(ctx, rc, k))
	}
	return errors.Join(errs...)
}

func warmOne(ctx context.Context, c *redis.Client, conns int) error {
	errs := make([]error, conns)
	var wg sync.WaitGroup
	{
		held := make([]*redis.Conn, conns)
		for j := range held {
			held[j] = c.Conn()
		}
		for j, cn := range held {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[j] = cn.Ping(ctx).Err()
			}()
		}
		wg.Wait()
		for _, cn := range held {
			_ = cn.Close()
		}
	}
	return errors.Join(errs...)
}

// Latency adds delay to node i's replies (0 removes it), when the Env can.
func (n *Nodes) Latency(ctx context.Context, i int, delay time.Duration) error {
	if n.env.Latency == nil {
		return errors.New("bench: these nodes have no latency injection")
	}
	return n.env.Latency(ctx, i, delay)
}
