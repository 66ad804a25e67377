package redlock

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/quorumlock/quorumlock/quorum"
)

// Election is a leader election on the quorum lock: at most one process at
// a time holds a term, and every term's fence token is larger than that of
// every earlier term.
//
// A term is the fenced, auto-extended lock on the election's name (the lock
// key is exactly the name, so `quorumlock inspect --key NAME` shows it),
// with a leader record next to it on the nodes — the leader's identity, the
// value it advertises and its fence token, under "quorumlock:leader:" +
// name — written by the holder with a token-checked script and expiring
// with the lock.
//
// What an Election guarantees: a term ends locally (Term.Done, its context
// cancelled with ErrLeadershipLost) no later than its lock's validity, which
// ends before any other candidate can win the lock; a failed extension is
// never only logged: the term ends at its validity whatever the reason. What
// it does not guarantee: that a leader paused past its validity (GC, a
// stopped VM) notices in time — another process may lead meanwhile. Hand
// Term.Fence to storage that checks it (FencedSet) to refuse its late
// writes.
type Election struct {
	c        *Client
	name     string
	identity string
	value    []byte
	lock     []LockOption
	recKey   string
	req      *request // the term's lock settings, resolved once
	err      error    // a bad option or name, returned by Campaign and Run
}

// ElectionOption configures an Election. Every LockOption is also an
// ElectionOption and configures the lock of each term: WithTTL, WithNodeTimeout,
// WithRetryDelay, WithDriftFactor and WithMaxHold (default 0 for an election:
// a term lasts as long as its leader keeps it). WithFencing and
// WithAutoExtend are always on and WithTries is always 0 (Campaign waits
// until it leads or ctx ends), whatever the options say.
type ElectionOption interface {
	applyElection(*electionConfig)
}

type electionConfig struct {
	identity    string
	identitySet bool
	value       []byte
	lock        []LockOption
	err         error
}

type electionOption func(*electionConfig)

func (f electionOption) applyElection(c *electionConfig) { f(c) }

// WithIdentity names this candidate in the leader record (Leader.Identity).
// Default: the host name, ":", and the process id.
func WithIdentity(id string) ElectionOption {
	return electionOption(func(c *electionConfig) { c.identity, c.identitySet = id, true })
}

// WithValue sets what this candidate advertises once it leads
// (Leader.Value), e.g. its address; Term.Proclaim changes it. Default
// empty.
func WithValue(v []byte) ElectionOption {
	return electionOption(func(c *electionConfig) { c.value = bytes.Clone(v) })
}

// Leader is who leads an election, as its record on the nodes says. The
// zero Leader stands for "no leader" (Observe).
type Leader struct {
	Identity string
	Value    []byte
	Fence    uint64 // the fence token of the leader's term
}

// IsZero reports whether l is the zero Leader: no leader.
func (l Leader) IsZero() bool { return l.Identity == "" && l.Value == nil && l.Fence == 0 }

func (l Leader) equal(o Leader) bool {
	return l.Identity == o.Identity && l.Fence == o.Fence && bytes.Equal(l.Value, o.Value)
}

// Election returns the election called name on the Client's nodes. It
// contacts no node; a bad name or option is reported by Campaign and Run.
func (c *Client) Election(name string, opts ...ElectionOption) *Election {
	cfg := electionConfig{}
	for i, o := range opts {
		if o == nil {
			cfg.err = errors.New("redlock: election option " + strconv.Itoa(i) + " is nil")
			continue
		}
		o.applyElection(&cfg)
	}
	if !cfg.identitySet {
		cfg.identity = defaultIdentity()
	}
	lock := append([]LockOption{WithMaxHold(0)}, cfg.lock...)
	lock = append(lock, WithFencing(true), WithAutoExtend(true), WithTries(0))
	e := &Election{c: c, name: name, identity: cfg.identity, value: cfg.value, lock: lock, recKey: leaderPrefix + name, err: cfg.err}
	if e.err == nil {
		e.req, e.err = c.newRequest(name, lock)
	}
	return e
}

func defaultIdentity() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

// Name returns the election's name: the lock key of its terms.
func (e *Election) Name() string { return e.name }

// Identity returns this candidate's identity.
func (e *Election) Identity() string { return e.identity }

// Campaign blocks until this process leads the election, or ctx ends (the
// error is then a *RoundError whose Reason is the ctx's error) or the
// Client closes (ErrClosed). Candidates are served in arrival order
// (WithFairness). The term's lock extends itself until the term is resigned
// or lost.
func (e *Election) Campaign(ctx context.Context) (*Term, error) {
	ctx = orBackground(ctx)
	if e.err != nil {
		return nil, e.err
	}
	for {
		l, err := e.c.Acquire(ctx, e.name, e.lock...)
		if err != nil {
			return nil, err
		}
		rec := e.record(l.Fence(), e.value, 1)
		l.record.Store(rec)
		werr := e.c.writeRecord(ctx, l, rec)
		if werr == nil && l.Valid() {
			return e.newTerm(l), nil
		}
		// Leading without a record would show nobody as leader: give the
		// lock back and contend again.
		_ = l.Release(context.Background()) // bounded by the node timeout
		if werr != nil {
			e.c.log.warn("record "+e.name, "redlock: election leader record not written; campaigning again",
				"election", e.name, "error", werr)
		}
		if _, err := e.c.sleep(ctx, retryDelay(l.req.s, &RoundError{}), nil, nil); err != nil {
			return nil, &RoundError{Op: "acquire", Key: e.name, Needed: e.c.Quorum(), Reason: err, detail: "while campaigning"}
		}
	}
}

func (e *Election) record(fence uint64, value []byte, seq uint64) *leaderRecord {
	return &leaderRecord{key: e.recKey, id: e.identity, value: string(value),
		fence: strconv.FormatUint(fence, 10), seq: strconv.FormatUint(seq, 10)}
}

// leaderRecord is the arguments of an election's leader record.
type leaderRecord struct {
	key                   string
	id, value, fence, seq string
}

// writeRecord writes rec next to l's key on every node where l's key holds
// its token; it needs a majority. A majority that no longer holds the token
// ends the lock.
func (c *Client) writeRecord(ctx context.Context, l *Lock, rec *leaderRecord) error {
	req := l.req
	channel := ""
	if c.ns.wakeup {
		channel = releasedChannel
	}
	w := leaderScript.calls(len(c.nodes), 2, req.keyArg, rec.key, l.token, rec.id, rec.value, rec.fence, rec.seq, channel)
	c.bg.add(len(c.nodes))
	r := quorum.Start(ctx, len(c.nodes), req.bounds(), func(ctx context.Context, i int) (bool, bool, error) {
		defer c.bg.done()
		n := c.nodes[i]
		if err := n.start(req.s.requestTimeout); err != nil {
			return false, false, err
		}
		got, err := w.run(ctx, n.rdb, i).Int64()
		n.finish(err)
		return got == 1, got == 1, err
	})
	d := r.Decide()
	if d.OK {
		return nil
	}
	e := c.roundFailure("proclaim", req, r, nil)
	switch {
	case d.No >= r.Need():
		e.Reason = ErrNotHeld
		l.lease.end(withDetail(ErrNotHeld, "a majority of nodes no longer holds the token"), true)
	case ctx.Err() != nil:
		e.Reason = ctx.Err()
	default:
		e.Reason = ErrNoQuorum
	}
	return e
}

// Term is one term of leadership: the time during which this process leads
// an election. It is safe for use from several goroutines.
type Term struct {
	e      *Election
	l      *Lock
	ctx    context.Context
	cancel context.CancelCauseFunc
	mu     sync.Mutex // serialises Proclaim
	seq    uint64     // of the last record written
}

func (e *Election) newTerm(l *Lock) *Term {
	t := &Term{e: e, l: l, seq: 1}
	t.ctx, t.cancel = context.WithCancelCause(context.WithValue(context.Background(), lockKey{}, l))
	e.c.noteTerm(e.name, true, l.Fence())
	// The term ends exactly when its lock does: the lock's deadline timer,
	// a refused extension, or Resign. No second timer.
	context.AfterFunc(l.lease.ctx, func() {
		t.cancel(&termError{name: e.name, reason: context.Cause(l.lease.ctx)})
		e.c.noteTerm(e.name, false, l.Fence())
	})
	return t
}

// Context returns a context cancelled the moment the term ends: its
// validity ran out (also after extensions that failed), a majority of nodes
// refused to extend it, or Resign. context.Cause then matches
// ErrLeadershipLost and wraps why (ErrLockLost and its reason, or
// ErrReleased). It carries the term's lock, so that a client guarded with
// Guard refuses commands sent with it once the term is over.
func (t *Term) Context() context.Context { return t.ctx }

// Done returns a channel closed once, when the term ends.
func (t *Term) Done() <-chan struct{} { return t.ctx.Done() }

// Err returns nil while the term lasts; afterwards an error matching
// ErrLeadershipLost that wraps why.
func (t *Term) Err() error {
	if t.ctx.Err() == nil && t.l.Err() == nil {
		return nil
	}
	// The term's context follows its lock's end from another goroutine;
	// once the lock has ended it is cancelled at once.
	<-t.ctx.Done()
	return context.Cause(t.ctx)
}

// Fence returns the term's fence token: strictly larger than that of every
// earlier term of the election (it is the fence token of the term's lock).
func (t *Term) Fence() uint64 { return t.l.Fence() }

// Proclaim changes the value the leader advertises (Leader.Value) on a
// majority of nodes, where the term's lock still holds its token. It fails
// with the term's Err (ErrLeadershipLost) once the term is over, with a
// *RoundError matching ErrNotHeld when a majority no longer holds the lock
// (the term then ends), or ErrNoQuorum / the ctx's error when too few nodes
// answered (the term goes on; readers may still see the old value).
func (t *Term) Proclaim(ctx context.Context, value []byte) error {
	ctx = orBackground(ctx)
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.Err(); err != nil {
		return err
	}
	t.seq++
	rec := t.e.record(t.l.Fence(), value, t.seq)
	t.l.record.Store(rec)
	return t.e.c.writeRecord(ctx, t.l, rec)
}

// Resign ends the term and releases its lock (see Lock.Release): the term's
// context is cancelled first, then the nodes drop the lock, and the next
// candidate can lead at once; observers see "no leader" until it does.
func (t *Term) Resign(ctx context.Context) error {
	err := t.l.Release(ctx)
	// When Resign returns, the term is over for its Context and Done too.
	<-t.ctx.Done()
	return err
}

// Run leads the election whenever it can, until ctx ends: it campaigns, runs
// fn under the term, and when the term ends campaigns again. fn's ctx is the
// term's context, also cancelled when ctx ends. fn is only ever called for a
// term that started, and never twice at once.
//
// When the term is lost, fn's ctx is cancelled and Run waits for fn to
// return before it campaigns again. When fn returns, whether with nil or an
// error, Run resigns the term and campaigns again: fn's error ends the term,
// not Run (fn reports or logs it itself). When ctx ends, Run cancels fn's
// ctx and resigns once fn returned — or once the term's validity left at
// that moment ran out, whichever is first, so that a fn slow to stop does
// not hold the next leader up for longer than its lock would; Run itself
// returns only after fn did.
//
// Run returns ctx's error, or the error that made Campaign fail otherwise
// (ErrClosed, a bad option). A panic in fn resigns the term and goes on.
func (e *Election) Run(ctx context.Context, fn func(ctx context.Context, t *Term) error) error {
	ctx = orBackground(ctx)
	if fn == nil {
		return errors.New("redlock: Run: nil function")
	}
	for {
		t, err := e.Campaign(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		e.serve(ctx, t, fn)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// serve runs fn for term t and resigns it (see Run).
func (e *Election) serve(ctx context.Context, t *Term, fn func(ctx context.Context, t *Term) error) {
	fctx, cancel := context.WithCancelCause(t.ctx)
	stop := context.AfterFunc(ctx, func() { cancel(context.Cause(ctx)) })
	returned := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-returned:
			return
		case <-ctx.Done():
		}
		// Resign when fn returned or, at the latest, when the validity
		// left now runs out.
		left := t.l.Until().Sub(e.c.clk.Now())
		timer := e.c.clk.NewTimer(max(left, 0))
		defer timer.Stop()
		select {
		case <-returned:
		case <-timer.C():
		}
		_ = t.Resign(context.Background()) // bounded by the node timeout
	}()
	defer func() {
		close(returned)
		wg.Wait()
		stop()
		cancel(context.Canceled)
		_ = t.Resign(context.Background()) // ErrNotHeld when already over
	}()
	_ = fn(fctx, t)
}

// Leader reads who leads the election from the nodes: the holder of the
// lock on a majority of nodes and its leader record (of the latest
// Proclaim among the nodes that answered). It waits for every node's answer
// (each bounded by the request timeout). It returns ErrNoLeader when no
// token holds a majority, or its holder has not written its record yet,
// and a *RoundError matching ErrNoQuorum (or the ctx's error) when too few
// nodes answered to tell.
func (e *Election) Leader(ctx context.Context) (Leader, error) {
	ctx = orBackground(ctx)
	if e.err != nil {
		return Leader{}, e.err
	}
	c, req := e.c, e.req
	read := leaderReadScript.calls(len(c.nodes), 2, req.keyArg, e.recKey)
	c.bg.add(len(c.nodes))
	r := quorum.Start(ctx, len(c.nodes), req.bounds(), func(ctx context.Context, i int) ([]string, bool, error) {
		defer c.bg.done()
		n := c.nodes[i]
		if err := n.start(req.s.requestTimeout); err != nil {
			return nil, false, err
		}
		got, err := read.run(ctx, n.rdb, i).StringSlice()
		n.finish(err)
		if err == nil && len(got) != 6 {
			err = errors.New("malformed reply from the leader read script")
		}
		return got, err == nil, err
	})
	votes := r.Wait()
	answered := 0
	holders := map[string]int{}
	for _, v := range votes {
		if v.Outcome == quorum.Yes {
			answered++
			if h := v.Value[0]; h != "" {
				holders[h]++
			}
		}
	}
	if answered < c.Quorum() {
		re := &RoundError{Op: "leader", Key: e.name, Needed: c.Quorum(), Granted: answered, Reason: ErrNoQuorum}
		if ctx.Err() != nil {
			re.Reason = ctx.Err()
		}
		for _, v := range votes {
			if v.Outcome != quorum.Yes {
				re.Nodes = append(re.Nodes, c.nodeError(v.Node, NodeFailed, 0, v.Err))
			}
		}
		return Leader{}, re
	}
	var best Leader
	var bestSeq uint64
	found := false
	for _, v := range votes {
		if v.Outcome != quorum.Yes {
			continue
		}
		h, tok := v.Value[0], v.Value[1]
		if h == "" || tok != h || holders[h] < c.Quorum() {
			continue
		}
		fence, err1 := strconv.ParseUint(v.Value[4], 10, 64)
		seq, err2 := strconv.ParseUint(v.Value[5], 10, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		if !found || seq > bestSeq {
			best = Leader{Identity: v.Value[2], Value: []byte(v.Value[3]), Fence: fence}
			bestSeq, found = seq, true
		}
	}
	if !found {
		return Leader{}, ErrNoLeader
	}
	return best, nil
}

// Observe reports who leads the election: the current state first, then
// every change, the zero Leader standing for "no leader". Only the latest
// state waits in the channel (a reader that falls behind skips states it
// can no longer act on). It reads the nodes when a release or a leader
// record is announced (WithWakeup), and every half TTL in any case, so
// that a term that ended without an announcement (its holder died) is seen
// within about a TTL and a half. A read that reaches too few nodes changes
// nothing. The channel is closed when ctx ends or the Client closes.
func (e *Election) Observe(ctx context.Context) <-chan Leader {
	ctx = orBackground(ctx)
	ch := make(chan Leader, 1)
	if e.err != nil || !e.c.enter() {
		close(ch)
		return ch
	}
	defer e.c.calls.done()
	c := e.c
	wu := c.waker.watch(e.name)
	period := max(e.req.s.ttl/2, 10*time.Millisecond)
	c.background(func() {
		defer close(ch)
		defer c.waker.unregister(wu)
		var last Leader
		sent := false
		for {
			l, err := e.Leader(ctx)
			if err == nil || errors.Is(err, ErrNoLeader) {
				if !sent || !last.equal(l) {
					select { // latest wins
					case <-ch:
					default:
					}
					ch <- l
					last, sent = l, true
				}
			}
			t := c.clk.NewTimer(period)
			select {
			case <-ctx.Done():
			case <-c.done:
			case <-wu.ch:
			case <-t.C():
			}
			t.Stop()
			if ctx.Err() != nil || c.isClosed() {
				return
			}
		}
	})
	return ch
}
