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
//		Backend:   cluster.BackendEmbedded,
//		Scenarios: lab.Scenarios(),           // or a subset by name
//		Impls:     lab.Implementations(),     // quorumlock and redsync
//		Duration:  3 * time.Second,
//		Seed:      1,
//	})
//	if err != nil { ... }
//	lab.WriteTable(os.Stdout, res)
//	err = lab.WriteReport("lab-report", res) // Markdown + one timeline picture per scenario
//
// What the lab does not prove: a run that shows no violation says only that
// this schedule, on these nodes, during these seconds, found none. The checker
// sees what the clients recorded; a client's "holding interval" ends at its own
// local validity deadline, so a client paused past that deadline is not counted
// as overlapping — its damage shows up as lost updates and stale writes instead.
package lab
