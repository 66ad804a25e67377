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
	// The test reads the table and the files. A run on a starved host may
	// elect nobody in its time (the JSON then has no term to show): that
	// run lost its shape, and the next one is given twice the time.
	var (
		cfg labElectionConfig
		res lab.ElectionResults
	)
	for try, d := 1, 3*time.Second; ; try, d = try+1, 2*d {
		cfg = labElectionConfig{
			backend:    "embedded",
			count:      5,
			candidates: 3,
			scenarios:  []string{"slow-node"},
			impls:      []string{"quorumlock,redsync"},
			duration:   d,
			ttl:        500 * time.Millisecond,
			seed:       1,
			out:        filepath.Join(t.TempDir(), "report"),
			stdout:     &bytes.Buffer{},
			stderr:     &bytes.Buffer{},
		}
		if err := runLabElection(t.Context(), cfg); err != nil {
			t.Fatalf("runLabElection: %v\nstderr:\n%s", err, cfg.stderr)
		}
		data, err := os.ReadFile(filepath.Join(cfg.out, "election.json"))
		if err != nil {
			t.Fatal(err)
		}
		res = lab.ElectionResults{}
		if err := json.Unmarshal(data, &res); err != nil {
			t.Fatal(err)
		}
		if len(res.Runs) != 2 {
			t.Fatalf("election.json: %d runs, want 2 (quorumlock, redsync)", len(res.Runs))
		}
		if res.Runs[0].Check.Terms > 0 || try == 3 {
			break
		}
		t.Logf("run %d (%v): nobody was elected; running again with twice the time", try, d)
	}
	if res.Runs[0].Check.Terms == 0 {
		t.Errorf("election.json: the quorumlock run shows no term in three runs of up to %v", cfg.duration)
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
