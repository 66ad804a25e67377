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
		ttl:       200 * time.Millisecond,
		attackTTL: 600 * time.Millisecond,
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
	tests := []struct {
		name     string
		outcomes []lab.Outcome
		code     int // 0: nil error; -1: a plain error
	}{
		{"clean", []lab.Outcome{outcome("quorumlock", lab.Verdict{}, ""), outcome("redsync", lab.Verdict{}, "")}, 0},
		{"redsync unsafe is a finding, not a failure", []lab.Outcome{outcome("redsync", unexpected, "")}, 0},
		{"quorumlock unsafe", []lab.Outcome{outcome("quorumlock", unexpected, ""), outcome("redsync", lab.Verdict{}, "")}, exitLabUnsafe},
		{"a run broke off", []lab.Outcome{outcome("redsync", lab.Verdict{}, "docker went away")}, -1},
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
