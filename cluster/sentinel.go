package cluster

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"
	"github.com/redis/go-redis/v9"
)

// SentinelOptions configure StartSentinel.
type SentinelOptions struct {
	// Masters is how many independent masters to start (default 3). They
	// are monitored under the names m0, m1, ...
	Masters int
	// Replicas lists the masters (by index) that get one replica each, the
	// candidates of a failover.
	Replicas []int
	// Image is the node image; "" means DefaultImage().
	Image string
	// Label names the set in container labels; Logf receives progress.
	Label string
	Logf  func(format string, args ...any)
	// ReadyTimeout bounds each process's start-up and the Sentinel's
	// discovery of the set (default 30 s).
	ReadyTimeout time.Duration
	// ContainerExpiry is the backstop against containers outliving a
	// crashed test process (default 30 min).
	ContainerExpiry time.Duration
}

// SentinelSet is Redis masters, some with a replica, monitored by one
// Sentinel process (quorum 1), each in its own docker container.
//
// The containers use the host's network and bind 127.0.0.1 only: a Sentinel
// hands out the addresses it monitors, and with published ports these would
// be container addresses a client on the host cannot use. On the host
// network every process has one address, 127.0.0.1:port, for the Sentinel,
// the replicas and the clients alike.
type SentinelSet struct {
	opts     SentinelOptions
	id       string
	pool     *dockertest.Pool
	dir      string
	sentinel *sentinelProc
	masters  []*sentinelProc
	replicas map[int]*sentinelProc

	mu     sync.Mutex
	closed bool
}

// sentinelProc is one container of a SentinelSet.
type sentinelProc struct {
	id   string
	addr string // 127.0.0.1:port

	expCancel context.CancelFunc
	expDone   chan struct{}
}

// StartSentinel starts the masters, their replicas (each in sync before it
// returns) and the Sentinel, and waits until the Sentinel reports every
// master up and knows every replica. Close removes everything.
func StartSentinel(ctx context.Context, opts SentinelOptions) (_ *SentinelSet, err error) {
	if opts.Masters <= 0 {
		opts.Masters = 3
	}
	if opts.Image == "" {
		opts.Image = DefaultImage()
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = 30 * time.Second
	}
	if opts.ContainerExpiry <= 0 {
		opts.ContainerExpiry = 30 * time.Minute
	}
	for _, m := range opts.Replicas {
		if m < 0 || m >= opts.Masters {
			return nil, fmt.Errorf("cluster: replica of master %d: only %d masters", m, opts.Masters)
		}
	}
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDockerUnavailable, err)
	}
	if err := pool.Client.PingWithContext(ctx); err != nil {
		closeIdle(pool)
		return nil, fmt.Errorf("%w: %v", ErrDockerUnavailable, err)
	}
	if _, err := pool.Client.InspectImage(opts.Image); err != nil {
		closeIdle(pool)
		return nil, imageMissing(opts.Image, err)
	}
	s := &SentinelSet{opts: opts, id: newID(opts.Label), pool: pool, replicas: map[int]*sentinelProc{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	// The Sentinel rewrites its configuration file: it gets a directory of
	// its own, writable by the user the containers run as.
	if s.dir, err = os.MkdirTemp("", "quorumlock-sentinel-"+s.id+"-"); err != nil {
		return nil, fmt.Errorf("cluster: temp dir: %w", err)
	}
	for i := range opts.Masters {
		p, err := s.run(ctx, "master"+strconv.Itoa(i), nil)
		if err != nil {
			return nil, fmt.Errorf("cluster: master %d: %w", i, err)
		}
		s.masters = append(s.masters, p)
	}
	for _, m := range opts.Replicas {
		if s.replicas[m] != nil {
			continue
		}
		host, port, _ := net.SplitHostPort(s.masters[m].addr)
		p, err := s.run(ctx, "replica"+strconv.Itoa(m), []string{"--replicaof", host, port})
		if err != nil {
			return nil, fmt.Errorf("cluster: replica of master %d: %w", m, err)
		}
		s.replicas[m] = p
		if err := waitSynced(ctx, p.addr, opts.ReadyTimeout); err != nil {
			return nil, fmt.Errorf("cluster: replica of master %d: %w", m, err)
		}
	}
	// The Sentinel starts last: its first INFO of each master then lists
	// the replica, which it adopts at once.
	if s.sentinel, err = s.run(ctx, "sentinel", nil); err != nil {
		return nil, fmt.Errorf("cluster: sentinel: %w", err)
	}
	if err := s.waitMonitoring(ctx); err != nil {
		return nil, err
	}
	opts.Logf("sentinel set %s: sentinel %s, masters %v", s.id, s.sentinel.addr, s.MasterAddrs())
	return s, nil
}

// Names returns the master names the Sentinel monitors: m0, m1, ...
func (s *SentinelSet) Names() []string {
	out := make([]string, len(s.masters))
	for i := range out {
		out[i] = MasterName(i)
	}
	return out
}

// MasterName is the name the Sentinel monitors master i under.
func MasterName(i int) string { return "m" + strconv.Itoa(i) }

// SentinelAddrs returns the Sentinel's address, for FailoverOptions.
func (s *SentinelSet) SentinelAddrs() []string { return []string{s.sentinel.addr} }

// MasterAddrs returns the addresses the masters were started on (a failover
// moves a name elsewhere; MasterAddr asks the Sentinel).
func (s *SentinelSet) MasterAddrs() []string {
	out := make([]string, len(s.masters))
	for i, p := range s.masters {
		out[i] = p.addr
	}
	return out
}

// ReplicaAddr returns the address of master i's replica, "" when it has none.
func (s *SentinelSet) ReplicaAddr(i int) string {
	if p := s.replicas[i]; p != nil {
		return p.addr
	}
	return ""
}

// FailoverClient returns a new client of the master the Sentinel names
// name; the caller closes it.
func (s *SentinelSet) FailoverClient(name string) *redis.Client {
	return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: name, SentinelAddrs: s.SentinelAddrs()})
}

// MasterAddr asks the Sentinel where the master called name is now.
func (s *SentinelSet) MasterAddr(ctx context.Context, name string) (string, error) {
	sc := s.sentinelClient()
	defer sc.Close()
	a, err := sc.GetMasterAddrByName(ctx, name).Result()
	if err != nil {
		return "", fmt.Errorf("cluster: sentinel get-master-addr-by-name %s: %w", name, err)
	}
	if len(a) != 2 {
		return "", fmt.Errorf("cluster: sentinel get-master-addr-by-name %s: answered %q", name, a)
	}
	return net.JoinHostPort(a[0], a[1]), nil
}

// Failover makes the Sentinel promote the replica of the master called name
// (SENTINEL FAILOVER, which needs no agreement), and returns the address of
// the new master once the Sentinel names it and it reports itself a master.
// Clients that follow the Sentinel move there on their own.
func (s *SentinelSet) Failover(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ReadyTimeout)
	defer cancel()
	old, err := s.MasterAddr(ctx, name)
	if err != nil {
		return "", err
	}
	sc := s.sentinelClient()
	defer sc.Close()
	// NOGOODSLAVE: the Sentinel has not (re)checked the replica lately;
	// INPROG: a failover is already under way. Both pass.
	err = poll(ctx, func() error { return sc.Failover(ctx, name).Err() })
	if err != nil {
		return "", fmt.Errorf("cluster: sentinel failover %s: %w", name, err)
	}
	var now string
	err = poll(ctx, func() error {
		a, err := s.MasterAddr(ctx, name)
		if err != nil {
			return err
		}
		if a == old {
			return fmt.Errorf("the sentinel still names %s", old)
		}
		if err := roleIs(ctx, a, "master"); err != nil {
			return err
		}
		now = a
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("cluster: failover of %s from %s: %w", name, old, err)
	}
	s.opts.Logf("sentinel set %s: %s failed over from %s to %s", s.id, name, old, now)
	return now, nil
}

// Close removes every container and the Sentinel's directory.
func (s *SentinelSet) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var errs []error
	procs := append([]*sentinelProc{s.sentinel}, s.masters...)
	for _, p := range s.replicas {
		procs = append(procs, p)
	}
	for _, p := range procs {
		if p != nil {
			errs = append(errs, s.remove(ctx, p))
		}
	}
	if s.dir != "" {
		errs = append(errs, os.RemoveAll(s.dir))
	}
	closeIdle(s.pool)
	return errors.Join(errs...)
}

func (s *SentinelSet) sentinelClient() *redis.SentinelClient {
	return redis.NewSentinelClient(&redis.Options{Addr: s.sentinel.addr, MaxRetries: -1})
}

// run starts one container on a free loopback port: a Redis server with
// extra arguments, or (role "sentinel") the Sentinel. A port taken between
// the choice and the bind makes the process exit; it is tried again.
func (s *SentinelSet) run(ctx context.Context, role string, extra []string) (*sentinelProc, error) {
	var last error
	for range 3 {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		var cmd []string
		if role == "sentinel" {
			if err := s.writeSentinelConf(port); err != nil {
				return nil, err
			}
			cmd = []string{"/conf/sentinel.conf", "--sentinel"}
		} else {
			cmd = append([]string{"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--protected-mode", "no",
				"--save", "", "--appendonly", "no"}, extra...)
		}
		p, err := s.start(ctx, role, port, cmd)
		if err == nil {
			return p, nil
		}
		last = err
		s.opts.Logf("sentinel set %s: %s on port %d: %v; again", s.id, role, port, err)
	}
	return nil, last
}

func (s *SentinelSet) start(ctx context.Context, role string, port int, cmd []string) (*sentinelProc, error) {
	host, _ := os.Hostname()
	repo, tag := splitImage(s.opts.Image)
	res, err := s.pool.RunWithOptions(&dockertest.RunOptions{
		Repository: repo,
		Tag:        tag,
		Entrypoint: []string{"redis-server"},
		Cmd:        cmd,
		User:       fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
		Labels: map[string]string{
			LabelApp:     "1",
			LabelCluster: s.id,
			LabelNode:    role,
			LabelPID:     strconv.Itoa(os.Getpid()),
			LabelHost:    host,
		},
	}, func(hc *dc.HostConfig) {
		hc.NetworkMode = "host"
		hc.AutoRemove = true
		hc.RestartPolicy = dc.RestartPolicy{Name: "no"}
		if role == "sentinel" {
			hc.Binds = []string{s.dir + ":/conf"}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("run container from %s: %w", s.opts.Image, err)
	}
	p := &sentinelProc{id: res.Container.ID, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	s.startExpiry(p)
	gone := func(ctx context.Context) error {
		ct, err := s.pool.Client.InspectContainerWithContext(p.id, ctx)
		var notFound *dc.NoSuchContainer
		switch {
		case errors.As(err, &notFound):
			return fmt.Errorf("container %.12s exited during start-up and was removed", p.id)
		case err == nil && !ct.State.Running:
			return fmt.Errorf("container %.12s exited during start-up with status %d", p.id, ct.State.ExitCode)
		}
		return nil
	}
	err = waitPing(ctx, p.addr, s.opts.ReadyTimeout, nil, gone)
	if err == nil {
		err = listensOn(ctx, p.addr)
	}
	if err == nil {
		err = gone(ctx) // its own bind failed, and another server answered
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("%s at %s: %w", role, p.addr, err), s.remove(ctx, p))
	}
	return p, nil
}

// writeSentinelConf writes the Sentinel's configuration: every master
// under its name, quorum 1 (the one Sentinel decides alone).
func (s *SentinelSet) writeSentinelConf(port int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "port %d\nbind 127.0.0.1\nprotected-mode no\ndir /conf\n", port)
	for i, m := range s.masters {
		host, mport, _ := net.SplitHostPort(m.addr)
		name := MasterName(i)
		fmt.Fprintf(&b, "sentinel monitor %s %s %s 1\n", name, host, mport)
		fmt.Fprintf(&b, "sentinel down-after-milliseconds %s 5000\n", name)
		fmt.Fprintf(&b, "sentinel failover-timeout %s 10000\n", name)
	}
	return os.WriteFile(filepath.Join(s.dir, "sentinel.conf"), []byte(b.String()), 0o644)
}

// waitMonitoring waits until the Sentinel sees every master up and every
// replica in sync.
func (s *SentinelSet) waitMonitoring(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ReadyTimeout)
	defer cancel()
	sc := s.sentinelClient()
	defer sc.Close()
	err := poll(ctx, func() error {
		for i := range s.masters {
			name := MasterName(i)
			m, err := sc.Master(ctx, name).Result()
			if err != nil {
				return fmt.Errorf("sentinel master %s: %w", name, err)
			}
			if m["flags"] != "master" {
				return fmt.Errorf("sentinel master %s: flags %q", name, m["flags"])
			}
			if s.replicas[i] == nil {
				continue
			}
			rs, err := sc.Replicas(ctx, name).Result()
			if err != nil {
				return fmt.Errorf("sentinel replicas %s: %w", name, err)
			}
			if len(rs) != 1 || rs[0]["flags"] != "slave" || rs[0]["master-link-status"] != "ok" {
				return fmt.Errorf("sentinel replicas %s: %v", name, rs)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cluster: sentinel %s not monitoring the set: %w", s.sentinel.addr, err)
	}
	return nil
}

// startExpiry is the backstop of dockerNode.startExpiry, for one container.
func (s *SentinelSet) startExpiry(p *sentinelProc) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	p.expCancel, p.expDone = cancel, done
	client, id, secs := s.pool.Client, p.id, uint(s.opts.ContainerExpiry/time.Second)
	go func() {
		defer close(done)
		_ = client.StopContainerWithContext(id, secs, ctx)
	}()
}

func (s *SentinelSet) remove(ctx context.Context, p *sentinelProc) error {
	if p.expCancel != nil {
		p.expCancel()
		<-p.expDone
		p.expCancel = nil
	}
	err := s.pool.Client.RemoveContainer(dc.RemoveContainerOptions{ID: p.id, Force: true, RemoveVolumes: true, Context: ctx})
	var notFound *dc.NoSuchContainer
	if err != nil && !errors.As(err, &notFound) && !strings.Contains(err.Error(), "already in progress") {
		return fmt.Errorf("cluster: remove container %.12s: %w", p.id, err)
	}
	return nil
}

// freePort returns a loopback port nothing listens on now, below the
// kernel's ephemeral range (32768 and up on Linux), from which docker
// publishes other containers' ports and connections take their local
// ports: a port chosen there could be taken again before the container
// binds it.
func freePort() (int, error) {
	var last error
	for range 50 {
		port := 20000 + mrand.IntN(12000)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			last = err
			continue
		}
		_ = l.Close()
		return port, nil
	}
	return 0, fmt.Errorf("cluster: no free port: %w", last)
}

// listensOn checks that the process answering on addr is the one started
// there (INFO server names its port), not another that took the port.
func listensOn(ctx context.Context, addr string) error {
	_, port, _ := net.SplitHostPort(addr)
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "tcp_port:"+port+"\r\n") {
		return fmt.Errorf("another server answers on %s", addr)
	}
	return nil
}

// waitSynced waits until the replica at addr reports its link to the
// master up (the first full synchronisation done).
func waitSynced(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	return poll(ctx, func() error {
		info, err := rdb.Info(ctx, "replication").Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "master_link_status:up") {
			return errors.New("replica not in sync yet")
		}
		return nil
	})
}

// roleIs checks the role the server at addr reports.
func roleIs(ctx context.Context, addr, role string) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	info, err := rdb.Info(ctx, "replication").Result()
	if err != nil {
		return err
	}
	if !strings.Contains(info, "role:"+role+"\r\n") {
		return fmt.Errorf("%s is not a %s yet", addr, role)
	}
	return nil
}

// poll calls f until it succeeds or ctx ends, and then returns f's last
// error with ctx's.
func poll(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
