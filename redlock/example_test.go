package redlock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/redlock"
)

// embeddedNodes starts n in-process Redis servers and returns a client for
// each; a real deployment passes clients of independent Redis masters.
func embeddedNodes(n int) ([]redis.UniversalClient, func()) {
	var nodes []redis.UniversalClient
	var stops []func()
	for i := 0; i < n; i++ {
		mr, err := miniredis.Run()
		if err != nil {
			panic(err)
		}
		mr.ClockTTL(true) // keys expire in real time, as on Redis
		rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
		nodes = append(nodes, rdb)
		stops = append(stops, func() { _ = rdb.Close(); mr.Close() })
	}
	return nodes, func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// Run a critical section under a lock held on a majority of three nodes.
func Example() {
	nodes, stop := embeddedNodes(3)
	defer stop()
	ctx := context.Background()

	locks, err := redlock.New(nodes)
	if err != nil {
		panic(err)
	}
	defer locks.Close()
	_ = locks.Bootstrap(ctx) // fresh nodes: no restart quarantine

	err = locks.Do(ctx, "invoice:42", func(ctx context.Context) error {
		// ctx is cancelled if the lock is lost; the lock extends itself.
		fmt.Println("charging invoice 42 once")
		return nil
	})
	fmt.Println("error:", err)
	// Output:
	// charging invoice 42 once
	// error: <nil>
}

// Acquire and release by hand; a second client sees the key taken.
func ExampleClient_Acquire() {
	nodes, stop := embeddedNodes(3)
	defer stop()
	ctx := context.Background()
	a, _ := redlock.New(nodes, redlock.WithTTL(10*time.Second))
	b, _ := redlock.New(nodes, redlock.WithTTL(10*time.Second))
	defer a.Close()
	defer b.Close()
	_ = a.Bootstrap(ctx)

	l, err := a.Acquire(ctx, "report")
	if err != nil {
		panic(err)
	}
	_, err = b.TryAcquire(ctx, "report")
	fmt.Println("taken:", errors.Is(err, redlock.ErrTaken))
	fmt.Println("valid for most of the TTL:", time.Until(l.Until()) > 9*time.Second)
	fmt.Println("release:", l.Release(ctx))
	// Output:
	// taken: true
	// valid for most of the TTL: true
	// release: <nil>
}

// Fence tokens make the store refuse a write from a holder whose lock
// expired while it was paused.
func ExampleFencedSet() {
	nodes, stop := embeddedNodes(3)
	defer stop()
	store, stopStore := embeddedNodes(1)
	defer stopStore()
	ctx := context.Background()
	locks, _ := redlock.New(nodes, redlock.WithFencing(true), redlock.WithTTL(time.Second))
	defer locks.Close()
	_ = locks.Bootstrap(ctx)

	old, _ := locks.Acquire(ctx, "doc")
	<-old.Done() // the holder stalls past its validity...
	next, _ := locks.Acquire(ctx, "doc")
	fmt.Println("newer token:", next.Fence() > old.Fence())

	fmt.Println("new holder writes:", redlock.FencedSet(ctx, store[0], "doc:body", "v2", next.Fence()))
	err := redlock.FencedSet(ctx, store[0], "doc:body", "v1", old.Fence())
	fmt.Println("stale write refused:", errors.Is(err, redlock.ErrStaleFence))
	_ = next.Release(ctx)
	// Output:
	// newer token: true
	// new holder writes: <nil>
	// stale write refused: true
}

// A guarded client refuses commands issued under a lock that has ended.
func ExampleGuard() {
	nodes, stop := embeddedNodes(3)
	defer stop()
	store, stopStore := embeddedNodes(1)
	defer stopStore()
	ctx := context.Background()
	locks, _ := redlock.New(nodes)
	defer locks.Close()
	_ = locks.Bootstrap(ctx)
	redlock.Guard(store[0])

	l, _ := locks.Acquire(ctx, "account", redlock.WithTTL(200*time.Millisecond))
	lctx, cancel := l.Context(ctx)
	defer cancel()
	fmt.Println("while valid:", store[0].Set(lctx, "balance", 90, 0).Err())
	<-lctx.Done()
	err := store[0].Set(lctx, "balance", 80, 0).Err()
	fmt.Println("after expiry refused:", errors.Is(err, redlock.ErrLockLost))
	// Output:
	// while valid: <nil>
	// after expiry refused: true
}
