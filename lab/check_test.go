package lab

import (
	"testing"
	"time"
)

const ms = time.Millisecond

func hold(client int, acquired, until, released time.Duration) Hold {
	return Hold{Client: client, Acquired: acquired, Until: until, Released: released}
}

func inc(client int, value int64, accepted bool) Write {
	return Write{Client: client, Kind: Increment, Value: value, Accepted: accepted}
}

func fenced(client int, value int64, fence uint64, accepted bool) Write {
	return Write{Client: client, Kind: Increment, Value: value, Fence: fence, HasFence: true, Accepted: accepted, Rejected: !accepted}
}

func bid(client int, value int64) Write {
	return Write{Client: client, Kind: Bid, Value: value, Accepted: true}
}

func TestCheckOverlaps(t *testing.T) {
	tests := []struct {
		name       string
		holds      []Hold
		violations int
		overlap    time.Duration
	}{
		{name: "empty"},
		{
			name:  "sequential holders",
			holds: []Hold{hold(0, 0, 100*ms, 50*ms), hold(1, 50*ms, 150*ms, 90*ms), hold(2, 90*ms, 200*ms, 0)},
		},
		{
			name:  "release cuts the interval before validity ends",
			holds: []Hold{hold(0, 0, 500*ms, 10*ms), hold(1, 20*ms, 300*ms, 30*ms)},
		},
		{
			name:  "validity cuts a paused holder",
			holds: []Hold{hold(0, 0, 100*ms, 900*ms), hold(1, 100*ms, 300*ms, 200*ms)},
		},
		{
			name:       "one overlap",
			holds:      []Hold{hold(0, 0, 100*ms, 0), hold(1, 60*ms, 300*ms, 200*ms)},
			violations: 1, overlap: 40 * ms,
		},
		{
			name:  "the same client twice is not a violation",
			holds: []Hold{hold(0, 0, 100*ms, 0), hold(0, 60*ms, 300*ms, 200*ms)},
		},
		{
			name:       "three-way overlap counts pairs, time once",
			holds:      []Hold{hold(0, 0, 100*ms, 0), hold(1, 10*ms, 100*ms, 0), hold(2, 20*ms, 50*ms, 0)},
			violations: 3, overlap: 90 * ms,
		},
		{
			name:       "two separate overlaps",
			holds:      []Hold{hold(0, 0, 100*ms, 0), hold(1, 90*ms, 200*ms, 150*ms), hold(2, 140*ms, 300*ms, 0)},
			violations: 2, overlap: 20 * ms,
		},
		{
			name:  "a lock returned after its validity ended holds nothing",
			holds: []Hold{hold(0, 0, 100*ms, 0), hold(1, 50*ms, 40*ms, 0)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := CheckHistory(History{Holds: tt.holds})
			if c.Violations != tt.violations || c.OverlapTime != tt.overlap {
				t.Errorf("violations, overlap = %d, %v; want %d, %v (%+v)", c.Violations, c.OverlapTime, tt.violations, tt.overlap, c.Overlaps)
			}
			if c.Acquisitions != len(tt.holds) {
				t.Errorf("acquisitions = %d; want %d", c.Acquisitions, len(tt.holds))
			}
		})
	}
}

func TestCheckCounter(t *testing.T) {
	tests := []struct {
		name             string
		writes           []Write
		final            int64
		fence            bool
		lost, stale, rej int
	}{
		{name: "clean", writes: []Write{inc(0, 1, true), inc(1, 2, true), inc(0, 3, true)}, final: 3},
		{name: "two clients read the same value", writes: []Write{inc(0, 1, true), inc(1, 1, true), inc(0, 2, true)}, final: 2, lost: 1},
		{name: "failed writes are not acknowledged", writes: []Write{inc(0, 1, true), inc(1, 2, false)}, final: 1},
		{
			name:   "fenced clean",
			writes: []Write{fenced(0, 1, 1, true), fenced(1, 2, 2, true), fenced(0, 3, 5, true)},
			final:  3, fence: true,
		},
		{
			name:   "stale token accepted",
			writes: []Write{fenced(0, 1, 1, true), fenced(1, 2, 3, true), fenced(0, 2, 2, true)},
			final:  2, fence: true, lost: 1, stale: 1,
		},
		{
			name:   "stale token rejected",
			writes: []Write{fenced(0, 1, 1, true), fenced(1, 2, 3, true), fenced(0, 2, 2, false)},
			final:  2, fence: true, rej: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := CheckHistory(History{Writes: tt.writes, FinalCounter: tt.final, HasCounter: true, ImplementsFence: tt.fence})
			if c.LostUpdates != tt.lost || c.StaleWrites != tt.stale || c.RejectedWrites != tt.rej {
				t.Errorf("lost, stale, rejected = %d, %d, %d; want %d, %d, %d", c.LostUpdates, c.StaleWrites, c.RejectedWrites, tt.lost, tt.stale, tt.rej)
			}
			if c.HasFence != tt.fence || !c.HasCounter {
				t.Errorf("HasFence, HasCounter = %v, %v", c.HasFence, c.HasCounter)
			}
		})
	}
}

func TestCheckAuction(t *testing.T) {
	tests := []struct {
		name       string
		bids       []Write
		final      int64
		violations int
	}{
		{name: "no bids"},
		{name: "strictly increasing", bids: []Write{bid(0, 5), bid(1, 7), bid(0, 20)}, final: 20},
		{name: "a lower bid accepted after a higher one", bids: []Write{bid(0, 5), bid(1, 9), bid(0, 7)}, final: 7, violations: 2},
		{name: "an equal bid accepted", bids: []Write{bid(0, 5), bid(1, 5)}, final: 5, violations: 1},
		{name: "final price is not the highest bid", bids: []Write{bid(0, 5), bid(1, 9)}, final: 5, violations: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := CheckHistory(History{Writes: tt.bids, FinalPrice: tt.final, HasPrice: true})
			if c.AuctionViolations != tt.violations || c.Bids != len(tt.bids) {
				t.Errorf("violations, bids = %d, %d; want %d, %d", c.AuctionViolations, c.Bids, tt.violations, len(tt.bids))
			}
		})
	}
}

func TestCheckAvailabilityAndLatency(t *testing.T) {
	var attempts []Attempt
	for i := 1; i <= 100; i++ {
		attempts = append(attempts, Attempt{Latency: time.Duration(i) * ms, OK: true, MajorityUp: true})
	}
	attempts = append(attempts,
		Attempt{OK: false, MajorityUp: true},
		Attempt{OK: false, MajorityUp: false}, // majority down: not counted against availability
	)
	c := CheckHistory(History{Attempts: attempts})
	if c.Attempts != 102 || c.MajorityUp != 101 {
		t.Errorf("attempts, majority up = %d, %d; want 102, 101", c.Attempts, c.MajorityUp)
	}
	if want := 100.0 / 101.0; c.Availability != want {
		t.Errorf("availability = %v; want %v", c.Availability, want)
	}
	if c.P50 != 50*ms || c.P99 != 99*ms {
		t.Errorf("p50, p99 = %v, %v; want 50ms, 99ms", c.P50, c.P99)
	}
}

func TestRecorderOrdersStoreWrites(t *testing.T) {
	r := NewRecorder(2)
	idx := r.Acquired(Hold{Client: 0, Until: time.Hour})
	r.Released(idx, 5*ms)
	r.Store(Write{Client: 0, Value: 1}, func() StoreResult { return StoreAccepted })
	r.Store(Write{Client: 1, Value: 1}, func() StoreResult { return StoreRefused })
	r.Store(Write{Client: 1, Kind: Bid, Value: 2}, func() StoreResult { return StoreAborted })
	h := r.Finish(func(h *History) { h.FinalCounter, h.HasCounter = 1, true })
	if len(h.Writes) != 3 || !h.Writes[0].Accepted || !h.Writes[1].Rejected || !h.Writes[2].Aborted || h.Writes[0].At > h.Writes[1].At {
		t.Fatalf("writes = %+v", h.Writes)
	}
	if h.AbortedTxns != 1 {
		t.Errorf("aborted transactions = %d; want 1", h.AbortedTxns)
	}
	if h.Holds[0].Released != 5*ms || h.Holds[0].End() != 5*ms {
		t.Fatalf("hold = %+v", h.Holds[0])
	}
	if c := CheckHistory(h); c.Increments != 1 || c.LostUpdates != 0 || c.RejectedWrites != 1 {
		t.Fatalf("check = %+v", c)
	}
}

func TestCheckHandoffs(t *testing.T) {
	// Client 0 twice in a row (a regain after 10ms), then client 1 (a
	// hand-off after 30ms), then client 0 (a hand-off after 50ms).
	h := History{Clients: 3, Holds: []Hold{
		hold(0, 0, time.Hour, 10*ms),
		hold(0, 20*ms, time.Hour, 30*ms),
		hold(1, 60*ms, time.Hour, 70*ms),
		hold(0, 120*ms, time.Hour, 130*ms),
	}, Rounds: 9}
	c := CheckHistory(h)
	if c.Handoffs != 2 || c.Regains != 1 {
		t.Errorf("hand-offs, regains = %d, %d; want 2, 1", c.Handoffs, c.Regains)
	}
	if c.RegainGap != 10*ms || c.HandoffGap != 30*ms {
		t.Errorf("gaps: regain %v, hand-off %v; want 10ms and the lower median 30ms", c.RegainGap, c.HandoffGap)
	}
	if c.PerClientMin != 0 || c.PerClientMax != 3 || c.Rounds != 9 {
		t.Errorf("per client %d..%d, rounds %d; want 0..3 (client 2 never held), 9", c.PerClientMin, c.PerClientMax, c.Rounds)
	}
}
