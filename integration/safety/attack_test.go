package safety

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/redlock"
)

// The attack shape: client A's view is cut off from nodes 3 and 4, so A
// holds on exactly nodes 0, 1 and 2; the fault hits node 0; client B's view
// reaches every node.
var (
	mine   = []int{0, 1, 2}
	others = []int{3, 4}
)

const victim = 0

// A fault hits the victim after A acquired. It returns once the fault is in
// force as B will see it; wait, when not nil, finishes what goes on in the
// background (a delayed restart).
type fault struct {
	name string
	// losesKey: once hit returned, the victim no longer holds A's key.
	losesKey bool
	hit      func(t *testing.T, c *cluster.Cluster) (wait func() error)
}

// restartNow kills the victim and starts it again at once with its data
// wiped: a node without persistence coming back inside A's TTL.
var restartNow = fault{name: "restart-now", losesKey: true, hit: func(t *testing.T, c *cluster.Cluster) func() error {
	t.Helper()
	if err := c.Node(victim).Restart(ctxFor(t, time.Minute), cluster.RestartOptions{WipeData: true}); err != nil {
		t.Fatal(err)
	}
	return nil
}}

// restartDelayed kills the victim and starts it empty only after more than
// a TTL: the spec's delayed restart, done by the operator.
var restartDelayed = fault{name: "restart-delayed", hit: func(t *testing.T, c *cluster.Cluster) func() error {
	t.Helper()
	n := c.Node(victim)
	ctx := ctxFor(t, time.Minute)
	if err := n.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.Restart(ctx, cluster.RestartOptions{WipeData: true, Delay: ttl + ttl/4}) }()
	var waited bool
	var err error
	wait := func() error {
		if !waited {
			waited, err = true, <-done
		}
		return err
	}
	t.Cleanup(func() { _ = wait() }) // before the cluster closes
	return wait
}}

// clockJump moves the victim's wall clock forward by two TTLs: Redis
// expires keys by wall clock, so A's key vanishes there.
var clockJump = fault{name: "clock-jump", losesKey: true, hit: func(t *testing.T, c *cluster.Cluster) func() error {
	t.Helper()
	if err := c.Node(victim).ClockJump(ctxFor(t, time.Minute), 2*ttl); err != nil {
		t.Fatal(err)
	}
	return nil
}}

// outcome is what one library did in one attack.
type outcome struct {
	ck       *checker
	overlaps []overlap
	// left is how much of A's validity remained when B first tried.
	left time.Duration
	// B's refusals inside A's validity; nil where B got the lock.
	tryErr, acquireErr error
}

func (o outcome) overlapTime() time.Duration {
	var d time.Duration
	for _, ov := range o.overlaps {
		d += ov.end - ov.start
	}
	return d
}

// runAttack runs the schedule on fresh nodes:
//
//  1. A acquires on its bare majority (checked: the key is on exactly
//     nodes 0, 1, 2);
//  2. the fault hits node 0;
//  3. B makes one attempt (TryAcquire / TryLock); if it gets the lock it
//     releases at once;
//  4. B calls Acquire / Lock with a context that ends with A's validity; if
//     it gets the lock it holds it until A's validity ends;
//  5. A releases when its validity ends;
//  6. B acquires again, which must succeed: the refusals above came from
//     the lock, not from a dead cluster.
//
// Every holding goes through the checker.
func runAttack(t *testing.T, lib library, f fault) outcome {
	t.Helper()
	c := newCluster(t, cluster.PersistNone)
	va, vb := view(t, c, "client-a"), view(t, c, "client-b")
	ctx := ctxFor(t, time.Minute)
	for _, i := range others {
		if err := va.Partition(ctx, i); err != nil {
			t.Fatal(err)
		}
	}
	a, b := lib.new(t, va.Clients()), lib.new(t, vb.Clients())
	k := key(t)
	ck := newChecker()

	actx, cancel := context.WithTimeout(ctx, 2*ttl)
	ha, err := a.acquire(actx, k)
	cancel()
	if err != nil {
		t.Fatalf("A got no lock on its bare majority %v: %v", mine, err)
	}
	ia := ck.acquired("A", "acquire", ha)
	if got := values(t, c, k); !holdsExactly(got, ha.token, mine) {
		t.Fatalf("A's key is on %v; want exactly nodes %v", holders(got, ha.token), mine)
	}

	wait := f.hit(t, c)
	if f.losesKey {
		waitKeyGone(t, c, k, ha.token)
	}
	o := outcome{ck: ck, left: time.Until(ha.until)}
	// B's first attempt takes milliseconds; a tenth of the TTL is room
	// enough, and tolerates a restart of well over a second on a busy host.
	if o.left < ttl/10 {
		t.Fatalf("%s took so long that only %v of A's validity is left: B cannot try inside it", f.name, o.left)
	}

	if hb, err := b.try(ctx, k); err == nil {
		ck.keep(t, "B", "try", hb, time.Time{})
	} else {
		o.tryErr = err
	}
	bctx, cancel := context.WithDeadline(ctx, ha.until)
	hb, err := b.acquire(bctx, k)
	cancel()
	if err == nil {
		ck.keep(t, "B", "acquire", hb, ha.until)
	} else {
		o.acquireErr = err
	}

	sleepUntil(ha.until)
	ck.released(ia)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_ = ha.release(rctx) // past its validity: quorumlock says so, the key goes anyway
	cancel()
	if wait != nil {
		if err := wait(); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
	}

	lctx, cancel := context.WithTimeout(ctx, 3*ttl)
	hb, err = b.acquire(lctx, k)
	cancel()
	if err != nil {
		t.Fatalf("B got no lock after A's validity ended: %v", err)
	}
	ck.keep(t, "B", "after", hb, time.Time{})

	o.overlaps = ck.overlaps()
	t.Logf("%s under %s: A's validity left when B tried %v; B try: %v; B acquire: %v; holds:%s",
		lib.name, f.name, o.left.Round(time.Millisecond), errOrHeld(o.tryErr), errOrHeld(o.acquireErr), ck)
	for _, ov := range o.overlaps {
		t.Logf("%s under %s: overlap: %v", lib.name, f.name, ov)
	}
	return o
}

func errOrHeld(err error) string {
	if err == nil {
		return "got the lock"
	}
	return "refused (" + err.Error() + ")"
}

// holdsExactly reports whether token is stored on exactly the nodes want.
func holdsExactly(vals []string, token string, want []int) bool {
	return slices.Equal(holders(vals, token), want)
}

func holders(vals []string, token string) []int {
	var out []int
	for i, v := range vals {
		if v == token {
			out = append(out, i)
		}
	}
	return out
}

// waitKeyGone waits until the victim no longer holds A's key (a clock jump
// takes effect on the next access; a restart at once).
func waitKeyGone(t *testing.T, c *cluster.Cluster, key, token string) {
	t.Helper()
	deadline := time.Now().Add(ttl / 2)
	for {
		v, err := c.Node(victim).Client().Get(context.Background(), key).Result()
		if err == nil && v != token || errors.Is(err, redis.Nil) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d still holds A's key (value %q, error %v): the fault did not take it away", victim, v, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRestartWithoutPersistence is experiment 1 of issue #6: one of A's
// three nodes restarts empty at once. quorumlock's restart quarantine keeps
// the empty node from voting, so B waits for A's validity to end; redsync
// lets B in while A holds.
func TestRestartWithoutPersistence(t *testing.T) {
	t.Run("quorumlock", func(t *testing.T) {
		o := runAttack(t, quorumlock, restartNow)
		requireSafe(t, o)
		if !nodeRefused(o.tryErr, victim, redlock.NodeQuarantined) {
			t.Errorf("B's attempt was refused without node %d's quarantine in the reasons: %v", victim, o.tryErr)
		}
		if !errors.Is(o.acquireErr, context.DeadlineExceeded) {
			t.Errorf("B's Acquire bounded by A's validity ended with %v; want it to run out", o.acquireErr)
		}
	})
	t.Run("redsync", func(t *testing.T) {
		requireViolation(t, runAttack(t, redsyncLib, restartNow))
	})
}

// TestRestartDelayedPastTTL is experiment 2, the control: the node stays
// down for more than a TTL before it comes back empty, so A's lock has
// expired everywhere when it votes again. Both libraries are safe, and B
// gets the lock once the node is back.
func TestRestartDelayedPastTTL(t *testing.T) {
	for _, lib := range []library{quorumlock, redsyncLib} {
		t.Run(lib.name, func(t *testing.T) {
			o := runAttack(t, lib, restartDelayed)
			requireSafe(t, o)
			if o.tryErr == nil || o.acquireErr == nil {
				t.Errorf("B got the lock while A's was valid (try: %v, acquire: %v)", o.tryErr, o.acquireErr)
			}
		})
	}
}

// TestClockJump is experiment 3: the wall clock of one of A's nodes jumps
// forward by two TTLs, which expires A's key there. quorumlock's skew guard
// refuses the node's vote; redsync lets B in while A holds.
func TestClockJump(t *testing.T) {
	t.Run("quorumlock", func(t *testing.T) {
		o := runAttack(t, quorumlock, clockJump)
		requireSafe(t, o)
		if !nodeRefused(o.tryErr, -1, redlock.NodeSkewed) {
			t.Errorf("B's attempt was refused without the clock skew among the reasons: %v", o.tryErr)
		}
	})
	t.Run("redsync", func(t *testing.T) {
		requireViolation(t, runAttack(t, redsyncLib, clockJump))
	})
}

func requireSafe(t *testing.T, o outcome) {
	t.Helper()
	for _, ov := range o.overlaps {
		t.Errorf("violation: %v", ov)
	}
}

// requireViolation insists the attack worked: without an overlap the
// schedule did not produce the situation it is about.
func requireViolation(t *testing.T, o outcome) {
	t.Helper()
	if len(o.overlaps) == 0 {
		t.Fatalf("no overlap: the attack lost its shape (B try: %v, B acquire: %v)%s", o.tryErr, o.acquireErr, o.ck)
	}
	t.Logf("expected violation: %d overlaps, %v in all", len(o.overlaps), o.overlapTime().Round(time.Millisecond))
}

// nodeRefused reports whether err names node i (any node when i < 0) as
// refusing for the given reason.
func nodeRefused(err error, i int, reason redlock.NodeReason) bool {
	var re *redlock.RoundError
	if !errors.As(err, &re) {
		return false
	}
	for _, n := range re.Nodes {
		if (i < 0 || n.Node == i) && n.Reason == reason {
			return true
		}
	}
	return false
}
