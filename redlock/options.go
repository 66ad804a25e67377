package redlock

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"go.opentelemetry.io/otel/metric"

	"github.com/quorumlock/quorumlock/clock"
)

// DefaultTTL is how long the nodes keep a lock unless WithTTL says otherwise:
// 8 s, as go-redsync/redsync, so that side-by-side runs compare like with
// like.
const DefaultTTL = 8 * time.Second

const (
	defaultDriftFactor   = 0.01
	defaultRetryMin      = 50 * time.Millisecond
	defaultRetryMax      = 250 * time.Millisecond
	minNodeTimeout       = 50 * time.Millisecond
	maxNodeTimeout       = time.Second
	requestTimeoutFloor  = 250 * time.Millisecond
	maxTTL               = 24 * time.Hour
	defaultMaxHoldFactor = 100
	skewResolution       = time.Millisecond
)

// Option configures a Client. Every LockOption is also an Option: given to
// New it sets the default of every lock of that Client.
type Option interface {
	applyClient(*clientConfig)
}

// LockOption configures one acquisition (and, given to New, the Client's
// default). Every LockOption is also an ElectionOption: given to
// Client.Election it configures the lock of each of the election's terms.
type LockOption interface {
	Option
	ElectionOption
	applyLock(*lockConfig)
}

// lockConfig is what the lock options set, before defaults are derived.
type lockConfig struct {
	ttl            time.Duration
	driftFactor    float64
	nodeTimeout    time.Duration // 0: derived from the TTL
	retryMin       time.Duration
	retryMax       time.Duration
	tries          int
	fencing        bool
	autoExtend     bool
	maxHold        time.Duration
	maxHoldSet     bool
	nodeTimeoutSet bool
}

// clientConfig is what the options given to New set.
type clientConfig struct {
	lock          lockConfig
	quarantine    time.Duration
	quarantineSet bool
	maxSkew       time.Duration
	maxSkewSet    bool
	wakeup        bool
	fair          bool
	logger        *slog.Logger
	clock         clock.Clock
	meters        metric.MeterProvider
}

func defaultClientConfig() clientConfig {
	return clientConfig{
		lock: lockConfig{
			ttl:         DefaultTTL,
			driftFactor: defaultDriftFactor,
			retryMin:    defaultRetryMin,
			retryMax:    defaultRetryMax,
		},
		wakeup: true,
		fair:   true,
		clock:  clock.Real{},
	}
}

// settings are one lock's parameters, every default resolved.
type settings struct {
	ttl         time.Duration
	driftFactor float64
	nodeTimeout time.Duration
	// requestTimeout bounds each request, which may outlive the decision
	// taken at nodeTimeout: a slow answer then costs a late vote (cleaned
	// up) rather than an aborted request, which go-redis answers by
	// dropping the connection, so that the next request must dial again.
	requestTimeout time.Duration
	retryMin       time.Duration
	retryMax       time.Duration
	tries          int
	fencing        bool
	autoExtend     bool
	maxHold        time.Duration // 0: unbounded
}

// nodeSettings are the parameters that concern the whole node set; they are
// fixed when the Client is made.
type nodeSettings struct {
	quarantine time.Duration // 0: off
	maxSkew    time.Duration // 0: off
	wakeup     bool
	fair       bool
}

// resolveNodeSettings derives the node-set defaults from the Client's
// default TTL and checks what the options set.
func (cfg *clientConfig) resolveNodeSettings() (nodeSettings, error) {
	ns := nodeSettings{wakeup: cfg.wakeup, fair: cfg.fair}
	switch {
	case !cfg.quarantineSet:
		ns.quarantine = cfg.lock.ttl
	case cfg.quarantine < 0:
		return ns, fmt.Errorf("redlock: WithQuarantine(%v): must not be negative (0 turns the quarantine off)", cfg.quarantine)
	default:
		ns.quarantine = cfg.quarantine
	}
	switch {
	case !cfg.maxSkewSet:
		ns.maxSkew = max(cfg.lock.ttl/10, skewResolution)
	case cfg.maxSkew < 0:
		return ns, fmt.Errorf("redlock: WithMaxSkew(%v): must not be negative (0 turns the guard off)", cfg.maxSkew)
	case cfg.maxSkew > 0 && cfg.maxSkew < skewResolution:
		return ns, fmt.Errorf("redlock: WithMaxSkew(%v): below the %v resolution of the nodes' clocks", cfg.maxSkew, skewResolution)
	default:
		ns.maxSkew = cfg.maxSkew
	}
	return ns, nil
}

// resolve derives the TTL-relative defaults and checks every value against
// the others and against the node-set settings, naming the option at fault.
func (lc lockConfig) resolve(ns nodeSettings) (settings, error) {
	s := settings{
		ttl: lc.ttl, driftFactor: lc.driftFactor, retryMin: lc.retryMin, retryMax: lc.retryMax,
		tries: lc.tries, fencing: lc.fencing, autoExtend: lc.autoExtend,
	}
	switch {
	case s.ttl <= 0:
		return s, fmt.Errorf("redlock: WithTTL(%v): the TTL must be positive", s.ttl)
	case s.ttl > maxTTL:
		return s, fmt.Errorf("redlock: WithTTL(%v): longer than %v; a lock is a lease: hold it longer by extending it (WithAutoExtend)", s.ttl, maxTTL)
	case math.IsNaN(s.driftFactor) || s.driftFactor < 0 || s.driftFactor >= 0.5:
		return s, fmt.Errorf("redlock: WithDriftFactor(%v): must be in [0, 0.5)", s.driftFactor)
	}
	if d := drift(s.ttl, s.driftFactor); s.ttl <= d {
		return s, fmt.Errorf("redlock: WithTTL(%v): must be longer than the clock-drift allowance %v (TTL×%v + %v)",
			s.ttl, d, s.driftFactor, minDrift)
	}
	switch {
	case lc.nodeTimeoutSet && lc.nodeTimeout <= 0:
		return s, fmt.Errorf("redlock: WithNodeTimeout(%v): must be positive", lc.nodeTimeout)
	case lc.nodeTimeoutSet && lc.nodeTimeout >= s.ttl:
		return s, fmt.Errorf("redlock: WithNodeTimeout(%v): must be shorter than the TTL %v", lc.nodeTimeout, s.ttl)
	case lc.nodeTimeoutSet:
		s.nodeTimeout = lc.nodeTimeout
	default:
		s.nodeTimeout = min(max(s.ttl/20, minNodeTimeout), maxNodeTimeout, s.ttl/4)
	}
	s.requestTimeout = max(s.nodeTimeout, min(s.ttl/4, max(s.nodeTimeout, requestTimeoutFloor)))
	if s.retryMin < 0 || s.retryMax < s.retryMin {
		return s, fmt.Errorf("redlock: WithRetryDelay(%v, %v): must satisfy 0 ≤ min ≤ max", s.retryMin, s.retryMax)
	}
	if s.tries < 0 {
		return s, fmt.Errorf("redlock: WithTries(%d): must not be negative (0 retries until ctx ends)", s.tries)
	}
	switch {
	case !lc.maxHoldSet:
		s.maxHold = defaultMaxHoldFactor * s.ttl
	case lc.maxHold < 0:
		return s, fmt.Errorf("redlock: WithMaxHold(%v): must not be negative (0 means no bound)", lc.maxHold)
	default:
		s.maxHold = lc.maxHold
	}
	if ns.quarantine > 0 && s.ttl > ns.quarantine {
		return s, fmt.Errorf("redlock: the lock's TTL %v is longer than the Client's restart quarantine %v: "+
			"a node that restarted could vote again while a lock it lost is still valid; give New WithQuarantine(%v) or more",
			s.ttl, ns.quarantine, s.ttl)
	}
	if s.fencing {
		if err := fencingSound(s, ns); err != nil {
			return s, err
		}
	}
	return s, nil
}

// fencingSound checks the condition under which fence tokens stay strictly
// increasing when a node loses its data (see fencing.go and DESIGN.md): the
// quarantine must outlast how far two rounds' node clocks can disagree.
func fencingSound(s settings, ns nodeSettings) error {
	if ns.quarantine == 0 || ns.maxSkew == 0 {
		return errors.New("redlock: WithFencing needs the restart quarantine and the clock-skew guard " +
			"(tokens stay increasing across a node's data loss only because both are on); " +
			"do not turn them off with WithQuarantine(0) or WithMaxSkew(0)")
	}
	if need := fenceMargin(s, ns); ns.quarantine <= need {
		return fmt.Errorf("redlock: WithFencing: the restart quarantine %v must exceed 2×max skew + 2×node timeout + request timeout = %v "+
			"(lower WithMaxSkew or WithNodeTimeout, or raise WithQuarantine)", ns.quarantine, need)
	}
	return nil
}

// fenceMargin is how far a fence token can run ahead of a later round's
// node clocks.
func fenceMargin(s settings, ns nodeSettings) time.Duration {
	return 2*ns.maxSkew + 2*s.nodeTimeout + s.requestTimeout
}

type lockOption func(*lockConfig)

func (f lockOption) applyLock(c *lockConfig)     { f(c) }
func (f lockOption) applyClient(c *clientConfig) { f(&c.lock) }
func (f lockOption) applyElection(c *electionConfig) {
	c.lock = append(c.lock, f)
}

type clientOption func(*clientConfig)

func (f clientOption) applyClient(c *clientConfig) { f(c) }

// WithTTL sets how long the nodes keep the lock. Default DefaultTTL (8 s).
// At most 24 h; hold longer by extending.
func WithTTL(ttl time.Duration) LockOption {
	return lockOption(func(c *lockConfig) { c.ttl = ttl })
}

// WithDriftFactor sets the share of the TTL allowed for clock drift between
// the caller and the nodes; the allowance is TTL×factor + 2 ms. Default 0.01
// (the spec's and redsync's). Range [0, 0.5).
func WithDriftFactor(f float64) LockOption {
	return lockOption(func(c *lockConfig) { c.driftFactor = f })
}

// WithNodeTimeout bounds each request to one node. Default TTL/20 (400 ms
// for the default TTL, redsync's value), at least 50 ms, at most 1 s and at
// most TTL/4. The spec suggests 5–50 ms for a 10 s TTL, for a quiet
// network. Here a generous bound costs little: the decision is taken as
// soon as a majority answered, so a slow node only delays a decision that
// needs it, and the time spent always comes off the validity; a tight bound
// turns a loaded host's queueing into failed votes.
func WithNodeTimeout(d time.Duration) LockOption {
	return lockOption(func(c *lockConfig) { c.nodeTimeout, c.nodeTimeoutSet = d, true })
}

// WithRetryDelay sets the range of the random delay between attempts when
// no release announcement arrives first. Default 50–250 ms (redsync's). A
// waiter never sleeps past the holder's remaining TTL reported by the nodes.
func WithRetryDelay(min, max time.Duration) LockOption {
	return lockOption(func(c *lockConfig) { c.retryMin, c.retryMax = min, max })
}

// WithTries bounds the number of attempts Acquire makes. Default 0: retry
// until ctx ends.
func WithTries(n int) LockOption {
	return lockOption(func(c *lockConfig) { c.tries = n })
}

// WithFencing makes every acquisition also produce a fence token
// (Lock.Fence), strictly larger than the token of every earlier holder of the
// key, also after a minority of nodes lost its data. It costs one more round
// trip to a majority per acquisition, and needs the restart quarantine and
// the clock-skew guard on. Default off.
func WithFencing(on bool) LockOption {
	return lockOption(func(c *lockConfig) { c.fencing = on })
}

// WithAutoExtend makes the lock extend itself when a third of its TTL is
// left, until it is released, lost, or reaches the maximum hold time.
// Default on for Do, off for Acquire and TryAcquire.
func WithAutoExtend(on bool) LockOption {
	return lockOption(func(c *lockConfig) { c.autoExtend = on })
}

// WithMaxHold bounds how long auto-extension keeps a lock, so that a stuck
// holder cannot keep it forever. Default 100×TTL; 0 means no bound.
func WithMaxHold(d time.Duration) LockOption {
	return lockOption(func(c *lockConfig) { c.maxHold, c.maxHoldSet = d, true })
}

// WithQuarantine sets how long a node whose data is younger than d (it
// restarted, lost its data or is new) refuses to vote. It must be at least
// the longest TTL any client uses on these nodes; a lock with a longer TTL
// is refused. Default: the TTL given to New (DefaultTTL without one). 0
// turns the quarantine off.
func WithQuarantine(d time.Duration) Option {
	return clientOption(func(c *clientConfig) { c.quarantine, c.quarantineSet = d, true })
}

// WithMaxSkew sets the largest disagreement allowed between a node's clock
// and this client's wall clock; a node beyond it does not vote. It assumes
// the clients' clocks are roughly synchronised (NTP). Default a tenth of the
// TTL given to New (800 ms for DefaultTTL); 0 turns the guard off.
func WithMaxSkew(d time.Duration) Option {
	return clientOption(func(c *clientConfig) { c.maxSkew, c.maxSkewSet = d, true })
}

// WithWakeup makes waiters listen for release announcements (Redis pub/sub,
// one connection per node for the whole Client) and retry at once when the
// holder releases, instead of only after the retry delay. Default on.
func WithWakeup(on bool) Option {
	return clientOption(func(c *clientConfig) { c.wakeup = on })
}

// WithFairness makes waiters queue on the nodes: a waiter whose first
// attempt failed takes a ticket, the same on every node, and the nodes grant
// the key only to the waiter with the smallest live ticket, so that waiters
// of different processes are served in arrival order and a release wakes
// only the next one. It only refuses votes: it cannot let two holders in.
// go-redsync/redsync ignores the queue (its SET NX does not look at it), so
// a redsync contender may overtake quorumlock's waiters. Default on.
func WithFairness(on bool) Option {
	return clientOption(func(c *clientConfig) { c.fair = on })
}

// WithLogger reports what an operator should know, once per fact rather than
// once per retry: nodes in their restart quarantine and how to declare fresh
// nodes, refused votes, restarts detected, misconfigured nodes, lost locks.
// Default: no logging.
func WithLogger(l *slog.Logger) Option {
	return clientOption(func(c *clientConfig) { c.logger = l })
}

// withClock sets the time source used for validity; tests use clock.Fake.
func withClock(c clock.Clock) Option {
	return clientOption(func(cfg *clientConfig) { cfg.clock = c })
}
