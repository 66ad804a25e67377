package redlock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

// testNodes are N embedded Redis masters, each with its own client.
type testNodes struct {
	mr      []*miniredis.Miniredis
	clients []redis.UniversalClient
	down    []*atomic.Bool // a down node fails every command before it is sent
	noVote  []*atomic.Bool // such a node fails only acquisition scripts
	stall   []*atomic.Bool // a stalled node answers nothing until the command's ctx ends
}

// errNodeDown is what a node marked down answers.
var errNodeDown = errors.New("node down in this test")

// downHook fails commands while its node is marked down. (miniredis'
// SetError is not safe to toggle under concurrent load.)
type downHook struct{ down, noVote, stall *atomic.Bool }

func (h downHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h downHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.down.Load() || (h.noVote.Load() && isAcquisition(cmd)) {
			cmd.SetErr(errNodeDown)
			return errNodeDown
		}
		if h.stall.Load() {
			// A hung server: nothing comes back until the caller gives up
			// (bounded, so that a caller without a deadline cannot hang the
			// test binary).
			t := time.NewTimer(time.Minute)
			defer t.Stop()
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			err := fmt.Errorf("stalled node: %w", context.DeadlineExceeded)
			cmd.SetErr(err)
			return err
		}
		return next(ctx, cmd)
	}
}

// isAcquisition reports an EVAL/EVALSHA with the six keys of acquire.lua.
func isAcquisition(cmd redis.Cmder) bool {
	args := cmd.Args()
	// The release script has six keys too, and fewer arguments.
	return len(args) == 2+acquireArgs && (cmd.Name() == "evalsha" || cmd.Name() == "eval") && fmt.Sprint(args[2]) == "6"
}

// acquisitionToken is the token argument of an acquisition script call.
const acquisitionToken = 9

// ProcessPipelineHook treats a pipeline as its commands: a down node fails
// it, a stalled one answers nothing, an acquisition in it fails while its
// node does not vote.
func (h downHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.down.Load() || h.stall.Load() || h.noVote.Load() {
			var first error
			for _, cmd := range cmds {
				if err := h.ProcessHook(func(context.Context, redis.Cmder) error { return nil })(ctx, cmd); err != nil && first == nil {
					first = err
				}
			}
			if first != nil {
				return first
			}
		}
		return next(ctx, cmds)
	}
}

func newNodes(t testing.TB, n int) *testNodes {
	t.Helper()
	return newNodesWith(t, n, nil)
}

// newNodesWith is newNodes with the clients' options changed by configure.
func newNodesWith(t testing.TB, n int, configure func(*redis.Options)) *testNodes {
	t.Helper()
	tn := &testNodes{}
	for i := 0; i < n; i++ {
		mr := miniredis.RunT(t)
		o := &redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: time.Second, ContextTimeoutEnabled: true}
		if configure != nil {
			configure(o)
		}
		rdb := redis.NewClient(o)
		t.Cleanup(func() { _ = rdb.Close() })
		down, noVote, stall := new(atomic.Bool), new(atomic.Bool), new(atomic.Bool)
		rdb.AddHook(downHook{down, noVote, stall})
		tn.mr = append(tn.mr, mr)
		tn.clients = append(tn.clients, rdb)
		tn.down = append(tn.down, down)
		tn.noVote = append(tn.noVote, noVote)
		tn.stall = append(tn.stall, stall)
	}
	return tn
}

// newClient returns a Client over the nodes, bootstrapped so that fresh
// nodes vote at once, and closed at the end of the test.
func newClient(t testing.TB, tn *testNodes, opts ...Option) *Client {
	t.Helper()
	c, err := New(tn.clients, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.Bootstrap(context.Background()); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	return c
}

// holders returns the indexes of the nodes whose key holds token.
func (tn *testNodes) holders(key, token string) []int {
	var out []int
	for i, mr := range tn.mr {
		if v, err := mr.Get(key); err == nil && v == token {
			out = append(out, i)
		}
	}
	return out
}

// fastForward moves the TTLs of every node.
func (tn *testNodes) fastForward(d time.Duration) {
	for _, mr := range tn.mr {
		mr.FastForward(d)
	}
}

// stalledNode accepts connections and never answers.
func stalledNode(t testing.TB) string {
	t.Helper()
	return serveLocal(t, func(c net.Conn, _ *sync.WaitGroup) []net.Conn { return []net.Conn{c} })
}

// serveLocal listens on a loopback port and hands each connection to
// serve, which returns the connections to close when the test ends (its
// goroutines join wg, which the cleanup waits for).
func serveLocal(t testing.TB, serve func(c net.Conn, wg *sync.WaitGroup) []net.Conn) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			open := serve(c, &wg)
			mu.Lock()
			conns = append(conns, open...)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// downNode returns an address where nothing listens.
func downNode(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func bg() context.Context { return context.Background() }

// failures reports the first error of errs, naming its item (what and its
// index), and returns how many failed.
func failures(t *testing.T, what string, errs []error) int {
	t.Helper()
	failed := 0
	for i, err := range errs {
		if err != nil {
			if failed == 0 {
				t.Errorf("%s %d: %v", what, i, err)
			}
			failed++
		}
	}
	return failed
}

// starvedRound reports whether err comes from a round that failed only
// because nodes did not answer in time (node timeouts, requests piled up):
// on a loaded host that says the host was slow, not that a node refused.
func starvedRound(err error) bool {
	var re *RoundError
	if !errors.As(err, &re) || len(re.Nodes) == 0 {
		return false
	}
	for _, n := range re.Nodes {
		if n.Reason != NodeFailed || !timedOut(n.Err) {
			return false
		}
	}
	return true
}

// timedOut reports whether a node's failure is a timeout: the node timeout,
// a read past the connection's deadline, or requests piled up.
func timedOut(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout()) || errors.Is(err, errNotAnswering)
}

// starvedRelease reports whether a release failed only because deletes
// timed out: no quorum, and every node that failed timed out (nodes that
// never held the token say so, and do not count).
func starvedRelease(err error) bool {
	var re *RoundError
	if !errors.Is(err, ErrNoQuorum) || !errors.As(err, &re) {
		return false
	}
	failed := 0
	for _, n := range re.Nodes {
		switch {
		case n.Reason == NodeNotHeld:
		case n.Reason == NodeFailed && timedOut(n.Err):
			failed++
		default:
			return false
		}
	}
	return failed > 0
}
