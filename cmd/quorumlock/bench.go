package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/quorumlock/quorumlock/bench"
	"github.com/quorumlock/quorumlock/cluster"
)

func init() { subcommands = append(subcommands, newBenchCmd) }

func newBenchCmd() *cobra.Command {
	var (
		embedded bool
		urls     []string
		nodes    int
		quick    bool
		asJSON   bool
		only     []string
		cfg      bench.Config
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Benchmark quorumlock against go-redsync/redsync and a raw SET NX floor on the same nodes",
		Long: `bench runs quorumlock's redlock, go-redsync/redsync v4 and a raw floor (SET NX PX
on every node at once plus a token-checked delete) in one process against the
same Redis nodes and prints one table per figure with ratios to redsync:

  1. uncontended Acquire+Release: ns/op, B/op, allocs/op
  2. contention: workers on one key holding it briefly, as goroutines of
     one Client and as processes (a Client and connections each):
     acquisitions/s, wait p50/p99/max, fairness (max/min acquisitions per
     worker), hand-off latency (a release begins → the next waiter holds),
     beside the nodes' round trip
  3. one slow node (latency through the proxy): Acquire p50/p99
  4. throughput: goroutines on distinct keys: acquisitions/s
  5. cost of WithFencing, and of a guarded client (redlock.Guard) per command
  6. many locks held at once with auto-extension: goroutines and heap per lock
  7. many waiters on distinct keys: pub/sub connections per node
  8. many Do locks released at the same instant: releases that failed
  9. the lab's contention-storm on these nodes: availability

It ends with a Markdown table of every target: quorumlock's figure,
redsync's from the same run, the ratio and the goal, met or MISSED.

Nodes are docker containers by default (image from docker/build.sh),
miniredis servers in this process with --embedded, or existing servers with
--nodes (loopback only). Every node sits behind an in-process proxy, which is
how the slow node is made. With --embedded the allocation figures include the
servers' own allocations, since they run in this process.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if embedded && len(urls) > 0 {
				return errors.New("--embedded and --nodes exclude each other")
			}
			for _, f := range only {
				if !contains(bench.Figures, f) {
					return fmt.Errorf("--only %q: not one of %s", f, strings.Join(bench.Figures, ", "))
				}
			}
			opts := cluster.Options{Backend: cluster.BackendDocker, Nodes: nodes, Label: "bench", NoClockFaults: true}
			switch {
			case embedded:
				opts.Backend = cluster.BackendEmbedded
			case len(urls) > 0:
				opts = cluster.Options{Backend: cluster.BackendExternal, URLs: urls, Label: "bench"}
			}
			run := cfg
			if quick {
				run = mergeQuick(cmd, cfg)
			}
			run.Only = only
			run.Logf = func(format string, args ...any) {
				fmt.Fprintf(cmd.ErrOrStderr(), format+"\n", args...)
			}
			return runBench(cmd.Context(), cmd, opts, run, asJSON)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&embedded, "embedded", false, "run the nodes in this process (miniredis) instead of docker")
	f.StringSliceVar(&urls, "nodes", nil, "use existing nodes: redis:// URLs, comma-separated or repeated")
	f.IntVar(&nodes, "count", cluster.DefaultNodes, "number of docker or embedded nodes")
	f.BoolVar(&quick, "quick", false, "short run (well under a minute); explicit duration flags still apply")
	f.BoolVar(&asJSON, "json", false, "print the report as JSON instead of tables")
	f.StringSliceVar(&only, "only", nil, "run only these figures: "+strings.Join(bench.Figures, ", "))
	f.DurationVar(&cfg.OpTime, "op-time", time.Second, "duration of each uncontended, fencing and guard measurement")
	f.DurationVar(&cfg.Contention, "contention", 10*time.Second, "duration of each contention run")
	f.IntVar(&cfg.Workers, "workers", 8, "contention workers")
	f.DurationVar(&cfg.Critical, "critical", 2*time.Millisecond, "contention critical section")
	f.DurationVar(&cfg.SlowTime, "slow-time", 5*time.Second, "duration of each slow-node run")
	f.DurationVar(&cfg.SlowDelay, "slow-delay", 50*time.Millisecond, "latency added to the slow node")
	f.DurationVar(&cfg.Throughput, "throughput", 5*time.Second, "duration of each throughput run")
	f.IntVar(&cfg.Goroutines, "goroutines", 64, "throughput goroutines")
	f.IntSliceVar(&cfg.HeldLocks, "held", []int{1000, 10000}, "numbers of locks held at once, comma-separated")
	f.IntVar(&cfg.Waiters, "waiters", 1000, "waiters on distinct keys")
	f.IntVar(&cfg.ReleaseLocks, "release-locks", 10000, "Do locks released at the same instant")
	f.DurationVar(&cfg.StormTime, "storm-time", 5*time.Second, "duration of the contention-storm per implementation")
	f.DurationVar(&cfg.StormTTL, "storm-ttl", 500*time.Millisecond, "TTL (one round) of the contention-storm")
	return cmd
}

// mergeQuick starts from the quick durations and keeps the flags the user
// set explicitly.
func mergeQuick(cmd *cobra.Command, set bench.Config) bench.Config {
	q := bench.Quick()
	f := cmd.Flags()
	keep := func(name string, dst *time.Duration, v time.Duration) {
		if f.Changed(name) {
			*dst = v
		}
	}
	keep("op-time", &q.OpTime, set.OpTime)
	keep("contention", &q.Contention, set.Contention)
	keep("critical", &q.Critical, set.Critical)
	keep("slow-time", &q.SlowTime, set.SlowTime)
	keep("slow-delay", &q.SlowDelay, set.SlowDelay)
	keep("throughput", &q.Throughput, set.Throughput)
	keep("storm-time", &q.StormTime, set.StormTime)
	keep("storm-ttl", &q.StormTTL, set.StormTTL)
	q.Workers, q.Goroutines = set.Workers, set.Goroutines
	if f.Changed("held") {
		q.HeldLocks = set.HeldLocks
	}
	if f.Changed("waiters") {
		q.Waiters = set.Waiters
	}
	if f.Changed("release-locks") {
		q.ReleaseLocks = set.ReleaseLocks
	}
	return q
}

func runBench(ctx context.Context, cmd *cobra.Command, opts cluster.Options, cfg bench.Config, asJSON bool) (err error) {
	if opts.Backend == cluster.BackendDocker {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cluster.CheckDocker(cctx, "")
		cancel()
		if err != nil {
			return fmt.Errorf("%w (or use --embedded, or --nodes redis://...)", err)
		}
	}
	c, err := cluster.New(ctx, opts)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	rep, err := bench.Run(ctx, bench.ClusterEnv(c), cfg)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if asJSON {
		return rep.WriteJSON(out)
	}
	return rep.WriteTable(out)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
