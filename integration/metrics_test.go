package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
	"github.com/quorumlock/quorumlock/redlock"
)

// The metrics tests read a Client's instruments through the SDK's in-memory
// reader, on embedded nodes. The SDK is a dependency of this module only:
// the library depends on the metric API alone.

// metered is a Client on embedded nodes whose metrics go to a ManualReader.
type metered struct {
	cl     *cluster.Cluster
	c      *redlock.Client
	reader *sdkmetric.ManualReader
}

// newMetered starts n embedded nodes and a Client on them with its own
// MeterProvider; with bootstrap the nodes are declared fresh, so that they
// vote at once.
func newMetered(t *testing.T, n int, bootstrap bool, opts ...redlock.Option) *metered {
	t.Helper()
	cl := clustertest.NewEmbedded(t, n)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	base := []redlock.Option{redlock.WithMeterProvider(mp), redlock.WithQuarantine(time.Hour), redlock.WithNodeTimeout(time.Second)}
	c, err := redlock.New(cl.Clients(), append(base, opts...)...)
	if err != nil {
		t.Fatalf("redlock.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	m := &metered{cl: cl, c: c, reader: reader}
	if bootstrap {
		ctx := ctxFor(t, time.Minute)
		if err := c.Bootstrap(ctx); err != nil {
			t.Fatalf("Bootstrap: %v", err)
		}
		// A node that missed the declaration (no answer within the node
		// timeout) stays quarantined, and no later Bootstrap declares it.
		states, err := c.Inspect(ctx, "metrics:probe")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range states {
			if s.Err != nil || s.Quarantine != 0 {
				t.Fatalf("node %d not declared by Bootstrap: err %v, quarantine %v", s.Node, s.Err, s.Quarantine)
			}
		}
	}
	return m
}

// point is one data point: its attributes and value (a histogram's count).
type point struct {
	attrs map[string]string
	value float64
}

// instrument is what the reader returned for one instrument.
type instrument struct {
	unit   string
	kind   string // "counter", "updown", "gauge", "histogram"
	points []point
	bounds []float64 // a histogram's bucket boundaries
}

// collect reads every instrument of the Client now.
func (m *metered) collect(t *testing.T) map[string]instrument {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := m.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("Collect: %v", err)
	}
	out := map[string]instrument{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != "github.com/quorumlock/quorumlock/redlock" {
			t.Errorf("instruments under scope %q", sm.Scope.Name)
		}
		for _, md := range sm.Metrics {
			in := instrument{unit: md.Unit}
			switch d := md.Data.(type) {
			case metricdata.Sum[int64]:
				in.kind = "updown"
				if d.IsMonotonic {
					in.kind = "counter"
				}
				for _, p := range d.DataPoints {
					in.points = append(in.points, point{attrMap(p.Attributes), float64(p.Value)})
				}
			case metricdata.Gauge[int64]:
				in.kind = "gauge"
				for _, p := range d.DataPoints {
					in.points = append(in.points, point{attrMap(p.Attributes), float64(p.Value)})
				}
			case metricdata.Histogram[float64]:
				in.kind = "histogram"
				for _, p := range d.DataPoints {
					in.points = append(in.points, point{attrMap(p.Attributes), float64(p.Count)})
					in.bounds = p.Bounds
				}
			default:
				t.Fatalf("%s: unexpected data %T", md.Name, md.Data)
			}
			out[md.Name] = in
		}
	}
	return out
}

func attrMap(s attribute.Set) map[string]string {
	m := map[string]string{}
	for _, kv := range s.ToSlice() {
		m[string(kv.Key)] = kv.Value.Emit()
	}
	return m
}

// value is the sum of the points of instrument name whose attributes
// include want.
func value(ms map[string]instrument, name string, want map[string]string) float64 {
	var v float64
	for _, p := range ms[name].points {
		ok := true
		for k, w := range want {
			if p.attrs[k] != w {
				ok = false
			}
		}
		if ok {
			v += p.value
		}
	}
	return v
}

// eventually collects until cond holds, or fails the test after the
// budget; cond says what it saw.
func (m *metered) eventually(t *testing.T, budget time.Duration, cond func(ms map[string]instrument) (bool, string)) map[string]instrument {
	t.Helper()
	deadline := time.Now().Add(budget)
	for {
		ms := m.collect(t)
		ok, saw := cond(ms)
		if ok {
			return ms
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", budget, saw)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// noKeyAttribute fails the test when any data point carries a lock key,
// as an attribute's name or value.
func noKeyAttribute(t *testing.T, ms map[string]instrument, keys ...string) {
	t.Helper()
	for name, in := range ms {
		for _, p := range in.points {
			for k, v := range p.attrs {
				if strings.Contains(k, "key") || slices.Contains(keys, v) {
					t.Errorf("%s carries the lock key: %s=%q", name, k, v)
				}
			}
		}
	}
}

// TestMetricsInstruments checks each instrument's name, unit and kind.
// The election instruments (quorumlock.election.leader, .transitions,
// .term) report only once an election has noted a term, which the Client
// does not expose by itself: they are not in this table.
func TestMetricsInstruments(t *testing.T) {
	m := newMetered(t, 3, true)
	ctx := ctxFor(t, time.Minute)
	l, err := m.c.TryAcquire(ctx, key(t))
	if err != nil {
		t.Fatalf("TryAcquire: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	ms := m.collect(t)
	want := []struct{ name, unit, kind string }{
		{"quorumlock.acquire.duration", "s", "histogram"},
		{"quorumlock.lock.held.duration", "s", "histogram"},
		{"quorumlock.acquire.attempts", "{attempt}", "counter"},
		{"quorumlock.node.votes", "{vote}", "counter"},
		{"quorumlock.extensions", "{extension}", "counter"},
		{"quorumlock.extension.repairs", "{key}", "counter"},
		{"quorumlock.handoffs", "{lock}", "counter"},
		{"quorumlock.locks.held", "{lock}", "updown"},
		{"quorumlock.locks.waiting", "{waiter}", "updown"},
	}
	for _, w := range want {
		in, ok := ms[w.name]
		switch {
		case !ok:
			t.Errorf("%s: not reported", w.name)
		case in.unit != w.unit || in.kind != w.kind:
			t.Errorf("%s: unit %q kind %s, want %q %s", w.name, in.unit, in.kind, w.unit, w.kind)
		case len(in.points) == 0:
			t.Errorf("%s: no data point", w.name)
		}
	}
	if len(ms) != len(want) {
		var names []string
		for n := range ms {
			names = append(names, n)
		}
		slices.Sort(names)
		t.Errorf("reported %d instruments %v, want %d", len(ms), names, len(want))
	}
	if v := value(ms, "quorumlock.acquire.attempts", nil); v != 1 {
		t.Errorf("attempts %v, want 1", v)
	}
	// Buckets in seconds: several below 100ms (round trips) and some for
	// long waits and holds (the SDK's default boundaries, 0 to 10000,
	// suit milliseconds: every acquisition would fall in one bucket).
	for _, h := range []struct {
		name   string
		fine   float64 // at least 3 boundaries in (0, fine]
		beyond float64 // a boundary at or beyond
	}{
		{"quorumlock.acquire.duration", 0.1, 60},
		{"quorumlock.lock.held.duration", 1, 3600},
	} {
		b := ms[h.name].bounds
		n := 0
		for _, x := range b {
			if x > 0 && x <= h.fine {
				n++
			}
		}
		if n < 3 || len(b) == 0 || b[len(b)-1] < h.beyond {
			t.Errorf("%s: bucket boundaries %v, want 3 or more in (0, %vs] and one at %vs or beyond", h.name, b, h.fine, h.beyond)
		}
	}
}

// TestMetricsAcquireOutcomes drives each outcome of an acquisition and the
// held and waiting counters up and back down.
func TestMetricsAcquireOutcomes(t *testing.T) {
	m := newMetered(t, 5, true)
	other, err := redlock.New(m.cl.Clients(), redlock.WithQuarantine(time.Hour), redlock.WithNodeTimeout(time.Second))
	if err != nil {
		t.Fatalf("redlock.New: %v", err)
	}
	t.Cleanup(func() { _ = other.Close() })
	ctx := ctxFor(t, 2*time.Minute)
	free, busy := key(t), key(t)
	acquires := func(ms map[string]instrument, o string) float64 {
		return value(ms, "quorumlock.acquire.duration", map[string]string{"outcome": o})
	}

	// acquired, held up then down, released.
	l, err := m.c.TryAcquire(ctx, free)
	if err != nil {
		t.Fatalf("TryAcquire: %v", err)
	}
	ms := m.collect(t)
	if v := value(ms, "quorumlock.locks.held", nil); v != 1 {
		t.Errorf("held while holding: %v, want 1", v)
	}
	if v := acquires(ms, "acquired"); v != 1 {
		t.Errorf("acquired: %v, want 1", v)
	}
	if v := value(ms, "quorumlock.node.votes", map[string]string{"outcome": "granted"}); v < 3 {
		t.Errorf("granted votes %v, want a majority of 5", v)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	m.eventually(t, time.Minute, func(ms map[string]instrument) (bool, string) {
		held := value(ms, "quorumlock.locks.held", nil)
		rel := value(ms, "quorumlock.lock.held.duration", map[string]string{"end": "released"})
		return held == 0 && rel == 1, fmt.Sprintf("held %v, released %v; want 0, 1", held, rel)
	})

	// taken: another Client holds the key.
	ol, err := other.TryAcquire(ctx, busy)
	if err != nil {
		t.Fatalf("other TryAcquire: %v", err)
	}
	defer func() { _ = ol.Release(context.Background()) }()
	if _, err := m.c.TryAcquire(ctx, busy); !errors.Is(err, redlock.ErrTaken) {
		t.Fatalf("TryAcquire of a held key: %v, want ErrTaken", err)
	}
	ms = m.collect(t)
	if v := acquires(ms, "taken"); v != 1 {
		t.Errorf("taken: %v, want 1", v)
	}
	if v := value(ms, "quorumlock.node.votes", map[string]string{"outcome": "taken"}); v < 3 {
		t.Errorf("taken votes %v, want a majority of 5", v)
	}

	// waiting up while Acquire waits, canceled when its ctx is.
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		l, err := m.c.Acquire(cctx, busy)
		if err == nil {
			_ = l.Release(context.Background())
		}
		done <- err
	}()
	m.eventually(t, time.Minute, func(ms map[string]instrument) (bool, string) {
		v := value(ms, "quorumlock.locks.waiting", nil)
		return v == 1, fmt.Sprintf("waiting %v, want 1", v)
	})
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Acquire with a cancelled ctx: %v, want context.Canceled", err)
	}
	ms = m.collect(t)
	if v := value(ms, "quorumlock.locks.waiting", nil); v != 0 {
		t.Errorf("waiting after Acquire returned: %v, want 0", v)
	}
	if v := acquires(ms, "canceled"); v != 1 {
		t.Errorf("canceled: %v, want 1", v)
	}

	// timeout: the ctx's deadline passes while the key is held.
	tctx, tcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer tcancel()
	if _, err := m.c.Acquire(tctx, busy); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire past its deadline: %v, want context.DeadlineExceeded", err)
	}
	ms = m.collect(t)
	if v := acquires(ms, "timeout"); v != 1 {
		t.Errorf("timeout: %v, want 1", v)
	}
	for _, o := range []string{"acquired", "taken", "canceled", "timeout"} {
		if v := acquires(ms, o); v != 1 {
			t.Errorf("%s: %v, want 1", o, v)
		}
	}
	if v := acquires(ms, "error"); v != 0 {
		t.Errorf("error: %v, want 0", v)
	}
	checkNodeAttrs(t, m, ms)
	noKeyAttribute(t, ms, free, busy)
}

// checkNodeAttrs checks that every vote names its node by index and by the
// address the Client dials.
func checkNodeAttrs(t *testing.T, m *metered, ms map[string]instrument) {
	t.Helper()
	addrs := m.cl.Addrs()
	for _, p := range ms["quorumlock.node.votes"].points {
		i := slices.Index(addrs, p.attrs["server.address"])
		if i < 0 || p.attrs["node"] != fmt.Sprint(i) {
			t.Errorf("vote attributes %v do not name one of the nodes %v by index and address", p.attrs, addrs)
		}
	}
}

// TestMetricsNodeVotes makes each node refuse for another reason: one
// restarted empty (quarantined), one with its clock an hour ahead
// (skewed), one down (failed); the acquisition fails with an error.
func TestMetricsNodeVotes(t *testing.T) {
	m := newMetered(t, 5, true)
	ctx := ctxFor(t, 2*time.Minute)
	if err := m.cl.Node(0).Restart(ctx, cluster.RestartOptions{WipeData: true}); err != nil {
		t.Fatalf("restart node 0: %v", err)
	}
	if err := m.cl.Node(1).ClockJump(ctx, time.Hour); err != nil {
		t.Fatalf("clock jump node 1: %v", err)
	}
	if err := m.cl.Node(2).Kill(ctx); err != nil {
		t.Fatalf("kill node 2: %v", err)
	}
	k := key(t)
	if _, err := m.c.TryAcquire(ctx, k); !errors.Is(err, redlock.ErrNoQuorum) {
		t.Fatalf("TryAcquire with 2 of 5 nodes voting: %v, want ErrNoQuorum", err)
	}
	addrs := m.cl.Addrs()
	want := []string{"quarantined", "skewed", "failed", "granted", "granted"}
	ms := m.eventually(t, time.Minute, func(ms map[string]instrument) (bool, string) {
		var saw []string
		ok := true
		for i, o := range want {
			v := value(ms, "quorumlock.node.votes", map[string]string{"node": fmt.Sprint(i), "server.address": addrs[i], "outcome": o})
			saw = append(saw, fmt.Sprintf("node %d %s=%v", i, o, v))
			ok = ok && v == 1
		}
		return ok, strings.Join(saw, ", ")
	})
	for i, o := range want {
		if v := value(ms, "quorumlock.node.votes", map[string]string{"node": fmt.Sprint(i)}); v != 1 {
			t.Errorf("node %d: %v votes in all, want its one %s vote", i, v, o)
		}
	}
	if v := value(ms, "quorumlock.acquire.duration", map[string]string{"outcome": "error"}); v != 1 {
		t.Errorf("error: %v, want 1", v)
	}
	checkNodeAttrs(t, m, ms)
	noKeyAttribute(t, ms, k)
}

// TestMetricsExtensionsAndEnds drives each outcome of an extension and
// each way a lock ends besides a release.
func TestMetricsExtensionsAndEnds(t *testing.T) {
	m := newMetered(t, 5, true)
	ctx := ctxFor(t, 2*time.Minute)
	manual := redlock.WithAutoExtend(false)
	exts := func(ms map[string]instrument, o string) float64 {
		return value(ms, "quorumlock.extensions", map[string]string{"outcome": o})
	}
	ends := func(ms map[string]instrument, e string) float64 {
		return value(ms, "quorumlock.lock.held.duration", map[string]string{"end": e})
	}

	// extended, then refused: another token on a majority; the lock is lost.
	k1 := key(t)
	l, err := m.c.TryAcquire(ctx, k1, manual)
	if err != nil {
		t.Fatalf("TryAcquire: %v", err)
	}
	if err := l.Extend(ctx); err != nil {
		t.Fatalf("Extend: %v", err)
	}
	if v := exts(m.collect(t), "extended"); v != 1 {
		t.Errorf("extended: %v, want 1", v)
	}
	for _, c := range m.cl.Clients()[:3] {
		if err := c.Set(ctx, k1, "another-owner", time.Minute).Err(); err != nil {
			t.Fatalf("SET: %v", err)
		}
	}
	if err := l.Extend(ctx); !errors.Is(err, redlock.ErrNotHeld) {
		t.Fatalf("Extend of a lock another owner holds: %v, want ErrNotHeld", err)
	}
	ms := m.eventually(t, time.Minute, func(ms map[string]instrument) (bool, string) {
		held, lost := value(ms, "quorumlock.locks.held", nil), ends(ms, "lost")
		return held == 0 && lost == 1, fmt.Sprintf("held %v, lost %v; want 0, 1", held, lost)
	})
	if v := exts(ms, "refused"); v != 1 {
		t.Errorf("refused: %v, want 1", v)
	}

	// expired: no extension, the validity runs out.
	k2 := key(t)
	l, err = m.c.TryAcquire(ctx, k2, manual, redlock.WithTTL(3*time.Second))
	if err != nil {
		t.Fatalf("TryAcquire: %v", err)
	}
	<-l.Done()
	if !errors.Is(l.Err(), redlock.ErrExpired) {
		t.Fatalf("lock ended with %v, want ErrExpired", l.Err())
	}
	m.eventually(t, time.Minute, func(ms map[string]instrument) (bool, string) {
		held, expired := value(ms, "quorumlock.locks.held", nil), ends(ms, "expired")
		return held == 0 && expired == 1, fmt.Sprintf("held %v, expired %v; want 0, 1", held, expired)
	})

	// failed: a majority of nodes is down; the lock stays valid.
	k3 := key(t)
	l, err = m.c.TryAcquire(ctx, k3, manual)
	if err != nil {
		t.Fatalf("TryAcquire: %v", err)
	}
	for i := range 3 {
		if err := m.cl.Node(i).Kill(ctx); err != nil {
			t.Fatalf("kill node %d: %v", i, err)
		}
	}
	if err := l.Extend(ctx); !errors.Is(err, redlock.ErrNoQuorum) {
		t.Fatalf("Extend with 2 of 5 nodes up: %v, want ErrNoQuorum", err)
	}
	ms = m.collect(t)
	if v := exts(ms, "failed"); v != 1 {
		t.Errorf("failed: %v, want 1", v)
	}
	if v := value(ms, "quorumlock.locks.held", nil); v != 1 {
		t.Errorf("held after a failed extension: %v, want 1", v)
	}
	for _, o := range []string{"extended", "refused"} {
		if v := exts(ms, o); v != 1 {
			t.Errorf("%s: %v, want 1", o, v)
		}
	}
	if v := ends(ms, "released"); v != 0 {
		t.Errorf("released: %v, want 0", v)
	}
	noKeyAttribute(t, ms, k1, k2, k3)
}
