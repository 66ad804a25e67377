//go:build unix

package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// quorumlockCmd is quorumlock as its own process (the test binary running
// main), with args.
func quorumlockCmd(t *testing.T, stderr *syncBuffer, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(testCtx(t), exe, args...)
	cmd.Env = append(os.Environ(), asMainEnv+"=1", nodesEnv+"=")
	cmd.Stderr = stderr
	return cmd
}

// statusOf is the exit status of a finished process.
func statusOf(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			t.Fatalf("quorumlock died of %v instead of exiting", ws.Signal())
		}
		return ee.ExitCode()
	}
	t.Fatal(err)
	return -1
}

// The exit statuses as a cron wrapper sees them: from the process, through
// main, with a signal sent to the process.
func TestMainExitStatuses(t *testing.T) {
	t.Run("taken", func(t *testing.T) {
		tn := runNodes(t, 3)
		tn.takenBy("k", "someone-else", time.Minute)
		err, stderr := answered(t, func() (error, string) {
			var stderr syncBuffer
			err := quorumlockCmd(t, &stderr, "run", "--nodes", strings.Join(tn.urls, ","), "--key", "k", "--bootstrap", "--no-wait", "--", "true").Run()
			return err, stderr.String()
		})
		if code := statusOf(t, err); code != exitTaken {
			t.Errorf("exit status %d, want %d; stderr:\n%s", code, exitTaken, stderr)
		}
	})
	t.Run("unavailable", func(t *testing.T) {
		tn := runNodes(t, 3)
		tn.bootstrap()
		tn.down(t, 1)
		tn.down(t, 2)
		err, stderr := answered(t, func() (error, string) {
			var stderr syncBuffer
			err := quorumlockCmd(t, &stderr, "run", "--nodes", strings.Join(tn.urls, ","), "--key", "k", "--no-wait", "--", "true").Run()
			return err, stderr.String()
		})
		if code := statusOf(t, err); code != exitUnavailable {
			t.Errorf("exit status %d, want %d; stderr:\n%s", code, exitUnavailable, stderr)
		}
		// One line, the error; none from go-redis' pool.
		out := strings.TrimSpace(stderr)
		if strings.Count(out, "\n") != 0 || !strings.HasPrefix(out, "quorumlock: ") || strings.Count(out, "connection refused") != 2 {
			t.Errorf("stderr, want one line naming both refused nodes:\n%s", out)
		}
	})
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run("waiting, "+signalName(sig), func(t *testing.T) {
			tn := runNodes(t, 3)
			tn.takenBy("k", "someone-else", time.Minute)
			ctx := testCtx(t)
			var stderr syncBuffer
			cmd := quorumlockCmd(t, &stderr, "run", "--nodes", strings.Join(tn.urls, ","), "--key", "k", "--bootstrap", "--", "true")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitOutput(t, ctx, &stderr, "waiting for lock")
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			if code := statusOf(t, cmd.Wait()); code != 128+int(sig) {
				t.Errorf("exit status %d, want %d; stderr:\n%s", code, 128+int(sig), &stderr)
			}
		})
	}
}
