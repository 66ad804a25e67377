package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
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

// newExternalNode takes a redis:// or rediss:// URL. With rediss:// the
// proxy in front of the node forwards the TLS bytes as they are; the
// clients verify the certificate against the URL's host name, not the
// proxy's address.
func newExternalNode(rawURL string, allowRemote bool) (*externalNode, error) {
	o, err := redis.ParseURL(rawURL)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			// Its message quotes the URL, password included.
			err = errors.New("not a valid URL")
		}
		return nil, fmt.Errorf("cluster: bad URL %q: %w", RedactURL(rawURL), err)
	}
	host, _, err := net.SplitHostPort(o.Addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: URL %q: %w", RedactURL(rawURL), err)
	}
	if !allowRemote && !isLoopback(host) {
		return nil, fmt.Errorf("cluster: URL %q: host %q is not loopback (set Options.AllowNonLoopback)", RedactURL(rawURL), host)
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
	o := x.redisOptions()
	if o.TLSConfig != nil {
		o.TLSConfig = o.TLSConfig.Clone()
	}
	if adjust := x.n.c.opts.ClientOptions; adjust != nil {
		// It may hold the CA of a rediss:// node.
		adjust(o)
		o.Addr = x.addr
	}
	c := redis.NewClient(o)
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

// RedactURL masks the password of a node URL for messages. When the URL
// does not parse, everything between the scheme and the last '@' is masked.
func RedactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	start := 0
	if i := strings.Index(s, "://"); i >= 0 && i < at {
		start = i + len("://")
	}
	return s[:start] + "xxxxx" + s[at:]
}
