package redlock

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors. Match them with errors.Is; the errors returned by this
// package carry more detail (which nodes, why) behind them.
var (
	// ErrNotObtained: the lock was not acquired. The error also matches the
	// reason: ErrTaken, ErrQuarantined, ErrClockSkew, ErrExpired, or the
	// context's error when ctx ended the wait.
	ErrNotObtained = errors.New("redlock: not obtained")
	// ErrNotHeld: a majority of nodes no longer holds this lock's token, or
	// its validity has ended.
	ErrNotHeld = errors.New("redlock: not held")
	// ErrLockLost is the cause of a lock's context (and of Done closing)
	// when the lock was lost rather than released; it wraps the reason.
	ErrLockLost = errors.New("redlock: lock lost")
	// ErrReleased is the cause of a lock's context after Release.
	ErrReleased = errors.New("redlock: released")
	// ErrExpired: the lock's validity ended (locally measured).
	ErrExpired = errors.New("redlock: validity ended")
	// ErrMaxHold: auto-extension stopped because the lock reached its
	// maximum hold time.
	ErrMaxHold = errors.New("redlock: maximum hold time reached")
	// ErrNoQuorum: too few nodes answered for a decision either way.
	ErrNoQuorum = errors.New("redlock: no quorum")
	// ErrTaken: a node holds the key under another owner's token.
	ErrTaken = errors.New("redlock: held by another owner")
	// ErrQuarantined: a node refused to vote because its data is younger
	// than the restart quarantine.
	ErrQuarantined = errors.New("redlock: node in restart quarantine")
	// ErrClockSkew: a node refused to vote because its clock disagrees with
	// the caller's by more than the allowed skew.
	ErrClockSkew = errors.New("redlock: node clock skewed")
	// ErrStaleFence: a fenced write was refused because a higher fence token
	// was already seen for the resource.
	ErrStaleFence = errors.New("redlock: stale fence token")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("redlock: client closed")
)

// NodeError is the outcome of one node that did not grant a request. It
// names the node and unwraps to the cause (a *TakenError, *QuarantineError,
// *SkewError, or the connection error).
type NodeError struct {
	Node int    // index in the slice given to New
	Addr string // address of the node, when known
	Err  error
}

func (e *NodeError) Error() string {
	if e.Addr == "" {
		return fmt.Sprintf("node %d: %v", e.Node, e.Err)
	}
	return fmt.Sprintf("node %d (%s): %v", e.Node, e.Addr, e.Err)
}

func (e *NodeError) Unwrap() error { return e.Err }

// TakenError reports that a node holds the key under another token.
type TakenError struct {
	// TTL is how long the node will keep the other owner's key, as the node
	// reported it (negative when the key has no expiry).
	TTL time.Duration
}

func (e *TakenError) Error() string {
	return fmt.Sprintf("held by another owner for %v", e.TTL)
}

// Is makes a *TakenError match ErrTaken.
func (e *TakenError) Is(target error) bool { return target == ErrTaken }

// QuarantineError reports a node that refused to vote because its data is
// younger than the restart quarantine.
type QuarantineError struct {
	Remaining time.Duration // until the node votes again
}

func (e *QuarantineError) Error() string {
	return fmt.Sprintf("restart quarantine: data younger than the quarantine, votes again in %v", e.Remaining)
}

// Is makes a *QuarantineError match ErrQuarantined.
func (e *QuarantineError) Is(target error) bool { return target == ErrQuarantined }

// SkewError reports a node whose clock disagrees with the caller's.
type SkewError struct {
	Skew time.Duration // node clock − caller clock
	Max  time.Duration // the bound that was exceeded
}

func (e *SkewError) Error() string {
	return fmt.Sprintf("clock skew %v beyond the bound %v", e.Skew, e.Max)
}

// Is makes a *SkewError match ErrClockSkew.
func (e *SkewError) Is(target error) bool { return target == ErrClockSkew }

// NotObtainedError is returned when a lock was not acquired. It matches
// ErrNotObtained, and unwraps to the per-node errors (each a *NodeError) and
// to the cause that ended the attempt (ctx.Err(), ErrExpired), so that
// errors.Is(err, context.DeadlineExceeded) or errors.Is(err, ErrTaken) tell
// why.
type NotObtainedError struct {
	Key      string
	Granted  int          // nodes that granted the last attempt
	Needed   int          // majority
	Attempts int          // attempts made
	Nodes    []*NodeError // nodes that did not grant the last attempt
	Cause    error        // what ended the attempts, if not the votes
}

func (e *NotObtainedError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redlock: not obtained %q: %d of %d needed nodes granted", e.Key, e.Granted, e.Needed)
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	if e.Cause != nil {
		fmt.Fprintf(&b, ": %v", e.Cause)
	}
	for _, n := range e.Nodes {
		b.WriteString("; ")
		b.WriteString(n.Error())
	}
	return b.String()
}

// Is makes a *NotObtainedError match ErrNotObtained.
func (e *NotObtainedError) Is(target error) bool { return target == ErrNotObtained }

// Unwrap returns the cause and the per-node errors.
func (e *NotObtainedError) Unwrap() []error {
	errs := make([]error, 0, len(e.Nodes)+1)
	if e.Cause != nil {
		errs = append(errs, e.Cause)
	}
	for _, n := range e.Nodes {
		errs = append(errs, n)
	}
	return errs
}

// QuorumError is returned by Extend and Release when the nodes did not agree
// on an outcome: it matches ErrNotHeld when a majority said the token is no
// longer there (or the validity ended), ErrNoQuorum when too few answered.
type QuorumError struct {
	Op     string // "extend" or "release"
	Key    string
	Done   int          // nodes where the operation took effect
	Needed int          // majority
	Nodes  []*NodeError // nodes where it did not
	Reason error        // ErrNotHeld or ErrNoQuorum, possibly wrapping ErrExpired
}

func (e *QuorumError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redlock: %s %q: %v (%d of %d needed nodes)", e.Op, e.Key, e.Reason, e.Done, e.Needed)
	for _, n := range e.Nodes {
		b.WriteString("; ")
		b.WriteString(n.Error())
	}
	return b.String()
}

// Unwrap returns the reason and the per-node errors.
func (e *QuorumError) Unwrap() []error {
	errs := make([]error, 0, len(e.Nodes)+1)
	errs = append(errs, e.Reason)
	for _, n := range e.Nodes {
		errs = append(errs, n)
	}
	return errs
}

// LostError is the cause of a lock's context when the lock was lost. It
// matches ErrLockLost and unwraps to the reason (ErrExpired, ErrMaxHold,
// ErrNotHeld, or the last extension error).
type LostError struct {
	Key    string
	Reason error
}

func (e *LostError) Error() string {
	return fmt.Sprintf("redlock: lock %q lost: %v", e.Key, e.Reason)
}

// Is makes a *LostError match ErrLockLost.
func (e *LostError) Is(target error) bool { return target == ErrLockLost }

// Unwrap returns the reason.
func (e *LostError) Unwrap() error { return e.Reason }
