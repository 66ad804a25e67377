package redlock

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Fresh nodes that were never bootstrapped serve a quarantine of one TTL
// from their first vote (a missing sentinel is indistinguishable from lost
// data); once that much time passed on the nodes' clocks they vote. The
// error of an acquisition that waits only for the quarantine says so.
func TestFreshNodesQuarantined(t *testing.T) {
	tn := newNodes(t, 3)
	const ttl = 2 * time.Second
	logs := &lockedBuffer{}
	c, err := New(tn.clients, WithTTL(ttl), WithMaxSkew(0), WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.TryAcquire(bg(), "q")
	var re *RoundError
	if !errors.As(err, &re) || !errors.Is(err, ErrNoQuorum) || len(re.Nodes) < 2 {
		t.Fatalf("err = %v, want ErrNoQuorum with the quarantined nodes", err)
	}
	for _, ne := range re.Nodes {
		if ne.Reason != NodeQuarantined || ne.Wait <= 0 || ne.Wait > ttl {
			t.Fatalf("node error %+v, want quarantined for at most %v", ne, ttl)
		}
	}
	if !strings.Contains(err.Error(), "(waiting for the restart quarantine of node ") {
		t.Fatalf("error %q does not say it waits for the quarantine", err)
	}
	waitFor(t, func() bool { return c.Stats().VotesQuarantined == 3 })
	// One line per node, at Info, naming Bootstrap; a second attempt logs
	// nothing new.
	waitFor(t, func() bool { return strings.Count(logs.String(), "restart quarantine") == 3 })
	_, _ = c.TryAcquire(bg(), "q")
	waitFor(t, func() bool { return c.Stats().VotesQuarantined == 6 })
	out := logs.String()
	if n := strings.Count(out, "restart quarantine"); n != 3 || !strings.Contains(out, "level=INFO") || !strings.Contains(out, "Bootstrap") {
		t.Fatalf("log has %d quarantine lines, want 3 at Info naming Bootstrap:\n%s", n, out)
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
			var opts []Option
			if !on {
				opts = append(opts, WithQuarantine(0))
			}
			b := newClient(t, tn, opts...)
			tn.noVote[3].Store(true)
			tn.noVote[4].Store(true)
			la, err := a.TryAcquire(bg(), "attack")
			if err != nil {
				t.Fatal(err)
			}
			// Nodes 3 and 4 vote again only once A's round has every
			// answer: a late vote let through would put A's key there.
			<-la.acq.Done()
			tn.noVote[3].Store(false)
			tn.noVote[4].Store(false)
			for i := 0; i < 3; i++ {
				waitFor(t, func() bool { return tn.mr[i].Exists("attack") })
			}
			tn.mr[0].FlushAll() // node 0 restarts empty
			lb, err := b.TryAcquire(bg(), "attack")
			if on {
				var re *RoundError
				if !errors.As(err, &re) || !la.Valid() {
					t.Fatalf("B: %v, want refused while A is valid", err)
				}
				if re.Nodes[0].Node != 0 || re.Nodes[0].Reason != NodeQuarantined || !strings.Contains(err.Error(), "node 0") {
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

// A node whose clock is off from the caller's by more than the bound does
// not vote; the refusal names the node, is counted and logged once.
func TestSkewGuard(t *testing.T) {
	tn := newNodes(t, 3)
	logs := &lockedBuffer{}
	c := newClient(t, tn, WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	tn.mr[1].SetTime(time.Now().Add(5 * time.Second))
	tn.mr[2].SetTime(time.Now().Add(-5 * time.Second))
	_, err := c.TryAcquire(bg(), "skew")
	var re *RoundError
	if !errors.As(err, &re) || !errors.Is(err, ErrNoQuorum) || len(re.Nodes) != 2 {
		t.Fatalf("err = %v, want ErrNoQuorum with two skewed nodes", err)
	}
	if ne := re.Nodes[0]; ne.Node != 1 || ne.Reason != NodeSkewed || ne.Wait < 4*time.Second {
		t.Fatalf("node error %+v, want node 1 skewed by about +5s", ne)
	}
	if ne := re.Nodes[1]; ne.Node != 2 || ne.Reason != NodeSkewed || ne.Wait > -4*time.Second {
		t.Fatalf("node error %+v, want node 2 skewed by about -5s", ne)
	}
	if s := c.Stats(); s.VotesSkewed != 2 {
		t.Fatalf("stats %+v, want 2 skewed votes", s)
	}
	if !strings.Contains(logs.String(), "clock is off") || !strings.Contains(logs.String(), tn.mr[1].Addr()) {
		t.Fatalf("log does not report the refused vote: %q", logs.String())
	}
	for _, mr := range tn.mr { // cleanup runs in the background
		waitFor(t, func() bool { return !mr.Exists("skew") })
	}
	off := newClient(t, tn, WithMaxSkew(0))
	l, err := off.TryAcquire(bg(), "skew")
	if err != nil {
		t.Fatalf("with the guard off: %v", err)
	}
	_ = l.Release(bg())
	wide := newClient(t, tn, WithMaxSkew(10*time.Second))
	l, err = wide.TryAcquire(bg(), "skew")
	if err != nil {
		t.Fatalf("with a wider bound: %v", err)
	}
	_ = l.Release(bg())
}

func TestParseInfo(t *testing.T) {
	txt := "# Server\r\nredis_version:7.0.15\r\nrun_id:4f3a9c0d1e2b\r\nrole:master\r\n# Memory\r\nmaxmemory:1048576\r\nmaxmemory_policy:allkeys-lru\r\n"
	f := parseInfo(txt)
	if f.runID != "4f3a9c0d1e2b" || f.version != "7.0.15" || f.role != "master" || f.maxmemory != 1048576 || f.policy != "allkeys-lru" {
		t.Fatalf("parsed %+v", f)
	}
	for _, c := range []struct {
		a, b string
		less bool
	}{{"3.0.7", "3.2.0", true}, {"3.2", "3.2.0", false}, {"7.0.15", "3.2.0", false}, {"10.0", "9.9.9", false}} {
		if versionLess(c.a, c.b) != c.less {
			t.Errorf("versionLess(%s, %s) != %v", c.a, c.b, c.less)
		}
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
		return strings.Contains(out, "restart quarantine") && strings.Contains(out, tn.mr[4].Addr())
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

// A node that first contact refused (the same server as another node, a
// Redis too old) is kept from extending too: counted, one server listed
// twice would extend a lock alone. The verdict is set by hand here (the
// embedded servers report no run id); TestSentinel in integration makes it
// with two clients of one real server.
func TestExtendSkipsRefusedNode(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn, WithAutoExtend(false))
	l, err := c.Acquire(bg(), "refused")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(tn.holders("refused", l.Token())) == 3 }) // a straggler may lag
	n := c.nodes[1]
	n.mu.Lock()
	n.fatal = errors.New("the same Redis server as node 0")
	n.probed.Store(true)
	n.mu.Unlock()
	if err := tn.mr[2].Set("refused", "another owner"); err != nil {
		t.Fatal(err)
	}
	err = l.Extend(bg())
	if err == nil {
		t.Fatal("extended by node 0 and the refused node 1 alone")
	}
	var re *RoundError
	if !errors.As(err, &re) || !strings.Contains(err.Error(), "node 1") || !strings.Contains(err.Error(), "the same Redis server as node 0") {
		t.Fatalf("extend: %v, want node 1's refusal named", err)
	}
}

// gateHook holds extension scripts on their way to a node until gate is
// closed, counting those it holds.
type gateHook struct {
	gate <-chan struct{}
	held *atomic.Int32
}

func (h gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if args := cmd.Args(); len(args) > 1 && (args[1] == extendScript.hash || args[1] == extendScript.src) {
			h.held.Add(1)
			<-h.gate
		}
		return next(ctx, cmd)
	}
}

// An extension sent before a release and arriving after it does not set the
// released key again (the repair of a key lost in a restart must not apply
// to a key its holder deleted): the key would otherwise stay for a TTL with
// nobody to release it, and every waiter would find it taken.
func TestReleaseBeatsInFlightRepair(t *testing.T) {
	tn := newNodes(t, 3)
	c := newClient(t, tn)
	l, err := c.Acquire(bg(), "k")
	if err != nil {
		t.Fatal(err)
	}
	<-l.acq.Done()
	gate := make(chan struct{})
	var held atomic.Int32
	for _, rdb := range tn.clients {
		rdb.AddHook(gateHook{gate: gate, held: &held})
	}
	extended := make(chan error, 1)
	go func() { extended <- l.Extend(bg()) }()
	waitFor(t, func() bool { return held.Load() == 3 })
	if err := l.Release(bg()); err != nil {
		t.Fatal(err)
	}
	close(gate)
	<-extended
	if h := tn.holders("k", l.Token()); len(h) != 0 {
		t.Fatalf("the released key is back on nodes %v, set again by an extension sent before the release", h)
	}
	// Another client gets it at once.
	other := newClient(t, tn)
	if _, err := other.TryAcquire(bg(), "k"); err != nil {
		t.Fatalf("after the release: %v", err)
	}
}
