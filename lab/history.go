package lab

import (
	"slices"
	"sync"
	"time"
)

// A Hold is one successful acquisition by one client. All times are offsets
// from the start of the run on the process's monotonic clock.
type Hold struct {
	Client   int
	Key      int           // which key (explorer; 0 elsewhere)
	Start    time.Duration // when the call to Acquire began
	Acquired time.Duration // when Acquire returned the lock
	Until    time.Duration // the lock's local validity deadline
	Released time.Duration // when the client called Release; 0 if it never did
	Fence    uint64
	HasFence bool
}

// End is the end of the holding interval: the client may act as the holder
// until it releases or until the validity deadline, whichever is first.
func (h Hold) End() time.Duration {
	if h.Released > 0 && h.Released < h.Until {
		return h.Released
	}
	return h.Until
}

// An Attempt is one call to Acquire.
type Attempt struct {
	Client     int
	Key        int
	Start      time.Duration
	Latency    time.Duration
	OK         bool
	MajorityUp bool // a majority of the nodes was up (not killed, paused or cut off) when it started
}

// A Write is one write to the shared storage, in the order the storage applied
// it. Kind tells the counter's increments from the auction's bids.
type Write struct {
	Client int
	Key    int           // which key's lock the writer held (explorer)
	Hold   int           // index in History.Holds of the writer's hold; -1 for none
	Start  time.Duration // when the read-modify-write began (explorer's counter)
	At     time.Duration
	// Until is the writer's validity deadline (0 without a lock); Late is
	// true when the storage acknowledged the write at or after it.
	Until    time.Duration
	Late     bool
	Kind     WriteKind
	Value    int64
	Fence    uint64
	HasFence bool
	Accepted bool // the storage acknowledged the write
	Rejected bool // the storage refused it: a stale fencing token
	Aborted  bool // an optimistic transaction that EXEC refused
}

// StoreResult is what the storage did with one write.
type StoreResult int

const (
	// StoreUnknown: the write failed and may or may not have landed.
	StoreUnknown StoreResult = iota
	// StoreAccepted: the storage acknowledged the write.
	StoreAccepted
	// StoreRefused: the fencing check refused a stale token.
	StoreRefused
	// StoreAborted: EXEC refused an optimistic transaction.
	StoreAborted
)

// WriteKind tells what a Write was for.
type WriteKind int

const (
	// Increment is a counter write of the value read plus one.
	Increment WriteKind = iota
	// Bid is an auction bid, meant to be higher than the current price.
	Bid
)

// A FaultSpan is a fault that was in force during [Start, End).
type FaultSpan struct {
	Name  string
	Nodes []int
	Start time.Duration
	End   time.Duration
}

// History is what a run recorded.
type History struct {
	Clients  int
	Duration time.Duration
	Holds    []Hold
	Attempts []Attempt
	Writes   []Write
	Faults   []FaultSpan
	// Stalls are spans in which the process did not run at all (the host
	// was busy elsewhere), as the explorer's watcher saw them.
	Stalls []FaultSpan `json:"-"`
	// RowNames, when set, name the client rows of the timeline.
	RowNames []string `json:"-"`

	// Final values read from the storage after the run; Has* is false when
	// the workload did not use them.
	FinalCounter    int64
	HasCounter      bool
	FinalPrice      int64
	HasPrice        bool
	AbortedTxns     int // optimistic transactions that EXEC refused
	Rounds          int // acquisition rounds the implementation ran; 0 when it does not say
	ImplementsFence bool
}

// Recorder collects events from every client of one run on one monotonic
// clock: every time is time.Since of one start instant. It is safe for
// concurrent use.
type Recorder struct {
	start   time.Time
	mu      sync.Mutex
	h       History
	storeMu sync.Mutex // orders storage writes: see Store
}

// NewRecorder starts the run's clock.
func NewRecorder(clients int) *Recorder {
	return &Recorder{start: time.Now(), h: History{Clients: clients}}
}

// Now is the offset of this instant from the start of the run.
func (r *Recorder) Now() time.Duration { return time.Since(r.start) }

// Offset converts an absolute time carrying a monotonic reading (such as a
// lock's Until) to an offset from the start of the run.
func (r *Recorder) Offset(t time.Time) time.Duration { return t.Sub(r.start) }

// Attempt records one acquisition attempt.
func (r *Recorder) Attempt(a Attempt) {
	r.mu.Lock()
	r.h.Attempts = append(r.h.Attempts, a)
	r.mu.Unlock()
}

// Acquired records a new hold and returns its index for Released.
func (r *Recorder) Acquired(h Hold) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Holds = append(r.h.Holds, h)
	return len(r.h.Holds) - 1
}

// Released records that the client of hold i stopped acting as the holder.
func (r *Recorder) Released(i int, at time.Duration) {
	r.mu.Lock()
	r.h.Holds[i].Released = at
	r.mu.Unlock()
}

// Extended records that hold i's validity now ends at until.
func (r *Recorder) Extended(i int, until time.Duration) {
	r.mu.Lock()
	r.h.Holds[i].Until = until
	r.mu.Unlock()
}

// Store runs one write against the shared storage and records it. Writes are
// serialised here so that the recorded order is the order the single storage
// node applied them; the storage serialises them anyway, so this changes no
// outcome. do reports what the storage did with the write.
func (r *Recorder) Store(w Write, do func() StoreResult) (accepted bool) {
	r.storeMu.Lock()
	defer r.storeMu.Unlock()
	res := do()
	w.Accepted, w.Rejected, w.Aborted = res == StoreAccepted, res == StoreRefused, res == StoreAborted
	w.At = r.Now()
	w.Late = w.Until > 0 && w.At >= w.Until
	r.mu.Lock()
	r.h.Writes = append(r.h.Writes, w)
	if w.Aborted {
		r.h.AbortedTxns++
	}
	r.mu.Unlock()
	return w.Accepted
}

// Stall records a span in which the process did not run.
func (r *Recorder) Stall(f FaultSpan) {
	r.mu.Lock()
	r.h.Stalls = append(r.h.Stalls, f)
	r.mu.Unlock()
}

// Fault records a fault span.
func (r *Recorder) Fault(f FaultSpan) {
	r.mu.Lock()
	r.h.Faults = append(r.h.Faults, f)
	r.mu.Unlock()
}

// Finish stamps the run's duration and returns a copy of the history.
func (r *Recorder) Finish(update func(h *History)) History {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.h.Duration = r.Now()
	if update != nil {
		update(&r.h)
	}
	h := r.h
	h.Holds = slices.Clone(h.Holds)
	h.Attempts = slices.Clone(h.Attempts)
	h.Writes = slices.Clone(h.Writes)
	h.Faults = slices.Clone(h.Faults)
	h.Stalls = slices.Clone(h.Stalls)
	return h
}
