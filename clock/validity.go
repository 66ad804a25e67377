package clock

import "time"

// MinDrift is the fixed part of the drift allowance: the spec adds 2 ms to
// account for Redis' 1 ms expiry resolution.
const MinDrift = 2 * time.Millisecond

// Drift is the allowance for clock drift between the caller and the nodes
// over a lock's lifetime: ttl×factor + 2 ms.
func Drift(ttl time.Duration, factor float64) time.Duration {
	return time.Duration(float64(ttl)*factor) + MinDrift
}

// Validity is the time a lock remains safe to use once the votes are in:
// ttl − elapsed − drift, where elapsed runs from just before the first
// request was sent. A validity ≤ 0 means the lock is not held.
func Validity(ttl, elapsed time.Duration, factor float64) time.Duration {
	return ttl - elapsed - Drift(ttl, factor)
}

// Deadline is the local instant at which a lock acquired (or extended) with
// requests sent at start stops being valid: start + ttl − drift.
func Deadline(start time.Time, ttl time.Duration, factor float64) time.Time {
	return start.Add(ttl - Drift(ttl, factor))
}

// Skew returns the absolute difference between two wall-clock readings.
func Skew(a, b time.Time) time.Duration {
	d := a.Sub(b)
	if d < 0 {
		return -d
	}
	return d
}
