package lab

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
)

// TestDockerScenarios is `quorumlock lab --backend docker` with short
// durations (issue #7): the scenarios whose faults only real processes show
// (restarts with and without persistence, a wall-clock jump under
// libfaketime, killed nodes) on five redis-server containers, with both
// implementations. quorumlock must show no violation in any of them, and its
// refusal of B must name the victim's quarantine (restart-now) or clock
// skew (clock-jump); redsync must show a violation in restart-now and
// clock-jump, or the attack did not happen and the run proves nothing; in
// every attack B must get the lock once A's validity is over.
func TestDockerScenarios(t *testing.T) {
	if testing.Short() {
		t.Skip("starts ten five-node docker clusters")
	}
	clustertest.RequireDocker(t)
	t.Cleanup(func() { waitRedialsGone(t) })

	names := []string{"restart-now", "restart-delayed", "restart-aof", "clock-jump", "kill-minority"}
	sc, err := SelectScenarios(names)
	if err != nil {
		t.Fatal(err)
	}
	// As the command builds it for --backend docker, with short durations.
	// The attack TTL leaves a container restart (about half a second here,
	// more on a busy host) well inside A's validity.
	res, err := Run(t.Context(), Config{
		NewFleet:  ClusterFleet(cluster.Options{Backend: cluster.BackendDocker, Nodes: 5, Label: "lab", Logf: t.Logf}),
		Backend:   string(cluster.BackendDocker),
		Nodes:     5,
		Scenarios: sc,
		Impls:     Implementations(),
		Duration:  3 * time.Second,
		TTL:       500 * time.Millisecond,
		AttackTTL: 3 * time.Second,
		Seed:      1,
		FencedSet: FencedSet,
		IsStale:   IsStaleFence,
	})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := WriteTable(&b, res); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s(took %v)", b.String(), res.Elapsed.Round(time.Second))

	mustViolate := map[string]bool{"restart-now": true, "clock-jump": true}
	seen := map[string]bool{}
	for _, s := range res.Scenarios {
		for _, o := range s.Outcomes {
			seen[s.Name+"/"+o.Impl] = true
			t.Logf("%s/%s: %d violations, overlap %v, %d acquisitions, elapsed %v",
				s.Name, o.Impl, o.Check.Violations, o.Check.OverlapTime.Round(time.Millisecond), o.Check.Acquisitions, o.Elapsed.Round(time.Millisecond))
			switch {
			case o.Skipped != "":
				t.Errorf("%s/%s skipped: %s", s.Name, o.Impl, o.Skipped)
			case o.Err != "":
				t.Errorf("%s/%s broke off: %s", s.Name, o.Impl, o.Err)
			case o.Check.Acquisitions == 0:
				t.Errorf("%s/%s: no lock was ever obtained", s.Name, o.Impl)
			}
			if a := o.Attack; a != nil {
				t.Logf("%s/%s: %s", s.Name, o.Impl, attackLine(a))
				if !a.After {
					t.Errorf("%s/%s: B got no lock after A's validity ended", s.Name, o.Impl)
				}
			} else if s.Name != "kill-minority" && o.Skipped == "" {
				t.Errorf("%s/%s: no attack record", s.Name, o.Impl)
			}
			switch o.Impl {
			case "quorumlock":
				if o.Check.Violations != 0 {
					t.Errorf("%s: quorumlock showed %d violations (overlap %v): %+v", s.Name, o.Check.Violations, o.Check.OverlapTime, o.Check.Overlaps)
				}
			case "redsync":
				if mustViolate[s.Name] && o.Check.Violations == 0 {
					t.Errorf("%s: redsync showed no violation; the attack did not work", s.Name)
				}
			}
		}
	}
	for _, n := range names {
		for _, impl := range []string{"quorumlock", "redsync"} {
			if !seen[n+"/"+impl] {
				t.Errorf("no outcome for %s/%s", n, impl)
			}
		}
	}
	if f := res.Failures("quorumlock"); len(f) > 0 {
		t.Errorf("quorumlock failed: %q", f)
	}
}

// waitRedialsGone waits (a few seconds at most) for go-redis's background
// redial goroutines to end. A pool that failed to dial a killed node as
// often as its size redials from a goroutine that sleeps a second between
// tries and sees that its pool was closed only when it wakes up; the
// package's leak check at exit would otherwise catch it.
func waitRedialsGone(t *testing.T) {
	deadline := time.Now().Add(5 * time.Second)
	buf := make([]byte, 4<<20)
	for {
		n := runtime.Stack(buf, true)
		if !strings.Contains(string(buf[:n]), "internal/pool.(*ConnPool).tryDial") {
			return
		}
		if time.Now().After(deadline) {
			t.Logf("go-redis redial goroutines still running after 5s")
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestExploreDocker is the explorer's short docker budget: two seeds on
// real redis-server containers, restricted to the faults only real
// processes show faithfully (restarts that keep their data and change the
// run id, pauses, clock faults under libfaketime, Bootstrap while nodes
// restart, a fresh client while a node hangs). Every fault must apply,
// every implementation must get locks, and quorumlock must violate nothing
// inside the fault model.
func TestExploreDocker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four five-node docker clusters")
	}
	clustertest.RequireDocker(t)
	t.Cleanup(func() { waitRedialsGone(t) })
	ttl := 400 * time.Millisecond
	cfg := ExploreConfig{
		NewFleet: ClusterFleet(cluster.Options{Backend: cluster.BackendDocker, Nodes: 5, Label: "explore", Logf: t.Logf}),
		Backend:  string(cluster.BackendDocker),
		Nodes:    5, Clients: 3, TTL: ttl, Duration: 8 * ttl,
		Impls: Implementations(), Bounds: QuorumlockBounds(ttl),
		FirstSeed: 1, Seeds: 2, MaxFaults: 4,
		Kinds:     []FaultKind{CrashAOF, CrashLossy, CrashEmpty, Pause, ClockJump, Bootstrap, ColdClient},
		FencedSet: FencedSet, IsStale: IsStaleFence,
		Progress: func(r SeedResult) { t.Log(SeedLine(r)) },
	}
	res, err := Explore(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Seeds {
		for _, run := range s.Runs {
			for _, e := range run.Errors {
				t.Errorf("seed %d, %s: fault error: %s", s.Schedule.Seed, run.Impl, e)
			}
			if run.Check.Acquisitions == 0 && !s.Starved {
				t.Errorf("seed %d, %s: no lock at all", s.Schedule.Seed, run.Impl)
			}
		}
		if v := s.Runs[0].Check.Violations(); len(v) > 0 && !s.Schedule.Outside {
			t.Errorf("seed %d: quorumlock violated inside the fault model: %v\n%s", s.Schedule.Seed, v, s.Schedule.Timeline())
		}
	}
}
