package lab

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
)

func genOpts(outside bool) GenOptions {
	ttl := 250 * ms
	return GenOptions{Nodes: 5, Clients: 4, TTL: ttl, Duration: 8 * ttl, Bounds: QuorumlockBounds(ttl), Outside: outside}
}

func TestGenerateIsAFunctionOfTheSeed(t *testing.T) {
	o := genOpts(false)
	a, b := Generate(7, o), Generate(7, o)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 7 gave two schedules:\n%s\n%s", a.Timeline(), b.Timeline())
	}
	differ := 0
	for s := uint64(1); s <= 20; s++ {
		if !reflect.DeepEqual(Generate(s, o).Faults, a.Faults) {
			differ++
		}
	}
	if differ < 19 {
		t.Errorf("only %d of 20 seeds gave a schedule other than seed 7's", differ)
	}
}

// TestGenerateInsideTheModel checks every bound of the fault model on many
// schedules, recomputing the faulty nodes independently of the generator.
func TestGenerateInsideTheModel(t *testing.T) {
	o := genOpts(false)
	kinds := map[FaultKind]int{}
	for seed := uint64(1); seed <= 500; seed++ {
		s := Generate(seed, o)
		if s.Outside {
			t.Fatalf("seed %d left the model without --outside-model:\n%s", seed, s.Timeline())
		}
		for _, f := range s.Faults {
			kinds[f.Kind]++
			if f.Outside || f.At < 0 || f.At+f.For > o.Duration+o.Duration/2 {
				t.Errorf("seed %d: %s", seed, f)
			}
			switch f.Kind {
			case ClockJump:
				small := f.Amount <= o.Bounds.Drift/2
				big := f.Amount >= 2*o.Bounds.MaxSkew && f.For >= o.TTL+o.Bounds.MaxSkew
				if !small && !big {
					t.Errorf("seed %d: %s is neither within the drift allowance nor past the skew bound for a TTL", seed, f)
				}
			case ClockRate:
				if f.Rate < 1 || f.Rate > 1.005 {
					t.Errorf("seed %d: %s runs faster than half the drift factor", seed, f)
				}
			}
		}
		// At every instant: a minority of the nodes crashed, still in
		// quarantine after losing data, or off-clock.
		for step := time.Duration(0); step < 2*o.Duration; step += o.TTL / 50 {
			bad := map[int]bool{}
			for _, f := range s.Faults {
				switch f.Kind {
				case Pause, Partition, Latency, ClientPause, Bootstrap, ColdClient:
					continue
				}
				end := f.At + f.For + f.Away
				if f.Kind.losesKeys() {
					end += o.TTL
				}
				if step >= f.At && step < end {
					for _, n := range f.Nodes {
						bad[n] = true
					}
				}
			}
			if len(bad) > 2 {
				t.Fatalf("seed %d at %v: %d nodes lost data or clock at once:\n%s", seed, step, len(bad), s.Timeline())
			}
		}
	}
	for _, k := range AllFaultKinds() {
		if kinds[k] == 0 {
			t.Errorf("500 schedules never used %s", k)
		}
	}
}

func TestGenerateOutsideTheModel(t *testing.T) {
	o := genOpts(true)
	outside := 0
	for seed := uint64(1); seed <= 200; seed++ {
		s := Generate(seed, o)
		if s.Outside != slices.ContainsFunc(s.Faults, func(f Fault) bool { return f.Outside }) {
			t.Fatalf("seed %d: Outside %v disagrees with its faults", seed, s.Outside)
		}
		if s.Outside {
			outside++
		}
	}
	if outside < 20 {
		t.Errorf("only %d of 200 schedules left the model with Outside set", outside)
	}
}

func TestScheduleWithout(t *testing.T) {
	var s Schedule
	for seed := uint64(1); len(s.Faults) < 3; seed++ {
		s = Generate(seed, genOpts(false))
	}
	ids := []int{s.Faults[0].ID, s.Faults[2].ID}
	w := s.Without(ids...)
	if len(w.Faults) != len(s.Faults)-2 || slices.ContainsFunc(w.Faults, func(f Fault) bool { return slices.Contains(ids, f.ID) }) {
		t.Fatalf("Without(%v) = %v", ids, w.Faults)
	}
	if got := w.Dropped(s); !slices.Equal(got, slices.Sorted(slices.Values(ids))) {
		t.Errorf("Dropped = %v; want %v", got, ids)
	}
	if len(s.Faults) != len(Generate(s.Seed, genOpts(false)).Faults) {
		t.Error("Without changed the schedule it was called on")
	}
}

func TestFenceInversions(t *testing.T) {
	f := func(client int, acq, until, rel time.Duration, fence uint64) Hold {
		return Hold{Client: client, Acquired: acq, Until: until, Released: rel, Fence: fence, HasFence: true}
	}
	tests := []struct {
		name  string
		holds []Hold
		want  [][2]int
	}{
		{"increasing", []Hold{f(0, 0, 100*ms, 50*ms, 1), f(1, 60*ms, 200*ms, 90*ms, 2), f(0, 100*ms, 300*ms, 0, 3)}, nil},
		{"repeated", []Hold{f(0, 0, 100*ms, 50*ms, 4), f(1, 60*ms, 200*ms, 90*ms, 4)}, [][2]int{{0, 1}}},
		{"lower after an expiry", []Hold{f(0, 0, 100*ms, 0, 5), f(1, 150*ms, 300*ms, 200*ms, 2)}, [][2]int{{0, 1}}},
		// Concurrent holds (an overlap, counted elsewhere) are not ordered.
		{"concurrent", []Hold{f(0, 0, 100*ms, 80*ms, 5), f(1, 50*ms, 300*ms, 200*ms, 2)}, nil},
		// A lock returned expired orders nothing.
		{"expired at return", []Hold{f(0, 90*ms, 80*ms, 95*ms, 9), f(1, 100*ms, 300*ms, 200*ms, 2)}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			idx := make([]int, len(tt.holds))
			for i := range idx {
				idx[i] = i
			}
			if got := fenceInversions(tt.holds, idx); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("inversions = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestStaleWrites(t *testing.T) {
	// Hold 0 ends at 100ms; hold 1 begins at 150ms. Hold 1's write lands
	// first, then hold 0's: stale, whatever the tokens say.
	h := History{
		Holds: []Hold{{Client: 0, Key: keyFenced, Acquired: 0, Until: 100 * ms, Released: 300 * ms, Fence: 9, HasFence: true},
			{Client: 1, Key: keyFenced, Acquired: 150 * ms, Until: 400 * ms, Released: 250 * ms, Fence: 3, HasFence: true}},
		Writes: []Write{
			{Client: 1, Key: keyFenced, Hold: 1, At: 200 * ms, Accepted: true, HasFence: true, Fence: 3},
			{Client: 0, Key: keyFenced, Hold: 0, At: 300 * ms, Accepted: true, HasFence: true, Fence: 9},
		},
	}
	if got := staleWrites(h, keyFenced); !slices.Equal(got, []int{1}) {
		t.Errorf("stale = %v; want [1]", got)
	}
	// Refused, it is not stale; in the other order it is merely late.
	h.Writes[1].Accepted, h.Writes[1].Rejected = false, true
	if got := staleWrites(h, keyFenced); len(got) != 0 {
		t.Errorf("a refused write counted as stale: %v", got)
	}
	h.Writes[1].Accepted, h.Writes[1].Rejected, h.Writes[1].At = true, false, 120*ms
	if got := staleWrites(h, keyFenced); len(got) != 0 {
		t.Errorf("a write before the newer holder's counted as stale: %v", got)
	}
}

func TestCounterLinearizability(t *testing.T) {
	inc := func(client int, start, at time.Duration, wrote int64, accepted, late bool) Write {
		return Write{Client: client, Key: keyCounter, Start: start, At: at, Value: wrote, Accepted: accepted, Late: late}
	}
	tests := []struct {
		name   string
		writes []Write
		final  int64
		want   string
		lost   int
		viol   bool
	}{
		{"sequential", []Write{inc(0, 0, 10*ms, 1, true, false), inc(1, 20*ms, 30*ms, 2, true, false)}, 2, "ok", 0, false},
		{"lost update", []Write{inc(0, 0, 30*ms, 1, true, false), inc(1, 10*ms, 40*ms, 1, true, false)}, 1, "illegal", 1, true},
		{"unknown outcome either way", []Write{inc(0, 0, 10*ms, 1, false, false), inc(1, 20*ms, 30*ms, 1, true, false)}, 1, "ok", 0, false},
		// A write acknowledged past its lock's validity explains the loss:
		// reported, not a violation of the lock.
		{"late write", []Write{inc(0, 0, 300*ms, 1, true, true), inc(1, 10*ms, 40*ms, 1, true, false)}, 1, "illegal", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var x Exploration
			checkCounter(&x, History{Writes: tt.writes, HasCounter: true, FinalCounter: tt.final, Duration: time.Second})
			if x.Linearizable != tt.want || x.LostUpdates != tt.lost {
				t.Errorf("linearizable %q, lost %d; want %q, %d", x.Linearizable, x.LostUpdates, tt.want, tt.lost)
			}
			if got := len(x.Violations()) > 0; got != tt.viol {
				t.Errorf("violations %v; want some: %v", x.Violations(), tt.viol)
			}
		})
	}
}

func TestLossyRestartsNeedRunIDs(t *testing.T) {
	o := genOpts(false)
	o.Kinds, o.NoRunIDs = []FaultKind{CrashLossy, Pause}, true
	for seed := uint64(1); seed <= 50; seed++ {
		if s := Generate(seed, o); slices.ContainsFunc(s.Faults, func(f Fault) bool { return f.Kind == CrashLossy }) {
			t.Fatalf("seed %d: a lossy restart inside the model on nodes without run ids:\n%s", seed, s.Timeline())
		}
	}
	o.Outside = true
	found := false
	for seed := uint64(1); seed <= 50 && !found; seed++ {
		s := Generate(seed, o)
		for _, f := range s.Faults {
			if f.Kind == CrashLossy {
				found = true
				if !f.Outside || !s.Outside {
					t.Errorf("seed %d: %s not marked outside the model", seed, f)
				}
			}
		}
	}
	if !found {
		t.Error("no lossy restart in 50 schedules allowed outside the model")
	}
}

// fencelessImpl wraps quorumlock and hands out the same fence token for
// every lock: the checkers must notice.
func fencelessImpl() Impl {
	q := Quorumlock()
	inner := q.New
	q.Name = "repeating-fence"
	q.New = func(nodes []redis.UniversalClient, cfg LockConfig) (Locker, error) {
		l, err := inner(nodes, cfg)
		return repeatLocker{l}, err
	}
	return q
}

type repeatLocker struct{ Locker }

func (l repeatLocker) Acquire(ctx context.Context, key string) (Held, error) {
	h, err := l.Locker.Acquire(ctx, key)
	if err != nil {
		return nil, err
	}
	return repeatHeld{h}, nil
}

type repeatHeld struct{ Held }

func (repeatHeld) Fence() (uint64, bool) { return 7, true }

func testExploreConfig(impls ...Impl) ExploreConfig {
	ttl := 250 * ms
	return ExploreConfig{
		NewFleet: ClusterFleet(cluster.Options{Backend: cluster.BackendEmbedded, Nodes: 5}),
		Backend:  "embedded",
		NoRunIDs: true,
		Nodes:    5, Clients: 3, TTL: ttl, Duration: 6 * ttl,
		Impls: impls, Bounds: QuorumlockBounds(ttl),
		FirstSeed: 1, Seeds: 2, MaxFaults: 2,
		FencedSet: FencedSet, IsStale: IsStaleFence,
	}
}

// TestExploreRunsEverySeedWithEveryImpl checks the exploration's plumbing:
// every seed runs with every implementation, in order, and the results
// summarise and marshal. It asserts nothing a busy host can take away: a
// run the host starved of locks is still a run; only a run that recorded
// no attempt at all, while the process was not stalled for most of it,
// means the workload did not run.
func TestExploreRunsEverySeedWithEveryImpl(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two schedules")
	}
	cfg := testExploreConfig(Quorumlock(), Redsync())
	var seen []uint64
	cfg.Progress = func(r SeedResult) { seen = append(seen, r.Schedule.Seed) }
	res, err := Explore(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seen, []uint64{1, 2}) || len(res.Seeds) != 2 {
		t.Fatalf("progress heard seeds %v, results hold %d", seen, len(res.Seeds))
	}
	for _, s := range res.Seeds {
		t.Log(SeedLine(s))
		if len(s.Runs) != 2 || s.Runs[0].Impl != "quorumlock" || s.Runs[1].Impl != "redsync" {
			t.Fatalf("seed %d runs = %+v", s.Schedule.Seed, s.Runs)
		}
		for _, run := range s.Runs {
			for _, e := range run.Errors {
				t.Errorf("seed %d, %s: fault error: %s", s.Schedule.Seed, run.Impl, e)
			}
			if run.Elapsed < cfg.Duration {
				t.Errorf("seed %d, %s: ran %v of its %v", s.Schedule.Seed, run.Impl, run.Elapsed, cfg.Duration)
			}
			var stalled time.Duration
			for _, st := range run.History.Stalls {
				stalled += st.End - st.Start
			}
			if run.Check.Attempts == 0 && stalled < cfg.Duration/2 {
				t.Errorf("seed %d, %s: no attempt recorded in %v (stalled %v)", s.Schedule.Seed, run.Impl, cfg.Duration, stalled)
			}
		}
		if v := s.Runs[0].Check.Violations(); len(v) > 0 && !s.Schedule.Outside {
			t.Errorf("seed %d: quorumlock violated inside the model: %v", s.Schedule.Seed, v)
		}
	}
	var b strings.Builder
	if err := ExploreSummary(&b, res); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "quorumlock") || !strings.Contains(b.String(), "restart-lossy") {
		t.Errorf("summary:\n%s", b.String())
	}
	if _, err := json.Marshal(res); err != nil {
		t.Fatal(err)
	}
}

// TestExploreUnfencedSeedsGrant: odd seeds run the locks unfenced, so that
// their histories hold locks a release granted to the queue's head, which
// the checkers then judge. A run the host starved of locks runs again; the
// property is that the explorer reaches the grant at all.
func TestExploreUnfencedSeedsGrant(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a schedule")
	}
	cfg := testExploreConfig(Quorumlock())
	if s := Generate(1, cfg.genOptions()); !s.Unfenced || Generate(2, cfg.genOptions()).Unfenced {
		t.Fatal("seed 1 must run unfenced and seed 2 fenced")
	}
	var runs []ImplRun
	for try := 0; try < 3; try++ {
		r := ExploreSeed(t.Context(), &cfg, 1)
		run := r.Runs[0]
		runs = append(runs, run)
		if v := run.Check.Violations(); len(v) > 0 && !r.Schedule.Outside {
			t.Fatalf("quorumlock violated inside the model, unfenced: %v\n%s", v, r.Schedule.Timeline())
		}
		if run.Granted > 0 {
			t.Logf("%d of %d acquisitions granted by a release", run.Granted, run.Check.Acquisitions)
			return
		}
	}
	for _, run := range runs {
		t.Logf("run: %d acquisitions, %d attempts, granted %d", run.Check.Acquisitions, run.Check.Attempts, run.Granted)
	}
	t.Fatal("no release granted a lock in three runs of an unfenced schedule")
}

// TestExploreFindsAPlantedDefect runs an implementation that repeats its
// fence tokens: every seed must fail, be shrunk, and get a report.
func TestExploreFindsAPlantedDefect(t *testing.T) {
	if testing.Short() {
		t.Skip("runs and shrinks a schedule")
	}
	var r SeedResult
	// A host too busy for the TTL starves the run of every lock: the setup
	// lost its shape, and runs again with a longer TTL.
	for ttl := 250 * ms; ; ttl *= 2 {
		cfg := testExploreConfig(fencelessImpl())
		cfg.TTL, cfg.Duration, cfg.Bounds = ttl, 6*ttl, QuorumlockBounds(ttl)
		cfg.Seeds, cfg.Shrink, cfg.ShrinkRuns = 1, true, 1
		res, err := Explore(t.Context(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		r = res.Seeds[0]
		if !r.Starved || ttl >= 2*time.Second {
			break
		}
		t.Logf("TTL %v: %s; trying a longer TTL", ttl, SeedLine(r))
	}
	if !r.Failed() || len(r.Runs[0].Check.FenceInversions) == 0 {
		t.Fatalf("repeated fence tokens went unnoticed: %s", SeedLine(r))
	}
	// The defect needs no fault at all: shrinking drops every one.
	if r.Shrunk == nil || len(r.Shrunk.Faults) != 0 {
		t.Errorf("shrunk schedule = %+v; want no fault left", r.Shrunk)
	}
	dir, err := WriteSeedReport(t.TempDir(), r, "replay-command")
	if err != nil {
		t.Fatal(err)
	}
	txt, err := os.ReadFile(filepath.Join(dir, "timeline.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"FENCE NOT INCREASING", "replay: replay-command", "shrunk"} {
		if !strings.Contains(string(txt), want) {
			t.Errorf("timeline.txt lacks %q:\n%s", want, txt)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "timeline.svg")); err != nil {
		t.Error(err)
	}
}

func TestStarved(t *testing.T) {
	run := func(acq int, errs ...string) ImplRun {
		return ImplRun{Check: Exploration{Acquisitions: acq}, Errors: errs}
	}
	tests := []struct {
		runs []ImplRun
		want bool
	}{
		{[]ImplRun{run(starvedAcquisitions - 1), run(40)}, true},
		{[]ImplRun{run(starvedAcquisitions), run(0)}, false},      // only the implementation under test counts
		{[]ImplRun{run(0, "prepare quorumlock: refused")}, false}, // broken, not starved: it says why
		{nil, false},
	}
	for i, tt := range tests {
		if got := starved(tt.runs); got != tt.want {
			t.Errorf("case %d: starved = %v; want %v", i, got, tt.want)
		}
	}
}

func TestExpiredAtReturnAndHostStalls(t *testing.T) {
	h := History{Holds: []Hold{
		{Client: 0, Start: 0, Acquired: 300 * ms, Until: 250 * ms},        // 50ms late, no stall: a violation
		{Client: 1, Start: 400 * ms, Acquired: 700 * ms, Until: 680 * ms}, // 20ms late inside a 30ms stall
		{Client: 2, Start: 800 * ms, Acquired: 900 * ms, Until: 950 * ms}, // in time
	}, Stalls: []FaultSpan{{Start: 650 * ms, End: 680 * ms}}}
	x := checkExploration(h, Schedule{})
	if !slices.Equal(x.Expired, []int{0}) || !slices.Equal(x.ExpiredStalled, []int{1}) {
		t.Errorf("expired %v, stalled %v; want [0] and [1]", x.Expired, x.ExpiredStalled)
	}
	if len(x.Violations()) != 1 {
		t.Errorf("violations = %v; want the one expired lock", x.Violations())
	}
}
