package redlock

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// waker delivers release announcements (scripts/release.lua publishes on
// ReleasedPrefix+key) to the goroutines waiting for those keys. It keeps one
// pub/sub connection per node, opened on first use, and one subscription per
// waited-for key, shared by reference count.
type waker struct {
	c      *Client
	mu     sync.Mutex
	subs   map[string]*wakeSub
	conns  []*redis.PubSub
	wg     sync.WaitGroup
	closed bool
}

type wakeSub struct {
	refs int
	ch   chan struct{} // buffered 1: coalesces the announcements of N nodes
}

func newWaker(c *Client) *waker {
	return &waker{c: c, subs: make(map[string]*wakeSub)}
}

// subscribe starts listening on channel and returns the wake-up signal and
// the function that stops listening. Failing nodes are skipped: a waiter
// that hears nothing still retries after its delay.
func (w *waker) subscribe(ctx context.Context, channel string, timeout time.Duration) (<-chan struct{}, func()) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil, func() {}
	}
	if w.conns == nil {
		w.conns = make([]*redis.PubSub, len(w.c.nodes))
		for i, n := range w.c.nodes {
			ps := n.rdb.Subscribe(context.WithoutCancel(ctx))
			w.conns[i] = ps
			w.wg.Add(1)
			go w.dispatch(ps.Channel())
		}
	}
	sub, ok := w.subs[channel]
	if !ok {
		sub = &wakeSub{ch: make(chan struct{}, 1)}
		w.subs[channel] = sub
	}
	sub.refs++
	first := !ok
	conns := w.conns
	w.mu.Unlock()

	if first {
		w.each(ctx, conns, timeout, func(ctx context.Context, ps *redis.PubSub) error { return ps.Subscribe(ctx, channel) })
	}
	var once sync.Once
	return sub.ch, func() {
		once.Do(func() {
			w.mu.Lock()
			sub.refs--
			last := sub.refs == 0
			if last {
				delete(w.subs, channel)
			}
			closed := w.closed
			w.mu.Unlock()
			if last && !closed {
				w.each(context.Background(), conns, timeout, func(ctx context.Context, ps *redis.PubSub) error {
					return ps.Unsubscribe(ctx, channel)
				})
			}
		})
	}
}

// each runs f on every node's pub/sub connection at once, each bounded by
// timeout, and waits for all of them.
func (w *waker) each(ctx context.Context, conns []*redis.PubSub, timeout time.Duration, f func(context.Context, *redis.PubSub) error) {
	var wg sync.WaitGroup
	for _, ps := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			_ = f(ctx, ps)
		}()
	}
	wg.Wait()
}

func (w *waker) dispatch(msgs <-chan *redis.Message) {
	defer w.wg.Done()
	for m := range msgs {
		w.mu.Lock()
		sub := w.subs[m.Channel]
		w.mu.Unlock()
		if sub != nil {
			select {
			case sub.ch <- struct{}{}:
			default:
			}
		}
	}
}

func (w *waker) close() error {
	w.mu.Lock()
	w.closed = true
	conns := w.conns
	w.conns = nil
	w.mu.Unlock()
	var errs []error
	for _, ps := range conns {
		if err := ps.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	w.wg.Wait()
	return errors.Join(errs...)
}
