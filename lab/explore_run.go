package lab

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// The explorer's workload: every client loops, picking a key at random:
// holders (acquire, hold, release), fenced writers (acquire, write through
// the storage-side fencing check, release), a lock-protected counter
// (acquire, read, write the value plus one, release), and, rarely, a second
// fenced key: a lock taken now and then, like a nightly job's, stays idle
// through whole quarantines, so nodes that missed its last fence write-back
// stay behind (defect 1 of issue 10 needs such a key).
//
// The pair key is client 0's alone: its two workers contend there with each
// other only, so the lock passes between goroutines of one client (the
// hand-over within a Client), which the shared keys, where waiters of other
// clients lead the queue, rarely see. Its first worker holds briefly; its
// second extends at once and holds to near the end of its validity: a lock
// handed from the first to the second keeps much of its validity, and the
// second's extension puts its own TTL (every other acquisition asks for
// half) on the nodes.
const (
	keyHolders = iota
	keyFenced
	keyCounter
	keyRare
	keyPair
	exploreKeys
)

var exploreKeyNames = [exploreKeys]string{"explore:holders", "explore:fenced", "explore:counter", "explore:rare", "explore:pair"}

// exploreKeyShort names the keys in the timeline's rows.
var exploreKeyShort = [exploreKeys]string{"holders", "fenced", "counter", "rare", "pair"}

// rareOdds: one pick in rareOdds goes to the rare key.
const rareOdds = 64

// Storage keys of the fenced registers and the counter.
var fencedDataKeys = map[int]string{keyFenced: "explore:fenced:data", keyRare: "explore:rare:data"}

const counterDataKey = "explore:counter:value"

// ImplRun is one implementation's run of one schedule.
type ImplRun struct {
	Impl    string      `json:"impl"`
	History History     `json:"-"`
	Check   Exploration `json:"check"`
	// Errors are faults that could not be applied or reverted; the run's
	// verdict then says so.
	Errors  []string      `json:"errors,omitempty"`
	Elapsed time.Duration `json:"elapsed_ns"`
	// Granted counts the locks a release granted to a waiter (quorumlock,
	// unfenced schedules): the histories that put the grant to the test.
	Granted uint64 `json:"granted,omitempty"`
}

// explorer runs one schedule with one implementation on fresh nodes.
type explorer struct {
	sched   Schedule
	impl    Impl
	fleet   Fleet
	views   []View
	storage Storage
	rec     *Recorder
	cfg     LockConfig

	mu      sync.Mutex
	down    []bool  // killed or paused
	cut     [][]int // cut[client][node]: partitions in force from that client
	pending []time.Duration
	errs    []error
	// awayDone counts the clients' returns to restarted nodes still to come.
	awayDone sync.WaitGroup
	// booting are the operator's bootstraps begun, each closed when done: a
	// fresh client starts after them, as an operator runs the two one after
	// the other (guarded by mu).
	booting []chan struct{}
	extra   []Locker // cold clients, closed at the end
}

// workersPerClient is the number of goroutines that share one client.
const workersPerClient = 2

// reachable tells whether a majority of the nodes answers worker w (the
// cold clients, numbered after the workers, see what every client sees).
func (e *explorer) reachable(w int) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := w / workersPerClient
	if c >= len(e.cut) {
		c = -1
	}
	ok := 0
	for n, d := range e.down {
		if !d && (c < 0 || e.cut[c][n] == 0) {
			ok++
		}
	}
	return ok >= len(e.down)/2+1
}

func (e *explorer) fail(err error) {
	if err == nil {
		return
	}
	e.mu.Lock()
	e.errs = append(e.errs, err)
	e.mu.Unlock()
}

// runSchedule runs sched with impl on nodes from newFleet and returns what it
// recorded and found.
// The result is named so that the deferred Elapsed reaches the caller.
func runSchedule(ctx context.Context, cfg *ExploreConfig, sched Schedule, impl Impl) (out ImplRun) {
	start := time.Now()
	out = ImplRun{Impl: impl.Name}
	defer func() { out.Elapsed = time.Since(start) }()
	e, cleanup, err := newExplorer(ctx, cfg, sched, impl)
	if err != nil {
		out.Errors = append(out.Errors, err.Error())
		return out
	}
	defer cleanup()
	out.Granted = e.run(ctx)
	out.History = e.rec.Finish(func(h *History) {
		h.Clients = sched.Clients * workersPerClient
		for _, f := range sched.Faults {
			if f.Kind == ColdClient {
				h.Clients = max(h.Clients, f.Client+1) // cold clients take the rows after the others
			}
		}
		h.ImplementsFence = impl.Fencing && !sched.Unfenced
		h.FinalCounter, h.HasCounter = readFinal(e.storage.Client, counterDataKey)
	})
	for _, err := range e.errs {
		out.Errors = append(out.Errors, err.Error())
	}
	out.Check = checkExploration(out.History, sched)
	return out
}

func newExplorer(ctx context.Context, cfg *ExploreConfig, sched Schedule, impl Impl) (*explorer, func(), error) {
	// Every node fsyncs its AOF, so that a restart keeps the data unless the
	// fault throws it away.
	fleet, err := cfg.NewFleet(ctx, FleetSpec{AOFAlways: true})
	if err != nil {
		return nil, nil, err
	}
	e := &explorer{
		sched: sched, impl: impl, fleet: fleet, rec: NewRecorder(sched.Clients),
		cfg:     LockConfig{TTL: sched.TTL, Fencing: !sched.Unfenced, MixTTL: true},
		down:    make([]bool, sched.Nodes),
		pending: make([]time.Duration, sched.Clients),
	}
	var closers []func()
	cleanup := func() {
		for _, c := range slices.Backward(closers) {
			c()
		}
	}
	closers = append(closers, func() { fleet.Close() })
	for c := range sched.Clients {
		v, err := fleet.View(fmt.Sprintf("client-%d", c))
		if err != nil {
			cleanup()
			return nil, nil, err
		}
		e.views = append(e.views, v)
		e.cut = append(e.cut, make([]int, sched.Nodes))
	}
	storage, closeStorage, err := newStorage(&Config{FencedSet: cfg.FencedSet, IsStale: cfg.IsStale})
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	closers = append(closers, closeStorage)
	e.storage = storage
	if impl.Prepare != nil {
		if err := impl.Prepare(ctx, fleet.Clients(), e.cfg); err != nil {
			cleanup()
			return nil, nil, fmt.Errorf("prepare %s: %w", impl.Name, err)
		}
	}
	closers = append(closers, func() {
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, l := range e.extra {
			_ = l.Close()
		}
	})
	return e, cleanup, nil
}

// run runs the schedule and returns how many locks releases granted.
func (e *explorer) run(ctx context.Context) (granted uint64) {
	lockers := make([]Locker, e.sched.Clients)
	for c := range lockers {
		l, err := e.impl.New(e.views[c].Clients(), e.cfg)
		if err != nil {
			e.fail(err)
			return 0
		}
		lockers[c] = l
		e.mu.Lock()
		e.extra = append(e.extra, l)
		e.mu.Unlock()
	}
	wctx, cancel := context.WithTimeout(ctx, e.sched.Duration)
	defer cancel()
	// Two goroutines share each client, as an application's request
	// handlers share one Client: attempts of one Client then run at once.
	// Holds are recorded per goroutine (worker w of client w/2).
	workers := make([]Locker, 0, workersPerClient*len(lockers))
	for _, l := range lockers {
		for range workersPerClient {
			workers = append(workers, l)
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() { e.client(wctx, workers, w) })
	}
	var bg sync.WaitGroup // operator actions outlive the event loop
	stop := make(chan struct{})
	var mon sync.WaitGroup
	mon.Go(func() { e.watchStalls(stop) })
	e.faults(wctx, &bg)
	wg.Wait()
	bg.Wait()
	e.awayDone.Wait()
	close(stop)
	mon.Wait()
	for _, l := range lockers {
		if g, ok := l.(interface{ granted() uint64 }); ok {
			granted += g.granted()
		}
	}
	return granted
}

// workers returns the Workers of one key.
func (e *explorer) workers(lockers []Locker, key int) *Workers {
	return &Workers{Lockers: lockers, Storage: e.storage, Rec: e.rec, Key: exploreKeyNames[key], KeyIndex: key,
		Seed: e.sched.Seed, MajorityUp: e.reachable}
}

// takePause returns the client's pending pause past validity, if any.
func (e *explorer) takePause(c int) time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	p := e.pending[c]
	e.pending[c] = 0
	return p
}

func (e *explorer) client(ctx context.Context, lockers []Locker, wk int) {
	c := wk / workersPerClient
	rng := rand.New(rand.NewPCG(e.sched.Seed, uint64(wk)+0x636c69656e74))
	ws := make([]*Workers, exploreKeys)
	for k := range ws {
		ws[k] = e.workers(lockers, k)
	}
	ttl := e.sched.TTL
	var seq int64
	for ctx.Err() == nil {
		k := rng.IntN(keyRare)
		if rng.IntN(rareOdds) == 0 {
			k = keyRare
		}
		if c == 0 && rng.IntN(4) > 0 {
			k = keyPair
		}
		w := ws[k]
		l, idx, _ := w.lock(ctx, wk, 2*ttl, false)
		if l == nil {
			sleepCtx(ctx, time.Duration(5+rng.IntN(15))*time.Millisecond)
			continue
		}
		// A third of the locks are extended at once: a lock handed over
		// within a client and then extended with its holder's own TTL, or
		// a lost lock (its extension refused), are then in the histories.
		// The hold's validity moves with the extension.
		pairHolder := k == keyPair && wk%workersPerClient == 1
		if x, ok := l.(interface{ Extend(context.Context) error }); ok && (rng.IntN(3) == 0 || pairHolder) {
			ectx, cancel := context.WithTimeout(ctx, ttl)
			if x.Extend(ectx) == nil {
				e.rec.Extended(idx, e.rec.Offset(l.Until()))
			}
			cancel()
		}
		// Holders mostly hold to near the end of the validity, so that a
		// fault finds a holder to hurt, and one with time left; writers and
		// the counter hold briefly.
		hold := time.Millisecond + time.Duration(rng.Int64N(int64(ttl/8)))
		if k == keyHolders && rng.IntN(4) > 0 || pairHolder {
			hold = max(time.Until(l.Until())-time.Duration(rng.Int64N(int64(ttl/10))), time.Millisecond)
		}
		// A client pause hits holders and fenced writers: a late counter
		// write loses an update with any lock, which says nothing new.
		if k != keyCounter {
			if p := e.takePause(c); p > 0 {
				hold = time.Until(l.Until()) + p
			}
		}
		switch k {
		case keyHolders, keyPair:
			time.Sleep(hold) // a paused process does not notice the end of the run
		case keyFenced, keyRare:
			time.Sleep(hold)
			seq++
			w.writeOp(Write{Client: wk, Kind: Increment, Value: int64(wk)<<32 | seq, Hold: idx}, fencedDataKeys[k], l, true)
		case keyCounter:
			start := e.rec.Now()
			if v, err := w.readInt(counterDataKey); err == nil {
				time.Sleep(hold)
				w.writeOp(Write{Client: wk, Kind: Increment, Value: v + 1, Hold: idx, Start: start}, counterDataKey, l, false)
			}
		}
		w.release(wk, l, idx)
	}
}

// An action is one step of the fault schedule: a fault applied or reverted.
type action struct {
	at    time.Duration
	fault int
	apply bool
}

// faults applies the schedule until ctx ends, then reverts what is still in
// force. Operator actions run in the background (they may block on a hung
// node) and are waited for with bg.
func (e *explorer) faults(ctx context.Context, bg *sync.WaitGroup) {
	var acts []action
	for i, f := range e.sched.Faults {
		acts = append(acts, action{at: f.At, fault: i, apply: true})
		if f.For > 0 && f.Kind != ColdClient {
			acts = append(acts, action{at: f.At + f.For, fault: i})
		}
	}
	slices.SortStableFunc(acts, func(a, b action) int { return cmp.Compare(a.at, b.at) })
	applied := map[int]time.Duration{}
	for _, a := range acts {
		if !a.apply {
			if _, ok := applied[a.fault]; !ok {
				continue
			}
		}
		if !sleepCtx(ctx, a.at-e.rec.Now()) && a.apply {
			break
		}
		if a.apply {
			applied[a.fault] = e.rec.Now()
			e.apply(ctx, e.sched.Faults[a.fault], bg)
			continue
		}
		e.revert(e.sched.Faults[a.fault], applied[a.fault])
		delete(applied, a.fault)
	}
	// What the end of the run cut short is reverted now, so that no node is
	// left down for the checks that read the storage.
	for _, a := range acts {
		if start, ok := applied[a.fault]; ok && !a.apply {
			e.revert(e.sched.Faults[a.fault], start)
			delete(applied, a.fault)
		}
	}
}

func (e *explorer) nodeOp(f Fault, op func(ctx context.Context, n Node) error) {
	for _, n := range f.Nodes {
		node := e.fleet.Node(n)
		if err := faultCtx(func(ctx context.Context) error { return op(ctx, node) }); err != nil {
			e.fail(fmt.Errorf("%s node %d: %w", f.Kind, n, err))
		}
	}
}

func (e *explorer) setDown(f Fault, down bool) {
	e.mu.Lock()
	for _, n := range f.Nodes {
		e.down[n] = down
	}
	e.mu.Unlock()
}

// cutFrom cuts (or heals) node n from the given clients' views, counting
// partitions so that overlapping ones heal only when the last ends.
func (e *explorer) cutFrom(clients []int, n int, cut bool) {
	for _, c := range clients {
		e.mu.Lock()
		before := e.cut[c][n]
		if cut {
			e.cut[c][n]++
		} else if before > 0 {
			e.cut[c][n]--
		}
		after := e.cut[c][n]
		e.mu.Unlock()
		v := e.views[c]
		switch {
		case before == 0 && after > 0:
			e.fail(faultCtx(func(ctx context.Context) error { return v.Partition(ctx, n) }))
		case before > 0 && after == 0:
			e.fail(faultCtx(func(ctx context.Context) error { return v.Heal(ctx, n) }))
		}
	}
}

func (e *explorer) allClients() []int {
	out := make([]int, e.sched.Clients)
	for i := range out {
		out[i] = i
	}
	return out
}

// clientsOf lists the clients a partition cuts the nodes off.
func (e *explorer) clientsOf(f Fault) []int {
	if f.Client == EveryClient {
		return e.allClients()
	}
	return []int{f.Client}
}

func (e *explorer) apply(ctx context.Context, f Fault, bg *sync.WaitGroup) {
	switch f.Kind {
	case CrashEmpty, CrashDelayed, CrashAOF, CrashLossy:
		if f.Kind == CrashLossy || f.Kind == CrashAOF && f.Away > 0 {
			// No client may see the node between its restart and the loss
			// of its lock keys, nor during the fault's Away time after.
			for _, n := range f.Nodes {
				e.cutFrom(e.allClients(), n, true)
			}
			e.awayDone.Add(1)
		}
		e.setDown(f, true)
		e.nodeOp(f, func(ctx context.Context, n Node) error { return n.Kill(ctx) })
	case Pause:
		e.setDown(f, true)
		e.nodeOp(f, func(ctx context.Context, n Node) error { return n.Pause(ctx) })
	case Partition:
		for _, n := range f.Nodes {
			e.cutFrom(e.clientsOf(f), n, true)
		}
	case Latency:
		e.nodeOp(f, func(ctx context.Context, n Node) error { return n.Latency(ctx, f.Amount, f.Amount/5) })
	case ClockJump:
		e.nodeOp(f, func(ctx context.Context, n Node) error { return n.ClockJump(ctx, f.Amount) })
	case ClockRate:
		e.nodeOp(f, func(ctx context.Context, n Node) error { return n.ClockRate(ctx, f.Rate) })
	case ClientPause:
		e.mu.Lock()
		e.pending[f.Client] = f.Amount
		e.mu.Unlock()
		e.rec.Fault(FaultSpan{Name: string(f.Kind) + fmt.Sprintf(" client %d", f.Client), Start: e.rec.Now(), End: e.rec.Now()})
	case Bootstrap:
		at := e.rec.Now()
		booted := make(chan struct{})
		e.mu.Lock()
		e.booting = append(e.booting, booted)
		e.mu.Unlock()
		bg.Go(func() {
			defer close(booted)
			if e.impl.Prepare != nil {
				bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*e.sched.TTL)
				_ = e.impl.Prepare(bctx, e.fleet.Clients(), e.cfg) // refusing is its right
				cancel()
			}
			e.rec.Fault(FaultSpan{Name: string(f.Kind), Start: at, End: e.rec.Now()})
		})
	case ColdClient:
		bg.Go(func() { e.coldClient(ctx, f) })
	}
}

func (e *explorer) revert(f Fault, start time.Duration) {
	name := string(f.Kind)
	switch f.Kind {
	case CrashEmpty, CrashDelayed, CrashAOF, CrashLossy:
		opts := Restart{WipeData: f.Kind.losesKeys() && f.Kind != CrashLossy, AOFAlways: true}
		e.nodeOp(f, func(ctx context.Context, n Node) error { return n.Restart(ctx, opts) })
		if f.Kind == CrashLossy {
			for _, n := range f.Nodes {
				e.loseLockKeys(n)
			}
		}
		if f.Kind == CrashLossy || f.Kind == CrashAOF && f.Away > 0 {
			// The clients come back Away later: meanwhile only the
			// operator's tools (the fleet's own clients) reach the node.
			nodes := f.Nodes
			time.AfterFunc(f.Away, func() {
				for _, n := range nodes {
					e.cutFrom(e.allClients(), n, false)
				}
				e.awayDone.Done()
			})
		}
		e.setDown(f, false)
	case Pause:
		e.nodeOp(f, func(ctx context.Context, n Node) error { return n.Resume(ctx) })
		e.setDown(f, false)
	case Partition:
		for _, n := range f.Nodes {
			e.cutFrom(e.clientsOf(f), n, false)
		}
		if f.Client == EveryClient {
			name += " from every client"
		} else {
			name += fmt.Sprintf(" from client %d", f.Client)
		}
	case Latency:
		e.nodeOp(f, func(ctx context.Context, n Node) error { return n.ClearLatency(ctx) })
	case ClockJump:
		e.nodeOp(f, func(ctx context.Context, n Node) error { return n.ClockJump(ctx, -f.Amount) })
	case ClockRate:
		e.nodeOp(f, func(ctx context.Context, n Node) error { return n.ClockRate(ctx, 1) })
	}
	e.rec.Fault(FaultSpan{Name: name, Nodes: f.Nodes, Start: start, End: e.rec.Now()})
}

// loseLockKeys deletes the lock keys from node n through the fleet's own
// clients, which no lock client uses: what an AOF written every second
// loses in a crash, while the node's sentinel and counters survive.
func (e *explorer) loseLockKeys(n int) {
	// The first request may meet a connection the restart broke.
	var err error
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
		err = e.fleet.Clients()[n].Del(ctx, exploreKeyNames[:]...).Err()
		cancel()
		if err == nil || errors.Is(err, redis.Nil) {
			return
		}
	}
	e.fail(fmt.Errorf("%s node %d: delete the lock keys: %w", CrashLossy, n, err))
}

// coldClient is a fresh client (new connections, no subscription yet) that
// acquires the holders' key with a short deadline, as a process started
// while a node hangs would.
func (e *explorer) coldClient(ctx context.Context, f Fault) {
	e.mu.Lock()
	booting := slices.Clone(e.booting)
	e.mu.Unlock()
	for _, b := range booting {
		<-b
	}
	v, err := e.fleet.View(fmt.Sprintf("cold-%d", f.ID))
	if err != nil {
		e.fail(err)
		return
	}
	l, err := e.impl.New(v.Clients(), e.cfg)
	if err != nil {
		e.fail(err)
		return
	}
	e.mu.Lock()
	e.extra = append(e.extra, l)
	e.mu.Unlock()
	w := e.workers(nil, keyHolders)
	start := e.rec.Now()
	// Its deadline, not the end of the run, bounds it: a late return is
	// what this fault is about.
	h, idx, _ := w.lockWith(context.WithoutCancel(ctx), l, f.Client, f.For, false)
	if h != nil {
		time.Sleep(time.Millisecond)
		w.release(f.Client, h, idx)
	}
	e.rec.Fault(FaultSpan{Name: fmt.Sprintf("cold client %d", f.Client), Start: start, End: e.rec.Now()})
}

// stallTick is how often the stall watcher wakes; a wake-up later than
// stallMin past its due time is a host stall: for that long no goroutine of
// this process may have run, whatever the library did.
const (
	stallTick = 2 * time.Millisecond
	stallMin  = 10 * time.Millisecond
)

// watchStalls records the host's stalls until stop is closed.
func (e *explorer) watchStalls(stop <-chan struct{}) {
	t := time.NewTicker(stallTick)
	defer t.Stop()
	last := e.rec.Now()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			now := e.rec.Now()
			if now-last > stallTick+stallMin {
				e.rec.Stall(FaultSpan{Name: "host stall", Start: last, End: now})
			}
			last = now
		}
	}
}
