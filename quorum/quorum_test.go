package quorum

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMajority(t *testing.T) {
	for n, want := range map[int]int{1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4} {
		if got := Majority(n); got != want {
			t.Errorf("Majority(%d) = %d, want %d", n, got, want)
		}
	}
}

// Every subset of nodes saying yes, with the rest split between refusals and
// errors: the round is decided OK exactly when the yes set is a majority.
func TestEverySubset(t *testing.T) {
	for _, n := range []int{1, 2, 3, 4, 5} {
		for mask := 0; mask < 1<<n; mask++ {
			yesSet := mask
			t.Run(fmt.Sprintf("n=%d/yes=%0*b", n, n, mask), func(t *testing.T) {
				r := Start(context.Background(), n, Within(time.Second), func(_ context.Context, i int) (int, bool, error) {
					if yesSet&(1<<i) != 0 {
						return i, true, nil
					}
					if i%2 == 0 {
						return i, false, errors.New("down")
					}
					return i, false, nil
				})
				d := r.Decide()
				yes := 0
				for i := 0; i < n; i++ {
					if yesSet&(1<<i) != 0 {
						yes++
					}
				}
				if want := yes >= Majority(n); d.OK != want {
					t.Fatalf("OK = %v with %d of %d yes, want %v", d.OK, yes, n, want)
				}
				votes := r.Wait()
				for i, v := range votes {
					if v.Node != i {
						t.Fatalf("vote %d carries node %d", i, v.Node)
					}
					want := Yes
					if yesSet&(1<<i) == 0 {
						want = No
						if i%2 == 0 {
							want = Failed
						}
					}
					if v.Outcome != want {
						t.Fatalf("node %d outcome %v, want %v", i, v.Outcome, want)
					}
					if want == Failed && v.Err == nil {
						t.Fatalf("node %d failed without its error", i)
					}
				}
			})
		}
	}
}

// A node that never answers does not delay a decision that the others can
// make, and its outcome is still collected by Wait once its timeout ends.
func TestStragglerDoesNotDelayDecision(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	const timeout = 300 * time.Millisecond
	for _, wantOK := range []bool{true, false} {
		t.Run(fmt.Sprintf("ok=%v", wantOK), func(t *testing.T) {
			r := Start(context.Background(), 5, Within(timeout), func(ctx context.Context, i int) (struct{}, bool, error) {
				if i == 4 {
					select {
					case <-ctx.Done():
						return struct{}{}, false, ctx.Err()
					case <-release:
						return struct{}{}, true, nil
					}
				}
				return struct{}{}, wantOK, nil
			})
			begin := time.Now()
			d := r.Decide()
			decided := time.Since(begin)
			if d.OK != wantOK {
				t.Fatalf("OK = %v, want %v", d.OK, wantOK)
			}
			if d.Pending == 0 {
				t.Fatalf("decision %+v waited for the straggler", d)
			}
			if decided >= timeout {
				t.Fatalf("decision took %v, not shorter than the per-node timeout %v", decided, timeout)
			}
			votes := r.Wait()
			if votes[4].Outcome != Failed || !errors.Is(votes[4].Err, context.DeadlineExceeded) {
				t.Fatalf("straggler vote = %+v, want Failed with a deadline error", votes[4])
			}
		})
	}
}

// A failure is decided as soon as a majority can no longer be reached, even
// while other nodes are still pending.
func TestEarlyFailure(t *testing.T) {
	block := make(chan struct{})
	r := Start(context.Background(), 5, Bounds{}, func(ctx context.Context, i int) (int, bool, error) {
		if i < 3 {
			return 0, false, nil
		}
		<-block
		return 0, true, nil
	})
	d := r.Decide()
	if d.OK || d.No != 3 || d.Pending != 2 {
		t.Fatalf("decision = %+v, want a failure with 3 no and 2 pending", d)
	}
	close(block)
	votes := r.Wait()
	if votes[3].Outcome != Yes || votes[4].Outcome != Yes {
		t.Fatalf("late yes votes lost: %+v", votes)
	}
	if d2 := r.Decide(); d2.Yes != 2 {
		t.Fatalf("after Wait the tally shows %d yes, want 2", d2.Yes)
	}
}

// Cancelling the caller's context decides the round at once and ends
// every pending call.
func TestContextCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := Start(ctx, 3, Bounds{}, func(ctx context.Context, i int) (int, bool, error) {
		<-ctx.Done()
		return 0, false, ctx.Err()
	})
	cancel()
	d := r.Decide()
	if d.OK || d.Failed+d.Pending != 3 {
		t.Fatalf("decision = %+v, want failed", d)
	}
	for _, v := range r.Wait() {
		if !errors.Is(v.Err, context.Canceled) {
			t.Fatalf("vote %+v does not carry context.Canceled", v)
		}
	}
}

func TestStartNeed(t *testing.T) {
	r := StartNeed(context.Background(), 5, 5, Within(time.Second), func(_ context.Context, i int) (int, bool, error) {
		return i, i != 2, nil
	})
	if d := r.Decide(); d.OK {
		t.Fatalf("need 5 but OK with %+v", d)
	}
	r.Wait()
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[Outcome]string{Pending: "pending", Yes: "yes", No: "no", Failed: "failed"} {
		if o.String() != want {
			t.Errorf("%d.String() = %q, want %q", o, o.String(), want)
		}
	}
}

// Collect takes the votes that have arrived and leaves the others Pending,
// without waiting; Wait then still collects them.
func TestCollect(t *testing.T) {
	hold := make(chan struct{})
	r := Start(context.Background(), 3, Within(time.Second), func(ctx context.Context, i int) (int, bool, error) {
		if i == 2 {
			<-hold
		}
		return i, true, nil
	})
	if d := r.Decide(); !d.OK || d.Pending != 1 {
		t.Fatalf("decision = %+v, want OK with node 2 pending", d)
	}
	if v := r.Collect(); v[0].Outcome != Yes || v[1].Outcome != Yes || v[2].Outcome != Pending {
		t.Fatalf("Collect = %+v, want yes, yes, pending", v)
	}
	close(hold)
	if v := r.Wait(); v[2].Outcome != Yes {
		t.Fatalf("Wait = %+v, want node 2 yes", v)
	}
	if v := r.Collect(); v[2].Outcome != Yes {
		t.Fatalf("Collect after Wait = %+v", v)
	}
}

// A call that ignores its context (a client with no per-request deadline)
// delays no decision past the round's deadline: the node is still pending
// then, and Wait collects it when it finally returns.
func TestDeadlineHoldsWhenCallsIgnoreCtx(t *testing.T) {
	hold := make(chan struct{})
	const timeout = 100 * time.Millisecond
	r := Start(context.Background(), 3, Within(timeout), func(ctx context.Context, i int) (int, bool, error) {
		if i > 0 {
			<-hold // ignores ctx
		}
		return i, true, nil
	})
	begin := time.Now()
	d := r.Decide()
	if took := time.Since(begin); took < timeout {
		t.Fatalf("decided after %v, before the deadline, with a majority still pending", took)
	}
	if d.OK || d.Yes != 1 || d.Pending != 2 {
		t.Fatalf("decision at the deadline = %+v, want not OK with 1 yes and 2 pending", d)
	}
	select {
	case <-r.Done():
		t.Fatal("Done closed while calls still run")
	default:
	}
	close(hold)
	if v := r.Wait(); v[1].Outcome != Yes || v[2].Outcome != Yes {
		t.Fatalf("late votes lost: %+v", v)
	}
}

// DecideOr gives up when its stop channel closes and says so.
func TestDecideOrStop(t *testing.T) {
	hold := make(chan struct{})
	r := Start(context.Background(), 3, Bounds{}, func(ctx context.Context, i int) (int, bool, error) {
		<-hold
		return i, true, nil
	})
	stop := make(chan struct{})
	close(stop)
	if d, ok := r.DecideOr(stop); ok || d.Pending != 3 {
		t.Fatalf("DecideOr(closed) = %+v, %v; want not ok with 3 pending", d, ok)
	}
	close(hold)
	if d, ok := r.DecideOr(nil); !ok || !d.OK {
		t.Fatalf("after the votes: %+v, %v", d, ok)
	}
	r.Wait()
}

// A call may run past the decision deadline up to its own: the decision
// comes at the first, the call's ctx ends at the second.
func TestCallOutlivesDecision(t *testing.T) {
	const decide, call = 50 * time.Millisecond, 2 * time.Second
	release := make(chan struct{})
	r := Start(context.Background(), 3, Bounds{Decide: decide, Call: call}, func(ctx context.Context, i int) (time.Time, bool, error) {
		dl, _ := ctx.Deadline()
		if i == 0 {
			return dl, true, nil
		}
		select {
		case <-release:
			return dl, true, nil
		case <-ctx.Done():
			return dl, false, ctx.Err()
		}
	})
	begin := time.Now()
	d := r.Decide()
	if took := time.Since(begin); d.OK || d.Pending != 2 || took >= call/2 {
		t.Fatalf("decision %+v after %v, want not OK at the %v decision deadline", d, took, decide)
	}
	if !r.Expired() {
		t.Fatal("Expired false with calls pending past the decision deadline")
	}
	close(release)
	votes := r.Wait()
	if votes[1].Outcome != Yes || votes[1].Value.Sub(begin) < call/2 {
		t.Fatalf("late call %+v: want yes, with a ctx deadline near %v", votes[1], call)
	}
}
