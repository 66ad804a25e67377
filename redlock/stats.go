package redlock

import "sync/atomic"

// Stats are counters since the Client was created.
type Stats struct {
	Acquired         uint64 // locks obtained
	Attempts         uint64 // acquisition attempts (rounds)
	VotesTaken       uint64 // node votes refused because another owner held the key
	VotesQuarantined uint64 // node votes refused by the restart quarantine
	VotesSkewed      uint64 // node votes refused by the clock-skew guard
	VotesFailed      uint64 // node requests that failed or timed out
	VotesQueued      uint64 // node votes refused because other waiters were ahead in the queue
	HandedOff        uint64 // locks passed to a waiter of this Client without a round trip
	Granted          uint64 // locks a release granted to this Client's waiter, without a round of its own
	Extended         uint64 // successful extensions
	Repaired         uint64 // lock keys set again by an extension on a node that had lost them
	Released         uint64 // successful releases
	Lost             uint64 // locks lost while held (expired, extension refused)
}

type counters struct {
	acquired, attempts, taken, quarantined, skewed, failed, queued, handedOff, granted, repaired, extended, released, lost atomic.Uint64
	extendRefused, extendFailed                                                                                            atomic.Uint64
	holding, waiting                                                                                                       atomic.Int64
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	s := &c.stats
	return Stats{
		Acquired: s.acquired.Load(), Attempts: s.attempts.Load(),
		VotesTaken: s.taken.Load(), VotesQuarantined: s.quarantined.Load(), VotesSkewed: s.skewed.Load(),
		VotesFailed: s.failed.Load(), VotesQueued: s.queued.Load(), HandedOff: s.handedOff.Load(), Granted: s.granted.Load(),
		Repaired: s.repaired.Load(), Extended: s.extended.Load(), Released: s.released.Load(), Lost: s.lost.Load(),
	}
}
