package redlock

import "time"

// minDrift is the fixed part of the drift allowance: the spec adds 2 ms to
// account for Redis' 1 ms expiry resolution.
const minDrift = 2 * time.Millisecond

// drift is the allowance for clock drift between the caller and the nodes
// over a lock's lifetime: ttl×factor + 2 ms.
func drift(ttl time.Duration, factor float64) time.Duration {
	return time.Duration(float64(ttl)*factor) + minDrift
}

// validity is the time a lock remains safe to use once the votes are in:
// ttl − elapsed − drift, where elapsed runs from just before the first
// request was sent. A validity ≤ 0 means the lock is not held.
func validity(ttl, elapsed time.Duration, factor float64) time.Duration {
	return ttl - elapsed - drift(ttl, factor)
}

// deadline is the local instant at which a lock acquired (or extended) with
// requests sent at start stops being valid: start + ttl − drift.
func deadline(start time.Time, ttl time.Duration, factor float64) time.Time {
	return start.Add(ttl - drift(ttl, factor))
}
