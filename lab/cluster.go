package lab

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
)

// ClusterFleet returns a Config.NewFleet that starts a fresh cluster with
// opts for every run.
func ClusterFleet(opts cluster.Options) func(ctx context.Context, spec FleetSpec) (Fleet, error) {
	return func(ctx context.Context, spec FleetSpec) (Fleet, error) {
		o := opts
		if spec.AOFAlways {
			o.Persistence = cluster.PersistAOFAlways
		}
		c, err := cluster.New(ctx, o)
		if err != nil {
			return nil, unsupported(err)
		}
		if spec.AOFAlways && !c.Supports(cluster.FaultPersistence) {
			c.Close()
			return nil, fmt.Errorf("%w: backend %s cannot choose the nodes' persistence", ErrUnsupported, c.Backend())
		}
		for _, f := range spec.Faults {
			if err := c.Unsupported(f); err != nil {
				c.Close()
				return nil, unsupported(err)
			}
		}
		return clusterFleet{c}, nil
	}
}

// unsupported makes the cluster's refusal of a fault match ErrUnsupported
// too, keeping the cluster's reason.
func unsupported(err error) error {
	if err != nil && errors.Is(err, cluster.ErrUnsupported) && !errors.Is(err, ErrUnsupported) {
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	return err
}

type clusterFleet struct{ c *cluster.Cluster }

func (f clusterFleet) Len() int                         { return f.c.Len() }
func (f clusterFleet) Clients() []redis.UniversalClient { return f.c.Clients() }
func (f clusterFleet) Close() error                     { return f.c.Close() }
func (f clusterFleet) Node(i int) Node                  { return clusterNode{f.c.Node(i)} }

func (f clusterFleet) View(name string) (View, error) {
	v, err := f.c.View(name)
	if err != nil {
		return nil, err
	}
	return clusterView{v}, nil
}

type clusterView struct{ v *cluster.View }

func (v clusterView) Clients() []redis.UniversalClient { return v.v.Clients() }
func (v clusterView) Partition(ctx context.Context, i int) error {
	return unsupported(v.v.Partition(ctx, i))
}
func (v clusterView) Heal(ctx context.Context, i int) error { return unsupported(v.v.Heal(ctx, i)) }

type clusterNode struct{ n *cluster.Node }

func (n clusterNode) Kill(ctx context.Context) error { return unsupported(n.n.Kill(ctx)) }
func (n clusterNode) Restart(ctx context.Context, r Restart) error {
	o := cluster.RestartOptions{WipeData: r.WipeData, Delay: r.Delay}
	if r.AOFAlways {
		o.Persistence = cluster.PersistAOFAlways
	}
	return unsupported(n.n.Restart(ctx, o))
}
func (n clusterNode) Pause(ctx context.Context) error     { return unsupported(n.n.Pause(ctx)) }
func (n clusterNode) Resume(ctx context.Context) error    { return unsupported(n.n.Resume(ctx)) }
func (n clusterNode) Partition(ctx context.Context) error { return unsupported(n.n.Partition(ctx)) }
func (n clusterNode) Heal(ctx context.Context) error      { return unsupported(n.n.Heal(ctx)) }
func (n clusterNode) Latency(ctx context.Context, delay, jitter time.Duration) error {
	return unsupported(n.n.Latency(ctx, delay, jitter))
}
func (n clusterNode) ClearLatency(ctx context.Context) error {
	return unsupported(n.n.ClearLatency(ctx))
}
func (n clusterNode) ClockJump(ctx context.Context, d time.Duration) error {
	return unsupported(n.n.ClockJump(ctx, d))
}
func (n clusterNode) ClockRate(ctx context.Context, rate float64) error {
	return unsupported(n.n.ClockRate(ctx, rate))
}
