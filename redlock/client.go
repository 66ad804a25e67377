package redlock

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/clock"
	"github.com/quorumlock/quorumlock/quorum"
)

// Client acquires locks on a fixed set of independent Redis masters. It is
// safe for concurrent use. The node clients given to New stay the caller's:
// the Client adds no hook to them and never closes them. Hooks the caller
// added see the Client's scripts as commands, except the extensions of
// auto-extended locks that fall due together and release deletes that
// waited for a connection: those go out in pipelines (ProcessPipelineHook).
// A hook that rewrites commands (a key prefix, say) must handle both.
type Client struct {
	nodes    []*node
	every    []int        // every node's index, 0 … len(nodes)-1 (read only)
	cfg      clientConfig // as the options set it; per-lock options start from it
	ns       nodeSettings
	defaults settings // the default lock settings, resolved
	// defaultArgs are settingsArgs of the defaults, boxed once for every
	// request made without lock options.
	defaultArgs *[acquireArgs]any
	// quarantineMs is the restart quarantine in ms, boxed once for the
	// release script (a node grants the key to the queue's head only out of
	// its quarantine).
	quarantineMs any
	clk          clock.Clock
	log          *notes
	queues       keyQueues
	waker        *waker
	keeper       *keeper
	stats        counters
	meters       *meters

	idMu   sync.Mutex
	runIDs map[string]int // server run id → node index, to find one server listed twice

	mu     sync.Mutex
	closed bool
	done   chan struct{} // closed by Close
	calls  tracker       // acquisitions in flight
	// rounds holds one token per acquisition round in flight, as many as
	// the smallest node pool has connections (see admit).
	rounds chan struct{}
	bg     tracker // cleanup that outlives the call that started it
}

// New returns a Client over nodes: independent Redis masters, each a client
// the caller configured (address, pool, TLS, ACL user). Plain clients do:
// the library bounds every request by its node timeout itself.
//
// New checks the options and the nodes: none may be nil, a cluster client
// or a ring (Redlock needs independent masters, and its scripts touch
// several keys), or the same server twice (it would vote twice): the same
// client, or addresses that resolve to the same IP and port. It does not
// contact the nodes, since a minority may be down; at first contact each
// node is asked for its server run id, version and eviction policy, and one
// server reached under two names (a NAT, a proxy) stops voting under the
// second.
func New(nodes []redis.UniversalClient, opts ...Option) (*Client, error) {
	cfg := defaultClientConfig()
	for i, o := range opts {
		if o == nil {
			return nil, fmt.Errorf("redlock: option %d is nil", i)
		}
		o.applyClient(&cfg)
	}
	if cfg.clock == nil {
		return nil, errors.New("redlock: nil clock")
	}
	ns, err := cfg.resolveNodeSettings()
	if err != nil {
		return nil, err
	}
	defaults, err := cfg.lock.resolve(ns)
	if err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, errors.New("redlock: no nodes: need at least one Redis master (three or more to tolerate a failure)")
	}
	c := &Client{
		nodes:    make([]*node, len(nodes)),
		every:    make([]int, len(nodes)),
		cfg:      cfg,
		ns:       ns,
		defaults: defaults,
		clk:      cfg.clock,
		log:      newNotes(cfg.logger),
		runIDs:   make(map[string]int),
		done:     make(chan struct{}),
	}
	for i := range c.every {
		c.every[i] = i
	}
	args := settingsArgs(ns, defaults)
	c.defaultArgs = &args
	c.quarantineMs = ns.quarantine.Milliseconds()
	for i, rdb := range nodes {
		if rdb == nil {
			return nil, fmt.Errorf("redlock: node %d is nil", i)
		}
		switch rdb.(type) {
		case *redis.ClusterClient:
			return nil, fmt.Errorf("redlock: node %d is a Redis Cluster client: Redlock needs independent masters, each its own *redis.Client (a cluster shards keys over masters that are not independent votes)", i)
		case *redis.Ring:
			return nil, fmt.Errorf("redlock: node %d is a Ring client: Redlock needs independent masters, each its own *redis.Client", i)
		}
		for j := 0; j < i; j++ {
			if c.nodes[j].rdb == rdb {
				return nil, fmt.Errorf("redlock: node %d is the same client as node %d: a node listed twice would vote twice", i, j)
			}
		}
		n := &node{index: i, rdb: rdb}
		n.lastAnswer.Store(time.Now().UnixNano())
		slots := 10 * runtime.GOMAXPROCS(0) // go-redis' default pool size
		if rc, ok := rdb.(*redis.Client); ok {
			if size := rc.Options().PoolSize; size > 0 {
				slots = size
			}
			if o := rc.Options(); o.Addr != "FailoverClient" { // Sentinel-managed: known at first contact
				n.addr, n.network = o.Addr, o.Network
			}
		}
		// A quarter of the pool is left to the extensions (see maxBatches)
		// when deletes take every slot.
		n.slots = make(chan struct{}, slots-slots/4)
		c.nodes[i] = n
		if c.rounds == nil || slots < cap(c.rounds) {
			c.rounds = make(chan struct{}, slots)
		}
	}
	if err := c.checkAddresses(); err != nil {
		return nil, err
	}
	switch len(nodes) {
	case 1:
		c.log.warn("few-nodes", "redlock: one node is not Redlock",
			"detail", "a single Redis master is a single point of failure and its restart loses every lock; use three or more independent masters")
	case 2:
		c.log.warn("few-nodes", "redlock: two nodes tolerate no failure",
			"detail", "a majority of two is both: either node down stops every lock; use three or more independent masters")
	}
	if err := c.initMetrics(cfg.meters); err != nil {
		return nil, fmt.Errorf("redlock: metrics: %w", err)
	}
	c.waker = newWaker(c)
	c.keeper = newKeeper(c)
	return c, nil
}

// checkAddresses refuses two nodes whose addresses name the same server:
// 127.0.0.1:6379 and localhost:6379, say. Host names are resolved (within a
// second); one that does not resolve is compared by name.
func (c *Client) checkAddresses() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	seen := make(map[string]int)
	for _, n := range c.nodes {
		if n.addr == "" {
			continue
		}
		for _, id := range endpoints(ctx, n.network, n.addr) {
			if j, dup := seen[id]; dup && j != n.index {
				return fmt.Errorf("redlock: node %d (%s) is the same server as node %d (%s): a node listed twice would vote twice",
					n.index, n.addr, j, c.nodes[j].addr)
			}
			seen[id] = n.index
		}
	}
	return nil
}

// endpoints lists the network endpoints an address stands for.
func endpoints(ctx context.Context, network, addr string) []string {
	if network == "unix" {
		return []string{"unix " + addr}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return []string{strings.ToLower(addr)}
	}
	if ip := net.ParseIP(host); ip != nil {
		return []string{net.JoinHostPort(ip.String(), port)}
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		return []string{strings.ToLower(addr)}
	}
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = net.JoinHostPort(ip.IP.String(), port)
	}
	return out
}

// Len returns the number of nodes.
func (c *Client) Len() int { return len(c.nodes) }

// Quorum returns the number of nodes that make a majority.
func (c *Client) Quorum() int { return quorum.Majority(len(c.nodes)) }

// Close ends the Client: waiting acquisitions return at once with an error
// matching ErrClosed, and no acquisition returns a lock after Close returned.
// It stops auto-extension and the release subscriptions, and waits for the
// cleanup still under way (each delete bounded by its request timeout, and
// its wait for a free connection by the lock's validity). Locks already
// held stay valid until released or until their validity ends.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	c.mu.Unlock()
	c.calls.wait()
	c.keeper.stop()
	err := c.waker.close()
	c.bg.wait()
	return errors.Join(err, c.meters.reg.Unregister())
}

// enter registers an acquisition; false when the Client is closed.
func (c *Client) enter() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.calls.add(1)
	return true
}

func (c *Client) isClosed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// background runs f as cleanup owned by the Client: Close waits for it.
func (c *Client) background(f func()) {
	c.bg.add(1)
	go func() {
		defer c.bg.done()
		f()
	}()
}

// newToken returns a random token: 128 bits, URL-safe base64.
func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// orBackground treats a nil ctx as context.Background.
func orBackground(ctx context.Context) context.Context {
	if ctx == nil {
		return context.Background()
	}
	return ctx
}

// tracker counts work in flight and lets Close wait until none is left. Unlike
// sync.WaitGroup it may be added to while someone waits.
type tracker struct {
	n    atomic.Int64
	mu   sync.Mutex
	idle chan struct{} // non-nil while someone waits
}

func (t *tracker) add(d int) { t.n.Add(int64(d)) }

func (t *tracker) done() {
	if t.n.Add(-1) != 0 {
		return
	}
	t.mu.Lock()
	if t.idle != nil && t.n.Load() == 0 {
		close(t.idle)
		t.idle = nil
	}
	t.mu.Unlock()
}

func (t *tracker) wait() {
	t.mu.Lock()
	if t.n.Load() == 0 {
		t.mu.Unlock()
		return
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	ch := t.idle
	t.mu.Unlock()
	<-ch
}

// node is one Redis master as the Client sees it.
type node struct {
	index   int
	addr    string // "" when unknown (Sentinel-managed)
	network string
	rdb     redis.UniversalClient

	// A node that hangs must not collect calls without bound: a client
	// without ContextTimeoutEnabled keeps each call until its read
	// timeout, whatever the ctx says. Once maxPending calls are under way
	// and the node has answered nothing for a request timeout, further
	// calls fail at once.
	pending    atomic.Int32
	lastAnswer atomic.Int64 // unix ns

	votes [numOutcomes]atomic.Uint64 // acquisition votes by outcome

	// slots hold one token per release delete (or pipeline of deletes)
	// under way, as many as three quarters of the client's pool has
	// connections: deletes beyond them wait here, where
	// the wait is bounded by the lock's validity, rather than in the pool,
	// where it would count against the request timeout (see deleteOn).
	slots chan struct{}
	// delQ holds the deletes waiting for a slot, sent together in
	// pipelines by one flushing goroutine while any wait (see deleteOn).
	delMu       sync.Mutex
	delQ        []*queuedDelete
	delFlushing bool

	// First contact: the server's identity and configuration are checked
	// once per server process.
	probed atomic.Bool
	mu     sync.Mutex
	runID  string
	fatal  error // the node must not vote (same server as another node, too old)
}

const maxPending = 16

var errNotAnswering = fmt.Errorf("not answering: %d requests outstanding and no answer within the request timeout", maxPending)

// start registers a call to the node, or refuses it when the node hangs
// (see maxPending); finish must follow a successful start.
func (n *node) start(silence time.Duration) error {
	if n.silent(silence) {
		return errNotAnswering
	}
	n.pending.Add(1)
	return nil
}

// silent reports whether the node looks hung: maxPending calls under way
// and no answer for silence.
func (n *node) silent(silence time.Duration) bool {
	return n.pending.Load() >= maxPending && time.Since(time.Unix(0, n.lastAnswer.Load())) > silence
}

// finish ends a call; err is its outcome. Any reply from the server, an
// error reply included, counts as an answer.
func (n *node) finish(err error) {
	n.pending.Add(-1)
	if err == nil || isReply(err) {
		n.lastAnswer.Store(time.Now().UnixNano())
	}
}

// isReply reports whether err is an error reply from the server.
func isReply(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr)
}

// label names the node in messages: "node 2 (10.0.0.3:6379)".
func (n *node) label() string {
	if n.addr == "" {
		return "node " + strconv.Itoa(n.index)
	}
	return "node " + strconv.Itoa(n.index) + " (" + n.addr + ")"
}

func (c *Client) nodeError(i int, reason NodeReason, wait time.Duration, err error) *NodeError {
	return &NodeError{Node: i, Addr: c.nodes[i].addr, Reason: reason, Wait: wait, Err: err}
}
