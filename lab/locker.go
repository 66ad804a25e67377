package lab

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Locker is one client of a Redlock implementation, as a workload sees it.
// The lab runs each implementation behind this interface so that the same
// workload and the same fault schedule drive both.
type Locker interface {
	// Acquire blocks until the lock on key is held or ctx is done.
	Acquire(ctx context.Context, key string) (Held, error)
	// TryAcquire makes one attempt.
	TryAcquire(ctx context.Context, key string) (Held, error)
	// Close releases what the client holds open (subscriptions, goroutines).
	Close() error
}

// A RoundCounter is a Locker that can tell how many acquisition rounds (one
// vote on every node) it ran; the report divides it by the acquisitions.
type RoundCounter interface {
	Rounds() uint64
}

// Held is one acquired lock.
type Held interface {
	// Until is the local validity deadline; it carries a monotonic reading.
	Until() time.Time
	// Token is the random value the lock key holds on the nodes.
	Token() string
	// Fence is the lock's fencing token; ok is false when the implementation
	// hands out none.
	Fence() (token uint64, ok bool)
	Release(ctx context.Context) error
}

// LockConfig is what every implementation is configured with in one run, so
// that the two sides compare like with like.
type LockConfig struct {
	TTL     time.Duration
	Fencing bool // ask for fencing tokens (ignored by implementations without them)
	// MixTTL asks every other acquisition of a Locker for half the TTL:
	// holders and waiters of one client then differ in TTL, as callers of
	// one Client may.
	MixTTL bool
}

// ttlMix hands out a Locker's TTLs: TTL, or TTL and TTL/2 in turn with
// LockConfig.MixTTL.
type ttlMix struct {
	ttl time.Duration
	mix bool
	n   atomic.Uint64
}

func (m *ttlMix) next() time.Duration {
	if m.mix && m.n.Add(1)%2 == 0 {
		return m.ttl / 2
	}
	return m.ttl
}

// An Impl is a Redlock implementation under test.
type Impl struct {
	Name string
	// Fencing tells whether the implementation hands out fencing tokens.
	Fencing bool
	// New makes one client over the given nodes.
	New func(nodes []redis.UniversalClient, cfg LockConfig) (Locker, error)
	// Prepare runs once on freshly started nodes before a run; nil for none.
	Prepare func(ctx context.Context, nodes []redis.UniversalClient, cfg LockConfig) error
	// Explain says which nodes refused a failed acquisition and why, as far
	// as the implementation tells; nil when it does not.
	Explain func(err error) Refusal
}

// Refusal is why the nodes of a failed acquisition refused their votes.
type Refusal struct {
	Err         string `json:"error"`
	Quarantined []int  `json:"quarantined,omitempty"` // nodes in their restart quarantine
	Skewed      []int  `json:"skewed,omitempty"`      // nodes whose clock is off beyond the bound
	Taken       []int  `json:"taken,omitempty"`       // nodes where another owner holds the key
}

// A Keeper is a Locker that can keep a lock past its TTL by extending it in
// the background, the way the implementation's users do.
type Keeper interface {
	Keep(ctx context.Context, key string) (Kept, error)
}

// Kept is a lock kept by extension. Until moves with every extension.
type Kept interface {
	Held
	// Lost is closed once the holder knows the lock is gone (an extension
	// was refused or reached too few nodes); Err then says why.
	Lost() <-chan struct{}
	Err() error
}
