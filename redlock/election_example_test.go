package redlock_test

import (
	"context"
	"fmt"
	"time"

	"github.com/quorumlock/quorumlock/redlock"
)

// Keep a job running on exactly one of several replicas: each runs the same
// Election; the leader's fn runs until its term ends, and a standby takes
// over when it does.
func ExampleElection_Run() {
	nodes, stop := embeddedNodes(3)
	defer stop()
	locks, err := redlock.New(nodes)
	if err != nil {
		panic(err)
	}
	defer locks.Close()
	_ = locks.Bootstrap(context.Background()) // fresh nodes: no restart quarantine

	ctx, cancel := context.WithCancel(context.Background())
	e := locks.Election("scheduler", redlock.WithIdentity("replica-1"),
		redlock.WithValue([]byte("10.0.0.1:8080")), redlock.WithTTL(2*time.Second))
	err = e.Run(ctx, func(ctx context.Context, t *redlock.Term) error {
		leader, _ := e.Leader(ctx)
		fmt.Printf("leading: %s at %s\n", leader.Identity, leader.Value)
		// Work here; hand t.Fence() to storage that checks it (FencedSet).
		// ctx ends the moment the term does, with ErrLeadershipLost as cause.
		cancel() // this example stops after one term
		<-ctx.Done()
		return nil
	})
	fmt.Println("run:", err)
	_, err = e.Leader(context.Background())
	fmt.Println("after:", err)
	// Output:
	// leading: replica-1 at 10.0.0.1:8080
	// run: context canceled
	// after: redlock: no leader
}
