package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/redlock"
)

// electionTerm is one term as its leader's fn saw it, on this process's
// monotonic clock (all candidates run here, so the times compare).
type electionTerm struct {
	who        int
	fence      uint64
	start, end time.Time
	cause      error
}

// Three candidates under Run on five docker nodes, each through its own
// proxies. The leader is cut off from a majority of the nodes: its fn sees
// its ctx cancelled with ErrLeadershipLost, a standby leads with a larger
// fence, and no two terms overlap.
func TestElectionFailoverOnPartition(t *testing.T) {
	const ttl = 2 * time.Second
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	var terms []*electionTerm
	changed := make(chan struct{}, 16)
	note := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	type candidate struct {
		view  *cluster.View
		locks *redlock.Client
	}
	var cands []candidate
	var wg sync.WaitGroup
	runErrs := make([]error, 3)
	for k := 0; k < 3; k++ {
		v, err := e.c.View(fmt.Sprintf("candidate-%d", k))
		if err != nil {
			t.Fatal(err)
		}
		locks, err := redlock.New(v.Clients(), redlock.WithQuarantine(quarantine), redlock.WithTTL(ttl))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = locks.Close() })
		cands = append(cands, candidate{view: v, locks: locks})
		el := locks.Election("it:election", redlock.WithIdentity(fmt.Sprint(k)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			runErrs[k] = el.Run(ctx, func(fctx context.Context, term *redlock.Term) error {
				tr := &electionTerm{who: k, fence: term.Fence(), start: time.Now()}
				mu.Lock()
				terms = append(terms, tr)
				mu.Unlock()
				note()
				<-fctx.Done()
				mu.Lock()
				tr.end, tr.cause = time.Now(), context.Cause(fctx)
				mu.Unlock()
				note()
				return nil
			})
		}()
	}
	waitTerms := func(what string, cond func([]*electionTerm) bool) []*electionTerm {
		t.Helper()
		deadline := time.After(20 * ttl)
		for {
			mu.Lock()
			snap := make([]*electionTerm, len(terms))
			for i, tr := range terms {
				c := *tr
				snap[i] = &c
			}
			mu.Unlock()
			if cond(snap) {
				return snap
			}
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("not within %v: %s; terms %+v", 20*ttl, what, snap)
			}
		}
	}

	first := waitTerms("a leader", func(ts []*electionTerm) bool { return len(ts) == 1 })[0]
	leader := cands[first.who]
	pctx := ctxFor(t, time.Minute)
	for i := 0; i < 3; i++ { // a majority of the five nodes
		if err := leader.view.Partition(pctx, i); err != nil {
			t.Fatal(err)
		}
	}
	cut := time.Now()
	ts := waitTerms("the leader's term ends and a standby leads", func(ts []*electionTerm) bool {
		return len(ts) >= 2 && !ts[0].end.IsZero()
	})
	old, next := ts[0], ts[1]
	if !errors.Is(old.cause, redlock.ErrLeadershipLost) {
		t.Fatalf("the old leader's fn saw cause %v, want ErrLeadershipLost", old.cause)
	}
	if next.who == old.who {
		t.Fatalf("the partitioned candidate %d led again", old.who)
	}
	if next.fence <= old.fence {
		t.Fatalf("fence %d after %d", next.fence, old.fence)
	}
	t.Logf("leader %d cut off; its term ended %v later, candidate %d led %v after the cut (TTL %v)",
		old.who, old.end.Sub(cut).Round(time.Millisecond), next.who, next.start.Sub(cut).Round(time.Millisecond), ttl)

	for i := 0; i < 3; i++ {
		if err := leader.view.Heal(pctx, i); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	wg.Wait()
	for k, err := range runErrs {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("candidate %d: Run = %v, want context.Canceled", k, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	all := slices.Clone(terms)
	slices.SortFunc(all, func(a, b *electionTerm) int { return a.start.Compare(b.start) })
	for i := 1; i < len(all); i++ {
		if all[i-1].end.IsZero() || !all[i-1].end.Before(all[i].start) {
			t.Fatalf("terms overlap: %d (fence %d) ended %v, %d (fence %d) began %v",
				all[i-1].who, all[i-1].fence, all[i-1].end, all[i].who, all[i].fence, all[i].start)
		}
		if all[i].fence <= all[i-1].fence {
			t.Fatalf("fences not increasing: %d then %d", all[i-1].fence, all[i].fence)
		}
	}
}
