package cluster

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/redis/go-redis/v9"
)

// externalNode is a Redis server the cluster does not own: only the proxy
// faults apply.
type externalNode struct {
	n    *Node
	addr string
	opts *redis.Options
}

func newExternalNode(url string, allowRemote bool) (*externalNode, error) {
	o, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("cluster: bad URL %q: %w", url, err)
	}
	if o.TLSConfig != nil {
		return nil, fmt.Errorf("cluster: URL %q: TLS (rediss://) is not supported behind the fault proxy", url)
	}
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: URL %q: %w", url, err)
	}
	if !allowRemote && !isLoopback(host) {
		return nil, fmt.Errorf("cluster: URL %q: host %q is not loopback (set Options.AllowNonLoopback)", url, host)
	}
	return &externalNode{addr: o.Addr, opts: o}, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (x *externalNode) redisOptions() *redis.Options {
	o := *x.opts
	return &o
}

func (x *externalNode) start(ctx context.Context, wipe bool) error {
	c := redis.NewClient(x.redisOptions())
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("external node %s: %w", x.addr, err)
	}
	return x.nodeSetUpstream()
}

func (x *externalNode) nodeSetUpstream() error { return x.n.setUpstream(x.addr) }

func (x *externalNode) kill(context.Context) error   { return x.unsupported(FaultKill) }
func (x *externalNode) stop(context.Context) error   { return x.unsupported(FaultStop) }
func (x *externalNode) pause(context.Context) error  { return x.unsupported(FaultPause) }
func (x *externalNode) resume(context.Context) error { return x.unsupported(FaultPause) }
func (x *externalNode) setClock(context.Context, time.Duration, float64) error {
	return x.unsupported(FaultClockJump)
}
func (x *externalNode) close() error { return nil }

func (x *externalNode) unsupported(f Fault) error {
	return &UnsupportedError{Backend: BackendExternal, Fault: f, Reason: "the cluster does not own external processes"}
}
