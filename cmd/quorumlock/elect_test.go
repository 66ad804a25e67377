//go:build unix

package main

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// electScript logs "start ID FENCE" when it starts and "stop ID FENCE" when
// it gets SIGTERM, and runs until then.
const electScript = `trap 'echo "stop $QUORUMLOCK_IDENTITY $QUORUMLOCK_FENCE" >> "$1"; exit 0' TERM
echo "start $QUORUMLOCK_IDENTITY $QUORUMLOCK_FENCE" >> "$1"
while :; do sleep 0.05; done`

func testElect(tn *testNodes, key, id string, argv ...string) (electConfig, *syncBuffer) {
	stderr := &syncBuffer{}
	return electConfig{
		command: command{nodes: tn.urls, argv: argv, stdout: stderr, stderr: stderr},
		key:     key, identity: id, ttl: time.Second, grace: 5 * time.Second, bootstrap: true,
	}, stderr
}

// electAsync starts elect with a context that a signal can end: cancel it
// with a *signalError, as main's signal context does.
func electAsync(ctx context.Context, cfg electConfig) (<-chan error, context.CancelCauseFunc) {
	ectx, cancel := context.WithCancelCause(ctx)
	done := make(chan error, 1)
	go func() { done <- elect(ectx, cfg) }()
	return done, cancel
}

// logLines reads the command log: one event per line.
func logLines(t *testing.T, path string) [][]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out [][]string
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if l != "" {
			out = append(out, strings.Fields(l))
		}
	}
	return out
}

// checkAlternates checks that the log's starts and stops alternate (never
// two commands at once) with fences strictly increasing, and returns the
// number of starts.
func checkAlternates(t *testing.T, lines [][]string) int {
	t.Helper()
	var last uint64
	starts := 0
	for i, l := range lines {
		if len(l) != 3 {
			t.Fatalf("line %d malformed: %q", i, l)
		}
		want := "start"
		if i%2 == 1 {
			want = "stop"
		}
		if l[0] != want {
			t.Fatalf("line %d is %q, want %s (two commands at once?): %q", i, l, want, lines)
		}
		f, err := strconv.ParseUint(l[2], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		if want == "start" {
			starts++
			if f <= last {
				t.Fatalf("term %d started after term %d: %q", f, last, lines)
			}
			last = f
		} else if l[1] != lines[i-1][1] || l[2] != lines[i-1][2] {
			t.Fatalf("line %d stops another command than the one started: %q", i, lines)
		}
	}
	return starts
}

// Two candidates: only the leader runs the command; the standby says who
// leads; SIGTERM to the leader stops its command, resigns, exits 143, and
// the standby runs the command at once, under a later term.
func TestElectStandbyTakesOver(t *testing.T) {
	tn := runNodes(t, 3)
	ctx := testCtx(t)
	log := filepath.Join(t.TempDir(), "log")
	cfgA, errA := testElect(tn, "sched", "a", "sh", "-c", electScript, "sh", log)
	cfgB, errB := testElect(tn, "sched", "b", "sh", "-c", electScript, "sh", log)
	// A TTL long enough that "at once" and "after the TTL" differ by far
	// more than a loaded host's delays.
	cfgA.ttl, cfgB.ttl = 6*time.Second, 6*time.Second
	doneA, cancelA := electAsync(ctx, cfgA)
	waitFor(t, ctx, "a's command", func() bool { return len(logLines(t, log)) == 1 })
	doneB, cancelB := electAsync(ctx, cfgB)
	defer cancelB(nil)
	waitOutput(t, ctx, errB, "quorumlock: waiting: leader is a (term ")
	if got := logLines(t, log); len(got) != 1 || got[0][1] != "a" {
		t.Fatalf("log %q, want only a's command started", got)
	}
	cancelA(&signalError{sig: syscall.SIGTERM})
	if code := exitCode(result(t, ctx, doneA)); code != 143 {
		t.Fatalf("a exited %d, want 143; stderr:\n%s", code, errA)
	}
	stopped := time.Now()
	waitFor(t, ctx, "b's command", func() bool { return len(logLines(t, log)) == 3 })
	if d := time.Since(stopped); d > cfgB.ttl/2 {
		t.Errorf("b took over %v after a resigned, want well within the TTL %v", d, cfgB.ttl)
	}
	lines := logLines(t, log)
	checkAlternates(t, lines)
	if lines[2][1] != "b" {
		t.Fatalf("log %q: want b to lead after a", lines)
	}
	cancelB(&signalError{sig: syscall.SIGINT})
	if code := exitCode(result(t, ctx, doneB)); code != 130 {
		t.Fatalf("b exited %d, want 130; stderr:\n%s", code, errB)
	}
	if n := checkAlternates(t, logLines(t, log)); n != 2 || len(logLines(t, log)) != 4 {
		t.Fatalf("log %q: want a's and b's commands started and stopped", logLines(t, log))
	}
	tn.released(t, "sched", cfgB.ttl)
}

// A term lost while the command runs (a majority of nodes now holds
// another token) stops the command, and elect campaigns again: the next
// command, on either candidate, runs under a later term, never beside the
// first.
func TestElectLostTermStopsCommand(t *testing.T) {
	tn := runNodes(t, 3)
	ctx := testCtx(t)
	log := filepath.Join(t.TempDir(), "log")
	cfgA, errA := testElect(tn, "lost", "a", "sh", "-c", electScript, "sh", log)
	cfgB, _ := testElect(tn, "lost", "b", "sh", "-c", electScript, "sh", log)
	doneA, cancelA := electAsync(ctx, cfgA)
	defer cancelA(nil)
	waitFor(t, ctx, "a's command", func() bool { return len(logLines(t, log)) == 1 })
	doneB, cancelB := electAsync(ctx, cfgB)
	defer cancelB(nil)
	tn.takenBy("lost", "someone-else", cfgA.ttl)
	waitOutput(t, ctx, errA, "ended")
	waitFor(t, ctx, "a's command stopped and another started", func() bool { return len(logLines(t, log)) >= 3 })
	checkAlternates(t, logLines(t, log))
	if !strings.Contains(errA.String(), "sent SIGTERM") {
		t.Fatalf("a's stderr does not say the command was stopped:\n%s", errA)
	}
	cancelA(&signalError{sig: syscall.SIGTERM})
	cancelB(&signalError{sig: syscall.SIGTERM})
	for _, done := range []<-chan error{doneA, doneB} {
		if code := exitCode(result(t, ctx, done)); code != 143 {
			t.Fatalf("exit %d, want 143", code)
		}
	}
	if n := len(logLines(t, log)); n%2 != 0 {
		t.Fatalf("a command left running: %q", logLines(t, log))
	}
	checkAlternates(t, logLines(t, log))
}

// A command that exits on its own ends elect with its status, and the
// leadership is resigned at once.
func TestElectCommandExitResigns(t *testing.T) {
	tn := runNodes(t, 3)
	ctx := testCtx(t)
	cfg, stderr := testElect(tn, "once", "a", "sh", "-c", `test "$QUORUMLOCK_FENCE" -gt 0 && exit 3`)
	done, cancel := electAsync(ctx, cfg)
	defer cancel(nil)
	if code := exitCode(result(t, ctx, done)); code != 3 {
		t.Fatalf("exit %d, want the command's 3; stderr:\n%s", code, stderr)
	}
	if n := tn.holders("once"); n != 0 {
		t.Fatalf("the term's lock is still on %d nodes", n)
	}
}

// inspect names the leader of an election key.
func TestElectInspectShowsLeader(t *testing.T) {
	tn := runNodes(t, 3)
	ctx := testCtx(t)
	log := filepath.Join(t.TempDir(), "log")
	cfg, _ := testElect(tn, "shown", "leader-1", "sh", "-c", electScript, "sh", log)
	done, cancel := electAsync(ctx, cfg)
	waitFor(t, ctx, "the command", func() bool { return len(logLines(t, log)) == 1 })
	out, err := execCmd(t, newInspectCmd(), "--nodes", strings.Join(tn.urls, ","), "shown")
	if err != nil {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	want := "election leader leader-1 (term " + logLines(t, log)[0][2] + ")"
	if !strings.Contains(out, want) {
		t.Fatalf("inspect output lacks %q:\n%s", want, out)
	}
	cancel(&signalError{sig: syscall.SIGTERM})
	_ = result(t, ctx, done)
}
