// Package integration runs quorumlock against real Redis nodes (docker
// containers started by cluster): interoperation with go-redsync/redsync on
// the same keys, a side-by-side behaviour table, and the benchmarks of
// issue #4 (go test -bench .; see also `quorumlock bench`).
//
// Without docker the tests skip loudly, and fail under CI=true.
package integration

import (
	"testing"

	"github.com/quorumlock/quorumlock/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }
