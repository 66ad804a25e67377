package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quorumlock/quorumlock/lab"
)

func testLabConfig(t *testing.T) labConfig {
	t.Helper()
	return labConfig{
		backend:   "embedded",
		count:     5,
		scenarios: []string{"baseline,restart-now"},
		impls:     []string{"quorumlock", "redsync"},
		duration:  400 * time.Millisecond,
		// The lab's own TTL: at 200 ms the node timeout is its 50 ms
		// floor, which a loaded host's scheduling alone exceeds in setup.
		ttl:       500 * time.Millisecond,
		attackTTL: 2 * time.Second,
		seed:      3,
		out:       filepath.Join(t.TempDir(), "report"),
		stdout:    &bytes.Buffer{},
		stderr:    &bytes.Buffer{},
	}
}

func TestLabTableAndReport(t *testing.T) {
	cfg := testLabConfig(t)
	if err := runLab(t.Context(), cfg); err != nil {
		t.Fatalf("runLab: %v\nstderr:\n%s", err, cfg.stderr)
	}
	out := cfg.stdout.(*bytes.Buffer).String()
	for _, want := range []string{"baseline", "restart-now", "quorumlock", "redsync", "report:"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(cfg.stderr.(*bytes.Buffer).String(), "lab: baseline") {
		t.Errorf("no progress lines on stderr:\n%s", cfg.stderr)
	}
	for _, f := range []string{"README.md", "results.json", "baseline.svg", "restart-now.svg"} {
		if _, err := os.Stat(filepath.Join(cfg.out, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestLabJSON(t *testing.T) {
	cfg := testLabConfig(t)
	cfg.scenarios, cfg.impls, cfg.json = []string{"baseline"}, []string{"redsync"}, true
	if err := runLab(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	var res lab.Results
	if err := json.Unmarshal(cfg.stdout.(*bytes.Buffer).Bytes(), &res); err != nil {
		t.Fatalf("stdout is not JSON: %v", err)
	}
	if len(res.Scenarios) != 1 || len(res.Scenarios[0].Outcomes) != 1 || res.Scenarios[0].Outcomes[0].Impl != "redsync" {
		t.Errorf("results = %+v", res)
	}
}

func TestLabFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*labConfig)
		want string
	}{
		{"unknown scenario", func(c *labConfig) { c.scenarios = []string{"nope"} }, `unknown scenario "nope"`},
		{"unknown impl", func(c *labConfig) { c.impls = []string{"zookeeper"} }, `unknown implementation "zookeeper"`},
		{"unknown backend", func(c *labConfig) { c.backend = "k8s" }, `--backend "k8s"`},
		{"nodes with docker", func(c *labConfig) { c.backend, c.nodes = "docker", []string{"redis://127.0.0.1:1"} }, "exclude each other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testLabConfig(t)
			tt.edit(&cfg)
			err := runLab(t.Context(), cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v; want it to say %q", err, tt.want)
			}
		})
	}
}

func TestLabCommandFlags(t *testing.T) {
	cmd := newLabCmd()
	if err := cmd.ParseFlags([]string{"--scenario", "baseline", "--scenario", "auction,storm", "--seed", "9", "--json"}); err != nil {
		t.Fatal(err)
	}
	got, _ := cmd.Flags().GetStringSlice("scenario")
	if strings.Join(splitList(got), " ") != "baseline auction storm" {
		t.Errorf("scenarios = %q", got)
	}
	if s, _ := cmd.Flags().GetUint64("seed"); s != 9 {
		t.Errorf("seed = %d", s)
	}
}

func TestLabStatus(t *testing.T) {
	outcome := func(impl string, v lab.Verdict, errText string) lab.Outcome {
		return lab.Outcome{Impl: impl, Verdict: v, Err: errText}
	}
	unexpected := lab.Verdict{Unexpected: []string{"violations"}}
	degraded := lab.Verdict{Degraded: []string{"availability 3% < 50%"}}
	tests := []struct {
		name     string
		outcomes []lab.Outcome
		code     int // 0: nil error; -1: a plain error
	}{
		{"clean", []lab.Outcome{outcome("quorumlock", lab.Verdict{}, ""), outcome("redsync", lab.Verdict{}, "")}, 0},
		{"redsync unsafe is a finding, not a failure", []lab.Outcome{outcome("redsync", unexpected, "")}, 0},
		{"quorumlock unsafe", []lab.Outcome{outcome("quorumlock", unexpected, ""), outcome("redsync", lab.Verdict{}, "")}, exitLabUnsafe},
		{"a run broke off", []lab.Outcome{outcome("redsync", lab.Verdict{}, "docker went away")}, -1},
		{"quorumlock degraded where redsync is not", []lab.Outcome{outcome("quorumlock", degraded, ""), outcome("redsync", lab.Verdict{}, "")}, exitLabDegraded},
		{"both degraded", []lab.Outcome{outcome("quorumlock", degraded, ""), outcome("redsync", degraded, "")}, 0},
		{"redsync degraded alone", []lab.Outcome{outcome("quorumlock", lab.Verdict{}, ""), outcome("redsync", degraded, "")}, 0},
		{"quorumlock degraded, redsync broke off", []lab.Outcome{outcome("quorumlock", degraded, ""), outcome("redsync", lab.Verdict{}, "gone")}, -1},
		{"quorumlock degraded, redsync skipped", []lab.Outcome{outcome("quorumlock", degraded, ""), {Impl: "redsync", Skipped: "no fencing"}}, 0},
		{"unsafe outranks degraded", []lab.Outcome{outcome("quorumlock", lab.Verdict{Unexpected: []string{"violations"}, Degraded: degraded.Degraded}, ""), outcome("redsync", lab.Verdict{}, "")}, exitLabUnsafe},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := labStatus(&lab.Results{Scenarios: []lab.ScenarioResult{{Name: "s", Outcomes: tt.outcomes}}})
			var ec exitCoder
			switch {
			case tt.code == 0 && err != nil:
				t.Errorf("err = %v; want nil", err)
			case tt.code > 0 && (!asExitCoder(err, &ec) || ec.ExitCode() != tt.code):
				t.Errorf("err = %v; want exit status %d", err, tt.code)
			case tt.code < 0 && (err == nil || asExitCoder(err, &ec)):
				t.Errorf("err = %v; want a plain error", err)
			}
		})
	}
}

func testExploreCfg(t *testing.T) exploreConfig {
	t.Helper()
	return exploreConfig{
		backend: "embedded", count: 5, clients: 2, seed: 3, seeds: 2,
		ttl: 250 * time.Millisecond, maxFaults: 2, impls: []string{"quorumlock", "redsync"},
		out: filepath.Join(t.TempDir(), "explore"), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{},
	}
}

func TestExploreTableAndResults(t *testing.T) {
	cfg := testExploreCfg(t)
	err := runExplore(t.Context(), cfg)
	var ec exitCoder
	if err != nil && !(asExitCoder(err, &ec) && ec.ExitCode() == exitLabUnsafe) {
		t.Fatalf("runExplore: %v\nstderr:\n%s", err, cfg.stderr)
	}
	out := cfg.stdout.(*bytes.Buffer).String()
	for _, want := range []string{"quorumlock", "redsync", "restart-lossy", "2 seeds in"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(cfg.stderr.(*bytes.Buffer).String(), "\nseed "); n != 1 { // two lines, one after a newline
		t.Errorf("progress lines on stderr: %d after the first; want 1:\n%s", n, cfg.stderr)
	}
	js, err := os.ReadFile(filepath.Join(cfg.out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res lab.ExploreResults
	if err := json.Unmarshal(js, &res); err != nil || len(res.Seeds) != 2 || res.Seeds[0].Schedule.Seed != 3 {
		t.Errorf("results.json: %v, %+v", err, res.Seeds)
	}
}

func TestExploreFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*exploreConfig)
		want string
	}{
		{"backend", func(c *exploreConfig) { c.backend = "k8s" }, `--backend "k8s"`},
		{"seeds", func(c *exploreConfig) { c.seeds = 0 }, "--seeds 0"},
		{"nodes", func(c *exploreConfig) { c.count = 2 }, "--node-count 2"},
		{"ttl", func(c *exploreConfig) { c.ttl = 0 }, "--ttl 0s"},
		{"duration", func(c *exploreConfig) { c.duration = 100 * time.Millisecond }, "--duration 100ms"},
		{"fault", func(c *exploreConfig) { c.faults = []string{"meteor"} }, `unknown fault "meteor"`},
		{"impl", func(c *exploreConfig) { c.impls = []string{"zookeeper"} }, `unknown implementation "zookeeper"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testExploreCfg(t)
			tt.edit(&cfg)
			if err := runExplore(t.Context(), cfg); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v; want it to say %q", err, tt.want)
			}
		})
	}
}

func TestExploreReplayAndStatus(t *testing.T) {
	cfg := testExploreCfg(t)
	cfg.duration, cfg.faults, cfg.outside = 2*time.Second, []string{"pause,partition"}, true
	got := cfg.replay(17, []int{4, 1, 4})
	want := "go run ./cmd/quorumlock lab explore --seed 17 --seeds 1 --backend embedded --node-count 5 --clients 2 --ttl 250ms " +
		"--duration 2s --max-faults 2 --outside-model --faults pause,partition --impl quorumlock,redsync --drop 1,4"
	if got != want {
		t.Errorf("replay =\n%s\nwant\n%s", got, want)
	}
	violated := lab.ImplRun{Impl: "quorumlock", Check: lab.Exploration{Expired: []int{0}}}
	clean := lab.ImplRun{Impl: "quorumlock"}
	inside := lab.SeedResult{Schedule: lab.Schedule{Seed: 5}, Runs: []lab.ImplRun{violated}}
	outside := lab.SeedResult{Schedule: lab.Schedule{Seed: 6, Outside: true}, Runs: []lab.ImplRun{violated}}
	ok := lab.SeedResult{Schedule: lab.Schedule{Seed: 7}, Runs: []lab.ImplRun{clean}}
	var ec exitCoder
	if err := exploreStatus(&lab.ExploreResults{Impls: []string{"quorumlock"}, Seeds: []lab.SeedResult{ok, outside}}); err != nil {
		t.Errorf("a violation outside the model failed the exploration: %v", err)
	}
	err := exploreStatus(&lab.ExploreResults{Impls: []string{"quorumlock"}, Seeds: []lab.SeedResult{ok, inside}})
	if !asExitCoder(err, &ec) || ec.ExitCode() != exitLabUnsafe || !strings.Contains(err.Error(), "seeds 5") {
		t.Errorf("err = %v; want exit %d naming seed 5", err, exitLabUnsafe)
	}
}
