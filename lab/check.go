package lab

import (
	"cmp"
	"slices"
	"sort"
	"time"

	"github.com/quorumlock/quorumlock/internal/stats"
)

// An Overlap is a span during which two different clients both held the lock.
type Overlap struct {
	A     int           `json:"a"` // hold indexes in History.Holds
	B     int           `json:"b"`
	Start time.Duration `json:"start_ns"`
	End   time.Duration `json:"end_ns"`
}

// Check is what the checker found in one history.
type Check struct {
	Acquisitions int `json:"acquisitions"`
	// Violations is the number of pairs of holds by different clients whose
	// holding intervals intersect.
	Violations int       `json:"violations"`
	Overlaps   []Overlap `json:"overlaps"`
	// OverlapTime is how long at least two clients held at once (the measure
	// of the union of the overlaps, so three-way overlaps are not counted twice).
	OverlapTime time.Duration `json:"overlap_ns"`

	Increments  int  `json:"increments"`   // acknowledged counter increments
	LostUpdates int  `json:"lost_updates"` // acknowledged increments that are not in the final value
	HasCounter  bool `json:"has_counter"`

	// StaleWrites counts accepted writes whose fencing token is lower than
	// one the storage had already accepted; HasFence is false when the
	// implementation hands out no tokens.
	StaleWrites    int  `json:"stale_writes"`
	RejectedWrites int  `json:"rejected_writes"` // writes the storage refused (stale token)
	HasFence       bool `json:"has_fence"`

	// AuctionViolations counts accepted bids that were not higher than every
	// earlier accepted bid, plus one when the final price is not the highest
	// accepted bid.
	AuctionViolations int  `json:"auction_violations"`
	Bids              int  `json:"bids"`
	HasAuction        bool `json:"has_auction"`
	AbortedTxns       int  `json:"aborted_txns"`

	// How the lock moved between clients, in the order of acquisition: a
	// hand-off goes to another client than the previous holder, a regain to
	// the same one. The gaps are medians from the previous hold's end to the
	// next acquisition. A lock that lets the releasing client win again
	// shows many regains with short gaps; a fair one shows hand-offs, each
	// of which costs a wake-up and a round on the nodes.
	Handoffs   int           `json:"handoffs"`
	Regains    int           `json:"regains"`
	HandoffGap time.Duration `json:"handoff_gap_ns"`
	RegainGap  time.Duration `json:"regain_gap_ns"`
	// Fewest and most acquisitions by one client (over clients that ran).
	PerClientMin int `json:"per_client_min"`
	PerClientMax int `json:"per_client_max"`
	// Rounds is the number of acquisition rounds the implementation ran
	// (0 when it does not say); Rounds/Acquisitions is the cost of one.
	Rounds int `json:"rounds,omitempty"`
	// BadBids are the indexes in History.Writes of the accepted bids that
	// broke the auction invariant.
	BadBids []int `json:"-"`
	// StaleAccepted are the indexes in History.Writes of accepted writes
	// from a holder older than one the storage had already written for.
	StaleAccepted []int `json:"-"`
	// ExpiredAtReturn are the indexes in History.Holds of locks returned
	// with their validity already over.
	ExpiredAtReturn []int `json:"-"`

	Attempts     int           `json:"attempts"`
	MajorityUp   int           `json:"majority_up"` // attempts that started while a majority was up
	Availability float64       `json:"availability"`
	P50          time.Duration `json:"p50_ns"` // latency of successful acquisitions
	P99          time.Duration `json:"p99_ns"` // latency of successful acquisitions
}

// CheckHistory checks h. It is pure: it reads only h.
func CheckHistory(h History) Check {
	c := Check{Acquisitions: len(h.Holds), AbortedTxns: h.AbortedTxns, Rounds: h.Rounds}
	handoffs(&c, h)
	c.Overlaps, c.OverlapTime = overlaps(h.Holds)
	c.Violations = len(c.Overlaps)

	if h.HasCounter {
		c.HasCounter = true
		for _, w := range h.Writes {
			if w.Kind == Increment && w.Accepted {
				c.Increments++
			}
		}
		c.LostUpdates = max(0, c.Increments-int(h.FinalCounter))
	}

	c.HasFence = h.ImplementsFence
	var highest uint64
	var seen bool
	for _, w := range h.Writes {
		if w.Rejected {
			c.RejectedWrites++
		}
		if !w.Accepted || !w.HasFence {
			continue
		}
		if seen && w.Fence < highest {
			c.StaleWrites++
		}
		if !seen || w.Fence > highest {
			highest, seen = w.Fence, true
		}
	}

	if h.HasPrice {
		c.HasAuction = true
		var top int64
		var any bool
		for i, w := range h.Writes {
			if w.Kind != Bid || !w.Accepted {
				continue
			}
			c.Bids++
			if any && w.Value <= top {
				c.AuctionViolations++
				c.BadBids = append(c.BadBids, i)
			}
			if !any || w.Value > top {
				top, any = w.Value, true
			}
		}
		if any && h.FinalPrice != top {
			c.AuctionViolations++
		}
	}

	var lat []time.Duration
	for _, a := range h.Attempts {
		if !a.MajorityUp {
			continue
		}
		c.MajorityUp++
		if a.OK {
			lat = append(lat, a.Latency)
		}
	}
	c.Attempts = len(h.Attempts)
	if c.MajorityUp > 0 {
		c.Availability = float64(len(lat)) / float64(c.MajorityUp)
	}
	c.P50, c.P99 = stats.Quantile(lat, 0.50), stats.Quantile(lat, 0.99)
	return c
}

// overlaps returns every pair of holds by different clients whose intervals
// [Acquired, End) intersect, and the measure of the time covered by two or
// more holders. Empty intervals (a lock returned after its validity ended)
// hold nothing.
func overlaps(holds []Hold) ([]Overlap, time.Duration) {
	idx := make([]int, 0, len(holds))
	for i, h := range holds {
		if h.End() > h.Acquired {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return holds[idx[a]].Acquired < holds[idx[b]].Acquired })

	var out []Overlap
	for x, i := range idx {
		hi := holds[i]
		for _, j := range idx[x+1:] {
			hj := holds[j]
			if hj.Acquired >= hi.End() {
				break // sorted by start: no later hold can intersect hi
			}
			if hi.Client == hj.Client {
				continue
			}
			out = append(out, Overlap{A: i, B: j, Start: hj.Acquired, End: min(hi.End(), hj.End())})
		}
	}

	// The union of the pairwise overlaps, so that time covered by three
	// holders is counted once.
	spans := slices.Clone(out)
	slices.SortFunc(spans, func(a, b Overlap) int { return cmp.Compare(a.Start, b.Start) })
	var total, upTo time.Duration
	for _, o := range spans {
		start := max(o.Start, upTo)
		if o.End > start {
			total += o.End - start
		}
		upTo = max(upTo, o.End)
	}
	return out, total
}

// handoffs fills the hand-off measures of c from h's holds.
func handoffs(c *Check, h History) {
	holds := slices.Clone(h.Holds)
	slices.SortStableFunc(holds, func(a, b Hold) int { return cmp.Compare(a.Acquired, b.Acquired) })
	var handoff, regain []time.Duration
	per := make([]int, h.Clients)
	for i, hd := range holds {
		if hd.Client >= 0 && hd.Client < len(per) {
			per[hd.Client]++
		}
		if i == 0 {
			continue
		}
		gap := max(0, hd.Acquired-holds[i-1].End())
		if hd.Client == holds[i-1].Client {
			regain = append(regain, gap)
		} else {
			handoff = append(handoff, gap)
		}
	}
	c.Handoffs, c.Regains = len(handoff), len(regain)
	c.HandoffGap, c.RegainGap = stats.Quantile(handoff, 0.5), stats.Quantile(regain, 0.5)
	if len(holds) > 0 && len(per) > 0 {
		c.PerClientMin, c.PerClientMax = slices.Min(per), slices.Max(per)
	}
}
