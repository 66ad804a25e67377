//go:build unix

package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// command is what run and elect share: the nodes, the command given after
// --, and the standard streams it inherits.
type command struct {
	nodes []string
	tls   tlsFiles
	argv  []string

	stdin          io.Reader
	stdout, stderr io.Writer
}

// fromArgs fills cmd from the command line: the nodes from their flags, the
// command from what follows --.
func (cmd *command) fromArgs(c *cobra.Command, args []string, nodes *nodeFlags) error {
	if c.ArgsLenAtDash() > 0 {
		return fmt.Errorf("unexpected arguments %q before --: put the command after --", args[:c.ArgsLenAtDash()])
	}
	var err error
	if cmd.nodes, cmd.tls, err = nodes.resolve(); err != nil {
		return err
	}
	cmd.argv = args
	cmd.stdin, cmd.stdout, cmd.stderr = c.InOrStdin(), c.OutOrStdout(), c.ErrOrStderr()
	return nil
}

// check refuses a missing or empty command name; example shows the
// subcommand's usage.
func (cmd *command) check(example string) error {
	switch {
	case len(cmd.argv) == 0:
		return fmt.Errorf("no command: give it after --, e.g. %s", example)
	case cmd.argv[0] == "":
		return errors.New("the command name is empty")
	}
	return nil
}

// bootstrapHelp is the --bootstrap flag's help, shared by the commands that
// take it.
const bootstrapHelp = "first declare the nodes freshly deployed (as quorumlock bootstrap does), so they vote without a restart quarantine; it never shortens the quarantine of a restarted minority, but takes a majority that lost its data at once for a fresh deployment"
