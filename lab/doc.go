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
// What the lab does not prove: a run that shows no violation says only that
// this schedule, on these nodes, during these seconds, found none. The checker
// sees what the clients recorded; a client's "holding interval" ends at its own
// local validity deadline, so a client paused past that deadline is not counted
// as overlapping — its damage shows up as lost updates and stale writes instead.
package lab
