package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/lab"
)

// labElectionConfig is what `lab election` needs; the command fills it
// from flags, tests directly.
type labElectionConfig struct {
	backend    string
	count      int
	candidates int
	scenarios  []string
	impls      []string
	duration   time.Duration
	ttl        time.Duration
	seed       uint64
	out        string
	json       bool

	stdout, stderr io.Writer
}

func newLabElectionCmd() *cobra.Command {
	cfg := labElectionConfig{}
	cmd := &cobra.Command{
		Use:   "election",
		Short: "Leader election under faults: quorumlock's Election beside the redsync extend-every-TTL/3 pattern",
		Long: `election runs K candidates (each a client of its own) in one election while a fault
schedule hits the leader or the nodes, and, while a candidate leads, has it write its
term's fence to a separate store through redlock.FencedSet every few milliseconds.
quorumlock runs Election.Run; the redsync pattern locks a Mutex, extends it every TTL/3,
stops leading at the first failed extension and takes as fence a counter it increments
on the store at the start of each term.

Scenarios: leader-pause (the leader's process freezes past its validity until another
term has written, then makes the write it was about to make), leader-partition (the
leader is cut off from a majority), rolling-restart (each node killed and restarted empty
in turn), slow-node (one node answers TTL/10 late).

Columns: overlaps are pairs of terms in force at the same instant as their leaders saw
them; stale offered are writes sent by a term after the store had accepted one from a
later term (what a store without the fencing check would take), stale accepted those the
store took; failover runs from the loss of a leader (the fault on it, or its term's end)
to the next term's start, as a multiple of the TTL.

Exit status: 0, 3 when quorumlock showed overlapping terms or a stale write accepted,
1 on other errors.`,
		Example: `  quorumlock lab election
  quorumlock lab election --backend docker --ttl 1s --duration 20s
  quorumlock lab election --scenario leader-pause --impl quorumlock --candidates 5`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.stdout, cfg.stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			redis.SetLogger(quietLogger{}) // the lab kills nodes on purpose
			return runLabElection(cmd.Context(), cfg)
		},
	}
	var names []string
	for _, s := range lab.ElectionScenarios() {
		names = append(names, s.Name)
	}
	f := cmd.Flags()
	f.StringVar(&cfg.backend, "backend", string(cluster.BackendEmbedded), "where the lock nodes run: embedded (in-process) or docker")
	f.IntVar(&cfg.count, "node-count", cluster.DefaultNodes, "number of lock nodes")
	f.IntVar(&cfg.candidates, "candidates", 3, "number of candidates, each a client of its own")
	f.StringSliceVar(&cfg.scenarios, "scenario", []string{"all"}, "scenarios to run, comma-separated: "+strings.Join(names, ", "))
	f.StringSliceVar(&cfg.impls, "impl", lab.ElectionImpls(), "implementations to compare, comma-separated")
	f.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long each scenario runs per implementation")
	f.DurationVar(&cfg.ttl, "ttl", 500*time.Millisecond, "lock TTL (the term's lock) for both implementations")
	f.Uint64Var(&cfg.seed, "seed", 1, "seed for the choice of nodes")
	f.StringVar(&cfg.out, "out", "lab-report", "directory for election.md and election.json")
	f.BoolVar(&cfg.json, "json", false, "print the results as JSON on stdout instead of the table")
	return cmd
}

func runLabElection(ctx context.Context, cfg labElectionConfig) error {
	opts := cluster.Options{Backend: cluster.Backend(cfg.backend), Nodes: cfg.count, Label: "lab"}
	if opts.Backend != cluster.BackendEmbedded && opts.Backend != cluster.BackendDocker {
		return fmt.Errorf("--backend %q: want embedded or docker", cfg.backend)
	}
	scenarios, err := lab.SelectElectionScenarios(splitList(cfg.scenarios))
	if err != nil {
		return err
	}
	impls := splitList(cfg.impls)
	if len(impls) == 0 {
		return errors.New("--impl: no implementation")
	}
	res, runErr := lab.RunElection(ctx, lab.ElectionConfig{
		NewFleet:   lab.ClusterFleet(opts),
		Backend:    string(opts.Backend),
		Nodes:      opts.Nodes,
		Scenarios:  scenarios,
		Impls:      impls,
		Candidates: cfg.candidates,
		Duration:   cfg.duration,
		TTL:        cfg.ttl,
		Seed:       cfg.seed,
		Logf:       func(format string, args ...any) { fmt.Fprintf(cfg.stderr, format+"\n", args...) },
	})
	if res == nil {
		return runErr
	}
	err = writeLabOutput(cfg.stdout, cfg.out, "election.md", cfg.json, res.Elapsed, res,
		lab.WriteElectionReport, lab.WriteElectionJSON, lab.WriteElectionTable)
	if err != nil || runErr != nil {
		return errors.Join(runErr, err)
	}
	var unsafe, broken []string
	for _, o := range res.Runs {
		if o.Impl == lab.ElectionQuorumlock && o.Unsafe() {
			unsafe = append(unsafe, fmt.Sprintf("%s: %d overlapping terms, %d stale writes accepted", o.Scenario, o.Check.Overlaps, o.Check.StaleAccepted))
		}
		if o.Err != "" {
			broken = append(broken, o.Scenario+"/"+o.Impl+": "+o.Err)
		}
	}
	if len(unsafe) > 0 {
		return &exitError{code: exitLabUnsafe, err: fmt.Errorf("quorumlock elected two leaders at once: %s", strings.Join(unsafe, "; "))}
	}
	if len(broken) > 0 {
		return fmt.Errorf("%d runs broke off: %s", len(broken), strings.Join(broken, "; "))
	}
	return nil
}
