package redlock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/quorum"
)

// One acquisition attempt, step by step: every node votes at once
// (startVotes); the round is decided by majority (attempt); a fenced lock
// takes its token in a second round (fence.go); the validity is checked
// last; a failed attempt is explained (failure) and cleaned up in the
// background (cleanup).

// Vote statuses returned by scripts/acquire.lua.
const (
	voteGranted     = 1
	voteTaken       = 0
	voteSkewed      = -1
	voteQuarantined = -2
	voteNoInfo      = -3
	voteQueued      = -4
)

// Flags returned by scripts/acquire.lua.
const (
	flagNoRunID  = 1 // the node does not report a run id
	flagRestart  = 2 // a new server process was seen by this vote
	flagDataLost = 4 // the node had no sentinel: data lost, or new
)

// vote is one node's answer to the acquisition script.
type vote struct {
	status int64
	value  int64 // fence counter, holder's TTL (ms), skew (ms), quarantine left (ms) or waiters ahead
	flags  int64
	nodeUs int64 // node clock in µs, returned with fencing
}

// request is one acquisition: key, settings and the script arguments that
// every attempt shares.
type request struct {
	key string
	s   settings
	// The acquisition script's arguments, boxed once. The token and the
	// wall clock change with every attempt; attempt fills them in.
	keyArg  any
	ttlMs   any
	acquire [acquireArgs]any
	// queue and queueExp are the keys of the waiting queue (the lock key
	// when the Client has no fair queue).
	queue, queueExp any
	// gone is the key of the release's tombstone and goneMs how long it
	// stays (the lock key and "0" without repair: no quarantine).
	gone, goneMs any
}

// Positions of the per-attempt values in request.acquire.
const (
	acquireToken  = 7  // ARGV[1]
	acquireWall   = 9  // ARGV[3]
	acquireWaiter = 14 // ARGV[8]
	acquireTicket = 15 // ARGV[9]
	acquireGrant  = 18 // ARGV[12]
	acquireArgs   = 19 // numkeys, 6 keys, 12 arguments
)

// waiter is an Acquire's place in the key's queue on the nodes: an id and a
// ticket (the client's wall clock in µs when it first queued), the same on
// every node, so that every node orders the waiters alike.
//
// grant is the token a release may set the key to for this waiter while it
// leads the queue (see release.lua), registered by the attempt that started
// at since; "" when it takes no grants. It is also the token of the
// waiter's next attempt, which then finds the key its own where a release
// granted it.
type waiter struct {
	id     string
	ticket string
	grant  string
	since  time.Time
}

func newWaiter() *waiter {
	return &waiter{id: newToken(), ticket: strconv.FormatInt(time.Now().UnixMicro(), 10)}
}

func (c *Client) newRequest(key string, opts []LockOption) (*request, error) {
	if key == "" {
		return nil, errors.New("redlock: empty key")
	}
	if strings.HasPrefix(key, KeyPrefix) {
		return nil, fmt.Errorf("redlock: key %q is in the prefix %q reserved for the library's own state", key, KeyPrefix)
	}
	s := c.defaults
	if len(opts) > 0 {
		lc := c.cfg.lock
		for i, o := range opts {
			if o == nil {
				return nil, fmt.Errorf("redlock: lock option %d is nil", i)
			}
			o.applyLock(&lc)
		}
		var err error
		if s, err = lc.resolve(c.ns); err != nil {
			return nil, err
		}
	}
	r := &request{key: key, s: s, keyArg: key}
	// The settings' arguments are the same for every request with the
	// Client's defaults: those come boxed once, from the Client.
	if len(opts) > 0 || c.defaultArgs == nil {
		r.acquire = settingsArgs(c.ns, s)
	} else {
		r.acquire = *c.defaultArgs
	}
	r.ttlMs = r.acquire[acquireTTLms]
	// Without fencing (or a queue) the script is given the lock key in the
	// counter's (the queue's) place, and the names are not built.
	r.acquire[1], r.acquire[2] = r.keyArg, r.keyArg
	if s.fencing {
		r.acquire[2] = fencePrefix + key
	}
	r.queue, r.queueExp = r.keyArg, r.keyArg
	r.gone, r.goneMs = r.keyArg, argZero
	if c.ns.quarantine > 0 {
		// An extension sent before a release arrives within its request
		// timeout of being sent.
		r.gone, r.goneMs = gonePrefix+key, strconv.FormatInt(s.requestTimeout.Milliseconds(), 10)
	}
	if c.ns.fair {
		// Both names in one string: one allocation instead of two.
		both := queuePrefix + key + queueExpPrefix + key
		q := len(queuePrefix) + len(key)
		r.queue, r.queueExp = both[:q], both[q:]
	}
	r.acquire[5], r.acquire[6] = r.queue, r.queueExp
	return r, nil
}

// acquireTTLms is the position of the TTL in ms, as a string, in
// request.acquire (ARGV[2]).
const acquireTTLms = 8

// settingsArgs returns the acquisition script's arguments that depend on
// the settings only, boxed; the key-dependent ones (positions 1, 2, 5, 6)
// and the per-attempt ones are left for the request and the attempt.
func settingsArgs(ns nodeSettings, s settings) [acquireArgs]any {
	fenceFlag := "0"
	if s.fencing {
		fenceFlag = "1"
	}
	fairFlag := "0"
	if ns.fair {
		fairFlag = "1"
	}
	return [...]any{
		6, nil, nil, sentinelKey, runIDKey, nil, nil,
		nil, strconv.FormatInt(s.ttl.Milliseconds(), 10), nil, ns.maxSkew.Milliseconds(), ns.quarantine.Milliseconds(), fenceFlag,
		s.requestTimeout.Milliseconds(), "", "0", s.ttl.Milliseconds(), fairFlag, "",
	}
}

// bounds are the time limits of the request's rounds: decided at the node
// timeout, each request alive until the request timeout.
func (r *request) bounds() quorum.Bounds {
	return quorum.Bounds{Decide: r.s.nodeTimeout, Call: r.s.requestTimeout}
}

// attempt is one round of the algorithm: SET NX PX on every node at once,
// decided by majority and validity.
func (c *Client) attempt(ctx context.Context, req *request, token string, w *waiter) (*Lock, *RoundError) {
	if err := c.admit(ctx); err != nil {
		return nil, &RoundError{Op: "acquire", Key: req.key, Needed: c.Quorum(), Reason: err,
			detail: "while waiting for this Client's other attempts to leave a connection free"}
	}
	// The admission is given back once the round is decided, or once its
	// last call returned if that is sooner: a straggler on a hung node
	// must not hold it for longer.
	var freed atomic.Bool
	free := func() {
		if freed.CompareAndSwap(false, true) {
			<-c.rounds
		}
	}
	c.stats.attempts.Add(1)
	start := c.clk.Now()
	round := c.startVotes(ctx, req, token, w, free)
	d := round.Decide()
	free()
	if !d.OK {
		return nil, c.failure(ctx, req, token, round, nil, "")
	}
	var fence uint64
	if req.s.fencing {
		var err error
		if fence, err = c.writeFence(ctx, req, round.Collect()); err != nil {
			return nil, c.failure(ctx, req, token, round, ErrNoQuorum, err.Error())
		}
	}
	// Validity is computed last, after the fence round: a holder stalled
	// between the two rounds fails here and never uses its token.
	if validity(req.s.ttl, c.clk.Since(start), req.s.driftFactor) <= 0 {
		return nil, c.failure(ctx, req, token, round, ErrExpired, "the votes took longer than the TTL allows")
	}
	c.stats.acquired.Add(1)
	l := c.newLock(req, token, fence, deadline(start, req.s.ttl, req.s.driftFactor), round)
	if w != nil && c.ns.fair {
		l.waiter = w.id
		// A node that granted took the waiter out of its queue; the others
		// must too, or it would stay first there while it holds the lock.
		// A release may have granted one of them the token this attempt
		// registered for the next: that key goes too.
		grant := w.grant
		c.background(func() {
			var left []int
			for _, v := range round.Wait() {
				if v.Outcome != quorum.Yes {
					left = append(left, v.Node)
				}
			}
			if len(left) > 0 {
				c.dequeue(req, w.id, grant, "", left, false).Wait()
			}
		})
	}
	return l, nil
}

// startVotes sends the acquisition script to every node at once.
// free is called once every call has returned.
func (c *Client) startVotes(ctx context.Context, req *request, token string, w *waiter, free func()) *quorum.Round[vote] {
	args := req.acquire
	args[acquireToken], args[acquireWall] = token, time.Now().UnixMilli()
	if w != nil && c.ns.fair {
		args[acquireWaiter], args[acquireTicket], args[acquireGrant] = w.id, w.ticket, w.grant
	}
	acquire := acquireScript.calls(len(c.nodes), args[:]...)
	c.bg.add(len(c.nodes))
	var left atomic.Int32
	left.Store(int32(len(c.nodes)))
	return quorum.Start(ctx, len(c.nodes), req.bounds(), func(ctx context.Context, i int) (vote, bool, error) {
		defer c.bg.done()
		defer func() {
			if left.Add(-1) == 0 {
				free()
			}
		}()
		n := c.nodes[i]
		if err := n.start(req.s.requestTimeout); err != nil {
			c.stats.failed.Add(1)
			n.votes[outFailed].Add(1)
			return vote{}, false, err
		}
		if err := c.ready(ctx, n); err != nil {
			n.finish(err)
			c.stats.failed.Add(1)
			n.votes[outFailed].Add(1)
			return vote{}, false, err
		}
		v, err := parseVote(acquire.run(ctx, n.rdb, i))
		n.finish(err)
		if err != nil {
			c.stats.failed.Add(1)
			n.votes[outFailed].Add(1)
			return vote{}, false, err
		}
		c.noteVote(req, n, v)
		if v.status == voteNoInfo {
			return v, false, errNoInfoPermission
		}
		return v, v.status == voteGranted, nil
	})
}

// admit waits until fewer acquisition rounds of this Client are in flight
// than the smallest node pool has connections, before the round's clock
// starts: each round holds a connection on every node, and rounds beyond
// the pool would wait for one inside their node timeout. A thousand
// goroutines of one Client waiting for their keys then queue here, where
// the wait costs no connection and no validity, instead of timing out in
// the pools and trying again. It ends early with the ctx's error, or
// ErrClosed.
func (c *Client) admit(ctx context.Context) error {
	select {
	case c.rounds <- struct{}{}:
		return nil
	default:
	}
	select {
	case c.rounds <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-c.done:
		return ErrClosed
	}
}

// parseVote reads acquire.lua's {status, value, flags[, node µs]}.
func parseVote(cmd *redis.Cmd) (vote, error) {
	res, err := cmd.Slice()
	if err != nil {
		return vote{}, err
	}
	var v vote
	if len(res) == 3 || len(res) == 4 {
		var ok [4]bool
		v.status, ok[0] = res[0].(int64)
		v.value, ok[1] = res[1].(int64)
		v.flags, ok[2] = res[2].(int64)
		ok[3] = true
		if len(res) == 4 {
			v.nodeUs, ok[3] = res[3].(int64)
		}
		if ok[0] && ok[1] && ok[2] && ok[3] {
			return v, nil
		}
	}
	return vote{}, errors.New("malformed reply from the acquisition script")
}

// noteVote counts and logs what a vote tells about its node, as it arrives,
// whether or not the round succeeds.
func (c *Client) noteVote(req *request, n *node, v vote) {
	if v.flags&flagRestart != 0 {
		n.reprobe()
		c.log.node(slog.LevelWarn, n, "redlock: node restarted", "quarantine", c.ns.quarantine,
			"detail", "a new server process may lack the last lock keys, so it serves the restart quarantine again")
	}
	switch v.status {
	case voteGranted:
		n.votes[outGranted].Add(1)
	case voteTaken:
		c.stats.taken.Add(1)
		n.votes[outTaken].Add(1)
	case voteSkewed:
		n.votes[outSkewed].Add(1)
		c.stats.skewed.Add(1)
		c.log.node(slog.LevelWarn, n, "redlock: node clock skewed", "skew", time.Duration(v.value)*time.Millisecond, "max_skew", c.ns.maxSkew,
			"detail", "the node does not vote while its clock is off from this client's beyond the bound")
	case voteQuarantined:
		c.stats.quarantined.Add(1)
		n.votes[outQuarantined].Add(1)
		c.log.node(slog.LevelInfo, n, "redlock: node in restart quarantine", "votes_in", (time.Duration(v.value) * time.Millisecond).Round(time.Millisecond),
			"quarantine", c.ns.quarantine,
			"detail", "its data is younger than the quarantine (the node is new, restarted or lost its data), so it does not vote yet; "+
				"for a freshly deployed set of nodes, declare them with Client.Bootstrap (quorumlock bootstrap)")
	case voteQueued:
		c.stats.queued.Add(1)
		n.votes[outQueued].Add(1)
	case voteNoInfo:
		c.stats.failed.Add(1)
		n.votes[outFailed].Add(1)
		c.log.node(slog.LevelWarn, n, "redlock: node denies INFO", "err", errNoInfoPermission)
	}
}

// voteError explains a refused vote.
func (c *Client) voteError(i int, v vote) *NodeError {
	d := time.Duration(v.value) * time.Millisecond
	switch v.status {
	case voteTaken:
		return c.nodeError(i, NodeTaken, d, nil)
	case voteSkewed:
		return c.nodeError(i, NodeSkewed, d, nil)
	case voteQuarantined:
		return c.nodeError(i, NodeQuarantined, d, nil)
	case voteQueued:
		return &NodeError{Node: i, Addr: c.nodes[i].addr, Reason: NodeQueued, Ahead: int(v.value)}
	}
	return c.nodeError(i, NodeFailed, 0, fmt.Errorf("unknown vote status %d", v.status))
}

// failure explains a failed attempt by the votes in so far, and starts the
// cleanup of every node that may hold the key. reason is nil when the votes
// decide it.
func (c *Client) failure(ctx context.Context, req *request, token string, round *quorum.Round[vote], reason error, detail string) *RoundError {
	votes := round.Collect()
	e := &RoundError{Op: "acquire", Key: req.key, Needed: round.Need(), Reason: reason, detail: detail}
	var taken int
	var quarantined []string
	var quarantineLeft time.Duration
	for _, v := range votes {
		switch v.Outcome {
		case quorum.Yes:
			e.Granted++
		case quorum.No:
			ne := c.voteError(v.Node, v.Value)
			switch ne.Reason {
			case NodeTaken, NodeQueued:
				taken++
			case NodeQuarantined:
				quarantined = append(quarantined, strconv.Itoa(v.Node))
				quarantineLeft = max(quarantineLeft, ne.Wait)
			}
			e.Nodes = append(e.Nodes, ne)
		case quorum.Failed:
			e.Nodes = append(e.Nodes, c.nodeError(v.Node, NodeFailed, 0, v.Err))
		default: // left out of an early decision, or out of time
			if round.Expired() {
				e.Nodes = append(e.Nodes, c.nodeError(v.Node, NodeFailed, 0, errNoAnswer(req)))
			}
		}
	}
	if e.Reason == nil {
		switch {
		case ctx.Err() != nil:
			e.Reason = ctx.Err()
		case taken > len(c.nodes)-e.Needed:
			e.Reason = ErrTaken
		default:
			e.Reason = ErrNoQuorum
			if len(quarantined) > 0 {
				e.detail = fmt.Sprintf("waiting for the restart quarantine of node %s, up to %v more", strings.Join(quarantined, ", "), quarantineLeft.Round(time.Millisecond))
			}
		}
	}
	// The key may have landed wherever a node granted, failed or had not
	// answered: it is deleted in the background (see releaseAfter), and
	// Acquire contends again only once that is done.
	e.cleanup = c.releaseAfter(req, token, round, false, false, "", time.Time{}).done
	return e
}
