package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// View is one client side of the cluster: its own proxy and go-redis client
// per node. Network faults on a view (Partition, Blackhole, Latency, Reset)
// affect only the clients of that view.
type View struct {
	c       *Cluster
	name    string
	proxies []*proxy
	clients []*redis.Client

	mu    sync.Mutex // guards users, closed
	users map[string][]*redis.Client
	// closed: clients made after close would never be closed
	closed bool
}

// Name is the view's name.
func (v *View) Name() string { return v.name }

// Clients returns one go-redis client per node, through this view's proxies.
func (v *View) Clients() []redis.UniversalClient {
	out := make([]redis.UniversalClient, len(v.clients))
	for i, c := range v.clients {
		out[i] = c
	}
	return out
}

// Client returns the client of node i in this view.
func (v *View) Client(i int) (*redis.Client, error) {
	if err := v.check(i); err != nil {
		return nil, err
	}
	return v.clients[i], nil
}

// ClientsAs returns one go-redis client per node, through this view's
// proxies, logged in as the ACL user name (one of Options.Users) and with
// the same TLS configuration as Clients. The clients are made on the first
// call and closed with the cluster.
func (v *View) ClientsAs(name string) ([]redis.UniversalClient, error) {
	u, ok := v.c.opts.user(name)
	if !ok {
		return nil, fmt.Errorf("cluster: no user %q in Options.Users", name)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil, errors.New("cluster: closed")
	}
	cs, ok := v.users[name]
	if !ok {
		for i, p := range v.proxies {
			o := &redis.Options{}
			if base := v.c.nodes[i].impl.redisOptions(); base != nil {
				*o = *base
			}
			o.Username, o.Password = u.Name, u.Password
			cs = append(cs, v.c.newClient(p.addr(), o))
		}
		if v.users == nil {
			v.users = make(map[string][]*redis.Client)
		}
		v.users[name] = cs
	}
	out := make([]redis.UniversalClient, len(cs))
	for i, c := range cs {
		out[i] = c
	}
	return out, nil
}

// Addrs returns this view's proxy address per node (host:port).
func (v *View) Addrs() []string {
	out := make([]string, len(v.proxies))
	for i, p := range v.proxies {
		out[i] = p.addr()
	}
	return out
}

func (v *View) check(i int) error {
	if i < 0 || i >= len(v.proxies) {
		return fmt.Errorf("cluster: node index %d out of range [0,%d)", i, len(v.proxies))
	}
	return nil
}

// Partition cuts node i off this view: its proxy stops listening and closes
// open connections, so clients get "connection refused" until Heal.
func (v *View) Partition(ctx context.Context, i int) error {
	if err := v.check(i); err != nil {
		return err
	}
	v.proxies[i].disable()
	v.c.logf("view %s: node %d partitioned", v.name, i)
	return nil
}

// Blackhole makes node i swallow every request from this view without an
// answer (connections stay open, commands time out) until Heal.
func (v *View) Blackhole(ctx context.Context, i int) error {
	if err := v.check(i); err != nil {
		return err
	}
	return v.proxies[i].blackhole()
}

// Heal undoes Partition, Blackhole and Reset on node i for this view.
// Latency stays until Latency(ctx, i, 0, 0).
func (v *View) Heal(ctx context.Context, i int) error {
	if err := v.check(i); err != nil {
		return err
	}
	return v.proxies[i].heal(ctx)
}

// Latency delays every reply of node i to this view by delay ± jitter
// (rounded up to whole milliseconds). Latency(ctx, i, 0, 0) removes it.
func (v *View) Latency(ctx context.Context, i int, delay, jitter time.Duration) error {
	if err := v.check(i); err != nil {
		return err
	}
	return v.proxies[i].latency(ctx, delay, jitter)
}

// Reset makes every connection of this view to node i end with a TCP RST on
// its next request, until Heal.
func (v *View) Reset(ctx context.Context, i int) error {
	if err := v.check(i); err != nil {
		return err
	}
	return v.proxies[i].reset()
}

func (v *View) close() error {
	var errs []error
	for _, c := range v.clients {
		errs = append(errs, c.Close())
	}
	v.mu.Lock()
	v.closed = true
	users := v.users
	v.users = nil
	v.mu.Unlock()
	for _, cs := range users {
		for _, c := range cs {
			errs = append(errs, c.Close())
		}
	}
	for _, p := range v.proxies {
		p.close()
	}
	return errors.Join(errs...)
}
