package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
)

// Target is one figure against its goal: quorumlock's value beside
// redsync's (or another reference) from the same run, the compared value
// (a ratio, or quorumlock's value itself) and whether it meets the goal.
type Target struct {
	Figure string  `json:"figure"`
	Ours   string  `json:"ours"`
	Ref    string  `json:"reference"`
	Value  float64 `json:"value"`
	Goal   string  `json:"goal"`
	Met    bool    `json:"met"`
	// Info marks a figure that is reported without a goal.
	Info bool `json:"info,omitempty"`
}

func (r *Report) targets() []Target {
	var ts []Target
	usable := func(v float64) bool { return !math.IsInf(v, 0) && !math.IsNaN(v) }
	le := func(fig, ours, ref string, v, goal float64) {
		if usable(v) {
			ts = append(ts, Target{Figure: fig, Ours: ours, Ref: ref, Value: v, Goal: fmt.Sprintf("≤ %g", goal), Met: v <= goal})
		}
	}
	ge := func(fig, ours, ref string, v, goal float64) {
		if usable(v) {
			ts = append(ts, Target{Figure: fig, Ours: ours, Ref: ref, Value: v, Goal: fmt.Sprintf("≥ %g", goal), Met: v >= goal})
		}
	}
	info := func(fig, ours, ref string, v float64) {
		ts = append(ts, Target{Figure: fig, Ours: ours, Ref: ref, Value: v, Goal: "reported", Met: true, Info: true})
	}
	f := func(format string, v float64) string { return fmt.Sprintf(format, v) }
	if ours, raw := byName(r.Uncontended, NameOurs), byName(r.Uncontended, NameRaw); ours != nil && raw != nil {
		le("Uncontended Acquire+Release time, ×raw floor", f("%.0f ns", ours.NsPerOp), "raw "+f("%.0f ns", raw.NsPerOp), ours.NsPerOp/raw.NsPerOp, 1.05)
		le("Uncontended Acquire+Release allocs, ×raw floor", f("%.1f", ours.AllocsPerOp), "raw "+f("%.1f", raw.AllocsPerOp), ours.AllocsPerOp/raw.AllocsPerOp, 1.1)
	}
	if ours, rs := byName(r.Uncontended, NameOurs), byName(r.Uncontended, NameRedsync); ours != nil && rs != nil {
		le("Uncontended Acquire+Release time, ×redsync", f("%.0f ns", ours.NsPerOp), f("%.0f ns", rs.NsPerOp), ours.NsPerOp/rs.NsPerOp, 0.8)
	}
	contention := func(label, oursName, rsName string, minTput float64) {
		ours, rs := byName(r.Contention, oursName), byName(r.Contention, rsName)
		if ours == nil || rs == nil {
			return
		}
		le(label+": wait p99, ×redsync", f("%.1f ms", ours.WaitP99Ms), f("%.1f ms", rs.WaitP99Ms), ours.WaitP99Ms/rs.WaitP99Ms, 0.1)
		le(label+": wait max, ×redsync", f("%.1f ms", ours.WaitMaxMs), f("%.1f ms", rs.WaitMaxMs), ours.WaitMaxMs/rs.WaitMaxMs, 0.1)
		le(label+": fairness (max/min acquisitions per worker)", f("%.2f", ours.Fairness), f("%.2f", rs.Fairness), ours.Fairness, 1.5)
		ge(label+": throughput, ×redsync", f("%.0f/s", ours.PerSecond), f("%.0f/s", rs.PerSecond), ours.PerSecond/rs.PerSecond, minTput)
	}
	if c := byName(r.Contention, NameOursPerWorker); c != nil {
		label := fmt.Sprintf("%d processes, one key, %s critical section", c.Workers, r.criticalLabel())
		contention(label, NameOursPerWorker, NameRedsyncPerWorker, 1.0)
	}
	if c := byName(r.Contention, NameOurs); c != nil {
		contention(fmt.Sprintf("%d goroutines on one Client", c.Workers), NameOurs, NameRedsync, 1.5)
	}
	if ours, rs := byName(r.Contention, NameOursPerWorker), byName(r.Contention, NameRedsyncPerWorker); ours != nil && rs != nil && r.RTT != nil && r.RTT.RoundP50Ms > 0 {
		rtt := r.RTT.RoundP50Ms
		handoff := func(q float64, c *ContentionResult) string {
			if c.Handoffs == 0 {
				return "none"
			}
			return f("%.2f ms", q)
		}
		if ours.Handoffs > 0 {
			le("Hand-off between processes: p50 in round trips", handoff(ours.HandoffP50Ms, ours), "redsync "+handoff(rs.HandoffP50Ms, rs)+"; RTT "+f("%.3f ms", rtt),
				ours.HandoffP50Ms/rtt, 2)
			info("Hand-off between processes: p99 in round trips", handoff(ours.HandoffP99Ms, ours), "redsync "+handoff(rs.HandoffP99Ms, rs), ours.HandoffP99Ms/rtt)
		}
	}
	if fast, slow := byName(r.SlowNode, NameOursAllFastIdle), byName(r.SlowNode, NameOurs); fast != nil && slow != nil {
		le("One slow node: Acquire p50, ×all-fast p50 (same idle gaps)", f("%.2f ms", slow.P50Ms), "all fast "+f("%.2f ms", fast.P50Ms), slow.P50Ms/fast.P50Ms, 1.2)
	}
	if ours, rs := byName(r.Throughput, NameOurs), byName(r.Throughput, NameRedsync); ours != nil && rs != nil && rs.PerSecond > 0 {
		ge(fmt.Sprintf("Throughput, %d goroutines on distinct keys, ×redsync", ours.Goroutines), f("%.0f/s", ours.PerSecond), f("%.0f/s", rs.PerSecond), ours.PerSecond/rs.PerSecond, 1.0)
	}
	var lo, hi *HeldResult
	var rsHi *HeldResult
	for i := range r.Held {
		h := &r.Held[i]
		switch {
		case h.Name == NameRedsync && (rsHi == nil || h.Locks > rsHi.Locks):
			rsHi = h
		case h.Name == NameOurs && (lo == nil || h.Locks < lo.Locks):
			lo = h
		}
		if h.Name == NameOurs && (hi == nil || h.Locks > hi.Locks) {
			hi = h
		}
	}
	if hi != nil {
		ref := "-"
		if rsHi != nil {
			ref = fmt.Sprintf("redsync %.0f B/lock", rsHi.HeapBytesPerLock)
		}
		// A negative cost means the process shed more goroutines or heap
		// of earlier work than the locks added: the baseline moved, and
		// the figure says nothing (embedded nodes, whose per-connection
		// goroutines and buffers are the process's own, do that).
		moved := func(fig, ours string) {
			ts = append(ts, Target{Figure: fig, Ours: ours, Ref: "-", Goal: "baseline moved: not measured", Info: true})
		}
		fig := fmt.Sprintf("%d locks held, auto-extended: goroutines per lock", hi.Locks)
		if hi.GoroutinesPerLock < 0 {
			moved(fig, f("%.4f", hi.GoroutinesPerLock))
		} else {
			le(fig, f("%.4f", hi.GoroutinesPerLock), "redsync 0 (no extension)", hi.GoroutinesPerLock, 0.01)
		}
		if hi.GoroutinesPerLockExtending >= 0 {
			info(fmt.Sprintf("%d locks held, once each was extended: goroutines per lock (extensions in flight)", hi.Locks), f("%.4f", hi.GoroutinesPerLockExtending), "-", hi.GoroutinesPerLockExtending)
		}
		switch fig := fmt.Sprintf("Heap per held lock, %d ÷ %d locks (flat)", hi.Locks, lo.Locks); {
		case lo == hi:
			info(fmt.Sprintf("Heap per held lock, %d locks", hi.Locks), f("%.0f B", hi.HeapBytesPerLock), ref, hi.HeapBytesPerLock)
		case lo.HeapBytesPerLock <= 0 || hi.HeapBytesPerLock <= 0:
			moved(fig, f("%.0f B", hi.HeapBytesPerLock)+" / "+f("%.0f B", lo.HeapBytesPerLock))
		default:
			le(fig, f("%.0f B", hi.HeapBytesPerLock)+" / "+f("%.0f B", lo.HeapBytesPerLock), ref, hi.HeapBytesPerLock/lo.HeapBytesPerLock, 1.25)
		}
	}
	for _, w := range r.Waiters {
		server := "-"
		if w.ServerPubSub >= 0 {
			server = fmt.Sprintf("node count %d", w.ServerPubSub)
		}
		le(fmt.Sprintf("%d waiters on %d keys: pub/sub connections per node", w.Waiters, w.Waiters), fmt.Sprintf("%d", w.SubscriptionsPerNode), "redsync 0 (polls); "+server,
			float64(w.SubscriptionsPerNode), 1)
	}
	if ours, rs := byName(r.ReleaseStorm, NameOurs), byName(r.ReleaseStorm, NameRedsync); ours != nil {
		ref := "-"
		if rs != nil {
			ref = fmt.Sprintf("redsync %d of %d", rs.ReleaseErrors, rs.Held)
		}
		le(fmt.Sprintf("%d Do locks released at once: share of releases with an error", ours.Locks), fmt.Sprintf("%d of %d", ours.ReleaseErrors, ours.Held), ref, ours.ErrorShare, 0)
	}
	if ours, rs := byName(r.Storm, NameOurs), byName(r.Storm, NameRedsync); ours != nil && rs != nil && rs.Availability > 0 {
		ge("contention-storm availability, ×redsync", fmt.Sprintf("%d of %d", ours.Served, ours.Attempts), fmt.Sprintf("%d of %d", rs.Served, rs.Attempts),
			ours.Availability/rs.Availability, 1)
	}
	return ts
}

// criticalLabel is the contention critical section for a target's name.
func (r *Report) criticalLabel() string {
	if r.Critical > 0 {
		return r.Critical.String()
	}
	return "2ms"
}

// row is a pointer to a result row of one contender.
type row[T any] interface {
	*T
	contender() string
}

func (r *OpResult) contender() string           { return r.Name }
func (r *ContentionResult) contender() string   { return r.Name }
func (r *LatencyResult) contender() string      { return r.Name }
func (r *ThroughputResult) contender() string   { return r.Name }
func (r *ReleaseStormResult) contender() string { return r.Name }
func (r *StormResult) contender() string        { return r.Name }

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
		c0 := r.Contention[0]
		p("\n2. Contention: %d workers, one key, %v critical section\t\n", c0.Workers, r.Critical)
		if r.RTT != nil {
			p("round trip: PING p50 %.3f ms; PING to every node at once, p50 %.3f ms, p99 %.3f ms\t\n", r.RTT.PingP50Ms, r.RTT.RoundP50Ms, r.RTT.RoundP99Ms)
		}
		p("\ts\tacq/s\twait p50 ms\twait p99 ms\twait max ms\tp99 ×redsync\tmax ×redsync\tmin..max/worker\tfairness\thand-offs\thand-off p50 ms\thand-off p99 ms\tfailures\toverlaps\t\n")
		for _, c := range r.Contention {
			ref := NameRedsync
			if c.Name == NameOursPerWorker || c.Name == NameRedsyncPerWorker {
				ref = NameRedsyncPerWorker
			}
			rs := byName(r.Contention, ref)
			p99, mx := "-", "-"
			if rs != nil && rs.WaitP99Ms > 0 {
				p99 = fmt.Sprintf("%.3f", c.WaitP99Ms/rs.WaitP99Ms)
				mx = fmt.Sprintf("%.3f", c.WaitMaxMs/rs.WaitMaxMs)
			}
			p("%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%s\t%s\t%d..%d\t%.2f\t%d\t%.2f\t%.2f\t%d\t%d\t\n", c.Name, c.Seconds, c.PerSecond, c.WaitP50Ms, c.WaitP99Ms, c.WaitMaxMs,
				p99, mx, c.MinPerWkr, c.MaxPerWkr, c.Fairness, c.Handoffs, c.HandoffP50Ms, c.HandoffP99Ms, c.Failures, c.Overlaps)
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
	if len(r.Held) > 0 {
		p("\n6. Locks held at once (quorumlock with auto-extension)\t\n")
		p("\tlocks\theld\tacquire s\tgoroutines/lock\theap B/lock\tonce extended: goroutines/lock\theap B/lock\textended\tlost\terrors\t\n")
		for _, h := range r.Held {
			p("%s\t%d\t%d\t%.1f\t%.4f\t%.0f\t%.4f\t%.0f\t%d\t%d\t%d\t\n", h.Name, h.Locks, h.Held, h.AcquireSeconds, h.GoroutinesPerLock, h.HeapBytesPerLock,
				h.GoroutinesPerLockExtending, h.HeapBytesPerLockExtending, h.Extended, h.Lost, h.Errors)
		}
	}
	if len(r.Waiters) > 0 {
		p("\n7. Waiters on distinct keys, one Client\t\n")
		p("\twaiters\tqueued in s\tpub/sub conns per node\tnode pub/sub count\tgoroutines/waiter\theap B/waiter\tserved in s\terrors\tfirst error\t\n")
		for _, w := range r.Waiters {
			p("%s\t%d\t%.2f\t%d\t%d\t%.3f\t%.0f\t%.2f\t%d\t%s\t\n", w.Name, w.Waiters, w.ReadySeconds, w.SubscriptionsPerNode, w.ServerPubSub, w.GoroutinesPerWaiter,
				w.HeapBytesPerWaiter, w.ServedSeconds, w.Errors, clip(w.FirstError, 60))
		}
	}
	if len(r.ReleaseStorm) > 0 {
		p("\n8. Locks released at the same instant (quorumlock: Client.Do)\t\n")
		p("\tlocks\theld\trelease errors\tshare\trelease s\tfirst error\t\n")
		for _, s := range r.ReleaseStorm {
			p("%s\t%d\t%d\t%d\t%.3f\t%.2f\t%s\t\n", s.Name, s.Locks, s.Held, s.ReleaseErrors, s.ErrorShare, s.ReleaseSeconds, clip(s.FirstError, 60))
		}
	}
	if len(r.Storm) > 0 {
		p("\n9. Lab contention-storm on these nodes (16 clients, one attempt per round of %v)\t\n", r.StormTTL)
		p("\tattempts\tserved\tavailability\tviolations\tverdict\t\n")
		for _, s := range r.Storm {
			v := s.Verdict
			if s.Error != "" {
				v = "error: " + s.Error
			}
			p("%s\t%d\t%d\t%.0f%%\t%d\t%s\t\n", s.Name, s.Attempts, s.Served, 100*s.Availability, s.Violations, clip(v, 60))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "\n")
		return r.WriteMarkdown(w)
	}
	return nil
}

// WriteMarkdown writes the targets as a Markdown table: every figure with
// quorumlock's value, redsync's (or the reference's) from the same run, the
// compared value and the goal.
func (r *Report) WriteMarkdown(w io.Writer) error {
	mode := "full"
	if r.Quick {
		mode = "quick"
	}
	fmt.Fprintf(w, "Targets: %d %s nodes, %s, GOMAXPROCS=%d, %s run\n\n", r.Nodes, r.Label, r.GoVersion, r.GOMAXPROCS, mode)
	fmt.Fprintf(w, "| Figure | quorumlock | redsync / reference | value | target | |\n")
	fmt.Fprintf(w, "|---|---:|---:|---:|---|---|\n")
	for _, t := range r.Targets {
		met := "met"
		switch {
		case t.Info:
			met = ""
		case !t.Met:
			met = "**MISSED**"
		}
		value := fmtValue(t.Value)
		if t.Info && t.Value == 0 && t.Ref == "-" {
			value = "-"
		}
		_, err := fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", t.Figure, t.Ours, t.Ref, value, t.Goal, met)
		if err != nil {
			return err
		}
	}
	return nil
}

func fmtValue(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) < 0.01:
		return fmt.Sprintf("%.4f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
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
