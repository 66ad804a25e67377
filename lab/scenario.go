package lab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/quorumlock/quorumlock/cluster"
)

// A Scenario is a workload plus a fault schedule plus the outcome it expects,
// written next to each other so that a reader of the report sees all three.
type Scenario struct {
	Name        string
	Title       string
	Description string
	Expect      string // the expected outcome in words
	// Want is the expected outcome per implementation (or variant) name.
	Want func(impl string) Expectation
	// Variants are extra rows run beside the implementations, such as the
	// auction without a lock.
	Variants []string
	// Skip, when set, gives the reason an implementation cannot take part.
	Skip func(impl Impl) string
	// Fleet asks for nodes configured differently from the default.
	Fleet FleetSpec
	once  bool // runs once for about one attack TTL, whatever the duration
	// ttls, when set, is the scenario's own length in attack TTLs,
	// whatever the duration.
	ttls int
	run  func(ctx context.Context, r *run) error
	// judge, when set, adds to the verdict what the attack or roll record
	// shows.
	judge func(impl string, o *Outcome)
}

// FleetSpec is how a scenario wants its nodes started.
type FleetSpec struct {
	AOFAlways bool // every node fsyncs its AOF on every write
	// Faults the scenario injects: a fleet that cannot inject one of them
	// refuses at once (ErrUnsupported), before any setup runs.
	Faults []cluster.Fault
}

// both expects e of every implementation.
func both(e Expectation) func(string) Expectation { return func(string) Expectation { return e } }

// safe is the expectation of a lock that keeps its promise.
var safe = Expectation{Violations: None, LostUpdates: None, StaleWrites: None, Auction: None}

// live is safe plus: with a majority up, at least half of the attempts
// get the lock within their timeout (two TTLs, or one storm round).
var live = Expectation{Violations: None, LostUpdates: None, StaleWrites: None, Auction: None, MinAvailability: 0.5}

// A fault is something done to a node and, for most, undone later.
type fault struct {
	name   string
	kind   cluster.Fault // what the fleet must support
	down   bool          // the node is unreachable while the fault lasts
	apply  func(ctx context.Context, n Node, ttl time.Duration) error
	revert func(ctx context.Context, n Node, ttl time.Duration) error
}

var (
	faultKill = fault{name: "kill", kind: cluster.FaultKill, down: true,
		apply: func(ctx context.Context, n Node, _ time.Duration) error { return n.Kill(ctx) },
		revert: func(ctx context.Context, n Node, _ time.Duration) error {
			return n.Restart(ctx, Restart{WipeData: true})
		},
	}
	faultPause = fault{name: "pause", kind: cluster.FaultPause, down: true,
		apply:  func(ctx context.Context, n Node, _ time.Duration) error { return n.Pause(ctx) },
		revert: func(ctx context.Context, n Node, _ time.Duration) error { return n.Resume(ctx) },
	}
	faultPartition = fault{name: "partition", kind: cluster.FaultPartition, down: true,
		apply:  func(ctx context.Context, n Node, _ time.Duration) error { return n.Partition(ctx) },
		revert: func(ctx context.Context, n Node, _ time.Duration) error { return n.Heal(ctx) },
	}
	// faultSlow delays every reply by a tenth of the TTL: longer than
	// redsync's per-node timeout (5% of the TTL), so the node is as good as
	// absent for it, but well inside the validity.
	faultSlow = fault{name: "slow", kind: cluster.FaultLatency,
		apply: func(ctx context.Context, n Node, ttl time.Duration) error {
			return n.Latency(ctx, ttl/10, ttl/50)
		},
		revert: func(ctx context.Context, n Node, _ time.Duration) error { return n.ClearLatency(ctx) },
	}
)

// A step applies a fault to some nodes at a share of the run's duration and
// reverts it after another share (0: at the end of the run).
type step struct {
	fault    fault
	nodes    int // how many nodes, chosen by the seed
	at, span float64
}

func minority(n int) int { return (n - 1) / 2 }

// Scenarios returns every scenario in the order the report shows them.
func Scenarios() []Scenario {
	return []Scenario{
		holders("baseline", "no faults",
			"Four clients loop acquire → hold 5–40 ms → release, incrementing the shared counter while they hold.",
			"no violations, no lost updates, availability near 100% for both.",
			both(live), nil, baseHolders),
		holders("kill-minority", "kill a minority of the nodes, restart them empty later",
			"A minority of the nodes (chosen by the seed) is killed at 20% of the run and restarted without data at 70%. "+
				"While they are down every lock lives on a bare majority.",
			"no violations and no lost updates for both; availability stays high since a majority is always up.",
			both(live), []step{{fault: faultKill, nodes: -1, at: 0.2, span: 0.5}}, baseHolders),
		holders("pause-minority", "pause a minority of the nodes",
			"A minority of the nodes stops answering (SIGSTOP or equivalent) from 20% to 70% of the run; requests to them time out.",
			"no violations for both; acquisitions get slower by the per-node timeout.",
			both(live), []step{{fault: faultPause, nodes: -1, at: 0.2, span: 0.5}}, baseHolders),
		holders("partition-minority", "cut a minority of the nodes off the network",
			"A minority of the nodes is unreachable from every client from 20% to 70% of the run.",
			"no violations for both.",
			both(live), []step{{fault: faultPartition, nodes: -1, at: 0.2, span: 0.5}}, baseHolders),
		holders("slow-node", "one slow node",
			"One node answers a tenth of the TTL late (with jitter) from 20% to 70% of the run. "+
				"That is longer than redsync's per-node timeout (5% of the TTL).",
			"no violations for both; the slow node effectively drops out of redsync's quorum.",
			both(live), []step{{fault: faultSlow, nodes: 1, at: 0.2, span: 0.5}}, baseHolders),
		attack("restart-now", "holder on a bare majority, one of its nodes restarts empty at once",
			"Client A holds the lock on exactly a bare majority (its view is cut off from the other nodes). One of A's "+
				"nodes is killed and restarted at once without persistence, so it comes back without A's key. "+
				"Client B, on another view that sees every node, then tries to acquire while A's lock is still valid.",
			"redsync lets B in while A still holds (violation); quorumlock's restart quarantine keeps the restarted "+
				"node from voting for a TTL, so B waits until A's validity ended.",
			func(impl string) Expectation {
				if impl == "redsync" {
					return Expectation{Violations: Expected}
				}
				return safe
			}, FleetSpec{Faults: []cluster.Fault{cluster.FaultRestart}}, attackRestart(Restart{WipeData: true}), true, guardQuarantine),
		attack("restart-delayed", "the same, but the node stays down longer than the TTL",
			"As restart-now, but the restarted node stays down for 1.5 × TTL before it comes back empty "+
				"(the spec's delayed restart, done by the operator).",
			"no violations for both: A's validity has ended before the node votes again.",
			both(safe), FleetSpec{Faults: []cluster.Fault{cluster.FaultRestart}}, attackRestart(Restart{WipeData: true, Delay: -1}), false, guardNone),
		attack("restart-aof", "the same, with AOF fsync always",
			"As restart-now, but every node runs with appendonly yes, appendfsync always, and the restart keeps the data.",
			"no violations for both: the key survives the restart.",
			both(safe), FleetSpec{AOFAlways: true, Faults: []cluster.Fault{cluster.FaultRestart}}, attackRestart(Restart{AOFAlways: true}), false, guardNone),
		attack("clock-jump", "holder on a bare majority, one of its nodes' clock jumps past the TTL",
			"As restart-now, but instead of a restart the wall clock of one of A's nodes jumps forward by 2 × TTL, "+
				"which expires A's key there (Redis expires by wall clock).",
			"redsync lets B in while A still holds (violation); quorumlock's clock-skew guard keeps the jumped node from voting.",
			func(impl string) Expectation {
				if impl == "redsync" {
					return Expectation{Violations: Expected}
				}
				return safe
			}, FleetSpec{Faults: []cluster.Fault{cluster.FaultClockJump}}, attackClockJump, true, guardSkew),
		holders("client-pause", "clients pause past their validity, no fencing",
			"As baseline, but a quarter of the holds last until half a TTL after the lock's validity ended "+
				"(a GC pause, a swapped-out process) and the client then writes anyway.",
			"no violations (a holding interval ends at the validity deadline) but lost updates for both: "+
				"a lock without fencing cannot stop a paused client.",
			both(Expectation{Violations: None, LostUpdates: Expected, StaleWrites: Maybe, Auction: None, MinAvailability: 0.5}),
			nil, pausedHolders(false)),
		withSkip(holders("client-pause-fenced", "clients pause past their validity, fenced writes",
			"As client-pause, but locks carry fencing tokens and the counter is written through the storage-side check "+
				"(redlock.FencedSet), which refuses a token lower than one already accepted.",
			"no stale write accepted. Lost updates can remain: fencing orders writes, but a read-modify-write whose "+
				"read was stale still loses an increment when the late write lands before the newer holder's write.",
			both(Expectation{Violations: None, LostUpdates: Maybe, StaleWrites: None, Auction: None, MinAvailability: 0.5}),
			nil, pausedHolders(true)), func(impl Impl) string {
			if !impl.Fencing {
				return impl.Name + " hands out no fencing tokens"
			}
			return ""
		}),
		rollingRestart(),
		storm(),
		auction(),
	}
}

func withSkip(s Scenario, skip func(Impl) string) Scenario { s.Skip = skip; return s }

// SelectScenarios picks scenarios by name, in the order given; "all" or no
// names select every one.
func SelectScenarios(names []string) ([]Scenario, error) {
	all := Scenarios()
	if len(names) == 0 || slices.Contains(names, "all") {
		return all, nil
	}
	var out []Scenario
	for _, n := range names {
		i := slices.IndexFunc(all, func(s Scenario) bool { return s.Name == n })
		if i < 0 {
			var known []string
			for _, s := range all {
				known = append(known, s.Name)
			}
			return nil, fmt.Errorf("lab: unknown scenario %q (known: %s)", n, strings.Join(known, ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

func baseHolders(ttl time.Duration) Holders {
	return Holders{HoldMin: 5 * time.Millisecond, HoldMax: 40 * time.Millisecond, AttemptTimeout: 2 * ttl, CounterKey: "lab:counter"}
}

func pausedHolders(fenced bool) func(time.Duration) Holders {
	return func(ttl time.Duration) Holders {
		h := baseHolders(ttl)
		h.PauseShare, h.PausePast, h.Fenced = 0.25, ttl/2, fenced
		return h
	}
}

const holdersClients = 4

func holders(name, title, desc, expect string, want func(string) Expectation, steps []step, hw func(time.Duration) Holders) Scenario {
	s := Scenario{Name: name, Title: title, Description: desc, Expect: expect, Want: want}
	for _, st := range steps {
		if !slices.Contains(s.Fleet.Faults, st.fault.kind) {
			s.Fleet.Faults = append(s.Fleet.Faults, st.fault.kind)
		}
	}
	s.run = func(ctx context.Context, r *run) error {
		h := hw(r.ttl)
		r.fencing, r.counter = h.Fenced, true
		w, err := r.workers(holdersClients, r.fleet.Clients())
		if err != nil {
			return err
		}
		return r.withSchedule(ctx, steps, func(ctx context.Context) { h.Run(ctx, w) })
	}
	return s
}

func storm() Scenario {
	const clients = 16
	return Scenario{
		Name:  "contention-storm",
		Title: fmt.Sprintf("%d clients at the same instant", clients),
		Description: fmt.Sprintf("Every round, %d clients call Acquire at the same instant, hold 5 ms, increment the counter "+
			"and release; each gets one attempt per round, bounded by the round (one TTL, enough for all of them one after the other).", clients),
		Expect: "no violations and no lost updates for both; availability is the share of clients served within a round " +
			"(retry delay, split votes and keys left behind by failed attempts decide it); below 50% the outcome is marked degraded.",
		Want: both(live),
		run: func(ctx context.Context, r *run) error {
			w, err := r.workers(clients, r.fleet.Clients())
			if err != nil {
				return err
			}
			r.counter = true
			Storm{Round: r.ttl, Hold: 5 * time.Millisecond, CounterKey: "lab:counter"}.Run(ctx, w)
			return nil
		},
	}
}

const (
	variantNoLock     = "no-lock"
	variantOptimistic = "watch-multi"
)

func auction() Scenario {
	const bidders = 4
	return Scenario{
		Name:  "auction",
		Title: "bidders raise a price under the lock",
		Description: fmt.Sprintf("%d bidders read the current price, think 2 ms and bid 1–5 higher. Beside the two locks, "+
			"the same bidders run with no lock at all and with an optimistic WATCH/MULTI/EXEC retry loop on the storage node.", bidders),
		Expect: "accepted bids strictly increase and the final price is the highest bid, with either lock and with WATCH/MULTI " +
			"(which pays in aborted transactions); with no lock the invariant breaks. " +
			"Bids per second differ between the locks for a reason the hand-off lines show: redsync's waiters sleep 50–250 ms " +
			"between tries, so the bidder that just released wins again almost every time, one round trip after its release; " +
			"quorumlock serves waiting clients in turn, so nearly every bid hands the lock to another client, and a hand-off " +
			"costs the release on every node, the wake-up and the next waiter's round(s) on the nodes. That is the price of " +
			"fairness across processes, paid in bids per second.",
		Variants: []string{variantNoLock, variantOptimistic},
		Want: func(impl string) Expectation {
			if impl == variantNoLock {
				return Expectation{Auction: Expected}
			}
			return live
		},
		run: func(ctx context.Context, r *run) error {
			a := Auction{Think: 2 * time.Millisecond, AttemptTimeout: 2 * r.ttl, PriceKey: "lab:price"}
			r.price = true
			var w *Workers
			switch r.impl.Name {
			case variantNoLock:
				a.Mode, w = AuctionNoLock, r.bare()
			case variantOptimistic:
				a.Mode, w = AuctionOptimistic, r.bare()
			default:
				var err error
				if w, err = r.workers(bidders, r.fleet.Clients()); err != nil {
					return err
				}
			}
			w.Rec = r.rec
			a.Run(ctx, w, bidders)
			return nil
		},
	}
}

// pick chooses k distinct nodes out of n with rng; k < 0 means a minority.
func pick(rng *rand.Rand, n, k int) []int {
	if k < 0 {
		k = minority(n)
	}
	p := rng.Perm(n)[:k]
	slices.Sort(p)
	return p
}
