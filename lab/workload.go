package lab

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// storageTimeout bounds every call to the shared storage, which faults never
// touch; it only keeps a broken storage from hanging a run.
const storageTimeout = 2 * time.Second

// Storage is the shared state the clients protect with the lock: a single
// Redis that the fault schedule never touches (Kleppmann's "storage
// service"). FencedSet, when set, is the storage-side fencing check on
// Client; IsStale tells its refusal from other errors.
type Storage struct {
	Client    *redis.Client
	FencedSet func(ctx context.Context, key string, value int64, fence uint64) error
	IsStale   func(error) bool
}

// Workers is what a workload runs with: one Locker per client, the storage,
// the recorder and a way to ask whether a majority of the nodes is up.
type Workers struct {
	Lockers []Locker
	Storage Storage
	Rec     *Recorder
	Key     string
	// KeyIndex is recorded with every hold, attempt and write, for
	// workloads on several keys.
	KeyIndex int
	Seed     uint64
	// MajorityUp tells whether a majority of the nodes is reachable from
	// the client; nil means always.
	MajorityUp func(client int) bool
}

func (w *Workers) rng(client int) *rand.Rand {
	return rand.New(rand.NewPCG(w.Seed, uint64(client)+1))
}

func (w *Workers) majorityUp(client int) bool { return w.MajorityUp == nil || w.MajorityUp(client) }

// acquire makes one recorded acquisition (Acquire, bounded by timeout). It
// returns nil when it failed or the run ended; attempts cut short by the end
// of the run are not counted.
func (w *Workers) acquire(ctx context.Context, client int, timeout time.Duration) (Held, int) {
	l, idx, _ := w.lock(ctx, client, timeout, false)
	return l, idx
}

// lock is acquire with the error, and with one attempt only (TryAcquire)
// when try is set.
func (w *Workers) lock(ctx context.Context, client int, timeout time.Duration, try bool) (Held, int, error) {
	return w.lockWith(ctx, w.Lockers[client], client, timeout, try)
}

// lockWith is lock with a Locker that is not among w.Lockers.
func (w *Workers) lockWith(ctx context.Context, lk Locker, client int, timeout time.Duration, try bool) (Held, int, error) {
	up := w.majorityUp(client)
	start := w.Rec.Now()
	actx, cancel := context.WithTimeout(ctx, timeout)
	var l Held
	var err error
	if try {
		l, err = lk.TryAcquire(actx, w.Key)
	} else {
		l, err = lk.Acquire(actx, w.Key)
	}
	cancel()
	done := w.Rec.Now()
	if err != nil && ctx.Err() != nil {
		return nil, -1, err
	}
	w.Rec.Attempt(Attempt{Client: client, Key: w.KeyIndex, Start: start, Latency: done - start, OK: err == nil, MajorityUp: up})
	if err != nil {
		return nil, -1, err
	}
	fence, ok := l.Fence()
	idx := w.Rec.Acquired(Hold{Client: client, Key: w.KeyIndex, Start: start, Acquired: done, Until: w.Rec.Offset(l.Until()), Fence: fence, HasFence: ok})
	return l, idx, nil
}

func (w *Workers) release(client int, l Held, idx int) {
	w.Rec.Released(idx, w.Rec.Now())
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()
	_ = l.Release(ctx) // a failed release only leaves the key to expire
}

func (w *Workers) readInt(key string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()
	v, err := w.Storage.Client.Get(ctx, key).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, err
}

// write stores value under key, through the fencing check when fenced.
func (w *Workers) write(client int, kind WriteKind, key string, value int64, l Held, fenced bool) bool {
	return w.writeOp(Write{Client: client, Kind: kind, Value: value, Hold: -1}, key, l, fenced)
}

// writeOp stores op.Value under key and records op, filled with the lock's
// fence, whether it was past its validity, and what the storage did.
func (w *Workers) writeOp(op Write, key string, l Held, fenced bool) bool {
	fence, hasFence := uint64(0), false
	if l != nil {
		fence, hasFence = l.Fence()
	}
	op.Fence, op.HasFence, op.Key = fence, hasFence, w.KeyIndex
	value := op.Value
	useFence := fenced && hasFence && w.Storage.FencedSet != nil
	if l != nil {
		op.Until = w.Rec.Offset(l.Until())
	}
	return w.Rec.Store(op, func() StoreResult {
		ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
		defer cancel()
		var err error
		if useFence {
			err = w.Storage.FencedSet(ctx, key, value, fence)
		} else {
			err = w.Storage.Client.Set(ctx, key, value, 0).Err()
		}
		switch {
		case err == nil:
			return StoreAccepted
		case useFence && w.Storage.IsStale != nil && w.Storage.IsStale(err):
			return StoreRefused
		}
		return StoreUnknown
	})
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Holders is the main workload: every client loops acquire → hold → release.
// While it holds, a client increments the shared counter the Jepsen way: read
// the value, hold, write the value plus one. A share of the holds pause past
// the lock's validity, like a client stopped by a GC pause or a slow disk,
// and then write anyway.
type Holders struct {
	HoldMin, HoldMax time.Duration
	PauseShare       float64       // share of holds that outlive the validity
	PausePast        time.Duration // how far past the validity deadline a paused client wakes up
	AttemptTimeout   time.Duration
	Fenced           bool // counter writes go through the storage-side fencing check
	CounterKey       string
}

// Run runs the workload until ctx is done, one goroutine per Locker.
func (hw Holders) Run(ctx context.Context, w *Workers) {
	var wg sync.WaitGroup
	for i := range w.Lockers {
		wg.Go(func() { hw.client(ctx, w, i) })
	}
	wg.Wait()
}

func (hw Holders) client(ctx context.Context, w *Workers, i int) {
	rng := w.rng(i)
	for ctx.Err() == nil {
		l, idx := w.acquire(ctx, i, hw.AttemptTimeout)
		if l == nil {
			sleepCtx(ctx, time.Duration(5+rng.IntN(20))*time.Millisecond)
			continue
		}
		v, err := w.readInt(hw.CounterKey)
		d := hw.HoldMin + time.Duration(rng.Int64N(int64(hw.HoldMax-hw.HoldMin)+1))
		if rng.Float64() < hw.PauseShare {
			d = time.Until(l.Until()) + hw.PausePast
		}
		// The pause ignores ctx on purpose: a paused process does not notice
		// the world moving on. It is bounded by the TTL plus PausePast.
		time.Sleep(d)
		if err == nil && ctx.Err() == nil {
			w.write(i, Increment, hw.CounterKey, v+1, l, hw.Fenced)
		}
		w.release(i, l, idx)
	}
}

// Storm is the contention storm: every round, all clients try to acquire at
// the same instant, hold briefly, increment the counter and release. Each
// client gets one attempt per round, bounded by the round's length.
type Storm struct {
	Round      time.Duration
	Hold       time.Duration
	CounterKey string
}

// Run runs rounds until ctx is done.
func (s Storm) Run(ctx context.Context, w *Workers) {
	for ctx.Err() == nil {
		end := time.Now().Add(s.Round)
		if dl, ok := ctx.Deadline(); ok && dl.Before(end) {
			return // a round cut short by the end of the run would count its waiters as failures
		}
		rctx, cancel := context.WithDeadline(ctx, end)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range w.Lockers {
			wg.Go(func() {
				<-start
				// The run's ctx, not the round's: an attempt the round
				// cut short is a failure, not the end of the run.
				l, idx := w.acquire(ctx, i, time.Until(end))
				if l == nil {
					return
				}
				v, err := w.readInt(s.CounterKey)
				time.Sleep(s.Hold)
				if err == nil {
					w.write(i, Increment, s.CounterKey, v+1, l, false)
				}
				w.release(i, l, idx)
			})
		}
		close(start)
		wg.Wait()
		<-rctx.Done()
		cancel()
	}
}

// AuctionMode says how bidders protect read-then-bid.
type AuctionMode int

const (
	// AuctionLock bids under the distributed lock.
	AuctionLock AuctionMode = iota
	// AuctionNoLock bids with no protection at all.
	AuctionNoLock
	// AuctionOptimistic bids in a WATCH/MULTI/EXEC transaction on the storage
	// node itself and retries when EXEC aborts.
	AuctionOptimistic
)

// Auction: bidders read the current price and bid a little higher. The
// invariant is that accepted bids strictly increase and the final price is
// the highest accepted bid.
type Auction struct {
	Mode           AuctionMode
	Think          time.Duration // time between reading the price and bidding
	AttemptTimeout time.Duration
	PriceKey       string
}

// Run runs the bidders until ctx is done.
func (a Auction) Run(ctx context.Context, w *Workers, bidders int) {
	var wg sync.WaitGroup
	for i := range bidders {
		wg.Go(func() { a.bidder(ctx, w, i) })
	}
	wg.Wait()
}

func (a Auction) bidder(ctx context.Context, w *Workers, i int) {
	rng := w.rng(i)
	for ctx.Err() == nil {
		raise := 1 + rng.Int64N(5)
		switch a.Mode {
		case AuctionLock:
			l, idx := w.acquire(ctx, i, a.AttemptTimeout)
			if l == nil {
				sleepCtx(ctx, time.Duration(5+rng.IntN(20))*time.Millisecond)
				continue
			}
			if p, err := w.readInt(a.PriceKey); err == nil {
				time.Sleep(a.Think)
				w.write(i, Bid, a.PriceKey, p+raise, l, false)
			}
			w.release(i, l, idx)
		case AuctionNoLock:
			if p, err := w.readInt(a.PriceKey); err == nil {
				time.Sleep(a.Think)
				w.write(i, Bid, a.PriceKey, p+raise, nil, false)
			}
		case AuctionOptimistic:
			a.optimisticBid(w, i, raise)
		}
	}
}

func (a Auction) optimisticBid(w *Workers, i int, raise int64) {
	ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
	defer cancel()
	rdb := w.Storage.Client
	_ = rdb.Watch(ctx, func(tx *redis.Tx) error {
		p, err := tx.Get(ctx, a.PriceKey).Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		time.Sleep(a.Think)
		bid := p + raise
		w.Rec.Store(Write{Client: i, Kind: Bid, Value: bid}, func() StoreResult {
			_, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				pipe.Set(ctx, a.PriceKey, bid, 0)
				return nil
			})
			switch {
			case err == nil:
				return StoreAccepted
			case errors.Is(err, redis.TxFailedErr):
				return StoreAborted
			}
			return StoreUnknown
		})
		return nil
	}, a.PriceKey)
}
