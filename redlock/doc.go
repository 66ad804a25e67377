// Package redlock implements Redlock, the distributed lock that holds a
// majority of N independent Redis masters (redis.io, "Distributed Locks with
// Redis"), with what holding a lock safely needs on top: a signal when the
// lock ends, auto-extension, a guarded client that refuses writes after
// expiry, fence tokens across the quorum, a restart quarantine and a
// clock-skew guard.
//
// The happy path:
//
//	nodes := []redis.UniversalClient{
//		redis.NewClient(&redis.Options{Addr: "10.0.0.1:6379"}),
//		redis.NewClient(&redis.Options{Addr: "10.0.0.2:6379"}),
//		redis.NewClient(&redis.Options{Addr: "10.0.0.3:6379"}),
//	}
//	locks, err := redlock.New(nodes)
//	if err != nil { ... }
//	defer locks.Close()
//	err = locks.Do(ctx, "invoice:42", func(ctx context.Context) error {
//		return charge(ctx) // ctx is cancelled if the lock is lost
//	})
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
