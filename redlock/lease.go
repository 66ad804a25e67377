package redlock

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/quorumlock/quorumlock/clock"
)

// lease is the local side of a held lock: its validity deadline on the
// monotonic clock, the timer that ends it there, and the context that is
// cancelled, with the reason as its cause, the moment it ends.
type lease struct {
	clk    clock.Clock
	key    string
	ctx    context.Context
	cancel context.CancelCauseFunc
	onEnd  func(cause error) // called once, after the lease ended

	mu     sync.Mutex
	until  time.Time
	timer  clock.Timer
	ended  bool
	failed error // the last failed extension, named if the lease runs out
	capped bool  // auto-extension stopped at the maximum hold time
}

func (s *lease) start(clk clock.Clock, key string, until time.Time, onEnd func(error)) {
	s.clk, s.key, s.until, s.onEnd = clk, key, until, onEnd
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	s.mu.Lock()
	s.armLocked()
	s.mu.Unlock()
}

// armLocked (re)starts the timer that ends the lease at until.
func (s *lease) armLocked() {
	if s.timer != nil {
		s.timer.Stop()
	}
	s.timer = s.clk.AfterFunc(s.until.Sub(s.clk.Now()), s.onDeadline)
}

func (s *lease) onDeadline() {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	if s.clk.Now().Before(s.until) { // extended since the timer was set
		s.armLocked()
		s.mu.Unlock()
		return
	}
	reason := ErrExpired
	switch {
	case s.capped:
		reason = withDetail(ErrExpired, "maximum hold time reached (WithMaxHold)")
	case s.failed != nil:
		// Wrapped, so that errors.As finds the last failed round.
		reason = fmt.Errorf("%w after failed extensions: %w", ErrExpired, s.failed)
	}
	s.mu.Unlock()
	s.end(reason, true)
}

// valid reports whether the lease has not ended and its deadline is ahead.
func (s *lease) valid() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.ended && s.clk.Now().Before(s.until)
}

func (s *lease) deadline() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.until
}

// extendTo moves the deadline to until (never backwards); false when the
// lease has already ended.
func (s *lease) extendTo(until time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return false
	}
	if until.After(s.until) {
		s.until = until
		s.armLocked()
	}
	s.failed = nil
	return true
}

func (s *lease) noteFailure(err error) {
	s.mu.Lock()
	s.failed = err
	s.mu.Unlock()
}

func (s *lease) failing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed != nil
}

func (s *lease) setCapped() {
	s.mu.Lock()
	s.capped = true
	s.mu.Unlock()
}

// end ends the lease with reason, once; lost says whether the lock was lost
// (the cause then matches ErrLockLost and wraps reason) rather than released.
// It reports whether this call ended it.
func (s *lease) end(reason error, lost bool) bool {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return false
	}
	s.ended = true
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	cause := reason
	if lost {
		cause = &lostError{key: s.key, reason: reason}
	}
	s.cancel(cause)
	s.onEnd(cause)
	return true
}

// endState returns whether the lease ended and, if it did not, whether its
// deadline passed.
func (s *lease) endState() (ended, expired bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended, !s.clk.Now().Before(s.until)
}
