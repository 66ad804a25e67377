package lab

import (
	"strings"
	"testing"
	"time"

	"github.com/quorumlock/quorumlock/cluster"
)

// TestScenariosEmbedded runs every scenario briefly with both
// implementations on embedded nodes and holds quorumlock to the scenarios'
// expectations.
func TestScenariosEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("runs every scenario")
	}
	cfg := Config{
		NewFleet:  ClusterFleet(cluster.Options{Backend: cluster.BackendEmbedded, Nodes: 5}),
		Backend:   "embedded",
		Nodes:     5,
		Scenarios: Scenarios(),
		Impls:     Implementations(),
		Duration:  time.Second,
		TTL:       250 * time.Millisecond,
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
	if len(res.Scenarios) != len(Scenarios()) {
		t.Fatalf("%d scenario results; want %d", len(res.Scenarios), len(Scenarios()))
	}
	for _, s := range res.Scenarios {
		for _, o := range s.Outcomes {
			if o.Err != "" {
				t.Errorf("%s/%s broke off: %s", s.Name, o.Impl, o.Err)
			}
			if o.Skipped == "" && o.Check.Attempts == 0 && o.Check.Bids == 0 {
				t.Errorf("%s/%s did nothing", s.Name, o.Impl)
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
