package redlock

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/clock"
)

// waker delivers release announcements to the goroutines waiting for those
// keys. Releases are published on one channel per node (releasedChannel,
// token and key as the message), so a Client needs one subscription per
// node whatever the number of keys it waits for. The subscriptions are opened on
// first use by one goroutine per node that owns its connection: a waiter
// only adds itself to a map and never waits on the network, so no call is
// held up by a node that hangs.
type waker struct {
	c      *Client
	mu     sync.Mutex
	keys   map[string]map[*wakeup]struct{}
	active bool
	closed bool
	// confirms counts the subscriptions confirmed (guarded by mu).
	confirms int
	ctx      context.Context // ends the listeners
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	errMu    sync.Mutex
	errs     []error
}

// wakeup is one waiter's signal. Each node announces a release once it
// deleted the key there: the waiter wakes when a majority of nodes has
// announced it, so that its attempt finds a majority free (on the first
// announcement it would meet the key still held on the other nodes, and
// sleep again), and only once per release. heard counts the announcements
// of the latest few releases (guarded by waker.mu): those of consecutive
// releases interleave when a node lags, and the late announcement of one
// must not wipe out the count of the next. id is the
// waiter's place in the key's queue on the nodes ("" when it has none): an
// announcement that names another waiter as the queue's head does not count.
//
// Queues can differ between nodes (a registration or a removal that did
// not reach every node), and then the nodes name different heads: the
// waiter named by some of them hears less than a majority. So a waiter
// named explicitly by any node tries anyway after grace (its request's
// node timeout: the release round is decided by then), unless a majority
// woke it first; without that it would sleep out its place's refresh, a
// third of the TTL, and every waiter behind it too.
//
// A release that granted the key to the waiter names it "<id>+<token>"
// (release.lua). The waiter counts, per node, the grants of the token it
// registered last (grant), and only of that one: an attempt with an
// earlier token may have failed and deleted the key it was granted.
//
// An observer of an election (watch) wakes at every announcement for its
// key instead: each one may change who leads, and the observer reads the
// nodes to find out.
type wakeup struct {
	key   string
	id    string
	watch bool
	ch    chan struct{} // buffered 1
	heard [4]heardCount // ring of the latest releases
	next  int           // the slot a new release takes
	grace time.Duration
	timer clock.Timer // armed once a node named it; guarded by waker.mu
	// grant is the token whose grants count, and granted the nodes that
	// announced one (guarded by waker.mu).
	grant   string
	granted []int
}

// heardCount is how many nodes announced the release of token.
type heardCount struct {
	token string
	n     int
}

// signal wakes the waiter, unless a wake-up is already pending.
func (wu *wakeup) signal() {
	select {
	case wu.ch <- struct{}{}:
	default:
	}
}

// hear counts an announcement of token's release and returns how many
// nodes announced it.
func (wu *wakeup) hear(token string) int {
	for i := range wu.heard {
		if h := &wu.heard[i]; h.n > 0 && h.token == token {
			h.n++
			return h.n
		}
	}
	wu.heard[wu.next] = heardCount{token: token, n: 1}
	wu.next = (wu.next + 1) % len(wu.heard)
	return 1
}

func newWaker(c *Client) *waker {
	w := &waker{c: c, keys: make(map[string]map[*wakeup]struct{})}
	w.ctx, w.cancel = context.WithCancel(context.Background())
	return w
}

// register starts listening for releases of key, for the waiter with queue
// id ("" for none), which tries grace after a node named it the next holder
// at the latest. It never blocks on the network: a waiter that hears
// nothing still retries after its delay.
func (w *waker) register(key, id string, grace time.Duration) *wakeup {
	return w.add(&wakeup{key: key, id: id, ch: make(chan struct{}, 1), grace: grace})
}

// watch starts listening for every announcement about key: releases and
// election leader records.
func (w *waker) watch(key string) *wakeup {
	return w.add(&wakeup{key: key, watch: true, ch: make(chan struct{}, 1)})
}

func (w *waker) add(wu *wakeup) *wakeup {
	key := wu.key
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return wu
	}
	set := w.keys[key]
	if set == nil {
		set = make(map[*wakeup]struct{})
		w.keys[key] = set
	}
	set[wu] = struct{}{}
	if !w.active {
		w.active = true
		for _, n := range w.c.nodes {
			w.wg.Add(1)
			go w.listen(n)
		}
	}
	return wu
}

// listening reports whether the subscriptions were opened: the Client
// waited for a release before.
func (w *waker) listening() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.active && !w.closed
}

func (w *waker) unregister(wu *wakeup) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if wu.timer != nil {
		wu.timer.Stop()
		wu.timer = nil
	}
	if set := w.keys[wu.key]; set != nil {
		delete(set, wu)
		if len(set) == 0 {
			delete(w.keys, wu.key)
		}
	}
}

// listen owns node n's subscription until the waker closes. go-redis
// reconnects and resubscribes a broken subscription by itself; what was
// published meanwhile is lost (see subscribed).
func (w *waker) listen(n *node) {
	defer w.wg.Done()
	ps := n.rdb.Subscribe(w.ctx, releasedChannel)
	defer func() {
		if err := ps.Close(); err != nil && !errors.Is(err, redis.ErrClosed) {
			w.errMu.Lock()
			w.errs = append(w.errs, err)
			w.errMu.Unlock()
		}
	}()
	msgs := ps.ChannelWithSubscriptions()
	for {
		select {
		case <-w.ctx.Done():
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" {
					w.confirmed()
				}
			case *redis.Message:
				token, rest, ok1 := strings.Cut(m.Payload, " ")
				head, key, ok2 := strings.Cut(rest, " ")
				if ok1 && ok2 {
					w.deliver(n.index, key, token, head)
				}
			}
		}
	}
}

// confirmed notes that a node confirmed its subscription. A waiter hears
// only what a node publishes after that: one that registered before may
// have missed the release it waits for (its attempt found the key held, the
// announcement went out before this Client listened there), and a release
// announced by exactly a majority of nodes, one of them this one, then
// never adds up to a majority. The waiter would sleep until its retry delay
// or its place's refresh, a third of the TTL. So every waiter wakes to try
// again whenever a node confirms a subscription: at the Client's first
// wait, once per node, and after go-redis reconnected a subscription, which
// loses what was published meanwhile.
func (w *waker) confirmed() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, set := range w.keys {
		for wu := range set {
			wu.signal()
		}
	}
	w.confirms++
}

// deliver counts an announcement by node i of the release of token and
// wakes the waiters of key once a majority announced it: the one named
// head, or all of them when no queue named one. The head named with a
// granted token wakes as soon as a majority granted it that token.
func (w *waker) deliver(i int, key, token, head string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	quorum := w.c.Quorum()
	head, granted, _ := strings.Cut(head, "+")
	for wu := range w.keys[key] {
		if wu.watch {
			wu.signal()
			continue
		}
		if head == leaderHead || (head != "" && head != wu.id) {
			continue
		}
		grantQuorum := false
		if granted != "" && granted == wu.grant && !slices.Contains(wu.granted, i) && w.c.nodes[i].fit() {
			wu.granted = append(wu.granted, i)
			grantQuorum = len(wu.granted) == quorum
		}
		// A waiter that heard some grants waits for the rest of the
		// release (acquisition.wait): it wakes again once every node
		// announced, when no more grants can come.
		heard := wu.hear(token)
		all := heard == len(w.c.nodes) && len(wu.granted) > 0 && len(wu.granted) < quorum
		if heard != quorum && !grantQuorum && !all {
			if head == wu.id && wu.id != "" && wu.timer == nil && wu.grace > 0 {
				wu.timer = w.c.clk.AfterFunc(wu.grace, func() { w.graceOver(wu) })
			}
			continue
		}
		if wu.timer != nil {
			wu.timer.Stop()
			wu.timer = nil
		}
		wu.signal()
	}
}

// expect makes token the one whose grants wu counts from now on ("" for
// none), forgetting the grants of the one before.
func (w *waker) expect(wu *wakeup, token string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wu.grant, wu.granted = token, wu.granted[:0]
}

// grants returns how many nodes announced a grant of token to wu.
func (w *waker) grants(wu *wakeup, token string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	if wu.grant != token {
		return 0
	}
	return len(wu.granted)
}

// graceOver wakes a waiter that a node named the next holder grace ago.
func (w *waker) graceOver(wu *wakeup) {
	w.mu.Lock()
	defer w.mu.Unlock()
	wu.timer = nil
	wu.signal()
}

// leaderHead is the head an election's leader announcement names: no
// waiter's id, so that no waiter for the lock wakes on it.
const leaderHead = "-"

func (w *waker) close() error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.cancel()
	w.wg.Wait()
	w.errMu.Lock()
	defer w.errMu.Unlock()
	return errors.Join(w.errs...)
}
