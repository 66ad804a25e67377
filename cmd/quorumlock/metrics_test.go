//go:build unix

package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// scrape GETs url and returns the body.
func scrape(t *testing.T, ctx context.Context, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, body)
	}
	return string(body)
}

var servingRE = regexp.MustCompile(`metrics: serving on (http://\S+/metrics)`)

// TestRunMetrics scrapes --metrics-addr while the command runs under the
// lock: the library's instruments are there, in Prometheus' names, and the
// server is gone once run returns.
func TestRunMetrics(t *testing.T) {
	tn := runNodes(t, 3)
	ctx := testCtx(t)
	release := filepath.Join(t.TempDir(), "release")
	started := filepath.Join(t.TempDir(), "started")
	cfg, _, stderr := testRun(tn, "metered", "sh", "-c",
		`touch "$1"; while [ ! -e "$2" ]; do sleep 0.01; done`, "sh", started, release)
	cfg.metricsAddr = "127.0.0.1:0"
	done := runAsync(ctx, cfg)
	waitFile(t, ctx, started)
	m := servingRE.FindStringSubmatch(stderr.String())
	if m == nil {
		t.Fatalf("no serving address on stderr:\n%s", stderr)
	}
	body := scrape(t, ctx, m[1])
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^# TYPE quorumlock_acquire_duration_seconds histogram$`),
		regexp.MustCompile(`(?m)^quorumlock_acquire_duration_seconds_count\{[^}]*outcome="acquired"[^}]*\} 1$`),
		regexp.MustCompile(`(?m)^quorumlock_locks_held\{[^}]*\} 1$`),
		regexp.MustCompile(`(?m)^quorumlock_locks_waiting\{[^}]*\} 0$`),
		regexp.MustCompile(`(?m)^quorumlock_acquire_attempts_total\{[^}]*\} [1-9][0-9]*$`),
		regexp.MustCompile(`(?m)^quorumlock_node_votes_total\{[^}]*outcome="granted"`),
		regexp.MustCompile(`(?m)^# TYPE quorumlock_extensions_total counter$`),
		regexp.MustCompile(`(?m)^target_info\{[^}]*service_name="quorumlock"`),
	} {
		if !want.MatchString(body) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
	if strings.Contains(body, "metered") {
		t.Errorf("/metrics names the lock key:\n%s", body)
	}
	if err := touch(release); err != nil {
		t.Fatal(err)
	}
	if err := result(t, ctx, done); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr)
	}
	if resp, err := http.Get(m[1]); err == nil {
		resp.Body.Close()
		t.Errorf("%s still answers after run returned: %s", m[1], resp.Status)
	}
}

func touch(path string) error { return os.WriteFile(path, nil, 0o644) }
