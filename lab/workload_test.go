package lab

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// testNodes starts n miniredis nodes whose TTLs follow real time (miniredis
// only expires keys when told to) and returns clients for them.
func testNodes(t *testing.T, n int) []redis.UniversalClient {
	t.Helper()
	var clients []redis.UniversalClient
	for range n {
		s := miniredis.RunT(t)
		// TTLs run in real time, as on Redis. (Fast-forwarding from a ticker
		// ages a key set just before a tick by the whole tick: it expires
		// early, beyond the drift allowance, and the checker rightly counts
		// the overlap.)
		s.ClockTTL(true)
		c := redis.NewClient(&redis.Options{Addr: s.Addr(), ContextTimeoutEnabled: true})
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
	}
	return clients
}

func testStorage(t *testing.T) *redis.Client {
	t.Helper()
	s := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { c.Close() })
	return c
}

func testWorkers(t *testing.T, impl Impl, clients int, ttl time.Duration) *Workers {
	t.Helper()
	nodes := testNodes(t, 3)
	w := &Workers{Storage: Storage{Client: testStorage(t)}, Rec: NewRecorder(clients), Key: "lab-lock", Seed: 1}
	for range clients {
		l, err := impl.New(nodes, LockConfig{TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		w.Lockers = append(w.Lockers, l)
	}
	return w
}

func (w *Workers) finish(t *testing.T, counterKey, priceKey string) Check {
	t.Helper()
	h := w.Rec.Finish(nil)
	if counterKey != "" {
		v, err := w.readInt(counterKey)
		if err != nil {
			t.Fatal(err)
		}
		h.FinalCounter, h.HasCounter = v, true
	}
	if priceKey != "" {
		v, err := w.readInt(priceKey)
		if err != nil {
			t.Fatal(err)
		}
		h.FinalPrice, h.HasPrice = v, true
	}
	return CheckHistory(h)
}

func TestHoldersRedsyncClean(t *testing.T) {
	w := testWorkers(t, Redsync(), 3, time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 700*time.Millisecond)
	defer cancel()
	Holders{HoldMin: 2 * ms, HoldMax: 10 * ms, AttemptTimeout: time.Second, CounterKey: "counter"}.Run(ctx, w)
	c := w.finish(t, "counter", "")
	if c.Acquisitions == 0 || c.Violations != 0 || c.LostUpdates != 0 || c.Increments == 0 {
		t.Fatalf("check = %+v", c)
	}
}

func TestHoldersPausedClientLosesUpdates(t *testing.T) {
	w := testWorkers(t, Redsync(), 2, 150*ms)
	ctx, cancel := context.WithTimeout(t.Context(), 1200*time.Millisecond)
	defer cancel()
	Holders{HoldMin: 1 * ms, HoldMax: 3 * ms, PauseShare: 0.5, PausePast: 100 * ms, AttemptTimeout: time.Second, CounterKey: "counter"}.Run(ctx, w)
	c := w.finish(t, "counter", "")
	// The holding interval ends at the validity deadline, so pauses show as
	// lost updates, never as overlaps.
	if c.Violations != 0 || c.Increments == 0 {
		t.Fatalf("check = %+v", c)
	}
	t.Logf("increments %d lost %d", c.Increments, c.LostUpdates)
}

func TestStormRedsync(t *testing.T) {
	w := testWorkers(t, Redsync(), 6, time.Second)
	ctx, cancel := context.WithTimeout(t.Context(), 900*time.Millisecond)
	defer cancel()
	Storm{Round: 300 * ms, Hold: 2 * ms, CounterKey: "counter"}.Run(ctx, w)
	c := w.finish(t, "counter", "")
	if c.Acquisitions == 0 || c.Violations != 0 || c.LostUpdates != 0 || c.Attempts < 6 {
		t.Fatalf("check = %+v", c)
	}
}

func TestAuctionModes(t *testing.T) {
	tests := []struct {
		name       string
		mode       AuctionMode
		wantUnsafe bool
	}{
		{"lock", AuctionLock, false},
		{"no lock", AuctionNoLock, true},
		{"optimistic", AuctionOptimistic, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := testWorkers(t, Redsync(), 4, time.Second)
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			Auction{Mode: tt.mode, Think: 2 * ms, AttemptTimeout: time.Second, PriceKey: "price"}.Run(ctx, w, 4)
			c := w.finish(t, "", "price")
			if c.Bids == 0 || (c.AuctionViolations > 0) != tt.wantUnsafe {
				t.Fatalf("check = %+v", c)
			}
			if tt.mode == AuctionOptimistic && c.AbortedTxns == 0 {
				t.Errorf("no aborted transactions among 4 racing bidders: %+v", c)
			}
		})
	}
}

func TestHoldersQuorumlockFenced(t *testing.T) {
	nodes := testNodes(t, 3)
	impl := Quorumlock()
	cfg := LockConfig{TTL: 150 * ms, Fencing: true}
	if err := impl.Prepare(t.Context(), nodes, cfg); err != nil {
		t.Fatal(err)
	}
	storage := testStorage(t)
	w := &Workers{Rec: NewRecorder(3), Key: "lab-lock", Seed: 1, Storage: Storage{
		Client: storage,
		FencedSet: func(ctx context.Context, key string, v int64, f uint64) error {
			return FencedSet(ctx, storage, key, v, f)
		},
		IsStale: IsStaleFence,
	}}
	for range 3 {
		l, err := impl.New(nodes, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		w.Lockers = append(w.Lockers, l)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 1200*ms)
	defer cancel()
	Holders{HoldMin: 1 * ms, HoldMax: 3 * ms, PauseShare: 0.5, PausePast: 100 * ms, AttemptTimeout: time.Second, Fenced: true, CounterKey: "counter"}.Run(ctx, w)
	h := w.Rec.Finish(nil)
	h.ImplementsFence = true
	h.FinalCounter, h.HasCounter = mustRead(t, w, "counter"), true
	c := CheckHistory(h)
	if c.Violations != 0 || c.StaleWrites != 0 || c.Increments == 0 {
		t.Fatalf("check = %+v", c)
	}
	t.Logf("increments %d lost %d refused %d", c.Increments, c.LostUpdates, c.RejectedWrites)
}

func mustRead(t *testing.T, w *Workers, key string) int64 {
	t.Helper()
	v, err := w.readInt(key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
