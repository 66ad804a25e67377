package clock

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
