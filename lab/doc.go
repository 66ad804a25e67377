// Package lab runs correctness experiments against Redlock implementations:
// it drives workloads (holders, a shared counter, an auction) through
// quorumlock and go-redsync/redsync side by side while a fault schedule kills,
// pauses, partitions, slows, restarts and clock-skews the lock nodes, records
// every client's events on one monotonic clock, and checks the history for
// mutual-exclusion violations, lost updates, stale writes and broken auction
// invariants.
//
// The happy path:
//
//	res, err := lab.Run(ctx, lab.Config{
//		NewFleet:  lab.ClusterFleet(cluster.Options{Backend: cluster.BackendEmbedded, Nodes: 5}),
//		Scenarios: lab.Scenarios(),       // or lab.SelectScenarios(names)
//		Impls:     lab.Implementations(), // quorumlock and redsync
//		Duration:  3 * time.Second,
//		TTL:       500 * time.Millisecond,
//		Seed:      1,
//		FencedSet: lab.FencedSet,
//		IsStale:   lab.IsStaleFence,
//	})
//	if err != nil { ... }
//	lab.WriteTable(os.Stdout, res)
//	err = lab.WriteReport("lab-report", res) // README.md, results.json, one timeline per scenario
//
// Beside the fixed scenarios, Explore searches fault schedules: each seed
// derives one (Generate), composed over time from crashes and restarts of
// every kind, pauses, partitions per client, latency, clock jumps and drift,
// clients paused past their validity and operator actions (Bootstrap during
// restarts, a fresh client with a short deadline while a node hangs), kept
// inside the documented fault model unless asked otherwise. Every
// implementation runs the schedule at once on nodes of its own; the
// checkers look for overlapping holders, locks returned already expired,
// fence tokens out of the real-time order, stale writes accepted by the
// store, a counter that is not linearizable (porcupine), and compare the
// share of attempts served. A failing seed is shrunk and written out with
// the command that replays it (`quorumlock lab explore`).
//
// What the lab does not prove: a run that shows no violation says only that
// this schedule, on these nodes, during these seconds, found none. The checker
// sees what the clients recorded; a client's "holding interval" ends at its own
// local validity deadline, so a client paused past that deadline is not counted
// as overlapping — its damage shows up as lost updates and stale writes instead.
package lab
