package lab

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sampleResults() *Results {
	h := History{
		Clients:  2,
		Duration: time.Second,
		Holds:    []Hold{hold(0, 0, 300*ms, 0), hold(1, 200*ms, 600*ms, 500*ms), hold(0, 600*ms, 700*ms, 900*ms)},
		Attempts: []Attempt{{OK: true, MajorityUp: true, Latency: 3 * ms}, {OK: false, MajorityUp: true}},
		Writes:   []Write{inc(0, 1, true), inc(1, 1, true)},
		Faults:   []FaultSpan{{Name: "kill", Nodes: []int{1}, Start: 100 * ms, End: 400 * ms}},

		FinalCounter: 1, HasCounter: true,
	}
	c := CheckHistory(h)
	want := Expectation{Violations: None, LostUpdates: Maybe}
	return &Results{
		Backend: "embedded", Nodes: 5, Seed: 1, Duration: time.Second, TTL: 500 * ms,
		Scenarios: []ScenarioResult{{
			Name: "sample", Title: "a sample", Description: "made by hand", Expect: "no violations",
			Outcomes: []Outcome{
				{Scenario: "sample", Impl: "quorumlock", Expected: want, Check: c, Verdict: Judge(want, c), History: h},
				{Scenario: "sample", Impl: "redsync", Skipped: "not supported here"},
			},
		}},
	}
}

func TestJudge(t *testing.T) {
	tests := []struct {
		name           string
		want           Expectation
		check          Check
		ok             bool
		text           string
		failureInTable bool
	}{
		{name: "clean", want: Expectation{}, check: Check{}, ok: true, text: "as expected"},
		{name: "unexpected violation", want: Expectation{}, check: Check{Violations: 2}, text: "UNEXPECTED violations"},
		{name: "expected violation shown", want: Expectation{Violations: Expected}, check: Check{Violations: 1}, ok: true, text: "as expected"},
		{name: "expected violation not shown", want: Expectation{Violations: Expected}, check: Check{}, ok: true, text: "ok (violations not shown)"},
		{name: "maybe lost updates", want: Expectation{LostUpdates: Maybe}, check: Check{LostUpdates: 3, HasCounter: true}, ok: true, text: "as expected"},
		{name: "stale writes judged only with fencing", want: Expectation{}, check: Check{StaleWrites: 1, HasCounter: true}, ok: true, text: "as expected"},
		{name: "stale writes", want: Expectation{}, check: Check{StaleWrites: 1, HasCounter: true, HasFence: true}, text: "UNEXPECTED stale writes"},
		{name: "auction", want: Expectation{Auction: Expected}, check: Check{HasAuction: true}, ok: true, text: "ok (auction not shown)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Judge(tt.want, tt.check)
			if v.OK() != tt.ok || v.String() != tt.text {
				t.Errorf("verdict = %v, %q; want %v, %q", v.OK(), v.String(), tt.ok, tt.text)
			}
		})
	}
}

func TestFailures(t *testing.T) {
	r := sampleResults()
	if f := r.Failures("quorumlock"); len(f) != 1 || !strings.Contains(f[0], "UNEXPECTED violations") {
		t.Errorf("failures = %q", f)
	}
	if f := r.Failures("redsync"); len(f) != 0 {
		t.Errorf("skipped run counted as failure: %q", f)
	}
}

func TestWriteTableAndJSON(t *testing.T) {
	r := sampleResults()
	var b bytes.Buffer
	if err := WriteTable(&b, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"scenario", "quorumlock", "UNEXPECTED violations", "skipped: not supported here", "1/2", "50%"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := WriteJSON(&b, r); err != nil {
		t.Fatal(err)
	}
	var back Results
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Scenarios[0].Outcomes[0].Check.Violations != 1 {
		t.Errorf("JSON round trip lost the violation: %s", b.String())
	}
}

func TestWriteReport(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "report")
	r := sampleResults()
	if err := WriteReport(dir, r); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "](sample.svg)") || !strings.Contains(string(md), "## sample") {
		t.Errorf("report does not link the timeline:\n%s", md)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "sample.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(svg, []byte("<svg")) {
		t.Errorf("timeline is not an SVG")
	}
	// The legend names what the sample shows, and nothing it does not.
	for _, want := range []string{"holding the lock", "fault in force", "two clients held at once", "write accepted", "kill, node 1"} {
		if !bytes.Contains(svg, []byte(want)) {
			t.Errorf("timeline lacks %q", want)
		}
	}
	for _, absent := range []string{"refused by the fencing check", "aborted by EXEC"} {
		if bytes.Contains(svg, []byte(absent)) {
			t.Errorf("timeline's legend has %q, which the sample does not show", absent)
		}
	}
	// The labels are measured with the font the SVG carries.
	if !bytes.Contains(svg, []byte("@font-face")) {
		t.Errorf("timeline does not embed its font")
	}
	if _, err := os.Stat(filepath.Join(dir, "results.json")); err != nil {
		t.Error(err)
	}
}

func TestProgress(t *testing.T) {
	for _, terminal := range []bool{false, true} {
		var b bytes.Buffer
		p := NewProgress(&b, terminal)
		p.Start("baseline", "quorumlock", 300*ms)
		time.Sleep(250 * ms)
		p.Done(Outcome{Scenario: "baseline", Impl: "quorumlock", Elapsed: 300 * ms})
		p.Start("auction", "redsync", 300*ms)
		p.Done(Outcome{Scenario: "auction", Impl: "redsync", Skipped: "why not"})
		out := b.String()
		if !strings.Contains(out, "baseline") || !strings.Contains(out, "as expected") || !strings.Contains(out, "skipped: why not") {
			t.Errorf("terminal=%v: progress output:\n%s", terminal, out)
		}
	}
}

func TestJudgeDegraded(t *testing.T) {
	v := Judge(Expectation{MinAvailability: 0.5}, Check{MajorityUp: 10, Availability: 0.2})
	if !v.OK() || v.String() != "as expected; degraded: availability 20% < 50%" {
		t.Errorf("verdict = %v, %q", v.OK(), v)
	}
	if v := Judge(Expectation{MinAvailability: 0.5}, Check{}); len(v.Degraded) != 0 {
		t.Errorf("no attempts judged degraded: %q", v)
	}
}

func TestTimelineMarksWrites(t *testing.T) {
	h := History{
		Clients: 2, Duration: time.Second,
		Holds: []Hold{hold(0, 0, 300*ms, 200*ms)},
		Writes: []Write{
			fenced(0, 1, 2, true),
			{Client: 1, Kind: Increment, Value: 1, Fence: 1, HasFence: true, Rejected: true, At: 400 * ms},
			{Client: 1, Kind: Bid, Value: 5, Aborted: true, At: 500 * ms},
			{Client: 0, Kind: Bid, Value: 4, Accepted: true, At: 600 * ms},
			{Client: 1, Kind: Bid, Value: 4, Accepted: true, At: 700 * ms},
		},
		HasPrice: true, FinalPrice: 4,
	}
	c := CheckHistory(h)
	if len(c.BadBids) != 1 || c.BadBids[0] != 4 {
		t.Fatalf("bad bids = %v; want [4]", c.BadBids)
	}
	s := &ScenarioResult{Name: "marks", Outcomes: []Outcome{{Impl: "x", History: h, Check: c}}}
	var texts []string
	for _, e := range legendFor(s) {
		texts = append(texts, e.text)
	}
	got := strings.Join(texts, "\n")
	for _, want := range []string{"write accepted", "auction invariant broke", "refused by the fencing check", "aborted by EXEC"} {
		if !strings.Contains(got, want) {
			t.Errorf("legend lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "fault in force") || strings.Contains(got, "two clients held at once") {
		t.Errorf("legend names what the history lacks:\n%s", got)
	}
	path := filepath.Join(t.TempDir(), "marks.svg")
	if err := writeTimeline(path, s); err != nil {
		t.Fatal(err)
	}
}
