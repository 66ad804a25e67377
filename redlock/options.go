package redlock

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/quorumlock/quorumlock/clock"
)

// Defaults. DefaultTTL and DefaultDriftFactor match go-redsync/redsync so that
// side-by-side runs compare like with like.
const (
	DefaultTTL           = 8 * time.Second
	DefaultDriftFactor   = 0.01
	DefaultRetryMin      = 50 * time.Millisecond
	DefaultRetryMax      = 250 * time.Millisecond
	minNodeTimeout       = 50 * time.Millisecond
	defaultMaxHoldFactor = 100
)

// settings are the per-lock parameters after options are applied.
type settings struct {
	ttl         time.Duration
	driftFactor float64
	nodeTimeout time.Duration // 0: derived from ttl
	retryMin    time.Duration
	retryMax    time.Duration
	tries       int // 0: until ctx is done
	fencing     bool
	quarantine  time.Duration // < 0: same as ttl; 0: off
	maxSkew     time.Duration // < 0: ttl/10; 0: off
	autoExtend  bool
	maxHold     time.Duration // < 0: defaultMaxHoldFactor×ttl; 0: unbounded
	wakeup      bool
}

func defaultSettings() settings {
	return settings{
		ttl:         DefaultTTL,
		driftFactor: DefaultDriftFactor,
		retryMin:    DefaultRetryMin,
		retryMax:    DefaultRetryMax,
		quarantine:  -1,
		maxSkew:     -1,
		maxHold:     -1,
		wakeup:      true,
	}
}

// resolve fills the TTL-relative defaults and checks every value, naming the
// bad one in the error.
func (s settings) resolve() (settings, error) {
	if s.ttl <= 0 {
		return s, fmt.Errorf("redlock: TTL %v must be positive", s.ttl)
	}
	if s.driftFactor < 0 || s.driftFactor >= 0.5 {
		return s, fmt.Errorf("redlock: drift factor %v out of range [0, 0.5)", s.driftFactor)
	}
	if drift := clock.Drift(s.ttl, s.driftFactor); s.ttl <= drift {
		return s, fmt.Errorf("redlock: TTL %v must be larger than the clock drift allowance %v (TTL×%v + %v)",
			s.ttl, drift, s.driftFactor, clock.MinDrift)
	}
	if s.nodeTimeout < 0 {
		return s, fmt.Errorf("redlock: node timeout %v must not be negative", s.nodeTimeout)
	}
	if s.nodeTimeout == 0 {
		s.nodeTimeout = min(max(s.ttl/20, minNodeTimeout), s.ttl/4)
	}
	if s.nodeTimeout >= s.ttl {
		return s, fmt.Errorf("redlock: node timeout %v must be shorter than the TTL %v", s.nodeTimeout, s.ttl)
	}
	if s.retryMin < 0 || s.retryMax < s.retryMin {
		return s, fmt.Errorf("redlock: retry delay [%v, %v] must satisfy 0 ≤ min ≤ max", s.retryMin, s.retryMax)
	}
	if s.tries < 0 {
		return s, fmt.Errorf("redlock: tries %d must not be negative", s.tries)
	}
	if s.quarantine < 0 {
		s.quarantine = s.ttl
	}
	if s.maxSkew < 0 {
		s.maxSkew = s.ttl / 10
	}
	if s.maxSkew > 0 && s.maxSkew < time.Millisecond {
		return s, fmt.Errorf("redlock: max clock skew %v below the 1ms resolution of the nodes' clocks", s.maxSkew)
	}
	if s.maxHold < 0 {
		s.maxHold = defaultMaxHoldFactor * s.ttl
	}
	return s, nil
}

// Option configures a Client. Every LockOption is also an Option: given to
// New it sets the default for every lock of that client.
type Option interface {
	applyClient(*clientConfig)
}

// LockOption configures one acquisition (and New's defaults).
type LockOption interface {
	Option
	applyLock(*settings)
}

type clientConfig struct {
	lock   settings
	clock  clock.Clock
	logger *slog.Logger
}

type lockOption func(*settings)

func (f lockOption) applyLock(s *settings)       { f(s) }
func (f lockOption) applyClient(c *clientConfig) { f(&c.lock) }

type clientOption func(*clientConfig)

func (f clientOption) applyClient(c *clientConfig) { f(c) }

// WithTTL sets how long the nodes keep the lock. Default DefaultTTL (8 s, as
// redsync).
func WithTTL(ttl time.Duration) LockOption {
	return lockOption(func(s *settings) { s.ttl = ttl })
}

// WithDriftFactor sets the share of the TTL allowed for clock drift between
// the caller and the nodes; the allowance is TTL×factor + 2 ms. Default 0.01
// (the spec's and redsync's). Range [0, 0.5).
func WithDriftFactor(f float64) LockOption {
	return lockOption(func(s *settings) { s.driftFactor = f })
}

// WithNodeTimeout bounds each request to one node. Default TTL/20 (400 ms
// for the default TTL, redsync's value), at least 50 ms and at most TTL/4.
// The spec suggests 5–50 ms for a 10 s TTL, for a quiet network. Here a
// generous bound costs little: the decision is taken as soon as a majority
// answered, so a slow node only delays a decision that needs it, and the
// time spent always comes off the validity. A tight bound, on the other
// hand, turns a loaded host's queueing into failed votes, retries and keys
// that land after their attempt gave up.
func WithNodeTimeout(d time.Duration) LockOption {
	return lockOption(func(s *settings) { s.nodeTimeout = d })
}

// WithRetryDelay sets the range of the random delay between attempts when
// the key is taken and no release notification arrives first. Default
// 50–250 ms (redsync's). A waiter never sleeps past the holder's remaining
// TTL reported by the nodes.
func WithRetryDelay(min, max time.Duration) LockOption {
	return lockOption(func(s *settings) { s.retryMin, s.retryMax = min, max })
}

// WithTries bounds the number of attempts Acquire makes. Default 0: retry
// until ctx is done.
func WithTries(n int) LockOption {
	return lockOption(func(s *settings) { s.tries = n })
}

// WithFencing makes every acquisition also produce a fence token
// (Lock.Fence), strictly larger than the token of every earlier holder of
// the key. It costs one more round trip to a majority per acquisition.
// Default off.
func WithFencing(on bool) LockOption {
	return lockOption(func(s *settings) { s.fencing = on })
}

// WithQuarantine sets how long a node whose data is younger than d (it
// restarted without its data, or was flushed) refuses to vote. It must be at
// least the longest TTL any client uses on these nodes. Default: the lock's
// TTL. 0 turns the quarantine off.
func WithQuarantine(d time.Duration) LockOption {
	return lockOption(func(s *settings) { s.quarantine = max(d, 0) })
}

// WithMaxSkew sets the largest disagreement allowed between a node's clock
// and the caller's wall clock; a node beyond it does not vote. It assumes
// the clients' clocks are roughly synchronised (NTP). Default TTL/10. 0
// turns the guard off.
func WithMaxSkew(d time.Duration) LockOption {
	return lockOption(func(s *settings) { s.maxSkew = max(d, 0) })
}

// WithAutoExtend makes the lock extend itself when a third of its TTL is
// left, until it is released, lost, or reaches the maximum hold time.
// Default on for Do, off for Acquire and TryAcquire.
func WithAutoExtend(on bool) LockOption {
	return lockOption(func(s *settings) { s.autoExtend = on })
}

// WithMaxHold bounds how long auto-extension keeps a lock, so that a stuck
// holder cannot keep it forever (the spec's liveness bound). Default 100×TTL.
// 0 means no bound.
func WithMaxHold(d time.Duration) LockOption {
	return lockOption(func(s *settings) { s.maxHold = max(d, 0) })
}

// WithWakeup makes waiters subscribe to release notifications (Redis
// pub/sub) and retry at once when the holder releases, instead of only after
// the retry delay. Default on.
func WithWakeup(on bool) LockOption {
	return lockOption(func(s *settings) { s.wakeup = on })
}

// WithClock sets the time source used for validity. Default the process's
// monotonic clock; tests use clock.Fake.
func WithClock(c clock.Clock) Option {
	return clientOption(func(cfg *clientConfig) { cfg.clock = c })
}

// WithLogger reports refused votes (restart quarantine, clock skew), lost
// locks and failed releases. Default: no logging.
func WithLogger(l *slog.Logger) Option {
	return clientOption(func(cfg *clientConfig) { cfg.logger = l })
}
