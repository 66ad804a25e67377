package lab

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/quorumlock/quorumlock/redlock"
)

// The rolling restart (issue #11): the nodes are killed and restarted
// without their data one after another, as a routine Kubernetes roll does,
// while one holder keeps one lock by extension and contenders keep trying.
const (
	rollRestarts    = 10 // one every rollEvery TTLs: 20 TTLs in all
	rollEvery       = 2
	rollContenders  = 3
	rollContendTick = 10 // contenders try every TTL/rollContendTick
)

// RollRecord is what rolling-restart saw besides the holds.
type RollRecord struct {
	Planned  int `json:"planned"`
	Restarts int `json:"restarts"` // restarts done
	// Kept is true when the holder still held its lock after the last
	// restart; otherwise LostAfter restarts were done when it learnt the
	// loss, and Lost says why.
	Kept      bool   `json:"kept"`
	LostAfter int    `json:"lost_after,omitempty"`
	Lost      string `json:"lost,omitempty"`
	// Repaired counts the lock keys the holder's extensions set again on
	// emptied nodes (implementations that repair).
	Repaired uint64 `json:"repaired,omitempty"`
	// ContenderWins counts the contenders' acquisitions while the holder
	// believed it held the lock.
	ContenderWins int `json:"contender_wins"`
}

func rollingRestart() Scenario {
	return Scenario{
		Name:  "rolling-restart",
		Title: "a lock kept by extension through a rolling restart of every node",
		Description: fmt.Sprintf("One holder acquires the lock and keeps it with the implementation's extension "+
			"(quorumlock: WithAutoExtend; redsync: Extend every TTL/3, stopping at the first failure, as its users write it) "+
			"while the nodes are killed and restarted without their data one after another, one every %d TTLs, %d restarts "+
			"(%d TTLs, each node twice). %d contenders try for the lock every TTL/%d all along. Runs with the attack TTL.",
			rollEvery, rollRestarts, rollEvery*rollRestarts, rollContenders, rollContendTick),
		Expect: "quorumlock's holder keeps the lock to the end (each extension sets the key again on the emptied node, " +
			"which serves its quarantine meanwhile) and no contender acquires; redsync's holder loses it once the " +
			"restarts emptied a majority of its nodes, and a contender may get it before the holder notices.",
		Want: func(impl string) Expectation {
			if impl == "redsync" {
				return Expectation{Violations: Maybe}
			}
			return safe
		},
		ttls:  rollEvery * rollRestarts,
		run:   func(ctx context.Context, r *run) error { return r.roll(ctx) },
		judge: judgeRoll,
	}
}

// judgeRoll: quorumlock must keep the lock; redsync must lose it, or the
// roll did not empty its nodes and proves nothing.
func judgeRoll(impl string, o *Outcome) {
	rr := o.Roll
	if rr == nil {
		return
	}
	switch {
	case impl == "redsync" && rr.Kept:
		o.Verdict.NotShown = append(o.Verdict.NotShown, "redsync's holder kept its lock: the roll lost its shape")
	case impl != "redsync" && !rr.Kept:
		o.Verdict.Unexpected = append(o.Verdict.Unexpected, fmt.Sprintf("the holder lost its lock after %d restarts (%s)", rr.LostAfter, rr.Lost))
	}
	if impl != "redsync" && rr.ContenderWins > 0 {
		o.Verdict.Unexpected = append(o.Verdict.Unexpected, fmt.Sprintf("contenders acquired %d times while the holder held", rr.ContenderWins))
	}
}

// rollLine tells the roll's story beyond the holds.
func rollLine(rr *RollRecord) string {
	s := fmt.Sprintf("Roll: %d of %d restarts; ", rr.Restarts, rr.Planned)
	if rr.Kept {
		s += "the holder kept its lock throughout"
	} else {
		s += fmt.Sprintf("the holder lost its lock after %d restarts (%s)", rr.LostAfter, rr.Lost)
	}
	if rr.Repaired > 0 {
		s += fmt.Sprintf(", its extensions set the key again on emptied nodes %d times", rr.Repaired)
	}
	return s + fmt.Sprintf("; contenders acquired %d times while it held.", rr.ContenderWins)
}

// roll runs rolling-restart: client 0 keeps the lock, clients 1.. contend.
func (r *run) roll(ctx context.Context) error {
	r.ttl = r.attackTTL
	ttl := r.ttl
	var ls []Locker
	for range 1 + rollContenders {
		l, err := r.newLocker(r.fleet.Clients())
		if err != nil {
			return err
		}
		ls = append(ls, l)
	}
	keeper, ok := ls[0].(Keeper)
	if !ok {
		return fmt.Errorf("%w: %s cannot keep a lock by extension", ErrUnsupported, r.impl.Name)
	}
	w := r.workersOf(ls)
	rec := &RollRecord{Planned: rollRestarts}
	r.rollRec = rec

	start := r.rec.Now()
	actx, cancel := context.WithTimeout(ctx, 2*ttl)
	k, err := keeper.Keep(actx, w.Key)
	cancel()
	got := r.rec.Now()
	r.rec.Attempt(Attempt{Client: 0, Start: start, Latency: got - start, OK: err == nil, MajorityUp: true})
	if err != nil {
		return shapeLost("the holder got no lock on healthy nodes: %v", err)
	}
	idx := r.rec.Acquired(Hold{Client: 0, Start: start, Acquired: got, Until: r.rec.Offset(k.Until())})

	cctx, stopContenders := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for c := 1; c <= rollContenders; c++ {
		wg.Go(func() {
			for cctx.Err() == nil {
				if l, i, _ := w.lock(cctx, c, ttl/2, true); l != nil {
					time.Sleep(time.Millisecond)
					w.release(c, l, i)
				}
				sleepCtx(cctx, ttl/rollContendTick)
			}
		})
	}

	var faultErr error
	lostAt := time.Duration(-1)
roll:
	for i := range rollRestarts {
		begin := r.rec.Now()
		select {
		case <-k.Lost():
			break roll
		case <-ctx.Done():
			break roll
		default:
		}
		n := i % r.fleet.Len()
		node := r.fleet.Node(n)
		r.down.Add(1)
		faultErr = faultCtx(func(ctx context.Context) error {
			if err := node.Kill(ctx); err != nil {
				return err
			}
			return node.Restart(ctx, Restart{WipeData: true})
		})
		r.down.Add(-1)
		r.rec.Fault(FaultSpan{Name: "restart-empty", Nodes: []int{n}, Start: begin, End: r.rec.Now()})
		if faultErr != nil {
			faultErr = fmt.Errorf("restart node %d: %w", n, faultErr)
			break
		}
		rec.Restarts++
		r.rec.Extended(idx, r.rec.Offset(k.Until()))
		select {
		case <-time.After(begin + rollEvery*ttl - r.rec.Now()):
		case <-k.Lost():
		case <-ctx.Done():
		}
	}
	select {
	case <-k.Lost():
		lostAt = r.rec.Now()
		rec.LostAfter, rec.Lost = rec.Restarts, strings.ReplaceAll(fmt.Sprint(k.Err()), "\n", "; ")
		// The contenders go on for a TTL after the loss: the lock is free.
		sleepCtx(ctx, ttl)
	default:
		rec.Kept = faultErr == nil && ctx.Err() == nil
	}
	stopContenders()
	wg.Wait()

	end := r.rec.Now()
	if lostAt >= 0 {
		end = lostAt // the holder stops acting as one when it learns the loss
	} else {
		r.rec.Extended(idx, r.rec.Offset(k.Until()))
	}
	r.rec.Released(idx, end)
	holderUntil := r.rec.Offset(k.Until())
	for _, h := range r.rec.Finish(nil).Holds {
		if h.Client != 0 && h.Acquired < min(end, holderUntil) && h.Acquired >= got {
			rec.ContenderWins++
		}
	}
	if q, ok := ls[0].(interface{ repaired() uint64 }); ok {
		rec.Repaired = q.repaired()
	}
	rctx, rcancel := context.WithTimeout(context.Background(), storageTimeout)
	_ = k.Release(rctx) // a lost lock's release fails, and says nothing new
	rcancel()
	if faultErr == nil && !rec.Kept && starvedLoss(k.Err()) {
		// Not one node refused: the extensions found no node answering in
		// time, which on healthy nodes says the host was too busy.
		return shapeLost("the holder's extensions timed out on every node that failed (a starved host): %v", k.Err())
	}
	return faultErr
}

// starvedLoss reports whether a lock was lost to a round in which every
// node that did not say yes failed to answer in time, none refusing.
func starvedLoss(err error) bool {
	var re *redlock.RoundError
	if !errors.As(err, &re) || len(re.Nodes) == 0 {
		return false
	}
	for _, n := range re.Nodes {
		if n.Reason != redlock.NodeFailed || !errors.Is(n.Err, context.DeadlineExceeded) {
			return false
		}
	}
	return true
}
