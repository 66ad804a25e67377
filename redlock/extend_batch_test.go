package redlock

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A lock whose auto-extension fails is retried every TTL/20 while it is
// valid, not back to back: with a majority of nodes failing at once, a
// retry that is due at once would go out again the moment the last one
// failed, as fast as the nodes can refuse, for the rest of the validity.
func TestAutoExtendRetriesPacedWhileFailing(t *testing.T) {
	tn := newNodes(t, 3)
	const ttl = time.Second
	c := newClient(t, tn, WithTTL(ttl))
	l, err := c.Acquire(bg(), "paced", WithAutoExtend(true))
	if err != nil {
		t.Fatal(err)
	}
	tn.down[1].Store(true)
	tn.down[2].Store(true)
	from := time.Now()
	<-l.Done() // the validity runs out: every extension fails
	elapsed := time.Since(from)
	failed := c.stats.extendFailed.Load()
	// One try when the extension falls due, then one each TTL/20 at most
	// until the validity ended (and one at its very end).
	if most := uint64(elapsed/(ttl/20)) + 3; failed > most {
		t.Errorf("%d failed extension rounds in %v, want at most %d (one each TTL/20 = %v)", failed, elapsed, most, ttl/20)
	}
}

// A lock that a majority of nodes refused to extend ends at once, as
// Lock.Extend promises, even when it is extended in a batch with a lock that
// still waits for a stalled node: its holder must not go on past the moment
// the nodes said it no longer holds the key.
func TestBatchedRefusalEndsAtOnce(t *testing.T) {
	tn := newNodes(t, 3)
	const ttl = 3 * time.Second
	c := newClient(t, tn, WithTTL(ttl), WithNodeTimeout(700*time.Millisecond))
	// b first: it is due first, so it comes first in the batch.
	b, err := c.Acquire(bg(), "refusal-b", WithAutoExtend(true))
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Acquire(bg(), "refusal-a", WithAutoExtend(true))
	if err != nil {
		t.Fatal(err)
	}
	// a is held by someone else on nodes 0 and 1: a majority refuses it.
	// b is refused by node 1 only, and node 2 answers nothing until the
	// request timeout: b stays undecided until then.
	for _, i := range []int{0, 1} {
		if err := tn.mr[i].Set("refusal-a", "someone-else"); err != nil {
			t.Fatal(err)
		}
	}
	if err := tn.mr[1].Set("refusal-b", "someone-else"); err != nil {
		t.Fatal(err)
	}
	tn.stall[2].Store(true)
	defer tn.stall[2].Store(false)
	<-a.Done()
	if !errors.Is(a.Err(), ErrNotHeld) {
		t.Fatalf("a ended with %v, want ErrNotHeld", a.Err())
	}
	// b's round is decided only once node 2's request timed out; a's was
	// decided when nodes 0 and 1 answered, and a ended then.
	if b.lease.failing() {
		t.Errorf("a ended only once the batch gave up on node 2 (b's extension had failed already): a majority's refusal waited for the request timeout %v", b.req.s.requestTimeout)
	}
	if !b.Valid() {
		t.Fatalf("b ended: %v", b.Err())
	}
}

// extensionGate holds every extension pipeline (extend.lua has two keys)
// while armed, until the pipeline's ctx ends, and fails it then: an
// extension that never reaches its node.
type extensionGate struct{ armed *atomic.Bool }

func (g extensionGate) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (g extensionGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (g extensionGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if g.armed.Load() && len(cmds) > 0 && len(cmds[0].Args()) > 2 && fmt.Sprint(cmds[0].Args()[2]) == "2" {
			<-ctx.Done()
			for _, cmd := range cmds {
				cmd.SetErr(ctx.Err())
			}
			return ctx.Err()
		}
		return next(ctx, cmds)
	}
}

// batchWaitsForSlot reports whether an extension batch waits for one of
// the keeper's batch slots: it chose its locks already.
func batchWaitsForSlot() bool {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.HasPrefix(g, "goroutine ") && strings.Contains(g, "[chan send") && strings.Contains(g, "(*keeper).extendBatch") {
			return true
		}
	}
	return false
}

// batchRunning reports whether any extension batch is under way.
func batchRunning() bool {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Contains(string(buf), "(*keeper).extendBatch")
}

// A lock released while its extension batch waits for a batch slot is not
// extended once the batch runs: the release's tombstone lasts one request
// timeout, and the batch may start later than that (it waits for the
// batches ahead of it, each up to its request timeout), find the key
// missing and no tombstone, and "repair" it: the released key comes back
// for a TTL with nobody to release it.
func TestBatchedExtendSkipsLockReleasedWhileWaiting(t *testing.T) {
	tn := newNodes(t, 3)
	armed := new(atomic.Bool)
	for _, rdb := range tn.clients {
		rdb.AddHook(extensionGate{armed})
	}
	const ttl = 4 * time.Second
	c := newClient(t, tn, WithTTL(ttl), WithNodeTimeout(900*time.Millisecond))
	armed.Store(true)
	const n = 5*maxExtendBatch + 8
	locks := make([]*Lock, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				locks[i], errs[i] = c.Acquire(bg(), fmt.Sprintf("waiting-%d", i), WithAutoExtend(true))
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("lock %d: %v", i, err)
		}
	}
	// maxBatches batches hang on the gate; one more chose its locks and
	// waits for a slot.
	for !batchWaitsForSlot() {
		if !locks[n-1].Valid() {
			t.Fatal("no extension batch waited for a slot while the locks were valid")
		}
		time.Sleep(5 * time.Millisecond) // polling goroutine states: no event to wait for
	}
	// One at a time: the gated pipelines hold a request under way on every
	// node, and many deletes at once on top would make the nodes look hung.
	for i, l := range locks {
		if err := l.Release(bg()); err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
	}
	// The tombstones' request timeout passes on the nodes before the
	// waiting batch is sent (it waits up to a request timeout for a slot,
	// and up to another for a connection).
	tn.fastForward(locks[0].req.s.requestTimeout + time.Millisecond)
	armed.Store(false)
	for batchRunning() {
		time.Sleep(5 * time.Millisecond) // polling goroutine states: no event to wait for
	}
	back := 0
	for i, l := range locks {
		if h := tn.holders(fmt.Sprintf("waiting-%d", i), l.Token()); len(h) > 0 {
			back++
		}
	}
	if back > 0 {
		t.Errorf("%d of %d released keys set again by an extension (repaired %d)", back, n, c.Stats().Repaired)
	}
}
