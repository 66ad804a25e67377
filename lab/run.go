package lab

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// faultTimeout bounds one fault operation; a container restart is the
// slowest.
const faultTimeout = 60 * time.Second

// faultCtx runs one fault operation with its own deadline: faults are
// applied and reverted even when the run's context has ended, so that no
// node is left paused or cut off.
func faultCtx(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), faultTimeout)
	defer cancel()
	return f(ctx)
}

// Config configures Run.
type Config struct {
	// NewFleet starts fresh lock nodes for one run; Run closes them.
	NewFleet func(ctx context.Context, spec FleetSpec) (Fleet, error)
	// Backend and Nodes describe the fleet in the report.
	Backend string
	Nodes   int

	Scenarios []Scenario
	Impls     []Impl
	// Duration is how long each scenario runs per implementation (the attack
	// scenarios run once and take about one attack TTL instead).
	Duration time.Duration
	// TTL is the lock TTL for both implementations.
	TTL time.Duration
	// AttackTTL is the lock TTL of the attack scenarios (restart, clock
	// jump); 0 means DefaultAttackTTL(TTL).
	AttackTTL time.Duration
	// Seed chooses the nodes faults hit and drives the clients' random choices.
	Seed uint64

	// FencedSet is the storage-side fencing check; IsStale tells its refusal.
	FencedSet func(ctx context.Context, rdb *redis.Client, key string, value int64, fence uint64) error
	IsStale   func(error) bool

	// Progress, when set, hears about every run.
	Progress Progress
}

// Progress is told when each run starts and ends.
type Progress interface {
	Start(scenario, impl string, expected time.Duration)
	Done(o Outcome)
}

// Run runs every scenario with every implementation (and the scenario's
// variants), one after the other, each on fresh nodes and fresh storage. It
// returns what it has when ctx ends, with ctx's error.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if cfg.NewFleet == nil {
		return nil, errors.New("lab: no fleet")
	}
	if cfg.Duration <= 0 || cfg.TTL <= 0 {
		return nil, fmt.Errorf("lab: duration %v and TTL %v must be positive", cfg.Duration, cfg.TTL)
	}
	if cfg.AttackTTL <= 0 {
		cfg.AttackTTL = DefaultAttackTTL(cfg.TTL)
	}
	res := &Results{Backend: cfg.Backend, Nodes: cfg.Nodes, Seed: cfg.Seed, Duration: cfg.Duration, TTL: cfg.TTL, Started: time.Now()}
	defer func() { res.Elapsed = time.Since(res.Started) }()
	for _, sc := range cfg.Scenarios {
		sr := ScenarioResult{Name: sc.Name, Title: sc.Title, Description: sc.Description, Expect: sc.Expect}
		impls := slices.Clone(cfg.Impls)
		for _, v := range sc.Variants {
			impls = append(impls, Impl{Name: v})
		}
		for _, impl := range impls {
			if err := ctx.Err(); err != nil {
				res.Scenarios = append(res.Scenarios, sr)
				return res, err
			}
			o := runOne(ctx, &cfg, sc, impl)
			sr.Outcomes = append(sr.Outcomes, o)
		}
		res.Scenarios = append(res.Scenarios, sr)
	}
	return res, ctx.Err()
}

// runOne returns a named result so that the deferred Elapsed and progress
// report see and set the outcome actually returned.
func runOne(ctx context.Context, cfg *Config, sc Scenario, impl Impl) (o Outcome) {
	o = Outcome{Scenario: sc.Name, Impl: impl.Name, Expected: sc.Want(impl.Name)}
	if sc.Skip != nil && impl.New != nil {
		if why := sc.Skip(impl); why != "" {
			o.Skipped = why
			return o
		}
	}
	if cfg.Progress != nil {
		expected := cfg.Duration
		if sc.once {
			expected = cfg.AttackTTL
		}
		if sc.ttls > 0 {
			expected = time.Duration(sc.ttls) * cfg.AttackTTL
		}
		cfg.Progress.Start(sc.Name, impl.Name, expected)
		defer func() { cfg.Progress.Done(o) }()
	}
	start := time.Now()
	defer func() { o.Elapsed = time.Since(start) }()

	// An attack whose setup lost its shape starts over on fresh nodes a
	// few times before the run reports the lost shape as an error.
	const shapeTries = 3
	for try := 1; ; try++ {
		err := runFresh(ctx, cfg, sc, impl, &o)
		if errors.Is(err, errShapeLost) && try < shapeTries && ctx.Err() == nil {
			o.Retries = append(o.Retries, err.Error())
			continue
		}
		if err != nil {
			if errors.Is(err, ErrUnsupported) {
				o.Skipped = err.Error()
			} else {
				o.Err = err.Error()
			}
		}
		return o
	}
}

// runFresh runs the scenario once on fresh nodes and storage and fills o's
// history, check and verdict.
func runFresh(ctx context.Context, cfg *Config, sc Scenario, impl Impl, o *Outcome) error {
	fleet, err := cfg.NewFleet(ctx, sc.Fleet)
	if err != nil {
		return err
	}
	defer fleet.Close()
	storage, closeStorage, err := newStorage(cfg)
	if err != nil {
		return err
	}
	defer closeStorage()

	lc := LockConfig{TTL: cfg.TTL}
	if impl.Prepare != nil {
		if err := impl.Prepare(ctx, fleet.Clients(), lc); err != nil {
			return fmt.Errorf("prepare %s: %w", impl.Name, err)
		}
	}
	h := fnv.New64a()
	h.Write([]byte(sc.Name))
	r := &run{
		impl: impl, fleet: fleet, storage: storage, ttl: cfg.TTL, attackTTL: cfg.AttackTTL, seed: cfg.Seed,
		rng: rand.New(rand.NewPCG(cfg.Seed, h.Sum64())),
		rec: NewRecorder(0),
	}
	defer r.closeLockers()
	d := cfg.Duration
	if sc.once {
		d = 4 * cfg.AttackTTL // a bound, not a length: the attack ends on its own
	}
	if sc.ttls > 0 {
		d = time.Duration(sc.ttls+4) * cfg.AttackTTL // a bound: the schedule ends on its own
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	err = sc.run(wctx, r)
	cancel()
	hist := r.rec.Finish(func(h *History) {
		h.Clients = r.clients
		h.ImplementsFence = r.fencing && impl.Fencing
		h.Rounds = r.rounds()
		if r.counter {
			h.FinalCounter, h.HasCounter = readFinal(storage.Client, "lab:counter")
		}
		if r.price {
			h.FinalPrice, h.HasPrice = readFinal(storage.Client, "lab:price")
		}
	})
	o.History = hist
	o.Attack = r.attackRec
	o.Roll = r.rollRec
	o.Check = CheckHistory(hist)
	o.Verdict = Judge(o.Expected, o.Check)
	if sc.judge != nil {
		sc.judge(impl.Name, o)
	}
	accepted := 0
	for _, w := range hist.Writes {
		if w.Accepted {
			accepted++
		}
	}
	if hist.Duration > 0 {
		o.Throughput = float64(accepted) / hist.Duration.Seconds()
	}
	return err
}

func readFinal(rdb *redis.Client, key string) (int64, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()
	v, err := rdb.Get(ctx, key).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, true
	}
	return v, err == nil
}

// newStorage starts the storage node: an embedded Redis of its own on every
// backend, since faults never touch it and nothing needs installing.
func newStorage(cfg *Config) (Storage, func(), error) {
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return Storage{}, nil, fmt.Errorf("lab: storage: %w", err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1})
	s := Storage{Client: rdb, IsStale: cfg.IsStale}
	if cfg.FencedSet != nil {
		s.FencedSet = func(ctx context.Context, key string, value int64, fence uint64) error {
			return cfg.FencedSet(ctx, rdb, key, value, fence)
		}
	}
	return s, func() { rdb.Close(); m.Close() }, nil
}

// run is one scenario with one implementation.
type run struct {
	impl    Impl
	fleet   Fleet
	storage Storage
	rec     *Recorder
	rng     *rand.Rand // the schedule's choices: same for every implementation
	seed    uint64
	ttl     time.Duration
	// attackTTL replaces ttl in the attack scenarios.
	attackTTL time.Duration
	down      atomic.Int32 // nodes currently unreachable from every client

	clients        int
	counter, price bool
	fencing        bool
	attackRec      *AttackRecord
	rollRec        *RollRecord

	mu      sync.Mutex
	lockers []Locker
}

func (r *run) majorityUp(int) bool {
	n := r.fleet.Len()
	return n-int(r.down.Load()) >= n/2+1
}

func (r *run) newLocker(nodes []redis.UniversalClient) (Locker, error) {
	l, err := r.impl.New(nodes, LockConfig{TTL: r.ttl, Fencing: r.fencing})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", r.impl.Name, err)
	}
	r.mu.Lock()
	r.lockers = append(r.lockers, l)
	r.mu.Unlock()
	return l, nil
}

// rounds sums the acquisition rounds of the clients that count them.
func (r *run) rounds() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, l := range r.lockers {
		if rc, ok := l.(RoundCounter); ok {
			n += int(rc.Rounds())
		}
	}
	return n
}

func (r *run) closeLockers() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lockers {
		_ = l.Close()
	}
}

// workers makes k clients of the implementation over nodes.
func (r *run) workers(k int, nodes []redis.UniversalClient) (*Workers, error) {
	var ls []Locker
	for range k {
		l, err := r.newLocker(nodes)
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
	}
	return r.workersOf(ls), nil
}

func (r *run) workersOf(ls []Locker) *Workers {
	r.clients = max(r.clients, len(ls))
	return &Workers{Lockers: ls, Storage: r.storage, Rec: r.rec, Key: "lab:lock", Seed: r.seed, MajorityUp: r.majorityUp}
}

// bare is a Workers for clients that take no lock.
func (r *run) bare() *Workers {
	r.clients = 4
	return &Workers{Storage: r.storage, Rec: r.rec, Key: "lab:lock", Seed: r.seed, MajorityUp: r.majorityUp}
}

// withSchedule runs work while applying steps, and reverts every fault still
// in force when the work ends. An error from a fault stops the work.
func (r *run) withSchedule(ctx context.Context, steps []step, work func(ctx context.Context)) error {
	type event struct {
		at    time.Duration
		apply bool
		s     int
	}
	d := time.Duration(0)
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl)
	}
	nodes := make([][]int, len(steps))
	var evs []event
	for i, s := range steps {
		nodes[i] = pick(r.rng, r.fleet.Len(), s.nodes)
		evs = append(evs, event{at: time.Duration(s.at * float64(d)), apply: true, s: i})
		if s.span > 0 {
			evs = append(evs, event{at: time.Duration((s.at + s.span) * float64(d)), s: i})
		}
	}
	slices.SortStableFunc(evs, func(a, b event) int { return cmp.Compare(a.at, b.at) })

	wctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Go(func() { work(wctx) })

	begun := r.rec.Now()
	active := map[int]time.Duration{} // step → when applied
	toggle := func(i int, apply bool) error {
		s := steps[i]
		if !apply && s.fault.revert == nil {
			return nil
		}
		var errs []error
		for _, n := range nodes[i] {
			node := r.fleet.Node(n)
			f := s.fault.revert
			if apply {
				f = s.fault.apply
			}
			err := faultCtx(func(ctx context.Context) error { return f(ctx, node, r.ttl) })
			if err != nil {
				errs = append(errs, fmt.Errorf("%s node %d: %w", s.fault.name, n, err))
				continue
			}
			if s.fault.down {
				if apply {
					r.down.Add(1)
				} else {
					r.down.Add(-1)
				}
			}
		}
		if apply {
			active[i] = r.rec.Now()
		} else {
			r.rec.Fault(FaultSpan{Name: s.fault.name, Nodes: nodes[i], Start: active[i], End: r.rec.Now()})
			delete(active, i)
		}
		return errors.Join(errs...)
	}

	var err error
	for _, e := range evs {
		if !sleepCtx(wctx, begun+e.at-r.rec.Now()) {
			break
		}
		if err = toggle(e.s, e.apply); err != nil {
			cancel(err)
			break
		}
	}
	wg.Wait()
	for i := range steps {
		if _, ok := active[i]; ok {
			err = errors.Join(err, toggle(i, false))
		}
	}
	return err
}
