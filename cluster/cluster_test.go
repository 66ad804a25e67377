package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
)

func TestCloseLeavesNoContainer(t *testing.T) {
	clustertest.RequireDocker(t)
	ctx := testCtx(t)
	c, err := cluster.New(ctx, cluster.Options{Backend: cluster.BackendDocker, Nodes: 2, Label: "close-test", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := dockertest.NewPool("")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Client.HTTPClient.CloseIdleConnections()
	list := func() []dc.APIContainers {
		t.Helper()
		cs, err := pool.Client.ListContainers(dc.ListContainersOptions{
			All: true, Filters: map[string][]string{"label": {cluster.LabelCluster + "=" + c.ID()}},
		})
		if err != nil {
			t.Fatal(err)
		}
		return cs
	}
	running := list()
	if len(running) != 2 {
		t.Fatalf("want 2 labelled containers, got %d", len(running))
	}
	for _, ct := range running {
		for _, p := range ct.Ports {
			if p.IP != "127.0.0.1" {
				t.Fatalf("container %.12s publishes %d on %q; want 127.0.0.1 only", ct.ID, p.PublicPort, p.IP)
			}
		}
	}
	// A node killed and restarted is a new container: still only two.
	if err := c.Node(0).Restart(ctx, cluster.RestartOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := len(list()); n != 2 {
		t.Fatalf("after a restart: %d labelled containers, want 2", n)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if left := list(); len(left) != 0 {
		t.Fatalf("%d containers left after Close", len(left))
	}
	if err := c.Node(0).Kill(ctx); err == nil {
		t.Fatal("Kill after Close: want an error")
	}
}

func TestExternalBackend(t *testing.T) {
	m := miniredis.RunT(t)
	ctx := testCtx(t)
	c, err := cluster.New(ctx, cluster.Options{Backend: cluster.BackendExternal, URLs: []string{"redis://" + m.Addr() + "/0"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Len() != 1 || c.Backend() != cluster.BackendExternal || c.Addrs()[0] == m.Addr() {
		t.Fatalf("len %d backend %s addrs %v (server %s)", c.Len(), c.Backend(), c.Addrs(), m.Addr())
	}
	mustPing(t, c.Clients()[0])
	if err := c.Node(0).Partition(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := ping(c.Clients()[0], time.Second); err == nil {
		t.Fatal("partitioned external node still reachable")
	}
	if err := c.Node(0).Heal(ctx); err != nil {
		t.Fatal(err)
	}
	mustPing(t, c.Clients()[0])
	for _, f := range []func() error{
		func() error { return c.Node(0).Kill(ctx) },
		func() error { return c.Node(0).Restart(ctx, cluster.RestartOptions{}) },
		func() error { return c.Node(0).Pause(ctx) },
		func() error { return c.Node(0).ClockJump(ctx, time.Second) },
	} {
		err := f()
		var ue *cluster.UnsupportedError
		if !errors.Is(err, cluster.ErrUnsupported) || !errors.As(err, &ue) || ue.Backend != cluster.BackendExternal {
			t.Fatalf("want an UnsupportedError, got %v", err)
		}
	}
}

func TestSupportsTable(t *testing.T) {
	c := clustertest.NewEmbedded(t, 1)
	for _, f := range cluster.AllFaults() {
		if !c.Supports(f) {
			t.Errorf("embedded should support %s", f)
		}
	}
	if c.Supports("earthquake") {
		t.Error("unknown fault reported supported")
	}
	m := miniredis.RunT(t)
	ext, err := cluster.New(testCtx(t), cluster.Options{Backend: cluster.BackendExternal, URLs: []string{"redis://" + m.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	want := map[cluster.Fault]bool{cluster.FaultPartition: true, cluster.FaultBlackhole: true, cluster.FaultLatency: true, cluster.FaultReset: true}
	for _, f := range cluster.AllFaults() {
		if got := ext.Supports(f); got != want[f] {
			t.Errorf("external Supports(%s) = %v, want %v", f, got, want[f])
		}
	}
}

func TestOptionErrors(t *testing.T) {
	ctx := testCtx(t)
	for _, tc := range []struct {
		opts cluster.Options
		want string
	}{
		{cluster.Options{}, "cluster: no backend given"},
		{cluster.Options{Backend: "cloud"}, `cluster: unknown backend "cloud"`},
		{cluster.Options{Backend: cluster.BackendEmbedded, Nodes: -2}, "cluster: node count -2 out of range"},
		{cluster.Options{Backend: cluster.BackendEmbedded, Persistence: "rdb"}, `cluster: unknown persistence "rdb"`},
		{cluster.Options{Backend: cluster.BackendExternal}, "cluster: the external backend needs at least one URL"},
		{cluster.Options{Backend: cluster.BackendExternal, URLs: []string{"redis://10.1.2.3:6379"}}, `host "10.1.2.3" is not loopback`},
		{cluster.Options{Backend: cluster.BackendExternal, URLs: []string{"http://x"}}, `cluster: bad URL "http://x"`},
	} {
		c, err := cluster.New(ctx, tc.opts)
		if err == nil {
			c.Close()
			t.Errorf("%+v: want error %q", tc.opts, tc.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), "cluster: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %q, want it to contain %q", tc.opts, err, tc.want)
		}
	}
	c := clustertest.NewEmbedded(t, 5)
	if _, err := c.NodeE(7); err == nil || err.Error() != "cluster: node index 7 out of range [0,5)" {
		t.Errorf("NodeE(7): %v", err)
	}
	if err := c.Node(0).Restart(ctx, cluster.RestartOptions{Delay: -time.Second}); err == nil || !strings.Contains(err.Error(), "-1s") {
		t.Errorf("negative delay: %v", err)
	}
	if err := c.Node(0).Latency(ctx, -time.Millisecond, 0); err == nil || !strings.Contains(err.Error(), "-1ms") {
		t.Errorf("negative latency: %v", err)
	}
}

// recordTB captures Fatalf/Skipf of RequireDocker without ending the real test.
type recordTB struct {
	testing.TB
	mu   sync.Mutex
	kind string
	msg  string
}

func (r *recordTB) Helper() {}
func (r *recordTB) Fatalf(format string, args ...any) {
	r.record("fatal", format, args...)
}
func (r *recordTB) Skipf(format string, args ...any) {
	r.record("skip", format, args...)
}
func (r *recordTB) record(kind, format string, args ...any) {
	r.mu.Lock()
	r.kind, r.msg = kind, fmt.Sprintf(format, args...)
	r.mu.Unlock()
	runtime.Goexit()
}

func runRequireDocker(t *testing.T) (kind, msg string) {
	r := &recordTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		clustertest.RequireDocker(r)
	}()
	<-done
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.kind, r.msg
}

func TestRequireDockerWithoutDaemon(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///nonexistent/quorumlock-docker.sock")
	err := cluster.CheckDocker(context.Background(), "")
	if !errors.Is(err, cluster.ErrDockerUnavailable) {
		t.Fatalf("CheckDocker without a daemon: %v", err)
	}
	t.Setenv("CI", "true")
	if kind, msg := runRequireDocker(t); kind != "fatal" || !strings.Contains(msg, "CI=true") {
		t.Fatalf("under CI=true: %s %q; want a failure", kind, msg)
	}
	t.Setenv("CI", "")
	if kind, msg := runRequireDocker(t); kind != "skip" || !strings.Contains(msg, "docker daemon not reachable") {
		t.Fatalf("outside CI: %s %q; want a skip with the reason", kind, msg)
	}
}

func TestRequireDockerWithoutImage(t *testing.T) {
	clustertest.RequireDocker(t)
	t.Setenv(cluster.EnvImage, "quorumlock/redis:does-not-exist")
	err := cluster.CheckDocker(context.Background(), "")
	if !errors.Is(err, cluster.ErrImageMissing) || !strings.Contains(err.Error(), "docker/build.sh") {
		t.Fatalf("CheckDocker with a missing image: %v", err)
	}
	t.Setenv(cluster.EnvImage, "")
	if err := cluster.CheckDocker(context.Background(), "quorumlock/redis:nope"); !errors.Is(err, cluster.ErrImageMissing) {
		t.Fatalf("explicit missing image: %v", err)
	}
}

// Without libfaketime the docker nodes refuse clock faults, saying why, and
// run on the real clock.
func TestNoClockFaults(t *testing.T) {
	clustertest.RequireDocker(t)
	c := clustertest.New(t, cluster.Options{Backend: cluster.BackendDocker, Nodes: 1, NoClockFaults: true})
	if c.Supports(cluster.FaultClockJump) || c.Supports(cluster.FaultClockRate) {
		t.Fatal("clock faults reported supported without libfaketime")
	}
	ctx := context.Background()
	err := c.Node(0).ClockJump(ctx, time.Minute)
	if !errors.Is(err, cluster.ErrUnsupported) || !strings.Contains(err.Error(), "NoClockFaults") {
		t.Fatalf("ClockJump = %v, want unsupported naming NoClockFaults", err)
	}
	tm, b := redisTimeIn(t, c.Node(0).Client())
	if tm.Before(b.lo.Add(-clockSlack)) || tm.After(b.hi.Add(clockSlack)) {
		t.Fatalf("node clock read %v outside the local interval [%v, %v] of the request", tm, b.lo, b.hi)
	}
}
