// Package reintroduce puts back, one at a time, defects of issue #10 that
// package redlock fixed, so that the lab's tests can check that the fault
// explorer finds each one and passes the same schedules without it. Each
// switch is off unless a test turns it on; being internal, the package is
// out of reach of the library's users, and nothing but the lab's tests sets
// it.
package reintroduce

import "sync/atomic"

var (
	// FenceWithoutClockFloor (defect 1): the fence token is the highest
	// counter + 1 only, without the floor from the nodes' clocks, so tokens
	// repeat or go down after the nodes holding the counter lose their data.
	FenceWithoutClockFloor atomic.Bool
	// BootstrapDeclaresAll (defect 3): Bootstrap declares every node with
	// young or missing data fresh although other nodes are in service, so a
	// node that restarted without its data votes at once.
	BootstrapDeclaresAll atomic.Bool
	// ValidityBeforeCleanup (defect 6): Acquire checks the lock's validity
	// before ending its release subscription, and that cleanup waits on
	// every node without a deadline of the caller's; a hung node then makes
	// Acquire return a lock that has already expired.
	ValidityBeforeCleanup atomic.Bool
	// HandOverAnyTTL (issue #12, hand-over within a Client): a lock is
	// handed to a waiter of the same Client whatever the waiter's TTL; the
	// waiter keeps the old validity and extends with its own, shorter TTL,
	// so the keys expire before its validity ends.
	HandOverAnyTTL atomic.Bool
)
