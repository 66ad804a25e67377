package lab

import (
	"context"
	"sync"
	"time"

	"github.com/go-redsync/redsync/v4"

	"github.com/quorumlock/quorumlock/lab/redsyncadapter"
)

// runRedsync is one candidate of the common redsync pattern: lock a Mutex
// (redsync's defaults, the run's TTL as expiry), take a fence by
// incrementing a counter on the store, lead while extending every TTL/3,
// and stop leading at the first extension that fails.
func (r *electionRun) runRedsync(ctx context.Context, c *candidate) error {
	rs := redsyncadapter.New(c.nodes)
	for ctx.Err() == nil {
		m := rs.NewMutex(electionKey, redsync.WithExpiry(r.ttl))
		if err := m.LockContext(ctx); err != nil {
			continue // ErrFailed after redsync's tries: try again, as a standby does
		}
		fence, err := r.nextTerm()
		if err != nil {
			r.unlock(m)
			continue
		}
		tctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			defer cancel()
			t := time.NewTicker(r.ttl / 3)
			defer t.Stop()
			for {
				select {
				case <-tctx.Done():
					return
				case <-t.C:
				}
				if ok, err := m.ExtendContext(tctx); !ok || err != nil {
					return
				}
			}
		})
		r.lead(ctx, tctx, c, fence, nil)
		cancel()
		wg.Wait()
		r.unlock(m)
	}
	return nil
}

// nextTerm is the redsync pattern's fence: a counter on the store,
// incremented at the start of every term.
func (r *electionRun) nextTerm() (uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()
	return r.store.Incr(ctx, electionTermKey).Uint64()
}

func (r *electionRun) unlock(m *redsync.Mutex) {
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()
	_ = redsyncadapter.Unlock(ctx, m) // a failed unlock leaves the key to expire
}
