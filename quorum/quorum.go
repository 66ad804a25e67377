// Package quorum runs one operation against N independent nodes at once and
// decides by majority as early as the answers allow.
//
// A Round starts one goroutine per node. Each call is bounded by a per-node
// timeout, so every goroutine ends on its own within that bound; none of them
// can block on the owner. Decide returns as soon as a majority said yes or a
// majority can no longer be reached; nodes that have not answered by then
// (stragglers) keep running, and Wait collects their outcomes so that the
// caller can clean up after them (a straggler that said yes late may hold a
// key). The package knows nothing about locks or Redis.
package quorum

import (
	"context"
	"sync/atomic"
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
	Err     error // the error, for Failed (and optionally a reason for No)
}

// Op is the operation run on node i. It reports yes (granted) or no
// (refused); a non-nil error makes the vote Failed whatever yes says. ctx
// carries the per-node deadline.
type Op[T any] func(ctx context.Context, node int) (value T, yes bool, err error)

// Round is one operation fanned out to every node. Its methods must be called
// from one goroutine (the owner); the per-node goroutines only send on a
// buffered channel and never wait for the owner.
type Round[T any] struct {
	n       int
	need    int
	results chan Vote[T]
	votes   []Vote[T]
	yes     int
	no      int // No and Failed: votes that cannot become yes
	got     int
	cancel  context.CancelFunc
	running atomic.Int32
}

// Start runs op on nodes 0..n-1 concurrently, each bounded by timeout (no
// bound when timeout ≤ 0), and returns at once. The decision needs a
// majority of n.
func Start[T any](ctx context.Context, n int, timeout time.Duration, op Op[T]) *Round[T] {
	return StartNeed(ctx, n, Majority(n), timeout, op)
}

// StartNeed is Start with an explicit number of yes votes needed.
func StartNeed[T any](ctx context.Context, n, need int, timeout time.Duration, op Op[T]) *Round[T] {
	// Every call starts now, so one deadline for the round bounds each of
	// them by timeout, as a deadline per call would, for one timer instead
	// of n.
	var rctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		rctx, cancel = context.WithTimeout(ctx, timeout)
	} else {
		rctx, cancel = context.WithCancel(ctx)
	}
	r := &Round[T]{
		n:       n,
		need:    need,
		results: make(chan Vote[T], n),
		votes:   make([]Vote[T], n),
		cancel:  cancel,
	}
	r.running.Store(int32(n))
	for i := range r.votes {
		r.votes[i].Node = i
	}
	for i := 0; i < n; i++ {
		go r.run(rctx, i, op)
	}
	return r
}

func (r *Round[T]) run(ctx context.Context, i int, op Op[T]) {
	v := Vote[T]{Node: i}
	val, yes, err := op(ctx, i)
	v.Value = val
	switch {
	case err != nil:
		v.Outcome, v.Err = Failed, err
	case yes:
		v.Outcome = Yes
	default:
		v.Outcome = No
	}
	r.results <- v
	// The last call to finish releases the round's context, so that a round
	// nobody waits for does not stay registered with its parent.
	if r.running.Add(-1) == 0 {
		r.cancel()
	}
}

func (r *Round[T]) record(v Vote[T]) {
	r.votes[v.Node] = v
	r.got++
	if v.Outcome == Yes {
		r.yes++
	} else {
		r.no++
	}
}

// Decision is the state of a round when it was decided.
type Decision struct {
	// OK is true when enough nodes said yes.
	OK bool
	// Yes, No, Failed and Pending count the votes at decision time.
	Yes, No, Failed, Pending int
}

// Decide blocks until the round is decided: enough yes votes, or so many
// refusals and failures that enough yes votes can no longer come. Nodes
// still pending at that moment are left running; see Wait.
func (r *Round[T]) Decide() Decision {
	for r.yes < r.need && r.n-r.no >= r.need && r.got < r.n {
		r.record(<-r.results)
	}
	return r.decision()
}

func (r *Round[T]) decision() Decision {
	d := Decision{OK: r.yes >= r.need}
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
	return d
}

// Need returns the number of yes votes the round needs.
func (r *Round[T]) Need() int { return r.need }

// Votes returns the votes received so far, indexed by node; nodes that have
// not answered are Pending. The slice is the round's own: do not modify it.
func (r *Round[T]) Votes() []Vote[T] { return r.votes }

// Collect records the votes that have arrived, without waiting for the
// others, and returns all votes, indexed by node; nodes that have not
// answered are Pending. The slice is the round's own: do not modify it.
func (r *Round[T]) Collect() []Vote[T] {
	for r.got < r.n {
		select {
		case v := <-r.results:
			r.record(v)
		default:
			return r.votes
		}
	}
	return r.votes
}

// Wait blocks until every node has answered or run out of time and returns
// all votes, indexed by node. It is safe to call after Decide, and more than
// once.
func (r *Round[T]) Wait() []Vote[T] {
	for r.got < r.n {
		r.record(<-r.results)
	}
	r.cancel()
	return r.votes
}
