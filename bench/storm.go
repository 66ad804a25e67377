package bench

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/lab"
)

// StormResult is one implementation's run of the lab's contention-storm
// scenario (16 clients call Acquire at the same instant, one attempt each
// per round of one TTL) on the benchmark's nodes.
type StormResult struct {
	Name         string  `json:"name"`
	Attempts     int     `json:"attempts"`
	Served       int     `json:"served"`
	Availability float64 `json:"availability"`
	Violations   int     `json:"violations"`
	Verdict      string  `json:"verdict"`
	Error        string  `json:"error,omitempty"`
}

// Storm runs the lab's contention-storm with redsync, then quorumlock, for
// d each with locks of ttl, on the benchmark's nodes (the lab's own runs
// start fresh nodes each; here both share these). Redsync goes first so
// that no queue state quorumlock's waiters left behind (it expires by
// itself) can refuse redsync's attempts.
func Storm(ctx context.Context, n *Nodes, d, ttl time.Duration) ([]StormResult, error) {
	sc, err := lab.SelectScenarios([]string{"contention-storm"})
	if err != nil {
		return nil, err
	}
	res, err := lab.Run(ctx, lab.Config{
		NewFleet:  func(context.Context, lab.FleetSpec) (lab.Fleet, error) { return sharedFleet{n.Clients}, nil },
		Backend:   n.env.Label,
		Nodes:     len(n.Clients),
		Scenarios: sc,
		Impls:     []lab.Impl{lab.Redsync(), lab.Quorumlock()},
		Duration:  d,
		TTL:       ttl,
		Seed:      1,
		FencedSet: lab.FencedSet,
		IsStale:   lab.IsStaleFence,
	})
	if err != nil {
		return nil, err
	}
	var out []StormResult
	for _, s := range res.Scenarios {
		for _, o := range s.Outcomes {
			out = append(out, StormResult{
				Name: o.Impl, Attempts: o.Check.MajorityUp, Served: int(o.Check.Availability*float64(o.Check.MajorityUp) + 0.5),
				Availability: o.Check.Availability, Violations: o.Check.Violations, Verdict: o.Verdict.String(), Error: o.Err,
			})
		}
	}
	return out, nil
}

// sharedFleet is the benchmark's nodes seen as a lab fleet: the clients, no
// faults, and nothing to close (the benchmark owns them).
type sharedFleet struct{ clients []redis.UniversalClient }

func (f sharedFleet) Len() int                         { return len(f.clients) }
func (f sharedFleet) Clients() []redis.UniversalClient { return f.clients }
func (f sharedFleet) Close() error                     { return nil }
func (f sharedFleet) Node(int) lab.Node                { return nil }

func (f sharedFleet) View(name string) (lab.View, error) {
	return nil, fmt.Errorf("%w: view %q on the benchmark's nodes", lab.ErrUnsupported, name)
}
