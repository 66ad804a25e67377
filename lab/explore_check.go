package lab

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/anishathalye/porcupine"
)

// Exploration is what the explorer's checkers found in one history.
type Exploration struct {
	Acquisitions int `json:"acquisitions"`
	// Overlaps are pairs of holds of one key by different clients whose
	// holding intervals intersect (indexes in History.Holds).
	Overlaps []Overlap `json:"overlaps,omitempty"`
	// Expired are holds returned with their validity already over; the
	// ones whose lateness a host stall covers (the process did not run for
	// at least as long, between the deadline and the return) are in
	// ExpiredStalled instead: no library can return in time when its
	// process does not run.
	Expired        []int `json:"expired,omitempty"`
	ExpiredStalled []int `json:"expired_stalled,omitempty"`
	// FenceInversions are pairs (earlier, later) of holds of one key, the
	// earlier ended before the later was acquired, whose fence tokens do
	// not strictly increase.
	FenceInversions [][2]int `json:"fence_inversions,omitempty"`
	// StaleWrites are accepted fenced writes (indexes in History.Writes)
	// made under a hold that ended before the hold of a write the storage
	// had already accepted.
	StaleWrites []int `json:"stale_writes,omitempty"`
	// Counter: acknowledged increments, how many the final value lacks,
	// whether the history is linearizable as a counter (porcupine), and the
	// increments acknowledged past their lock's validity.
	Increments   int    `json:"increments"`
	LostUpdates  int    `json:"lost_updates"`
	Linearizable string `json:"linearizable"` // "ok", "illegal", "unknown" (checker timed out)
	LateCounter  int    `json:"late_counter_writes"`
	// Liveness: attempts started while a majority was reachable from the
	// client, and how many of those got the lock.
	Attempts     int     `json:"attempts"`
	Reachable    int     `json:"reachable"`
	Served       int     `json:"served"`
	Availability float64 `json:"availability"`

	counterInfo  porcupine.LinearizationInfo
	counterModel porcupine.Model
}

// Violations names the safety properties the history broke.
func (x Exploration) Violations() []string {
	var out []string
	add := func(n int, what string) {
		if n > 0 {
			out = append(out, fmt.Sprintf("%d %s", n, what))
		}
	}
	add(len(x.Overlaps), "overlapping holds")
	add(len(x.Expired), "locks returned already expired")
	add(len(x.FenceInversions), "fence tokens not increasing")
	add(len(x.StaleWrites), "stale writes accepted")
	if x.Linearizable == "illegal" && x.LateCounter == 0 {
		out = append(out, fmt.Sprintf("counter not linearizable (%d of %d increments lost)", x.LostUpdates, x.Increments))
	}
	return out
}

// checkExploration runs every checker on h.
func checkExploration(h History, s Schedule) Exploration {
	x := Exploration{Acquisitions: len(h.Holds)}
	for k := range exploreKeys {
		var idx []int
		for i, hd := range h.Holds {
			if hd.Key == k {
				idx = append(idx, i)
			}
		}
		sub := make([]Hold, len(idx))
		for j, i := range idx {
			sub[j] = h.Holds[i]
		}
		ovs, _ := overlaps(sub)
		for _, o := range ovs {
			o.A, o.B = idx[o.A], idx[o.B]
			x.Overlaps = append(x.Overlaps, o)
		}
		x.FenceInversions = append(x.FenceInversions, fenceInversions(h.Holds, idx)...)
	}
	for i, hd := range h.Holds {
		if hd.Until > hd.Acquired {
			continue
		}
		if stalledFor(h.Stalls, hd.Start, hd.Acquired) >= hd.Acquired-hd.Until {
			x.ExpiredStalled = append(x.ExpiredStalled, i)
		} else {
			x.Expired = append(x.Expired, i)
		}
	}
	x.StaleWrites = append(staleWrites(h, keyFenced), staleWrites(h, keyRare)...)
	checkCounter(&x, h)
	for _, a := range h.Attempts {
		x.Attempts++
		if a.MajorityUp {
			x.Reachable++
			if a.OK {
				x.Served++
			}
		}
	}
	if x.Reachable > 0 {
		x.Availability = float64(x.Served) / float64(x.Reachable)
	}
	return x
}

// fenceInversions checks that a hold acquired after another hold of the same
// key ended carries a larger fence token. idx are the key's holds.
func fenceInversions(holds []Hold, idx []int) [][2]int {
	var valid []int
	for _, i := range idx {
		if holds[i].HasFence && holds[i].Until > holds[i].Acquired {
			valid = append(valid, i)
		}
	}
	byEnd := slices.Clone(valid)
	slices.SortFunc(byEnd, func(a, b int) int { return cmp.Compare(holds[a].End(), holds[b].End()) })
	byAcq := slices.Clone(valid)
	slices.SortFunc(byAcq, func(a, b int) int { return cmp.Compare(holds[a].Acquired, holds[b].Acquired) })
	var out [][2]int
	top, j := -1, 0 // the highest-fenced hold among those ended so far
	for _, b := range byAcq {
		for ; j < len(byEnd) && holds[byEnd[j]].End() <= holds[b].Acquired; j++ {
			if top < 0 || holds[byEnd[j]].Fence > holds[top].Fence {
				top = byEnd[j]
			}
		}
		if top >= 0 && top != b && holds[top].Fence >= holds[b].Fence {
			out = append(out, [2]int{top, b})
		}
	}
	return out
}

// staleWrites finds accepted fenced writes whose hold ended before the hold
// of a write the storage accepted earlier began: the storage took a write
// from an older holder after a newer holder's write, which fencing exists to
// refuse.
func staleWrites(h History, key int) []int {
	type acc struct{ w, hold int }
	var ws []acc
	for i, w := range h.Writes {
		if w.Accepted && w.HasFence && w.Hold >= 0 && w.Hold < len(h.Holds) && w.Key == key {
			ws = append(ws, acc{i, w.Hold})
		}
	}
	slices.SortFunc(ws, func(a, b acc) int { return cmp.Compare(h.Writes[a.w].At, h.Writes[b.w].At) })
	var out []int
	var newest time.Duration = -1 // latest acquisition among the holds of the writes accepted so far
	for _, a := range ws {
		hd := h.Holds[a.hold]
		if newest >= 0 && hd.End() <= newest {
			out = append(out, a.w)
		}
		newest = max(newest, hd.Acquired)
	}
	return out
}

// counterOp is one read-modify-write of the counter: the value read, and
// what became of the write of that value plus one.
type counterOp struct {
	read     int64
	accepted bool
	unknown  bool
}

// counterModel is a counter whose increments read the value and write it
// plus one; an increment whose write had an unknown outcome may or may not
// have taken effect. The final read closes the history.
var counterModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{int64(0)} },
	Step: func(state, input, output any) []any {
		st := state.(int64)
		if input == "read" {
			if output.(int64) == st {
				return []any{st}
			}
			return nil
		}
		op := output.(counterOp)
		if op.read != st {
			if op.unknown {
				return []any{st} // a write that never landed reads nothing we know of
			}
			return nil
		}
		switch {
		case op.accepted:
			return []any{st + 1}
		case op.unknown:
			return []any{st, st + 1}
		}
		return []any{st}
	},
	Equal: func(a, b any) bool { return a.(int64) == b.(int64) },
	DescribeOperation: func(input, output any) string {
		if input == "read" {
			return fmt.Sprintf("final read → %d", output)
		}
		op := output.(counterOp)
		state := "acknowledged"
		if op.unknown {
			state = "unknown outcome"
		}
		return fmt.Sprintf("read %d, wrote %d (%s)", op.read, op.read+1, state)
	},
	DescribeState: func(state any) string { return fmt.Sprint(state) },
}

// checkCounter checks the counter's history for linearizability with
// porcupine.
func checkCounter(x *Exploration, h History) {
	var ops []porcupine.Operation
	for _, w := range h.Writes {
		if w.Key != keyCounter {
			continue
		}
		if w.Accepted {
			x.Increments++
			if w.Late {
				x.LateCounter++
			}
		}
		ops = append(ops, porcupine.Operation{ClientId: w.Client, Input: "inc", Call: int64(w.Start), Return: int64(w.At),
			Output: counterOp{read: w.Value - 1, accepted: w.Accepted, unknown: !w.Accepted}})
	}
	if !h.HasCounter {
		x.Linearizable = "unknown"
		return
	}
	x.LostUpdates = max(0, x.Increments-int(h.FinalCounter))
	end := int64(h.Duration) + int64(time.Second)
	ops = append(ops, porcupine.Operation{ClientId: 0, Input: "read", Call: end, Return: end + 1, Output: h.FinalCounter})
	model := counterModel.ToModel()
	res, info := porcupine.CheckOperationsVerbose(model, ops, 10*time.Second)
	x.counterInfo, x.counterModel = info, model
	switch res {
	case porcupine.Ok:
		x.Linearizable = "ok"
	case porcupine.Illegal:
		x.Linearizable = "illegal"
	default:
		x.Linearizable = "unknown"
	}
}

// stalledFor is the longest host stall that overlaps [from, to].
func stalledFor(stalls []FaultSpan, from, to time.Duration) time.Duration {
	var longest time.Duration
	for _, s := range stalls {
		if s.End >= from && s.Start <= to {
			longest = max(longest, s.End-s.Start)
		}
	}
	return longest
}
