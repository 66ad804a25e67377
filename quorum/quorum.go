// Package quorum runs one operation against N independent nodes at once and
// decides by majority as early as the answers allow.
//
// A Round starts one goroutine per node. It has two time limits (Bounds):
// Decide returns by the first whatever the calls do, so a call that ignores
// its context (a client with no per-request deadline) delays no decision;
// each call's context ends at the second, which may be later, so that a slow
// answer costs a late vote rather than an aborted request. Decide returns as
// soon as enough nodes said yes or enough can no longer say yes; nodes that
// have not answered by then (stragglers) keep running, and Wait collects
// their outcomes so that the caller can clean up after them (a straggler that
// said yes late may hold a key). The package knows nothing about locks or
// Redis.
package quorum

import (
	"context"
	"sync"
	"time"
)

// Majority returns the number of votes that make a majority of n: n/2+1.
func Majority(n int) int { return n/2 + 1 }

// Outcome is one node's answer.
type Outcome uint8

const (
	// Pending means the node has not answered yet.
	Pending Outcome = iota
	// Yes means the node granted the request.
	Yes
	// No means the node answered and refused.
	No
	// Failed means the call returned an error or ran out of time; the
	// operation may or may not have taken effect on that node.
	Failed
)

func (o Outcome) String() string {
	switch o {
	case Yes:
		return "yes"
	case No:
		return "no"
	case Failed:
		return "failed"
	default:
		return "pending"
	}
}

// Vote is the outcome of the operation on one node.
type Vote[T any] struct {
	Node    int
	Outcome Outcome
	Value   T     // what the operation returned, for Yes and No
	Err     error // the error, for Failed
}

// Op is the operation run on node i. It reports yes (granted) or no
// (refused); a non-nil error makes the vote Failed whatever yes says. ctx
// carries the round's deadline.
type Op[T any] func(ctx context.Context, node int) (value T, yes bool, err error)

// Bounds are a round's time limits; zero means none.
type Bounds struct {
	// Decide bounds the wait for a decision.
	Decide time.Duration
	// Call bounds each call; it is never shorter than Decide.
	Call time.Duration
}

// Within is Bounds with one limit for both.
func Within(d time.Duration) Bounds { return Bounds{Decide: d, Call: d} }

// Round is one operation fanned out to every node. Its methods are safe for
// use from several goroutines.
type Round[T any] struct {
	n, need int
	ctx     context.Context // the calls' context: the caller's, with the call deadline
	cancel  context.CancelFunc
	// decideAt is the decision deadline when it comes before the call
	// deadline (zero otherwise: ctx's end is the decision deadline). It is
	// kept as an instant, not as a second context, which would cost a
	// context, a timer and a child registration on ctx in every round.
	decideAt time.Time

	mu      sync.Mutex
	votes   []Vote[T]
	small   [smallRound]Vote[T] // votes' storage for the usual handful of nodes
	yes, no int                 // no counts No and Failed: votes that cannot become yes
	got     int
	decided chan struct{} // closed once enough votes are in either way
	done    chan struct{} // closed once every call has returned
}

// smallRound is the number of nodes whose votes are kept inside the Round
// itself, saving an allocation per round.
const smallRound = 7

// Start runs op on nodes 0..n-1 concurrently within b and returns at once.
// The decision needs a majority of n.
func Start[T any](ctx context.Context, n int, b Bounds, op Op[T]) *Round[T] {
	return StartNeed(ctx, n, Majority(n), b, op)
}

// StartNeed is Start with an explicit number of yes votes needed.
func StartNeed[T any](ctx context.Context, n, need int, b Bounds, op Op[T]) *Round[T] {
	r := &Round[T]{
		n:       n,
		need:    need,
		decided: make(chan struct{}),
		done:    make(chan struct{}),
	}
	if n <= smallRound {
		r.votes = r.small[:n:n]
	} else {
		r.votes = make([]Vote[T], n)
	}
	if b.Decide > 0 && b.Call > 0 && b.Call < b.Decide {
		b.Call = b.Decide
	}
	if b.Call > 0 {
		r.ctx, r.cancel = context.WithTimeout(ctx, b.Call)
	} else {
		r.ctx, r.cancel = context.WithCancel(ctx)
	}
	if b.Decide > 0 && (b.Call <= 0 || b.Decide < b.Call) {
		r.decideAt = time.Now().Add(b.Decide)
	}
	for i := range r.votes {
		r.votes[i].Node = i
	}
	if n == 0 {
		close(r.decided)
		close(r.done)
		r.cancel()
		return r
	}
	for i := 0; i < n; i++ {
		go r.run(i, op)
	}
	return r
}

func (r *Round[T]) run(i int, op Op[T]) {
	val, yes, err := op(r.ctx, i)
	v := Vote[T]{Node: i, Value: val}
	switch {
	case err != nil:
		v.Outcome, v.Err = Failed, err
	case yes:
		v.Outcome = Yes
	default:
		v.Outcome = No
	}
	r.mu.Lock()
	wasDecided := r.isDecided()
	r.votes[i] = v
	r.got++
	if v.Outcome == Yes {
		r.yes++
	} else {
		r.no++
	}
	if !wasDecided && r.isDecided() {
		close(r.decided)
	}
	last := r.got == r.n
	r.mu.Unlock()
	if last {
		close(r.done)
		r.cancel() // releases the deadline's timer
	}
}

// isDecided reports whether enough votes are in either way; r.mu held.
func (r *Round[T]) isDecided() bool {
	return r.yes >= r.need || r.n-r.no < r.need || r.got == r.n
}

// Decision is the state of a round when it was decided.
type Decision struct {
	// OK is true when enough nodes said yes.
	OK bool
	// Yes, No, Failed and Pending count the votes at decision time.
	Yes, No, Failed, Pending int
}

// Decide blocks until the round is decided (enough yes votes, or so many
// refusals and failures that enough yes votes can no longer come) or its
// deadline passes, whichever is first. Nodes still pending are left running;
// see Wait.
func (r *Round[T]) Decide() Decision {
	d, _ := r.DecideOr(nil)
	return d
}

// DecideOr is Decide that also gives up when stop is closed; ok is false
// then, and the decision describes the votes in so far.
func (r *Round[T]) DecideOr(stop <-chan struct{}) (d Decision, ok bool) {
	ok = true
	var expired <-chan time.Time
	select {
	case <-r.decided:
	default:
		if !r.decideAt.IsZero() {
			t := time.NewTimer(time.Until(r.decideAt))
			defer t.Stop()
			expired = t.C
		}
	}
	select {
	case <-r.decided:
	case <-r.ctx.Done():
	case <-expired:
	case <-stop:
		select {
		case <-r.decided:
		default:
			ok = false
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	d.OK = r.yes >= r.need
	for _, v := range r.votes {
		switch v.Outcome {
		case Yes:
			d.Yes++
		case No:
			d.No++
		case Failed:
			d.Failed++
		default:
			d.Pending++
		}
	}
	return d, ok
}

// Need returns the number of yes votes the round needs.
func (r *Round[T]) Need() int { return r.need }

// Collect returns a copy of the votes received so far, indexed by node;
// nodes that have not answered are Pending.
func (r *Round[T]) Collect() []Vote[T] {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Vote[T](nil), r.votes...)
}

// Expired reports whether the decision deadline passed (or the ctx ended)
// before every call returned: nodes still pending then ran out of time,
// rather than being left out of an early decision.
func (r *Round[T]) Expired() bool {
	select {
	case <-r.done:
		return false
	default:
		return r.ctx.Err() != nil || (!r.decideAt.IsZero() && !time.Now().Before(r.decideAt))
	}
}

// Done returns a channel closed once every call has returned.
func (r *Round[T]) Done() <-chan struct{} { return r.done }

// Wait blocks until every call has returned and returns all votes, indexed
// by node. A call that ignores its context is waited for as long as it runs.
func (r *Round[T]) Wait() []Vote[T] {
	<-r.done
	return r.votes // no writer is left
}
