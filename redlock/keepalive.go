package redlock

import (
	"container/heap"
	"sync"
	"time"
)

// keeper extends the auto-extending locks of one Client: one goroutine and
// one timer for all of them, whatever their number, and a goroutine per
// extension only while it runs. A lock is extended when a third of its TTL
// is left; a failed extension is retried every TTL/20 while the lock is
// valid; extension stops at the lock's maximum hold time.
type keeper struct {
	c       *Client
	mu      sync.Mutex
	h       lockHeap
	running bool
	stopped bool
	kick    chan struct{} // buffered 1: the earliest deadline moved
	quit    chan struct{}
	done    chan struct{}
}

// keepState is a lock's place in the keeper.
type keepState struct {
	index   int // in the heap; -1 when not scheduled
	next    time.Time
	removed bool // the lock ended: never schedule it again
}

func newKeeper(c *Client) *keeper {
	return &keeper{c: c, kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
}

// schedule plans the next extension of l, if it is due one.
func (k *keeper) schedule(l *Lock) {
	at, ok := k.next(l)
	k.mu.Lock()
	defer k.mu.Unlock()
	if !ok || k.stopped || l.ka.removed {
		return
	}
	l.ka.next = at
	if l.ka.index >= 0 {
		heap.Fix(&k.h, l.ka.index)
	} else {
		heap.Push(&k.h, l)
	}
	if !k.running {
		k.running = true
		go k.loop()
	}
	if k.h[0] == l {
		select {
		case k.kick <- struct{}{}:
		default:
		}
	}
}

// remove forgets l for good.
func (k *keeper) remove(l *Lock) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l.ka.removed = true
	if l.ka.index >= 0 {
		heap.Remove(&k.h, l.ka.index)
	}
}

// next is when l should be extended: a third of the TTL before its
// deadline, or soon when the last extension failed; ok is false when it
// should not be (ended, or at its maximum hold time).
func (k *keeper) next(l *Lock) (time.Time, bool) {
	s := l.req.s
	now := k.c.clk.Now()
	until := l.Until()
	if !l.Valid() {
		return time.Time{}, false // the deadline timer ends the lock with the reason
	}
	wait := until.Add(-s.ttl / 3).Sub(now)
	if l.lease.failing() {
		wait = min(s.ttl/20, until.Sub(now))
	}
	wait = max(wait, 0)
	if s.maxHold > 0 && now.Add(wait).Sub(l.acquired)+s.ttl > s.maxHold {
		l.lease.setCapped()
		return time.Time{}, false
	}
	return now.Add(wait), true
}

func (k *keeper) loop() {
	defer close(k.done)
	for {
		now := k.c.clk.Now()
		var due []*Lock
		wait := time.Duration(-1)
		k.mu.Lock()
		for len(k.h) > 0 && !k.h[0].ka.next.After(now) {
			due = append(due, heap.Pop(&k.h).(*Lock))
		}
		if len(k.h) > 0 {
			wait = k.h[0].ka.next.Sub(now)
		}
		k.mu.Unlock()
		for _, l := range due {
			k.c.background(func() {
				_ = l.Extend(l.lease.ctx) // a lost lock ends itself; a failure is retried
				k.schedule(l)
			})
		}
		if !k.sleep(wait) {
			return
		}
	}
}

// sleep waits d (forever when d < 0) or until the schedule changes; false
// when the keeper stops.
func (k *keeper) sleep(d time.Duration) bool {
	var tick <-chan time.Time
	if d >= 0 {
		t := k.c.clk.NewTimer(d)
		defer t.Stop()
		tick = t.C()
	}
	select {
	case <-k.quit:
		return false
	case <-k.kick:
	case <-tick:
	}
	return true
}

// stop ends auto-extension for good and waits for the loop.
func (k *keeper) stop() {
	k.mu.Lock()
	k.stopped = true
	running := k.running
	k.mu.Unlock()
	close(k.quit)
	if running {
		<-k.done
	}
}

// lockHeap orders locks by their next extension.
type lockHeap []*Lock

func (h lockHeap) Len() int           { return len(h) }
func (h lockHeap) Less(i, j int) bool { return h[i].ka.next.Before(h[j].ka.next) }
func (h lockHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].ka.index, h[j].ka.index = i, j
}
func (h *lockHeap) Push(x any) {
	l := x.(*Lock)
	l.ka.index = len(*h)
	*h = append(*h, l)
}
func (h *lockHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.ka.index = -1
	return l
}
