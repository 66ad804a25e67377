package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/redlock"
)

// This file is the CLI's one view of the library's errors: what a failed
// round or a lost lock means for the operator (which exit status, which
// words). Everything that knows redlock's error types is here.

// why is what kept a lock from us, as the exit status tells it.
type why int

const (
	// whyTaken: other owners hold the key on enough nodes to block a
	// majority (exitTaken).
	whyTaken why = iota + 1
	// whyUnavailable: too few nodes can vote: unreachable, in restart
	// quarantine, clock skewed, too slow for the TTL, or a mix
	// (exitUnavailable).
	whyUnavailable
)

// nodeKind is why one node did not say yes.
type nodeKind int

const (
	nodeTaken       nodeKind = iota + 1 // holds the key under another token
	nodeQuarantined                     // restart quarantine: does not vote yet
	nodeSkewed                          // clock too far from ours: does not vote
	nodeNotHeld                         // no longer holds our token (extend, release)
	nodeFailed                          // no answer: unreachable, timed out, an error reply
)

// nodeProblem is one node that did not say yes.
type nodeProblem struct {
	node  int // 0-based, as the library and every message count
	addr  string
	kind  nodeKind
	wait  time.Duration // taken: the holder's TTL left; quarantined: until it votes; skewed: the skew
	err   error         // failed: the cause
	token string        // taken: the holder's token, when it was read
}

// blockage is why a lock could not be had: one reason, and the nodes behind
// it.
type blockage struct {
	why            why
	total, needed  int
	granted        int
	nodes          []nodeProblem
	slow           bool // a majority said yes, but the round outlasted the TTL
	quarantineHint bool // every problem is the restart quarantine
}

// classify turns the error of an acquisition round into a blockage, and
// reports false for errors that are not about the nodes' answers (bad
// options, a closed client). A round is "taken" only when other owners hold
// the key on enough nodes that no majority is left for us; anything else
// that kept a majority from saying yes makes the service unavailable.
func classify(err error, total int) (*blockage, bool) {
	var ne *redlock.NotObtainedError
	if !errors.As(err, &ne) {
		return nil, false
	}
	b := &blockage{total: total, needed: ne.Needed, granted: ne.Granted}
	for _, n := range ne.Nodes {
		b.nodes = append(b.nodes, nodeProblemOf(n))
	}
	b.slow = errors.Is(ne.Cause, redlock.ErrExpired)
	b.decide()
	return b, true
}

// nodeProblemOf reads one node's refusal.
func nodeProblemOf(n *redlock.NodeError) nodeProblem {
	p := nodeProblem{node: n.Node, addr: n.Addr, kind: nodeFailed, err: n.Err}
	var (
		te *redlock.TakenError
		qe *redlock.QuarantineError
		se *redlock.SkewError
	)
	switch {
	case errors.As(n.Err, &te):
		p.kind, p.wait, p.err = nodeTaken, te.TTL, nil
	case errors.As(n.Err, &qe):
		p.kind, p.wait, p.err = nodeQuarantined, qe.Remaining, nil
	case errors.As(n.Err, &se):
		p.kind, p.wait, p.err = nodeSkewed, se.Skew, nil
	case errors.Is(n.Err, redlock.ErrNotHeld):
		p.kind, p.err = nodeNotHeld, nil
	}
	return p
}

// decide sets the reason from the nodes.
func (b *blockage) decide() {
	slices.SortFunc(b.nodes, func(x, y nodeProblem) int { return x.node - y.node })
	taken, quarantined := 0, 0
	for _, p := range b.nodes {
		switch p.kind {
		case nodeTaken:
			taken++
		case nodeQuarantined:
			quarantined++
		}
	}
	b.why = whyUnavailable
	if taken > b.total-b.needed {
		b.why = whyTaken
	}
	b.quarantineHint = quarantined > 0 && quarantined == len(b.nodes)
}

// failed reports whether a node failed to answer.
func (b *blockage) failed() bool {
	for _, p := range b.nodes {
		if p.kind == nodeFailed {
			return true
		}
	}
	return false
}

// blocks reports whether the blockage keeps a majority from saying yes; a
// read of the nodes can find problems that leave enough voters.
func (b *blockage) blocks() bool {
	return b.why == whyTaken || b.total-len(b.nodes) < b.needed || b.slow
}

// exitCode is the status for a lock not obtained for this reason.
func (b *blockage) exitCode() int {
	if b.why == whyTaken {
		return exitTaken
	}
	return exitUnavailable
}

// describe says in one line why the lock could not be had. d explains
// failed nodes (nil: their errors as they are).
func (b *blockage) describe(d *nodeDiag) string {
	if b.why == whyTaken {
		return b.describeTaken()
	}
	var s strings.Builder
	able := b.total - len(b.nodes)
	for _, p := range b.nodes {
		if p.kind == nodeTaken {
			able++ // it answers; it is another owner that keeps it from us
		}
	}
	switch {
	case b.slow:
		fmt.Fprintf(&s, "lock service unavailable: %d of %d nodes said yes, but too slowly for the TTL", b.granted, b.total)
	case able < b.needed:
		fmt.Fprintf(&s, "lock service unavailable: %d of %d nodes can vote, %d needed", able, b.total, b.needed)
	default:
		fmt.Fprintf(&s, "lock service unavailable: %d of %d nodes said yes, %d needed", b.granted, b.total, b.needed)
	}
	for i, p := range b.nodes {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		s.WriteString(sep + p.describe(d))
	}
	if b.quarantineHint {
		s.WriteString(" (freshly deployed nodes that never held a lock: declare them with --bootstrap)")
	}
	return s.String()
}

// summary is describe without the per-node detail, for a line that
// follows one that had it.
func (b *blockage) summary() string {
	if b.why == whyTaken {
		return b.describeTaken()
	}
	full := b.describe(nil)
	if i := strings.Index(full, ": "); i >= 0 {
		full = full[:i] // "lock service unavailable"
	}
	return full + " (nodes as reported above)"
}

func (b *blockage) describeTaken() string {
	var ttls []time.Duration
	tokens := map[string]int{}
	for _, p := range b.nodes {
		if p.kind == nodeTaken {
			ttls = append(ttls, p.wait)
			if p.token != "" {
				tokens[p.token]++
			}
		}
	}
	var s strings.Builder
	s.WriteString("held by someone else")
	if tok := mostCommon(tokens); tok != "" {
		fmt.Fprintf(&s, " (token %s)", tokenPrefix(tok))
	}
	fmt.Fprintf(&s, " on %d of %d nodes", len(ttls), b.total)
	// The key frees for us when enough of those nodes let it expire: the
	// (taken − (total − needed))-th shortest TTL.
	slices.Sort(ttls)
	if i := len(ttls) - (b.total - b.needed) - 1; i >= 0 && i < len(ttls) {
		switch d := ttls[i]; {
		case d < 0:
			s.WriteString(", without expiry")
		default:
			fmt.Fprintf(&s, ", free in %v unless the holder extends or releases it", d.Round(100*time.Millisecond))
		}
	}
	return s.String()
}

// signature is what a change of state means to someone watching a wait:
// the reason, the holder, and which nodes cannot vote and why; not the
// remaining times, nor which nodes a holder has (a read of the nodes may
// catch the waiter's own attempt on some).
func (b *blockage) signature() string {
	var s strings.Builder
	fmt.Fprintf(&s, "%d", b.why)
	if b.why == whyTaken {
		tokens := map[string]int{}
		for _, p := range b.nodes {
			if p.kind == nodeTaken && p.token != "" {
				tokens[p.token]++
			}
		}
		s.WriteString(" " + mostCommon(tokens))
	}
	for _, p := range b.nodes {
		if p.kind != nodeTaken && p.kind != nodeNotHeld {
			fmt.Fprintf(&s, " %d:%d", p.node, p.kind)
		}
	}
	return s.String()
}

func (p nodeProblem) describe(d *nodeDiag) string {
	name := fmt.Sprintf("node %d", p.node)
	if p.addr != "" {
		name += " (" + p.addr + ")"
	}
	switch p.kind {
	case nodeTaken:
		return name + ": held by someone else"
	case nodeQuarantined:
		return fmt.Sprintf("%s: in restart quarantine for %v more", name, p.wait.Round(100*time.Millisecond))
	case nodeSkewed:
		return fmt.Sprintf("%s: clock %+v off ours", name, p.wait)
	case nodeNotHeld:
		return name + ": no longer holds it"
	}
	return name + ": " + d.explain(p.node, p.err)
}

func mostCommon(counts map[string]int) string {
	best := ""
	for tok, n := range counts {
		if n > counts[best] || (n == counts[best] && tok < best) {
			best = tok
		}
	}
	return best
}

// tokenPrefix shortens a holder's token for messages: enough to tell
// holders apart and to find the full one with `quorumlock inspect`.
func tokenPrefix(tok string) string {
	if len(tok) <= 8 {
		return tok
	}
	return tok[:8] + "…"
}

// describeLoss says in one line why a held lock ended; err is Lock.Err().
func describeLoss(key string, err error, d *nodeDiag) string {
	head := fmt.Sprintf("lock %q lost: ", key)
	var qe *redlock.QuorumError
	hasQE := errors.As(err, &qe)
	switch {
	case errors.Is(err, redlock.ErrMaxHold):
		return head + "it reached --max-hold and was not extended further"
	case hasQE && errors.Is(qe.Reason, redlock.ErrNotHeld):
		return head + "a majority of nodes no longer holds it" + nodeErrors(qe.Nodes, d)
	case hasQE:
		return head + "its validity ended before an extension reached a majority" + nodeErrors(qe.Nodes, d)
	case errors.Is(err, redlock.ErrExpired):
		return head + "its validity ended before it was extended"
	case errors.Is(err, redlock.ErrNotHeld):
		return head + "a majority of nodes no longer holds it"
	}
	return head + strings.TrimPrefix(err.Error(), "redlock: ")
}

// nodeErrors lists the nodes of an extend or release round that did not
// say yes, after a colon; "" when there are none.
func nodeErrors(nodes []*redlock.NodeError, d *nodeDiag) string {
	var s strings.Builder
	for i, n := range nodes {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		s.WriteString(sep + nodeProblemOf(n).describe(d))
	}
	return s.String()
}

// nodeDiag keeps, per node, the error of the last dial that failed, until a
// dial succeeds. go-redis retries a failed dial and the request can end on
// its deadline meanwhile: the request's error is then "context deadline
// exceeded" while the dial's says what is wrong ("connection refused").
type nodeDiag struct {
	lastDial []atomic.Pointer[error]
}

func newNodeDiag(clients []*redis.Client) *nodeDiag {
	d := &nodeDiag{lastDial: make([]atomic.Pointer[error], len(clients))}
	for i, c := range clients {
		c.AddHook(dialHook{&d.lastDial[i]})
	}
	return d
}

type dialHook struct{ last *atomic.Pointer[error] }

func (h dialHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.last.Store(&err)
		} else {
			h.last.Store(nil)
		}
		return c, err
	}
}

func (h dialHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h dialHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// explain says in a few words why a request to node i failed with err.
func (d *nodeDiag) explain(i int, err error) string {
	if isTimeout(err) && d != nil && i >= 0 && i < len(d.lastDial) {
		if last := d.lastDial[i].Load(); last != nil {
			err = *last
		}
	}
	return errText(err)
}

// errText names a connection error the way an operator looks it up.
func errText(err error) string {
	var dns *net.DNSError
	switch {
	case err == nil:
		return "no answer"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed by the server"
	case errors.As(err, &dns):
		return "cannot resolve " + dns.Name
	case isTimeout(err):
		return "no answer in time"
	}
	return strings.TrimPrefix(err.Error(), "redlock: ")
}

// isTimeout tells a request that got no answer in time.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// redlockNodeErrors finds the per-node errors in an error of the library: a
// round's, or Bootstrap's errors.Join of them.
func redlockNodeErrors(err error) []*redlock.NodeError {
	var qe *redlock.QuorumError
	var ne *redlock.NotObtainedError
	switch {
	case errors.As(err, &qe):
		return qe.Nodes
	case errors.As(err, &ne):
		return ne.Nodes
	}
	var out []*redlock.NodeError
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			var n *redlock.NodeError
			if errors.As(e, &n) {
				out = append(out, n)
			}
		}
	}
	return out
}
