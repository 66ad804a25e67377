package lab

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/redlock"
)

// TestScenariosEmbedded runs every scenario briefly with both
// implementations on embedded nodes and holds quorumlock to the scenarios'
// expectations.
func TestScenariosEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every scenario")
	}
	// rolling-restart runs 20 attack TTLs per implementation: it has a test
	// of its own, with a shorter TTL.
	scenarios := slices.DeleteFunc(Scenarios(), func(s Scenario) bool { return s.Name == "rolling-restart" })
	cfg := Config{
		NewFleet:  ClusterFleet(cluster.Options{Backend: cluster.BackendEmbedded, Nodes: 5}),
		Backend:   "embedded",
		Nodes:     5,
		Scenarios: scenarios,
		Impls:     Implementations(),
		Duration:  time.Second,
		// Margin for a loaded host: a client stalled past its validity
		// between reading and writing the counter is a real lost update.
		TTL:       400 * time.Millisecond,
		AttackTTL: time.Second,
		Seed:      1,
		FencedSet: FencedSet,
		IsStale:   IsStaleFence,
	}
	res, err := Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	WriteTable(&b, res)
	t.Logf("\n%s", b.String())
	if len(res.Scenarios) != len(scenarios) {
		t.Fatalf("%d scenario results; want %d", len(res.Scenarios), len(scenarios))
	}
	for _, s := range res.Scenarios {
		for _, o := range s.Outcomes {
			if o.Err != "" {
				t.Errorf("%s/%s broke off: %s", s.Name, o.Impl, o.Err)
			}
			if o.Skipped == "" && o.Elapsed == 0 {
				t.Errorf("%s/%s: no elapsed time recorded", s.Name, o.Impl)
			}
			if o.Skipped == "" && o.Check.Attempts == 0 && o.Check.Bids == 0 {
				t.Errorf("%s/%s did nothing", s.Name, o.Impl)
			}
		}
	}
	// The attack scenarios exist to show redsync's unsafety; on embedded
	// nodes the attack is deterministic enough to insist on it.
	for _, s := range res.Scenarios {
		for _, o := range s.Outcomes {
			if o.Impl == "redsync" && o.Expected.Violations == Expected && o.Check.Violations == 0 {
				t.Errorf("%s: redsync showed no violation; the attack did not work", s.Name)
			}
		}
		// Same seed, same schedule: every implementation meets the same
		// faults on the same nodes.
		var first []FaultSpan
		for i, o := range s.Outcomes {
			if o.Skipped != "" || o.Impl == variantNoLock || o.Impl == variantOptimistic {
				continue
			}
			if i == 0 {
				first = o.History.Faults
				continue
			}
			if !sameFaults(first, o.History.Faults) {
				t.Errorf("%s: %s met faults %+v, the first implementation %+v", s.Name, o.Impl, o.History.Faults, first)
			}
		}
	}
	if f := res.Failures("quorumlock"); len(f) > 0 {
		t.Errorf("quorumlock failed: %q", f)
	}
	if err := WriteReport(t.TempDir(), res); err != nil {
		t.Fatal(err)
	}
}

// TestExternalSkipsProcessFaults runs on servers the lab does not own: the
// network faults run through the proxies, the process faults are skipped
// with the cluster's reason.
func TestExternalSkipsProcessFaults(t *testing.T) {
	var urls []string
	for range 3 {
		urls = append(urls, "redis://"+miniredis.RunT(t).Addr())
	}
	sc, err := SelectScenarios([]string{"partition-minority", "kill-minority", "restart-now"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), Config{
		NewFleet:  ClusterFleet(cluster.Options{Backend: cluster.BackendExternal, URLs: urls}),
		Scenarios: sc, Impls: []Impl{Redsync()},
		Duration: 500 * time.Millisecond, TTL: 200 * time.Millisecond, AttackTTL: 500 * time.Millisecond, Seed: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Outcome{}
	for _, s := range res.Scenarios {
		got[s.Name] = s.Outcomes[0]
	}
	if o := got["partition-minority"]; o.Skipped != "" || o.Err != "" || o.Check.Acquisitions == 0 {
		t.Errorf("partition-minority = %+v", o)
	}
	for _, name := range []string{"kill-minority", "restart-now"} {
		if o := got[name]; !strings.Contains(o.Skipped, "not supported") {
			t.Errorf("%s: skipped %q, error %q; want a skip for an unsupported fault", name, o.Skipped, o.Err)
		}
	}
}

func sameFaults(a, b []FaultSpan) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || !slices.Equal(a[i].Nodes, b[i].Nodes) {
			return false
		}
	}
	return true
}

func TestPickIsSeededAndDistinct(t *testing.T) {
	for seed := range uint64(20) {
		a := pick(rand.New(rand.NewPCG(seed, 7)), 5, -1)
		b := pick(rand.New(rand.NewPCG(seed, 7)), 5, -1)
		if !slices.Equal(a, b) {
			t.Fatalf("seed %d: %v then %v", seed, a, b)
		}
		if len(a) != 2 || a[0] == a[1] || a[0] < 0 || a[1] > 4 {
			t.Fatalf("seed %d: minority of 5 = %v", seed, a)
		}
	}
	if got := pick(rand.New(rand.NewPCG(1, 1)), 7, 1); len(got) != 1 {
		t.Errorf("one node of 7 = %v", got)
	}
}

// TestAttacksCatchQuorumlockWithoutItsGuards shows the attacks are not
// vacuous for quorumlock: with the restart quarantine and the clock-skew
// guard turned off, it fails them like redsync.
func TestAttacksCatchQuorumlockWithoutItsGuards(t *testing.T) {
	bare := Quorumlock()
	bare.Name = "quorumlock-unguarded"
	bare.New = func(nodes []redis.UniversalClient, cfg LockConfig) (Locker, error) {
		c, err := redlock.New(nodes, redlock.WithTTL(cfg.TTL), redlock.WithQuarantine(0), redlock.WithMaxSkew(0))
		if err != nil {
			return nil, err
		}
		return quorumlockLocker{c, &ttlMix{ttl: cfg.TTL}}, nil
	}
	sc, err := SelectScenarios([]string{"restart-now", "clock-jump"})
	if err != nil {
		t.Fatal(err)
	}
	res, err := Run(t.Context(), Config{
		NewFleet:  ClusterFleet(cluster.Options{Backend: cluster.BackendEmbedded, Nodes: 5}),
		Scenarios: sc, Impls: []Impl{bare},
		Duration: time.Second, TTL: 250 * time.Millisecond, AttackTTL: time.Second, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Scenarios {
		o := s.Outcomes[0]
		if o.Err != "" || o.Check.Violations == 0 {
			t.Errorf("%s: unguarded quorumlock showed no violation (error %q, check %+v)", s.Name, o.Err, o.Check)
		}
	}
}
