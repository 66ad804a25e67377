package lab

import (
	"strings"
	"testing"
	"time"

	"github.com/quorumlock/quorumlock/cluster"
)

// TestElectionEmbedded runs every election scenario with quorumlock on
// embedded nodes: no two terms overlap, the store never accepts a write of
// an earlier term after a later term's, fences follow the terms' order, the
// faults that remove the leader are followed by a new leader, and a paused
// leader's late write is refused.
func TestElectionEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every election scenario")
	}
	// A scenario in which nobody led, or no paused leader came to write,
	// says the host was too busy for the TTL (a term needs rounds that
	// answer within TTL/20): it lost its shape and runs again with twice
	// the TTL. What is judged is the last run of each scenario.
	scenarios := ElectionScenarios()
	byName := map[string]ElectionScenario{}
	for _, sc := range scenarios {
		byName[sc.Name] = sc
	}
	var runs []ElectionOutcome
	for try, ttl := 1, 400*time.Millisecond; len(scenarios) > 0; try, ttl = try+1, 2*ttl {
		res, err := RunElection(t.Context(), ElectionConfig{
			NewFleet:  ClusterFleet(cluster.Options{Backend: cluster.BackendEmbedded, Nodes: 5}),
			Backend:   "embedded",
			Nodes:     5,
			Scenarios: scenarios,
			Impls:     []string{ElectionQuorumlock},
			Duration:  12 * ttl,
			TTL:       ttl,
			Seed:      1,
		})
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		if err := WriteElectionTable(&b, res); err != nil {
			t.Fatal(err)
		}
		t.Logf("TTL %v:\n%s", ttl, b.String())
		if len(res.Runs) != len(scenarios) {
			t.Fatalf("%d runs; want %d", len(res.Runs), len(scenarios))
		}
		scenarios = nil
		for _, o := range res.Runs {
			if try < 3 && electionShapeLost(o) {
				scenarios = append(scenarios, byName[o.Scenario])
				continue
			}
			runs = append(runs, o)
		}
	}
	if len(runs) != len(byName) {
		t.Fatalf("%d scenarios judged; want %d", len(runs), len(byName))
	}
	for _, o := range runs {
		c := o.Check
		if o.Err != "" || o.Skipped != "" {
			t.Errorf("%s: broke off: %s%s", o.Scenario, o.Err, o.Skipped)
			continue
		}
		if c.Terms == 0 || c.Accepted == 0 {
			t.Errorf("%s: %d terms, %d writes accepted: nobody led", o.Scenario, c.Terms, c.Accepted)
		}
		if c.Overlaps != 0 {
			t.Errorf("%s: %d overlapping terms (%v)", o.Scenario, c.Overlaps, c.OverlapTime)
		}
		if c.StaleAccepted != 0 {
			t.Errorf("%s: %d writes of earlier terms accepted after a later term's", o.Scenario, c.StaleAccepted)
		}
		if c.FenceInversions != 0 {
			t.Errorf("%s: %d terms whose fence is not above the previous term's", o.Scenario, c.FenceInversions)
		}
		switch o.Scenario {
		case "leader-pause", "leader-partition":
			// Each fault that removes the leader is followed by a new term
			// (the injector waits for it), so failovers are measured and
			// finite: bounded by the run itself.
			if len(c.Failovers) == 0 {
				t.Errorf("%s: no failover measured", o.Scenario)
			}
			for _, f := range c.Failovers {
				if f <= 0 || f > o.History.Duration {
					t.Errorf("%s: failover %v outside (0, %v]", o.Scenario, f, o.History.Duration)
				}
			}
		}
		// A paused leader resumes only once a later term has written, so its
		// first write is stale and must be refused.
		if o.Scenario == "leader-pause" && (c.StaleOffered == 0 || c.LateRefused == 0) {
			t.Errorf("leader-pause: %d stale writes offered, %d late writes refused: no paused leader wrote after "+
				"resuming, the scenario lost its shape", c.StaleOffered, c.LateRefused)
		}
	}
}

// electionShapeLost reports whether a run says nothing about the election
// because the host starved it: nobody led, or in leader-pause no paused
// leader came back to write.
func electionShapeLost(o ElectionOutcome) bool {
	if o.Err != "" || o.Skipped != "" {
		return false
	}
	c := o.Check
	return c.Terms == 0 || c.Accepted == 0 || (o.Scenario == "leader-pause" && c.StaleOffered == 0)
}

// TestCheckElection feeds the checkers histories with known flaws.
func TestCheckElection(t *testing.T) {
	ms := time.Millisecond
	h := ElectionHistory{
		Duration: 1000 * ms,
		Terms: []ElectionTerm{
			{Candidate: 0, Fence: 1, Start: 10 * ms, End: 200 * ms, Ended: true, Gone: 150 * ms},
			{Candidate: 1, Fence: 2, Start: 180 * ms, End: 500 * ms, Ended: true}, // overlaps term 0 by 20 ms
			{Candidate: 2, Fence: 2, Start: 600 * ms, End: 1000 * ms, Ended: true, RunEnd: true},
		},
		Writes: []ElectionWrite{
			{Term: 0, Accepted: true},
			{Term: 1, Accepted: true},
			{Term: 0, Accepted: true, Late: true}, // stale: term 1 already wrote
			{Term: 0, Refused: true, Late: true},
			{Term: 2, Accepted: true},
		},
	}
	c := CheckElection(h, 100*ms)
	if c.Terms != 3 || c.Overlaps != 1 || c.OverlapTime != 20*ms {
		t.Errorf("terms %d overlaps %d (%v); want 3, 1 (20ms)", c.Terms, c.Overlaps, c.OverlapTime)
	}
	if c.StaleAccepted != 1 || c.StaleTerms != 1 || c.Accepted != 4 {
		t.Errorf("stale %d in %d terms of %d accepted; want 1 in 1 of 4", c.StaleAccepted, c.StaleTerms, c.Accepted)
	}
	if c.StaleOffered != 2 || c.Refused != 1 {
		t.Errorf("stale offered %d, refused %d; want 2, 1", c.StaleOffered, c.Refused)
	}
	if c.LateWrites != 2 || c.LateRefused != 1 {
		t.Errorf("late %d refused %d; want 2, 1", c.LateWrites, c.LateRefused)
	}
	if c.FenceInversions != 1 {
		t.Errorf("fence inversions %d; want 1", c.FenceInversions)
	}
	// Term 0 lost at 150 ms (the fault), next start 180 ms: 30 ms; term 1
	// ended at 500 ms, next start 600 ms: 100 ms; term 2 ended with the run.
	if want := []time.Duration{30 * ms, 100 * ms}; !slicesEqual(c.Failovers, want) || c.Unresolved != 0 {
		t.Errorf("failovers %v unresolved %d; want %v, 0", c.Failovers, c.Unresolved, want)
	}
	if c.FailoverP50 != 0.3 || c.FailoverP99 != 1 {
		t.Errorf("failover p50 %v p99 %v ÷ TTL; want 0.3, 1", c.FailoverP50, c.FailoverP99)
	}
	h.Terms[2].RunEnd = false
	if c := CheckElection(h, 100*ms); c.Unresolved != 1 {
		t.Errorf("a lost leader with no successor: unresolved %d; want 1", c.Unresolved)
	}
}

func slicesEqual(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
