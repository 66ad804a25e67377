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

func TestLabElection(t *testing.T) {
	cfg := labElectionConfig{
		backend:    "embedded",
		count:      5,
		candidates: 3,
		scenarios:  []string{"slow-node"},
		impls:      []string{"quorumlock,redsync"},
		// Long enough in TTLs for a first term on a loaded host: the
		// test reads the table and files, not the timings.
		duration: 3 * time.Second,
		ttl:      500 * time.Millisecond,
		seed:     1,
		out:      filepath.Join(t.TempDir(), "report"),
		stdout:   &bytes.Buffer{},
		stderr:   &bytes.Buffer{},
	}
	if err := runLabElection(t.Context(), cfg); err != nil {
		t.Fatalf("runLabElection: %v\nstderr:\n%s", err, cfg.stderr)
	}
	out := cfg.stdout.(*bytes.Buffer).String()
	for _, want := range []string{"stale accepted", "failover p99 ÷ TTL", "slow-node", "quorumlock", "redsync", "report:"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	md, err := os.ReadFile(filepath.Join(cfg.out, "election.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "| slow-node | redsync |") {
		t.Errorf("election.md lacks the redsync row:\n%s", md)
	}
	var res lab.ElectionResults
	data, err := os.ReadFile(filepath.Join(cfg.out, "election.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Runs) != 2 || res.Runs[0].Check.Terms == 0 {
		t.Errorf("election.json: %d runs, first with %d terms; want 2 runs with terms", len(res.Runs), res.Runs[0].Check.Terms)
	}
}

func TestLabElectionBadFlags(t *testing.T) {
	for _, c := range []struct {
		mod  func(*labElectionConfig)
		want string
	}{
		{func(c *labElectionConfig) { c.backend = "k8s" }, "--backend"},
		{func(c *labElectionConfig) { c.scenarios = []string{"nope"} }, "unknown election scenario"},
		{func(c *labElectionConfig) { c.impls = []string{"etcd"} }, "unknown election implementation"},
		{func(c *labElectionConfig) { c.candidates = 1 }, "at least 2"},
	} {
		cfg := labElectionConfig{backend: "embedded", count: 3, candidates: 3, impls: []string{"quorumlock"},
			duration: time.Second, ttl: time.Second, out: t.TempDir(), stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
		c.mod(&cfg)
		err := runLabElection(t.Context(), cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v; want one that mentions %q", err, c.want)
		}
	}
}
