// Package clock is a source of monotonic time and timers: the running
// process's, or a fake one that tests move by hand.
//
// The real implementation uses the monotonic reading that Go attaches to
// time.Now, so a wall-clock step on the caller's machine neither lengthens
// nor shortens a duration measured with it.
package clock

import "time"

// Clock is a source of monotonic time and timers.
type Clock interface {
	// Now returns the current time. Durations between two Now readings are
	// monotonic.
	Now() time.Time
	// Since returns the time elapsed since t, a reading of this Clock.
	Since(t time.Time) time.Duration
	// AfterFunc calls f in its own goroutine once d has elapsed on this
	// Clock, unless the returned Timer is stopped first.
	AfterFunc(d time.Duration, f func()) Timer
	// NewTimer returns a Timer whose channel receives once d has elapsed.
	NewTimer(d time.Duration) ChanTimer
}

// Timer is a pending call created by AfterFunc.
type Timer interface {
	// Stop prevents the call if it has not started; it reports whether it
	// did so.
	Stop() bool
}

// ChanTimer is a timer that signals on a channel.
type ChanTimer interface {
	Timer
	C() <-chan time.Time
}

// Real is the Clock of the running process.
type Real struct{}

// Now returns time.Now, which carries a monotonic reading.
func (Real) Now() time.Time { return time.Now() }

// Since returns time.Since(t).
func (Real) Since(t time.Time) time.Duration { return time.Since(t) }

// AfterFunc wraps time.AfterFunc.
func (Real) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// NewTimer wraps time.NewTimer.
func (Real) NewTimer(d time.Duration) ChanTimer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) Stop() bool          { return r.t.Stop() }
func (r realTimer) C() <-chan time.Time { return r.t.C }
