package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/internal/stats"
	"github.com/quorumlock/quorumlock/lab/redsyncadapter"
	"github.com/quorumlock/quorumlock/redlock"
)

// RTTResult is the nodes' round trip: a PING to one node, and a round of
// PINGs sent to every node at once and waited for (the shape of a lock
// round without its work).
type RTTResult struct {
	Samples    int     `json:"samples"`
	PingP50Ms  float64 `json:"ping_p50_ms"`
	RoundP50Ms float64 `json:"round_p50_ms"`
	RoundP99Ms float64 `json:"round_p99_ms"`
}

// RoundTrip measures samples PINGs to node 0 and samples rounds of PINGs to
// every node.
func RoundTrip(ctx context.Context, nodes []redis.UniversalClient, samples int) (RTTResult, error) {
	var ping, round []time.Duration
	for range samples {
		t0 := time.Now()
		if err := nodes[0].Ping(ctx).Err(); err != nil {
			return RTTResult{}, err
		}
		ping = append(ping, time.Since(t0))
	}
	errs := make([]error, len(nodes))
	for range samples {
		t0 := time.Now()
		var wg sync.WaitGroup
		for i, c := range nodes {
			wg.Go(func() { errs[i] = c.Ping(ctx).Err() })
		}
		wg.Wait()
		round = append(round, time.Since(t0))
		if err := errors.Join(errs...); err != nil {
			return RTTResult{}, err
		}
	}
	return RTTResult{
		Samples: samples, PingP50Ms: ms(stats.Quantile(ping, 0.5)),
		RoundP50Ms: ms(stats.Quantile(round, 0.5)), RoundP99Ms: ms(stats.Quantile(round, 0.99)),
	}, nil
}

// HeldResult is the cost of holding many locks at once: what the process
// gained in goroutines and live heap while holding them, per lock.
type HeldResult struct {
	Name  string `json:"name"`
	Locks int    `json:"locks"`
	// Held is how many locks were held when measured (Locks minus failed
	// acquisitions).
	Held int `json:"held"`
	// AcquireSeconds is how long taking them took.
	AcquireSeconds    float64 `json:"acquire_seconds"`
	GoroutinesPerLock float64 `json:"goroutines_per_lock"`
	HeapBytesPerLock  float64 `json:"heap_bytes_per_lock"`
	// GoroutinesPerLockExtending and HeapBytesPerLockExtending are measured
	// again once every lock was extended (auto-extension at work).
	GoroutinesPerLockExtending float64 `json:"goroutines_per_lock_extending"`
	HeapBytesPerLockExtending  float64 `json:"heap_bytes_per_lock_extending"`
	// Extended is the extensions made while held (auto-extension), Lost the
	// locks lost meanwhile.
	Extended uint64 `json:"extended"`
	Lost     uint64 `json:"lost"`
	Errors   int    `json:"errors"`
}

// acquirers bounds the acquisitions in flight while a figure takes its
// locks: the figures measure holding and releasing, not a storm of dials.
const acquirers = 32

// takeAll runs take(i) for i in [0, count) on acquirers goroutines and
// returns the number of failures.
func takeAll(count, workers int, take func(i int) error) int {
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, count) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= count {
					return
				}
				if take(i) != nil {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(failed.Load())
}

// live returns the goroutines and the live heap after a full collection.
// It first lets the goroutines of earlier work (releases finishing in the
// background, stragglers) end: it returns once their number held still for
// a few samples, or after a second.
func live() (int, uint64) {
	const still = 5
	prev, same := runtime.NumGoroutine(), 0
	for deadline := time.Now().Add(time.Second); same < still && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond) // sampling, not synchronisation
		g := runtime.NumGoroutine()
		if g == prev {
			same++
		} else {
			prev, same = g, 0
		}
	}
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return runtime.NumGoroutine(), m.HeapAlloc
}

func perLock(before, after uint64, n int) float64 {
	if n == 0 {
		return 0
	}
	return (float64(after) - float64(before)) / float64(n)
}

// HeldOurs acquires count keys with auto-extension on a Client of its own,
// keeps them until every lock was extended at least once (so that the
// figure includes the extension machinery at work), measures, and releases
// them.
func HeldOurs(ctx context.Context, n *Nodes, count int, ttl time.Duration) (HeldResult, error) {
	// A TTL longer than the default needs a restart quarantine as long.
	c, err := n.NewClient(redlock.WithQuarantine(max(ttl, redlock.DefaultTTL)))
	if err != nil {
		return HeldResult{}, err
	}
	defer c.Close()
	keys := n.Keys(fmt.Sprintf("held-ours-%d", count), count)
	locks := make([]*redlock.Lock, count)
	// The pools at their full size first: connections opened while the
	// locks are taken would count as the locks' heap.
	if err := n.Warm(ctx, poolSize); err != nil {
		return HeldResult{}, err
	}
	g0, h0 := live()
	t0 := time.Now()
	r := HeldResult{Name: NameOurs, Locks: count}
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	r.Errors = takeAll(count, acquirers, func(i int) error {
		l, err := c.Acquire(actx, keys[i], redlock.WithAutoExtend(true), redlock.WithTTL(ttl))
		locks[i] = l
		return err
	})
	cancel()
	r.AcquireSeconds = time.Since(t0).Seconds()
	r.Held = count - r.Errors
	defer func() {
		rctx := context.WithoutCancel(ctx)
		takeAll(count, acquirers, func(i int) error {
			if locks[i] == nil {
				return nil
			}
			return locks[i].Release(rctx)
		})
	}()
	// Every lock is extended a third of a TTL before its expiry: wait for
	// that, bounded by a TTL after the last acquisition.
	// Held: the cost of holding, before the first extension is due.
	g1, h1 := live()
	r.GoroutinesPerLock = float64(g1-g0) / float64(max(r.Held, 1))
	r.HeapBytesPerLock = perLock(h0, h1, r.Held)
	deadline := time.Now().Add(ttl)
	for c.Stats().Extended < uint64(r.Held) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(50 * time.Millisecond) // polling a counter: no event to wait for
	}
	// Extended: what the extensions add while they run (their goroutines
	// and requests in flight), once every lock was extended.
	g2, h2 := live()
	r.GoroutinesPerLockExtending = float64(g2-g0) / float64(max(r.Held, 1))
	r.HeapBytesPerLockExtending = perLock(h0, h2, r.Held)
	st := c.Stats()
	r.Extended, r.Lost = st.Extended, st.Lost
	runtime.KeepAlive(locks)
	return r, ctx.Err()
}

// HeldRedsync holds count redsync Mutexes at once (redsync has no
// auto-extension): its per-lock cost, for reference.
func HeldRedsync(ctx context.Context, n *Nodes, count int, _ time.Duration) (HeldResult, error) {
	keys := n.Keys(fmt.Sprintf("held-redsync-%d", count), count)
	ms := make([]*redsync.Mutex, count)
	g0, h0 := live()
	t0 := time.Now()
	r := HeldResult{Name: NameRedsync, Locks: count}
	r.Errors = takeAll(count, acquirers, func(i int) error {
		m, err := redsyncadapter.Lock(ctx, n.Redsync, keys[i])
		ms[i] = m
		return err
	})
	r.AcquireSeconds = time.Since(t0).Seconds()
	r.Held = count - r.Errors
	g1, h1 := live()
	r.GoroutinesPerLock = float64(g1-g0) / float64(max(r.Held, 1))
	r.HeapBytesPerLock = perLock(h0, h1, r.Held)
	takeAll(count, acquirers, func(i int) error {
		if ms[i] == nil {
			return nil
		}
		return redsyncadapter.Unlock(context.WithoutCancel(ctx), ms[i])
	})
	return r, ctx.Err()
}

// WaitersResult is what many waiters on distinct keys cost one Client.
type WaitersResult struct {
	Name    string `json:"name"`
	Waiters int    `json:"waiters"`
	// SubscriptionsPerNode is the most pub/sub connections the waiting
	// Client had open to one node (go-redis pool statistics of its own
	// connections).
	SubscriptionsPerNode int `json:"subscriptions_per_node"`
	// ServerPubSub is the most pub/sub connections one node counted (CLIENT
	// LIST TYPE pubsub) while they waited, -1 when the nodes cannot say.
	ServerPubSub int `json:"server_pubsub"`
	// GoroutinesPerWaiter counts the goroutines beyond the waiting ones.
	GoroutinesPerWaiter float64 `json:"goroutines_per_waiter"`
	HeapBytesPerWaiter  float64 `json:"heap_bytes_per_waiter"`
	// ServedSeconds is the time from the holders' release until every
	// waiter acquired and released its key; Errors the waiters that did not
	// get their key.
	ServedSeconds float64 `json:"served_seconds"`
	Errors        int     `json:"errors"`
	FirstError    string  `json:"first_error,omitempty"`
	// ReadySeconds is how long the waiters took to be all waiting, queued.
	ReadySeconds float64 `json:"ready_seconds"`
}

// Waiters holds count keys with one Client, starts count waiters (one per
// key) on another Client with connections of its own, counts what they
// cost once every waiter made its first attempt, then releases the keys
// and waits for every waiter to be served.
func Waiters(ctx context.Context, n *Nodes, count int) (WaitersResult, error) {
	r := WaitersResult{Name: NameOurs, Waiters: count, ServerPubSub: -1}
	holder, err := n.NewClient()
	if err != nil {
		return r, err
	}
	defer holder.Close()
	keys := n.Keys(fmt.Sprintf("waiters-%d", count), count)
	held := make([]*redlock.Lock, count)
	var firstErr atomic.Pointer[error]
	// Bounded, as every figure: fresh keys are free, so a minute is only
	// reached when the lock service is stuck, and the figure says why.
	hctx, hcancel := context.WithTimeout(ctx, time.Minute)
	defer hcancel()
	if failed := takeAll(count, acquirers, func(i int) error {
		l, err := holder.Acquire(hctx, keys[i], redlock.WithAutoExtend(true))
		held[i] = l
		if err != nil {
			firstErr.CompareAndSwap(nil, &err)
		}
		return err
	}); failed > 0 {
		return r, fmt.Errorf("holder: %d of %d keys not taken: %w", failed, count, *firstErr.Load())
	}
	release := func() {
		takeAll(count, acquirers, func(i int) error { return held[i].Release(context.WithoutCancel(ctx)) })
	}
	w, conns, err := n.NewProcessClient()
	if err != nil {
		release()
		return r, err
	}
	defer w.Close()
	// Its pools at full size first: connections opened while the waiters
	// start would count as the waiters' heap.
	if err := warm(ctx, conns, poolSize); err != nil {
		release()
		return r, err
	}
	server0 := serverPubSub(ctx, n.Clients)
	g0, h0 := live()
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	var failed atomic.Int64
	var firstWait atomic.Pointer[string]
	var wg sync.WaitGroup
	for _, key := range keys {
		wg.Go(func() {
			l, err := w.Acquire(wctx, key)
			if err != nil {
				failed.Add(1)
				msg := err.Error()
				firstWait.CompareAndSwap(nil, &msg)
				return
			}
			_ = l.Release(context.WithoutCancel(ctx))
		})
	}
	// Every waiter made its first two attempts (the second takes its place
	// in the key's queue), and the subscriptions are open.
	started := time.Now()
	for ctx.Err() == nil && wctx.Err() == nil {
		if w.Stats().Attempts >= uint64(2*count) && subscriptions(conns) > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling counters: no event to wait for
	}
	r.ReadySeconds = time.Since(started).Seconds()
	g1, h1 := live()
	r.SubscriptionsPerNode = subscriptions(conns)
	if s1 := serverPubSub(ctx, n.Clients); s1 >= 0 && server0 >= 0 {
		r.ServerPubSub = s1 - server0
	}
	r.GoroutinesPerWaiter = float64(g1-g0-count) / float64(count)
	r.HeapBytesPerWaiter = perLock(h0, h1, count)
	t0 := time.Now()
	release()
	wg.Wait()
	r.ServedSeconds = time.Since(t0).Seconds()
	r.Errors = int(failed.Load())
	if p := firstWait.Load(); p != nil {
		r.FirstError = *p
	}
	return r, ctx.Err()
}

// subscriptions is the most active pub/sub connections of one client.
func subscriptions(conns []redis.UniversalClient) int {
	most := 0
	for _, c := range conns {
		if rc, ok := c.(*redis.Client); ok {
			most = max(most, int(rc.PoolStats().PubSubStats.Active))
		}
	}
	return most
}

// serverPubSub is the most pub/sub connections one node reports, -1 when a
// node cannot say (miniredis has no CLIENT LIST).
func serverPubSub(ctx context.Context, nodes []redis.UniversalClient) int {
	most := 0
	for _, c := range nodes {
		s, err := c.Do(ctx, "CLIENT", "LIST", "TYPE", "pubsub").Text()
		if err != nil {
			return -1
		}
		most = max(most, strings.Count(s, "\n")+boolInt(s != "" && !strings.HasSuffix(s, "\n")))
	}
	return most
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ReleaseStormResult is many held locks released at the same instant.
type ReleaseStormResult struct {
	Name  string `json:"name"`
	Locks int    `json:"locks"`
	// Held is how many were taken; ReleaseErrors how many of their releases
	// returned an error, and ErrorShare that over Held.
	Held          int     `json:"held"`
	ReleaseErrors int     `json:"release_errors"`
	ErrorShare    float64 `json:"error_share"`
	FirstError    string  `json:"first_error,omitempty"`
	// ReleaseSeconds is from the signal to the last release's return.
	ReleaseSeconds float64 `json:"release_seconds"`
	// AcquireSeconds is how long taking them took; Extended the
	// extensions made meanwhile (auto-extension) and Lost the locks lost
	// before their release (quorumlock only).
	AcquireSeconds float64 `json:"acquire_seconds,omitempty"`
	Extended       uint64  `json:"extended,omitempty"`
	Lost           uint64  `json:"lost,omitempty"`
}

// ReleaseStormOurs runs count Client.Do calls on distinct keys on a Client
// with connections of its own; once all hold their lock, every function
// returns at once and Do releases them all together.
func ReleaseStormOurs(ctx context.Context, n *Nodes, count int) (ReleaseStormResult, error) {
	c, _, err := n.NewProcessClient()
	if err != nil {
		return ReleaseStormResult{}, err
	}
	defer c.Close()
	keys := n.Keys(fmt.Sprintf("do-%d", count), count)
	sem := make(chan struct{}, acquirers)
	var holding sync.WaitGroup
	holding.Add(count)
	gate := make(chan struct{})
	acqCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var held, relErrs, acqErrs atomic.Int64
	var first atomic.Pointer[string]
	var wg sync.WaitGroup
	for _, key := range keys {
		wg.Go(func() {
			sem <- struct{}{}
			ran := false
			err := c.Do(acqCtx, key, func(context.Context) error {
				ran = true
				<-sem
				held.Add(1)
				holding.Done()
				<-gate
				return nil
			})
			if !ran {
				<-sem
				acqErrs.Add(1)
				holding.Done()
				return
			}
			if err != nil {
				relErrs.Add(1)
				msg := err.Error()
				first.CompareAndSwap(nil, &msg)
			}
		})
	}
	taking := time.Now()
	holding.Wait()
	took := time.Since(taking)
	st := c.Stats()
	t0 := time.Now()
	close(gate)
	wg.Wait()
	r := releaseStorm(NameOurs, count, int(held.Load()), int(relErrs.Load()), &first, time.Since(t0))
	r.AcquireSeconds, r.Extended, r.Lost = took.Seconds(), st.Extended, st.Lost
	return r, ctx.Err()
}

// ReleaseStormRedsync locks count redsync Mutexes on connections of their
// own and unlocks them all at the same instant.
func ReleaseStormRedsync(ctx context.Context, n *Nodes, count int) (ReleaseStormResult, error) {
	rs := redsyncadapter.New(n.OwnConnections())
	keys := n.Keys(fmt.Sprintf("unlock-%d", count), count)
	ms := make([]*redsync.Mutex, count)
	// An expiry that outlasts taking them all (ours extends its own): an
	// unlock must not meet a lock that already expired.
	takeAll(count, acquirers, func(i int) error {
		m, err := redsyncadapter.Lock(ctx, rs, keys[i], redsync.WithExpiry(time.Minute))
		ms[i] = m
		return err
	})
	held := 0
	var relErrs atomic.Int64
	var first atomic.Pointer[string]
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for _, m := range ms {
		if m == nil {
			continue
		}
		held++
		wg.Go(func() {
			<-gate
			err := redsyncadapter.Unlock(context.WithoutCancel(ctx), m)
			if err != nil {
				relErrs.Add(1)
				msg := err.Error()
				first.CompareAndSwap(nil, &msg)
			}
		})
	}
	t0 := time.Now()
	close(gate)
	wg.Wait()
	return releaseStorm(NameRedsync, count, held, int(relErrs.Load()), &first, time.Since(t0)), ctx.Err()
}

func releaseStorm(name string, count, held, relErrs int, first *atomic.Pointer[string], took time.Duration) ReleaseStormResult {
	r := ReleaseStormResult{Name: name, Locks: count, Held: held, ReleaseErrors: relErrs}
	if held > 0 {
		r.ErrorShare = float64(relErrs) / float64(held)
	}
	if p := first.Load(); p != nil {
		r.FirstError = *p
	}
	r.ReleaseSeconds = took.Seconds()
	return r
}
