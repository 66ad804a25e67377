package lab

import (
	"fmt"
	"strings"
	"time"
)

// Want is what a scenario expects of one measure for one implementation.
type Want int

const (
	// None: any occurrence is a failure of the implementation.
	None Want = iota
	// Maybe: the measure is reported but not judged.
	Maybe
	// Expected: the scenario is built to show it; a run that does not is
	// noted (the race did not happen this time) but is not a failure.
	Expected
)

func (w Want) String() string {
	switch w {
	case None:
		return "none"
	case Maybe:
		return "maybe"
	default:
		return "expected"
	}
}

// MarshalText writes the name, for the JSON report.
func (w Want) MarshalText() ([]byte, error) { return []byte(w.String()), nil }

// UnmarshalText reads the name back.
func (w *Want) UnmarshalText(b []byte) error {
	for _, v := range []Want{None, Maybe, Expected} {
		if v.String() == string(b) {
			*w = v
			return nil
		}
	}
	return fmt.Errorf("lab: unknown expectation %q", b)
}

// Expectation is a scenario's expected outcome for one implementation.
type Expectation struct {
	Violations  Want `json:"violations"` // overlapping holders
	LostUpdates Want `json:"lost_updates"`
	StaleWrites Want `json:"stale_writes"`
	Auction     Want `json:"auction"` // auction invariant violations
	// MinAvailability, when set, is the share of attempts (made while a
	// majority was up) below which the outcome is marked degraded. It is a
	// liveness remark, not a failure.
	MinAvailability float64 `json:"min_availability,omitempty"`
}

// Verdict compares what a run found with what was expected.
type Verdict struct {
	// Unexpected lists the measures that should have been zero and were not.
	Unexpected []string `json:"unexpected,omitempty"`
	// NotShown lists the measures the scenario expected to see and did not.
	NotShown []string `json:"not_shown,omitempty"`
	// Degraded says what fell short of the liveness expectation.
	Degraded []string `json:"degraded,omitempty"`
}

// OK is true when nothing unexpected happened.
func (v Verdict) OK() bool { return len(v.Unexpected) == 0 }

func (v Verdict) String() string {
	var s string
	switch {
	case !v.OK():
		s = "UNEXPECTED " + strings.Join(v.Unexpected, ", ")
	case len(v.NotShown) > 0:
		s = "ok (" + strings.Join(v.NotShown, ", ") + " not shown)"
	default:
		s = "as expected"
	}
	if len(v.Degraded) > 0 {
		s += "; degraded: " + strings.Join(v.Degraded, ", ")
	}
	return s
}

// Judge compares c with e.
func Judge(e Expectation, c Check) Verdict {
	var v Verdict
	judge := func(name string, want Want, got int, applies bool) {
		if !applies {
			return
		}
		switch {
		case want == None && got > 0:
			v.Unexpected = append(v.Unexpected, name)
		case want == Expected && got == 0:
			v.NotShown = append(v.NotShown, name)
		}
	}
	judge("violations", e.Violations, c.Violations, true)
	judge("lost updates", e.LostUpdates, c.LostUpdates, c.HasCounter)
	judge("stale writes", e.StaleWrites, c.StaleWrites, c.HasFence && c.HasCounter)
	judge("auction", e.Auction, c.AuctionViolations, c.HasAuction)
	if e.MinAvailability > 0 && c.MajorityUp > 0 && c.Availability < e.MinAvailability {
		v.Degraded = append(v.Degraded, fmt.Sprintf("availability %.0f%% < %.0f%%", 100*c.Availability, 100*e.MinAvailability))
	}
	return v
}

// Outcome is one scenario run with one implementation.
type Outcome struct {
	Scenario string        `json:"scenario"`
	Impl     string        `json:"impl"`
	Skipped  string        `json:"skipped,omitempty"` // why the run did not happen
	Err      string        `json:"error,omitempty"`   // why the run broke off
	Expected Expectation   `json:"expected"`
	Check    Check         `json:"check"`
	Verdict  Verdict       `json:"verdict"`
	Elapsed  time.Duration `json:"elapsed_ns"`
	History  History       `json:"-"`
	// Throughput is accepted storage writes per second.
	Throughput float64 `json:"throughput_per_s"`
	// Attack is what an attack scenario saw besides the holds.
	Attack *AttackRecord `json:"attack,omitempty"`
	// Roll is what rolling-restart saw besides the holds.
	Roll *RollRecord `json:"roll,omitempty"`
	// Retries are the setups that lost their shape and were run again.
	Retries []string `json:"retries,omitempty"`
}

// ScenarioResult is every implementation's outcome for one scenario.
type ScenarioResult struct {
	Name        string    `json:"name"`
	Title       string    `json:"title"`
	Description string    `json:"description"`
	Expect      string    `json:"expect"` // the expected outcome in words
	Outcomes    []Outcome `json:"outcomes"`
	Picture     string    `json:"picture,omitempty"` // file name of the timeline, relative to the report
}

// Results is a whole lab run.
type Results struct {
	Backend   string           `json:"backend"`
	Nodes     int              `json:"nodes"`
	Seed      uint64           `json:"seed"`
	Duration  time.Duration    `json:"duration_ns"` // per scenario and implementation
	TTL       time.Duration    `json:"ttl_ns"`
	Started   time.Time        `json:"started"`
	Elapsed   time.Duration    `json:"elapsed_ns"`
	Scenarios []ScenarioResult `json:"scenarios"`
}

// Failures lists the outcomes of impl that showed something its scenario
// says must not happen.
func (r *Results) Failures(impl string) []string {
	var out []string
	for _, s := range r.Scenarios {
		for _, o := range s.Outcomes {
			if o.Impl == impl && o.Skipped == "" && !o.Verdict.OK() {
				out = append(out, fmt.Sprintf("%s: %s", s.Name, o.Verdict))
			}
		}
	}
	return out
}

// DegradedBeside lists the scenarios in which impl's outcome was degraded
// (availability under the scenario's floor) while ref's, in the same run,
// was not. A scenario where ref did not run, was skipped or broke off is not
// listed: there is nothing to compare with.
func (r *Results) DegradedBeside(impl, ref string) []string {
	var out []string
	for _, s := range r.Scenarios {
		var mine, theirs *Outcome
		for i := range s.Outcomes {
			o := &s.Outcomes[i]
			if o.Skipped != "" || o.Err != "" {
				continue
			}
			switch o.Impl {
			case impl:
				mine = o
			case ref:
				theirs = o
			}
		}
		if mine == nil || theirs == nil || len(mine.Verdict.Degraded) == 0 || len(theirs.Verdict.Degraded) > 0 {
			continue
		}
		out = append(out, fmt.Sprintf("%s: %s (%s %.0f%%, %s %.0f%%)", s.Name, strings.Join(mine.Verdict.Degraded, ", "),
			impl, 100*mine.Check.Availability, ref, 100*theirs.Check.Availability))
	}
	return out
}
