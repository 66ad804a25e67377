//go:build unix

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/quorumlock/quorumlock/redlock"
)

// testNodes are embedded Redis masters, reachable by URL like real ones.
type testNodes struct {
	mr   []*miniredis.Miniredis
	urls []string
}

func newNodes(t *testing.T, n int) *testNodes {
	t.Helper()
	tn := &testNodes{}
	for i := 0; i < n; i++ {
		mr := miniredis.RunT(t)
		tn.mr = append(tn.mr, mr)
		tn.urls = append(tn.urls, "redis://"+mr.Addr())
	}
	return tn
}

// holders counts the nodes where key exists.
func (tn *testNodes) holders(key string) int {
	n := 0
	for _, mr := range tn.mr {
		if mr.Exists(key) {
			n++
		}
	}
	return n
}

// syncBuffer collects the output of the command and of quorumlock, which
// write from different goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testRun is a run on tn with short timings and bootstrapped nodes. The node
// timeout is generous: miniredis keys never expire on their own, so a
// release that timed out under the race detector would leave the key behind
// for good.
func testRun(tn *testNodes, key string, argv ...string) (runConfig, *syncBuffer, *syncBuffer) {
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	return runConfig{
		nodes: tn.urls, key: key, ttl: 2 * time.Second, grace: 2 * time.Second,
		bootstrap: true, argv: argv, stdout: stdout, stderr: stderr,
		lockOpts: []redlock.LockOption{redlock.WithNodeTimeout(250 * time.Millisecond)},
	}, stdout, stderr
}

// testCtx bounds a test that waits for locks and commands.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// exitCode returns the status quorumlock would exit with for err.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ec exitCoder
	if asExitCoder(err, &ec) {
		return ec.ExitCode()
	}
	return 1
}

// waitFile waits until path exists, bounded.
func waitFile(t *testing.T, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within 10s", path)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// runAsync starts runLocked and returns the channel its result arrives on.
func runAsync(ctx context.Context, cfg runConfig) <-chan error {
	done := make(chan error, 1)
	go func() { done <- runLocked(ctx, cfg) }()
	return done
}

// result waits for a run started by runAsync, bounded.
func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return within 20s")
		return nil
	}
}

func TestRunExclusive(t *testing.T) {
	tn := newNodes(t, 3)
	log := filepath.Join(t.TempDir(), "log")
	const runs = 4
	ctx := testCtx(t)
	var results []<-chan error
	for i := 0; i < runs; i++ {
		cfg, _, _ := testRun(tn, "nightly-report", "sh", "-c",
			`echo "start $QUORUMLOCK_TOKEN" >> "$1"; sleep 0.1; echo "end $QUORUMLOCK_TOKEN" >> "$1"`, "sh", log)
		results = append(results, runAsync(ctx, cfg))
	}
	for _, done := range results {
		if err := result(t, done); err != nil {
			t.Fatalf("run: %v", err)
		}
	}
	data, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 2*runs {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), 2*runs, data)
	}
	tokens := map[string]bool{}
	for i := 0; i < len(lines); i += 2 {
		start, end := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(start) != 2 || start[0] != "start" || len(end) != 2 || end[0] != "end" || start[1] != end[1] {
			t.Fatalf("runs overlap at line %d:\n%s", i+1, data)
		}
		tokens[start[1]] = true
	}
	if len(tokens) != runs {
		t.Errorf("got %d distinct tokens, want %d:\n%s", len(tokens), runs, data)
	}
	if n := tn.holders("nightly-report"); n != 0 {
		t.Errorf("key left on %d nodes after the runs", n)
	}
}

func TestRunNoWaitTaken(t *testing.T) {
	tn := newNodes(t, 3)
	for _, mr := range tn.mr {
		mr.Set("nightly-report", "someone-else")
		mr.SetTTL("nightly-report", time.Minute)
	}
	marker := filepath.Join(t.TempDir(), "ran")
	cfg, _, _ := testRun(tn, "nightly-report", "touch", marker)
	cfg.noWait = true
	err := runLocked(testCtx(t), cfg)
	if code := exitCode(err); code != exitNotObtained {
		t.Fatalf("exit status %d (%v), want %d", code, err, exitNotObtained)
	}
	if !strings.Contains(err.Error(), `"nightly-report" held by another owner`) {
		t.Errorf("message %q does not say the lock is taken", err)
	}
	if _, serr := os.Stat(marker); serr == nil {
		t.Error("the command ran without the lock")
	}
	for _, mr := range tn.mr {
		if v, _ := mr.Get("nightly-report"); v != "someone-else" {
			t.Errorf("the holder's key became %q", v)
		}
	}
}

func TestRunWaitRunsOut(t *testing.T) {
	tn := newNodes(t, 3)
	for _, mr := range tn.mr {
		mr.Set("k", "someone-else")
		mr.SetTTL("k", time.Minute)
	}
	cfg, _, _ := testRun(tn, "k", "true")
	cfg.wait = 300 * time.Millisecond
	err := runLocked(testCtx(t), cfg)
	if code := exitCode(err); code != exitNotObtained {
		t.Fatalf("exit status %d (%v), want %d", code, err, exitNotObtained)
	}
	if !strings.Contains(err.Error(), `lock "k" not obtained within --wait 300ms`) {
		t.Errorf("message %q does not say why", err)
	}
}

func TestRunQuarantineHint(t *testing.T) {
	tn := newNodes(t, 3)
	cfg, _, _ := testRun(tn, "k", "true")
	cfg.bootstrap = false
	cfg.noWait = true
	err := runLocked(testCtx(t), cfg)
	if code := exitCode(err); code != exitNotObtained {
		t.Fatalf("exit status %d (%v), want %d", code, err, exitNotObtained)
	}
	if !strings.Contains(err.Error(), "restart quarantine") || !strings.Contains(err.Error(), "--bootstrap") {
		t.Errorf("message %q does not point at the quarantine and --bootstrap", err)
	}
}

func TestRunExitStatus(t *testing.T) {
	tn := newNodes(t, 3)
	for _, tc := range []struct {
		name string
		argv []string
		want int
	}{
		{"success", []string{"true"}, 0},
		{"failure", []string{"sh", "-c", "exit 3"}, 3},
		{"killed by a signal", []string{"sh", "-c", "kill -KILL $$"}, 128 + 9},
		{"not found", []string{"./no-such-command"}, exitNotFound},
		{"not executable", []string{t.TempDir()}, exitCannotRun},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, _, _ := testRun(tn, "k", tc.argv...)
			err := runLocked(testCtx(t), cfg)
			if code := exitCode(err); code != tc.want {
				t.Errorf("exit status %d (%v), want %d", code, err, tc.want)
			}
			if n := tn.holders("k"); n != 0 {
				t.Errorf("key left on %d nodes", n)
			}
		})
	}
}

func TestRunEnvironment(t *testing.T) {
	tn := newNodes(t, 3)
	var last uint64
	for run := 1; run <= 2; run++ {
		cfg, stdout, _ := testRun(tn, "nightly-report", "sh", "-c", `echo "$QUORUMLOCK_KEY $QUORUMLOCK_FENCE $QUORUMLOCK_TOKEN"`)
		cfg.fencing = true
		if err := runLocked(testCtx(t), cfg); err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(stdout.String())
		if len(f) != 3 || f[0] != "nightly-report" || len(f[2]) < 16 {
			t.Fatalf("run %d: environment %q, want key, fence and a token", run, stdout)
		}
		fence, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || fence <= last {
			t.Errorf("run %d: fence %q after %d, want a larger one", run, f[1], last)
		}
		last = fence
	}
	cfg, stdout, _ := testRun(tn, "k", "sh", "-c", `echo "${QUORUMLOCK_FENCE-unset}"`)
	if err := runLocked(testCtx(t), cfg); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(stdout.String()); got != "unset" {
		t.Errorf("QUORUMLOCK_FENCE = %q without --fencing", got)
	}
}

func TestRunLockLostTerminates(t *testing.T) {
	tn := newNodes(t, 3)
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	cfg, _, stderr := testRun(tn, "k", "sh", "-c", `touch "$1"; exec sleep 60`, "sh", started)
	cfg.ttl = time.Second // auto-extension after about 0.33 s notices the loss
	done := runAsync(testCtx(t), cfg)
	waitFile(t, started)
	// Another party removed the lock from a majority: the next extension is
	// refused.
	tn.mr[0].Del("k")
	tn.mr[1].Del("k")
	err := result(t, done)
	if code := exitCode(err); code != exitLockLost {
		t.Fatalf("exit status %d (%v), want %d", code, err, exitLockLost)
	}
	if !errors.Is(err, redlock.ErrLockLost) || !errors.Is(err, redlock.ErrNotHeld) {
		t.Errorf("error %v does not say the lock was lost because the nodes no longer hold it", err)
	}
	if !strings.Contains(stderr.String(), "sending SIGTERM") {
		t.Errorf("stderr does not report the termination:\n%s", stderr)
	}
	if n := tn.holders("k"); n != 0 {
		t.Errorf("key left on %d nodes", n)
	}
}

func TestRunLockExpiredKillsAfterGrace(t *testing.T) {
	tn := newNodes(t, 3)
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	// The command and its children ignore SIGTERM: only SIGKILL stops them.
	cfg, _, stderr := testRun(tn, "k", "sh", "-c", `trap "" TERM; touch "$1"; sleep 60`, "sh", started)
	cfg.ttl = 300 * time.Millisecond
	cfg.grace = 200 * time.Millisecond
	cfg.lockOpts = append(cfg.lockOpts, redlock.WithAutoExtend(false))
	err := result(t, runAsync(testCtx(t), cfg))
	if code := exitCode(err); code != exitLockLost {
		t.Fatalf("exit status %d (%v), want %d", code, err, exitLockLost)
	}
	if !errors.Is(err, redlock.ErrExpired) {
		t.Errorf("error %v does not say the validity ended", err)
	}
	if !strings.Contains(stderr.String(), "sending SIGKILL") {
		t.Errorf("stderr does not report the SIGKILL:\n%s", stderr)
	}
}

func TestRunInterrupted(t *testing.T) {
	tn := newNodes(t, 3)
	started := filepath.Join(t.TempDir(), "started")
	cfg, _, _ := testRun(tn, "k", "sh", "-c", `touch "$1"; exec sleep 60`, "sh", started)
	ctx, cancel := context.WithCancel(testCtx(t))
	done := runAsync(ctx, cfg)
	waitFile(t, started)
	if tn.holders("k") != 3 {
		t.Fatal("the command runs but the key is not on every node")
	}
	cancel()
	err := result(t, done)
	if code := exitCode(err); code != 128+15 {
		t.Fatalf("exit status %d (%v), want 143 (SIGTERM)", code, err)
	}
	if n := tn.holders("k"); n != 0 {
		t.Errorf("key left on %d nodes after the interrupt", n)
	}
}

func TestRunForwardsSignals(t *testing.T) {
	tn := newNodes(t, 3)
	started := filepath.Join(t.TempDir(), "started")
	cfg, _, _ := testRun(tn, "k", "sh", "-c", `touch "$1"; exec sleep 60`, "sh", started)
	done := runAsync(testCtx(t), cfg)
	waitFile(t, started)
	// run has registered for SIGINT before starting the command, so the
	// signal goes to the command instead of ending the test binary.
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := result(t, done)
	if code := exitCode(err); code != 128+2 {
		t.Fatalf("exit status %d (%v), want 130 (SIGINT passed on)", code, err)
	}
	if n := tn.holders("k"); n != 0 {
		t.Errorf("key left on %d nodes", n)
	}
}

// execRun runs `quorumlock run` with args through cobra.
func execRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return execCmd(t, newRunCmd(), args...)
}

func TestRunCommandLine(t *testing.T) {
	tn := newNodes(t, 3)
	nodes := strings.Join(tn.urls, ",")
	t.Setenv(nodesEnv, "")
	for _, tc := range []struct {
		name string
		args []string
		want string // in the error; "" for success
	}{
		{"runs", []string{"--nodes", nodes, "--key", "k", "--bootstrap", "--", "true"}, ""},
		{"no nodes", []string{"--key", "k", "--", "true"}, "no nodes"},
		{"duplicate node", []string{"--nodes", nodes + "," + tn.urls[1], "--key", "k", "--", "true"},
			`node 4 "` + tn.urls[1] + `" is the same server`},
		{"same server, other database", []string{"--nodes", tn.urls[0] + "," + tn.urls[0] + "/3", "--key", "k", "--", "true"},
			`node 2 "` + tn.urls[0] + `/3" is the same server`},
		{"bad URL", []string{"--nodes", "http://h1:6379", "--key", "k", "--", "true"}, `node 1 "http://h1:6379"`},
		{"password masked", []string{"--nodes", "redis://:hunter2@h1:6379,redis://:hunter2@h1:6379", "--key", "k", "--", "true"},
			`"redis://:xxxxx@h1:6379" is the same server`},
		{"empty key", []string{"--nodes", nodes, "--key", "", "--", "true"}, "--key is empty"},
		{"no key", []string{"--nodes", nodes, "--", "true"}, "--key is empty"},
		{"no command", []string{"--nodes", nodes, "--key", "k"}, "no command"},
		{"no command after --", []string{"--nodes", nodes, "--key", "k", "--"}, "no command"},
		{"arguments before --", []string{"--nodes", nodes, "--key", "k", "stray", "--", "true"}, `unexpected arguments ["stray"]`},
		{"wait and no-wait", []string{"--nodes", nodes, "--key", "k", "--wait", "1s", "--no-wait", "--", "true"}, "[no-wait wait]"},
		{"negative ttl", []string{"--nodes", nodes, "--key", "k", "--ttl", "-1s", "--", "true"}, "--ttl -1s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := execRun(t, tc.args...)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("no error, want one containing %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
			if tc.name == "password masked" && strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
}

func TestRunNodesFromEnvironment(t *testing.T) {
	tn := newNodes(t, 3)
	t.Setenv(nodesEnv, strings.Join(tn.urls, ","))
	out, err := execRun(t, "--key", "k", "--bootstrap", "--", "sh", "-c", "echo ran")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "ran" {
		t.Errorf("output %q", out)
	}
}
