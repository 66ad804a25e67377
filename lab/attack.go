package lab

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
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
func attack(name, title, desc, expect string, want func(string) Expectation, spec FleetSpec, h hit, losesKey bool, guard string) Scenario {
	return Scenario{Name: name, Title: title, Description: desc, Expect: expect, Want: want, Fleet: spec, once: true,
		run:   func(ctx context.Context, r *run) error { return r.attack(ctx, h, losesKey) },
		judge: func(impl string, o *Outcome) { judgeAttack(impl, guard, o.Attack, &o.Verdict) }}
}

// Guards that must refuse the victim's vote in an attack.
const (
	guardNone       = ""
	guardQuarantine = "quarantine"
	guardSkew       = "skew"
)

// judgeAttack adds to v what the holds do not show: quorumlock's refusal of
// B inside A's validity must name the victim's guard, and B must get the
// lock once A's validity is over (else the refusals came from a dead
// cluster, which is a liveness remark).
func judgeAttack(impl, guard string, a *AttackRecord, v *Verdict) {
	if a == nil {
		return
	}
	if !a.After {
		v.Degraded = append(v.Degraded, "B got no lock after A's validity ended")
	}
	if impl != "quorumlock" || guard == guardNone || a.Try == nil {
		return
	}
	named := a.Try.Quarantined
	if guard == guardSkew {
		named = a.Try.Skewed
	}
	if !slices.Contains(named, a.Victim) {
		v.Unexpected = append(v.Unexpected, fmt.Sprintf("B's refusal did not name node %d's %s (%s)", a.Victim, guard, a.Try.Err))
	}
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

// errShapeLost marks an attack whose setup did not produce the situation
// it is about (A not on exactly its bare majority, the victim still holding
// A's key, no validity left for B to try in): the run then starts over on
// fresh nodes instead of reporting on a different situation.
var errShapeLost = errors.New("lab: the attack lost its shape")

func shapeLost(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errShapeLost, fmt.Sprintf(format, args...))
}

// AttackRecord is what the attack saw besides the holds.
type AttackRecord struct {
	Victim int           `json:"victim"`
	Mine   []int         `json:"mine"`    // A's bare majority
	Left   time.Duration `json:"left_ns"` // A's validity left when B first tried
	// Try is why B's single attempt inside A's validity was refused; nil
	// when B got the lock.
	Try *Refusal `json:"try,omitempty"`
	// Waited is true when B's Acquire, bounded by A's validity, ran out.
	Waited bool `json:"waited"`
	// After is true when B got the lock once A's validity had ended: the
	// refusals came from the lock, not from a dead cluster.
	After bool `json:"after"`
}

// attack runs the attack schedule:
//
//  1. A acquires on its bare majority (checked: the key is on exactly those
//     nodes);
//  2. the fault hits one of them (checked, where the fault takes the key
//     away: the victim no longer holds it);
//  3. B makes one attempt; if it gets the lock it holds it until A's
//     validity ends;
//  4. B calls Acquire bounded by A's validity; the same;
//  5. A releases when its validity ends;
//  6. B acquires again, which must succeed.
func (r *run) attack(ctx context.Context, h hit, losesKey bool) error {
	r.ttl = r.attackTTL
	n := r.fleet.Len()
	perm := r.rng.Perm(n)
	q := n/2 + 1
	mine, others, victim := sorted(perm[:q]), sorted(perm[q:]), perm[0]
	rec := &AttackRecord{Victim: victim, Mine: mine}
	r.attackRec = rec

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
		r.rec.Fault(FaultSpan{Name: "A cut off", Nodes: others, Start: cut, End: r.rec.Now()})
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

	a, ia, err := w.lock(ctx, 0, 2*r.ttl, false)
	if a == nil {
		return shapeLost("client A got no lock on its bare majority %v: %v", mine, err)
	}
	if on := r.holdersOf(w.Key, a.Token()); !slices.Equal(on, mine) {
		w.release(0, a, ia)
		return shapeLost("A's key is on nodes %v; want exactly %v", on, mine)
	}
	wait, err := h(ctx, r, victim)
	if err != nil {
		w.release(0, a, ia)
		return err
	}
	if losesKey && !r.keyGone(w.Key, a.Token(), victim) {
		w.release(0, a, ia)
		return errors.Join(shapeLost("node %d still holds A's key after the fault", victim), waitOrNil(wait))
	}
	rec.Left = time.Until(a.Until())
	// B's first attempt takes milliseconds; a tenth of the TTL is room
	// enough, and tolerates a slow restart on a busy host.
	if rec.Left < r.ttl/10 {
		w.release(0, a, ia)
		return errors.Join(shapeLost("the fault took so long that only %v of A's validity is left", rec.Left), waitOrNil(wait))
	}

	keep := func(b Held, ib int) {
		sleepCtx(ctx, time.Until(a.Until()))
		w.release(1, b, ib)
	}
	if b, ib, err := w.lock(ctx, 1, r.ttl, true); b != nil {
		keep(b, ib)
	} else if err != nil && r.impl.Explain != nil {
		why := r.impl.Explain(err)
		rec.Try = &why
	} else if err != nil {
		rec.Try = &Refusal{Err: err.Error()}
	}
	if d := time.Until(a.Until()); d > 0 {
		b, ib, _ := w.lock(ctx, 1, d, false)
		if b != nil {
			keep(b, ib)
		} else {
			rec.Waited = ctx.Err() == nil
		}
	}
	sleepCtx(ctx, time.Until(a.Until()))
	w.release(0, a, ia)
	if err := waitOrNil(wait); err != nil {
		return err
	}
	if b, ib, _ := w.lock(ctx, 1, 3*r.ttl, false); b != nil {
		rec.After = true
		w.release(1, b, ib)
	}
	return nil
}

func waitOrNil(wait func() error) error {
	if wait == nil {
		return nil
	}
	return wait()
}

// holdersOf lists the nodes whose key holds token, read through the fleet's
// own clients (the default view, which the attack leaves alone).
func (r *run) holdersOf(key, token string) []int {
	var on []int
	for i, c := range r.fleet.Clients() {
		ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
		v, err := c.Get(ctx, key).Result()
		cancel()
		if err == nil && v == token {
			on = append(on, i)
		}
	}
	return on
}

// keyGone waits (up to a twentieth of the TTL) until node i no longer holds
// token under key; a clock jump expires the key at its next access, a
// restart at once.
func (r *run) keyGone(key, token string, i int) bool {
	deadline := time.Now().Add(r.ttl / 20)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), storageTimeout)
		v, err := r.fleet.Clients()[i].Get(ctx, key).Result()
		cancel()
		if errors.Is(err, redis.Nil) || err == nil && v != token {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sorted(s []int) []int { return slices.Sorted(slices.Values(s)) }
