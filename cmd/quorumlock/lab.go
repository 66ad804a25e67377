package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
3 when quorumlock showed a violation its scenario rules out, 1 on other errors.`,
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
	f.DurationVar(&cfg.attackTTL, "attack-ttl", 0, "lock TTL in the restart and clock-jump scenarios (default max(4×ttl, 2s))")
	f.Uint64Var(&cfg.seed, "seed", 1, "seed for the fault schedule, the choice of nodes and the clients' random choices")
	f.StringVar(&cfg.out, "out", "lab-report", "directory for the Markdown report, the timelines and results.json")
	f.BoolVar(&cfg.json, "json", false, "print the results as JSON on stdout instead of the table")
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
	if err := lab.WriteReport(cfg.out, res); err != nil {
		return errors.Join(runErr, err)
	}
	if cfg.json {
		err = lab.WriteJSON(cfg.stdout, res)
	} else {
		err = lab.WriteTable(cfg.stdout, res)
		fmt.Fprintf(cfg.stdout, "\nreport: %s (took %v)\n", filepath.Join(cfg.out, "README.md"), res.Elapsed.Round(time.Second))
	}
	if err != nil || runErr != nil {
		return errors.Join(runErr, err)
	}
	return labStatus(res)
}

// labStatus is the command's verdict on a finished run: exitLabUnsafe when
// quorumlock showed what a scenario rules out, an error when runs broke off.
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
