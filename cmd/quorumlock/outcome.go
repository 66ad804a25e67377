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
// options, a closed client). The library's reason decides: "taken" only when
// other owners hold the key on enough nodes that no majority is left for us
// (ErrTaken); anything else that kept a majority from saying yes makes the
// service unavailable. A round cut short by the context has no reason of
// its own; its nodes then decide, by the same rule.
func classify(err error, total int) (*blockage, bool) {
	var re *redlock.RoundError
	if !errors.As(err, &re) || errors.Is(re.Reason, redlock.ErrClosed) {
		return nil, false
	}
	b := &blockage{total: total, needed: re.Needed, granted: re.Granted}
	for _, n := range re.Nodes {
		b.nodes = append(b.nodes, nodeProblemOf(n))
	}
	b.slow = errors.Is(re.Reason, redlock.ErrExpired)
	b.decide()
	switch {
	case errors.Is(re.Reason, redlock.ErrTaken):
		b.why = whyTaken
	case errors.Is(re.Reason, redlock.ErrNoQuorum), b.slow:
		b.why = whyUnavailable
	}
	return b, true
}

// nodeProblemOf reads one node's refusal.
func nodeProblemOf(n *redlock.NodeError) nodeProblem {
	p := nodeProblem{node: n.Node, addr: n.Addr, wait: n.Wait}
	switch n.Reason {
	case redlock.NodeTaken:
		p.kind = nodeTaken
	case redlock.NodeQuarantined:
		p.kind = nodeQuarantined
	case redlock.NodeSkewed:
		p.kind = nodeSkewed
	case redlock.NodeNotHeld:
		p.kind = nodeNotHeld
	default:
		p.kind, p.err, p.wait = nodeFailed, n.Err, 0
	}
	return p
}

// fromStates is the blockage a read of the nodes (Client.Inspect) shows
// for a new holder, by the rules of a vote with maxSkew as the skew bound.
// The waiter's own attempt may sit on a node at the moment of the read
// and cannot be told from another owner's, so keys count only when they
// make the lock taken.
func fromStates(states []redlock.NodeState, needed int, maxSkew time.Duration) *blockage {
	b := &blockage{total: len(states), needed: needed}
	for _, st := range states {
		p := nodeProblem{node: st.Node, addr: st.Addr}
		switch {
		case st.Err != nil:
			p.kind, p.err = nodeFailed, st.Err
		case st.Quarantine > 0:
			p.kind, p.wait = nodeQuarantined, st.Quarantine
		case maxSkew > 0 && (st.Skew > maxSkew || -st.Skew > maxSkew):
			p.kind, p.wait = nodeSkewed, st.Skew
		case st.Holder != "":
			p.kind, p.token, p.wait = nodeTaken, st.Holder, st.TTL
			if st.TTL <= 0 {
				p.wait = -1
			}
		default:
			continue
		}
		b.nodes = append(b.nodes, p)
	}
	b.decideFromRead()
	return b
}

// decideFromRead sets the reason from nodes read rather than voted: unless
// keys make the lock taken, a key on a node may be the waiter's own attempt,
// and only the nodes that cannot vote matter.
func (b *blockage) decideFromRead() {
	b.decide()
	if b.why != whyTaken {
		b.nodes = slices.DeleteFunc(b.nodes, func(p nodeProblem) bool { return p.kind == nodeTaken })
		b.decide()
	}
}

// decide sets the reason from the nodes.
func (b *blockage) decide() {
	slices.SortFunc(b.nodes, func(x, y nodeProblem) int { return x.node - y.node })
	taken := 0
	for _, p := range b.nodes {
		if p.kind == nodeTaken {
			taken++
		}
	}
	b.why = whyUnavailable
	if taken > b.total-b.needed {
		b.why = whyTaken
	}
	b.quarantineHint = b.onlyQuarantine()
}

// onlyQuarantine reports whether every node listed is in its quarantine.
func (b *blockage) onlyQuarantine() bool {
	for _, p := range b.nodes {
		if p.kind != nodeQuarantined {
			return false
		}
	}
	return len(b.nodes) > 0
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
		s.WriteString(" (freshly deployed nodes: declare them with quorumlock bootstrap or --bootstrap)")
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
	on := len(ttls)
	if tok := mostCommon(tokens); tok != "" {
		fmt.Fprintf(&s, " (token %s)", tokenPrefix(tok))
		on = tokens[tok]
	}
	fmt.Fprintf(&s, " on %d of %d nodes", on, b.total)
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

// loss is what the CLI knows of a lock that ended without a release.
type loss struct {
	key     string
	err     error               // Lock.Err()
	maxHold bool                // the keep-alive stopped at --max-hold
	token   string              // the lost lock's token
	states  []redlock.NodeState // a read of the nodes after the loss; nil if none
}

// describe says in one line why the lock ended and, from the read of the
// nodes, which of them are behind it: those that no longer hold the token,
// or those that cannot be reached.
func (l loss) describe(d *nodeDiag) string {
	head := fmt.Sprintf("lock %q lost: ", l.key)
	var why string
	var nodes []nodeProblem
	switch {
	case l.maxHold:
		return head + "it reached --max-hold and was not extended further"
	case errors.Is(l.err, redlock.ErrNotHeld):
		why = "a majority of nodes no longer holds it"
		for _, st := range l.states {
			if st.Err == nil && st.Holder != l.token {
				nodes = append(nodes, nodeProblem{node: st.Node, addr: st.Addr, kind: nodeNotHeld})
			}
		}
	case errors.Is(l.err, redlock.ErrExpired):
		why = "its validity ended before an extension reached a majority"
	default:
		return head + strings.TrimPrefix(l.err.Error(), "redlock: ")
	}
	for _, st := range l.states {
		if st.Err != nil {
			nodes = append(nodes, nodeProblem{node: st.Node, addr: st.Addr, kind: nodeFailed, err: st.Err})
		}
	}
	slices.SortFunc(nodes, func(x, y nodeProblem) int { return x.node - y.node })
	var s strings.Builder
	s.WriteString(head + why)
	for i, p := range nodes {
		sep := "; "
		if i == 0 {
			sep = ": "
		}
		s.WriteString(sep + p.describe(d))
	}
	return s.String()
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

// nodeDiag keeps, per node, the error of the last dial or connection set-up
// that failed, until one succeeds. go-redis retries a failed dial (and a
// connection whose TLS handshake or authentication failed) and the request
// can end on its deadline meanwhile: the request's error is then "context
// deadline exceeded" while the dial's says what is wrong ("connection
// refused", "tls: certificate required", "WRONGPASS").
type nodeDiag struct {
	lastDial []atomic.Pointer[error]
	clients  []*redis.Client
	probed   []atomic.Bool
}

func newNodeDiag(clients []*redis.Client) *nodeDiag {
	d := &nodeDiag{lastDial: make([]atomic.Pointer[error], len(clients)), clients: clients, probed: make([]atomic.Bool, len(clients))}
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

func (h dialHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		// A connection that dialled but failed its set-up (TLS handshake,
		// AUTH, HELLO) fails the command with the reason, then is dialled
		// again: keep that reason, not the timeout the retries end on.
		if err != nil && !isTimeout(err) && !errors.Is(err, redis.Nil) && isSetupFailure(err) {
			h.last.Store(&err)
		}
		return err
	}
}

// isSetupFailure tells an error of a connection's set-up: TLS, or an
// authentication the server refused.
func isSetupFailure(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "tls:") || strings.Contains(msg, "x509:") ||
		strings.HasPrefix(msg, "WRONGPASS") || strings.HasPrefix(msg, "NOAUTH")
}
func (h dialHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// explain says in a few words why a request to node i failed with err.
func (d *nodeDiag) explain(i int, err error) string {
	if isTimeout(err) && d != nil && i >= 0 && i < len(d.lastDial) {
		if d.lastDial[i].Load() == nil && i < len(d.clients) && hasSetup(d.clients[i]) && !d.probed[i].Swap(true) {
			// The round's node timeout may end before a connection's
			// set-up fails (a TLS 1.3 server refuses a client without a
			// certificate only after the handshake, on the first read):
			// one more request, with time to fail, names the cause. Only
			// where a set-up can fail (TLS, a password), once per node.
			ctx, cancel := context.WithTimeout(context.Background(), diagTimeout)
			_ = d.clients[i].Ping(ctx).Err()
			cancel()
		}
		if last := d.lastDial[i].Load(); last != nil {
			err = *last
		}
	}
	return errText(err)
}

// hasSetup reports whether a connection to c has a set-up that can fail
// after the dial: a TLS handshake or an authentication.
func hasSetup(c *redis.Client) bool {
	o := c.Options()
	return o.TLSConfig != nil || o.Password != "" || o.Username != ""
}

// diagTimeout bounds the request that looks for why a node timed out.
const diagTimeout = 2 * time.Second

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

// redlockNodeErrors finds the per-node errors of a round of the library.
func redlockNodeErrors(err error) []*redlock.NodeError {
	var re *redlock.RoundError
	if errors.As(err, &re) {
		return re.Nodes
	}
	return nil
}
