package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/Shopify/toxiproxy/v2/toxics"
	"github.com/rs/zerolog"
)

// proxy is one in-process toxiproxy proxy on 127.0.0.1 in front of one node
// for one view. Disabled = partitioned (connections refused); toxics add
// latency, blackholes and resets.
type proxy struct {
	mu      sync.Mutex
	p       *toxiproxy.Proxy
	listen  string // fixed after the first start: the address clients use
	enabled bool
	closed  bool
}

func newProxy(name, upstream string) (*proxy, error) {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		return nil, fmt.Errorf("start proxy: %w", err)
	}
	return &proxy{p: p, listen: p.Listen, enabled: true}, nil
}

func (p *proxy) addr() string { return p.listen }

// setUpstream points the proxy at a new node address (a restarted node may
// listen elsewhere). Open connections are closed; the listen address stays.
func (p *proxy) setUpstream(addr string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if p.enabled {
		p.p.Stop()
	}
	p.p.Lock()
	p.p.Upstream = addr
	p.p.Unlock()
	if p.enabled {
		if err := p.p.Start(); err != nil {
			p.enabled = false
			return fmt.Errorf("cluster: proxy %s: restart on new upstream %s: %w", p.listen, addr, err)
		}
	}
	return nil
}

// disable stops listening and closes every open connection.
func (p *proxy) disable() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.enabled && !p.closed {
		p.p.Stop()
		p.enabled = false
	}
}

// enable listens again on the same address.
func (p *proxy) enable() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.enabled || p.closed {
		return nil
	}
	if err := p.p.Start(); err != nil {
		return fmt.Errorf("cluster: proxy %s: listen again: %w", p.listen, err)
	}
	p.enabled = true
	return nil
}

const (
	toxicLatency   = "latency"
	toxicBlackhole = "blackhole"
	toxicReset     = "reset"

	// dropType is the toxic type behind Blackhole.
	dropType = "quorumlock_drop"
)

// dropToxic swallows every byte until it is removed. toxiproxy's own
// timeout toxic (timeout 0) does the same, but on removal its Cleanup
// closes its stub without re-linking the stub in front of it: a chunk that
// arrives on that connection afterwards (over TLS, the client's
// close_notify after its request timed out) blocks the link's head
// goroutine for good. Without a Cleanup the removal re-links the chain;
// heal closes the connections itself.
type dropToxic struct{}

func (*dropToxic) Pipe(stub *toxics.ToxicStub) {
	for {
		select {
		case <-stub.Interrupt:
			return
		case c := <-stub.Input:
			if c == nil {
				stub.Close()
				return
			}
		}
	}
}

// toxiproxy creates toxics by type name from its registry.
func init() { toxics.Register(dropType, new(dropToxic)) }

func (p *proxy) addToxic(name, typ, stream string, attrs map[string]any) error {
	body, err := json.Marshal(map[string]any{
		"name": name, "type": typ, "stream": stream, "toxicity": 1.0, "attributes": attrs,
	})
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("cluster: closed")
	}
	if _, err := p.p.Toxics.AddToxicJson(bytes.NewReader(body)); err != nil {
		if errors.Is(err, toxiproxy.ErrToxicAlreadyExists) {
			return nil
		}
		return fmt.Errorf("cluster: proxy %s: add %s toxic: %w", p.listen, typ, err)
	}
	return nil
}

func (p *proxy) removeToxic(ctx context.Context, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	if err := p.p.Toxics.RemoveToxic(ctx, name); err != nil && !errors.Is(err, toxiproxy.ErrToxicNotFound) {
		return fmt.Errorf("cluster: proxy %s: remove %s toxic: %w", p.listen, name, err)
	}
	return nil
}

func (p *proxy) latency(ctx context.Context, delay, jitter time.Duration) error {
	if delay < 0 || jitter < 0 {
		return fmt.Errorf("cluster: negative latency %v or jitter %v", delay, jitter)
	}
	if err := p.removeToxic(ctx, toxicLatency); err != nil {
		return err
	}
	if delay == 0 && jitter == 0 {
		return nil
	}
	return p.addToxic(toxicLatency, "latency", "downstream", map[string]any{
		"latency": ceilMillis(delay), "jitter": ceilMillis(jitter),
	})
}

// ceilMillis rounds up to whole milliseconds, toxiproxy's unit.
func ceilMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func (p *proxy) blackhole() error {
	return p.addToxic(toxicBlackhole, dropType, "upstream", map[string]any{})
}

func (p *proxy) reset() error {
	return p.addToxic(toxicReset, "reset_peer", "upstream", map[string]any{"timeout": 0})
}

// heal undoes partition, blackhole and reset; latency stays. The
// connections that met a blackhole are closed, as requests sent into it
// were lost.
func (p *proxy) heal(ctx context.Context) error {
	return errors.Join(p.liftBlackhole(ctx), p.enable(), p.removeToxic(ctx, toxicReset))
}

// liftBlackhole closes every connection and then removes the blackhole,
// so that no connection carries on after losing requests. Closing first
// also ends the links while the toxic still reads their data.
func (p *proxy) liftBlackhole(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.p.Toxics.GetToxic(toxicBlackhole) == nil {
		return nil
	}
	if p.enabled {
		p.p.Stop()
	}
	var errs []error
	if err := p.p.Toxics.RemoveToxic(ctx, toxicBlackhole); err != nil && !errors.Is(err, toxiproxy.ErrToxicNotFound) {
		errs = append(errs, fmt.Errorf("cluster: proxy %s: remove %s toxic: %w", p.listen, toxicBlackhole, err))
	}
	if p.enabled {
		if err := p.p.Start(); err != nil {
			p.enabled = false
			errs = append(errs, fmt.Errorf("cluster: proxy %s: listen again: %w", p.listen, err))
		}
	}
	return errors.Join(errs...)
}

func (p *proxy) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.p.Toxics.ResetToxics(ctx)
	if p.enabled {
		p.p.Stop()
		p.enabled = false
	}
}
