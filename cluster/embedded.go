package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// clockTick is how often a skewed embedded node's clock is pushed into
// miniredis (SetTime freezes miniredis' clock between pushes).
const clockTick = time.Millisecond

// embeddedNode is a miniredis server in this process.
//
// Kill, Stop and Restart close the server. Whether the data survives a
// restart follows the node's persistence: PersistNone loses everything, the
// AOF settings keep everything (as if fsynced: use WipeData to emulate the
// lost second of AOF-everysec). Pause holds the server's lock, so commands
// queue up and run on Resume. The wall clock (TIME, TTLs) is
// base + (now-anchor)*rate + jumps, pushed with SetTime by a ticker
// goroutine owned by the node; with ClockTTL on, TTLs follow it.
type embeddedNode struct {
	n *Node

	mu     sync.Mutex // guards m, skewed, anchorReal, anchorFake, rate, paused
	m      *miniredis.Miniredis
	paused bool
	// clock model; unused until the first ClockJump/ClockRate
	skewed     bool
	anchorReal time.Time
	anchorFake time.Time
	rate       float64
	jumps      time.Duration // cumulative jump already in anchorFake

	tickStop chan struct{}
	tickDone chan struct{}
}

func (e *embeddedNode) redisOptions() *redis.Options { return nil }

// fakeNowLocked is the node's wall clock; e.mu must be held.
func (e *embeddedNode) fakeNowLocked(now time.Time) time.Time {
	if !e.skewed {
		return now
	}
	return e.anchorFake.Add(time.Duration(float64(now.Sub(e.anchorReal)) * e.rate))
}

func (e *embeddedNode) start(ctx context.Context, wipe bool) error {
	keep := !wipe && e.n.Persistence() != PersistNone
	e.mu.Lock()
	old := e.m
	e.mu.Unlock()
	if keep && old != nil {
		// Same server object, same port: the data set is still in memory.
		if err := old.Restart(); err == nil {
			return e.n.setUpstream(old.Addr())
		}
		// The old port is taken: fall through to a fresh server, data copied below.
	}
	m := miniredis.NewMiniRedis()
	e.mu.Lock()
	if e.skewed {
		m.SetTime(e.fakeNowLocked(time.Now()))
	}
	e.mu.Unlock()
	m.ClockTTL(true)
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return err
	}
	if keep && old != nil {
		copyData(old, m)
	}
	e.mu.Lock()
	e.m = m
	e.mu.Unlock()
	return e.n.setUpstream(m.Addr())
}

// copyData carries string keys (with their TTLs) from a closed server over;
// only used when the old port could not be reused.
func copyData(from, to *miniredis.Miniredis) {
	for _, k := range from.Keys() {
		v, err := from.Get(k)
		if err != nil {
			continue
		}
		_ = to.Set(k, v)
		if ttl := from.TTL(k); ttl > 0 {
			to.SetTTL(k, ttl)
		}
	}
}

func (e *embeddedNode) kill(ctx context.Context) error {
	e.mu.Lock()
	m, paused := e.m, e.paused
	e.paused = false
	e.mu.Unlock()
	if m == nil {
		return nil
	}
	if paused {
		m.Unlock()
	}
	m.Close()
	return nil
}

func (e *embeddedNode) stop(ctx context.Context) error { return e.kill(ctx) }

func (e *embeddedNode) pause(ctx context.Context) error {
	e.mu.Lock()
	m := e.m
	e.mu.Unlock()
	if m == nil {
		return errors.New("no server")
	}
	m.Lock() // blocks every command until resume
	e.mu.Lock()
	e.paused = true
	e.mu.Unlock()
	return nil
}

func (e *embeddedNode) resume(ctx context.Context) error {
	e.mu.Lock()
	m, paused := e.m, e.paused
	e.paused = false
	e.mu.Unlock()
	if paused && m != nil {
		m.Unlock()
	}
	return nil
}

func (e *embeddedNode) setClock(ctx context.Context, offset time.Duration, rate float64) error {
	now := time.Now()
	e.mu.Lock()
	// Re-anchor: from now on fake = (real now + offset) advancing at rate,
	// except that a pure rate change keeps the current fake time (no jump).
	cur := e.fakeNowLocked(now)
	prevOffset := e.jumps
	e.anchorReal = now
	e.anchorFake = cur.Add(offset - prevOffset)
	e.rate = rate
	e.skewed = true
	e.jumps = offset
	m, paused := e.m, e.paused
	fake := e.fakeNowLocked(now)
	startTicker := e.tickStop == nil
	if startTicker {
		e.tickStop = make(chan struct{})
		e.tickDone = make(chan struct{})
	}
	e.mu.Unlock()
	if m != nil && !paused {
		m.SetTime(fake) // the jump is visible before ClockJump returns
	}
	if startTicker {
		go e.tick()
	}
	return nil
}

func (e *embeddedNode) tick() {
	defer close(e.tickDone)
	t := time.NewTicker(clockTick)
	defer t.Stop()
	for {
		select {
		case <-e.tickStop:
			return
		case <-t.C:
			e.mu.Lock()
			m, paused := e.m, e.paused
			fake := e.fakeNowLocked(time.Now())
			e.mu.Unlock()
			if m != nil && !paused {
				m.SetTime(fake)
			}
		}
	}
}

func (e *embeddedNode) close() error {
	e.mu.Lock()
	stop, done := e.tickStop, e.tickDone
	e.mu.Unlock()
	err := e.kill(context.Background())
	if stop != nil {
		close(stop)
		<-done
	}
	return err
}
