package bench

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quorumlock/quorumlock/internal/stats"
)

// releaseTimeout bounds a release after the measured part of an operation.
const releaseTimeout = 5 * time.Second

// ContentionResult is one library's run of workers contending for one key.
type ContentionResult struct {
	Name         string  `json:"name"`
	Workers      int     `json:"workers"`
	Seconds      float64 `json:"seconds"`
	Acquisitions int     `json:"acquisitions"`
	PerSecond    float64 `json:"per_second"`
	WaitP50Ms    float64 `json:"wait_p50_ms"`
	WaitP99Ms    float64 `json:"wait_p99_ms"`
	// WaitMaxMs includes the waits still unfinished when the run ended.
	WaitMaxMs float64 `json:"wait_max_ms"`
	MinPerWkr int     `json:"min_per_worker"`
	MaxPerWkr int     `json:"max_per_worker"`
	// Fairness is MaxPerWkr/MinPerWkr; a worker that never got the lock
	// counts as 1 (and is counted in Starved).
	Fairness float64 `json:"fairness"`
	Starved  int     `json:"starved"`
	// Failures are acquisitions that gave up before the run ended (redsync
	// after its 32 tries); the worker then tries again, its wait going on.
	Failures int `json:"failures"`
	// Overlaps counts acquisitions that found another worker inside the
	// critical section: it must be 0.
	Overlaps int `json:"overlaps"`
	// Handoffs are the acquisitions by a worker that was waiting when the
	// previous holder began its release; HandoffP50Ms and HandoffP99Ms are
	// the time from the start of that release to the acquisition's return.
	Handoffs     int     `json:"handoffs"`
	HandoffP50Ms float64 `json:"handoff_p50_ms"`
	HandoffP99Ms float64 `json:"handoff_p99_ms"`
}

// ContentionRun says how long Contention runs: at least For, and beyond it
// until MinAcquisitions were made, but never past Cap (0: no cap beyond
// For). A run on a loaded machine then still has something to report.
type ContentionRun struct {
	For             time.Duration
	MinAcquisitions int
	Cap             time.Duration
}

// Contention runs workers goroutines, each taking key with its own
// contender (from newWorker) and holding it for critical, for run.For (see
// ContentionRun). Wait is the time from wanting the lock to holding it,
// across failed attempts. Hand-off is the time from the start of a release
// to the return of the acquisition of a worker that was already waiting
// when the release began: how long the lock sat free while someone wanted
// it.
func Contention(ctx context.Context, name, key string, workers int, critical time.Duration, run ContentionRun, newWorker func(i int) Contender) ContentionResult {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var inside, overlaps, failures, total atomic.Int64
	counts := make([]int, workers)
	waits := make([][]time.Duration, workers)
	handoffs := make([][]time.Duration, workers)
	longest := make([]time.Duration, workers)
	start := time.Now()
	// lastRelease is when the latest release began (time since start, +1 so
	// that 0 means none); releaser is the worker that made it.
	var lastRelease, releaser atomic.Int64
	go func() {
		// Stop at For once enough acquisitions were made, else at Cap.
		t := time.NewTicker(max(run.For/50, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
			}
			el := time.Since(start)
			if (el >= run.For && total.Load() >= int64(run.MinAcquisitions)) || (run.Cap > 0 && el >= max(run.Cap, run.For)) ||
				(run.Cap <= 0 && el >= run.For) {
				cancel()
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range workers {
		acquire := newWorker(w)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				t0 := time.Since(start)
				var release func(context.Context) error
				for runCtx.Err() == nil {
					r, err := acquire(runCtx, key)
					if err == nil {
						release = r
						break
					}
					if runCtx.Err() == nil {
						failures.Add(1)
					}
				}
				got := time.Since(start)
				wait := got - t0
				longest[w] = max(longest[w], wait)
				if release == nil {
					return
				}
				if inside.Add(1) != 1 {
					overlaps.Add(1)
				}
				if rel := time.Duration(lastRelease.Load() - 1); rel > t0 && releaser.Load() != int64(w) {
					handoffs[w] = append(handoffs[w], got-rel)
				}
				counts[w]++
				total.Add(1)
				waits[w] = append(waits[w], wait)
				time.Sleep(critical)
				inside.Add(-1)
				releaser.Store(int64(w))
				lastRelease.Store(int64(time.Since(start)) + 1)
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
				_ = release(rctx)
				rcancel()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all, hand []time.Duration
	for w := range waits {
		all = append(all, waits[w]...)
		hand = append(hand, handoffs[w]...)
	}
	r := ContentionResult{
		Name: name, Workers: workers, Seconds: elapsed.Seconds(), Acquisitions: len(all),
		Failures: int(failures.Load()), Overlaps: int(overlaps.Load()),
		MinPerWkr: slices.Min(counts), MaxPerWkr: slices.Max(counts), Handoffs: len(hand),
	}
	r.PerSecond = float64(r.Acquisitions) / elapsed.Seconds()
	r.WaitP50Ms, r.WaitP99Ms = ms(stats.Quantile(all, 0.50)), ms(stats.Quantile(all, 0.99))
	r.HandoffP50Ms, r.HandoffP99Ms = ms(stats.Quantile(hand, 0.50)), ms(stats.Quantile(hand, 0.99))
	r.WaitMaxMs = ms(slices.Max(longest))
	for _, c := range counts {
		if c == 0 {
			r.Starved++
		}
	}
	r.Fairness = float64(r.MaxPerWkr) / float64(max(r.MinPerWkr, 1))
	return r
}

// LatencyResult is the distribution of Acquire's latency.
type LatencyResult struct {
	Name   string  `json:"name"`
	Ops    int     `json:"ops"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	MaxMs  float64 `json:"max_ms"`
	Errors int     `json:"errors"`
}

// AcquireLatency acquires distinct keys one after the other for about d
// (at least minOps times) and reports how long each acquisition took; the
// release after each is not timed, and is followed by idle (no request at
// all) before the next acquisition.
func AcquireLatency(ctx context.Context, name string, keys []string, d time.Duration, minOps int, idle time.Duration, acquire Contender) LatencyResult {
	var lat []time.Duration
	r := LatencyResult{Name: name}
	start := time.Now()
	for i := 0; ctx.Err() == nil && (time.Since(start) < d || i < minOps); i++ {
		t0 := time.Now()
		release, err := acquire(ctx, keys[i%len(keys)])
		took := time.Since(t0)
		if err != nil {
			r.Errors++
			continue
		}
		lat = append(lat, took)
		rctx, cancel := context.WithTimeout(ctx, releaseTimeout)
		_ = release(rctx)
		cancel()
		if idle > 0 {
			time.Sleep(idle) // leave the nodes idle, as a slow release does
		}
	}
	r.Ops = len(lat)
	r.P50Ms, r.P99Ms = ms(stats.Quantile(lat, 0.50)), ms(stats.Quantile(lat, 0.99))
	if len(lat) > 0 {
		r.MaxMs = ms(slices.Max(lat))
	}
	return r
}

// ThroughputResult is acquisitions per second of goroutines on distinct keys.
type ThroughputResult struct {
	Name       string  `json:"name"`
	Goroutines int     `json:"goroutines"`
	Seconds    float64 `json:"seconds"`
	Acquired   int     `json:"acquired"`
	PerSecond  float64 `json:"per_second"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"first_error,omitempty"`
}

// Throughput runs goroutines, each acquiring and releasing its own key in
// a loop, for d.
func Throughput(ctx context.Context, name string, keys []string, d time.Duration, acquire Contender) ThroughputResult {
	runCtx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var acquired, errs atomic.Int64
	var first atomic.Pointer[string]
	start := time.Now()
	var wg sync.WaitGroup
	for _, key := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				release, err := acquire(runCtx, key)
				if err != nil {
					if runCtx.Err() == nil {
						errs.Add(1)
						msg := err.Error()
						first.CompareAndSwap(nil, &msg)
					}
					continue
				}
				acquired.Add(1)
				rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
				if err := release(rctx); err != nil && !errors.Is(err, context.Canceled) {
					errs.Add(1)
					msg := "release: " + err.Error()
					first.CompareAndSwap(nil, &msg)
				}
				rcancel()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := ThroughputResult{
		Name: name, Goroutines: len(keys), Seconds: elapsed.Seconds(),
		Acquired: int(acquired.Load()), PerSecond: float64(acquired.Load()) / elapsed.Seconds(), Errors: int(errs.Load()),
	}
	if p := first.Load(); p != nil {
		r.FirstError = *p
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
