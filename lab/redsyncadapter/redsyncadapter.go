// Package redsyncadapter builds go-redsync/redsync v4 on go-redis clients the
// one way every side-by-side comparison in this repository uses it (the lab,
// the benchmarks, the integration tests), so that they compare against the
// same thing.
package redsyncadapter

import (
	"context"
	"fmt"

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
