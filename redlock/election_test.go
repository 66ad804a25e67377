package redlock

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// realTime makes the nodes expire keys in real time, as Redis does.
func (tn *testNodes) realTime() *testNodes {
	for _, mr := range tn.mr {
		mr.ClockTTL(true)
	}
	return tn
}

// view is a second set of connections to the same nodes, with its own
// fault switches: one candidate's network, failing while the others' works.
func (tn *testNodes) view(t testing.TB) *testNodes {
	t.Helper()
	v := &testNodes{mr: tn.mr}
	for _, mr := range tn.mr {
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialTimeout: time.Second, ContextTimeoutEnabled: true})
		t.Cleanup(func() { _ = rdb.Close() })
		down, noVote, stall := new(atomic.Bool), new(atomic.Bool), new(atomic.Bool)
		rdb.AddHook(downHook{down, noVote, stall})
		v.clients = append(v.clients, rdb)
		v.down = append(v.down, down)
		v.noVote = append(v.noVote, noVote)
		v.stall = append(v.stall, stall)
	}
	return v
}

func campaign(t testing.TB, e *Election) *Term {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg(), 30*time.Second)
	defer cancel()
	term, err := e.Campaign(ctx)
	if err != nil {
		t.Fatalf("%s: Campaign: %v", e.Identity(), err)
	}
	return term
}

// waitFor polls cond until it holds or the budget runs out.
func waitUntil(t testing.TB, budget time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(budget)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("not within %v: %s", budget, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Leadership ends locally before anyone else can win it: a leader cut off
// from every node sees its term end (at its validity, with the failed
// extension behind the cause) before a second candidate's Campaign returns.
// The term does not outlive its validity although every renewal failed.
func TestElectionLeadershipEndsLocallyFirst(t *testing.T) {
	tn := newNodes(t, 3).realTime()
	const ttl = 600 * time.Millisecond
	av := tn.view(t)
	a := newClient(t, av)
	b := newClient(t, tn)
	ea := a.Election("lead", WithIdentity("a"), WithTTL(ttl))
	eb := b.Election("lead", WithIdentity("b"), WithTTL(ttl))

	ta := campaign(t, ea)
	var aEnd time.Time
	aEnded := make(chan struct{})
	go func() {
		<-ta.Done()
		aEnd = time.Now()
		close(aEnded)
	}()
	type result struct {
		t   *Term
		at  time.Time
		err error
	}
	bres := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(bg(), 30*time.Second)
		defer cancel()
		t, err := eb.Campaign(ctx)
		bres <- result{t, time.Now(), err}
	}()
	// b waits while a leads and extends.
	waitUntil(t, 10*time.Second, "a extends its term", func() bool { return a.Stats().Extended >= 2 })
	select {
	case r := <-bres:
		t.Fatalf("b led while a's term was valid: %v", r.err)
	default:
	}
	for _, d := range av.down {
		d.Store(true)
	}
	until := ta.l.Until()
	r := <-bres
	if r.err != nil {
		t.Fatalf("b: Campaign: %v", r.err)
	}
	defer r.t.Resign(bg())
	<-aEnded
	if !aEnd.Before(r.at) {
		t.Fatalf("a's term ended at %v, after b's began at %v", aEnd, r.at)
	}
	if aEnd.Sub(until) > ttl {
		t.Fatalf("a's term ended %v after its validity", aEnd.Sub(until))
	}
	cause := ta.Err()
	if !errors.Is(cause, ErrLeadershipLost) || !errors.Is(cause, ErrLockLost) || !errors.Is(cause, ErrExpired) {
		t.Fatalf("a's cause = %v, want ErrLeadershipLost wrapping the lost lock's expiry", cause)
	}
	if !errors.Is(context.Cause(ta.Context()), ErrLeadershipLost) {
		t.Fatalf("a's context cause = %v", context.Cause(ta.Context()))
	}
	var re *RoundError
	if !errors.As(cause, &re) || re.Op != "extend" {
		t.Fatalf("a's cause = %v, want the failed extension behind it", cause)
	}
	if r.t.Fence() <= ta.Fence() {
		t.Fatalf("b's fence %d not above a's %d", r.t.Fence(), ta.Fence())
	}
	if err := ta.Proclaim(bg(), []byte("late")); !errors.Is(err, ErrLeadershipLost) {
		t.Fatalf("Proclaim after the term = %v, want ErrLeadershipLost", err)
	}
	got, err := eb.Leader(bg())
	if err != nil || got.Identity != "b" || got.Fence != r.t.Fence() {
		t.Fatalf("Leader = %+v, %v; want b with fence %d", got, err, r.t.Fence())
	}
}

// Fence tokens strictly increase across terms, resigned or lost, of
// candidates on different Clients.
func TestElectionFenceIncreases(t *testing.T) {
	tn := newNodes(t, 3).realTime()
	cs := []*Client{newClient(t, tn), newClient(t, tn), newClient(t, tn)}
	var last uint64
	for i := 0; i < 9; i++ {
		e := cs[i%3].Election("fenced", WithTTL(time.Second))
		term := campaign(t, e)
		if term.Fence() <= last {
			t.Fatalf("term %d: fence %d not above %d", i, term.Fence(), last)
		}
		last = term.Fence()
		if err := term.Resign(bg()); err != nil {
			t.Fatalf("Resign: %v", err)
		}
		if !errors.Is(term.Err(), ErrLeadershipLost) || !errors.Is(term.Err(), ErrReleased) {
			t.Fatalf("Err after Resign = %v", term.Err())
		}
	}
}

// Leader returns ErrNoLeader when nobody leads, the record while someone
// does (also after its lock was extended past the first TTL, and after a
// Proclaim), and ErrNoLeader again after Resign. The metrics follow.
func TestElectionLeaderAndResign(t *testing.T) {
	tn := newNodes(t, 3).realTime()
	c := newClient(t, tn)
	const ttl = 300 * time.Millisecond
	e := c.Election("who", WithIdentity("me"), WithValue([]byte("10.0.0.1:80")), WithTTL(ttl))
	if _, err := e.Leader(bg()); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Leader before any term = %v, want ErrNoLeader", err)
	}
	term := campaign(t, e)
	if em := c.electionMeter("who"); !em.leading || em.term != term.Fence() {
		t.Fatalf("metrics: leading %v term %d, want true %d", em.leading, em.term, term.Fence())
	}
	waitUntil(t, 10*time.Second, "three extensions", func() bool { return c.Stats().Extended >= 3 })
	l, err := e.Leader(bg())
	if err != nil || l.Identity != "me" || string(l.Value) != "10.0.0.1:80" || l.Fence != term.Fence() {
		t.Fatalf("Leader after extensions = %+v, %v", l, err)
	}
	if err := term.Proclaim(bg(), []byte("10.0.0.2:80")); err != nil {
		t.Fatalf("Proclaim: %v", err)
	}
	if l, err = e.Leader(bg()); err != nil || string(l.Value) != "10.0.0.2:80" {
		t.Fatalf("Leader after Proclaim = %+v, %v", l, err)
	}
	if err := term.Resign(bg()); err != nil {
		t.Fatalf("Resign: %v", err)
	}
	select {
	case <-term.Done():
	default:
		t.Fatal("term not done after Resign")
	}
	if _, err := e.Leader(bg()); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Leader after Resign = %v, want ErrNoLeader", err)
	}
	if err := term.Proclaim(bg(), nil); !errors.Is(err, ErrLeadershipLost) {
		t.Fatalf("Proclaim after Resign = %v, want ErrLeadershipLost", err)
	}
	waitUntil(t, 5*time.Second, "metrics see the term end", func() bool {
		em := c.electionMeter("who")
		em.mu.Lock()
		defer em.mu.Unlock()
		return !em.leading && em.transitions == 2
	})
}

// Observe sees leader → no leader → new leader (and a Proclaim), driven by
// the announcements: each change arrives well before the periodic read
// (every TTL/2) could have found it. The channel closes with ctx.
func TestElectionObserve(t *testing.T) {
	tn := newNodes(t, 3).realTime()
	const ttl = 20 * time.Second
	c1, c2, obs := newClient(t, tn, WithTTL(ttl)), newClient(t, tn, WithTTL(ttl)), newClient(t, tn, WithTTL(ttl))
	e1 := c1.Election("obs", WithIdentity("one"), WithTTL(ttl))
	e2 := c2.Election("obs", WithIdentity("two"), WithTTL(ttl))
	ctx, cancel := context.WithCancel(bg())
	ch := obs.Election("obs", WithTTL(ttl)).Observe(ctx)
	next := func(what string) Leader {
		t.Helper()
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("%s: channel closed", what)
			}
			return l
		case <-time.After(ttl / 4):
			t.Fatalf("%s: nothing within %v", what, ttl/4)
		}
		return Leader{}
	}
	if l := next("initial state"); !l.IsZero() {
		t.Fatalf("initial state = %+v, want no leader", l)
	}
	// The announcements reach the observer once it subscribed.
	waitUntil(t, 10*time.Second, "the observer subscribed on every node", func() bool {
		for _, mr := range tn.mr {
			if mr.PubSubNumSub(releasedChannel)[releasedChannel] < 1 {
				return false
			}
		}
		return true
	})
	t1 := campaign(t, e1)
	if l := next("first leader"); l.Identity != "one" || l.Fence != t1.Fence() {
		t.Fatalf("got %+v, want one with fence %d", l, t1.Fence())
	}
	if err := t1.Proclaim(bg(), []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if l := next("proclaimed value"); string(l.Value) != "v2" {
		t.Fatalf("got %+v, want value v2", l)
	}
	if err := t1.Resign(bg()); err != nil {
		t.Fatal(err)
	}
	if l := next("no leader"); !l.IsZero() {
		t.Fatalf("got %+v, want no leader", l)
	}
	t2 := campaign(t, e2)
	defer t2.Resign(bg())
	if l := next("second leader"); l.Identity != "two" || l.Fence <= t1.Fence() {
		t.Fatalf("got %+v, want two with a fence above %d", l, t1.Fence())
	}
	cancel()
	for range ch { // drains a state sent meanwhile, then ends
	}
}

// Run never calls fn (nor signals a stop) for a term that never started.
func TestElectionRunNoTermNoCall(t *testing.T) {
	tn := newNodes(t, 3).realTime()
	holder, waiter := newClient(t, tn), newClient(t, tn)
	term := campaign(t, holder.Election("busy", WithTTL(time.Second)))
	defer term.Resign(bg())
	ctx, cancel := context.WithCancel(bg())
	var calls atomic.Int32
	done := make(chan error, 1)
	go func() {
		done <- waiter.Election("busy", WithTTL(time.Second)).Run(ctx, func(ctx context.Context, _ *Term) error {
			calls.Add(1)
			<-ctx.Done()
			return nil
		})
	}()
	waitUntil(t, 10*time.Second, "the second candidate contends", func() bool { return waiter.Stats().Attempts >= 3 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("fn called %d times without a term", n)
	}
	if term.Err() != nil {
		t.Fatalf("the leader's term ended: %v", term.Err())
	}
}

// Run campaigns again after fn returns (with an error or not): each call
// runs under a new term, started after the previous one ended, with a
// larger fence.
func TestElectionRunRestartsAfterFnReturns(t *testing.T) {
	tn := newNodes(t, 3).realTime()
	c := newClient(t, tn)
	e := c.Election("again", WithTTL(time.Second))
	ctx, cancel := context.WithCancel(bg())
	defer cancel()
	var terms []*Term
	var starts []time.Time
	var ends []time.Time
	err := e.Run(ctx, func(fctx context.Context, term *Term) error {
		starts = append(starts, time.Now())
		terms = append(terms, term)
		if len(terms) > 1 {
			<-terms[len(terms)-2].Done()
			ends = append(ends, time.Now())
		}
		switch len(terms) {
		case 1:
			return nil
		case 2:
			return errors.New("fn failed")
		}
		cancel()
		<-fctx.Done()
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if len(terms) != 3 {
		t.Fatalf("fn called %d times, want 3", len(terms))
	}
	for i := 1; i < 3; i++ {
		if terms[i].Fence() <= terms[i-1].Fence() {
			t.Fatalf("term %d fence %d not above %d", i, terms[i].Fence(), terms[i-1].Fence())
		}
		if terms[i-1].Err() == nil {
			t.Fatalf("term %d still running when term %d started", i-1, i)
		}
	}
	if terms[2].Err() == nil {
		t.Fatal("the last term was not resigned")
	}
	if _, err := e.Leader(bg()); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Leader after Run = %v, want ErrNoLeader", err)
	}
}

// When Run's ctx ends, fn's ctx is cancelled, Run waits for fn while the
// term still holds, then resigns: the next candidate leads promptly, not
// after the TTL.
func TestElectionRunCancelWaitsAndResigns(t *testing.T) {
	tn := newNodes(t, 3).realTime()
	const ttl = 20 * time.Second
	a, b := newClient(t, tn, WithTTL(ttl)), newClient(t, tn, WithTTL(ttl))
	ea := a.Election("handover", WithIdentity("a"), WithTTL(ttl))
	eb := b.Election("handover", WithIdentity("b"), WithTTL(ttl))
	ctx, cancel := context.WithCancel(bg())
	started := make(chan struct{})
	cleanup := make(chan struct{})
	var fnReturned time.Time
	var heldDuringCleanup Leader
	var cleanupErr error
	runErr := make(chan error, 1)
	go func() {
		runErr <- ea.Run(ctx, func(fctx context.Context, term *Term) error {
			close(started)
			<-fctx.Done()
			<-cleanup // work that finishes after the cancel
			heldDuringCleanup, cleanupErr = ea.Leader(bg())
			fnReturned = time.Now()
			return nil
		})
	}()
	<-started
	var bAt time.Time
	var bTerm *Term
	bDone := make(chan error, 1)
	go func() {
		cctx, ccancel := context.WithTimeout(bg(), ttl)
		defer ccancel()
		var err error
		bTerm, err = eb.Campaign(cctx)
		bAt = time.Now()
		bDone <- err
	}()
	waitUntil(t, 10*time.Second, "b contends", func() bool { return b.Stats().Attempts >= 2 })
	cancel()
	close(cleanup)
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want context.Canceled", err)
	}
	if cleanupErr != nil || heldDuringCleanup.Identity != "a" {
		t.Fatalf("during fn's cleanup the leader was %+v, %v; want a", heldDuringCleanup, cleanupErr)
	}
	if err := <-bDone; err != nil {
		t.Fatalf("b: %v", err)
	}
	defer bTerm.Resign(bg())
	if !bAt.After(fnReturned) {
		t.Fatalf("b led at %v, before a's fn returned at %v", bAt, fnReturned)
	}
	if d := bAt.Sub(fnReturned); d > ttl/4 {
		t.Fatalf("b led %v after a's fn returned, want promptly (TTL %v)", d, ttl)
	}
}

// A fn that ignores the cancellation holds the term no longer than the
// validity left when Run's ctx ended: Run resigns then, and returns once fn
// does.
func TestElectionRunCancelBounded(t *testing.T) {
	tn := newNodes(t, 3).realTime()
	const ttl = 500 * time.Millisecond
	a := newClient(t, tn)
	ea := a.Election("stuck", WithTTL(ttl))
	ctx, cancel := context.WithCancel(bg())
	release := make(chan struct{})
	var term *Term
	var mu sync.Mutex
	started := make(chan struct{})
	runErr := make(chan error, 1)
	go func() {
		runErr <- ea.Run(ctx, func(_ context.Context, t *Term) error {
			mu.Lock()
			term = t
			mu.Unlock()
			close(started)
			<-release // ignores its ctx
			return nil
		})
	}()
	<-started
	mu.Lock()
	tm := term
	mu.Unlock()
	cancel()
	cancelled := time.Now()
	select {
	case <-tm.Done():
	case <-time.After(10 * ttl):
		t.Fatal("term not ended while fn ignores the cancellation")
	}
	// The validity left at any moment is at most a TTL; one more for a
	// loaded host.
	if d := time.Since(cancelled); d > 2*ttl {
		t.Fatalf("term ended %v after the cancel, want within the validity left then (≤ TTL %v)", d, ttl)
	}
	if !errors.Is(tm.Err(), ErrReleased) {
		t.Fatalf("term ended with %v, want a resignation", tm.Err())
	}
	select {
	case err := <-runErr:
		t.Fatalf("Run returned (%v) before fn did", err)
	default:
	}
	close(release)
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v", err)
	}
}

// A term whose renewals all fail (the nodes hang: every extension runs out
// of time, an error the keeper only retries) ends at its validity, with the
// failed renewal as its cause, instead of going on.
func TestElectionTermEndsWhenRenewalsFail(t *testing.T) {
	tn := newNodes(t, 3).realTime()
	const ttl = 600 * time.Millisecond
	v := tn.view(t)
	c := newClient(t, v)
	term := campaign(t, c.Election("stalled", WithTTL(ttl)))
	waitUntil(t, 10*time.Second, "an extension", func() bool { return c.Stats().Extended >= 1 })
	for _, s := range v.stall {
		s.Store(true)
	}
	until := term.l.Until()
	<-term.Done()
	ended := time.Now()
	if ended.Before(until) {
		t.Fatalf("term ended %v before its validity, with no refusal", until.Sub(ended))
	}
	if ended.Sub(until) > ttl {
		t.Fatalf("term outlived its validity by %v", ended.Sub(until))
	}
	var re *RoundError
	if !errors.Is(term.Err(), ErrLeadershipLost) || !errors.Is(term.Err(), ErrExpired) || !errors.As(term.Err(), &re) || re.Op != "extend" {
		t.Fatalf("Err = %v, want ErrLeadershipLost wrapping the expiry and the failed extension", term.Err())
	}
	if c.stats.extendFailed.Load() == 0 {
		t.Fatal("no failed extension counted")
	}
	for _, s := range v.stall {
		s.Store(false)
	}
}

// The leader record expires with the lock and comes back with it: removed
// from every node (a restart of each without its data), the next extension
// writes it again; the term's context carries its lock for Guard.
func TestElectionRecordRepairedByExtension(t *testing.T) {
	tn := newNodes(t, 3).realTime()
	const ttl = 1500 * time.Millisecond
	c := newClient(t, tn)
	e := c.Election("rec", WithIdentity("keeper"), WithTTL(ttl))
	term := campaign(t, e)
	began := time.Now() // the first extension begins two thirds of a TTL later
	defer term.Resign(bg())
	if FromContext(term.Context()) != term.l {
		t.Fatal("the term's context does not carry its lock")
	}
	n := c.Stats().Extended
	// Campaign returns once a majority has the record: let the third write
	// land before the records are deleted, or it would bring one back.
	waitFor(t, func() bool {
		for _, mr := range tn.mr {
			if !mr.Exists(leaderPrefix + "rec") {
				return false
			}
		}
		return true
	})
	for _, mr := range tn.mr {
		mr.Del(leaderPrefix + "rec")
	}
	if _, err := e.Leader(bg()); !errors.Is(err, ErrNoLeader) && time.Since(began) < ttl/2 {
		t.Fatalf("Leader without records = %v, want ErrNoLeader", err)
	}
	// The second extension counted from now began after the deletes.
	waitUntil(t, 10*time.Second, "two extensions", func() bool { return c.Stats().Extended > n+1 })
	l, err := e.Leader(bg())
	if err != nil || l.Identity != "keeper" || l.Fence != term.Fence() {
		t.Fatalf("Leader after the extension = %+v, %v", l, err)
	}
	for i, mr := range tn.mr {
		if d := mr.TTL(leaderPrefix + "rec"); d <= 0 || d > ttl {
			t.Fatalf("node %d: record TTL %v, want the lock's (at most %v)", i, d, ttl)
		}
	}
}
