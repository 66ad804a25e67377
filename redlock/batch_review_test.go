package redlock

import (
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
