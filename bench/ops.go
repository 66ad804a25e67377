package bench

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/lab/redsyncadapter"
	"github.com/quorumlock/quorumlock/redlock"
)

// Op is one timed operation on key.
type Op func(ctx context.Context, key string) error

// OursOp acquires key with c and releases it.
func OursOp(c *redlock.Client) Op {
	return func(ctx context.Context, key string) error {
		l, err := c.Acquire(ctx, key)
		if err != nil {
			return err
		}
		return l.Release(ctx)
	}
}

// RedsyncOp locks key with a new redsync Mutex (a Mutex serves one key and
// one holder) and unlocks it.
func RedsyncOp(rs *redsync.Redsync, opts ...redsync.Option) Op {
	return func(ctx context.Context, key string) error {
		m, err := redsyncadapter.Lock(ctx, rs, key, opts...)
		if err != nil {
			return err
		}
		if err := redsyncadapter.Unlock(ctx, m); err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		return nil
	}
}

// RawOp takes and frees key with the raw floor.
func RawOp(r *Raw) Op {
	return func(ctx context.Context, key string) error {
		token, err := r.Lock(ctx, key)
		if err != nil {
			return err
		}
		if n := r.Unlock(ctx, key, token); n < len(r.nodes)/2+1 {
			return fmt.Errorf("bench: raw unlock %q: %d nodes", key, n)
		}
		return nil
	}
}

// SetOp sends one SET of key through rdb (the guard's per-command cost).
func SetOp(rdb redis.UniversalClient) Op {
	return func(ctx context.Context, key string) error {
		return rdb.Set(ctx, key, "v", time.Minute).Err()
	}
}

// OpResult is the cost of one operation, as `go test -benchmem` reports it.
type OpResult struct {
	Name        string  `json:"name"`
	Ops         int     `json:"ops"`
	NsPerOp     float64 `json:"ns_per_op"`
	BytesPerOp  float64 `json:"bytes_per_op"`
	AllocsPerOp float64 `json:"allocs_per_op"`
	Errors      int     `json:"errors"`
}

// Measure runs op sequentially for about d on the keys in turn and reports
// its time and allocations per operation. Allocations are those of the
// whole process while op runs, background goroutines included, which is
// what the operation costs the caller.
func Measure(ctx context.Context, name string, d time.Duration, keys []string, op Op) OpResult {
	for i := 0; i < 3 && i < len(keys); i++ { // warm the pools and script caches
		_ = op(ctx, keys[i])
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	start := time.Now()
	r := OpResult{Name: name}
	for time.Since(start) < d && ctx.Err() == nil {
		if err := op(ctx, keys[r.Ops%len(keys)]); err != nil {
			r.Errors++
		}
		r.Ops++
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if r.Ops > 0 {
		n := float64(r.Ops)
		r.NsPerOp = float64(elapsed.Nanoseconds()) / n
		r.BytesPerOp = float64(after.TotalAlloc-before.TotalAlloc) / n
		r.AllocsPerOp = float64(after.Mallocs-before.Mallocs) / n
	}
	return r
}

// Contender acquires a key and returns the function that releases it.
type Contender func(ctx context.Context, key string) (release func(context.Context) error, err error)

// OursContender acquires with c.
func OursContender(c *redlock.Client, opts ...redlock.LockOption) Contender {
	return func(ctx context.Context, key string) (func(context.Context) error, error) {
		l, err := c.Acquire(ctx, key, opts...)
		if err != nil {
			return nil, err
		}
		return l.Release, nil
	}
}

// RedsyncContender locks with a new Mutex of rs per acquisition.
func RedsyncContender(rs *redsync.Redsync, opts ...redsync.Option) Contender {
	return func(ctx context.Context, key string) (func(context.Context) error, error) {
		m, err := redsyncadapter.Lock(ctx, rs, key, opts...)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) error {
			if err := redsyncadapter.Unlock(ctx, m); err != nil {
				return fmt.Errorf("bench: %w", err)
			}
			return nil
		}, nil
	}
}

// RawContender takes the key with the raw floor: one attempt, no retry.
func RawContender(r *Raw) Contender {
	return func(ctx context.Context, key string) (func(context.Context) error, error) {
		token, err := r.Lock(ctx, key)
		if err != nil {
			return nil, err
		}
		return func(ctx context.Context) error {
			r.Unlock(ctx, key, token)
			return nil
		}, nil
	}
}
