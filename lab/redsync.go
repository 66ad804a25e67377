package lab

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
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
			return &redsyncLocker{rs: redsyncadapter.New(nodes), ttl: cfg.TTL, mix: &ttlMix{ttl: cfg.TTL, mix: cfg.MixTTL}}, nil
		},
	}
}

type redsyncLocker struct {
	rs  *redsync.Redsync
	ttl time.Duration
	mix *ttlMix
}

func (l *redsyncLocker) Acquire(ctx context.Context, key string) (Held, error) {
	m, err := redsyncadapter.Lock(ctx, l.rs, key, redsync.WithExpiry(l.mix.next()))
	if err != nil {
		return nil, err
	}
	return redsyncHeld{m}, nil
}

func (l *redsyncLocker) TryAcquire(ctx context.Context, key string) (Held, error) {
	m, err := redsyncadapter.Lock(ctx, l.rs, key, redsync.WithExpiry(l.mix.next()), redsync.WithTries(1))
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

// Extend resets the lock's expiry on the nodes and moves its validity.
func (h redsyncHeld) Extend(ctx context.Context) error {
	ok, err := h.m.ExtendContext(ctx)
	if err == nil && !ok {
		err = errors.New("redsync: not extended")
	}
	return err
}

// Keep acquires key and extends it every third of the TTL until an
// extension fails (redsyncadapter.KeepExtended).
func (l *redsyncLocker) Keep(ctx context.Context, key string) (Kept, error) {
	m, err := redsyncadapter.Lock(ctx, l.rs, key, redsync.WithExpiry(l.ttl))
	if err != nil {
		return nil, err
	}
	kctx, cancel := context.WithCancel(context.Background())
	k := &redsyncKept{m: m, cancel: cancel, lost: make(chan struct{})}
	u := m.Until()
	k.until.Store(&u)
	k.wg.Go(func() {
		err := redsyncadapter.KeepExtended(kctx, m, l.ttl/3, func(t time.Time) { k.until.Store(&t) })
		if err != nil {
			k.err = err
			close(k.lost)
		}
	})
	return k, nil
}

type redsyncKept struct {
	m      *redsync.Mutex
	until  atomic.Pointer[time.Time] // the Mutex itself is the extender's alone
	cancel context.CancelFunc
	wg     sync.WaitGroup
	lost   chan struct{}
	err    error // set before lost is closed
}

func (k *redsyncKept) Until() time.Time      { return *k.until.Load() }
func (k *redsyncKept) Token() string         { return k.m.Value() }
func (k *redsyncKept) Fence() (uint64, bool) { return 0, false }
func (k *redsyncKept) Lost() <-chan struct{} { return k.lost }

func (k *redsyncKept) Err() error {
	select {
	case <-k.lost:
		return k.err
	default:
		return nil
	}
}

// Release stops the extensions, then unlocks.
func (k *redsyncKept) Release(ctx context.Context) error {
	k.cancel()
	k.wg.Wait()
	return redsyncadapter.Unlock(ctx, k.m)
}
