package main

import (
	"testing"

	"github.com/spf13/cobra"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
