package lab

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/redlock"
)

// Quorumlock is this project's redlock package with its defaults (restart
// quarantine of one TTL, clock-skew guard of TTL/10, wake-up on release),
// the run's TTL, and fencing tokens when the scenario asks for them.
func Quorumlock() Impl {
	return Impl{
		Name:    "quorumlock",
		Fencing: true,
		New: func(nodes []redis.UniversalClient, cfg LockConfig) (Locker, error) {
			c, err := redlock.New(nodes, redlock.WithTTL(cfg.TTL), redlock.WithFencing(cfg.Fencing))
			if err != nil {
				return nil, err
			}
			return quorumlockLocker{c, &ttlMix{ttl: cfg.TTL, mix: cfg.MixTTL}}, nil
		},
		// The nodes of a run are fresh: without Bootstrap each would serve a
		// quarantine of one TTL before its first vote.
		Prepare: func(ctx context.Context, nodes []redis.UniversalClient, cfg LockConfig) error {
			c, err := redlock.New(nodes, redlock.WithTTL(cfg.TTL))
			if err != nil {
				return err
			}
			return errors.Join(c.Bootstrap(ctx), c.Close())
		},
		Explain: explainQuorumlock,
	}
}

// explainQuorumlock reads the per-node reasons out of a failed acquisition.
func explainQuorumlock(err error) Refusal {
	r := Refusal{Err: err.Error()}
	var re *redlock.RoundError
	if !errors.As(err, &re) {
		return r
	}
	for _, n := range re.Nodes {
		switch n.Reason {
		case redlock.NodeQuarantined:
			r.Quarantined = append(r.Quarantined, n.Node)
		case redlock.NodeSkewed:
			r.Skewed = append(r.Skewed, n.Node)
		case redlock.NodeTaken:
			r.Taken = append(r.Taken, n.Node)
		}
	}
	return r
}

type quorumlockLocker struct {
	c   *redlock.Client
	ttl *ttlMix
}

func (l quorumlockLocker) Acquire(ctx context.Context, key string) (Held, error) {
	lk, err := l.c.Acquire(ctx, key, redlock.WithTTL(l.ttl.next()))
	if err != nil {
		return nil, err
	}
	return quorumlockHeld{lk}, nil
}

func (l quorumlockLocker) TryAcquire(ctx context.Context, key string) (Held, error) {
	lk, err := l.c.TryAcquire(ctx, key, redlock.WithTTL(l.ttl.next()))
	if err != nil {
		return nil, err
	}
	return quorumlockHeld{lk}, nil
}

func (l quorumlockLocker) Close() error { return l.c.Close() }

func (l quorumlockLocker) Rounds() uint64 { return l.c.Stats().Attempts }

type quorumlockHeld struct{ l *redlock.Lock }

func (h quorumlockHeld) Until() time.Time { return h.l.Until() }
func (h quorumlockHeld) Token() string    { return h.l.Token() }

func (h quorumlockHeld) Fence() (uint64, bool) {
	f := h.l.Fence()
	return f, f != 0
}

func (h quorumlockHeld) Release(ctx context.Context) error { return h.l.Release(ctx) }

// Extend resets the lock's TTL on the nodes and moves its validity.
func (h quorumlockHeld) Extend(ctx context.Context) error { return h.l.Extend(ctx) }

// QuorumlockBounds are the fault model's limits for locks of ttl with the
// library's defaults: a restart quarantine of one TTL, a clock-skew guard of
// TTL/10 and the drift allowance of TTL×0.01 + 2 ms (the package doc's
// numbers; the library keeps the arithmetic unexported).
func QuorumlockBounds(ttl time.Duration) ModelBounds {
	return ModelBounds{Quarantine: ttl, MaxSkew: ttl / 10, Drift: ttl/100 + 2*time.Millisecond}
}

// Implementations returns the implementations the lab compares.
func Implementations() []Impl { return []Impl{Quorumlock(), Redsync()} }

// FencedSet is the storage-side fencing check the lab uses: redlock.FencedSet.
func FencedSet(ctx context.Context, rdb *redis.Client, key string, value int64, fence uint64) error {
	return redlock.FencedSet(ctx, rdb, key, value, fence)
}

// IsStaleFence tells FencedSet's refusal from other errors.
func IsStaleFence(err error) bool { return errors.Is(err, redlock.ErrStaleFence) }

// Keep acquires key with auto-extension and no bound on the hold.
func (l quorumlockLocker) Keep(ctx context.Context, key string) (Kept, error) {
	lk, err := l.c.Acquire(ctx, key, redlock.WithAutoExtend(true), redlock.WithMaxHold(0))
	if err != nil {
		return nil, err
	}
	return quorumlockKept{quorumlockHeld{lk}}, nil
}

type quorumlockKept struct{ quorumlockHeld }

func (k quorumlockKept) Lost() <-chan struct{} { return k.l.Done() }

func (k quorumlockKept) Err() error { return k.l.Err() }

// granted tells how many locks releases granted to this client's waiters.
func (l quorumlockLocker) granted() uint64 { return l.c.Stats().Granted }

// repaired tells how many lock keys this client's extensions set again.
func (l quorumlockLocker) repaired() uint64 { return l.c.Stats().Repaired }
