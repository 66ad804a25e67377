package redlock

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metrics, through the OpenTelemetry metric API: a no-op until the
// application installs an SDK. Counters of monotonic events are observable
// (read from the same atomics as Stats when the SDK collects); durations are
// histograms in seconds. No instrument carries the lock key (unbounded);
// votes carry the node's index and address, elections their name.

const meterName = "github.com/quorumlock/quorumlock/redlock"

// Vote outcomes, as the node.votes instrument names them.
const (
	outGranted = iota
	outTaken
	outQuarantined
	outSkewed
	outQueued
	outFailed
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"granted", "taken", "quarantined", "skewed", "queued", "failed"}

// WithMeterProvider sets where the Client's metrics go. Default: the global
// provider (otel.GetMeterProvider), a no-op until the application installs
// an SDK.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return clientOption(func(c *clientConfig) { c.meters = mp })
}

// meters are the Client's instruments.
type meters struct {
	acquire    metric.Float64Histogram
	acquireBy  map[string][]metric.RecordOption // by outcome
	held       metric.Float64Histogram
	heldBy     map[string][]metric.RecordOption // by how the lock ended
	reg        metric.Registration
	elections  sync.Map // name → *electionMeter
	leader     metric.Int64ObservableGauge
	term       metric.Int64ObservableGauge
	transition metric.Int64ObservableCounter
}

type electionMeter struct {
	attrs       metric.ObserveOption
	mu          sync.Mutex
	leading     bool
	term        uint64
	transitions int64
}

func (c *Client) initMetrics(mp metric.MeterProvider) error {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	m := mp.Meter(meterName)
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	var err error
	ms := &meters{acquireBy: map[string][]metric.RecordOption{}, heldBy: map[string][]metric.RecordOption{}}
	// Bucket boundaries in seconds (the SDK's default ones, 0 to 10000,
	// suit milliseconds and would put every acquisition in the first
	// bucket): an acquisition takes a round trip (milliseconds) or a wait
	// (up to minutes); a lock is held from milliseconds to hours.
	acquireBuckets := []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
	heldBuckets := []float64{0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400}
	ms.acquire, err = m.Float64Histogram("quorumlock.acquire.duration", metric.WithUnit("s"),
		metric.WithDescription("Time an Acquire, TryAcquire or Do took to obtain the lock or give up, by outcome."),
		metric.WithExplicitBucketBoundaries(acquireBuckets...))
	check(err)
	for _, o := range []string{"acquired", "taken", "timeout", "canceled", "error"} {
		ms.acquireBy[o] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", o)))}
	}
	ms.held, err = m.Float64Histogram("quorumlock.lock.held.duration", metric.WithUnit("s"),
		metric.WithDescription("How long locks were held, by how they ended."),
		metric.WithExplicitBucketBoundaries(heldBuckets...))
	check(err)
	for _, e := range []string{"released", "lost", "expired"} {
		ms.heldBy[e] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("end", e)))}
	}
	attempts, err := m.Int64ObservableCounter("quorumlock.acquire.attempts", metric.WithUnit("{attempt}"),
		metric.WithDescription("Acquisition rounds sent to the nodes."))
	check(err)
	votes, err := m.Int64ObservableCounter("quorumlock.node.votes", metric.WithUnit("{vote}"),
		metric.WithDescription("Votes of each node in acquisition rounds, by outcome: granted, taken, quarantined, skewed, queued, failed."))
	check(err)
	extensions, err := m.Int64ObservableCounter("quorumlock.extensions", metric.WithUnit("{extension}"),
		metric.WithDescription("Extension rounds, by outcome: extended, refused (the lock was lost), failed (too few answers)."))
	check(err)
	repairs, err := m.Int64ObservableCounter("quorumlock.extension.repairs", metric.WithUnit("{key}"),
		metric.WithDescription("Lock keys set again by an extension on a node that had lost them."))
	check(err)
	handoffs, err := m.Int64ObservableCounter("quorumlock.handoffs", metric.WithUnit("{lock}"),
		metric.WithDescription("Locks passed to a waiter of the same Client without a round trip."))
	check(err)
	held, err := m.Int64ObservableUpDownCounter("quorumlock.locks.held", metric.WithUnit("{lock}"),
		metric.WithDescription("Locks held by this Client now."))
	check(err)
	waiting, err := m.Int64ObservableUpDownCounter("quorumlock.locks.waiting", metric.WithUnit("{waiter}"),
		metric.WithDescription("Acquire calls of this Client waiting now."))
	check(err)
	ms.leader, err = m.Int64ObservableGauge("quorumlock.election.leader", metric.WithUnit("{leader}"),
		metric.WithDescription("1 while this Client leads the election, 0 otherwise."))
	check(err)
	ms.term, err = m.Int64ObservableGauge("quorumlock.election.term", metric.WithUnit("{term}"),
		metric.WithDescription("Fence token of this Client's latest term in the election."))
	check(err)
	ms.transition, err = m.Int64ObservableCounter("quorumlock.election.transitions", metric.WithUnit("{transition}"),
		metric.WithDescription("Times this Client started or ended a term in the election."))
	check(err)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}

	nodeAttrs := make([][numOutcomes]metric.ObserveOption, len(c.nodes))
	for i, n := range c.nodes {
		for o := 0; o < numOutcomes; o++ {
			nodeAttrs[i][o] = metric.WithAttributeSet(attribute.NewSet(
				attribute.Int("node", i), attribute.String("server.address", n.addr), attribute.String("outcome", outcomeNames[o])))
		}
	}
	extAttrs := [3]metric.ObserveOption{}
	for i, o := range []string{"extended", "refused", "failed"} {
		extAttrs[i] = metric.WithAttributeSet(attribute.NewSet(attribute.String("outcome", o)))
	}
	ms.reg, err = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := &c.stats
		o.ObserveInt64(attempts, int64(s.attempts.Load()))
		for i, n := range c.nodes {
			for k := 0; k < numOutcomes; k++ {
				o.ObserveInt64(votes, int64(n.votes[k].Load()), nodeAttrs[i][k])
			}
		}
		o.ObserveInt64(extensions, int64(s.extended.Load()), extAttrs[0])
		o.ObserveInt64(extensions, int64(s.extendRefused.Load()), extAttrs[1])
		o.ObserveInt64(extensions, int64(s.extendFailed.Load()), extAttrs[2])
		o.ObserveInt64(repairs, int64(s.repaired.Load()))
		o.ObserveInt64(handoffs, int64(s.handedOff.Load()))
		o.ObserveInt64(held, s.holding.Load())
		o.ObserveInt64(waiting, s.waiting.Load())
		ms.elections.Range(func(_, v any) bool {
			em := v.(*electionMeter)
			em.mu.Lock()
			leading, term, transitions := em.leading, em.term, em.transitions
			em.mu.Unlock()
			lead := int64(0)
			if leading {
				lead = 1
			}
			o.ObserveInt64(ms.leader, lead, em.attrs)
			o.ObserveInt64(ms.term, int64(term), em.attrs)
			o.ObserveInt64(ms.transition, transitions, em.attrs)
			return true
		})
		return nil
	}, attempts, votes, extensions, repairs, handoffs, held, waiting, ms.leader, ms.term, ms.transition)
	if err != nil {
		return err
	}
	c.meters = ms
	return nil
}

// recordAcquire records one acquisition call's duration and outcome; it is
// deferred, so it reads the error through a pointer.
func (c *Client) recordAcquire(start time.Time, errp *error) {
	err := *errp
	o := "acquired"
	switch {
	case err == nil:
	case errors.Is(err, ErrTaken):
		o = "taken"
	case errors.Is(err, context.DeadlineExceeded):
		o = "timeout"
	case errors.Is(err, context.Canceled), errors.Is(err, ErrClosed):
		o = "canceled"
	default:
		o = "error"
	}
	c.meters.acquire.Record(context.Background(), time.Since(start).Seconds(), c.meters.acquireBy[o]...)
}

// recordHeld records how long a lock was held, once it ended.
func (c *Client) recordHeld(held time.Duration, cause error) {
	e := "released"
	switch {
	case errors.Is(cause, ErrReleased):
	case errors.Is(cause, ErrExpired):
		e = "expired"
	default:
		e = "lost"
	}
	c.meters.held.Record(context.Background(), held.Seconds(), c.meters.heldBy[e]...)
}

// electionMeter returns the gauges of election name, made on first use.
func (c *Client) electionMeter(name string) *electionMeter {
	if v, ok := c.meters.elections.Load(name); ok {
		return v.(*electionMeter)
	}
	em := &electionMeter{attrs: metric.WithAttributeSet(attribute.NewSet(attribute.String("election", name)))}
	v, _ := c.meters.elections.LoadOrStore(name, em)
	return v.(*electionMeter)
}

// noteTerm records that this Client started (leading) or ended a term of
// election name with the given fence token.
func (c *Client) noteTerm(name string, leading bool, fence uint64) {
	em := c.electionMeter(name)
	em.mu.Lock()
	defer em.mu.Unlock()
	if em.leading != leading {
		em.transitions++
	}
	em.leading = leading
	if fence > em.term {
		em.term = fence
	}
}
