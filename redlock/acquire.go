package redlock

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/clock"
	"github.com/quorumlock/quorumlock/quorum"
)

// Vote statuses returned by scripts/acquire.lua.
const (
	voteGranted     = 1
	voteTaken       = 0
	voteSkewed      = -1
	voteQuarantined = -2
)

// vote is one node's answer to the acquisition script.
type vote struct {
	status int64
	value  int64 // fence counter, holder's TTL (ms), skew (ms) or quarantine left (ms)
}

// request is one acquisition: key, options and the script arguments that
// every attempt shares.
type request struct {
	key   string
	s     settings
	ttlMs string // extend.lua's TTL argument

	// The scripts' arguments, boxed once. In acquire, the token and the
	// wall clock, which change with every attempt, are left nil for
	// attempt to fill in.
	keyArg  any
	acquire [10]any
}

// Positions of the per-attempt values in request.acquire.
const (
	acquireToken = 4 // ARGV[1]
	acquireWall  = 6 // ARGV[3]
)

func (c *Client) newRequest(key string, opts []LockOption) (*request, error) {
	if key == "" {
		return nil, errors.New("redlock: empty key")
	}
	if c.closed.Load() {
		return nil, ErrClosed
	}
	s := c.defaults
	for _, o := range opts {
		if o == nil {
			return nil, errors.New("redlock: nil lock option")
		}
		o.applyLock(&s)
	}
	s, err := s.resolve()
	if err != nil {
		return nil, err
	}
	r := &request{key: key, s: s, ttlMs: strconv.FormatInt(s.ttl.Milliseconds(), 10)}
	r.keyArg = key
	// The script reads the fence counter only when asked to: without
	// fencing it is given the lock key in that place, and the fence key's
	// name is not built.
	fenceKey, fenceFlag := r.keyArg, "0"
	if s.fencing {
		fenceKey, fenceFlag = r.fenceKey(), "1"
	}
	r.acquire = [...]any{
		3, r.keyArg, fenceKey, SentinelKey,
		nil, r.ttlMs, nil, s.maxSkew.Milliseconds(), s.quarantine.Milliseconds(), fenceFlag,
	}
	return r, nil
}

// fenceKey is the name of the key's fence counter.
func (r *request) fenceKey() string { return FencePrefix + r.key }

// channel is the pub/sub channel of the key's releases.
func (r *request) channel() string { return ReleasedPrefix + r.key }

// TryAcquire makes exactly one attempt to acquire the lock on key. When
// another owner holds it the error matches ErrNotObtained and ErrTaken, and
// errors.As finds a *NotObtainedError listing each node's answer.
func (c *Client) TryAcquire(ctx context.Context, key string, opts ...LockOption) (*Lock, error) {
	req, err := c.newRequest(key, opts)
	if err != nil {
		return nil, err
	}
	l, nerr := c.attempt(ctx, req, newToken())
	if nerr != nil {
		return nil, nerr
	}
	return l, nil
}

// Acquire blocks until the lock on key is held or ctx is done; in the latter
// case the error matches both ErrNotObtained and ctx.Err().
//
// Goroutines of one Client waiting for the same key queue in FIFO order and
// only the first of them contends over the network, so waiters in one
// process are served fairly and do not flood the nodes. While another
// process holds the key, the first waiter wakes up when the holder releases
// (pub/sub) or after a random delay (WithRetryDelay), whichever comes first.
func (c *Client) Acquire(ctx context.Context, key string, opts ...LockOption) (*Lock, error) {
	req, err := c.newRequest(key, opts)
	if err != nil {
		return nil, err
	}
	leave, err := c.queues.enter(ctx, key)
	if err != nil {
		return nil, &NotObtainedError{Key: key, Needed: c.Quorum(), Cause: err}
	}
	var wake <-chan struct{}
	var unsubscribe func()
	defer func() {
		if unsubscribe != nil {
			unsubscribe()
		}
	}()
	for attempt := 1; ; attempt++ {
		// A fresh token for every attempt: the cleanup of a failed attempt
		// can reach a node late, after the next attempt set the key there,
		// and must not delete that key.
		l, nerr := c.attempt(ctx, req, newToken())
		if nerr == nil {
			l.setLeave(leave)
			return l, nil
		}
		nerr.Attempts = attempt
		if ctx.Err() != nil || (req.s.tries > 0 && attempt >= req.s.tries) || c.closed.Load() {
			leave()
			if nerr.Cause == nil {
				nerr.Cause = ctx.Err()
			}
			if nerr.Cause == nil && c.closed.Load() {
				nerr.Cause = ErrClosed
			}
			return nil, nerr
		}
		if req.s.wakeup && unsubscribe == nil {
			wake, unsubscribe = c.waker.subscribe(ctx, req.channel(), req.s.nodeTimeout)
		}
		if err := c.sleep(ctx, retryDelay(req.s, nerr), wake); err != nil {
			leave()
			nerr.Cause = err
			return nil, nerr
		}
	}
}

// retryDelay is a random delay in the configured range, cut to the holder's
// remaining TTL when the nodes reported one: there is no point sleeping past
// the moment the key expires.
func retryDelay(s settings, nerr *NotObtainedError) time.Duration {
	d := s.retryMin
	if s.retryMax > s.retryMin {
		d += rand.N(s.retryMax - s.retryMin)
	}
	var shortest time.Duration = -1
	for _, n := range nerr.Nodes {
		var te *TakenError
		if errors.As(n.Err, &te) && te.TTL >= 0 && (shortest < 0 || te.TTL < shortest) {
			shortest = te.TTL
		}
	}
	if shortest >= 0 && shortest+time.Millisecond < d {
		d = shortest + time.Millisecond
	}
	return d
}

func (c *Client) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) error {
	t := c.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C():
		return nil
	case <-wake:
		return nil
	}
}

// attempt is one round of the algorithm: SET NX PX on every node at once,
// decided by majority and validity; on failure the key is removed from every
// node that may hold it.
func (c *Client) attempt(ctx context.Context, req *request, token string) (*Lock, *NotObtainedError) {
	c.stats.attempts.Add(1)
	start := c.clk.Now()
	args := req.acquire
	args[acquireToken], args[acquireWall] = token, time.Now().UnixMilli()
	acquire := acquireScript.calls(len(c.nodes), args[:]...)
	round := quorum.Start(ctx, len(c.nodes), req.s.nodeTimeout, func(ctx context.Context, i int) (vote, bool, error) {
		v, err := parseVote(acquire.run(ctx, c.nodes[i].rdb, i))
		if err != nil {
			c.stats.failed.Add(1)
			return vote{}, false, err
		}
		if req.s.quarantine > 0 && c.nodes[i].restart.needsCheck() {
			// A new connection: the node may have restarted under us.
			left, err := c.checkRestart(ctx, i, req.s.quarantine)
			if err != nil {
				return v, false, err // counted as failed; cleaned up if granted
			}
			if left > 0 {
				qe := &QuarantineError{Remaining: left}
				c.countVote(req, i, voteQuarantined, qe)
				if v.status == voteGranted {
					return v, false, qe // counted as failed, so that it is cleaned up
				}
				return vote{status: voteQuarantined, value: left.Milliseconds()}, false, nil
			}
		}
		if v.status != voteGranted {
			c.countVote(req, i, v.status, voteError(req, v))
		}
		return v, v.status == voteGranted, nil
	})
	d := round.Decide()
	var cause error
	if d.OK {
		var fence uint64
		ok := true
		if req.s.fencing {
			fence, ok = c.writeFence(ctx, req, round.Votes())
		}
		// Validity is computed only now, after the fence write-back: a
		// holder stalled between the two rounds fails here and never uses
		// its token.
		if ok {
			if v := clock.Validity(req.s.ttl, c.clk.Since(start), req.s.driftFactor); v > 0 {
				c.stats.acquired.Add(1)
				l := c.newLock(req, token, fence, clock.Deadline(start, req.s.ttl, req.s.driftFactor))
				l.acquisition = round
				return l, nil
			}
			cause = ErrExpired
		} else {
			cause = ErrNoQuorum
		}
	}
	if cause == nil && ctx.Err() != nil {
		cause = ctx.Err()
	}
	votes := round.Wait()
	nerr := &NotObtainedError{Key: req.key, Needed: round.Need(), Cause: cause}
	var mayHold []int
	for _, v := range votes {
		if v.Outcome == quorum.Yes {
			nerr.Granted++
			mayHold = append(mayHold, v.Node)
			continue
		}
		if v.Outcome == quorum.Failed {
			mayHold = append(mayHold, v.Node) // the SET may have landed
		}
		err := v.Err
		if v.Outcome == quorum.No {
			err = voteError(req, v.Value)
		}
		nerr.Nodes = append(nerr.Nodes, c.nodeError(v.Node, err))
	}
	if len(mayHold) > 0 {
		c.releaseOn(context.WithoutCancel(ctx), req, token, mayHold, false)
	}
	return nil, nerr
}

// parseVote reads acquire.lua's {status, value}.
func parseVote(cmd *redis.Cmd) (vote, error) {
	res, err := cmd.Slice()
	if err != nil {
		return vote{}, err
	}
	if len(res) == 2 {
		status, ok1 := res[0].(int64)
		value, ok2 := res[1].(int64)
		if ok1 && ok2 {
			return vote{status: status, value: value}, nil
		}
	}
	return vote{}, errors.New("redlock: malformed reply from the acquisition script")
}

// voteError turns a refused vote into the error that explains it.
func voteError(req *request, v vote) error {
	d := time.Duration(v.value) * time.Millisecond
	switch v.status {
	case voteTaken:
		return &TakenError{TTL: d}
	case voteSkewed:
		return &SkewError{Skew: d, Max: req.s.maxSkew}
	case voteQuarantined:
		return &QuarantineError{Remaining: d}
	}
	return errors.New("redlock: unknown vote status " + strconv.FormatInt(v.status, 10))
}

// countVote counts a refused vote as it arrives, whether or not the round
// succeeds, and logs the refusals that point at a node problem.
func (c *Client) countVote(req *request, node int, status int64, err error) {
	switch status {
	case voteTaken:
		c.stats.taken.Add(1)
		return
	case voteSkewed:
		c.stats.skewed.Add(1)
	case voteQuarantined:
		c.stats.quarantined.Add(1)
	}
	c.logWarn("redlock: vote refused", "node", node, "addr", c.nodes[node].addr, "key", req.key, "reason", err)
}

// writeFence is the second round of a fenced acquisition: the token is the
// highest counter among the granting nodes + 1, written back ("raise to at
// least") to a majority of all nodes. Any later holder's majority overlaps
// this one, reads a counter ≥ token there, and so gets a larger token.
func (c *Client) writeFence(ctx context.Context, req *request, votes []quorum.Vote[vote]) (uint64, bool) {
	var granted []int
	var highest int64
	for _, v := range votes {
		if v.Outcome == quorum.Yes {
			granted = append(granted, v.Node)
			highest = max(highest, v.Value.value)
		}
	}
	fence := highest + 1
	arg := strconv.FormatInt(fence, 10)
	fenceKey := req.fenceKey()
	r := quorum.StartNeed(ctx, len(granted), quorum.Majority(len(c.nodes)), req.s.nodeTimeout, func(ctx context.Context, j int) (struct{}, bool, error) {
		got, err := fenceScript.Run(ctx, c.nodes[granted[j]].rdb, []string{fenceKey}, arg).Int64()
		return struct{}{}, err == nil && got == fence, err
	})
	return uint64(fence), r.Decide().OK
}

// releaseOn deletes the key from the given nodes when it still holds token,
// waiting for every answer (each bounded by the node timeout).
func (c *Client) releaseOn(ctx context.Context, req *request, token string, nodes []int, announce bool) {
	c.startRelease(ctx, req, token, nodes, announce).Wait()
}

// startRelease starts deleting the key from the given nodes when it still
// holds token; the round's votes are indexed like nodes.
func (c *Client) startRelease(ctx context.Context, req *request, token string, nodes []int, announce bool) *quorum.Round[struct{}] {
	channel := ""
	if announce {
		channel = req.channel()
	}
	release := releaseScript.calls(len(nodes), 1, req.keyArg, token, channel)
	return quorum.Start(ctx, len(nodes), req.s.nodeTimeout, func(ctx context.Context, j int) (struct{}, bool, error) {
		n, err := release.run(ctx, c.nodes[nodes[j]].rdb, j).Int64()
		return struct{}{}, n == 1, err
	})
}
