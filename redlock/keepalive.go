package redlock

import (
	"cmp"
	"container/heap"
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/quorumlock/quorumlock/quorum"
)

// keeper extends the auto-extending locks of one Client: one goroutine and
// one timer for all of them, whatever their number, and a goroutine per
// batch of extensions only while it runs. A lock is extended when a third
// of its TTL is left, together with the locks due within a tenth of a TTL
// after it (see extendBatch); a failed extension is retried every TTL/20
// while the lock is valid; extension stops at the lock's maximum hold time.
type keeper struct {
	c       *Client
	mu      sync.Mutex
	h       lockHeap
	running bool
	stopped bool
	kick    chan struct{} // buffered 1: the earliest deadline moved
	slots   chan struct{} // one per batch in flight
	quit    chan struct{}
	done    chan struct{}
}

// keepState is a lock's place in the keeper.
type keepState struct {
	index   int // in the heap; -1 when not scheduled
	next    time.Time
	retry   bool // next is a retry after a failure: not taken early
	removed bool // the lock ended: never schedule it again
}

func newKeeper(c *Client) *keeper {
	return &keeper{c: c, kick: make(chan struct{}, 1), slots: make(chan struct{}, maxBatches), quit: make(chan struct{}), done: make(chan struct{})}
}

// schedule plans the next extension of l, if it is due one.
func (k *keeper) schedule(l *Lock) {
	at, ok := k.next(l)
	retry := l.lease.failing()
	k.mu.Lock()
	defer k.mu.Unlock()
	if !ok || k.stopped || l.ka.removed {
		return
	}
	l.ka.next, l.ka.retry = at, retry
	if l.ka.index >= 0 {
		heap.Fix(&k.h, l.ka.index)
	} else {
		heap.Push(&k.h, l)
	}
	if !k.running {
		k.running = true
		go k.loop()
	}
	if k.h[0] == l {
		select {
		case k.kick <- struct{}{}:
		default:
		}
	}
}

// remove forgets l for good.
func (k *keeper) remove(l *Lock) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l.ka.removed = true
	if l.ka.index >= 0 {
		heap.Remove(&k.h, l.ka.index)
	}
}

// next is when l should be extended: a third of the TTL before its
// deadline, or soon when the last extension failed; ok is false when it
// should not be (ended, or at its maximum hold time).
func (k *keeper) next(l *Lock) (time.Time, bool) {
	s := l.req.s
	now := k.c.clk.Now()
	until := l.Until()
	if !l.Valid() {
		return time.Time{}, false // the deadline timer ends the lock with the reason
	}
	wait := until.Add(-s.ttl / 3).Sub(now)
	if l.lease.failing() {
		wait = min(s.ttl/20, until.Sub(now))
	}
	wait = max(wait, 0)
	if s.maxHold > 0 && now.Add(wait).Sub(l.acquired)+s.ttl > s.maxHold {
		l.lease.setCapped()
		return time.Time{}, false
	}
	return now.Add(wait), true
}

func (k *keeper) loop() {
	defer close(k.done)
	for {
		now := k.c.clk.Now()
		var due []*Lock
		wait := time.Duration(-1)
		k.mu.Lock()
		// The locks due soon are extended now, with those due: their
		// extensions travel together (see extendBatch), and a lock
		// extended a little early only holds a little longer. A retry is
		// never taken early: it is due TTL/20 after the failure, within
		// the window, and would go out again at once.
		for len(k.h) > 0 && k.due(k.h[0], now) {
			due = append(due, heap.Pop(&k.h).(*Lock))
		}
		if len(k.h) > 0 {
			wait = k.h[0].ka.next.Sub(now)
		}
		k.mu.Unlock()
		// A batch holds locks of one request timeout: its pipelines get
		// the shortest of its locks' (an extension must arrive within its
		// own lock's, see extendBatch), which a lock with a longer one
		// must not inherit.
		slices.SortStableFunc(due, func(a, b *Lock) int {
			return cmp.Compare(a.req.s.requestTimeout, b.req.s.requestTimeout)
		})
		for len(due) > 0 {
			n := 1
			for n < len(due) && n < maxExtendBatch && due[n].req.s.requestTimeout == due[0].req.s.requestTimeout {
				n++
			}
			b := due[:n:n]
			due = due[n:]
			k.c.background(func() {
				k.extendBatch(b)
				for _, l := range b {
					k.schedule(l) // a lost lock ends itself; a failure is retried
				}
			})
		}
		if !k.sleep(wait) {
			return
		}
	}
}

// due reports whether l is to be extended in the batch formed at now.
func (k *keeper) due(l *Lock, now time.Time) bool {
	if l.ka.retry {
		return !l.ka.next.After(now)
	}
	return !l.ka.next.After(now.Add(l.req.s.ttl / batchWindow))
}

// sleep waits d (forever when d < 0) or until the schedule changes; false
// when the keeper stops.
func (k *keeper) sleep(d time.Duration) bool {
	var tick <-chan time.Time
	if d >= 0 {
		t := k.c.clk.NewTimer(d)
		defer t.Stop()
		tick = t.C()
	}
	select {
	case <-k.quit:
		return false
	case <-k.kick:
	case <-tick:
	}
	return true
}

// stop ends auto-extension for good and waits for the loop.
func (k *keeper) stop() {
	k.mu.Lock()
	k.stopped = true
	running := k.running
	k.mu.Unlock()
	close(k.quit)
	if running {
		<-k.done
	}
}

// lockHeap orders locks by their next extension.
type lockHeap []*Lock

func (h lockHeap) Len() int           { return len(h) }
func (h lockHeap) Less(i, j int) bool { return h[i].ka.next.Before(h[j].ka.next) }
func (h lockHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].ka.index, h[j].ka.index = i, j
}
func (h *lockHeap) Push(x any) {
	l := x.(*Lock)
	l.ka.index = len(*h)
	*h = append(*h, l)
}
func (h *lockHeap) Pop() any {
	old := *h
	l := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	l.ka.index = -1
	return l
}

const (
	// batchWindow: the locks whose extension is due within TTL/batchWindow
	// of now are extended together.
	batchWindow = 10
	// maxBatch bounds the deletes sent to a node in one pipeline, and
	// maxExtendBatch the extensions: a pipeline gets one request timeout
	// (the time of one script on a busy node, with room to spare) and
	// must fit in it. Extensions go more at once: every held lock needs
	// one each TTL, and they share maxBatches connections per node.
	maxBatch       = 8
	maxExtendBatch = 32
	// maxBatches bounds the extension batches in flight; each holds one
	// connection per node while its pipelines run.
	maxBatches = 4
)

// extendBatch extends locks together: one round over the nodes, each node
// sent one pipeline holding every lock's extension script, as Extend would
// send it. Each lock is still decided on its own, as by Extend: its
// extension counts where its own script said yes, it needs a majority of
// the nodes and a validity left at the decision, a majority refusing ends
// it at once, and anything else is a failure retried while it is valid. A
// round of one script per lock would take a connection per node for every
// lock: thousands of locks due together then wait in the pools past their
// node timeout, fail, are retried, and run out. Each lock is settled as
// soon as its own round is decided, and those still undecided when the
// batch's request timeout passed then: a pipeline of several scripts takes
// a node longer than one script, and the validity counts from the batch's
// start whatever the wait.
func (k *keeper) extendBatch(locks []*Lock) {
	c := k.c
	// The locks are chosen once a slot is free: the wait may outlast a
	// release's tombstone (a request timeout), and an extension sent after
	// it would set a released key again where it finds it missing.
	k.slots <- struct{}{}
	defer func() { <-k.slots }()
	live := make([]*Lock, 0, len(locks))
	for _, l := range locks {
		if !l.released.Load() && l.Valid() {
			live = append(live, l)
		}
	}
	if len(live) == 0 {
		return
	}
	b := newBatch(c, live)
	start := c.clk.Now()
	c.bg.add(len(c.nodes))
	quorum.Start(context.Background(), len(c.nodes), quorum.Within(b.timeout), b.node)
	settle := func(j int, expired bool) {
		l := live[j]
		d, votes := b.decision(j)
		_ = l.settleExtend(context.Background(), start, d, func() *RoundError {
			return c.roundFailureVotes("extend", l.req, votes, expired, nil)
		})
	}
	// Each lock is settled the moment its round is decided, as Extend
	// settles its own: a majority's refusal ends it at once, whatever the
	// other locks of the batch still wait for.
	t := time.NewTimer(b.timeout)
	defer t.Stop()
	settled := make([]bool, len(live))
	for left := len(live); left > 0; left-- {
		select {
		case j := <-b.ready:
			settled[j] = true
			settle(j, false)
		case <-t.C:
			// The locks still undecided ran out of time.
			for j := range live {
				if !settled[j] {
					settle(j, true)
				}
			}
			return
		}
	}
}

// batch is the state of one extendBatch round.
type batch struct {
	c       *Client
	locks   []*Lock
	calls   []calls // per lock: its extension script, one copy per node
	timeout time.Duration
	need    int

	mu       sync.Mutex
	answered []bool        // per node
	got      [][]nodeReply // per node, per lock
	yes, no  []int         // per lock: yes votes; refusals and failures
	ready    chan int      // each lock's index once its round is decided; buffered for all
}

type nodeReply struct {
	got int64
	err error
}

func newBatch(c *Client, locks []*Lock) *batch {
	b := &batch{
		c: c, locks: locks, calls: make([]calls, len(locks)), need: c.Quorum(),
		answered: make([]bool, len(c.nodes)), got: make([][]nodeReply, len(c.nodes)),
		yes: make([]int, len(locks)), no: make([]int, len(locks)),
		ready: make(chan int, len(locks)),
	}
	for j, l := range locks {
		b.calls[j] = c.extendCalls(l.req, l.token, l.record.Load())
		if j == 0 || l.req.s.requestTimeout < b.timeout {
			b.timeout = l.req.s.requestTimeout
		}
	}
	return b
}

// node sends every lock's extension to node i in one pipeline.
func (b *batch) node(ctx context.Context, i int) (struct{}, bool, error) {
	c := b.c
	defer c.bg.done()
	n := c.nodes[i]
	replies := make([]nodeReply, len(b.locks))
	err := n.start(b.timeout)
	if err == nil {
		// The node's first-contact verdict holds for extensions too.
		if err = c.ready(ctx, n); err != nil {
			n.finish(err)
		}
	}
	if err != nil {
		for j := range replies {
			replies[j].err = err
		}
		b.note(i, replies)
		return struct{}{}, false, err
	}
	calls := make([]piped, len(b.locks))
	for j := range b.locks {
		calls[j] = piped{b.calls[j], i}
	}
	cmds, answer := runPiped(ctx, n.rdb, calls)
	for j, cmd := range cmds {
		replies[j].got, replies[j].err = cmd.Int64()
		if replies[j].got == 2 {
			c.stats.repaired.Add(1)
			c.log.node(slog.LevelInfo, n, "redlock: lock key repaired", "key", b.locks[j].req.key,
				"detail", "the node had lost the key of a valid lock (a restart without its data); the extension set it again")
		}
	}
	n.finish(answer)
	b.note(i, replies)
	return struct{}{}, true, nil
}

// note counts node i's replies.
func (b *batch) note(i int, replies []nodeReply) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.answered[i], b.got[i] = true, replies
	n := len(b.c.nodes)
	for j, r := range replies {
		was := b.yes[j] >= b.need || n-b.no[j] < b.need
		if r.err == nil && r.got > 0 {
			b.yes[j]++
		} else {
			b.no[j]++
		}
		if !was && (b.yes[j] >= b.need || n-b.no[j] < b.need) {
			b.ready <- j
		}
	}
}

// decision is lock j's round as Extend sees its own: the decision and the
// votes in so far.
func (b *batch) decision(j int) (quorum.Decision, []quorum.Vote[bool]) {
	b.mu.Lock()
	defer b.mu.Unlock()
	votes := make([]quorum.Vote[bool], len(b.c.nodes))
	var d quorum.Decision
	for i := range votes {
		v := &votes[i]
		v.Node = i
		switch {
		case !b.answered[i]:
			d.Pending++
		case b.got[i][j].err != nil:
			v.Outcome, v.Err = quorum.Failed, b.got[i][j].err
			d.Failed++
		case b.got[i][j].got > 0:
			v.Outcome, v.Value = quorum.Yes, true
			d.Yes++
		default:
			v.Outcome = quorum.No
			d.No++
		}
	}
	d.OK = d.Yes >= b.need
	return d, votes
}
