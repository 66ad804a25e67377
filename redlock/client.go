package redlock

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/clock"
	"github.com/quorumlock/quorumlock/quorum"
)

// Client acquires locks on a fixed set of independent Redis masters. It is
// safe for concurrent use. Close it to stop its release subscriptions; the
// node clients given to New stay the caller's to close.
type Client struct {
	nodes    []node
	defaults settings
	// bootTimeout bounds each node's request in Bootstrap.
	bootTimeout time.Duration
	clk         clock.Clock
	log         *slog.Logger
	queues      keyQueues
	waker       *waker
	stats       counters
	closed      atomic.Bool
}

type node struct {
	index   int
	addr    string
	rdb     redis.UniversalClient
	restart *restartState
}

// New returns a Client over nodes, independent Redis masters that the caller
// has configured (address, pool, TLS). It checks the options and that no node
// is nil or given twice (a node listed twice would count twice towards a
// majority). It does not contact the nodes: a minority may be down.
//
// New installs a hook on each node client that counts new connections (a
// restart shows as one; see the restart quarantine).
//
// Each *redis.Client must have Options.ContextTimeoutEnabled set: without it
// go-redis bounds a request by its ReadTimeout only, so the per-node timeout
// of the algorithm would not apply.
func New(nodes []redis.UniversalClient, opts ...Option) (*Client, error) {
	if len(nodes) == 0 {
		return nil, errors.New("redlock: no nodes: need at least one Redis master")
	}
	cfg := clientConfig{lock: defaultSettings(), clock: clock.Real{}}
	for _, o := range opts {
		if o == nil {
			return nil, errors.New("redlock: nil option")
		}
		o.applyClient(&cfg)
	}
	if cfg.clock == nil {
		return nil, errors.New("redlock: nil clock")
	}
	resolved, err := cfg.lock.resolve()
	if err != nil {
		return nil, err
	}
	c := &Client{
		nodes:    make([]node, len(nodes)),
		defaults: cfg.lock,
		// Not on any hot path: allow for a first connection on a busy host.
		bootTimeout: max(resolved.nodeTimeout, time.Second),
		clk:         cfg.clock,
		log:         cfg.logger,
	}
	seenAddr := make(map[string]int, len(nodes))
	for i, rdb := range nodes {
		if rdb == nil {
			return nil, fmt.Errorf("redlock: node %d is nil", i)
		}
		for j := 0; j < i; j++ {
			if c.nodes[j].rdb == rdb {
				return nil, fmt.Errorf("redlock: node %d is the same client as node %d", i, j)
			}
		}
		if rc, ok := rdb.(*redis.Client); ok && !rc.Options().ContextTimeoutEnabled {
			return nil, fmt.Errorf("redlock: node %d (%s) has ContextTimeoutEnabled off: go-redis would ignore the per-node timeout; set redis.Options.ContextTimeoutEnabled = true", i, rc.Options().Addr)
		}
		addr := nodeAddr(rdb)
		if addr != "" {
			if j, dup := seenAddr[addr]; dup {
				return nil, fmt.Errorf("redlock: node %d (%s) is the same node as node %d: a node listed twice would vote twice", i, addr, j)
			}
			seenAddr[addr] = i
		}
		c.nodes[i] = node{index: i, addr: addr, rdb: rdb, restart: &restartState{}}
	}
	for i := range c.nodes {
		c.nodes[i].rdb.AddHook(dialCounter{c.nodes[i].restart})
	}
	c.waker = newWaker(c)
	return c, nil
}

// nodeAddr returns the address of a single-node client, "" when the client is
// of another kind (its identity is then its pointer).
func nodeAddr(rdb redis.UniversalClient) string {
	if c, ok := rdb.(*redis.Client); ok {
		return c.Options().Addr
	}
	return ""
}

// Len returns the number of nodes.
func (c *Client) Len() int { return len(c.nodes) }

// Quorum returns the number of nodes that make a majority.
func (c *Client) Quorum() int { return quorum.Majority(len(c.nodes)) }

// Close stops the client's release subscriptions. Locks already held stay
// held until released or expired; acquisitions after Close fail with
// ErrClosed.
func (c *Client) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	return c.waker.close()
}

// Bootstrap declares the nodes freshly deployed: on every node that has no
// sentinel yet it writes one dated long ago, so that the node votes at once
// instead of serving a restart quarantine of one TTL. Call it only for nodes
// that have never held a lock (a new deployment, a test); calling it after a
// node lost its data defeats the quarantine. It returns the errors of the
// nodes it could not reach, each a *NodeError.
func (c *Client) Bootstrap(ctx context.Context) error {
	r := quorum.StartNeed(ctx, len(c.nodes), len(c.nodes), c.bootTimeout, func(ctx context.Context, i int) (struct{}, bool, error) {
		n := &c.nodes[i]
		if err := n.rdb.SetNX(ctx, SentinelKey, 0, 0).Err(); err != nil {
			return struct{}{}, false, err
		}
		seen := n.restart.dials.Load()
		runID, _, err := serverInfo(ctx, n.rdb)
		switch {
		case errors.Is(err, errNoInfo):
			n.restart.noInfo.Store(true)
			return struct{}{}, true, nil
		case err != nil:
			return struct{}{}, false, err
		}
		if err := n.rdb.Set(ctx, RunIDKey, runID, 0).Err(); err != nil {
			return struct{}{}, false, err
		}
		n.restart.checked.Store(seen)
		return struct{}{}, true, nil
	})
	var errs []error
	for _, v := range r.Wait() {
		if v.Err != nil {
			errs = append(errs, c.nodeError(v.Node, v.Err))
		}
	}
	return errors.Join(errs...)
}

func (c *Client) nodeError(i int, err error) *NodeError {
	return &NodeError{Node: i, Addr: c.nodes[i].addr, Err: err}
}

// newToken returns a random token: 128 bits, URL-safe base64.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func (c *Client) logWarn(msg string, args ...any) {
	if c.log != nil {
		c.log.Warn(msg, args...)
	}
}

// Stats are counters since the Client was created.
type Stats struct {
	Acquired         uint64 // locks obtained
	Attempts         uint64 // acquisition attempts (rounds)
	VotesTaken       uint64 // node votes refused because another owner held the key
	VotesQuarantined uint64 // node votes refused by the restart quarantine
	VotesSkewed      uint64 // node votes refused by the clock-skew guard
	VotesFailed      uint64 // node requests that failed or timed out
	Extended         uint64 // successful extensions
	Released         uint64 // successful releases
	Lost             uint64 // locks lost while held (expired, extension refused)
}

type counters struct {
	acquired, attempts, taken, quarantined, skewed, failed, extended, released, lost atomic.Uint64
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{
		Acquired: s.acquired.Load(), Attempts: s.attempts.Load(),
		VotesTaken: s.taken.Load(), VotesQuarantined: s.quarantined.Load(), VotesSkewed: s.skewed.Load(),
		VotesFailed: s.failed.Load(), Extended: s.extended.Load(), Released: s.released.Load(), Lost: s.lost.Load(),
	}
}
