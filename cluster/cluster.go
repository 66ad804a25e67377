// Package cluster runs N independent Redis nodes for tests and the lab and
// injects faults into them: kill, clean stop, restart with or without data,
// pause, network partition, latency, connection resets and wall-clock jumps.
//
// Three backends share one API:
//
//   - BackendEmbedded: miniredis servers inside the test process;
//   - BackendDocker: one container per node from the image built by
//     docker/build.sh (or QUORUMLOCK_REDIS_IMAGE);
//   - BackendExternal: existing Redis servers given as redis:// URLs.
//
// Every node sits behind an in-process TCP proxy (toxiproxy used as a
// library) listening on 127.0.0.1, so a node's address stays the same across
// restarts and network faults hit one node and one client side at a time. A
// View is one client side: it has its own proxy per node, so a partition on
// one view leaves the others untouched. The default view serves Clients,
// Addrs and Node.Addr.
//
// Faults per backend (Cluster.Supports answers the same at run time; an
// unsupported fault returns an *UnsupportedError matching ErrUnsupported):
//
//	fault        embedded                         docker                                   external
//	kill         close the miniredis server       SIGKILL                                  unsupported
//	stop         same as kill                     SIGTERM (AOF flushed), SIGKILL after 10s unsupported
//	restart      new server; data kept only for   new container on the same data dir;      unsupported
//	             AOF settings and !WipeData       WipeData empties the dir
//	pause        hold the server's lock           docker pause                             unsupported
//	partition    proxy stops listening            same                                     same
//	blackhole    toxic that eats requests; Heal   same                                     same
//	             closes the connections
//	latency      latency toxic on replies         same                                     same
//	reset        reset_peer toxic (TCP RST)       same                                     same
//	clock-jump   offset clock pushed by SetTime   libfaketime timestamp file               unsupported
//	clock-rate   same clock, scaled               libfaketime "x<rate>" (FAKETIME_XRESET)  unsupported
//	persistence  simulated (see restart)          --appendonly/--appendfsync args          unsupported
//
// On docker, clock faults need libfaketime in the image: the project image
// has it (label org.quorumlock.faketime); an image from
// QUORUMLOCK_REDIS_IMAGE without that label reports them unsupported.
//
// Connections: by default nodes take plain TCP without a password. Docker
// nodes can instead serve TLS only (Options.TLS, certificates made at New:
// Cluster.Certs), require a password (Options.Password) and have ACL users
// (Options.Users); the clients of every view are configured to match, and
// View.ClientsAs logs in as one of the users. The fault proxy forwards
// bytes, so every network fault works the same over TLS. External nodes
// take TLS and credentials from their rediss:// and redis:// URLs.
//
// The package knows nodes, not locks.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Backend names where the nodes run.
type Backend string

// The backends.
const (
	BackendEmbedded Backend = "embedded"
	BackendDocker   Backend = "docker"
	BackendExternal Backend = "external"
)

// Persistence is a node's durability setting.
type Persistence string

// Persistence settings. PersistDefault in StartOptions and RestartOptions
// keeps the node's current setting; in Options it means PersistNone.
const (
	PersistDefault     Persistence = ""
	PersistNone        Persistence = "none"         // no RDB, no AOF: a restart loses everything
	PersistAOFEverySec Persistence = "aof-everysec" // AOF, fsync once a second
	PersistAOFAlways   Persistence = "aof-always"   // AOF, fsync on every write
)

func (p Persistence) valid() bool {
	switch p {
	case PersistDefault, PersistNone, PersistAOFEverySec, PersistAOFAlways:
		return true
	}
	return false
}

// DefaultNodes is the number of nodes when Options.Nodes is 0.
const DefaultNodes = 5

// DefaultViewName is the name of the view behind Clients, Addrs and Node.Addr.
const DefaultViewName = "default"

// Options configure New.
type Options struct {
	Backend Backend
	// Nodes is the number of nodes for the embedded and docker backends
	// (DefaultNodes when 0). The external backend takes one node per URL.
	Nodes int
	// URLs are the nodes of the external backend, redis://[user:pass@]host:port[/db].
	URLs []string
	// AllowNonLoopback lets the external backend use hosts outside
	// 127.0.0.0/8 and ::1. Off by default: tests and the lab stay on loopback.
	AllowNonLoopback bool
	// Image is the docker image, "repository:tag". Default: DefaultImage().
	Image string
	// Persistence is every node's initial setting (PersistNone when empty).
	Persistence Persistence
	// NoClockFaults starts docker nodes without libfaketime preloaded:
	// ClockJump and ClockRate are then unsupported, and Redis reads the real
	// clock directly. Under libfaketime every clock read inside Redis reads
	// the offset file, which makes scripts that call TIME measurably slower;
	// benchmarks set this.
	NoClockFaults bool
	// Label names the cluster in container labels, temp dirs and logs.
	Label string
	// Logf receives progress messages (nil: silent). testing.T.Logf fits.
	Logf func(format string, args ...any)
	// TLS makes docker nodes accept TLS connections only, with certificates
	// made at New (see Certs): clients must trust Cluster.Certs().CertPool,
	// as every client the cluster creates does. External nodes take TLS
	// from their rediss:// URLs instead (use ClientOptions to set the CA).
	TLS bool
	// TLSClientAuth makes TLS docker nodes also require a client
	// certificate signed by the cluster's CA (mutual TLS); the cluster's
	// clients present Certs().ClientCert.
	TLSClientAuth bool
	// Password is the docker nodes' requirepass: the password of Redis'
	// default user. The cluster's clients log in with it. External nodes
	// take credentials from their URLs.
	Password string
	// Users are ACL users created on every docker node besides the default
	// user; View.ClientsAs gives clients logged in as one of them.
	Users []User
	// ClientOptions, when set, adjusts the options of every go-redis client
	// the cluster creates (after the defaults: no retries, context deadlines
	// honoured, 2 s dial timeout, and the TLS and credentials above).
	ClientOptions func(*redis.Options)
	// ReadyTimeout bounds how long a node may take to answer PING after a
	// start (default 30 s).
	ReadyTimeout time.Duration
	// ContainerExpiry is the docker backstop: a container still running this
	// long after its start is stopped by the daemon even if Close never runs
	// (default 30 min). Stale labelled containers of dead processes are also
	// removed at New.
	ContainerExpiry time.Duration
}

// Cluster is a set of nodes plus the views (proxied client sides) on them.
type Cluster struct {
	opts    Options
	id      string
	backend Backend
	nodes   []*Node
	docker  *dockerBackend // nil unless BackendDocker
	certs   *Certs         // nil unless Options.TLS

	mu     sync.Mutex // guards views, closed
	views  map[string]*View
	order  []*View
	def    *View
	closed bool

	closeOnce sync.Once
	closeErr  error
}

// New starts (or, for external, connects to) the nodes and creates the
// default view. On error everything already started is removed.
func New(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Persistence == PersistDefault {
		opts.Persistence = PersistNone
	}
	if !opts.Persistence.valid() {
		return nil, fmt.Errorf("cluster: unknown persistence %q", opts.Persistence)
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	if opts.ContainerExpiry <= 0 {
		opts.ContainerExpiry = 30 * time.Minute
	}
	switch opts.Backend {
	case BackendEmbedded, BackendDocker:
		if opts.Nodes == 0 {
			opts.Nodes = DefaultNodes
		}
		if opts.Nodes < 0 || opts.Nodes > 64 {
			return nil, fmt.Errorf("cluster: node count %d out of range [1,64]", opts.Nodes)
		}
		if len(opts.URLs) > 0 {
			return nil, fmt.Errorf("cluster: URLs are only for the %s backend, not %q", BackendExternal, opts.Backend)
		}
	case BackendExternal:
		if len(opts.URLs) == 0 {
			return nil, errors.New("cluster: the external backend needs at least one URL")
		}
		if opts.Nodes != 0 && opts.Nodes != len(opts.URLs) {
			return nil, fmt.Errorf("cluster: node count %d does not match %d URLs", opts.Nodes, len(opts.URLs))
		}
		opts.Nodes = len(opts.URLs)
	case "":
		return nil, errors.New("cluster: no backend given (embedded, docker or external)")
	default:
		return nil, fmt.Errorf("cluster: unknown backend %q", opts.Backend)
	}

	if err := opts.checkAccess(); err != nil {
		return nil, err
	}

	c := &Cluster{
		opts:    opts,
		id:      newID(opts.Label),
		backend: opts.Backend,
		views:   make(map[string]*View),
	}
	if err := c.startNodes(ctx); err != nil {
		return nil, errors.Join(err, c.Close())
	}
	def, err := c.View(DefaultViewName)
	if err != nil {
		return nil, errors.Join(err, c.Close())
	}
	c.def = def
	return c, nil
}

func (c *Cluster) startNodes(ctx context.Context) error {
	c.nodes = make([]*Node, c.opts.Nodes)
	for i := range c.nodes {
		c.nodes[i] = &Node{c: c, index: i, persistence: c.opts.Persistence, rate: 1}
	}
	switch c.backend {
	case BackendEmbedded:
		for _, n := range c.nodes {
			n.impl = &embeddedNode{n: n}
		}
	case BackendExternal:
		for i, n := range c.nodes {
			e, err := newExternalNode(c.opts.URLs[i], c.opts.AllowNonLoopback)
			if err != nil {
				return err
			}
			e.n = n
			n.impl = e
		}
	case BackendDocker:
		d, err := newDockerBackend(ctx, c)
		if err != nil {
			return err
		}
		c.docker = d
		for _, n := range c.nodes {
			n.impl = &dockerNode{n: n, d: d}
		}
	}
	// Start the nodes concurrently: container start-up dominates.
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.startLocked(ctx, false, PersistDefault)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ID is the cluster's unique id (also the value of the container label
// LabelCluster on the docker backend).
func (c *Cluster) ID() string { return c.id }

// Backend reports where the nodes run.
func (c *Cluster) Backend() Backend { return c.backend }

// Len is the number of nodes.
func (c *Cluster) Len() int { return len(c.nodes) }

// Node returns node i; it panics when i is out of range (see NodeE).
func (c *Cluster) Node(i int) *Node {
	n, err := c.NodeE(i)
	if err != nil {
		panic(err)
	}
	return n
}

// NodeE returns node i or an error naming the bad index.
func (c *Cluster) NodeE(i int) (*Node, error) {
	if i < 0 || i >= len(c.nodes) {
		return nil, fmt.Errorf("cluster: node index %d out of range [0,%d)", i, len(c.nodes))
	}
	return c.nodes[i], nil
}

// Nodes returns every node in index order.
func (c *Cluster) Nodes() []*Node { return append([]*Node(nil), c.nodes...) }

// Clients returns one go-redis client per node, through the default view.
func (c *Cluster) Clients() []redis.UniversalClient { return c.def.Clients() }

// Addrs returns the default view's proxy address per node (host:port).
func (c *Cluster) Addrs() []string { return c.def.Addrs() }

// Certs returns the certificates of a cluster started with Options.TLS,
// nil otherwise.
func (c *Cluster) Certs() *Certs { return c.certs }

// DefaultView is the view behind Clients, Addrs and Node.Addr.
func (c *Cluster) DefaultView() *View { return c.def }

// View returns the view with that name, creating it on first use: a new
// client side with its own proxy (and client) per node.
func (c *Cluster) View(name string) (*View, error) {
	if name == "" {
		return nil, errors.New("cluster: empty view name")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("cluster: closed")
	}
	if v, ok := c.views[name]; ok {
		return v, nil
	}
	v := &View{c: c, name: name}
	for _, n := range c.nodes {
		p, err := newProxy(fmt.Sprintf("%s/%s/%d", c.id, name, n.index), n.upstream())
		if err != nil {
			v.close()
			return nil, fmt.Errorf("cluster: view %q node %d: %w", name, n.index, err)
		}
		v.proxies = append(v.proxies, p)
		v.clients = append(v.clients, c.newClient(p.addr(), n.impl.redisOptions()))
	}
	c.views[name] = v
	c.order = append(c.order, v)
	return v, nil
}

func (c *Cluster) viewsSnapshot() []*View {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*View(nil), c.order...)
}

func (c *Cluster) newClient(addr string, base *redis.Options) *redis.Client {
	o := &redis.Options{}
	if base != nil {
		*o = *base
	}
	o.Addr = addr
	if o.TLSConfig != nil {
		// Every client gets its own: ClientOptions may change it.
		o.TLSConfig = o.TLSConfig.Clone()
	}
	o.MaxRetries = -1
	o.DialTimeout = 2 * time.Second
	o.ContextTimeoutEnabled = true
	o.PoolSize = 16
	if c.opts.ClientOptions != nil {
		c.opts.ClientOptions(o)
	}
	return redis.NewClient(o)
}

func (c *Cluster) logf(format string, args ...any) {
	if c.opts.Logf != nil {
		c.opts.Logf("cluster %s: "+format, append([]any{c.id}, args...)...)
	}
}

// Close closes every client and proxy and removes every node the cluster
// started (containers, embedded servers, temp dirs). It is idempotent.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		views := append([]*View(nil), c.order...)
		c.mu.Unlock()
		var errs []error
		for _, v := range views {
			errs = append(errs, v.close())
		}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, n := range c.nodes {
			if n == nil || n.impl == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := n.close()
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}()
		}
		wg.Wait()
		if c.docker != nil {
			errs = append(errs, c.docker.close())
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}
