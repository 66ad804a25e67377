package redlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// In one batch, each lock is decided by its own scripts' replies: an error
// reply for one lock, a refusal by a majority for another and a node that
// lost its script cache leave the other locks extended.
func TestBatchedExtendDecidesEachLockByItsOwnReplies(t *testing.T) {
	tn := newNodes(t, 3)
	const ttl = 2 * time.Second
	c := newClient(t, tn, WithTTL(ttl))
	var locks [4]*Lock
	for i, key := range []string{"own-ok", "own-error", "own-refused", "own-ok2"} {
		l, err := c.Acquire(bg(), key, WithAutoExtend(true))
		if err != nil {
			t.Fatal(err)
		}
		locks[i] = l
	}
	ok, errd, refused, ok2 := locks[0], locks[1], locks[2], locks[3]
	// own-error: the key is a hash on node 0 (an error reply there).
	tn.mr[0].Del("own-error")
	tn.mr[0].HSet("own-error", "f", "v")
	for _, i := range []int{0, 1} {
		if err := tn.mr[i].Set("own-refused", "someone-else"); err != nil {
			t.Fatal(err)
		}
	}
	if err := tn.clients[2].ScriptFlush(bg()).Err(); err != nil {
		t.Fatal(err)
	}
	until := [4]time.Time{}
	for i, l := range locks {
		until[i] = l.Until()
	}
	<-refused.Done()
	if !errors.Is(refused.Err(), ErrNotHeld) {
		t.Fatalf("refused: %v", refused.Err())
	}
	for i, l := range []*Lock{ok, errd, ok2} {
		j := []int{0, 1, 3}[i]
		for l.Until().Equal(until[j]) && l.Valid() {
			time.Sleep(ttl / 100) // polling the deadline: no event to wait for
		}
		if !l.Valid() {
			t.Errorf("%s ended: %v", l.Key(), l.Err())
		}
	}
	if got := tn.holders("own-refused", refused.Token()); len(got) != 1 || got[0] != 2 {
		t.Errorf("own-refused holders %v", got)
	}
}

// delayedExtensions delays every extension pipeline by d, and records when
// the first one was sent.
type delayedExtensions struct {
	d     time.Duration
	mu    *sync.Mutex
	first *time.Time
}

func (h delayedExtensions) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h delayedExtensions) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h delayedExtensions) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && len(cmds[0].Args()) > 2 && fmt.Sprint(cmds[0].Args()[2]) == "2" {
			h.mu.Lock()
			if h.first.IsZero() {
				*h.first = time.Now()
			}
			h.mu.Unlock()
			time.Sleep(h.d) // the network's latency, not synchronisation
		}
		return next(ctx, cmds)
	}
}

// A batched extension's validity counts from before its requests were
// sent: the time its pipelines take comes off it.
func TestBatchedExtendValidityCountsFromItsStart(t *testing.T) {
	tn := newNodes(t, 3)
	var mu sync.Mutex
	var first time.Time
	const ttl = 2 * time.Second
	for _, rdb := range tn.clients {
		rdb.AddHook(delayedExtensions{d: 100 * time.Millisecond, mu: &mu, first: &first})
	}
	// The longest node timeout the TTL allows: the 100 ms delay must fit
	// in it on a loaded host too, or no extension is ever counted.
	c := newClient(t, tn, WithTTL(ttl), WithNodeTimeout(ttl/4))
	l, err := c.Acquire(bg(), "start", WithAutoExtend(true))
	if err != nil {
		t.Fatal(err)
	}
	was := l.Until()
	for l.Until().Equal(was) && l.Valid() {
		time.Sleep(ttl / 100) // polling the deadline: no event to wait for
	}
	if !l.Valid() {
		t.Fatalf("lock ended: %v", l.Err())
	}
	mu.Lock()
	sent := first
	mu.Unlock()
	if latest := sent.Add(ttl); l.Until().After(latest) {
		t.Errorf("extended until %v after its first request was sent, more than the TTL %v", l.Until().Sub(sent), ttl)
	}
}

// A batch's pipelines get the shortest request timeout of its locks (an
// extension must arrive within its own lock's request timeout, which the
// release's tombstone covers). A lock with a longer request timeout must
// not inherit a shorter one from the locks it is batched with: on a network
// slower than the short timeout but faster than its own, it would never be
// extended, whereas Extend would extend it.
func TestBatchedExtendKeepsItsOwnRequestTimeout(t *testing.T) {
	tn := newNodes(t, 3)
	var mu sync.Mutex
	var first time.Time
	for _, rdb := range tn.clients {
		rdb.AddHook(delayedExtensions{d: 350 * time.Millisecond, mu: &mu, first: &first})
	}
	c := newClient(t, tn, WithTTL(4*time.Second))
	long, err := c.Acquire(bg(), "long", WithAutoExtend(true), WithNodeTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if long.req.s.requestTimeout <= 350*time.Millisecond {
		t.Fatalf("request timeout %v", long.req.s.requestTimeout)
	}
	// One extension outside a pipeline loads the script on every node: a
	// pipeline then takes one round trip, not two.
	if err := long.Extend(bg()); err != nil {
		t.Fatal(err)
	}
	// Short locks come and go (their own extensions take longer than
	// their request timeout, 250 ms): one is always due when the long
	// lock is.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			l, err := c.TryAcquire(bg(), fmt.Sprintf("short-%d", i), WithTTL(time.Second), WithAutoExtend(true))
			if err == nil {
				defer func() { _ = l.Release(bg()) }()
			}
			time.Sleep(20 * time.Millisecond) // pacing the load, not synchronisation
		}
	})
	defer func() { close(stop); wg.Wait() }()
	was := long.Until()
	for long.Until().Equal(was) && long.Valid() {
		time.Sleep(20 * time.Millisecond) // polling the deadline: no event to wait for
	}
	if !long.Valid() {
		t.Errorf("the long lock was never extended: %v (extensions failed %d)", long.Err(), c.stats.extendFailed.Load())
	}
}
