package redlock_test

// The README's and the package documentation's Go fragments, each inside a
// function that compiles as written with its imports; TestDocFragments
// checks that every fragment appears here, line for line.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/redlock"
)

var charged int

func charge(ctx context.Context) error {
	charged++
	return ctx.Err()
}

// chargeOnce is the README's first example.
func chargeOnce(ctx context.Context, addrs []string) error {
	var nodes []redis.UniversalClient // independent masters: not a cluster, not replicas
	for _, addr := range addrs {
		nodes = append(nodes, redis.NewClient(&redis.Options{Addr: addr}))
	}
	locks, err := redlock.New(nodes)
	if err != nil {
		return err
	}
	defer locks.Close()
	return locks.Do(ctx, "invoice:42", func(ctx context.Context) error {
		return charge(ctx) // cancelled, with its cause, if the lock is lost; extends itself
	})
}

// declareFresh is the README's note on fresh nodes: run once after
// deploying them, never at every start.
func declareFresh(ctx context.Context, nodes []redis.UniversalClient) error {
	locks, err := redlock.New(nodes)
	if err != nil {
		return err
	}
	defer locks.Close()
	return locks.Bootstrap(ctx) // a no-op on nodes already in service
}

// The README's first example, run as written against three fresh nodes.
func Example_readme() {
	nodes, stop := embeddedNodes(3)
	defer stop()
	ctx := context.Background()
	if err := declareFresh(ctx, nodes); err != nil {
		panic(err)
	}
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.(*redis.Client).Options().Addr)
	}
	err := chargeOnce(ctx, addrs)
	fmt.Println("charged:", charged, "error:", err)
	// Output:
	// charged: 1 error: <nil>
}

// The README's error handling, on a key another client holds.
func Example_errors() {
	nodes, stop := embeddedNodes(3)
	defer stop()
	ctx := context.Background()
	if err := declareFresh(ctx, nodes); err != nil {
		panic(err)
	}
	locks, _ := redlock.New(nodes)
	defer locks.Close()
	held, _ := locks.Acquire(ctx, "report")
	defer held.Release(ctx)

	_, err := locks.TryAcquire(ctx, "report")
	var round *redlock.RoundError
	switch {
	case errors.Is(err, redlock.ErrTaken): // held by someone else on a majority
		errors.As(err, &round)
		fmt.Printf("taken: %d needed, fewer granted: %v\n", round.Needed, round.Granted < round.Needed)
	case errors.Is(err, redlock.ErrNoQuorum): // nodes down, quarantined or skewed
		errors.As(err, &round)
		for _, n := range round.Nodes {
			fmt.Println(n.Node, n.Addr, n.Reason, n.Err)
		}
	case errors.Is(err, context.DeadlineExceeded): // Acquire gave up waiting
	}
	// Output:
	// taken: 2 needed, fewer granted: true
}

// The README's guarded client: a write under a lock that has ended is
// refused before it is sent.
func Example_guard() {
	nodes, stop := embeddedNodes(3)
	defer stop()
	stores, stopStore := embeddedNodes(1)
	defer stopStore()
	store := stores[0]
	ctx := context.Background()
	if err := declareFresh(ctx, nodes); err != nil {
		panic(err)
	}
	locks, _ := redlock.New(nodes)
	defer locks.Close()
	slowThing := func() { time.Sleep(10 * time.Millisecond) }

	redlock.Guard(store) // once, on the client that writes the protected data
	err := locks.Do(ctx, "account:7", func(ctx context.Context) error {
		bal, _ := store.Get(ctx, "balance:7").Int()
		slowThing()                                         // a GC pause, a slow query...
		return store.Set(ctx, "balance:7", bal-10, 0).Err() // refused if the lock has ended
	})
	fmt.Println(err)
	// Output:
	// <nil>
}

// lead is the README's election example.
func lead(ctx context.Context, locks *redlock.Client, schedule func(context.Context, uint64) error) error {
	e := locks.Election("scheduler", redlock.WithIdentity("replica-1"),
		redlock.WithValue([]byte("10.0.0.1:8080")), redlock.WithTTL(2*time.Second))
	err := e.Run(ctx, func(ctx context.Context, t *redlock.Term) error {
		// Lead until ctx ends: the term ended (context.Cause matches
		// redlock.ErrLeadershipLost) or Run's ctx was cancelled.
		return schedule(ctx, t.Fence()) // hand the fence to storage that checks it
	})
	return err
}

// The README's election example, with one candidate that leads one term.
func Example_election() {
	nodes, stop := embeddedNodes(3)
	defer stop()
	if err := declareFresh(context.Background(), nodes); err != nil {
		panic(err)
	}
	locks, _ := redlock.New(nodes)
	defer locks.Close()
	ctx, cancel := context.WithCancel(context.Background())
	err := lead(ctx, locks, func(ctx context.Context, fence uint64) error {
		fmt.Println("leading, fenced:", fence > 0)
		cancel() // the example stops after one term
		<-ctx.Done()
		return nil
	})
	fmt.Println("run:", err)
	// Output:
	// leading, fenced: true
	// run: context canceled
}
