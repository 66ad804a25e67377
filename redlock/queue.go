package redlock

import (
	"context"
	"sync"
	"time"
)

// keyQueues orders the goroutines of one Client that wait for the same key:
// first come, first served. Of each key's waiters only one contends over the
// network at a time (besides the holder); the others wait for their turn
// here. The queue is an optimisation of fairness and load, never of safety:
// mutual exclusion comes from the nodes alone.
//
// It also hands the lock over within the Client: a contender that has shown
// it is first in the key's queue on the nodes offers itself, and a holder
// that releases passes it the lock (same token, same validity) instead of
// deleting the key and letting the contender win it again over the network.
type keyQueues struct {
	mu sync.Mutex
	m  map[string]*keyQueue
}

type keyQueue struct {
	waiters []chan struct{} // FIFO; the head owns the turn when closed
	ready   *handoff        // the contender that can take the lock over
	// settled is closed once the holder that took the lock over has left
	// the nodes' queue: the next contender's attempt would find it first
	// there before, and not offer itself for the next hand-over.
	settled <-chan struct{}
}

// handoff is a contender's offer to take the lock over.
type handoff struct {
	req   *request
	w     *waiter
	until time.Time  // the offer stands until then (its proof of place ages)
	ch    chan *Lock // buffered 1: the lock, once handed over
	taken bool       // guarded by keyQueues.mu
	q     *keyQueue  // where it is offered
}

// enter waits for the caller's turn on key and returns the function that
// passes the turn on; it is safe to call more than once. It gives up with the
// ctx's error, or ErrClosed once closed is closed.
func (q *keyQueues) enter(ctx context.Context, closed <-chan struct{}, key string) (leave func(), err error) {
	q.mu.Lock()
	if q.m == nil {
		q.m = make(map[string]*keyQueue)
	}
	kq, busy := q.m[key]
	if !busy {
		q.m[key] = &keyQueue{}
		q.mu.Unlock()
		return q.leaver(key), nil
	}
	ch := make(chan struct{})
	kq.waiters = append(kq.waiters, ch)
	q.mu.Unlock()

	select {
	case <-ch:
		return q.leaver(key), nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-closed:
		err = ErrClosed
	}
	q.mu.Lock()
	for i, w := range kq.waiters {
		if w == ch {
			kq.waiters = append(kq.waiters[:i], kq.waiters[i+1:]...)
			q.mu.Unlock()
			return nil, err
		}
	}
	q.mu.Unlock()
	// The turn was handed to us as we gave up: pass it on.
	q.leaver(key)()
	return nil, err
}

func (q *keyQueues) leaver(key string) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			q.mu.Lock()
			defer q.mu.Unlock()
			kq := q.m[key]
			if len(kq.waiters) == 0 {
				if kq.ready == nil {
					delete(q.m, key)
				}
				return
			}
			next := kq.waiters[0]
			kq.waiters = kq.waiters[1:]
			close(next)
		})
	}
}

// settle records that the key's holder leaves the nodes' queue until done
// is closed. The caller holds the key's turn.
func (q *keyQueues) settle(key string, done <-chan struct{}) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if kq := q.m[key]; kq != nil {
		kq.settled = done
	}
}

// settling returns what settle recorded for key (nil: nothing to wait for)
// and forgets it. The caller holds the key's turn.
func (q *keyQueues) settling(key string) <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	kq := q.m[key]
	if kq == nil {
		return nil
	}
	done := kq.settled
	kq.settled = nil
	return done
}

// offer makes h the key's contender ready to take the lock over, until
// until. The caller holds the key's turn.
func (q *keyQueues) offer(key string, h *handoff, until time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	kq := q.m[key]
	if kq == nil || h.taken {
		return // a handed-over offer is spent: its lock waits in h.ch
	}
	h.until = until
	h.q = kq
	kq.ready = h
}

// withdraw takes h's offer back; false when the lock was already handed
// over (it is then in h.ch, and the caller must take it).
func (q *keyQueues) withdraw(h *handoff) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if h.taken {
		return false
	}
	if h.q != nil && h.q.ready == h {
		h.q.ready = nil
	}
	return true
}

// take claims the key's ready contender for a hand-over at now, or returns
// nil when there is none, its offer is too old, or its request does not fit
// (the offer then stands).
func (q *keyQueues) take(key string, now time.Time, fits func(*request) bool) *handoff {
	q.mu.Lock()
	defer q.mu.Unlock()
	kq := q.m[key]
	if kq == nil || kq.ready == nil || !fits(kq.ready.req) {
		return nil
	}
	h := kq.ready
	kq.ready = nil
	if h.taken || !now.Before(h.until) {
		return nil
	}
	h.taken = true
	return h
}
