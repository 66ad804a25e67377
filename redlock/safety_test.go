package redlock

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fresh nodes that were never bootstrapped serve a quarantine of one TTL
// from their first vote (a missing sentinel is indistinguishable from lost
// data); once that much time passed on the nodes' clocks they vote.
func TestFreshNodesQuarantined(t *testing.T) {
	tn := newNodes(t, 3)
	const ttl = 2 * time.Second
	c, err := New(tn.clients, WithTTL(ttl), WithMaxSkew(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.TryAcquire(bg(), "q")
	var qe *QuarantineError
	if !errors.Is(err, ErrNotObtained) || !errors.Is(err, ErrQuarantined) || !errors.As(err, &qe) {
		t.Fatalf("err = %v, want ErrNotObtained with ErrQuarantined", err)
	}
	if qe.Remaining <= 0 || qe.Remaining > ttl {
		t.Fatalf("remaining quarantine %v, want within (0, %v]", qe.Remaining, ttl)
	}
	if s := c.Stats(); s.VotesQuarantined != 3 {
		t.Fatalf("stats %+v, want 3 quarantined votes", s)
	}
	for i, mr := range tn.mr {
		if mr.Exists("q") {
			t.Fatalf("quarantined node %d took the key", i)
		}
		mr.SetTime(time.Now().Add(ttl))
	}
	l, err := c.TryAcquire(bg(), "q")
	if err != nil {
		t.Fatalf("after the quarantine: %v", err)
	}
	_ = l.Release(bg())
	// Bootstrap never shortens a quarantine that already started.
	for _, mr := range tn.mr {
		mr.FlushAll()
	}
	if _, err := c.TryAcquire(bg(), "q2"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("after data loss: %v, want ErrQuarantined", err)
	}
	if err := c.Bootstrap(bg()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryAcquire(bg(), "q2"); !errors.Is(err, ErrQuarantined) {
		t.Fatalf("bootstrap after data loss lifted the quarantine: %v", err)
	}
}

// The restart-without-persistence attack on embedded nodes: A holds the lock
// on exactly three of five nodes, one of them loses its data, and B tries on
// all five. With the quarantine B is refused; without it, B gets a second
// majority while A's lock is valid.
func TestQuarantineStopsRestartAttack(t *testing.T) {
	for _, on := range []bool{true, false} {
		name := "quarantine"
		if !on {
			name = "no-quarantine"
		}
		t.Run(name, func(t *testing.T) {
			tn := newNodes(t, 5)
			a := newClient(t, tn)
			b := newClient(t, tn)
			tn.noVote[3].Store(true)
			tn.noVote[4].Store(true)
			la, err := a.TryAcquire(bg(), "attack")
			tn.noVote[3].Store(false)
			tn.noVote[4].Store(false)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 3; i++ {
				waitFor(t, func() bool { return tn.mr[i].Exists("attack") })
			}
			tn.mr[0].FlushAll() // node 0 restarts empty
			var opts []LockOption
			if !on {
				opts = append(opts, WithQuarantine(0))
			}
			lb, err := b.TryAcquire(bg(), "attack", opts...)
			if on {
				if !errors.Is(err, ErrQuarantined) || !la.Valid() {
					t.Fatalf("B: %v, want refused by the quarantine while A is valid", err)
				}
				var ne *NodeError
				if !errors.As(err, &ne) || !strings.Contains(err.Error(), "node 0") {
					t.Fatalf("error %v does not name the quarantined node", err)
				}
			} else {
				if err != nil {
					t.Fatalf("without quarantine B was refused (%v): the attack did not reproduce", err)
				}
				if !la.Valid() {
					t.Fatal("A's lock ended before B acquired: no overlap to show")
				}
				_ = lb.Release(bg())
			}
			_ = la.Release(bg())
		})
	}
}

// A node whose clock is ahead of the caller's by more than the bound does not
// vote; the refusal names the node, is counted and logged.
func TestSkewGuard(t *testing.T) {
	tn := newNodes(t, 3)
	logs := &lockedBuffer{}
	c := newClient(t, tn, WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	tn.mr[1].SetTime(time.Now().Add(5 * time.Second))
	tn.mr[2].SetTime(time.Now().Add(-5 * time.Second))
	_, err := c.TryAcquire(bg(), "skew")
	var se *SkewError
	if !errors.Is(err, ErrClockSkew) || !errors.As(err, &se) {
		t.Fatalf("err = %v, want ErrClockSkew", err)
	}
	if se.Max != DefaultTTL/10 || (se.Skew < 4*time.Second && se.Skew > -4*time.Second) {
		t.Fatalf("skew error %+v", se)
	}
	if s := c.Stats(); s.VotesSkewed != 2 {
		t.Fatalf("stats %+v, want 2 skewed votes", s)
	}
	if !strings.Contains(logs.String(), "clock skew") || !strings.Contains(logs.String(), tn.mr[1].Addr()) {
		t.Fatalf("log does not report the refused vote: %q", logs.String())
	}
	if tn.mr[0].Exists("skew") {
		t.Fatal("the granting node kept the key of a failed attempt")
	}
	l, err := c.TryAcquire(bg(), "skew", WithMaxSkew(0))
	if err != nil {
		t.Fatalf("with the guard off: %v", err)
	}
	_ = l.Release(bg())
	l, err = c.TryAcquire(bg(), "skew", WithMaxSkew(10*time.Second))
	if err != nil {
		t.Fatalf("with a wider bound: %v", err)
	}
	_ = l.Release(bg())
}

func TestServerInfoParse(t *testing.T) {
	tn := newNodes(t, 1)
	// miniredis does not serve INFO server: the restart check is skipped.
	if _, _, err := serverInfo(bg(), tn.clients[0]); !errors.Is(err, errNoInfo) {
		t.Fatalf("serverInfo on miniredis: %v, want errNoInfo", err)
	}
}

// A node refused inside a successful acquisition is counted and logged too,
// not only refusals that made an attempt fail.
func TestRefusalInSuccessfulAcquisitionCounted(t *testing.T) {
	tn := newNodes(t, 5)
	logs := &lockedBuffer{}
	c := newClient(t, tn, WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	tn.mr[4].FlushAll() // node 4 lost its data: quarantined
	l, err := c.TryAcquire(bg(), "counted")
	if err != nil {
		t.Fatal(err)
	}
	for _, mr := range tn.mr[:4] { // let every answer arrive
		waitFor(t, func() bool { return mr.Exists("counted") })
	}
	waitFor(t, func() bool { return c.Stats().VotesQuarantined == 1 })
	if tn.mr[4].Exists("counted") {
		t.Fatal("the quarantined node took the key")
	}
	waitFor(t, func() bool {
		out := logs.String()
		return strings.Contains(out, "vote refused") && strings.Contains(out, tn.mr[4].Addr())
	})
	_ = l.Release(bg())
}

// lockedBuffer is a bytes.Buffer safe to write from the client's goroutines
// while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
