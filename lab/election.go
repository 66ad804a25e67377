package lab

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/redlock"
)

// The election workload: K candidates, each with a client of its own (its
// own view of the nodes: own proxies, own connections), contend for the
// leadership of one election. While it leads, a candidate writes its term's
// fence to the storage node through redlock.FencedSet every few
// milliseconds. Every candidate lives in this process, so the start and end
// of every term and every write are on one monotonic clock.
//
// Two implementations take part: quorumlock's Election.Run, and the common
// redsync pattern (lock a redsync Mutex, extend it every TTL/3, stop leading
// at the first failed extension, take as fence a counter incremented on the
// storage at the start of the term).

// Election implementation names.
const (
	ElectionQuorumlock = "quorumlock"
	ElectionRedsync    = "redsync"
)

// ElectionImpls are the implementations the election workload compares.
func ElectionImpls() []string { return []string{ElectionQuorumlock, ElectionRedsync} }

const (
	electionKey      = "lab:election"
	electionDataKey  = "lab:election:data"
	electionTermKey  = "lab:election:term" // the redsync pattern's term counter
	electionWriteGap = 5 * time.Millisecond
)

// ElectionConfig configures RunElection.
type ElectionConfig struct {
	// NewFleet starts fresh lock nodes for one run (ClusterFleet); the run
	// closes them.
	NewFleet func(ctx context.Context, spec FleetSpec) (Fleet, error)
	// Backend and Nodes describe the fleet in the results.
	Backend string
	Nodes   int

	Scenarios []ElectionScenario
	Impls     []string // ElectionQuorumlock, ElectionRedsync
	// Candidates is how many processes contend; 0 means 3.
	Candidates int
	Duration   time.Duration // per scenario and implementation
	TTL        time.Duration
	Seed       uint64

	// Logf, when set, hears when each run starts and ends.
	Logf func(format string, args ...any)
}

// ElectionScenario is a fault schedule for the election workload.
type ElectionScenario struct {
	Name        string
	Title       string
	Description string
	drive       func(ctx context.Context, r *electionRun) error
}

// ElectionScenarios returns the election's scenarios in the order the
// table shows them.
func ElectionScenarios() []ElectionScenario {
	return []ElectionScenario{
		{Name: "leader-pause", Title: "the leader's process pauses past its validity",
			Description: "Every few TTLs the current leader freezes (its writer stops between deciding to write and writing; " +
				"its connections to every node are cut, so nothing of it reaches the nodes) until another term has written, " +
				"then it resumes and makes the write it was about to make, with its old fence.",
			drive: driveLeaderPause},
		{Name: "leader-partition", Title: "the leader is cut off from a majority",
			Description: "Every few TTLs the current leader's network to a majority of the nodes (chosen by the seed) is cut " +
				"until another candidate has started a term, then healed.",
			drive: driveLeaderPartition},
		{Name: "rolling-restart", Title: "every node is killed and restarted empty, one after the other",
			Description: "Node 0, 1, … are killed and restarted at once without data, evenly spaced over the run.",
			drive:       driveRollingRestart},
		{Name: "slow-node", Title: "one slow node",
			Description: "One node (chosen by the seed) answers a tenth of the TTL late, with jitter, from 20% to 80% of the run.",
			drive:       driveSlowNode},
	}
}

// SelectElectionScenarios picks election scenarios by name, in the order
// given; "all" or no names select every one.
func SelectElectionScenarios(names []string) ([]ElectionScenario, error) {
	all := ElectionScenarios()
	if len(names) == 0 || slices.Contains(names, "all") {
		return all, nil
	}
	var out []ElectionScenario
	for _, n := range names {
		i := slices.IndexFunc(all, func(s ElectionScenario) bool { return s.Name == n })
		if i < 0 {
			var known []string
			for _, s := range all {
				known = append(known, s.Name)
			}
			return nil, fmt.Errorf("lab: unknown election scenario %q (known: %s)", n, strings.Join(known, ", "))
		}
		out = append(out, all[i])
	}
	return out, nil
}

// ElectionResults is what RunElection found.
type ElectionResults struct {
	Backend    string
	Nodes      int
	Candidates int
	TTL        time.Duration
	Duration   time.Duration
	Seed       uint64
	Runs       []ElectionOutcome
	Elapsed    time.Duration
}

// ElectionOutcome is one scenario with one implementation.
type ElectionOutcome struct {
	Scenario string
	Impl     string
	Check    ElectionCheck
	History  ElectionHistory `json:"-"`
	Err      string          `json:",omitempty"`
	Skipped  string          `json:",omitempty"`
}

// Unsafe reports whether the outcome shows two leaders at once: terms that
// overlap, or a store that accepted a write of an earlier term after a
// later term's.
func (o ElectionOutcome) Unsafe() bool { return o.Check.Overlaps > 0 || o.Check.StaleAccepted > 0 }

// ElectionTerm is one term of one candidate. Times are offsets from the
// start of the run on the process's monotonic clock.
type ElectionTerm struct {
	Candidate int
	Fence     uint64
	Start     time.Duration // the candidate started to lead
	// End is when the term ended locally: for quorumlock, when Term.Done
	// fired or, if earlier, at the validity deadline of the term's lock
	// (Term.Done fires on a timer at that deadline: on a busy host the
	// timer runs late, and the deadline is the end the library promises);
	// for the redsync pattern, at the first failed extension, as the
	// pattern knows no other end.
	End   time.Duration
	Ended bool
	// Observed is when the leader's process saw the term end.
	Observed time.Duration
	// Gone is when a fault hit this term's leader (0: none did).
	Gone time.Duration
	// RunEnd is true when the term was ended by the end of the run.
	RunEnd bool
}

// ElectionWrite is one write of a leader to the store, in the order the
// store applied them.
type ElectionWrite struct {
	Candidate int
	Term      int // index in ElectionHistory.Terms
	Fence     uint64
	Issued    time.Duration
	At        time.Duration
	Late      bool // issued after its term had ended (a paused leader resuming) or its validity had passed
	Accepted  bool
	Refused   bool // the fencing check refused a stale fence
}

// ElectionHistory is what one election run recorded.
type ElectionHistory struct {
	Duration time.Duration
	Terms    []ElectionTerm
	Writes   []ElectionWrite
	Faults   []FaultSpan
}

// ElectionCheck is what the checkers found in one ElectionHistory.
type ElectionCheck struct {
	Terms int
	// Overlaps counts pairs of terms of which both were in force at one
	// instant, as their leaders saw them; OverlapTime sums how long.
	Overlaps    int
	OverlapTime time.Duration
	// StaleAccepted counts writes the store accepted from a term after it
	// had accepted a write of a term that started later; StaleTerms how
	// many terms such writes came from.
	StaleAccepted int
	StaleTerms    int
	// StaleOffered counts the writes, accepted or refused, that a term sent
	// after the store had accepted a write of a term that started later:
	// what a store without the fencing check would have accepted.
	StaleOffered int
	Refused      int // writes the fencing check refused
	// FenceInversions counts terms whose fence is not larger than that of
	// the term started before them.
	FenceInversions int
	Writes          int
	Accepted        int
	// LateWrites were issued after the writer's term had ended (paused
	// leaders); LateRefused of them the store refused.
	LateWrites  int
	LateRefused int
	// Failovers are, for each term that ended before the run did, the time
	// from its leader's loss (a fault on the leader, or the term's end,
	// whichever came first) to the start of the next term.
	Failovers []time.Duration
	// Unresolved counts leaders lost with no next term before the run ended.
	Unresolved int
	// FailoverP50 and FailoverP99 are percentiles of Failovers as multiples
	// of the TTL; 0 without failovers.
	FailoverP50, FailoverP99 float64
}

// CheckElection runs the election's checkers on h.
func CheckElection(h ElectionHistory, ttl time.Duration) ElectionCheck {
	c := ElectionCheck{Terms: len(h.Terms), Writes: len(h.Writes)}
	end := func(t ElectionTerm) time.Duration {
		if t.Ended {
			return t.End
		}
		return h.Duration
	}
	for i, a := range h.Terms {
		for _, b := range h.Terms[i+1:] {
			lo, hi := max(a.Start, b.Start), min(end(a), end(b))
			if lo < hi {
				c.Overlaps++
				c.OverlapTime += hi - lo
			}
		}
	}
	order := make([]int, len(h.Terms)) // term indexes by start
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return int(h.Terms[a].Start - h.Terms[b].Start) })
	for k := 1; k < len(order); k++ {
		if h.Terms[order[k]].Fence <= h.Terms[order[k-1]].Fence {
			c.FenceInversions++
		}
	}

	// Writes are in the store's order: a write accepted from a term that
	// started before the latest term the store already took a write from
	// is a stale term accepted.
	latest := -1
	stale := map[int]bool{}
	for _, w := range h.Writes {
		if w.Late {
			c.LateWrites++
			if w.Refused {
				c.LateRefused++
			}
		}
		if w.Refused {
			c.Refused++
		}
		older := latest >= 0 && h.Terms[w.Term].Start < h.Terms[latest].Start
		if older {
			c.StaleOffered++
		}
		if !w.Accepted {
			continue
		}
		c.Accepted++
		if older {
			c.StaleAccepted++
			stale[w.Term] = true
		} else {
			latest = w.Term
		}
	}
	c.StaleTerms = len(stale)

	for k, i := range order {
		t := h.Terms[i]
		if !t.Ended || t.RunEnd {
			continue
		}
		gone := t.End
		if t.Gone > 0 && t.Gone < gone {
			gone = t.Gone
		}
		if k+1 >= len(order) {
			c.Unresolved++
			continue
		}
		c.Failovers = append(c.Failovers, max(0, h.Terms[order[k+1]].Start-gone))
	}
	if len(c.Failovers) > 0 && ttl > 0 {
		s := slices.Clone(c.Failovers)
		slices.Sort(s)
		c.FailoverP50 = float64(percentile(s, 0.50)) / float64(ttl)
		c.FailoverP99 = float64(percentile(s, 0.99)) / float64(ttl)
	}
	return c
}

// percentile is the nearest-rank percentile of sorted s.
func percentile(s []time.Duration, p float64) time.Duration {
	i := int(float64(len(s))*p+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// electionRecorder records terms and writes on one monotonic clock.
type electionRecorder struct {
	start   time.Time
	mu      sync.Mutex
	h       ElectionHistory
	storeMu sync.Mutex // orders the store's writes: the recorded order is the store's
}

func (r *electionRecorder) now() time.Duration { return time.Since(r.start) }

func (r *electionRecorder) termStarted(candidate int, fence uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Terms = append(r.h.Terms, ElectionTerm{Candidate: candidate, Fence: fence, Start: r.now()})
	return len(r.h.Terms) - 1
}

// termEnded records the end of term i, seen now; until, when not zero,
// is the term's validity deadline.
func (r *electionRecorder) termEnded(i int, runEnd bool, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := &r.h.Terms[i]; !t.Ended {
		t.Observed, t.Ended, t.RunEnd = r.now(), true, runEnd
		t.End = t.Observed
		if !until.IsZero() {
			t.End = min(t.End, until.Sub(r.start))
		}
	}
}

// late reports whether a write of term i issued now comes after the term's
// end: its leader saw it end, or its validity deadline passed.
func (r *electionRecorder) late(i int, until func() time.Time) bool {
	r.mu.Lock()
	ended := r.h.Terms[i].Ended
	r.mu.Unlock()
	return ended || (until != nil && !time.Now().Before(until()))
}

// lost notes that a fault hit the leader of term i at.
func (r *electionRecorder) lost(i int, at time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := &r.h.Terms[i]; t.Gone == 0 {
		t.Gone = at
	}
}

func (r *electionRecorder) fault(f FaultSpan) {
	r.mu.Lock()
	r.h.Faults = append(r.h.Faults, f)
	r.mu.Unlock()
}

// leader returns the candidate of the latest term still in force and that
// term, if any.
func (r *electionRecorder) leader() (candidate, term int, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.h.Terms) - 1; i >= 0; i-- {
		if !r.h.Terms[i].Ended {
			return r.h.Terms[i].Candidate, i, true
		}
	}
	return 0, 0, false
}

// startedAfter reports whether a term started after at; with written, one
// whose write the store accepted.
func (r *electionRecorder) startedAfter(at time.Duration, written bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !written {
		return slices.ContainsFunc(r.h.Terms, func(t ElectionTerm) bool { return t.Start > at })
	}
	return slices.ContainsFunc(r.h.Writes, func(w ElectionWrite) bool { return w.Accepted && r.h.Terms[w.Term].Start > at })
}

// store runs one write and records it.
func (r *electionRecorder) store(w ElectionWrite, do func() StoreResult) {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	res := do()
	w.At = r.now()
	w.Accepted, w.Refused = res == StoreAccepted, res == StoreRefused
	r.mu.Lock()
	r.h.Writes = append(r.h.Writes, w)
	r.mu.Unlock()
}

func (r *electionRecorder) finish() ElectionHistory {
	r.mu.Lock()
	defer r.mu.Unlock()
	h := r.h
	h.Duration = r.now()
	h.Terms = slices.Clone(h.Terms)
	h.Writes = slices.Clone(h.Writes)
	h.Faults = slices.Clone(h.Faults)
	return h
}

// electionRun is one scenario with one implementation.
type electionRun struct {
	impl    string
	fleet   Fleet
	store   *redis.Client
	rec     *electionRecorder
	rng     *rand.Rand
	ttl     time.Duration
	cands   []*candidate
	seedVal uint64
}

// candidate is one contending process.
type candidate struct {
	i     int
	view  View
	nodes []redis.UniversalClient

	mu    sync.Mutex
	pause chan struct{} // non-nil while the process is frozen; closed on resume
}

func (c *candidate) paused() chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pause
}

func (c *candidate) setPause(p chan struct{}) {
	c.mu.Lock()
	c.pause = p
	c.mu.Unlock()
}

// RunElection runs every election scenario with every implementation, one
// after the other, each on fresh nodes and a fresh store. It returns what
// it has when ctx ends, with ctx's error.
func RunElection(ctx context.Context, cfg ElectionConfig) (*ElectionResults, error) {
	if cfg.NewFleet == nil {
		return nil, errors.New("lab: no fleet")
	}
	if cfg.Duration <= 0 || cfg.TTL <= 0 {
		return nil, fmt.Errorf("lab: duration %v and TTL %v must be positive", cfg.Duration, cfg.TTL)
	}
	if cfg.Candidates == 0 {
		cfg.Candidates = 3
	}
	if cfg.Candidates < 2 {
		return nil, fmt.Errorf("lab: %d candidates: an election needs at least 2", cfg.Candidates)
	}
	for _, impl := range cfg.Impls {
		if !slices.Contains(ElectionImpls(), impl) {
			return nil, fmt.Errorf("lab: unknown election implementation %q (known: %s)", impl, strings.Join(ElectionImpls(), ", "))
		}
	}
	res := &ElectionResults{Backend: cfg.Backend, Nodes: cfg.Nodes, Candidates: cfg.Candidates, TTL: cfg.TTL,
		Duration: cfg.Duration, Seed: cfg.Seed}
	start := time.Now()
	defer func() { res.Elapsed = time.Since(start) }()
	for _, sc := range cfg.Scenarios {
		for _, impl := range cfg.Impls {
			if err := ctx.Err(); err != nil {
				return res, err
			}
			if cfg.Logf != nil {
				cfg.Logf("election %s / %s …", sc.Name, impl)
			}
			o := runElectionOne(ctx, &cfg, sc, impl)
			if cfg.Logf != nil {
				cfg.Logf("election %s / %s: %d terms, %d overlaps, %d stale accepted%s", sc.Name, impl,
					o.Check.Terms, o.Check.Overlaps, o.Check.StaleAccepted, errSuffix(o))
			}
			res.Runs = append(res.Runs, o)
		}
	}
	return res, ctx.Err()
}

func errSuffix(o ElectionOutcome) string {
	switch {
	case o.Err != "":
		return " (error: " + o.Err + ")"
	case o.Skipped != "":
		return " (skipped: " + o.Skipped + ")"
	}
	return ""
}

func runElectionOne(ctx context.Context, cfg *ElectionConfig, sc ElectionScenario, impl string) (o ElectionOutcome) {
	o = ElectionOutcome{Scenario: sc.Name, Impl: impl}
	err := runElectionFresh(ctx, cfg, sc, impl, &o)
	switch {
	case errors.Is(err, ErrUnsupported):
		o.Skipped = err.Error()
	case err != nil:
		o.Err = err.Error()
	}
	return o
}

func runElectionFresh(ctx context.Context, cfg *ElectionConfig, sc ElectionScenario, impl string, o *ElectionOutcome) error {
	fleet, err := cfg.NewFleet(ctx, FleetSpec{})
	if err != nil {
		return err
	}
	defer fleet.Close()
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr("127.0.0.1:0"); err != nil {
		return fmt.Errorf("lab: storage: %w", err)
	}
	defer m.Close()
	store := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1})
	defer store.Close()

	if impl == ElectionQuorumlock {
		// Fresh nodes: without Bootstrap each would serve a quarantine of
		// one TTL before its first vote.
		if err := Quorumlock().Prepare(ctx, fleet.Clients(), LockConfig{TTL: cfg.TTL}); err != nil {
			return fmt.Errorf("prepare %s: %w", impl, err)
		}
	}
	r := &electionRun{impl: impl, fleet: fleet, store: store, ttl: cfg.TTL, seedVal: cfg.Seed,
		rng: rand.New(rand.NewPCG(cfg.Seed, nameSeed(sc.Name))), rec: &electionRecorder{start: time.Now()}}
	for i := range cfg.Candidates {
		v, err := fleet.View(fmt.Sprintf("candidate-%d", i))
		if err != nil {
			return unsupported(err)
		}
		r.cands = append(r.cands, &candidate{i: i, view: v, nodes: v.Clients()})
	}

	wctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	errs := make([]error, len(r.cands))
	var wg sync.WaitGroup
	for i, c := range r.cands {
		wg.Go(func() {
			if impl == ElectionQuorumlock {
				errs[i] = r.runQuorumlock(wctx, c)
			} else {
				errs[i] = r.runRedsync(wctx, c)
			}
		})
	}
	derr := sc.drive(wctx, r)
	if derr != nil {
		cancel()
	}
	<-wctx.Done()
	wg.Wait()
	o.History = r.rec.finish()
	o.Check = CheckElection(o.History, cfg.TTL)
	return errors.Join(append(errs, derr)...)
}

// nameSeed derives a scenario's stream of choices from its name, so that
// both implementations see the same ones.
func nameSeed(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// runQuorumlock is one candidate under Election.Run.
func (r *electionRun) runQuorumlock(ctx context.Context, c *candidate) error {
	cl, err := redlock.New(c.nodes, redlock.WithTTL(r.ttl))
	if err != nil {
		return err
	}
	defer cl.Close()
	e := cl.Election(electionKey, redlock.WithIdentity(fmt.Sprintf("candidate-%d", c.i)))
	err = e.Run(ctx, func(tctx context.Context, t *redlock.Term) error {
		r.lead(ctx, tctx, c, t.Fence(), redlock.FromContext(t.Context()).Until)
		return nil
	})
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// lead is a leader's work during one term: write the fence every few
// milliseconds until the term's context ends. A paused candidate stops
// between deciding to write and writing, notices nothing until it resumes,
// then makes that write and goes on as before: it stops at its next look at
// the term's context, if the term has ended meanwhile. until, when not nil, is the term's validity
// deadline.
func (r *electionRun) lead(runCtx, tctx context.Context, c *candidate, fence uint64, until func() time.Time) {
	ti := r.rec.termStarted(c.i, fence)
	recorded := make(chan struct{})
	stop := context.AfterFunc(tctx, func() {
		defer close(recorded)
		var u time.Time
		if until != nil {
			u = until()
		}
		r.rec.termEnded(ti, runCtx.Err() != nil, u)
	})
	defer func() {
		if !stop() {
			<-recorded
		}
	}()
	for {
		if p := c.paused(); p != nil {
			<-p // the injector always resumes, also at the end of the run
		} else if tctx.Err() != nil {
			return
		}
		r.write(c.i, ti, fence, until)
		sleepCtx(tctx, electionWriteGap)
	}
}

func (r *electionRun) write(candidate, term int, fence uint64, until func() time.Time) {
	w := ElectionWrite{Candidate: candidate, Term: term, Fence: fence, Issued: r.rec.now(), Late: r.rec.late(term, until)}
	r.rec.store(w, func() StoreResult {
		ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
		defer cancel()
		err := redlock.FencedSet(ctx, r.store, electionDataKey, fence, fence)
		switch {
		case err == nil:
			return StoreAccepted
		case errors.Is(err, redlock.ErrStaleFence):
			return StoreRefused
		}
		return StoreUnknown
	})
}

// waitFor waits until cond holds or ctx ends, checking every few
// milliseconds; it reports whether cond held.
func waitFor(ctx context.Context, cond func() bool) bool {
	for !cond() {
		if !sleepCtx(ctx, 2*time.Millisecond) {
			return cond()
		}
	}
	return true
}

// remaining is how long ctx has left (a long time without a deadline).
func remaining(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return time.Until(dl)
	}
	return time.Hour
}

// leaderHit waits for a leader and returns it and its term, or ok false
// when the run ends first.
func (r *electionRun) leaderHit(ctx context.Context) (c *candidate, term int, ok bool) {
	var ci int
	found := waitFor(ctx, func() bool {
		var has bool
		ci, term, has = r.rec.leader()
		return has
	})
	if !found {
		return nil, 0, false
	}
	return r.cands[ci], term, true
}

// cycles runs hit every couple of TTLs while at least four TTLs of the run
// remain, so that each hit can fail over before the run ends.
func (r *electionRun) cycles(ctx context.Context, hit func(ctx context.Context) error) error {
	for {
		if !sleepCtx(ctx, r.ttl) {
			return nil
		}
		if remaining(ctx) < 4*r.ttl {
			return nil
		}
		if err := hit(ctx); err != nil {
			return err
		}
	}
}

func allNodes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// cut partitions nodes from c's view; heal undoes it. Both run even after
// the run's end (faultCtx).
func (c *candidate) cut(nodes []int) error {
	var errs []error
	for _, n := range nodes {
		errs = append(errs, faultCtx(func(ctx context.Context) error { return unsupported(c.view.Partition(ctx, n)) }))
	}
	return errors.Join(errs...)
}

func (c *candidate) heal(nodes []int) error {
	var errs []error
	for _, n := range nodes {
		errs = append(errs, faultCtx(func(ctx context.Context) error { return unsupported(c.view.Heal(ctx, n)) }))
	}
	return errors.Join(errs...)
}

func driveLeaderPause(ctx context.Context, r *electionRun) error {
	return r.cycles(ctx, func(ctx context.Context) error {
		c, term, ok := r.leaderHit(ctx)
		if !ok {
			return nil
		}
		at := r.rec.now()
		r.rec.lost(term, at)
		p := make(chan struct{})
		c.setPause(p)
		nodes := allNodes(r.fleet.Len())
		err := c.cut(nodes)
		// Frozen until another leader's write was accepted, so that the
		// write it makes on resuming comes after a later term's.
		if err == nil {
			waitFor(ctx, func() bool { return r.rec.startedAfter(at, true) })
		}
		err = errors.Join(err, c.heal(nodes))
		c.setPause(nil)
		close(p)
		r.rec.fault(FaultSpan{Name: fmt.Sprintf("pause candidate %d", c.i), Nodes: nodes, Start: at, End: r.rec.now()})
		return err
	})
}

func driveLeaderPartition(ctx context.Context, r *electionRun) error {
	return r.cycles(ctx, func(ctx context.Context) error {
		c, term, ok := r.leaderHit(ctx)
		if !ok {
			return nil
		}
		nodes := pick(r.rng, r.fleet.Len(), r.fleet.Len()/2+1)
		at := r.rec.now()
		r.rec.lost(term, at)
		err := c.cut(nodes)
		if err == nil {
			waitFor(ctx, func() bool { return r.rec.startedAfter(at, false) })
		}
		err = errors.Join(err, c.heal(nodes))
		r.rec.fault(FaultSpan{Name: fmt.Sprintf("partition candidate %d", c.i), Nodes: nodes, Start: at, End: r.rec.now()})
		return err
	})
}

func driveRollingRestart(ctx context.Context, r *electionRun) error {
	n := r.fleet.Len()
	gap := remaining(ctx) / time.Duration(n+1)
	for i := range n {
		if !sleepCtx(ctx, gap) {
			return nil
		}
		node := r.fleet.Node(i)
		at := r.rec.now()
		err := faultCtx(func(ctx context.Context) error { return faultKill.apply(ctx, node, r.ttl) })
		err = errors.Join(err, faultCtx(func(ctx context.Context) error { return faultKill.revert(ctx, node, r.ttl) }))
		r.rec.fault(FaultSpan{Name: "restart", Nodes: []int{i}, Start: at, End: r.rec.now()})
		if err != nil {
			return fmt.Errorf("restart node %d: %w", i, err)
		}
	}
	return nil
}

func driveSlowNode(ctx context.Context, r *electionRun) error {
	d := remaining(ctx)
	i := pick(r.rng, r.fleet.Len(), 1)[0]
	node := r.fleet.Node(i)
	if !sleepCtx(ctx, d/5) {
		return nil
	}
	at := r.rec.now()
	err := faultCtx(func(ctx context.Context) error { return faultSlow.apply(ctx, node, r.ttl) })
	if err == nil {
		sleepCtx(ctx, 3*d/5)
	}
	err = errors.Join(err, faultCtx(func(ctx context.Context) error { return faultSlow.revert(ctx, node, r.ttl) }))
	r.rec.fault(FaultSpan{Name: "slow", Nodes: []int{i}, Start: at, End: r.rec.now()})
	return err
}
