package lab

import (
	"context"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/lab/redsyncadapter"
)

// Redsync is go-redsync/redsync v4 with its defaults (32 tries, 50–250 ms
// retry delay, drift factor 0.01, per-node timeout 5% of the expiry), except
// for the expiry, which is the run's TTL so both sides hold for equally long.
// It hands out no fencing tokens.
func Redsync() Impl {
	return Impl{
		Name: "redsync",
		New: func(nodes []redis.UniversalClient, cfg LockConfig) (Locker, error) {
			return &redsyncLocker{rs: redsyncadapter.New(nodes), ttl: cfg.TTL}, nil
		},
	}
}

type redsyncLocker struct {
	rs  *redsync.Redsync
	ttl time.Duration
}

func (l *redsyncLocker) Acquire(ctx context.Context, key string) (Held, error) {
	m, err := redsyncadapter.Lock(ctx, l.rs, key, redsync.WithExpiry(l.ttl))
	if err != nil {
		return nil, err
	}
	return redsyncHeld{m}, nil
}

func (l *redsyncLocker) TryAcquire(ctx context.Context, key string) (Held, error) {
	m, err := redsyncadapter.Lock(ctx, l.rs, key, redsync.WithExpiry(l.ttl), redsync.WithTries(1))
	if err != nil {
		return nil, err
	}
	return redsyncHeld{m}, nil
}

func (l *redsyncLocker) Close() error { return nil }

type redsyncHeld struct{ m *redsync.Mutex }

func (h redsyncHeld) Until() time.Time                  { return h.m.Until() }
func (h redsyncHeld) Token() string                     { return h.m.Value() }
func (h redsyncHeld) Fence() (uint64, bool)             { return 0, false }
func (h redsyncHeld) Release(ctx context.Context) error { return redsyncadapter.Unlock(ctx, h.m) }
