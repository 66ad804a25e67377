package bench

import (
	"bytes"
	"strings"
	"testing"
)

// TestTargetsJudge checks the verdicts of a report built by hand: a ratio
// on the right side of its goal is met, on the wrong side MISSED, and a
// held-lock cost the baseline made negative is not judged at all.
func TestTargetsJudge(t *testing.T) {
	r := &Report{
		Uncontended: []OpResult{{Name: NameOurs, NsPerOp: 104, AllocsPerOp: 120}, {Name: NameRaw, NsPerOp: 100, AllocsPerOp: 100}},
		Contention: []ContentionResult{
			{Name: NameOursPerWorker, Workers: 8, WaitP99Ms: 5, WaitMaxMs: 9, Fairness: 1.1, PerSecond: 300, Handoffs: 10, HandoffP50Ms: 1.5},
			{Name: NameRedsyncPerWorker, Workers: 8, WaitP99Ms: 100, WaitMaxMs: 100, Fairness: 3, PerSecond: 200, Handoffs: 3, HandoffP50Ms: 2},
		},
		RTT: &RTTResult{RoundP50Ms: 1},
		Held: []HeldResult{
			{Name: NameOurs, Locks: 1000, Held: 1000, GoroutinesPerLock: 0.001, HeapBytesPerLock: 2000},
			{Name: NameOurs, Locks: 10000, Held: 10000, GoroutinesPerLock: -0.2, HeapBytesPerLock: 2100},
		},
		ReleaseStorm: []ReleaseStormResult{{Name: NameOurs, Locks: 10, Held: 10, ReleaseErrors: 1, ErrorShare: 0.1}},
	}
	want := map[string]string{
		"Uncontended Acquire+Release time, ×raw floor":                     "met",
		"Uncontended Acquire+Release allocs, ×raw floor":                   "MISSED",
		"8 processes, one key, 2ms critical section: wait p99, ×redsync":   "met",
		"8 processes, one key, 2ms critical section: throughput, ×redsync": "met",
		"Hand-off between processes: p50 in round trips":                   "met",
		"10000 locks held, auto-extended: goroutines per lock":             "info",
		"Heap per held lock, 10000 ÷ 1000 locks (flat)":                    "met",
		"10 Do locks released at once: share of releases with an error":    "MISSED",
	}
	got := map[string]string{}
	for _, tg := range r.targets() {
		v := "MISSED"
		switch {
		case tg.Info:
			v = "info"
		case tg.Met:
			v = "met"
		}
		got[tg.Figure] = v
	}
	for fig, w := range want {
		if got[fig] != w {
			t.Errorf("%s: %q, want %q (all: %v)", fig, got[fig], w, got)
		}
	}
	r.Targets = r.targets()
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "| **MISSED** |") || !strings.Contains(b.String(), "| met |") {
		t.Errorf("Markdown table without verdicts:\n%s", b.String())
	}
}
