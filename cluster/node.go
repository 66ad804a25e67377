package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// StartOptions configure Node.Start.
type StartOptions struct {
	// WipeData starts the node with an empty data set.
	WipeData bool
	// Persistence replaces the node's setting (PersistDefault keeps it).
	Persistence Persistence
}

// RestartOptions configure Node.Restart.
type RestartOptions struct {
	// WipeData throws the node's data away before it starts again. On the
	// docker backend this is how to emulate the loss of the last second of
	// AOF-everysec writes: docker kill keeps the page cache, so nothing
	// would be lost otherwise.
	WipeData bool
	// Delay keeps the node down (connections refused) this long before it
	// starts again.
	Delay time.Duration
	// Persistence replaces the node's setting (PersistDefault keeps it).
	Persistence Persistence
}

// nodeImpl is what a backend does for one node. Calls are serialised by
// Node.opMu.
type nodeImpl interface {
	start(ctx context.Context, wipe bool) error // sets the upstream via Node.setUpstream
	kill(ctx context.Context) error
	stop(ctx context.Context) error
	pause(ctx context.Context) error
	resume(ctx context.Context) error
	setClock(ctx context.Context, offset time.Duration, rate float64) error
	redisOptions() *redis.Options // auth and db for the clients; nil: none
	close() error
}

// Node is one Redis node of a cluster.
type Node struct {
	c     *Cluster
	index int
	impl  nodeImpl

	opMu sync.Mutex // serialises faults on this node

	mu          sync.Mutex // guards the fields below
	up          string
	running     bool
	paused      bool
	persistence Persistence
	offset      time.Duration
	rate        float64
	closed      bool
}

// Index is the node's position in the cluster.
func (n *Node) Index() int { return n.index }

// Addr is the node's address in the default view (its proxy). It stays the
// same across restarts.
func (n *Node) Addr() string { return n.c.def.proxies[n.index].addr() }

// Client is the node's go-redis client in the default view.
func (n *Node) Client() *redis.Client { return n.c.def.clients[n.index] }

// Persistence is the node's current durability setting.
func (n *Node) Persistence() Persistence {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.persistence
}

// ClockOffset is the cumulative clock jump applied with ClockJump.
func (n *Node) ClockOffset() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.offset
}

// Running reports whether the node process is up (paused counts as up).
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running
}

func (n *Node) upstream() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.up
}

// setUpstream records the node's real address and re-points every view's
// proxy at it.
func (n *Node) setUpstream(addr string) error {
	n.mu.Lock()
	changed := n.up != addr
	n.up = addr
	n.mu.Unlock()
	if !changed {
		return nil
	}
	var errs []error
	for _, v := range n.c.viewsSnapshot() {
		errs = append(errs, v.proxies[n.index].setUpstream(addr))
	}
	return errors.Join(errs...)
}

func (n *Node) setRunning(running bool) {
	n.mu.Lock()
	n.running = running
	if !running {
		n.paused = false
	}
	n.mu.Unlock()
}

func (n *Node) begin(f Fault) error {
	if err := n.c.Unsupported(f); err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return fmt.Errorf("cluster: node %d: cluster closed", n.index)
	}
	return nil
}

// Kill sends SIGKILL (embedded: closes the server). Connections fail at
// once; data not yet on disk is lost. Killing a node that is down is a no-op.
func (n *Node) Kill(ctx context.Context) error {
	if err := n.begin(FaultKill); err != nil {
		return err
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	return n.killLocked(ctx)
}

func (n *Node) killLocked(ctx context.Context) error {
	if !n.Running() {
		return nil
	}
	if err := n.impl.kill(ctx); err != nil {
		return fmt.Errorf("cluster: kill node %d: %w", n.index, err)
	}
	n.setRunning(false)
	n.c.logf("node %d killed", n.index)
	return nil
}

// Stop shuts the node down cleanly (SIGTERM: AOF is flushed).
func (n *Node) Stop(ctx context.Context) error {
	if err := n.begin(FaultStop); err != nil {
		return err
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if !n.Running() {
		return nil
	}
	if err := n.impl.stop(ctx); err != nil {
		return fmt.Errorf("cluster: stop node %d: %w", n.index, err)
	}
	n.setRunning(false)
	n.c.logf("node %d stopped", n.index)
	return nil
}

// Start starts a node that was killed or stopped and waits until it answers.
func (n *Node) Start(ctx context.Context, opts StartOptions) error {
	if err := n.begin(FaultRestart); err != nil {
		return err
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if n.Running() {
		return fmt.Errorf("cluster: node %d is running; Kill or Stop it first", n.index)
	}
	return n.startLocked(ctx, opts.WipeData, opts.Persistence)
}

func (n *Node) startLocked(ctx context.Context, wipe bool, p Persistence) error {
	if !p.valid() {
		return fmt.Errorf("cluster: unknown persistence %q", p)
	}
	if p != PersistDefault {
		if p != n.Persistence() {
			if err := n.c.Unsupported(FaultPersistence); err != nil {
				return err
			}
		}
		n.mu.Lock()
		n.persistence = p
		n.mu.Unlock()
	}
	if err := n.impl.start(ctx, wipe); err != nil {
		return fmt.Errorf("cluster: start node %d: %w", n.index, err)
	}
	n.setRunning(true)
	n.c.logf("node %d started (wipe=%v persistence=%s)", n.index, wipe, n.Persistence())
	return nil
}

// Restart kills the node (SIGKILL), optionally wipes its data, keeps it down
// for opts.Delay and starts it again, waiting until it answers.
func (n *Node) Restart(ctx context.Context, opts RestartOptions) error {
	if err := n.begin(FaultRestart); err != nil {
		return err
	}
	if opts.Delay < 0 {
		return fmt.Errorf("cluster: negative restart delay %v", opts.Delay)
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	if err := n.killLocked(ctx); err != nil {
		return err
	}
	if opts.Delay > 0 {
		t := time.NewTimer(opts.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("cluster: restart node %d: %w", n.index, ctx.Err())
		}
	}
	return n.startLocked(ctx, opts.WipeData, opts.Persistence)
}

// Pause freezes the node: connections stay open, commands hang until Resume
// (docker pause; embedded: the server's lock is held).
func (n *Node) Pause(ctx context.Context) error {
	if err := n.begin(FaultPause); err != nil {
		return err
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	n.mu.Lock()
	running, paused := n.running, n.paused
	n.mu.Unlock()
	if !running {
		return fmt.Errorf("cluster: pause node %d: node is down", n.index)
	}
	if paused {
		return nil
	}
	if err := n.impl.pause(ctx); err != nil {
		return fmt.Errorf("cluster: pause node %d: %w", n.index, err)
	}
	n.mu.Lock()
	n.paused = true
	n.mu.Unlock()
	n.c.logf("node %d paused", n.index)
	return nil
}

// Resume undoes Pause; queued commands are then served.
func (n *Node) Resume(ctx context.Context) error {
	if err := n.begin(FaultPause); err != nil {
		return err
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	n.mu.Lock()
	paused := n.paused
	n.mu.Unlock()
	if !paused {
		return nil
	}
	if err := n.impl.resume(ctx); err != nil {
		return fmt.Errorf("cluster: resume node %d: %w", n.index, err)
	}
	n.mu.Lock()
	n.paused = false
	n.mu.Unlock()
	n.c.logf("node %d resumed", n.index)
	return nil
}

func (n *Node) eachView(f func(v *View) error) error {
	var errs []error
	for _, v := range n.c.viewsSnapshot() {
		errs = append(errs, f(v))
	}
	return errors.Join(errs...)
}

// Partition cuts the node off every view (connections refused) until Heal.
func (n *Node) Partition(ctx context.Context) error {
	return n.eachView(func(v *View) error { return v.Partition(ctx, n.index) })
}

// Blackhole makes the node swallow requests from every view until Heal.
func (n *Node) Blackhole(ctx context.Context) error {
	return n.eachView(func(v *View) error { return v.Blackhole(ctx, n.index) })
}

// Heal undoes Partition, Blackhole and Reset on every view.
func (n *Node) Heal(ctx context.Context) error {
	return n.eachView(func(v *View) error { return v.Heal(ctx, n.index) })
}

// Latency delays the node's replies on every view; Latency(ctx, 0, 0)
// removes it.
func (n *Node) Latency(ctx context.Context, delay, jitter time.Duration) error {
	return n.eachView(func(v *View) error { return v.Latency(ctx, n.index, delay, jitter) })
}

// ClearLatency is Latency(ctx, 0, 0).
func (n *Node) ClearLatency(ctx context.Context) error { return n.Latency(ctx, 0, 0) }

// Reset makes the node's connections on every view end with a TCP RST on
// their next request, until Heal.
func (n *Node) Reset(ctx context.Context) error {
	return n.eachView(func(v *View) error { return v.Reset(ctx, n.index) })
}

// ClockJump moves the node's wall clock by d (cumulative over calls; d may
// be negative). Keys whose TTL is ≤ the jump expire and TIME reports the
// jumped time. The monotonic clock is left alone.
func (n *Node) ClockJump(ctx context.Context, d time.Duration) error {
	if err := n.begin(FaultClockJump); err != nil {
		return err
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	n.mu.Lock()
	n.offset += d
	offset, rate := n.offset, n.rate
	n.mu.Unlock()
	if err := n.impl.setClock(ctx, offset, rate); err != nil {
		return fmt.Errorf("cluster: clock jump %v on node %d: %w", d, n.index, err)
	}
	n.c.logf("node %d clock offset now %v", n.index, offset)
	return nil
}

// ClockRate makes the node's wall clock run r times as fast as the real one
// from now on (r > 0; 1 is normal speed). The docker backend relies on
// libfaketime's FAKETIME_XRESET smoothing for the transition.
func (n *Node) ClockRate(ctx context.Context, r float64) error {
	if err := n.begin(FaultClockRate); err != nil {
		return err
	}
	if !(r > 0) || r > 1000 {
		return fmt.Errorf("cluster: clock rate %v out of range (0,1000]", r)
	}
	n.opMu.Lock()
	defer n.opMu.Unlock()
	n.mu.Lock()
	n.rate = r
	offset := n.offset
	n.mu.Unlock()
	if err := n.impl.setClock(ctx, offset, r); err != nil {
		return fmt.Errorf("cluster: clock rate %v on node %d: %w", r, n.index, err)
	}
	return nil
}

func (n *Node) close() error {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	n.opMu.Lock()
	defer n.opMu.Unlock()
	return n.impl.close()
}

func (n *Node) pausedNow() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.paused
}
