// Package leaktest checks, after a package's tests, that they left no
// goroutine running: goleak with more patience.
//
// A go-redis pool that failed to dial a node (killed or partitioned on
// purpose) as often as its size redials from a goroutine that sleeps a second
// between tries and notices that its pool was closed only when it wakes up;
// goleak's own retries give up before that.
package leaktest

import (
	"fmt"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Patience is how long VerifyTestMain waits for goroutines to end.
const Patience = 3 * time.Second

// VerifyTestMain runs the tests and then fails the run if goroutines are
// still running after Patience.
func VerifyTestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := Find(Patience); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Find retries goleak.Find until it reports nothing or patience runs out.
func Find(patience time.Duration) error {
	deadline := time.Now().Add(patience)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
