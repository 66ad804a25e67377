// Package redsyncadapter builds go-redsync/redsync v4 on go-redis clients the
// one way every side-by-side comparison in this repository uses it (the lab,
// the benchmarks, the integration tests), so that they compare against the
// same thing.
package redsyncadapter

import (
	"context"
	"fmt"
	"time"

	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
)

// New returns redsync over nodes, one pool per node, in the order given.
func New(nodes []redis.UniversalClient) *redsync.Redsync {
	pools := make([]redsyncredis.Pool, len(nodes))
	for i, n := range nodes {
		pools[i] = goredis.NewPool(n)
	}
	return redsync.New(pools...)
}

// Lock locks key with a new Mutex of rs and returns it. A redsync Mutex
// serves one holder at a time and is not safe for concurrent use, so every
// acquisition gets its own.
func Lock(ctx context.Context, rs *redsync.Redsync, key string, opts ...redsync.Option) (*redsync.Mutex, error) {
	m := rs.NewMutex(key, opts...)
	if err := m.LockContext(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

// Unlock unlocks m. redsync reports an unlock that a majority did not
// confirm as (false, nil); that is an error here.
func Unlock(ctx context.Context, m *redsync.Mutex) error {
	ok, err := m.UnlockContext(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("redsync: unlock of %q not confirmed by a majority", m.Name())
	}
	return nil
}

// KeepExtended is the pattern redsync's users write around a Mutex to hold
// it past its expiry (redsync has no auto-extension): extend every interval
// (a third of the expiry is the usual choice), stop at the first extension
// that fails. It returns nil when ctx ends, else why the extension failed.
// after, when set, hears the new validity deadline after each extension; it
// runs on this goroutine, since a Mutex is not safe for concurrent use.
func KeepExtended(ctx context.Context, m *redsync.Mutex, interval time.Duration, after func(until time.Time)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		ok, err := m.ExtendContext(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("redsync: extension of %q not confirmed by a majority", m.Name())
		}
		if after != nil {
			after(m.Until())
		}
	}
}
