package lab

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// electionColumns are the election table's columns, shared by the terminal
// and the Markdown report.
var electionColumns = []string{"scenario", "impl", "terms", "overlaps", "stale offered", "stale accepted",
	"failovers", "failover p50 ÷ TTL", "failover p99 ÷ TTL"}

func electionRow(o ElectionOutcome) []string {
	if o.Skipped != "" {
		return []string{o.Scenario, o.Impl, "skipped: " + o.Skipped, "", "", "", "", "", ""}
	}
	c := o.Check
	overlaps := fmt.Sprint(c.Overlaps)
	if c.Overlaps > 0 {
		overlaps += " (" + round(c.OverlapTime) + ")"
	}
	stale := fmt.Sprintf("%d/%d", c.StaleAccepted, c.Accepted)
	if c.StaleTerms > 0 {
		stale += fmt.Sprintf(" (%d terms)", c.StaleTerms)
	}
	failovers := fmt.Sprint(len(c.Failovers))
	if c.Unresolved > 0 {
		failovers += fmt.Sprintf(" (+%d unresolved)", c.Unresolved)
	}
	p50, p99 := "-", "-"
	if len(c.Failovers) > 0 {
		p50, p99 = fmt.Sprintf("%.2f", c.FailoverP50), fmt.Sprintf("%.2f", c.FailoverP99)
	}
	row := []string{o.Scenario, o.Impl, fmt.Sprint(c.Terms), overlaps, fmt.Sprint(c.StaleOffered), stale,
		failovers, p50, p99}
	if o.Err != "" {
		row = append(row, "error: "+o.Err)
	}
	return row
}

// WriteElectionTable prints the election results as an aligned table.
func WriteElectionTable(w io.Writer, r *ElectionResults) error {
	var rows [][]string
	for _, o := range r.Runs {
		rows = append(rows, electionRow(o))
	}
	return writeAligned(w, electionColumns, rows)
}

// WriteElectionJSON writes the election results for machines.
func WriteElectionJSON(w io.Writer, r *ElectionResults) error { return writeIndentedJSON(w, r) }

// WriteElectionReport writes dir/election.md and dir/election.json,
// creating dir.
func WriteElectionReport(dir string, r *ElectionResults) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lab: election report: %w", err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Leader election\n\n")
	fmt.Fprintf(&b, "%d candidates on %d %s nodes, TTL %v, %v per run, seed %d (took %v).\n\n",
		r.Candidates, r.Nodes, r.Backend, r.TTL, r.Duration, r.Seed, r.Elapsed.Round(1e9))
	b.WriteString("Each candidate is a client of its own; while it leads it writes its term's fence to a separate store " +
		"through `redlock.FencedSet` every 5 ms. quorumlock runs `Election.Run`; the redsync pattern locks a Mutex, " +
		"extends it every TTL/3, stops leading at the first failed extension and takes as fence a counter it " +
		"increments on the store at the start of each term.\n\n")
	b.WriteString("- **overlaps**: pairs of terms in force at the same instant, each ending where its leader saw it end " +
		"(a paused leader's term ends where it would have noticed, had it run).\n")
	b.WriteString("- **stale accepted**: writes the store accepted from a term after it had accepted one from a term " +
		"that started later (of all writes accepted).\n")
	b.WriteString("- **stale offered**: writes, accepted or refused, that a term sent after the store had accepted " +
		"one from a term that started later: what a store without the fencing check would have taken.\n")
	b.WriteString("- **failover**: from the loss of a leader (the fault that hit it, or its term's end) to the start of " +
		"the next term, as a multiple of the TTL.\n\n")
	for _, s := range ElectionScenarios() {
		fmt.Fprintf(&b, "- `%s`: %s\n", s.Name, s.Description)
	}
	b.WriteString("\n| " + strings.Join(electionColumns, " | ") + " |\n|")
	b.WriteString(strings.Repeat("---|", len(electionColumns)) + "\n")
	for _, o := range r.Runs {
		row := electionRow(o)[:len(electionColumns)]
		if o.Err != "" {
			row[len(row)-1] += " (error: " + o.Err + ")"
		}
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	return writeReportFiles(dir, "election report", "election.md", b.String(), "election.json", r)
}
