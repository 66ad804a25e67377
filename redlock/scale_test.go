package redlock

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Many auto-extended locks on one Client whose pools are small: every lock
// must stay valid for several TTLs and release without error. Taken all at
// once, their extensions fall due together; one round of one script per
// lock and node would queue them for the few connections until most miss
// their request timeout and the locks run out.
func TestManyAutoExtendedLocksKept(t *testing.T) {
	// Two connections per node, each round trip 40 ms: the connections,
	// not the nodes' work, are what runs short.
	tn := newNodesWith(t, 3, func(o *redis.Options) {
		o.PoolSize = 2
		o.Dialer = slowDialer(40 * time.Millisecond)
	})
	for _, mr := range tn.mr {
		mr.ClockTTL(true)
	}
	const ttl = 2 * time.Second
	c := newClient(t, tn, WithTTL(ttl))
	const n = 24
	locks := make([]*Lock, n)
	var wg sync.WaitGroup
	errs := make([]error, n)
	// A few acquirers: the locks are taken within a fraction of the TTL,
	// so that their extensions are due together.
	const acquirers = 8
	for w := range acquirers {
		wg.Go(func() {
			for i := w; i < n; i += acquirers {
				ctx, cancel := context.WithTimeout(bg(), 20*time.Second)
				locks[i], errs[i] = c.Acquire(ctx, fmt.Sprintf("kept-%d", i), WithAutoExtend(true))
				cancel()
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("lock %d: %v", i, err)
		}
	}
	// Hold them for three TTLs counted from the last acquisition: each lock
	// is extended at least twice, all of them in the same few moments.
	end := time.Now().Add(3 * ttl)
	for time.Now().Before(end) {
		for i, l := range locks {
			if !l.Valid() {
				st := c.Stats()
				waits, waited := poolWaits(tn)
				t.Fatalf("lock %d ended while held: %v (extended %d, extension rounds failed %d, locks lost %d, waits for a pooled connection %d, %v in all)",
					i, l.Err(), st.Extended, c.stats.extendFailed.Load(), st.Lost, waits, waited)
			}
		}
		time.Sleep(ttl / 20) // sampling the locks' state, not synchronisation
	}
	if st := c.Stats(); st.Extended < 2*n {
		t.Errorf("%d extensions of %d locks over three TTLs, want at least two each", st.Extended, n)
	}
	for i, l := range locks {
		wg.Go(func() { errs[i] = l.Release(bg()) })
	}
	wg.Wait()
	failed := failures(t, "release", errs)
	if failed > 0 {
		t.Errorf("%d of %d releases failed", failed, n)
	}
}

// poolWaits sums, over every node's client, the waits for a pooled
// connection and their total time.
func poolWaits(tn *testNodes) (uint32, time.Duration) {
	var n uint32
	var d time.Duration
	for _, rdb := range tn.clients {
		st := rdb.(*redis.Client).PoolStats()
		n += st.WaitCount
		d += time.Duration(st.WaitDurationNs)
	}
	return n, d
}

// slowDialer dials connections whose every round trip takes at least rtt:
// the first read after a write waits rtt first, as a network would.
func slowDialer(rtt time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &slowConn{Conn: c, rtt: rtt}, nil
	}
}

type slowConn struct {
	net.Conn
	rtt     time.Duration
	written atomic.Bool
}

func (c *slowConn) Write(p []byte) (int, error) {
	c.written.Store(true)
	return c.Conn.Write(p)
}

func (c *slowConn) Read(p []byte) (int, error) {
	if c.written.Swap(false) {
		time.Sleep(c.rtt) // the network's latency, not synchronisation
	}
	return c.Conn.Read(p)
}

// Many goroutines of one Client waiting for distinct held keys, on small
// pools: their attempts must not time out waiting for a connection (each
// round holds one per node), and once the keys are released every waiter
// gets its key.
func TestManyWaitersOnSmallPools(t *testing.T) {
	tn := newNodes(t, 3)
	for _, mr := range tn.mr {
		mr.ClockTTL(true)
	}
	// A TTL the test never reaches: the waiters may take longer than the
	// default TTL to be all waiting on a busy host.
	holder := newClient(t, tn, WithTTL(time.Minute))
	// The waiters' Client has connections of its own: two per node, each
	// round trip 10 ms.
	own := &testNodes{mr: tn.mr}
	for _, mr := range tn.mr {
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: time.Second,
			ContextTimeoutEnabled: true, PoolSize: 2, Dialer: slowDialer(10 * time.Millisecond)})
		t.Cleanup(func() { _ = rdb.Close() })
		own.clients = append(own.clients, rdb)
	}
	c := newClient(t, own)
	const n = 100
	held := make([]*Lock, n)
	for i := range held {
		l, err := acquireSoon(t, holder, fmt.Sprintf("wanted-%d", i))
		if err != nil {
			t.Fatalf("holder, key %d: %v", i, err)
		}
		held[i] = l
	}
	// Bounded, so that a stuck waiter fails the test rather than hanging
	// it; the property is no failed vote, not a speed.
	ctx, cancel := context.WithTimeout(bg(), time.Minute)
	defer cancel()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			l, err := c.Acquire(ctx, fmt.Sprintf("wanted-%d", i))
			if err == nil {
				_ = l.Release(bg()) // served; the release is another figure's
			}
			errs[i] = err
		})
	}
	// Every waiter made its first attempt (its keys are held: refused).
	for c.Stats().Attempts < n && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond) // polling a counter: no event to wait for
	}
	for i, l := range held {
		if err := l.Release(bg()); err != nil {
			t.Fatalf("holder, key %d: %v", i, err)
		}
	}
	wg.Wait()
	failed := failures(t, "waiter", errs)
	if failed > 0 {
		t.Errorf("%d of %d waiters not served", failed, n)
	}
	// Rounds that wait for connections fail many node requests per
	// waiter; a busy host may still make a few miss their node timeout.
	if st := c.Stats(); st.VotesFailed >= n {
		waits, waited := poolWaits(own)
		t.Errorf("%d node requests of the waiters' attempts failed (%d attempts for %d locks; waits for a pooled connection %d, %v in all)",
			st.VotesFailed, st.Attempts, n, waits, waited)
	}
}
