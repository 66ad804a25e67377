package redlock

import (
	"context"
	"sync"
)

// keyQueues orders the goroutines of one Client that wait for the same key:
// first come, first served, with only the head of each queue contending over
// the network. The queue is an optimisation of fairness and load, never of
// safety: mutual exclusion comes from the nodes alone.
type keyQueues struct {
	mu sync.Mutex
	m  map[string]*keyQueue
}

type keyQueue struct {
	waiters []chan struct{} // FIFO; the head owns the turn when closed
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
				delete(q.m, key)
				return
			}
			next := kq.waiters[0]
			kq.waiters = kq.waiters[1:]
			close(next)
		})
	}
}
