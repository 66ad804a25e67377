package main

import (
	"os"
	"testing"

	"github.com/spf13/cobra"

	"github.com/quorumlock/quorumlock/internal/leaktest"
)

// asMainEnv makes the test binary run main instead of the tests, so that
// tests can run quorumlock as the separate process an operator runs.
const asMainEnv = "QUORUMLOCK_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMainEnv) == "1" {
		main()
		return
	}
	leaktest.VerifyTestMain(m)
}

// execCmd runs a subcommand with args and returns what it printed.
func execCmd(t *testing.T, c *cobra.Command, args ...string) (string, error) {
	t.Helper()
	var out syncBuffer
	c.SetArgs(args)
	c.SetOut(&out)
	c.SetErr(&out)
	c.SilenceUsage, c.SilenceErrors = true, true
	err := c.ExecuteContext(testCtx(t))
	return out.String(), err
}
