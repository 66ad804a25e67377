package redlock

import (
	"testing"
	"time"
)

func TestDriftAndValidity(t *testing.T) {
	cases := []struct {
		ttl, elapsed time.Duration
		factor       float64
		drift, valid time.Duration
	}{
		{8 * time.Second, 0, 0.01, 82 * time.Millisecond, 8*time.Second - 82*time.Millisecond},
		{8 * time.Second, 100 * time.Millisecond, 0.01, 82 * time.Millisecond, 8*time.Second - 182*time.Millisecond},
		{10 * time.Second, 9 * time.Second, 0.01, 102 * time.Millisecond, 898 * time.Millisecond},
		{time.Second, 0, 0, 2 * time.Millisecond, 998 * time.Millisecond},
		{time.Second, 998 * time.Millisecond, 0, 2 * time.Millisecond, 0},                     // not held
		{time.Second, 2 * time.Second, 0.01, 12 * time.Millisecond, -1012 * time.Millisecond}, // long gone
	}
	for _, c := range cases {
		if got := drift(c.ttl, c.factor); got != c.drift {
			t.Errorf("drift(%v, %v) = %v, want %v", c.ttl, c.factor, got, c.drift)
		}
		if got := validity(c.ttl, c.elapsed, c.factor); got != c.valid {
			t.Errorf("validity(%v, %v, %v) = %v, want %v", c.ttl, c.elapsed, c.factor, got, c.valid)
		}
	}
	start := time.Unix(1000, 0)
	if got, want := deadline(start, 8*time.Second, 0.01), start.Add(8*time.Second-82*time.Millisecond); !got.Equal(want) {
		t.Errorf("deadline = %v, want %v", got, want)
	}
	// The deadline is where validity reaches zero.
	if v := validity(8*time.Second, deadline(start, 8*time.Second, 0.01).Sub(start), 0.01); v != 0 {
		t.Errorf("validity at the deadline = %v, want 0", v)
	}
}
