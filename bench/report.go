package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
)

// Target is one figure of project issue #4 against its goal.
type Target struct {
	Figure string  `json:"figure"`
	Value  float64 `json:"value"`
	Goal   string  `json:"goal"`
	Met    bool    `json:"met"`
}

func (r *Report) targets() []Target {
	var ts []Target
	le := func(fig string, v, goal float64) {
		if v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) {
			ts = append(ts, Target{Figure: fig, Value: v, Goal: fmt.Sprintf("≤ %g", goal), Met: v <= goal})
		}
	}
	ge := func(fig string, v, goal float64) {
		if v > 0 && !math.IsInf(v, 0) && !math.IsNaN(v) {
			ts = append(ts, Target{Figure: fig, Value: v, Goal: fmt.Sprintf("≥ %g", goal), Met: v >= goal})
		}
	}
	if ours, rs, raw := byName(r.Uncontended, NameOurs), byName(r.Uncontended, NameRedsync), byName(r.Uncontended, NameRaw); ours != nil {
		if rs != nil {
			le("1 uncontended time, ours/redsync", ours.NsPerOp/rs.NsPerOp, 0.8)
			le("1 uncontended allocs/op, ours/redsync", ours.AllocsPerOp/rs.AllocsPerOp, 0.33)
		}
		if raw != nil {
			le("1 uncontended time, ours/raw", ours.NsPerOp/raw.NsPerOp, 1.15)
		}
	}
	if ours := byName(r.Contention, NameOurs); ours != nil {
		if rs := byName(r.Contention, NameRedsync); rs != nil {
			le("2 contention wait p99, ours/redsync", ours.WaitP99Ms/rs.WaitP99Ms, 0.1)
			le("2 contention wait max, ours/redsync", ours.WaitMaxMs/rs.WaitMaxMs, 0.1)
		}
		le("2 contention fairness (max/min per worker), ours", ours.Fairness, 1.5)
	}
	if fast, slow := byName(r.SlowNode, NameOursAllFastIdle), byName(r.SlowNode, NameOurs); fast != nil && slow != nil {
		le("3 one slow node, ours p50 / all-fast p50 (same idle gaps)", slow.P50Ms/fast.P50Ms, 1.2)
	}
	if ours, rs := byName(r.Throughput, NameOurs), byName(r.Throughput, NameRedsync); ours != nil && rs != nil && rs.PerSecond > 0 {
		ge("4 throughput, ours/redsync", ours.PerSecond/rs.PerSecond, 1.0)
	}
	return ts
}

// row is a pointer to a result row of one contender.
type row[T any] interface {
	*T
	contender() string
}

func (r *OpResult) contender() string         { return r.Name }
func (r *ContentionResult) contender() string { return r.Name }
func (r *LatencyResult) contender() string    { return r.Name }
func (r *ThroughputResult) contender() string { return r.Name }

// byName returns the row of the named contender, nil when it did not run.
func byName[T any, P row[T]](rows []T, name string) *T {
	for i := range rows {
		if P(&rows[i]).contender() == name {
			return &rows[i]
		}
	}
	return nil
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report as aligned text tables, one per figure,
// each with its ratios to redsync.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }
	mode := "full"
	if r.Quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "quorumlock bench: %d %s nodes, %s, GOMAXPROCS=%d, %s run, %.1f s\n",
		r.Nodes, r.Label, r.GoVersion, r.GOMAXPROCS, mode, r.Seconds)
	ops := func(title string, rs []OpResult, base, label string) {
		if len(rs) == 0 {
			return
		}
		b := byName(rs, base)
		p("\n%s\t\n", title)
		p("\tops\tns/op\tB/op\tallocs/op\ttime ×%s\tallocs ×%s\terrors\t\n", label, label)
		for _, o := range rs {
			p("%s\t%d\t%.0f\t%.0f\t%.1f\t%s\t%s\t%d\t\n", o.Name, o.Ops, o.NsPerOp, o.BytesPerOp, o.AllocsPerOp,
				ratio(o.NsPerOp, b, func(x *OpResult) float64 { return x.NsPerOp }),
				ratio(o.AllocsPerOp, b, func(x *OpResult) float64 { return x.AllocsPerOp }), o.Errors)
		}
	}
	ops("1. Uncontended Acquire+Release, random keys", r.Uncontended, NameRedsync, "redsync")
	if len(r.Contention) > 0 {
		rs := byName(r.Contention, NameRedsync)
		c0 := r.Contention[0]
		p("\n2. Contention: %d workers, one key, %.1f s\t\n", c0.Workers, c0.Seconds)
		p("\tacq/s\twait p50 ms\twait p99 ms\twait max ms\tp99 ×redsync\tmax ×redsync\tmin..max/worker\tfairness\tfailures\toverlaps\t\n")
		for _, c := range r.Contention {
			p99, mx := "-", "-"
			if rs != nil && rs.WaitP99Ms > 0 {
				p99 = fmt.Sprintf("%.3f", c.WaitP99Ms/rs.WaitP99Ms)
				mx = fmt.Sprintf("%.3f", c.WaitMaxMs/rs.WaitMaxMs)
			}
			p("%s\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%s\t%d..%d\t%.2f\t%d\t%d\t\n", c.Name, c.PerSecond, c.WaitP50Ms, c.WaitP99Ms, c.WaitMaxMs,
				p99, mx, c.MinPerWkr, c.MaxPerWkr, c.Fairness, c.Failures, c.Overlaps)
		}
	}
	if len(r.SlowNode) > 0 {
		p("\n3. One slow node (+latency on node %d), Acquire latency\t\n", r.Nodes-1)
		p("\tops\tp50 ms\tp99 ms\tmax ms\terrors\t\n")
		for _, s := range r.SlowNode {
			p("%s\t%d\t%.2f\t%.2f\t%.2f\t%d\t\n", s.Name, s.Ops, s.P50Ms, s.P99Ms, s.MaxMs, s.Errors)
		}
	}
	if len(r.Throughput) > 0 {
		var rs float64
		if t := byName(r.Throughput, NameRedsync); t != nil {
			rs = t.PerSecond
		}
		p("\n4. Throughput: %d goroutines, distinct keys\t\n", r.Throughput[0].Goroutines)
		p("\tacquired\tacq/s\t×redsync\terrors\tfirst error\t\n")
		for _, t := range r.Throughput {
			x := "-"
			if rs > 0 {
				x = fmt.Sprintf("%.2f", t.PerSecond/rs)
			}
			p("%s\t%d\t%.0f\t%s\t%d\t%s\t\n", t.Name, t.Acquired, t.PerSecond, x, t.Errors, clip(t.FirstError, 60))
		}
	}
	ops("5a. Fencing: Acquire+Release, plain vs WithFencing(true)", r.Fencing, NameOurs, "plain")
	ops("5b. Guard: one SET under a held lock, per command", r.Guard, NameUnguarded, "plain")
	if len(r.Targets) > 0 {
		p("\nTargets\t\n")
		p("\tvalue\tgoal\tmet\t\n")
		for _, t := range r.Targets {
			met := "no"
			if t.Met {
				met = "yes"
			}
			p("%s\t%.3f\t%s\t%s\t\n", t.Figure, t.Value, t.Goal, met)
		}
	}
	return tw.Flush()
}

func ratio(v float64, base *OpResult, f func(*OpResult) float64) string {
	if base == nil || f(base) == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", v/f(base))
}

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
