package lab

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrUnsupported is returned (wrapped) by a Fleet when its backend cannot
// inject a fault; the run is then skipped with the reason.
var ErrUnsupported = errors.New("lab: fault not supported by this backend")

// Fleet is the part of a set of lock nodes the lab drives: clients for the
// default client side, more client sides (views) with their own network, and
// faults per node.
type Fleet interface {
	Len() int
	Clients() []redis.UniversalClient
	View(name string) (View, error)
	Node(i int) Node
	Close() error
}

// View is one client side with its own network path to every node.
type View interface {
	Clients() []redis.UniversalClient
	Partition(ctx context.Context, node int) error
	Heal(ctx context.Context, node int) error
}

// Node is one lock node's faults.
type Node interface {
	Kill(ctx context.Context) error
	Restart(ctx context.Context, r Restart) error
	Pause(ctx context.Context) error
	Resume(ctx context.Context) error
	Partition(ctx context.Context) error
	Heal(ctx context.Context) error
	Latency(ctx context.Context, delay, jitter time.Duration) error
	ClearLatency(ctx context.Context) error
	ClockJump(ctx context.Context, d time.Duration) error
	ClockRate(ctx context.Context, rate float64) error
}

// Restart says how a node comes back.
type Restart struct {
	WipeData  bool          // start empty, as after a crash without persistence
	Delay     time.Duration // stay down this long first
	AOFAlways bool          // run with appendfsync always (and keep the data)
}
