package redlock

import (
	"errors"
	"testing"
	"time"
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
