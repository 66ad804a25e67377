package lab

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// The explorer searches fault schedules instead of replaying fixed ones: from
// a seed it composes faults over time (crashes and restarts of every kind,
// pauses, partitions per client, latency, clock jumps and drift, clients
// paused past their validity, and the operator actions people really take),
// runs the same schedule with every implementation, and checks the histories.
// The schedule is a pure function of the seed and the options, so a seed
// replays the same faults at the same instants (the interleaving of requests
// differs from run to run).

// FaultKind names one kind of fault in a schedule.
type FaultKind string

// The faults the explorer composes.
const (
	// Crashes: the node is killed at At and comes back For later.
	CrashEmpty   FaultKind = "restart-empty"   // without its data
	CrashDelayed FaultKind = "restart-delayed" // without its data, after more than a TTL down
	CrashAOF     FaultKind = "restart-aof"     // with every write (AOF fsync always)
	// CrashLossy comes back with its data but without the lock keys, as an
	// AOF written every second loses its last second: the sentinel survives,
	// only the run id tells that the process changed.
	CrashLossy FaultKind = "restart-lossy"

	Pause     FaultKind = "pause"     // the process stops answering (SIGSTOP)
	Partition FaultKind = "partition" // nodes unreachable from one client (asymmetric: others still reach them)
	Latency   FaultKind = "latency"   // replies delayed
	ClockJump FaultKind = "clock-jump"
	ClockRate FaultKind = "clock-drift"

	ClientPause FaultKind = "client-pause" // the client's next hold outlives its validity, then writes anyway
	// Operator actions.
	Bootstrap  FaultKind = "bootstrap"   // a fresh Client calls Bootstrap (a crontab's `quorumlock run --bootstrap`)
	ColdClient FaultKind = "cold-client" // a fresh Client acquires with a short deadline
)

// AllFaultKinds lists every kind, in the order of the report.
func AllFaultKinds() []FaultKind {
	return []FaultKind{CrashEmpty, CrashDelayed, CrashAOF, CrashLossy, Pause, Partition, Latency, ClockJump, ClockRate,
		ClientPause, Bootstrap, ColdClient}
}

func (k FaultKind) crash() bool {
	return k == CrashEmpty || k == CrashDelayed || k == CrashAOF || k == CrashLossy
}

// losesKeys tells whether the node comes back without the lock keys.
func (k FaultKind) losesKeys() bool { return k == CrashEmpty || k == CrashDelayed || k == CrashLossy }

// A Fault is one fault of a schedule. Times are offsets from the start of the
// run.
type Fault struct {
	ID     int           `json:"id"` // position in the generated schedule; --drop names it
	Kind   FaultKind     `json:"kind"`
	Nodes  []int         `json:"nodes,omitempty"`
	Client int           `json:"client"` // Partition (or EveryClient), ClientPause, ColdClient: the client it concerns
	At     time.Duration `json:"at_ns"`
	For    time.Duration `json:"for_ns"` // how long it lasts (crash: down time; cold client: its deadline)
	// Amount is the clock jump, the latency, or the pause past the validity.
	Amount time.Duration `json:"amount_ns,omitempty"`
	Rate   float64       `json:"rate,omitempty"` // ClockRate: the node clock's speed
	// Away, for a restart with data, is how long after the restart the
	// clients stay away from the node (only operators' tools reach it).
	Away time.Duration `json:"away_ns,omitempty"`
	// Outside is true when the fault leaves the documented fault model.
	Outside bool `json:"outside,omitempty"`
}

// EveryClient as a partition's Client cuts the nodes off every client of
// the workload: a network split of those nodes (operators' tools still reach
// them).
const EveryClient = -1

// End is when the fault stops counting against the fault model: a node that
// lost its lock keys counts until it served its quarantine.
func (f Fault) end(quarantine time.Duration) time.Duration {
	e := f.At + f.For + f.Away
	if f.Kind.losesKeys() {
		e += quarantine
	}
	return e
}

func (f Fault) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "#%d %s", f.ID, f.Kind)
	if len(f.Nodes) > 0 {
		fmt.Fprintf(&b, " node %s", joinInts(f.Nodes))
	}
	switch f.Kind {
	case Partition:
		if f.Client == EveryClient {
			b.WriteString(" from every client")
		} else {
			fmt.Fprintf(&b, " from client %d", f.Client)
		}
	case ClientPause, ColdClient:
		fmt.Fprintf(&b, " client %d", f.Client)
	}
	fmt.Fprintf(&b, " at %v", round(f.At))
	if f.For > 0 {
		what := "for"
		if f.Kind == ColdClient {
			what = "deadline"
		} else if f.Kind.crash() {
			what = "down"
		}
		fmt.Fprintf(&b, " %s %v", what, round(f.For))
	}
	if f.Away > 0 {
		fmt.Fprintf(&b, ", clients back %v after the restart", round(f.Away))
	}
	switch f.Kind {
	case ClockJump:
		fmt.Fprintf(&b, " by %+v and back", f.Amount)
	case ClockRate:
		fmt.Fprintf(&b, " at ×%.3f", f.Rate)
	case Latency:
		fmt.Fprintf(&b, " +%v", f.Amount)
	case ClientPause:
		fmt.Fprintf(&b, " until %v past its validity", f.Amount)
	}
	if f.Outside {
		b.WriteString(" (outside the model)")
	}
	return b.String()
}

func joinInts(s []int) string {
	p := make([]string, len(s))
	for i, v := range s {
		p[i] = fmt.Sprint(v)
	}
	return strings.Join(p, ",")
}

// Schedule is one generated fault schedule.
type Schedule struct {
	Seed     uint64        `json:"seed"`
	Nodes    int           `json:"nodes"`
	Clients  int           `json:"clients"`
	TTL      time.Duration `json:"ttl_ns"`
	Duration time.Duration `json:"duration_ns"`
	Faults   []Fault       `json:"faults"`
	// Outside is true when any fault leaves the fault model.
	Outside bool `json:"outside"`
	// Unfenced runs the locks without fencing tokens (odd seeds): a fenced
	// lock is never granted by a release (it needs a new token), so only
	// these schedules put quorumlock's grant to the queue's head to the
	// test. The stale-write and fence checks then have nothing to check.
	Unfenced bool `json:"unfenced,omitempty"`
}

// Without returns the schedule without the faults whose IDs are given.
func (s Schedule) Without(ids ...int) Schedule {
	out := s
	out.Faults = slices.DeleteFunc(slices.Clone(s.Faults), func(f Fault) bool { return slices.Contains(ids, f.ID) })
	out.Outside = slices.ContainsFunc(out.Faults, func(f Fault) bool { return f.Outside })
	return out
}

// Kinds lists the kinds of fault the schedule uses, in report order.
func (s Schedule) Kinds() []FaultKind {
	var out []FaultKind
	for _, k := range AllFaultKinds() {
		if slices.ContainsFunc(s.Faults, func(f Fault) bool { return f.Kind == k }) {
			out = append(out, k)
		}
	}
	return out
}

// ModelBounds are the limits of the documented fault model for a lock TTL,
// from the library's defaults: the restart quarantine (one TTL), the clock-
// skew guard (TTL/10) and the drift allowance (TTL×0.01 + 2 ms).
type ModelBounds struct {
	Quarantine time.Duration
	MaxSkew    time.Duration
	Drift      time.Duration
}

// GenOptions shape the schedules.
type GenOptions struct {
	Nodes, Clients int
	TTL, Duration  time.Duration
	Bounds         ModelBounds
	// Outside lets faults leave the fault model: a majority faulty at once,
	// clock jumps between the drift allowance and the skew bound and back
	// before a TTL, fast clocks, restarts inside a quarantine.
	Outside bool
	// Kinds restricts the faults to these kinds (nil: all).
	Kinds []FaultKind
	// NoRunIDs: the nodes report no run id, so restarts that keep their
	// data but lose the last lock keys cannot be told from no restart at
	// all; they count as outside the model.
	NoRunIDs bool
	// MaxFaults bounds the number of faults (default 6).
	MaxFaults int
}

// Generate derives a schedule from seed. Inside the model it keeps, at every
// instant, the nodes that lost data and have not served their quarantine,
// or whose clock is off, to a minority (pauses, partitions and latency
// are not bounded: they cost liveness, never safety); it keeps clock jumps
// either within the drift allowance or beyond the skew bound for longer
// than a TTL (so the guard refuses the node for as long as any key it held
// lives), and clock rates within half the drift factor.
func Generate(seed uint64, o GenOptions) Schedule {
	rng := rand.New(rand.NewPCG(seed, 0x6578706c6f7265))
	s := Schedule{Seed: seed, Nodes: o.Nodes, Clients: o.Clients, TTL: o.TTL, Duration: o.Duration, Unfenced: seed%2 == 1}
	kinds := o.Kinds
	if len(kinds) == 0 {
		kinds = AllFaultKinds()
	}
	maxFaults := o.MaxFaults
	if maxFaults <= 0 {
		maxFaults = 6
	}
	want := 1 + rng.IntN(maxFaults)
	ttl := o.TTL
	span := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	// Two schedules in three open with a rotation (see rotation), an
	// overlap of faults that random draws meet too rarely for a short
	// budget to find.
	if maxFaults >= 3 && o.Nodes >= 3 && allows(kinds, Partition) && allows(kinds, Pause) && allows(kinds, CrashEmpty) && rng.IntN(3) > 0 {
		s.Faults = rotation(rng, o, allows(kinds, Bootstrap), allows(kinds, ColdClient) && maxFaults >= 4)
		want = max(want, len(s.Faults))
		for _, f := range s.Faults {
			s.Outside = s.Outside || f.Outside
		}
	}
	for tries := 0; len(s.Faults) < want && tries < 50*want; tries++ {
		f := Fault{Kind: kinds[rng.IntN(len(kinds))], At: span(o.Duration/20, o.Duration*3/5)}
		k := 1
		if o.Outside && rng.IntN(3) == 0 {
			k = 1 + rng.IntN(o.Nodes) // possibly a majority
		} else if m := minority(o.Nodes); m > 1 {
			k = 1 + rng.IntN(m)
		}
		nodes := func() []int { return pick(rng, o.Nodes, k) }
		// Half the time a fault follows an earlier one: it starts when that
		// one stops counting against the model (its quarantine served), on
		// the same nodes or on others. Defects live in such sequences: a
		// node that lost its data coming back among nodes that missed the
		// writes of the meantime.
		var prev []Fault
		for _, g := range s.Faults {
			if len(g.Nodes) > 0 && g.end(o.Bounds.Quarantine) < o.Duration*17/20 {
				prev = append(prev, g)
			}
		}
		if len(prev) > 0 && rng.IntN(3) > 0 {
			g := prev[rng.IntN(len(prev))]
			f.At = g.end(o.Bounds.Quarantine) + span(0, ttl/4)
			if rng.IntN(2) == 0 {
				// Or while it is in force: a node crashing while a client
				// is cut off from others holds that client's lock on a
				// bare majority (the classic Redlock attack).
				f.At = g.At + span(0, max(g.For, time.Millisecond))
			}
			same := g.Nodes
			nodes = func() []int {
				if rng.IntN(2) == 0 {
					return slices.Clone(same)
				}
				var other []int
				for _, n := range rng.Perm(o.Nodes) {
					if !slices.Contains(same, n) && len(other) < k {
						other = append(other, n)
					}
				}
				slices.Sort(other)
				return other
			}
		}
		switch f.Kind {
		case CrashEmpty:
			f.Nodes, f.For = nodes(), span(0, ttl/10)
		case CrashAOF, CrashLossy:
			f.Nodes, f.For = nodes(), span(0, ttl/10)
			if rng.IntN(2) == 0 {
				f.Away = span(ttl/10, ttl/2)
			}
		case CrashDelayed:
			f.Nodes, f.For = nodes(), span(ttl+ttl/10, 2*ttl)
		case Pause:
			f.Nodes, f.For = nodes(), span(ttl/4, 2*ttl)
		case Partition:
			f.Nodes, f.For, f.Client = nodes(), span(ttl/4, 2*ttl), rng.IntN(o.Clients)
		case Latency:
			f.Nodes, f.For = nodes(), span(ttl/4, 2*ttl)
			f.Amount = []time.Duration{ttl / 40, ttl / 10, ttl / 4}[rng.IntN(3)]
		case ClockJump:
			f.Nodes = []int{rng.IntN(o.Nodes)}
			switch {
			case o.Outside && rng.IntN(2) == 0:
				// Between the drift allowance and the skew bound: the guard
				// lets the node vote while its keys expire early.
				f.Amount = span(o.Bounds.Drift+time.Millisecond, max(o.Bounds.MaxSkew, o.Bounds.Drift+time.Millisecond)-time.Millisecond/2)
				f.For, f.Outside = span(ttl/4, ttl), true
			case rng.IntN(2) == 0:
				f.Amount, f.For = span(0, o.Bounds.Drift/2), span(ttl/4, 2*ttl)
			default:
				f.Amount, f.For = span(2*o.Bounds.MaxSkew, 3*ttl), span(ttl+o.Bounds.MaxSkew, 2*ttl)
			}
		case ClockRate:
			f.Nodes, f.For = []int{rng.IntN(o.Nodes)}, span(ttl/2, 2*ttl)
			f.Rate = 1 + 0.005*rng.Float64()
			if o.Outside && rng.IntN(2) == 0 {
				f.Rate, f.Outside = 1.02+0.2*rng.Float64(), true
			}
		case ClientPause:
			f.Client, f.Amount = rng.IntN(o.Clients), span(ttl/10, ttl)
		case Bootstrap:
			// Often while a node that restarted with its data waits for its
			// clients: a crontab's bootstrap does not know what restarted.
			var back []Fault
			for _, g := range s.Faults {
				if g.Away > 0 {
					back = append(back, g)
				}
			}
			if len(back) > 0 && rng.IntN(2) == 0 {
				g := back[rng.IntN(len(back))]
				f.At = g.At + g.For + span(0, g.Away)
			}
		case ColdClient:
			f.For = span(ttl/2, 3*ttl)
			// Often while a node hangs: a process started then meets the
			// hung node on its very first connections.
			var hung []Fault
			for _, g := range s.Faults {
				if g.Kind == Pause {
					hung = append(hung, g)
				}
			}
			if len(hung) > 0 && rng.IntN(2) == 0 {
				g := hung[rng.IntN(len(hung))]
				f.At = g.At + span(0, g.For/2)
			}
		}
		if s.clashes(f, o.Bounds.Quarantine) {
			continue
		}
		f.Outside = f.Outside || !s.fits(f, o) || f.Kind == CrashLossy && o.NoRunIDs
		if f.Outside && !o.Outside {
			continue
		}
		f.ID = len(s.Faults)
		if f.Kind == ColdClient {
			f.Client = o.Clients*workersPerClient + f.ID // its own row, after the workload's
		}
		s.Faults = append(s.Faults, f)
		s.Outside = s.Outside || f.Outside
	}
	slices.SortStableFunc(s.Faults, func(a, b Fault) int { return cmp.Compare(a.At, b.At) })
	return s
}

func allows(kinds []FaultKind, k FaultKind) bool { return slices.Contains(kinds, k) }

// rotation is a majority that moves across a node that lost its data, the
// shape of defects 1 and 3 of issue #10. A minority A is cut off from every
// client of the workload for over a TTL, so every lock taken meanwhile lives
// on the other nodes, a bare majority, and nothing of before is left on A
// (a cut, not a hang: a hung node would serve the votes queued meanwhile
// when it resumes). One node x of that majority is killed and comes back
// empty. Then either:
//   - A is reachable again and the rest R of the majority hangs: the next
//     majority, x and A, remembers neither the locks nor the fence counters
//     of the meantime; only the quarantine and the fence tokens' clock floor
//     keep it safe;
//   - or an operator bootstraps the nodes and starts a fresh process
//     (`quorumlock run --bootstrap` does both) that sees every node and asks
//     for the lock at once, while the workload's holder of the meantime
//     still holds it: only Bootstrap's refusal to declare a node of a
//     deployment in service keeps x out of that vote.
//
// The faults stay inside the model: x is the only node that loses data,
// and cuts and hangs cost liveness only.
func rotation(rng *rand.Rand, o GenOptions, bootstrap, cold bool) []Fault {
	ttl := o.TTL
	span := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	perm := rng.Perm(o.Nodes)
	m := max(minority(o.Nodes), 1)
	a, x, r := slices.Sorted(slices.Values(perm[:m])), perm[m], slices.Sorted(slices.Values(perm[m+1:]))
	t0 := span(o.Duration/20, o.Duration/4)
	crash := t0 + span(ttl, 3*ttl/2)
	down := span(0, ttl/20)
	back := crash + down
	cut := Fault{Kind: Partition, Nodes: a, Client: EveryClient, At: t0, For: back - t0}
	fs := []Fault{cut, {Kind: CrashEmpty, Nodes: []int{x}, At: crash, For: down}}
	// The bootstrap needs a holder with time left at the restart, which the
	// workload gives less often: it gets two rotations in three.
	if bootstrap && rng.IntN(3) > 0 {
		at := back + span(0, ttl/20)
		fs = append(fs, Fault{Kind: Bootstrap, At: at})
		if cold {
			// The workload's waiters sleep until the holder's key expires;
			// the fresh process asks now. The cut lasts until it is done.
			c := Fault{Kind: ColdClient, At: at + span(ttl/50, ttl/10), For: span(ttl/2, ttl)}
			fs[0].For = c.At + c.For - t0
			fs = append(fs, c)
		}
	} else {
		// R hangs past x's quarantine by up to two TTLs: the locks x and A
		// grant meanwhile meet a hung node in whatever they do after the
		// vote (defect 6's shape).
		fs = append(fs, Fault{Kind: Pause, Nodes: r, At: back, For: o.Bounds.Quarantine + span(ttl/2, 2*ttl)})
	}
	for i := range fs {
		fs[i].ID = i
		if fs[i].Kind == ColdClient {
			fs[i].Client = o.Clients*workersPerClient + i // its own row, after the workload's
		}
	}
	return fs
}

// unsafe tells the faults that the fault model bounds: those that take
// state away from a node (its data, until the quarantine is served) or
// move its clock. Pauses, partitions and latency only make nodes
// unreachable, which costs liveness and never safety, however many.
func (k FaultKind) unsafe() bool { return k.crash() || k == ClockJump || k == ClockRate }

// fits reports whether adding f keeps the nodes that lost data (and have
// not served their quarantine) or whose clock is off a minority at every
// instant.
func (s Schedule) fits(f Fault, o GenOptions) bool {
	if !f.Kind.unsafe() {
		return true
	}
	all := append(slices.Clone(s.Faults), f)
	// The faulty set can only grow at a fault's start: check there.
	for _, g := range all {
		t := g.At
		bad := map[int]bool{}
		for _, h := range all {
			if !h.Kind.unsafe() || t < h.At || t >= h.end(o.Bounds.Quarantine) {
				continue
			}
			for _, n := range h.Nodes {
				bad[n] = true
			}
		}
		if len(bad) > minority(o.Nodes) {
			return false
		}
	}
	return true
}

// clashes reports whether f would stop or pause a node that another fault
// stops or pauses at the same time: the two cannot both be in force.
func (s Schedule) clashes(f Fault, quarantine time.Duration) bool {
	process := func(k FaultKind) bool { return k.crash() || k == Pause }
	if !process(f.Kind) {
		return false
	}
	for _, g := range s.Faults {
		if process(g.Kind) && g.At < f.At+f.For+time.Millisecond && f.At < g.At+g.For+time.Millisecond &&
			slices.ContainsFunc(f.Nodes, func(n int) bool { return slices.Contains(g.Nodes, n) }) {
			return true
		}
	}
	return false
}

// Timeline is the schedule as text, one fault per line in time order.
func (s Schedule) Timeline() string {
	var b strings.Builder
	where := "inside the fault model"
	if s.Outside {
		where = "leaves the fault model"
	}
	locks := "fenced"
	if s.Unfenced {
		locks = "unfenced"
	}
	fmt.Fprintf(&b, "seed %d: %d nodes, %d clients, TTL %v, %v, %s locks; %d faults, %s\n", s.Seed, s.Nodes, s.Clients, s.TTL, s.Duration, locks, len(s.Faults), where)
	for _, f := range s.Faults {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	return b.String()
}
