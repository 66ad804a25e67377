package lab

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// DefaultAttackTTL is the attack scenarios' lock TTL when Config.AttackTTL
// is 0: long enough that a node restart (a container on the docker backend)
// fits well inside one validity.
func DefaultAttackTTL(ttl time.Duration) time.Duration { return max(4*ttl, 2*time.Second) }

// A hit is the fault an attack aims at one of the holder's nodes. It returns
// a wait function for faults that finish in the background.
type hit func(ctx context.Context, r *run, victim int) (wait func() error, err error)

// attack builds the scenarios that need the attack shape to show anything:
// client A holds on exactly a bare majority (its view is cut off from the
// other nodes), one of A's nodes is hit, then client B on another view tries
// to acquire while A's lock is still valid. It runs once and takes about one
// attack TTL (the run's duration does not stretch it).
func attack(name, title, desc, expect string, want func(string) Expectation, spec FleetSpec, h hit) Scenario {
	return Scenario{Name: name, Title: title, Description: desc, Expect: expect, Want: want, Fleet: spec, once: true,
		run: func(ctx context.Context, r *run) error { return r.attack(ctx, h) }}
}

func attackRestart(opts Restart) hit {
	return func(ctx context.Context, r *run, victim int) (func() error, error) {
		if opts.Delay < 0 {
			opts.Delay = r.ttl * 3 / 2
		}
		n := r.fleet.Node(victim)
		start := r.rec.Now()
		r.down.Add(1)
		if err := faultCtx(n.Kill); err != nil {
			r.down.Add(-1)
			return nil, fmt.Errorf("kill node %d: %w", victim, err)
		}
		done := make(chan error, 1)
		go func() {
			err := faultCtx(func(ctx context.Context) error { return n.Restart(ctx, opts) })
			r.down.Add(-1)
			r.rec.Fault(FaultSpan{Name: restartName(opts), Nodes: []int{victim}, Start: start, End: r.rec.Now()})
			done <- err
		}()
		wait := func() error {
			if err := <-done; err != nil {
				return fmt.Errorf("restart node %d: %w", victim, err)
			}
			return nil
		}
		if opts.Delay > 0 {
			return wait, nil // B tries while the node is still down
		}
		return nil, wait()
	}
}

func restartName(o Restart) string {
	switch {
	case o.Delay > 0:
		return "restart delayed"
	case o.AOFAlways:
		return "restart aof"
	default:
		return "restart empty"
	}
}

func attackClockJump(ctx context.Context, r *run, victim int) (func() error, error) {
	at := r.rec.Now()
	if err := faultCtx(func(ctx context.Context) error { return r.fleet.Node(victim).ClockJump(ctx, 2*r.ttl) }); err != nil {
		return nil, fmt.Errorf("clock jump on node %d: %w", victim, err)
	}
	r.rec.Fault(FaultSpan{Name: "clock +2×TTL", Nodes: []int{victim}, Start: at, End: r.rec.Now() + r.ttl/20})
	return nil, nil
}

func (r *run) attack(ctx context.Context, h hit) error {
	r.ttl = r.attackTTL
	n := r.fleet.Len()
	perm := r.rng.Perm(n)
	q := n/2 + 1
	mine, others, victim := perm[:q], perm[q:], perm[0]

	va, err := r.fleet.View("client-a")
	if err != nil {
		return err
	}
	vb, err := r.fleet.View("client-b")
	if err != nil {
		return err
	}
	cut := r.rec.Now()
	for _, o := range others {
		if err := faultCtx(func(ctx context.Context) error { return va.Partition(ctx, o) }); err != nil {
			return fmt.Errorf("cut client A off node %d: %w", o, err)
		}
	}
	defer func() {
		for _, o := range others {
			_ = faultCtx(func(ctx context.Context) error { return va.Heal(ctx, o) })
		}
		r.rec.Fault(FaultSpan{Name: "A cut off", Nodes: sorted(others), Start: cut, End: r.rec.Now()})
	}()

	la, err := r.newLocker(va.Clients())
	if err != nil {
		return err
	}
	lb, err := r.newLocker(vb.Clients())
	if err != nil {
		return err
	}
	w := r.workersOf([]Locker{la, lb})

	a, ia := w.acquire(ctx, 0, 2*r.ttl)
	if a == nil {
		return fmt.Errorf("client A got no lock on its bare majority %v", sorted(mine))
	}
	wait, err := h(ctx, r, victim)
	if err != nil {
		w.release(0, a, ia)
		return err
	}
	// B tries for as long as A's lock is valid and a little beyond, to show
	// that it gets the lock once A's validity is over.
	b, ib := w.acquire(ctx, 1, time.Until(a.Until())+r.ttl/2)
	sleepCtx(ctx, time.Until(a.Until()))
	w.release(0, a, ia)
	if b != nil {
		w.release(1, b, ib)
	}
	if wait != nil {
		return wait()
	}
	return nil
}

func sorted(s []int) []int { return slices.Sorted(slices.Values(s)) }
