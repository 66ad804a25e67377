//go:build unix

package main

import (
	"strings"
	"testing"
	"time"
)

// execBootstrap runs `quorumlock bootstrap` with args.
func execBootstrap(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return execCmd(t, newBootstrapCmd(), args...)
}

// nodeLines returns the line of each node in bootstrap's output.
func nodeLines(t *testing.T, out string, n int) []string {
	t.Helper()
	var got []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "node ") {
			got = append(got, l)
		}
	}
	if len(got) != n {
		t.Fatalf("%d node lines, want %d:\n%s", len(got), n, out)
	}
	return got
}

// TestBootstrapFreshThenRestart: fresh nodes are declared and a lock is
// obtained at once, within a quarantine far longer than the test; after a
// node lost its data, bootstrap again leaves it in its quarantine.
func TestBootstrapFreshThenRestart(t *testing.T) {
	tn := runNodes(t, 3)
	ctx := testCtx(t)
	const ttl = time.Hour // the quarantine: no test waits it out
	nodes := strings.Join(tn.urls, ",")

	// Without the bootstrap the nodes are quarantined.
	cfg, _, _ := testRun(tn, "job", "true")
	cfg.bootstrap, cfg.noWait, cfg.ttl = false, true, ttl
	if err := runLocked(ctx, cfg); exitCode(err) != exitUnavailable {
		t.Fatalf("run on fresh nodes before the bootstrap: %v (exit %d), want exit %d", err, exitCode(err), exitUnavailable)
	}

	out, err := execBootstrap(t, "--nodes", nodes, "--ttl", ttl.String())
	if err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, out)
	}
	for i, l := range nodeLines(t, out, 3) {
		if !strings.Contains(l, tn.addr(i)) || !strings.Contains(l, "declared fresh") {
			t.Errorf("node %d: %q, want it declared fresh", i, l)
		}
	}
	if !strings.Contains(out, "3 of 3 nodes vote now") {
		t.Errorf("no summary of the voting nodes:\n%s", out)
	}
	if err := runLocked(ctx, cfg); err != nil {
		t.Fatalf("run with --no-wait after the bootstrap: %v", err)
	}

	// Node 0 loses its data (a restart without persistence).
	tn.mr[0].FlushAll()
	out, err = execBootstrap(t, "--nodes", nodes, "--ttl", ttl.String())
	if err != nil {
		t.Fatalf("bootstrap again: %v\n%s", err, out)
	}
	lines := nodeLines(t, out, 3)
	if !strings.Contains(lines[0], "kept in its restart quarantine") {
		t.Errorf("node 0 lost its data: %q, want it kept in its quarantine", lines[0])
	}
	for i, l := range lines[1:] {
		if !strings.Contains(l, "in service already") {
			t.Errorf("node %d: %q, want it in service already", i+1, l)
		}
	}
	if !strings.Contains(out, "2 of 3 nodes vote now") {
		t.Errorf("want 2 voting nodes:\n%s", out)
	}
	if v, err := tn.mr[0].Get(sentinelKey); err == nil && v == "0" {
		t.Errorf("node 0's sentinel was set to %q: its quarantine was hidden", v)
	}
	// The quarantine holds for the lock too: with node 1 down as well,
	// only node 2 votes.
	tn.down(t, 1)
	if err := runLocked(ctx, cfg); exitCode(err) != exitUnavailable {
		t.Fatalf("run with node 0 in quarantine and node 1 down: %v (exit %d), want exit %d", err, exitCode(err), exitUnavailable)
	}
}

// TestBootstrapNoMajority: with a majority down, nothing is declared and
// the exit status says the service is unavailable.
func TestBootstrapNoMajority(t *testing.T) {
	tn := runNodes(t, 3)
	tn.down(t, 1)
	tn.down(t, 2)
	out, err := execBootstrap(t, "--nodes", strings.Join(tn.urls, ","), "--ttl", "1h")
	if exitCode(err) != exitUnavailable {
		t.Fatalf("bootstrap with 1 of 3 nodes up: %v (exit %d), want %d\n%s", err, exitCode(err), exitUnavailable, out)
	}
	if !strings.Contains(err.Error(), "declared nothing") {
		t.Errorf("error %q does not say nothing was declared", err)
	}
	lines := nodeLines(t, out, 3)
	if !strings.Contains(lines[0], "nothing declared") {
		t.Errorf("node 0: %q", lines[0])
	}
	for _, l := range lines[1:] {
		if !strings.Contains(l, "did not answer") {
			t.Errorf("%q, want did not answer", l)
		}
	}
	if _, err := tn.mr[0].Get(sentinelKey); err == nil {
		t.Errorf("node 0 got a sentinel though nothing was to be declared")
	}
}

func TestBootstrapCommandLine(t *testing.T) {
	tn := newNodes(t, 3)
	nodes := strings.Join(tn.urls, ",")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nodes", nodes, "extra"}, "unknown command"},
		{[]string{"--nodes", nodes, "--ttl", "0s"}, "--ttl 0s must be positive"},
		{[]string{"--nodes", "http://x:1"}, "invalid URL scheme"},
	} {
		out, err := execBootstrap(t, tc.args...)
		if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bootstrap %q: %v (exit %d), want exit 1 and %q\n%s", tc.args, err, exitCode(err), tc.want, out)
		}
		if tn.mr[0].Exists(sentinelKey) {
			t.Fatalf("bootstrap %q touched the nodes", tc.args)
		}
	}
}
