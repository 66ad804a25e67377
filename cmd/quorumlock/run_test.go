//go:build unix

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
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
	held map[int]int // node → socket holding its port while it is down
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

// addr is node i's address, also after it was closed.
func (tn *testNodes) addr(i int) string { return strings.TrimPrefix(tn.urls[i], "redis://") }

// down takes node i away: its server closes, and a socket that is bound
// to its port but does not listen keeps the port, so that connections are
// refused and no other process on this busy host is given the port meanwhile
// (which once made a "down" node answer).
func (tn *testNodes) down(t *testing.T, i int) {
	t.Helper()
	tn.mr[i].Close()
	ap, err := netip.ParseAddrPort(tn.addr(i))
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	// SO_REUSEADDR as the listener had: its closed connections may linger
	// in TIME_WAIT on the port.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		_ = syscall.Close(fd)
		t.Fatalf("node %d: holding its port %d: %v (another process took it as the node closed)", i, ap.Port(), err)
	}
	if tn.held == nil {
		tn.held = map[int]int{}
	}
	tn.held[i] = fd
	t.Cleanup(func() { tn.release(i) })
}

// up brings node i back on its address, with the data it had.
func (tn *testNodes) up(t *testing.T, i int) {
	t.Helper()
	tn.release(i)
	if err := tn.mr[i].Restart(); err != nil {
		t.Fatal(err)
	}
}

func (tn *testNodes) release(i int) {
	if fd, ok := tn.held[i]; ok {
		_ = syscall.Close(fd)
		delete(tn.held, i)
	}
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

func (s *syncBuffer) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Reset()
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// expireInRealTime makes the embedded nodes expire keys as real Redis does
// (miniredis moves TTLs only when told to): a key a loaded host failed to
// delete in time then goes at the end of its TTL instead of staying for good.
func (tn *testNodes) expireInRealTime(t *testing.T) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				for _, mr := range tn.mr {
					mr.FastForward(now.Sub(last))
				}
				last = now
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// bootstrap declares the nodes fresh, as --bootstrap does.
func (tn *testNodes) bootstrap() {
	for _, mr := range tn.mr {
		mr.Set(sentinelKey, "0")
	}
}

// released checks that a run let go of key: no majority holds it, and what
// a request that timed out on a loaded host left behind expires within the
// TTL.
func (tn *testNodes) released(t *testing.T, key string, ttl time.Duration) {
	t.Helper()
	n := 0
	for i, mr := range tn.mr {
		if !mr.Exists(key) {
			continue
		}
		n++
		if d := mr.TTL(key); d <= 0 || d > ttl {
			t.Errorf("node %d: key %q left with TTL %v, beyond the lock's %v", i, key, d, ttl)
		} else {
			t.Logf("node %d: key %q left by a request that failed, expires in %v", i, key, d)
		}
	}
	if n >= len(tn.mr)/2+1 {
		t.Errorf("key %q still on %d of %d nodes after the run", key, n, len(tn.mr))
	}
}

// takenBy puts another owner's token on every node, for ttl.
func (tn *testNodes) takenBy(key, token string, ttl time.Duration) {
	for _, mr := range tn.mr {
		mr.Set(key, token)
		mr.SetTTL(key, ttl)
	}
}

// runNodes are n embedded nodes for run: keys expire in real time.
func runNodes(t *testing.T, n int) *testNodes {
	t.Helper()
	tn := newNodes(t, n)
	tn.expireInRealTime(t)
	return tn
}

// testRun is a run on tn with short timings and bootstrapped nodes.
func testRun(tn *testNodes, key string, argv ...string) (runConfig, *syncBuffer, *syncBuffer) {
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	return runConfig{
		command: command{nodes: tn.urls, argv: argv, stdout: stdout, stderr: stderr},
		key:     key, ttl: 2 * time.Second, grace: 2 * time.Second, bootstrap: true,
	}, stdout, stderr
}

// testCtx bounds a test that waits for locks, commands and output: a run
// that never ends fails the test when it runs out, a slow host does not.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// exitCode returns the status quorumlock would exit with for err.
func exitCode(err error) int { return report(io.Discard, err) }

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitFile waits until path exists.
func waitFile(t *testing.T, ctx context.Context, path string) {
	t.Helper()
	waitFor(t, ctx, path, func() bool { _, err := os.Stat(path); return err == nil })
}

// waitOutput waits until out contains want.
func waitOutput(t *testing.T, ctx context.Context, out *syncBuffer, want string) {
	t.Helper()
	waitFor(t, ctx, fmt.Sprintf("%q in the output", want), func() bool { return strings.Contains(out.String(), want) })
}

// runAsync starts runLocked and returns the channel its result arrives on.
func runAsync(ctx context.Context, cfg runConfig) <-chan error {
	done := make(chan error, 1)
	go func() { done <- runLocked(ctx, cfg) }()
	return done
}

// result waits for a run started by runAsync.
func result(t *testing.T, ctx context.Context, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		t.Fatal("run did not return before the test's deadline")
		return nil
	}
}

// lines returns the lines of out that contain s.
func lines(out, s string) []string {
	var got []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, s) {
			got = append(got, l)
		}
	}
	return got
}

// unanswered tells the output of a run whose first attempt lost a vote to
// the node timeout: on a loaded host any single attempt can, and the tests
// that rest on one attempt are not about that (how such a node reads is).
func unanswered(out string) bool { return strings.Contains(out, "no answer in time") }

// answered runs f, a run whose outcome rests on one attempt, again while an
// attempt went unanswered.
func answered(t *testing.T, f func() (error, string)) (error, string) {
	t.Helper()
	for try := 1; ; try++ {
		err, out := f()
		msg := out
		if err != nil {
			msg += err.Error()
		}
		if !unanswered(msg) || try == 5 {
			return err, out
		}
		t.Logf("an attempt went unanswered on this host; again: %v", err)
	}
}

// startWaiting starts a run that is to wait, and returns once it has said
// why, from an attempt every node answered (see unanswered).
func startWaiting(t *testing.T, ctx context.Context, cfg runConfig, stderr *syncBuffer) <-chan error {
	t.Helper()
	for try := 1; ; try++ {
		rctx, cancel := context.WithCancel(ctx)
		t.Cleanup(cancel)
		done := runAsync(rctx, cfg)
		waitOutput(t, ctx, stderr, "quorumlock: waiting for lock")
		if !unanswered(stderr.String()) || try == 5 {
			return done
		}
		t.Logf("an attempt went unanswered on this host; again:\n%s", stderr)
		cancel()
		_ = result(t, ctx, done)
		stderr.Reset()
	}
}

func TestRunExclusive(t *testing.T) {
	tn := runNodes(t, 3)
	log := filepath.Join(t.TempDir(), "log")
	const runs = 4
	ctx := testCtx(t)
	var results []<-chan error
	var cfg runConfig
	for i := 0; i < runs; i++ {
		cfg, _, _ = testRun(tn, "nightly-report", "sh", "-c",
			`echo "start $QUORUMLOCK_TOKEN" >> "$1"; sleep 0.1; echo "end $QUORUMLOCK_TOKEN" >> "$1"`, "sh", log)
		results = append(results, runAsync(ctx, cfg))
	}
	for _, done := range results {
		if err := result(t, ctx, done); err != nil {
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
	tn.released(t, "nightly-report", cfg.ttl)
}

func TestRunNoWaitTaken(t *testing.T) {
	tn := runNodes(t, 3)
	tn.takenBy("nightly-report", "someone-else", time.Minute)
	marker := filepath.Join(t.TempDir(), "ran")
	err, stderr := answered(t, func() (error, string) {
		cfg, _, stderr := testRun(tn, "nightly-report", "touch", marker)
		cfg.noWait = true
		return runLocked(testCtx(t), cfg), stderr.String()
	})
	if code := exitCode(err); code != exitTaken {
		t.Fatalf("exit status %d (%v), want %d", code, err, exitTaken)
	}
	want := `lock "nightly-report" not obtained: held by someone else (token someone-…) on 3 of 3 nodes, free in `
	if !strings.Contains(err.Error(), want) {
		t.Errorf("message %q does not say %q", err, want)
	}
	if stderr != "" {
		t.Errorf("more output than the error:\n%s", stderr)
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

// A majority down is not "taken": the status and the message say the lock
// service is unavailable and why, in the operator's words.
func TestRunNoWaitUnavailable(t *testing.T) {
	tn := runNodes(t, 3)
	tn.bootstrap()
	tn.down(t, 1)
	tn.down(t, 2)
	err, stderr := answered(t, func() (error, string) {
		cfg, _, stderr := testRun(tn, "k", "true")
		cfg.noWait, cfg.bootstrap = true, false
		return runLocked(testCtx(t), cfg), stderr.String()
	})
	if code := exitCode(err); code != exitUnavailable {
		t.Fatalf("exit status %d (%v), want %d", code, err, exitUnavailable)
	}
	for _, want := range []string{
		`lock "k" not obtained: lock service unavailable: 1 of 3 nodes can vote, 2 needed: `,
		"node 1 (" + tn.addr(1) + "): connection refused; node 2 (" + tn.addr(2) + "): connection refused",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if msg := err.Error() + stderr; strings.Contains(msg, "deadline") || strings.Contains(msg, "redlock:") {
		t.Errorf("message names the library or a deadline instead of the cause:\n%s\n%s", err, stderr)
	}
}

func TestRunQuarantineHint(t *testing.T) {
	var tn *testNodes
	err, _ := answered(t, func() (error, string) {
		tn = runNodes(t, 3) // fresh ones each time: their quarantine starts at the first vote
		cfg, _, stderr := testRun(tn, "k", "true")
		cfg.bootstrap = false
		cfg.noWait = true
		return runLocked(testCtx(t), cfg), stderr.String()
	})
	if code := exitCode(err); code != exitUnavailable {
		t.Fatalf("exit status %d (%v), want %d", code, err, exitUnavailable)
	}
	// Every node is in its quarantine, also one whose vote the round did
	// not wait for once the outcome was clear.
	for _, want := range []string{"0 of 3 nodes can vote, 2 needed", "node 0 (" + tn.addr(0) + "): in restart quarantine for ",
		"node 1 (" + tn.addr(1) + "): in restart quarantine for ", "node 2 (" + tn.addr(2) + "): in restart quarantine for ", "--bootstrap"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
}

func TestRunWaitRunsOut(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*testing.T, *testNodes)
		code  int
		want  string
	}{
		{"taken", func(_ *testing.T, tn *testNodes) { tn.takenBy("k", "someone-else", time.Minute) }, exitTaken, "held by someone else (token someone-…)"},
		{"unavailable", func(t *testing.T, tn *testNodes) { tn.down(t, 1); tn.down(t, 2) }, exitUnavailable, "lock service unavailable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tn := runNodes(t, 3)
			tn.bootstrap()
			tc.setup(t, tn)
			err, stderr := answered(t, func() (error, string) {
				cfg, _, stderr := testRun(tn, "k", "true")
				cfg.wait, cfg.bootstrap = 300*time.Millisecond, false
				return runLocked(testCtx(t), cfg), stderr.String()
			})
			if code := exitCode(err); code != tc.code {
				t.Fatalf("exit status %d (%v), want %d", code, err, tc.code)
			}
			if want := `lock "k" not obtained within --wait 300ms: ` + tc.want; !strings.Contains(err.Error(), want) {
				t.Errorf("message %q lacks %q", err, want)
			}
			if got := lines(stderr, "quorumlock: waiting for lock"); len(got) != 1 || !strings.Contains(got[0], tc.want) {
				t.Errorf("want one line saying why it waits (%q), got:\n%s", tc.want, stderr)
			}
		})
	}
}

// A waiting run says once why it waits, once more when that changes, and
// once when it gets the lock; not at every retry.
func TestRunWaitReports(t *testing.T) {
	tn := runNodes(t, 3)
	tn.takenBy("k", "first-owner", time.Minute)
	ctx := testCtx(t)
	cfg, stdout, stderr := testRun(tn, "k", "echo", "ran")
	done := startWaiting(t, ctx, cfg, stderr)
	waitOutput(t, ctx, stderr, `quorumlock: waiting for lock "k": held by someone else (token first-ow…) on 3 of 3 nodes, free in `)
	tn.takenBy("k", "second-owner", time.Minute)
	waitOutput(t, ctx, stderr, `quorumlock: still waiting for lock "k" after `)
	if !strings.Contains(stderr.String(), "(token second-o…) on 3 of 3 nodes") {
		t.Errorf("the change does not name the new holder:\n%s", stderr)
	}
	// Time for several retries and reads of the nodes, none of which may
	// add a line: nothing changes.
	waitRetries(t, ctx, tn, 50)
	for _, mr := range tn.mr {
		mr.Del("k")
	}
	if err := result(t, ctx, done); err != nil {
		t.Fatal(err)
	}
	out := stderr.String()
	for _, want := range []string{"quorumlock: waiting for lock", "quorumlock: still waiting for lock", `lock "k" obtained after waiting`} {
		if got := lines(out, want); len(got) != 1 {
			t.Errorf("%d lines with %q, want 1:\n%s", len(got), want, out)
		}
	}
	if strings.TrimSpace(stdout.String()) != "ran" {
		t.Errorf("command output %q", stdout)
	}
}

// waitRetries waits until a waiting run has made several more attempts or
// reads of the nodes: each attempt sends a command to every node, each
// read seven, so n commands on node 0 are n/7 of them at least.
func waitRetries(t *testing.T, ctx context.Context, tn *testNodes, n int) {
	t.Helper()
	from := tn.mr[0].CommandCount()
	waitFor(t, ctx, fmt.Sprintf("%d more commands", n), func() bool { return tn.mr[0].CommandCount() >= from+n })
}

func TestRunWaitUnavailableThenObtains(t *testing.T) {
	tn := runNodes(t, 3)
	tn.bootstrap()
	tn.down(t, 1)
	tn.down(t, 2)
	ctx := testCtx(t)
	cfg, _, stderr := testRun(tn, "k", "true")
	cfg.bootstrap = false
	done := startWaiting(t, ctx, cfg, stderr)
	waitOutput(t, ctx, stderr, `quorumlock: waiting for lock "k": lock service unavailable: 1 of 3 nodes can vote, 2 needed: node 1 (`+
		tn.addr(1)+"): connection refused; node 2 ("+tn.addr(2)+"): connection refused")
	tn.up(t, 1)
	if err := result(t, ctx, done); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr.String(), `lock "k" obtained after waiting`) {
		t.Errorf("no line says the lock was obtained:\n%s", stderr)
	}
	if out := stderr.String(); strings.Contains(out, "deadline") || strings.Contains(out, "redlock:") {
		t.Errorf("output names the library or a deadline instead of the cause:\n%s", out)
	}
}

// Interrupting a waiting run exits as the shell reports the signal.
func TestRunInterruptedWhileWaiting(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(signalName(sig), func(t *testing.T) {
			tn := runNodes(t, 3)
			tn.takenBy("k", "someone-else", time.Minute)
			ctx := testCtx(t)
			marker := filepath.Join(t.TempDir(), "ran")
			cfg, _, stderr := testRun(tn, "k", "touch", marker)
			done := runAsync(ctx, cfg)
			waitOutput(t, ctx, stderr, "waiting for lock")
			// run registered for the signal before it started waiting, so
			// the signal ends the wait instead of the test binary.
			if err := syscall.Kill(os.Getpid(), sig); err != nil {
				t.Fatal(err)
			}
			err := result(t, ctx, done)
			if code := exitCode(err); code != 128+int(sig) {
				t.Fatalf("exit status %d (%v), want %d", code, err, 128+int(sig))
			}
			if want := "interrupted by " + signalName(sig) + ` while waiting for lock "k"`; !strings.Contains(err.Error(), want) {
				t.Errorf("message %q lacks %q", err, want)
			}
			if _, serr := os.Stat(marker); serr == nil {
				t.Error("the command ran after the interrupt")
			}
		})
	}
	// The process's signal context (main) ends the wait the same way.
	t.Run("context", func(t *testing.T) {
		tn := runNodes(t, 3)
		tn.takenBy("k", "someone-else", time.Minute)
		ctx, cancel := context.WithCancelCause(testCtx(t))
		cfg, _, stderr := testRun(tn, "k", "true")
		done := runAsync(ctx, cfg)
		waitOutput(t, ctx, stderr, "waiting for lock")
		cancel(&signalError{sig: syscall.SIGTERM})
		if code := exitCode(result(t, testCtx(t), done)); code != 143 {
			t.Fatalf("exit status %d, want 143", code)
		}
	})
}

func TestRunExitStatus(t *testing.T) {
	tn := runNodes(t, 3)
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
			tn.released(t, "k", cfg.ttl)
		})
	}
}

func TestRunEnvironment(t *testing.T) {
	tn := runNodes(t, 3)
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
		// Fence tokens grow with every holder (an attempt whose write-back
		// reached a minority may make one skip a number).
		fence, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil || fence <= last {
			t.Errorf("run %d: QUORUMLOCK_FENCE %q, want a number above %d", run, f[1], last)
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
	tn := runNodes(t, 3)
	ctx := testCtx(t)
	started := filepath.Join(t.TempDir(), "started")
	cfg, _, stderr := testRun(tn, "k", "sh", "-c", `touch "$1"; exec sleep 60`, "sh", started)
	cfg.ttl = time.Second // auto-extension after about 0.33 s notices the loss
	done := runAsync(ctx, cfg)
	waitFile(t, ctx, started)
	// Another owner's token replaces ours on a majority (a key that is
	// merely missing, the extension sets again): the next extension is
	// refused. The acquisition was decided on a majority; a SET of ours
	// still on its way could land later, so the intruder's token is put
	// back until the run ends.
	intrude := func() {
		for _, i := range []int{0, 1} {
			if v, _ := tn.mr[i].Get("k"); v != "intruder" {
				tn.mr[i].Set("k", "intruder")
				tn.mr[i].SetTTL("k", time.Minute)
			}
		}
	}
	var err error
	for gone := false; !gone; {
		intrude()
		select {
		case err = <-done:
			gone = true
		case <-ctx.Done():
			t.Fatal("run did not return before the test's deadline")
		case <-time.After(5 * time.Millisecond):
		}
	}
	if code := exitCode(err); code != exitLockLost {
		t.Fatalf("exit status %d (%v), want %d", code, err, exitLockLost)
	}
	if !errors.Is(err, redlock.ErrLockLost) || !errors.Is(err, redlock.ErrNotHeld) {
		t.Errorf("error %v does not wrap the loss because the nodes no longer hold it", err)
	}
	want := `quorumlock: lock "k" lost: a majority of nodes no longer holds it: node 0 (` + tn.addr(0) +
		`): no longer holds it; node 1 (` + tn.addr(1) + `): no longer holds it; `
	if got := lines(stderr.String(), "lost"); len(got) != 1 || !strings.HasPrefix(got[0], want) || !strings.Contains(got[0], "sent SIGTERM to sh") {
		t.Errorf("want one line starting %q and sent SIGTERM, got:\n%s", want, stderr)
	}
	// The reason is said once, in the CLI's words: the final error only
	// says what happened to the command.
	if msg := err.Error(); strings.Contains(msg, "no longer holds") || strings.Contains(msg+stderr.String(), "redlock:") {
		t.Errorf("the reason is not said once, in the CLI's words:\n%s\n%s", stderr, err)
	}
	// Its release at the end left the other owner's key alone.
	for _, i := range []int{0, 1} {
		if v, _ := tn.mr[i].Get("k"); v != "intruder" {
			t.Errorf("node %d: the other owner's key became %q", i, v)
		}
	}
}

func TestRunLockExpiredKillsAfterGrace(t *testing.T) {
	tn := runNodes(t, 3)
	ctx := testCtx(t)
	started := filepath.Join(t.TempDir(), "started")
	// The command and its children ignore SIGTERM: only SIGKILL stops them.
	cfg, _, stderr := testRun(tn, "k", "sh", "-c", `trap "" TERM; touch "$1"; sleep 60`, "sh", started)
	cfg.ttl = time.Second
	cfg.grace = 200 * time.Millisecond
	done := runAsync(ctx, cfg)
	waitFile(t, ctx, started)
	// A majority goes away: extensions fail until the validity ends.
	tn.down(t, 0)
	tn.down(t, 1)
	err := result(t, ctx, done)
	if code := exitCode(err); code != exitLockLost {
		t.Fatalf("exit status %d (%v), want %d", code, err, exitLockLost)
	}
	if !errors.Is(err, redlock.ErrExpired) {
		t.Errorf("error %v does not say the validity ended", err)
	}
	out := stderr.String()
	for _, want := range []string{
		`lock "k" lost: its validity ended before an extension reached a majority: node 0 (` + tn.addr(0) + "): connection refused",
		"sending SIGKILL",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stderr lacks %q:\n%s", want, out)
		}
	}
}

func TestRunInterrupted(t *testing.T) {
	tn := runNodes(t, 3)
	started := filepath.Join(t.TempDir(), "started")
	cfg, _, _ := testRun(tn, "k", "sh", "-c", `touch "$1"; exec sleep 60`, "sh", started)
	tctx := testCtx(t)
	ctx, cancel := context.WithCancel(tctx)
	done := runAsync(ctx, cfg)
	waitFile(t, tctx, started)
	cancel()
	err := result(t, tctx, done)
	if code := exitCode(err); code != 128+15 {
		t.Fatalf("exit status %d (%v), want 143 (SIGTERM)", code, err)
	}
	tn.released(t, "k", cfg.ttl)
}

func TestRunForwardsSignals(t *testing.T) {
	tn := runNodes(t, 3)
	ctx := testCtx(t)
	started := filepath.Join(t.TempDir(), "started")
	cfg, _, _ := testRun(tn, "k", "sh", "-c", `touch "$1"; exec sleep 60`, "sh", started)
	done := runAsync(ctx, cfg)
	waitFile(t, ctx, started)
	// run has registered for SIGINT before starting the command, so the
	// signal goes to the command instead of ending the test binary.
	if err := syscall.Kill(os.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	err := result(t, ctx, done)
	if code := exitCode(err); code != 128+2 {
		t.Fatalf("exit status %d (%v), want 130 (SIGINT passed on)", code, err)
	}
	tn.released(t, "k", cfg.ttl)
}

// One or two nodes run, with a warning saying what they give up.
func TestRunFewNodes(t *testing.T) {
	for _, tc := range []struct {
		nodes int
		want  string
	}{
		{1, "quorumlock: warning: 1 node is not Redlock"},
		{2, "quorumlock: warning: with 2 nodes a majority is both"},
		{3, ""},
	} {
		tn := runNodes(t, tc.nodes)
		cfg, _, stderr := testRun(tn, "k", "true")
		if err := runLocked(testCtx(t), cfg); err != nil {
			t.Fatalf("%d nodes: %v", tc.nodes, err)
		}
		if got := lines(stderr.String(), "warning"); (tc.want == "") != (len(got) == 0) || (tc.want != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tc.want))) {
			t.Errorf("%d nodes: stderr %q, want warning %q", tc.nodes, stderr, tc.want)
		}
	}
}

// execRun runs `quorumlock run` with args through cobra.
func execRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return execCmd(t, newRunCmd(), args...)
}

// Every exit status of run is in its help, with its meaning.
func TestRunHelpExitStatuses(t *testing.T) {
	help := newRunCmd().Long
	for _, want := range []string{
		fmt.Sprintf("%d           the lock is held by someone else", exitTaken),
		fmt.Sprintf("%d           the lock service is unavailable", exitUnavailable),
		fmt.Sprintf("%d           the lock was lost while COMMAND ran", exitLockLost),
		fmt.Sprintf("%d, %d     interrupted by SIGINT, SIGTERM while waiting", 128+int(syscall.SIGINT), 128+int(syscall.SIGTERM)),
		fmt.Sprintf("%d, %d     COMMAND could not be started, was not found", exitCannotRun, exitNotFound),
	} {
		if !strings.Contains(help, want) {
			t.Errorf("run --help lacks %q:\n%s", want, help)
		}
	}
}

func TestRunCommandLine(t *testing.T) {
	tn := runNodes(t, 3)
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
	tn := runNodes(t, 3)
	t.Setenv(nodesEnv, strings.Join(tn.urls, ","))
	out, err := execRun(t, "--key", "k", "--bootstrap", "--", "sh", "-c", "echo ran")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "ran" {
		t.Errorf("output %q", out)
	}
}
