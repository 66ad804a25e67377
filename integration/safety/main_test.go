// Package safety runs the experiment on five docker nodes that the lab's
// scenarios do not cover: ten thousand acquisitions with the restart
// quarantine and the clock-skew guard on (the defaults) must see no vote
// refused, and a node that then restarts with its data kept (AOF fsync
// always) must still be noticed by its new run id and quarantined.
//
// The attacks of issue #6 (a holder on a bare majority, one of its nodes
// restarted empty, restarted late, restarted with AOF, or its clock jumped;
// a second client trying inside the holder's validity) run in the lab, on
// the same docker nodes, with both libraries: lab.TestDockerScenarios and
// `quorumlock lab --backend docker`.
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
