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
	c := newClient(t, tn, WithTTL(ttl))
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
