package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/lab/redsyncadapter"
	"github.com/quorumlock/quorumlock/redlock"
)

// Config sets the length of each figure. The zero value is the full run;
// Quick returns the short one.
type Config struct {
	OpTime     time.Duration // per uncontended, fencing and guard measurement (default 1 s)
	Contention time.Duration // per contention run (default 10 s)
	Workers    int           // contention workers (default 8)
	Critical   time.Duration // contention critical section (default 2 ms)
	SlowTime   time.Duration // per slow-node run (default 5 s)
	SlowDelay  time.Duration // latency added to the slow node (default 50 ms)
	Throughput time.Duration // per throughput run (default 5 s)
	Goroutines int           // throughput goroutines (default 64)
	// MinAcquisitions keeps a contention run going past Contention until
	// it made this many acquisitions, up to ContentionCap (default: no cap
	// beyond Contention).
	MinAcquisitions int
	ContentionCap   time.Duration
	HeldLocks       []int // held-locks figure: numbers of locks held at once (default 1000, 10000)
	// HeldTTL is the held-locks figure's lock TTL (default 30 s). With
	// the default 8 s, keeping 10,000 locks extended takes about 9,400
	// requests a second to the nodes, more than five containers sharing
	// two cores with the benchmark serve: the figure would measure the
	// nodes' capacity (every lock lost) instead of the cost of holding.
	HeldTTL      time.Duration
	Waiters      int           // waiters figure: waiters on distinct keys (default 1000)
	ReleaseLocks int           // release-storm figure: Do locks released at once (default 10000)
	StormTime    time.Duration // contention-storm run per implementation (default 5 s)
	StormTTL     time.Duration // contention-storm TTL, one round (default 500 ms, the lab's)
	Only         []string      // figures to run (see Figures); all when empty
	Logf         func(format string, args ...any)
	quickMarker  bool
}

// Quick is a run of well under a minute.
func Quick() Config {
	return Config{
		OpTime: 400 * time.Millisecond, Contention: 3 * time.Second, SlowTime: 1500 * time.Millisecond,
		Throughput: 2 * time.Second, HeldLocks: []int{200, 2000}, Waiters: 200, ReleaseLocks: 2000,
		StormTime: 2 * time.Second, quickMarker: true,
	}
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.OpTime, time.Second)
	def(&c.Contention, 10*time.Second)
	def(&c.Critical, 2*time.Millisecond)
	def(&c.SlowTime, 5*time.Second)
	def(&c.SlowDelay, 50*time.Millisecond)
	def(&c.Throughput, 5*time.Second)
	if c.Workers <= 0 {
		c.Workers = 8
	}
	if c.Goroutines <= 0 {
		c.Goroutines = 64
	}
	if len(c.HeldLocks) == 0 {
		c.HeldLocks = []int{1000, 10000}
	}
	if c.Waiters <= 0 {
		c.Waiters = 1000
	}
	if c.ReleaseLocks <= 0 {
		c.ReleaseLocks = 10000
	}
	def(&c.HeldTTL, 30*time.Second)
	def(&c.StormTime, 5*time.Second)
	def(&c.StormTTL, 500*time.Millisecond)
	return c
}

func (c Config) runs(fig string) bool {
	if len(c.Only) == 0 {
		return true
	}
	for _, f := range c.Only {
		if f == fig {
			return true
		}
	}
	return false
}

func (c Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// Figures lists the names Config.Only accepts.
var Figures = []string{"uncontended", "contention", "slow", "throughput", "fencing", "guard", "held", "waiters", "release", "storm"}

// Report is the outcome of Run.
type Report struct {
	Label       string             `json:"label"`
	Nodes       int                `json:"nodes"`
	Quick       bool               `json:"quick"`
	GoVersion   string             `json:"go_version"`
	GOMAXPROCS  int                `json:"gomaxprocs"`
	Started     time.Time          `json:"started"`
	Seconds     float64            `json:"seconds"`
	Critical    time.Duration      `json:"critical_ns"`
	Uncontended []OpResult         `json:"uncontended,omitempty"`
	Contention  []ContentionResult `json:"contention,omitempty"`
	SlowNode    []LatencyResult    `json:"slow_node,omitempty"`
	Throughput  []ThroughputResult `json:"throughput,omitempty"`
	Fencing     []OpResult         `json:"fencing,omitempty"`
	Guard       []OpResult         `json:"guard,omitempty"`
	// RTT is the nodes' round trip, measured with the contention figure:
	// the unit of the hand-off target.
	RTT          *RTTResult           `json:"rtt,omitempty"`
	Held         []HeldResult         `json:"held,omitempty"`
	Waiters      []WaitersResult      `json:"waiters,omitempty"`
	ReleaseStorm []ReleaseStormResult `json:"release_storm,omitempty"`
	Storm        []StormResult        `json:"storm,omitempty"`
	StormTTL     time.Duration        `json:"storm_ttl_ns,omitempty"`
	Targets      []Target             `json:"targets,omitempty"`
}

// Names of the contenders in the report.
const (
	NameOurs          = "quorumlock"
	NameOursPerWorker = "quorumlock, Client per worker"
	NameRedsync       = "redsync"
	// NameRedsyncPerWorker is redsync with connections of its own per
	// worker: the other side of NameOursPerWorker.
	NameRedsyncPerWorker = "redsync, connections per worker"
	NameRedsyncFast      = "redsync WithFailFast"
	NameRaw              = "raw floor"
	NameOursAllFast      = "quorumlock, all nodes fast"
	// NameOursAllFastIdle is all nodes fast with the idle gaps of the slow
	// run between acquisitions: the reference of the slow-node target.
	NameOursAllFastIdle = "quorumlock, all fast, idle gaps"
	NameOursFenced      = "quorumlock WithFencing"
	NameGuarded         = "SET, guarded client"
	// NameOursSlowTimeout is ours with redsync's per-node timeout (5% of
	// the 8 s expiry) set explicitly; ours defaults to the same value since
	// it moved from 80 ms, so the two rows should agree.
	NameOursSlowTimeout = "quorumlock WithNodeTimeout(400ms)"
	NameUnguarded       = "SET, plain client"
)

// redsyncNodeTimeout is redsync's default per-node timeout: expiry 8 s × 0.05.
const redsyncNodeTimeout = 400 * time.Millisecond

// Run measures every figure Config selects on env.
func Run(ctx context.Context, env Env, cfg Config) (*Report, error) {
	quick := cfg.quickMarker
	cfg = cfg.withDefaults()
	n, err := Open(ctx, env)
	if err != nil {
		return nil, err
	}
	defer n.Close()
	rep := &Report{
		Label: env.Label, Nodes: len(env.Clients), Quick: quick, GoVersion: runtime.Version(),
		GOMAXPROCS: runtime.GOMAXPROCS(0), Started: time.Now(), Critical: cfg.Critical,
	}
	steps := []struct {
		fig string
		run func(context.Context, *Nodes, Config, *Report) error
	}{
		{"uncontended", runUncontended},
		{"contention", runContention},
		{"slow", runSlow},
		{"throughput", runThroughput},
		{"fencing", runFencing},
		{"guard", runGuard},
		{"held", runHeld},
		{"waiters", runWaiters},
		{"release", runReleaseStorm},
		{"storm", runStorm},
	}
	for _, s := range steps {
		if !cfg.runs(s.fig) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		cfg.logf("bench: %s", s.fig)
		if err := s.run(ctx, n, cfg, rep); err != nil {
			return rep, fmt.Errorf("bench: %s: %w", s.fig, err)
		}
	}
	rep.Seconds = time.Since(rep.Started).Seconds()
	rep.Targets = rep.targets()
	return rep, nil
}

func runUncontended(ctx context.Context, n *Nodes, cfg Config, rep *Report) error {
	keys := n.Keys("uncontended", 4096)
	rep.Uncontended = append(rep.Uncontended,
		Measure(ctx, NameOurs, cfg.OpTime, keys, OursOp(n.Ours)),
		Measure(ctx, NameRedsync, cfg.OpTime, keys, RedsyncOp(n.Redsync)),
		Measure(ctx, NameRaw, cfg.OpTime, keys, RawOp(n.Raw)),
	)
	return nil
}

func runContention(ctx context.Context, n *Nodes, cfg Config, rep *Report) error {
	rtt, err := RoundTrip(ctx, n.Clients, 200)
	if err != nil {
		return err
	}
	rep.RTT = &rtt
	// A worker of the per-worker rows is a process: a Client (or a
	// Redsync) with go-redis connections of its own.
	perWorker := make([]Contender, cfg.Workers)
	rsPerWorker := make([]Contender, cfg.Workers)
	for i := range perWorker {
		c, _, err := n.NewProcessClient()
		if err != nil {
			return err
		}
		perWorker[i] = OursContender(c)
		rsPerWorker[i] = RedsyncContender(redsyncadapter.New(n.OwnConnections()))
	}
	shared := OursContender(n.Ours)
	rs := RedsyncContender(n.Redsync)
	run := ContentionRun{For: cfg.Contention, MinAcquisitions: cfg.MinAcquisitions, Cap: cfg.ContentionCap}
	one := func(name, key string, w func(int) Contender) ContentionResult {
		return Contention(ctx, name, n.Key("contention", key), cfg.Workers, cfg.Critical, run, w)
	}
	rep.Contention = append(rep.Contention,
		one(NameOurs, "ours", func(int) Contender { return shared }),
		one(NameRedsync, "redsync", func(int) Contender { return rs }),
		one(NameOursPerWorker, "ours-per-worker", func(i int) Contender { return perWorker[i] }),
		one(NameRedsyncPerWorker, "redsync-per-worker", func(i int) Contender { return rsPerWorker[i] }),
	)
	return nil
}

func runHeld(ctx context.Context, n *Nodes, cfg Config, rep *Report) error {
	for _, count := range cfg.HeldLocks {
		for _, f := range []func(context.Context, *Nodes, int, time.Duration) (HeldResult, error){HeldOurs, HeldRedsync} {
			h, err := f(ctx, n, count, cfg.HeldTTL)
			if err != nil {
				return err
			}
			rep.Held = append(rep.Held, h)
		}
	}
	return nil
}

func runWaiters(ctx context.Context, n *Nodes, cfg Config, rep *Report) error {
	w, err := Waiters(ctx, n, cfg.Waiters)
	if err != nil {
		return err
	}
	rep.Waiters = append(rep.Waiters, w)
	return nil
}

func runReleaseStorm(ctx context.Context, n *Nodes, cfg Config, rep *Report) error {
	for _, f := range []func(context.Context, *Nodes, int) (ReleaseStormResult, error){ReleaseStormOurs, ReleaseStormRedsync} {
		r, err := f(ctx, n, cfg.ReleaseLocks)
		if err != nil {
			return err
		}
		rep.ReleaseStorm = append(rep.ReleaseStorm, r)
	}
	return nil
}

func runStorm(ctx context.Context, n *Nodes, cfg Config, rep *Report) error {
	res, err := Storm(ctx, n, cfg.StormTime, cfg.StormTTL)
	if err != nil {
		return err
	}
	rep.Storm, rep.StormTTL = res, cfg.StormTTL
	return nil
}

func runSlow(ctx context.Context, n *Nodes, cfg Config, rep *Report) error {
	if n.env.Latency == nil {
		cfg.logf("bench: no latency injection on these nodes: slow-node figure skipped")
		return nil
	}
	keys := n.Keys("slow", 4096)
	const minOps = 20
	// With a slow node, Release waits for it (its late acquisition answer,
	// then its delete): about 2×delay in which the fast nodes sit idle, and
	// an idle connection answers its next request more slowly on a busy
	// host. The reference for the slow-node target has the same idle gaps.
	rep.SlowNode = append(rep.SlowNode,
		AcquireLatency(ctx, NameOursAllFast, keys, cfg.SlowTime, minOps, 0, OursContender(n.Ours)),
		AcquireLatency(ctx, NameOursAllFastIdle, keys, cfg.SlowTime, minOps, 2*cfg.SlowDelay, OursContender(n.Ours)))
	slow := len(n.Clients) - 1
	if err := n.env.Latency(ctx, slow, cfg.SlowDelay); err != nil {
		return err
	}
	rep.SlowNode = append(rep.SlowNode,
		AcquireLatency(ctx, NameOurs, keys, cfg.SlowTime, minOps, 0, OursContender(n.Ours)),
		AcquireLatency(ctx, NameRedsync, keys, cfg.SlowTime, minOps, 0, RedsyncContender(n.Redsync)),
		AcquireLatency(ctx, NameRedsyncFast, keys, cfg.SlowTime, minOps, 0, RedsyncContender(n.Redsync, redsync.WithFailFast(true))),
	)
	return n.env.Latency(context.WithoutCancel(ctx), slow, 0)
}

func runThroughput(ctx context.Context, n *Nodes, cfg Config, rep *Report) error {
	// Each goroutine of ours or redsync holds one connection per node for
	// its request and its straggler; twice as many covers both.
	if err := n.Warm(ctx, 2*cfg.Goroutines); err != nil {
		return err
	}
	rep.Throughput = append(rep.Throughput,
		Throughput(ctx, NameOurs, n.Keys("throughput-ours", cfg.Goroutines), cfg.Throughput, OursContender(n.Ours)),
		Throughput(ctx, NameOursSlowTimeout, n.Keys("throughput-ours-400ms", cfg.Goroutines), cfg.Throughput,
			OursContender(n.Ours, redlock.WithNodeTimeout(redsyncNodeTimeout))),
		Throughput(ctx, NameRedsync, n.Keys("throughput-redsync", cfg.Goroutines), cfg.Throughput, RedsyncContender(n.Redsync)),
		Throughput(ctx, NameRaw, n.Keys("throughput-raw", cfg.Goroutines), cfg.Throughput, RawContender(n.Raw)),
	)
	return nil
}

func runFencing(ctx context.Context, n *Nodes, cfg Config, rep *Report) error {
	keys := n.Keys("fencing", 4096)
	rep.Fencing = append(rep.Fencing,
		Measure(ctx, NameOurs, cfg.OpTime, keys, OursOp(n.Ours)),
		Measure(ctx, NameOursFenced, cfg.OpTime, keys, OursOp(n.Fenced)),
	)
	return nil
}

func runGuard(ctx context.Context, n *Nodes, cfg Config, rep *Report) error {
	g, err := NewGuardPair(ctx, n)
	if err != nil {
		return err
	}
	defer g.Close()
	keys := n.Keys("guard", 1)
	rep.Guard = append(rep.Guard,
		Measure(g.Ctx, NameUnguarded, cfg.OpTime, keys, SetOp(g.Plain)),
		Measure(g.Ctx, NameGuarded, cfg.OpTime, keys, SetOp(g.Guarded)),
	)
	return nil
}

// GuardPair is two clients to node 0, one guarded (redlock.Guard) and one
// not, and a context carrying a held lock: the same command through each
// shows the guard's cost.
type GuardPair struct {
	Guarded, Plain redis.UniversalClient
	Ctx            context.Context
	lock           *redlock.Lock
	cancel         context.CancelFunc
	closers        []func() error
}

// NewGuardPair acquires a lock with n.Ours (auto-extended, so that it stays
// valid however long the measurement runs) and opens the two clients.
func NewGuardPair(ctx context.Context, n *Nodes) (*GuardPair, error) {
	l, err := n.Ours.Acquire(ctx, n.Key("guard", "lock"), redlock.WithAutoExtend(true))
	if err != nil {
		return nil, err
	}
	g := &GuardPair{lock: l}
	g.Ctx, g.cancel = l.Context(ctx)
	base := n.Clients[0].(*redis.Client).Options()
	for _, p := range []*redis.UniversalClient{&g.Guarded, &g.Plain} {
		c := redis.NewClient(cloneOptions(base))
		g.closers = append(g.closers, c.Close)
		*p = c
	}
	redlock.Guard(g.Guarded)
	return g, nil
}

// Close releases the lock and closes the clients.
func (g *GuardPair) Close() error {
	g.cancel()
	errs := []error{g.lock.Release(context.Background())}
	for _, c := range g.closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}
