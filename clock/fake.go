package clock

import (
	"sort"
	"sync"
	"time"
)

// Fake is a Clock that moves only when Advance or Set is called. It is safe
// for concurrent use. Timers due after a move fire in deadline order, each
// AfterFunc callback in its own goroutine, as with the real clock.
type Fake struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

// NewFake returns a Fake clock reading start.
func NewFake(start time.Time) *Fake { return &Fake{now: start} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Since returns the fake time elapsed since t.
func (f *Fake) Since(t time.Time) time.Duration { return f.Now().Sub(t) }

// Advance moves the clock forward by d and fires every timer that is due.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	now := f.now
	var due, keep []*fakeTimer
	for _, t := range f.timers {
		if !t.at.After(now) {
			due = append(due, t)
		} else {
			keep = append(keep, t)
		}
	}
	f.timers = keep
	f.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.fire(now)
	}
}

// Pending returns the number of timers that have not fired or been stopped;
// tests use it to wait until a goroutine has armed its timer.
func (f *Fake) Pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// AfterFunc schedules f to run once the fake time has advanced by d.
func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer {
	return f.add(d, &fakeTimer{fn: fn})
}

// NewTimer returns a timer whose channel receives once the fake time has
// advanced by d.
func (f *Fake) NewTimer(d time.Duration) ChanTimer {
	return f.add(d, &fakeTimer{ch: make(chan time.Time, 1)})
}

func (f *Fake) add(d time.Duration, t *fakeTimer) *fakeTimer {
	t.clock = f
	f.mu.Lock()
	t.at = f.now.Add(d)
	if d <= 0 {
		now := f.now
		f.mu.Unlock()
		t.fire(now)
		return t
	}
	f.timers = append(f.timers, t)
	f.mu.Unlock()
	return t
}

type fakeTimer struct {
	clock *Fake
	at    time.Time
	fn    func()
	ch    chan time.Time
}

func (t *fakeTimer) fire(now time.Time) {
	if t.fn != nil {
		go t.fn()
		return
	}
	select {
	case t.ch <- now:
	default:
	}
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	f := t.clock
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, x := range f.timers {
		if x == t {
			f.timers = append(f.timers[:i], f.timers[i+1:]...)
			return true
		}
	}
	return false
}
