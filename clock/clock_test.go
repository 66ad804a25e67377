package clock

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
		if got := Drift(c.ttl, c.factor); got != c.drift {
			t.Errorf("Drift(%v, %v) = %v, want %v", c.ttl, c.factor, got, c.drift)
		}
		if got := Validity(c.ttl, c.elapsed, c.factor); got != c.valid {
			t.Errorf("Validity(%v, %v, %v) = %v, want %v", c.ttl, c.elapsed, c.factor, got, c.valid)
		}
	}
	start := time.Unix(1000, 0)
	if got, want := Deadline(start, 8*time.Second, 0.01), start.Add(8*time.Second-82*time.Millisecond); !got.Equal(want) {
		t.Errorf("Deadline = %v, want %v", got, want)
	}
	// The deadline is where validity reaches zero.
	if v := Validity(8*time.Second, Deadline(start, 8*time.Second, 0.01).Sub(start), 0.01); v != 0 {
		t.Errorf("validity at the deadline = %v, want 0", v)
	}
}

func TestSkew(t *testing.T) {
	a := time.Unix(100, 0)
	if Skew(a, a.Add(3*time.Second)) != 3*time.Second || Skew(a.Add(3*time.Second), a) != 3*time.Second {
		t.Fatal("Skew is not symmetric and absolute")
	}
}

func TestFakeTimersFireInOrder(t *testing.T) {
	f := NewFake(time.Unix(0, 0))
	fired := make(chan int, 3)
	f.AfterFunc(30*time.Millisecond, func() { fired <- 30 })
	stopped := f.AfterFunc(20*time.Millisecond, func() { fired <- 20 })
	tm := f.NewTimer(10 * time.Millisecond)
	if f.Pending() != 3 {
		t.Fatalf("pending = %d, want 3", f.Pending())
	}
	if !stopped.Stop() || stopped.Stop() {
		t.Fatal("Stop should succeed once")
	}
	f.Advance(15 * time.Millisecond)
	select {
	case <-tm.C():
	default:
		t.Fatal("timer due at 10ms did not fire at 15ms")
	}
	select {
	case v := <-fired:
		t.Fatalf("callback %d fired early", v)
	default:
	}
	f.Advance(15 * time.Millisecond)
	if v := <-fired; v != 30 {
		t.Fatalf("fired %d, want 30", v)
	}
	if f.Pending() != 0 {
		t.Fatalf("pending = %d after all fired", f.Pending())
	}
	if got := f.Since(time.Unix(0, 0)); got != 30*time.Millisecond {
		t.Fatalf("Since = %v", got)
	}
	// A non-positive duration fires at once.
	now := f.NewTimer(0)
	select {
	case <-now.C():
	default:
		t.Fatal("zero-duration timer did not fire at once")
	}
}

func TestReal(t *testing.T) {
	var c Clock = Real{}
	start := c.Now()
	done := make(chan struct{})
	c.AfterFunc(time.Millisecond, func() { close(done) })
	<-done
	tm := c.NewTimer(time.Millisecond)
	<-tm.C()
	if tm.Stop() {
		t.Fatal("Stop of a fired timer reported success")
	}
	if c.Since(start) < 2*time.Millisecond {
		t.Fatal("real clock did not advance")
	}
}
