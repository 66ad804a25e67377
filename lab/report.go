package lab

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// columns of the table, shared by the terminal and the Markdown report.
var columns = []string{"scenario", "impl", "acq", "violations", "overlap", "lost upd", "stale wr", "avail", "p50", "p99", "writes/s", "verdict"}

func row(s ScenarioResult, o Outcome) []string {
	if o.Skipped != "" {
		return []string{s.Name, o.Impl, "-", "-", "-", "-", "-", "-", "-", "-", "-", "skipped: " + o.Skipped}
	}
	c := o.Check
	lost, stale := "n/a", "n/a"
	if c.HasCounter {
		lost = fmt.Sprintf("%d/%d", c.LostUpdates, c.Increments)
		if c.HasFence {
			stale = fmt.Sprint(c.StaleWrites)
			if c.RejectedWrites > 0 {
				stale += fmt.Sprintf(" (%d refused)", c.RejectedWrites)
			}
		}
	}
	viol := fmt.Sprint(c.Violations)
	verdict := o.Verdict.String()
	if c.HasAuction {
		// The auction's violations are bids that broke the invariant.
		viol = fmt.Sprintf("%d/%d bids", c.AuctionViolations, c.Bids)
		if c.AbortedTxns > 0 {
			verdict += fmt.Sprintf("; %d txns aborted", c.AbortedTxns)
		}
	}
	avail := "n/a"
	if c.MajorityUp > 0 {
		avail = fmt.Sprintf("%.0f%%", 100*c.Availability)
	}
	if o.Err != "" {
		verdict = "error: " + o.Err
	}
	return []string{s.Name, o.Impl, fmt.Sprint(c.Acquisitions), viol, round(c.OverlapTime), lost, stale, avail, round(c.P50), round(c.P99), fmt.Sprintf("%.0f", o.Throughput), verdict}
}

func round(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(time.Millisecond).String()
	}
}

// WriteTable prints the results as an aligned table.
func WriteTable(w io.Writer, r *Results) error {
	var rows [][]string
	for _, s := range r.Scenarios {
		for _, o := range s.Outcomes {
			rows = append(rows, row(s, o))
		}
	}
	return writeAligned(w, columns, rows)
}

// WriteJSON writes the results for machines.
func WriteJSON(w io.Writer, r *Results) error { return writeIndentedJSON(w, r) }

// WriteReport writes dir/README.md, dir/results.json and one timeline picture
// per scenario into dir, creating it.
func WriteReport(dir string, r *Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lab: report: %w", err)
	}
	for i := range r.Scenarios {
		s := &r.Scenarios[i]
		name := s.Name + ".svg"
		if err := writeTimeline(filepath.Join(dir, name), s); err != nil {
			return err
		}
		s.Picture = name
	}
	var md strings.Builder
	writeMarkdown(&md, r)
	return writeReportFiles(dir, "report", "README.md", md.String(), "results.json", r)
}

func writeMarkdown(w io.Writer, r *Results) {
	fmt.Fprintf(w, "# quorumlock lab report\n\n")
	fmt.Fprintf(w, "Backend **%s**, %d lock nodes, seed %d, %v per scenario and implementation, lock TTL %v; "+
		"run started %s and took %v.\n\n", r.Backend, r.Nodes, r.Seed, r.Duration, r.TTL,
		r.Started.UTC().Format(time.RFC3339), r.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "Reproduce: `quorumlock lab --backend %s --seed %d --duration %v --ttl %v` (timing differs from run to run; "+
		"the seed fixes the schedule, the nodes it hits and the clients' random choices).\n\n", r.Backend, r.Seed, r.Duration, r.TTL)
	fmt.Fprintf(w, "How to read it: a **violation** is a pair of clients whose holding intervals "+
		"(from the moment Acquire returned to the earlier of release and the local validity deadline) intersect. "+
		"**Lost updates** are acknowledged counter increments missing from the final value (x/y = lost/acknowledged). "+
		"**Stale writes** are writes the storage accepted with a fencing token lower than one it had already accepted. "+
		"**Availability** is the share of acquisition attempts started while a majority of nodes was up that got the lock. "+
		"Latencies are of successful acquisitions and include waiting for the previous holder, so a fair lock shows a higher median than one "+
		"that lets the last holder win again. The **verdict** compares each measure with the scenario's expectation: "+
		"UNEXPECTED marks a safety measure that should have stayed zero; \"not shown\" marks an expected failure the run did not provoke; "+
		"\"degraded\" marks availability under the scenario's floor (a liveness remark, not a failure).\n\n")

	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(columns, " | "), strings.Repeat("---|", len(columns)))
	for _, s := range r.Scenarios {
		for _, o := range s.Outcomes {
			cells := row(s, o)
			cells[0] = fmt.Sprintf("[%s](#%s)", s.Name, s.Name)
			fmt.Fprintf(w, "| %s |\n", strings.Join(cells, " | "))
		}
	}
	fmt.Fprintln(w)

	for _, s := range r.Scenarios {
		fmt.Fprintf(w, "<a id=\"%s\"></a>\n## %s — %s\n\n%s\n\n**Expected:** %s\n\n", s.Name, s.Name, s.Title, s.Description, s.Expect)
		if f := faultsLine(s); f != "" {
			fmt.Fprintf(w, "**Faults injected:** %s\n\n", f)
		}
		for _, o := range s.Outcomes {
			switch {
			case o.Skipped != "":
				fmt.Fprintf(w, "- **%s**: skipped — %s\n", o.Impl, o.Skipped)
			case o.Err != "":
				fmt.Fprintf(w, "- **%s**: broke off — %s\n", o.Impl, o.Err)
			default:
				c := o.Check
				fmt.Fprintf(w, "- **%s**: %s. %d attempts, %d acquisitions, %d violations (%v overlapping)",
					o.Impl, o.Verdict, c.Attempts, c.Acquisitions, c.Violations, round(c.OverlapTime))
				if c.HasCounter {
					fmt.Fprintf(w, ", %d of %d increments lost", c.LostUpdates, c.Increments)
				}
				if c.HasFence && c.HasCounter {
					fmt.Fprintf(w, ", %d stale writes accepted, %d refused", c.StaleWrites, c.RejectedWrites)
				}
				if c.HasAuction {
					fmt.Fprintf(w, ", %d bids, %d auction violations, %d aborted transactions", c.Bids, c.AuctionViolations, c.AbortedTxns)
				}
				if o.Throughput > 0 {
					fmt.Fprintf(w, ", %.1f writes/s", o.Throughput)
				}
				fmt.Fprintln(w, ".")
				if hs := handoffLine(c); hs != "" {
					fmt.Fprintf(w, "  %s\n", hs)
				}
				if a := o.Attack; a != nil {
					fmt.Fprintf(w, "  %s\n", attackLine(a))
				}
				if rr := o.Roll; rr != nil {
					fmt.Fprintf(w, "  %s\n", rollLine(rr))
				}
				if len(o.Retries) > 0 {
					fmt.Fprintf(w, "  Set up again %d time(s): %s.\n", len(o.Retries), strings.Join(o.Retries, "; "))
				}
			}
		}
		if s.Picture != "" {
			fmt.Fprintf(w, "\n![timeline of %s](%s)\n", s.Name, s.Picture)
		}
		fmt.Fprintln(w)
	}
}

// faultsLine describes the faults of the first run that recorded any; the
// seed makes every implementation's schedule the same.
func faultsLine(s ScenarioResult) string {
	for _, o := range s.Outcomes {
		if len(o.History.Faults) == 0 {
			continue
		}
		var parts []string
		for _, f := range o.History.Faults {
			parts = append(parts, fmt.Sprintf("%s on node(s) %v from %v to %v", f.Name, f.Nodes, round(f.Start), round(f.End)))
		}
		return strings.Join(parts, "; ") + "."
	}
	return ""
}

// handoffLine says how the lock moved between clients: the measure that
// explains a throughput difference between a fair lock and one that lets
// the releasing client win again.
func handoffLine(c Check) string {
	n := c.Handoffs + c.Regains
	if n < 10 {
		return ""
	}
	s := fmt.Sprintf("Hand-offs: %.0f%% of acquisitions went to another client than the previous holder (median gap from its release %v), "+
		"%.0f%% back to the same client (median gap %v); per client %d..%d acquisitions",
		100*float64(c.Handoffs)/float64(n), round(c.HandoffGap), 100*float64(c.Regains)/float64(n), round(c.RegainGap),
		c.PerClientMin, c.PerClientMax)
	if c.Rounds > 0 && c.Acquisitions > 0 {
		s += fmt.Sprintf("; %.1f rounds on the nodes per acquisition", float64(c.Rounds)/float64(c.Acquisitions))
	}
	return s + "."
}

// attackLine tells an attack's story beyond the holds.
func attackLine(a *AttackRecord) string {
	s := fmt.Sprintf("Attack: A held on nodes %v, node %d was hit, %v of A's validity was left when B tried; B's one attempt: ", a.Mine, a.Victim, round(a.Left))
	if a.Try == nil {
		s += "got the lock"
	} else {
		s += "refused"
		var why []string
		for _, x := range []struct {
			name  string
			nodes []int
		}{{"quarantined", a.Try.Quarantined}, {"clock skewed", a.Try.Skewed}, {"taken", a.Try.Taken}} {
			if len(x.nodes) > 0 {
				why = append(why, fmt.Sprintf("%s on %v", x.name, x.nodes))
			}
		}
		if len(why) > 0 {
			s += " (" + strings.Join(why, ", ") + ")"
		}
	}
	if a.Waited {
		s += "; B's Acquire until A's validity ended: ran out"
	}
	if a.After {
		s += "; B got the lock after A's validity ended."
	} else {
		s += "; B got no lock after A's validity ended."
	}
	return s
}
