package redlock

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors. Each has one meaning; match them with errors.Is. A failed
// round returns a *RoundError whose Reason is exactly one of them (or the
// context's error), with the per-node detail behind it.
var (
	// ErrTaken: other owners hold the key, or other waiters are ahead in
	// its queue, on enough nodes that no majority is possible: the lock is
	// busy.
	ErrTaken = errors.New("redlock: taken")
	// ErrNoQuorum: too few nodes said yes for a decision, and not because
	// the key is taken: nodes unreachable or slow, in their restart
	// quarantine, or with skewed clocks (NodeError.Reason says which).
	ErrNoQuorum = errors.New("redlock: no quorum")
	// ErrExpired: the lock's validity ended (measured on the local
	// monotonic clock), or the round took longer than the TTL allows.
	ErrExpired = errors.New("redlock: validity ended")
	// ErrNotHeld: a majority of nodes no longer holds this lock's token, or
	// the lock was already released.
	ErrNotHeld = errors.New("redlock: not held")
	// ErrLockLost is what a lock's Err (and the cause of its context)
	// matches when the lock ended without a Release; it wraps why
	// (ErrExpired or ErrNotHeld).
	ErrLockLost = errors.New("redlock: lock lost")
	// ErrReleased is a lock's Err after its holder released it.
	ErrReleased = errors.New("redlock: released")
	// ErrStaleFence: FencedSet refused a write because a higher fence token
	// was already accepted for the resource.
	ErrStaleFence = errors.New("redlock: stale fence token")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("redlock: client closed")
	// ErrLeadershipLost is what a Term's Err (and the cause of its
	// context) matches once the term is over: its lock was lost (it wraps
	// ErrLockLost and why), or released by Resign (it wraps ErrReleased).
	ErrLeadershipLost = errors.New("redlock: leadership lost")
	// ErrNoLeader: Election.Leader found no process leading the election.
	ErrNoLeader = errors.New("redlock: no leader")
)

// RoundError is a failed acquire, extend or release. Unwrap returns Reason
// only, so errors.Is(err, ErrTaken) means the key is taken on a quorum, not
// that some node refused.
type RoundError struct {
	Op       string // "acquire", "extend", "release", "proclaim" or "leader"
	Key      string
	Reason   error // ErrTaken, ErrNoQuorum, ErrExpired, ErrNotHeld, ErrClosed, or the ctx's error
	Granted  int   // nodes that said yes in the last round
	Needed   int   // the majority
	Attempts int   // acquire: attempts made
	// Nodes are the nodes that did not say yes in the last round, in node
	// order.
	Nodes []*NodeError
	// detail completes the reason ("already released", "waiting for the
	// restart quarantine of nodes 0, 1").
	detail string
	// cleanup is closed once a failed acquisition's keys are deleted
	// wherever they may have landed.
	cleanup <-chan struct{}
}

func (e *RoundError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redlock: %s %q: %s", e.Op, e.Key, reasonText(e.Reason))
	if e.detail != "" {
		b.WriteString(" (")
		b.WriteString(e.detail)
		b.WriteString(")")
	}
	if e.Needed > 0 && (e.Granted > 0 || len(e.Nodes) > 0) {
		fmt.Fprintf(&b, "; %d of %d needed nodes said yes", e.Granted, e.Needed)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " in the last of %d attempts", e.Attempts)
	}
	for _, n := range e.Nodes {
		b.WriteString("; ")
		b.WriteString(n.text())
	}
	return b.String()
}

// Unwrap returns the reason.
func (e *RoundError) Unwrap() error { return e.Reason }

// NodeReason says why a node did not say yes.
type NodeReason uint8

const (
	// NodeFailed: the node could not be reached, answered with an error,
	// or did not answer within the node timeout; Err says which.
	NodeFailed NodeReason = iota
	// NodeTaken: the node holds the key for another owner.
	NodeTaken
	// NodeQuarantined: the node's data is younger than the restart
	// quarantine (it restarted, lost its data, or is new), so it does not
	// vote yet.
	NodeQuarantined
	// NodeSkewed: the node's clock disagrees with this client's by more
	// than the allowed skew.
	NodeSkewed
	// NodeNotHeld: the node no longer holds this lock's token (extend,
	// release).
	NodeNotHeld
	// NodeQueued: other waiters are ahead in the key's queue on the node
	// (Ahead says how many), so it grants the key to them first.
	NodeQueued
)

func (r NodeReason) String() string {
	switch r {
	case NodeTaken:
		return "taken"
	case NodeQuarantined:
		return "quarantined"
	case NodeSkewed:
		return "skewed"
	case NodeNotHeld:
		return "not held"
	case NodeQueued:
		return "queued"
	default:
		return "failed"
	}
}

// NodeError is one node's part in a failed round.
type NodeError struct {
	Node   int    // 0-based index in the slice given to New
	Addr   string // the node's address, when known
	Reason NodeReason
	// Wait is, for NodeTaken, how long the node keeps the other owner's key
	// (negative when it has no expiry); for NodeQuarantined, how long until
	// the node votes again; for NodeSkewed, the node's clock minus this
	// client's.
	Wait time.Duration
	// Ahead is, for NodeQueued, how many waiters are ahead of this one.
	Ahead int
	Err   error // for NodeFailed: what went wrong
}

func (e *NodeError) Error() string { return "redlock: " + e.text() }

func (e *NodeError) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "node %d", e.Node)
	if e.Addr != "" {
		fmt.Fprintf(&b, " (%s)", e.Addr)
	}
	b.WriteString(": ")
	switch e.Reason {
	case NodeTaken:
		if e.Wait < 0 {
			b.WriteString("held by another owner, with no expiry")
		} else {
			fmt.Fprintf(&b, "held by another owner for %v", e.Wait.Round(time.Millisecond))
		}
	case NodeQuarantined:
		fmt.Fprintf(&b, "in its restart quarantine for %v more", e.Wait.Round(time.Millisecond))
	case NodeSkewed:
		fmt.Fprintf(&b, "clock off by %v from this client's", e.Wait.Round(time.Millisecond))
	case NodeNotHeld:
		b.WriteString("token gone")
	case NodeQueued:
		fmt.Fprintf(&b, "%d waiters ahead in the queue", e.Ahead)
	default:
		b.WriteString(reasonText(e.Err))
	}
	return b.String()
}

// Unwrap returns Err.
func (e *NodeError) Unwrap() error { return e.Err }

// reasonText is an error's message without this package's prefix, for use
// inside a longer message.
func reasonText(err error) string {
	if err == nil {
		return "unknown"
	}
	return strings.TrimPrefix(err.Error(), "redlock: ")
}

// lostError is a lock's Err when it ended without a Release.
type lostError struct {
	key    string
	reason error // ErrExpired or ErrNotHeld, possibly wrapped with detail
}

func (e *lostError) Error() string {
	return fmt.Sprintf("redlock: lock %q lost: %s", e.key, reasonText(e.reason))
}

func (e *lostError) Is(target error) bool { return target == ErrLockLost }
func (e *lostError) Unwrap() error        { return e.reason }

// withDetail wraps a sentinel with words that say more, keeping it
// matchable: errors.Is(withDetail(ErrExpired, "x"), ErrExpired).
func withDetail(err error, detail string) error {
	return &detailError{err: err, detail: detail}
}

type detailError struct {
	err    error
	detail string
}

func (e *detailError) Error() string { return e.err.Error() + ": " + e.detail }
func (e *detailError) Unwrap() error { return e.err }

// termError is a Term's Err once the term is over.
type termError struct {
	name   string
	reason error // the lock's cause: ErrReleased or a lost lock's error
}

func (e *termError) Error() string {
	return fmt.Sprintf("redlock: leadership of election %q ended: %s", e.name, reasonText(e.reason))
}

func (e *termError) Is(target error) bool { return target == ErrLeadershipLost }
func (e *termError) Unwrap() error        { return e.reason }
