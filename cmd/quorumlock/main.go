// Command quorumlock runs commands under a Redlock lock, runs correctness
// experiments against Redis nodes (the lab) and benchmarks the library
// against go-redsync/redsync.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "quorumlock",
		Short:         "Redlock across independent Redis masters: run under a lock, lab, bench",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, add := range subcommands {
		root.AddCommand(add())
	}
	return root
}

// subcommands is filled by the init functions of the files that define each
// subcommand, so that each one lives in its own file.
var subcommands []func() *cobra.Command

func main() {
	// The CLI reports node failures itself, once and in its own words; the
	// pool's log of every failed dial would bury them.
	redis.SetLogger(quietRedis{})
	ctx, stop := signalContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	os.Exit(report(os.Stderr, err))
}

// report prints err, if any, and returns the exit status it stands for.
func report(w io.Writer, err error) int {
	if err == nil {
		return 0
	}
	fmt.Fprintln(w, "quorumlock:", err)
	var ec exitCoder
	if asExitCoder(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}

// signalContext is signal.NotifyContext with the signal as the context's
// cause (a *signalError), so that a command interrupted while it waits can
// exit with 128+N as the shell expects.
func signalContext(parent context.Context, sigs ...os.Signal) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, sigs...)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-ch:
			cancel(&signalError{sig: toSignal(s)})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		cancel(context.Canceled)
	}
}

// quietRedis is go-redis' logger for the CLI: silent.
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}
