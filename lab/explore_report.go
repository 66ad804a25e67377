package lab

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/anishathalye/porcupine"
)

// SeedLine is one line per seed: the verdict of every implementation.
func SeedLine(r SeedResult) string {
	var b strings.Builder
	where := "in model"
	if r.Schedule.Outside {
		where = "OUTSIDE model"
	}
	fmt.Fprintf(&b, "seed %-5d %-13s %d faults (%s)", r.Schedule.Seed, where, len(r.Schedule.Faults), kindList(r.Schedule.Kinds()))
	for _, run := range r.Runs {
		fmt.Fprintf(&b, " | %s: %s", run.Impl, runVerdict(run))
	}
	if r.Finding != "" {
		fmt.Fprintf(&b, " | finding: %s", r.Finding)
	}
	if r.Shrunk != nil {
		fmt.Fprintf(&b, " | shrunk to %d faults in %d runs", len(r.Shrunk.Faults), r.ShrinkRuns)
	}
	if r.Starved {
		fmt.Fprintf(&b, " | STARVED after %d runs: the host was too busy", r.Tries)
	} else if r.Tries > 1 {
		fmt.Fprintf(&b, " | ran %d times (starved before)", r.Tries)
	}
	fmt.Fprintf(&b, " [%v]", r.Elapsed.Round(100*time.Millisecond))
	return b.String()
}

func kindList(ks []FaultKind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func runVerdict(run ImplRun) string {
	v := run.Check.Violations()
	s := "ok"
	if len(v) > 0 {
		s = "VIOLATED " + strings.Join(v, ", ")
	}
	if run.Granted > 0 {
		s += fmt.Sprintf(" (%d acq, %d granted, served %.0f%%)", run.Check.Acquisitions, run.Granted, 100*run.Check.Availability)
	} else {
		s += fmt.Sprintf(" (%d acq, served %.0f%%)", run.Check.Acquisitions, 100*run.Check.Availability)
	}
	if len(run.Errors) > 0 {
		s += fmt.Sprintf(" [%d fault errors: %s]", len(run.Errors), run.Errors[0])
	}
	return s
}

// ExploreSummary is the exploration's table: per implementation, seeds run,
// seeds with violations inside and outside the model, and per fault kind the
// seeds that used it.
func ExploreSummary(w io.Writer, res *ExploreResults) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "impl\tseeds\tviolating seeds (in model)\tviolating seeds (outside)\tmedian served\tfindings\tstarved\n")
	for i, impl := range res.Impls {
		var seeds, in, out, findings, starved int
		var served []float64
		for _, s := range res.Seeds {
			if i >= len(s.Runs) {
				continue
			}
			seeds++
			if len(s.Runs[i].Check.Violations()) > 0 {
				if s.Schedule.Outside {
					out++
				} else {
					in++
				}
			}
			if i == 0 && s.Finding != "" {
				findings++
			}
			if i == 0 && s.Starved {
				starved++
			}
			served = append(served, s.Runs[i].Check.Availability)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%.0f%%\t%d\t%d\n", impl, seeds, in, out, 100*medianFloat(served), findings, starved)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "fault\tseeds using it")
	for _, impl := range res.Impls {
		fmt.Fprintf(tw, "\t%s violated", impl)
	}
	fmt.Fprintln(tw)
	for _, k := range AllFaultKinds() {
		var used int
		viol := make([]int, len(res.Impls))
		for _, s := range res.Seeds {
			uses := false
			for _, f := range s.Schedule.Faults {
				uses = uses || f.Kind == k
			}
			if !uses {
				continue
			}
			used++
			for i, run := range s.Runs {
				if len(run.Check.Violations()) > 0 {
					viol[i]++
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%d", k, used)
		for _, v := range viol {
			fmt.Fprintf(tw, "\t%d", v)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func medianFloat(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	for i := range s { // insertion sort: a few hundred values
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}

// WriteSeedReport writes, for a seed on which some implementation violated,
// dir/seed-N/ with the schedule and what happened as text (timeline.txt), as
// a picture (timeline.svg), the counter's linearizability check when it
// failed (counter.html), and the results as JSON. replay is the command that
// runs the (shrunk) schedule again.
func WriteSeedReport(dir string, r SeedResult, replay string) (string, error) {
	d := filepath.Join(dir, fmt.Sprintf("seed-%d", r.Schedule.Seed))
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("lab: explore report: %w", err)
	}
	var b strings.Builder
	b.WriteString(r.Schedule.Timeline())
	if r.Shrunk != nil {
		fmt.Fprintf(&b, "\nshrunk (still fails; %d runs to find):\n%s", r.ShrinkRuns, r.Shrunk.Timeline())
	}
	fmt.Fprintf(&b, "\nreplay: %s\n", replay)
	sr := &ScenarioResult{Name: fmt.Sprintf("seed %d", r.Schedule.Seed)}
	for _, run := range r.Runs {
		fmt.Fprintf(&b, "\n%s: %s\n", run.Impl, runVerdict(run))
		describeRun(&b, run)
		h, c := plotHistory(run, r.Schedule.Clients)
		sr.Outcomes = append(sr.Outcomes, Outcome{Impl: run.Impl, History: h, Check: c,
			Verdict: Verdict{Unexpected: run.Check.Violations()}})
		if run.Check.Linearizable == "illegal" {
			name := filepath.Join(d, "counter-"+run.Impl+".html")
			if err := porcupine.VisualizePath(run.Check.counterModel, run.Check.counterInfo, name); err == nil {
				fmt.Fprintf(&b, "  counter history: %s\n", filepath.Base(name))
			}
		}
	}
	if err := writeTimeline(filepath.Join(d, "timeline.svg"), sr); err != nil {
		return "", err
	}
	return d, writeReportFiles(d, "explore report", "timeline.txt", b.String(), "result.json", r)
}

// describeRun lists the faults as they happened and every violation with
// the holds involved.
func describeRun(b *strings.Builder, run ImplRun) {
	h, x := run.History, run.Check
	for _, f := range h.Faults {
		fmt.Fprintf(b, "  %7v..%-7v %s %s\n", round(f.Start), round(f.End), f.Name, joinInts(f.Nodes))
	}
	hold := func(i int) string {
		hd := h.Holds[i]
		s := fmt.Sprintf("client %d.%d on %s acquired %v (asked %v), valid until %v", hd.Client/workersPerClient, hd.Client%workersPerClient, exploreKeyNames[hd.Key],
			round(hd.Acquired), round(hd.Start), round(hd.Until))
		if hd.Released > 0 {
			s += fmt.Sprintf(", released %v", round(hd.Released))
		}
		if hd.HasFence {
			s += fmt.Sprintf(", fence %d", hd.Fence)
		}
		return s
	}
	for _, o := range x.Overlaps {
		fmt.Fprintf(b, "  OVERLAP %v..%v: %s; and %s\n", round(o.Start), round(o.End), hold(o.A), hold(o.B))
	}
	for _, i := range x.Expired {
		fmt.Fprintf(b, "  EXPIRED AT RETURN: %s\n", hold(i))
	}
	for _, i := range x.ExpiredStalled {
		fmt.Fprintf(b, "  expired at return while the host stalled (not counted): %s\n", hold(i))
	}
	for _, p := range x.FenceInversions {
		fmt.Fprintf(b, "  FENCE NOT INCREASING: %s; then %s\n", hold(p[0]), hold(p[1]))
	}
	for _, i := range x.StaleWrites {
		w := h.Writes[i]
		fmt.Fprintf(b, "  STALE WRITE ACCEPTED at %v with fence %d, by %s\n", round(w.At), w.Fence, hold(w.Hold))
	}
	if x.Linearizable != "ok" {
		fmt.Fprintf(b, "  counter: %s, %d of %d increments lost, %d written past their validity\n", x.Linearizable, x.LostUpdates, x.Increments, x.LateCounter)
	}
}

// plotHistory lays one run out for writeTimeline: a row per client and key
// that has anything to show.
func plotHistory(run ImplRun, clients int) (History, Check) {
	h := run.History
	h.Holds = append([]Hold(nil), h.Holds...)
	h.Writes = append([]Write(nil), h.Writes...)
	used := map[int]bool{}
	for _, hd := range h.Holds {
		used[hd.Client*exploreKeys+hd.Key] = true
	}
	for _, w := range h.Writes {
		used[w.Client*exploreKeys+w.Key] = true
	}
	row := map[int]int{}
	h.RowNames = nil
	for c := range h.Clients {
		for k := range exploreKeys {
			if used[c*exploreKeys+k] {
				row[c*exploreKeys+k] = len(h.RowNames)
				who := fmt.Sprintf("client %d.%d", c/workersPerClient, c%workersPerClient)
				if c >= clients*workersPerClient {
					who = fmt.Sprintf("cold client %d", c)
				}
				h.RowNames = append(h.RowNames, who+" "+exploreKeyShort[k])
			}
		}
	}
	for i := range h.Holds {
		h.Holds[i].Client = row[h.Holds[i].Client*exploreKeys+h.Holds[i].Key]
	}
	for i := range h.Writes {
		h.Writes[i].Client = row[h.Writes[i].Client*exploreKeys+h.Writes[i].Key]
	}
	h.Clients = len(h.RowNames)
	return h, Check{Overlaps: run.Check.Overlaps, StaleAccepted: run.Check.StaleWrites, ExpiredAtReturn: run.Check.Expired}
}
