package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/lab"
)

// exitLabUnsafe is the status of `quorumlock lab` when quorumlock showed a
// violation its scenario says must not happen.
const exitLabUnsafe = 3

// exitLabDegraded is the status of `quorumlock lab` when quorumlock's
// availability fell under a scenario's floor where redsync's, in the same
// run, did not: not a safety failure, but a regression against the library
// it replaces.
const exitLabDegraded = 4

func init() { subcommands = append(subcommands, newLabCmd) }

// labConfig is what `lab` needs; the command fills it from flags, tests
// directly.
type labConfig struct {
	backend   string
	nodes     []string
	count     int
	scenarios []string
	impls     []string
	duration  time.Duration
	ttl       time.Duration
	attackTTL time.Duration
	seed      uint64
	out       string
	json      bool

	stdout, stderr io.Writer
	terminal       bool // draw progress bars on stderr
}

func newLabCmd() *cobra.Command {
	cfg := labConfig{}
	cmd := &cobra.Command{
		Use:   "lab",
		Short: "Run the correctness experiments: kill, pause, partition, restart and clock-skew nodes under load",
		Long: `lab runs every scenario (a workload, a fault schedule and the outcome it expects) with
quorumlock and with go-redsync/redsync side by side, checks the recorded history for
overlapping holders, lost updates, stale writes and broken auction invariants, prints a
table, and writes a Markdown report with one timeline picture per scenario.

The default backend runs embedded nodes inside the process (nothing to install) and takes
under two minutes. --backend docker runs real redis-server containers (image from
docker/build.sh); --nodes runs against existing servers, where only network faults
(through in-process proxies) apply and the other scenarios are skipped. The lab writes
lock and fencing keys to the nodes: never point it at nodes in use.

Exit status: 0 when every outcome matched its expectation or showed less than expected,
3 when quorumlock showed a violation its scenario rules out, 4 when quorumlock was
degraded (availability under the scenario's floor) where redsync was not, 1 on other
errors.`,
		Example: `  quorumlock lab
  quorumlock lab --scenario restart-now,clock-jump --seed 7
  quorumlock lab --backend docker --duration 10s --ttl 2s
  quorumlock lab --json > lab.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			// go-redis logs every failed dial, and the lab kills nodes on
			// purpose. Its logger is process-wide: set it here, not in runLab.
			redis.SetLogger(quietLogger{})
			if f, ok := cfg.stderr.(*os.File); ok {
				cfg.terminal = term.IsTerminal(int(f.Fd()))
			}
			return runLab(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.backend, "backend", string(cluster.BackendEmbedded), "where the lock nodes run: embedded (in-process) or docker")
	f.StringSliceVar(&cfg.nodes, "nodes", nil, "run on existing Redis servers instead, redis:// URLs, comma-separated (loopback only)")
	f.IntVar(&cfg.count, "node-count", cluster.DefaultNodes, "number of lock nodes for the embedded and docker backends")
	f.StringSliceVar(&cfg.scenarios, "scenario", []string{"all"}, "scenarios to run, repeatable or comma-separated: "+strings.Join(scenarioNames(), ", "))
	f.StringSliceVar(&cfg.impls, "impl", []string{"quorumlock", "redsync"}, "implementations to compare, comma-separated")
	f.DurationVar(&cfg.duration, "duration", 3*time.Second, "how long each scenario runs per implementation")
	f.DurationVar(&cfg.ttl, "ttl", 500*time.Millisecond, "lock TTL for both implementations")
	f.DurationVar(&cfg.attackTTL, "attack-ttl", 0, "lock TTL in the restart, clock-jump and rolling-restart scenarios (default max(4×ttl, 2s))")
	f.Uint64Var(&cfg.seed, "seed", 1, "seed for the fault schedule, the choice of nodes and the clients' random choices")
	f.StringVar(&cfg.out, "out", "lab-report", "directory for the Markdown report, the timelines and results.json")
	f.BoolVar(&cfg.json, "json", false, "print the results as JSON on stdout instead of the table")
	cmd.AddCommand(newExploreCmd())
	cmd.AddCommand(newLabElectionCmd())
	return cmd
}

func scenarioNames() []string {
	var names []string
	for _, s := range lab.Scenarios() {
		names = append(names, s.Name)
	}
	return names
}

func selectImpls(names []string) ([]lab.Impl, error) {
	var out []lab.Impl
	for _, n := range names {
		var found bool
		for _, impl := range lab.Implementations() {
			if impl.Name == strings.TrimSpace(n) {
				out, found = append(out, impl), true
			}
		}
		if !found {
			return nil, fmt.Errorf("--impl: unknown implementation %q (known: quorumlock, redsync)", n)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--impl: no implementation")
	}
	return out, nil
}

func runLab(ctx context.Context, cfg labConfig) error {
	opts := cluster.Options{Backend: cluster.Backend(cfg.backend), Nodes: cfg.count, Label: "lab"}
	if len(cfg.nodes) > 0 {
		if opts.Backend != cluster.BackendEmbedded && opts.Backend != cluster.BackendExternal {
			return fmt.Errorf("--nodes and --backend %s exclude each other", cfg.backend)
		}
		opts = cluster.Options{Backend: cluster.BackendExternal, URLs: cfg.nodes, Label: "lab"}
	} else if opts.Backend != cluster.BackendEmbedded && opts.Backend != cluster.BackendDocker {
		return fmt.Errorf("--backend %q: want embedded or docker (or --nodes for existing servers)", cfg.backend)
	}
	scenarios, err := lab.SelectScenarios(splitList(cfg.scenarios))
	if err != nil {
		return err
	}
	impls, err := selectImpls(splitList(cfg.impls))
	if err != nil {
		return err
	}
	nodes := opts.Nodes
	if opts.Backend == cluster.BackendExternal {
		nodes = len(opts.URLs)
	}
	res, runErr := lab.Run(ctx, lab.Config{
		NewFleet:  lab.ClusterFleet(opts),
		Backend:   string(opts.Backend),
		Nodes:     nodes,
		Scenarios: scenarios,
		Impls:     impls,
		Duration:  cfg.duration,
		TTL:       cfg.ttl,
		AttackTTL: cfg.attackTTL,
		Seed:      cfg.seed,
		FencedSet: lab.FencedSet,
		IsStale:   lab.IsStaleFence,
		Progress:  lab.NewProgress(cfg.stderr, cfg.terminal),
	})
	if res == nil {
		return runErr
	}
	err = writeLabOutput(cfg.stdout, cfg.out, "README.md", cfg.json, res.Elapsed, res, lab.WriteReport, lab.WriteJSON, lab.WriteTable)
	if err != nil || runErr != nil {
		return errors.Join(runErr, err)
	}
	return labStatus(res)
}

// writeLabOutput writes a finished run's report into dir (its main page is
// file), then prints the results on w: as JSON, or as a table followed by
// where the report is.
func writeLabOutput[R any](w io.Writer, dir, file string, asJSON bool, took time.Duration, res R,
	writeReport func(string, R) error, writeJSON, writeTable func(io.Writer, R) error) error {
	if err := writeReport(dir, res); err != nil {
		return err
	}
	if asJSON {
		return writeJSON(w, res)
	}
	if err := writeTable(w, res); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nreport: %s (took %v)\n", filepath.Join(dir, file), took.Round(time.Second))
	return err
}

// labStatus is the command's verdict on a finished run: exitLabUnsafe when
// quorumlock showed what a scenario rules out, an error when runs broke off,
// exitLabDegraded when quorumlock was degraded where redsync was not.
func labStatus(res *lab.Results) error {
	if f := res.Failures("quorumlock"); len(f) > 0 {
		return &exitError{code: exitLabUnsafe, err: fmt.Errorf("quorumlock showed what its scenarios rule out: %s", strings.Join(f, "; "))}
	}
	var broken []string
	for _, s := range res.Scenarios {
		for _, o := range s.Outcomes {
			if o.Err != "" {
				broken = append(broken, s.Name+"/"+o.Impl+": "+o.Err)
			}
		}
	}
	if len(broken) > 0 {
		return fmt.Errorf("%d runs broke off: %s", len(broken), strings.Join(broken, "; "))
	}
	if d := res.DegradedBeside("quorumlock", "redsync"); len(d) > 0 {
		return &exitError{code: exitLabDegraded, err: fmt.Errorf("quorumlock was degraded where redsync was not: %s", strings.Join(d, "; "))}
	}
	return nil
}

// splitList flattens repeated and comma-separated flag values.
func splitList(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// exploreConfig is what `lab explore` needs; the command fills it from
// flags, tests directly.
type exploreConfig struct {
	backend   string
	count     int
	clients   int
	seed      uint64
	seeds     int
	ttl       time.Duration
	duration  time.Duration
	outside   bool
	faults    []string
	maxFaults int
	drop      []int
	impls     []string
	noShrink  bool
	parallel  int
	out       string
	json      bool

	stdout, stderr io.Writer
}

func newExploreCmd() *cobra.Command {
	cfg := exploreConfig{}
	cmd := &cobra.Command{
		Use:   "explore",
		Short: "Search random fault schedules for safety violations, quorumlock beside redsync",
		Long: `explore derives a fault schedule from each seed (crashes and restarts: empty, delayed,
with AOF, or losing the last second of writes; pauses; partitions of a minority from one
client; latency; clock jumps and drift; clients paused past their validity; Bootstrap
called while nodes restart; a fresh client acquiring with a short deadline while a node
hangs). Two schedules in three open with a rotation: a minority cut off from every
client, a node of the remaining bare majority restarted empty, then either the rest of
that majority hung past the quarantine, or a Bootstrap followed by a fresh client. It
runs each schedule with every implementation on fresh nodes at the same time, under a
workload on three keys (holders; fenced writers through redlock.FencedSet to a separate
store; a lock-protected counter), and checks: overlapping holders, locks returned already
expired, fence tokens not increasing in the real-time order of acquisition, stale writes
accepted by the store, the counter's linearizability (porcupine), and the share of
attempts served while a majority was reachable, beside the other implementation's.

Schedules stay inside the documented fault model unless --outside-model lets them leave
it: at every instant a minority of the nodes has lost data (counted until its quarantine
is served) or runs an off clock; clock jumps stay within the drift allowance, or beyond
the skew bound for longer than a TTL; clock rates within half the drift factor. Pauses,
partitions and latency are not bounded: they cost liveness, never safety.

On a violation it shrinks the schedule (drops faults one at a time while it still fails),
writes the schedule and what happened as text and as a picture under --out, and prints
the command that replays it. Embedded nodes report no server run id, so a restart that
keeps its data but loses the last lock keys is outside the model there (no client can
tell it happened); --backend docker runs real redis-server containers, where it is inside.

Exit status: 0 when quorumlock violated nothing inside the model, 3 when it did, 1 on
other errors.`,
		Example: `  quorumlock lab explore --seeds 200
  quorumlock lab explore --seed 17 --seeds 1 --drop 0,2
  quorumlock lab explore --backend docker --seeds 10
  quorumlock lab explore --seeds 50 --outside-model --faults clock-jump,clock-drift`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			redis.SetLogger(quietLogger{})
			return runExplore(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.backend, "backend", string(cluster.BackendEmbedded), "where the lock nodes run: embedded (in-process) or docker")
	f.IntVar(&cfg.count, "node-count", cluster.DefaultNodes, "number of lock nodes")
	f.IntVar(&cfg.clients, "clients", 4, "number of clients, each with its own network path to the nodes")
	f.Uint64Var(&cfg.seed, "seed", 1, "first seed")
	f.IntVar(&cfg.seeds, "seeds", lab.DefaultExploreSeeds, "number of seeds (schedules) to run, from --seed on")
	f.DurationVar(&cfg.ttl, "ttl", 250*time.Millisecond, "lock TTL for both implementations; the faults' lengths scale with it")
	f.DurationVar(&cfg.duration, "duration", 0, "length of each schedule (default 8×ttl)")
	f.BoolVar(&cfg.outside, "outside-model", false, "let schedules leave the documented fault model")
	f.StringSliceVar(&cfg.faults, "faults", nil, "restrict the faults to these kinds, comma-separated: "+strings.Join(faultKindNames(), ", "))
	f.IntVar(&cfg.maxFaults, "max-faults", 6, "most faults in one schedule")
	f.IntSliceVar(&cfg.drop, "drop", nil, "fault IDs to leave out of the schedule (to replay a shrunk one)")
	f.StringSliceVar(&cfg.impls, "impl", []string{"quorumlock", "redsync"}, "implementations, the one under test first")
	f.BoolVar(&cfg.noShrink, "no-shrink", false, "do not shrink failing schedules")
	f.IntVar(&cfg.parallel, "parallel", 1, "seeds run at once")
	f.StringVar(&cfg.out, "out", "explore-report", "directory for the failing seeds' timelines and results.json")
	f.BoolVar(&cfg.json, "json", false, "print the results as JSON on stdout instead of the table")
	return cmd
}

func faultKindNames() []string {
	var out []string
	for _, k := range lab.AllFaultKinds() {
		out = append(out, string(k))
	}
	return out
}

func runExplore(ctx context.Context, cfg exploreConfig) error {
	b := cluster.Backend(cfg.backend)
	if b != cluster.BackendEmbedded && b != cluster.BackendDocker {
		return fmt.Errorf("--backend %q: want embedded or docker", cfg.backend)
	}
	if cfg.seeds < 1 {
		return fmt.Errorf("--seeds %d: want at least 1", cfg.seeds)
	}
	if cfg.count < 3 {
		return fmt.Errorf("--node-count %d: the explorer needs at least 3 nodes (a minority to break)", cfg.count)
	}
	if cfg.clients < 1 {
		return fmt.Errorf("--clients %d: want at least 1", cfg.clients)
	}
	if cfg.ttl <= 0 {
		return fmt.Errorf("--ttl %v: want a positive TTL", cfg.ttl)
	}
	if cfg.duration == 0 {
		cfg.duration = 8 * cfg.ttl
	}
	if cfg.duration < 2*cfg.ttl {
		return fmt.Errorf("--duration %v: want at least two TTLs (%v)", cfg.duration, 2*cfg.ttl)
	}
	var kinds []lab.FaultKind
	for _, k := range splitList(cfg.faults) {
		if !slices.Contains(faultKindNames(), k) {
			return fmt.Errorf("--faults: unknown fault %q (known: %s)", k, strings.Join(faultKindNames(), ", "))
		}
		kinds = append(kinds, lab.FaultKind(k))
	}
	impls, err := selectImpls(splitList(cfg.impls))
	if err != nil {
		return err
	}
	opts := cluster.Options{Backend: b, Nodes: cfg.count, Label: "explore"}
	var lines []string
	res, runErr := lab.Explore(ctx, lab.ExploreConfig{
		NewFleet: lab.ClusterFleet(opts), Backend: cfg.backend, NoRunIDs: b == cluster.BackendEmbedded,
		Nodes: cfg.count, Clients: cfg.clients, TTL: cfg.ttl, Duration: cfg.duration,
		Impls: impls, Bounds: lab.QuorumlockBounds(cfg.ttl),
		FirstSeed: cfg.seed, Seeds: cfg.seeds, Outside: cfg.outside, Kinds: kinds, MaxFaults: cfg.maxFaults, Drop: cfg.drop,
		Shrink: !cfg.noShrink, Parallel: cfg.parallel,
		FencedSet: lab.FencedSet, IsStale: lab.IsStaleFence,
		Progress: func(r lab.SeedResult) {
			fmt.Fprintln(cfg.stderr, lab.SeedLine(r))
			if !anyViolation(r) {
				return
			}
			sched := r.Schedule
			if r.Shrunk != nil {
				sched = *r.Shrunk
			}
			cmd := cfg.replay(sched.Seed, append(slices.Clone(cfg.drop), sched.Dropped(lab.Generate(sched.Seed, genOptionsOf(cfg, kinds)))...))
			dir, err := lab.WriteSeedReport(cfg.out, r, cmd)
			if err != nil {
				fmt.Fprintf(cfg.stderr, "  report: %v\n", err)
				return
			}
			line := fmt.Sprintf("  seed %d: %s; replay: %s", sched.Seed, dir, cmd)
			fmt.Fprintln(cfg.stderr, line)
			lines = append(lines, line)
		},
	})
	if res == nil {
		return runErr
	}
	if err := os.MkdirAll(cfg.out, 0o755); err != nil {
		return errors.Join(runErr, err)
	}
	js, err := json.MarshalIndent(res, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(cfg.out, "results.json"), js, 0o644)
	}
	if err != nil {
		return errors.Join(runErr, err)
	}
	if cfg.json {
		_, err = cfg.stdout.Write(append(js, '\n'))
	} else {
		err = lab.ExploreSummary(cfg.stdout, res)
		for _, l := range lines {
			fmt.Fprintln(cfg.stdout, l)
		}
		fmt.Fprintf(cfg.stdout, "\n%d seeds in %v (%v per seed); results: %s\n", len(res.Seeds), res.Elapsed.Round(time.Second),
			(res.Elapsed / time.Duration(max(len(res.Seeds), 1))).Round(10*time.Millisecond), filepath.Join(cfg.out, "results.json"))
	}
	if err != nil || runErr != nil {
		return errors.Join(runErr, err)
	}
	return exploreStatus(res)
}

func anyViolation(r lab.SeedResult) bool {
	for _, run := range r.Runs {
		if len(run.Check.Violations()) > 0 {
			return true
		}
	}
	return false
}

// exploreStatus fails with exitLabUnsafe when the implementation under test
// violated inside the fault model.
func exploreStatus(res *lab.ExploreResults) error {
	var bad []string
	for _, s := range res.Seeds {
		if !s.Schedule.Outside && s.Failed() {
			bad = append(bad, strconv.FormatUint(s.Schedule.Seed, 10))
		}
	}
	if len(bad) > 0 {
		return &exitError{code: exitLabUnsafe, err: fmt.Errorf("%s violated inside the fault model on seeds %s", res.Impls[0], strings.Join(bad, ", "))}
	}
	return nil
}

func genOptionsOf(cfg exploreConfig, kinds []lab.FaultKind) lab.GenOptions {
	return lab.GenOptions{Nodes: cfg.count, Clients: cfg.clients, TTL: cfg.ttl, Duration: cfg.duration,
		Bounds: lab.QuorumlockBounds(cfg.ttl), Outside: cfg.outside, Kinds: kinds, MaxFaults: cfg.maxFaults,
		NoRunIDs: cluster.Backend(cfg.backend) == cluster.BackendEmbedded}
}

// replay is the command line that runs one seed's schedule again, without
// the dropped faults.
func (cfg exploreConfig) replay(seed uint64, drop []int) string {
	args := []string{"go run ./cmd/quorumlock lab explore", "--seed", strconv.FormatUint(seed, 10), "--seeds", "1",
		"--backend", cfg.backend, "--node-count", strconv.Itoa(cfg.count), "--clients", strconv.Itoa(cfg.clients),
		"--ttl", cfg.ttl.String(), "--duration", cfg.duration.String(), "--max-faults", strconv.Itoa(cfg.maxFaults)}
	if cfg.outside {
		args = append(args, "--outside-model")
	}
	if len(cfg.faults) > 0 {
		args = append(args, "--faults", strings.Join(splitList(cfg.faults), ","))
	}
	if len(cfg.impls) > 0 {
		args = append(args, "--impl", strings.Join(splitList(cfg.impls), ","))
	}
	if len(drop) > 0 {
		slices.Sort(drop)
		args = append(args, "--drop", strings.Trim(strings.Join(strings.Fields(fmt.Sprint(slices.Compact(drop))), ","), "[]"))
	}
	return strings.Join(args, " ")
}
