// Package redlock implements Redlock, the distributed lock that holds a
// majority of N independent Redis masters (redis.io, "Distributed Locks with
// Redis"), with what holding a lock safely needs on top: a signal when the
// lock ends, auto-extension, a guarded client that refuses writes after
// expiry, fence tokens across the quorum, a restart quarantine and a
// clock-skew guard.
//
// The happy path, with plain go-redis clients (the library bounds each
// request itself; the clients need no special options):
//
//	func chargeOnce(ctx context.Context, addrs []string) error {
//		var nodes []redis.UniversalClient // independent masters: not a cluster, not replicas
//		for _, addr := range addrs {
//			nodes = append(nodes, redis.NewClient(&redis.Options{Addr: addr}))
//		}
//		locks, err := redlock.New(nodes)
//		if err != nil {
//			return err
//		}
//		defer locks.Close()
//		return locks.Do(ctx, "invoice:42", func(ctx context.Context) error {
//			return charge(ctx) // cancelled, with its cause, if the lock is lost; extends itself
//		})
//	}
//
// Freshly deployed nodes refuse to vote for one TTL (the restart
// quarantine: a node whose data is younger than a TTL may have lost lock
// keys). Declare them once after deploying them, never at every start:
//
//	return locks.Bootstrap(ctx) // a no-op on nodes already in service
//
// or run "quorumlock bootstrap --nodes ...". Without it the first lock waits
// one TTL, and a Client with WithLogger says why once.
//
// Algorithm: the caller reads its monotonic clock, sends SET key token NX PX
// ttl to every node at once (each request bounded by a small timeout), and
// holds the lock when a majority granted it and the validity
// ttl − elapsed − drift is still positive. A failed attempt deletes the key
// wherever it may have landed before retrying after a random delay. Release
// and Extend check the token in a Lua script.
//
// Leader election (Client.Election) is built on the same lock: a term is the
// fenced, auto-extended lock on the election's name, ended locally — its
// context cancelled with ErrLeadershipLost — no later than its validity;
// Election.Run keeps a function running on the leader only.
//
// What Redlock does not guarantee: a lock is a lease. A client paused past
// its validity (GC, swap, a stopped VM), a node that loses its data within a
// TTL, or a node whose clock jumps can all let two clients believe they hold
// the lock. This package narrows each window (Done and the guarded client for
// pauses, the restart quarantine for data loss, the skew guard for clock
// jumps) and offers fence tokens to close the first one at the storage; the
// README's "What can still go wrong" lists what remains.
package redlock
