package lab

import (
	"strings"
	"testing"
	"time"

	"github.com/quorumlock/quorumlock/cluster"
)

// TestRollingRestartEmbedded is rolling-restart on embedded nodes: every
// node killed and restarted empty in turn, 20 TTLs in all. quorumlock's
// holder must keep its lock with no contender getting it, and redsync's
// holder (Extend every TTL/3) must lose it: if it does not, the roll did not
// empty its nodes and the test lost its shape.
func TestRollingRestartEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 20 TTLs per implementation")
	}
	sc, err := SelectScenarios([]string{"rolling-restart"})
	if err != nil {
		t.Fatal(err)
	}
	// A holder whose extensions found no node answering in time (a starved
	// host, not a refusal) makes the run lose its shape; it runs again with
	// twice the TTL.
	var res *Results
	for try, ttl := 1, 400*time.Millisecond; ; try, ttl = try+1, 2*ttl {
		res, err = Run(t.Context(), Config{
			NewFleet:  ClusterFleet(cluster.Options{Backend: cluster.BackendEmbedded, Nodes: 5}),
			Backend:   "embedded",
			Nodes:     5,
			Scenarios: sc,
			Impls:     Implementations(),
			Duration:  time.Second,
			TTL:       ttl,
			AttackTTL: ttl,
			Seed:      1,
			FencedSet: FencedSet,
			IsStale:   IsStaleFence,
		})
		if err != nil {
			t.Fatal(err)
		}
		var starved []string
		for _, o := range res.Scenarios[0].Outcomes {
			if strings.Contains(o.Err, errShapeLost.Error()) {
				starved = append(starved, o.Impl+": "+o.Err)
			}
		}
		if len(starved) == 0 || try == 3 {
			break
		}
		t.Logf("TTL %v: %s; again with twice the TTL", ttl, strings.Join(starved, "; "))
	}
	var b strings.Builder
	writeMarkdown(&b, res)
	if !strings.Contains(b.String(), "Roll: ") {
		t.Errorf("the report tells nothing of the roll:\n%s", b.String())
	}
	t.Logf("\n%s", b.String())
	got := map[string]Outcome{}
	for _, o := range res.Scenarios[0].Outcomes {
		got[o.Impl] = o
	}
	q, r := got["quorumlock"], got["redsync"]
	for _, o := range []Outcome{q, r} {
		if o.Err != "" || o.Skipped != "" || o.Roll == nil {
			t.Fatalf("%s: error %q, skipped %q, roll %+v", o.Impl, o.Err, o.Skipped, o.Roll)
		}
	}
	if !q.Roll.Kept || q.Roll.Restarts != rollRestarts {
		t.Errorf("quorumlock: %s", rollLine(q.Roll))
	}
	if q.Roll.ContenderWins != 0 || q.Check.Violations != 0 {
		t.Errorf("quorumlock: contenders won %d times, %d violations", q.Roll.ContenderWins, q.Check.Violations)
	}
	if q.Roll.Repaired == 0 {
		t.Errorf("quorumlock: no extension repaired an emptied node: the restarts did not take the key away")
	}
	if q.Check.Attempts < 2*rollContenders {
		t.Errorf("quorumlock: only %d attempts: the contenders did not contend", q.Check.Attempts)
	}
	if !q.Verdict.OK() {
		t.Errorf("quorumlock verdict: %s", q.Verdict)
	}
	if r.Roll.Kept {
		t.Errorf("redsync's holder kept its lock through %d restarts: the roll lost its shape", r.Roll.Restarts)
	}
	t.Logf("quorumlock: %s", rollLine(q.Roll))
	t.Logf("redsync: %s", rollLine(r.Roll))
}
