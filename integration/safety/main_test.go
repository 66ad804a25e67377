// Package safety runs the safety experiments of issue #6 on five docker
// nodes: client A holds a lock on exactly a bare majority, one of A's nodes
// loses A's key (restarted empty, or its wall clock jumps past the TTL), and
// client B, which sees every node, tries to take the same lock while A's
// validity lasts. A checker fails on any overlap of the two clients' holding
// intervals [acquired, min(released, Until)], all read on this process's
// monotonic clock.
//
// quorumlock runs with its defaults (restart quarantine of one TTL,
// clock-skew guard of TTL/10) and must never overlap. go-redsync/redsync v4
// runs the same schedule and must overlap where the attack works (a restart
// inside the TTL, a clock jump): if it does not, the attack has lost its
// shape and the experiment says nothing, so that fails too. A delayed
// restart is the control where both are safe. A last test runs ten thousand
// acquisitions with both guards on and insists that neither refused a single
// vote, and that a restart that keeps its data is still noticed.
//
// Without docker the tests skip loudly, and fail under CI=true.
package safety

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/internal/leaktest"
)

func TestMain(m *testing.M) {
	// go-redis logs every failed dial, and the experiments cut clients off
	// nodes on purpose.
	redis.SetLogger(quiet{})
	leaktest.VerifyTestMain(m)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}
