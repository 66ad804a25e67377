package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ory/dockertest/v3"
	dc "github.com/ory/dockertest/v3/docker"
	"github.com/redis/go-redis/v9"
)

// Image selection for the docker backend.
const (
	// EnvImage overrides the node image (e.g. "redis:7" where a registry is
	// reachable). docker/build.sh builds nothing when it is set.
	EnvImage = "QUORUMLOCK_REDIS_IMAGE"
	// ProjectImage is the tag docker/build.sh gives the image it builds.
	ProjectImage = "quorumlock/redis:current"

	imageLabelFaketime = "org.quorumlock.faketime"
	imageLabelTLS      = "org.quorumlock.tls"
)

// Labels on every container the docker backend starts.
const (
	LabelApp     = "quorumlock"         // "1"
	LabelCluster = "quorumlock.cluster" // Cluster.ID()
	LabelNode    = "quorumlock.node"    // node index
	LabelPID     = "quorumlock.pid"     // pid of the process that started it
	LabelHost    = "quorumlock.host"    // hostname of that process
)

// ErrDockerUnavailable and ErrImageMissing classify CheckDocker failures.
var (
	ErrDockerUnavailable = errors.New("cluster: docker daemon not reachable")
	ErrImageMissing      = errors.New("cluster: redis node image missing")
)

// DefaultImage is the docker backend's image: $QUORUMLOCK_REDIS_IMAGE, else
// ProjectImage.
func DefaultImage() string {
	if img := strings.TrimSpace(os.Getenv(EnvImage)); img != "" {
		return img
	}
	return ProjectImage
}

// CheckDocker reports whether the docker backend can run with image (""
// means DefaultImage()): the daemon answers and the image exists locally.
// Errors wrap ErrDockerUnavailable or ErrImageMissing and say what to do.
func CheckDocker(ctx context.Context, image string) error {
	if image == "" {
		image = DefaultImage()
	}
	pool, err := dockertest.NewPool("")
	if err != nil {
		return fmt.Errorf("%w: %v", ErrDockerUnavailable, err)
	}
	defer closeIdle(pool)
	if err := pool.Client.PingWithContext(ctx); err != nil {
		return fmt.Errorf("%w: %v", ErrDockerUnavailable, err)
	}
	if _, err := pool.Client.InspectImage(image); err != nil {
		return imageMissing(image, err)
	}
	return nil
}

func imageMissing(image string, err error) error {
	hint := "run bash docker/build.sh"
	if image != ProjectImage {
		hint = fmt.Sprintf("docker pull %s, or unset %s and run bash docker/build.sh", image, EnvImage)
	}
	return fmt.Errorf("%w: image %s: %v (%s)", ErrImageMissing, image, err, hint)
}

func closeIdle(pool *dockertest.Pool) {
	if pool != nil && pool.Client != nil && pool.Client.HTTPClient != nil {
		pool.Client.HTTPClient.CloseIdleConnections()
	}
}

func splitImage(image string) (repo, tag string) {
	// The tag is after the last ':' unless that ':' belongs to a registry port.
	if i := strings.LastIndex(image, ":"); i > 0 && !strings.Contains(image[i:], "/") {
		return image[:i], image[i+1:]
	}
	return image, "latest"
}

// dockerBackend is what the nodes of one docker cluster share.
type dockerBackend struct {
	c        *Cluster
	pool     *dockertest.Pool
	image    string
	faketime string // libfaketime path inside the image; "" = no clock faults
	dir      string // host temp dir holding every node's data and clock dirs
	// confDir (mounted read-only at /conf) holds the TLS files and
	// accessConf; "" when the nodes need neither.
	confDir    string
	accessConf string // file name in confDir of the requirepass/user directives, or ""
}

func newDockerBackend(ctx context.Context, c *Cluster) (*dockerBackend, error) {
	image := c.opts.Image
	if image == "" {
		image = DefaultImage()
	}
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrDockerUnavailable, err)
	}
	d := &dockerBackend{c: c, pool: pool, image: image}
	if err := pool.Client.PingWithContext(ctx); err != nil {
		closeIdle(pool)
		return nil, fmt.Errorf("%w: %v", ErrDockerUnavailable, err)
	}
	img, err := pool.Client.InspectImage(image)
	if err != nil {
		closeIdle(pool)
		return nil, imageMissing(image, err)
	}
	var labels map[string]string
	if img.Config != nil {
		labels = img.Config.Labels
	}
	if !c.opts.NoClockFaults {
		d.faketime = labels[imageLabelFaketime]
	}
	// A project image from before TLS would only fail at the first start,
	// with a node that never answers. Other images are tried as they are.
	if c.opts.TLS && labels[imageLabelFaketime] != "" && labels[imageLabelTLS] == "" {
		closeIdle(pool)
		return nil, fmt.Errorf("cluster: image %s was built without TLS (no label %s): run bash docker/build.sh", image, imageLabelTLS)
	}
	d.reapStale(ctx)
	d.dir, err = os.MkdirTemp("", "quorumlock-"+c.id+"-")
	if err != nil {
		closeIdle(pool)
		return nil, fmt.Errorf("cluster: temp dir: %w", err)
	}
	if err := d.writeConf(); err != nil {
		return nil, errors.Join(err, d.close())
	}
	return d, nil
}

// writeConf makes the files the nodes read from /conf: certificates and
// the access directives.
func (d *dockerBackend) writeConf() error {
	o := &d.c.opts
	if !o.TLS && o.Password == "" && len(o.Users) == 0 {
		return nil
	}
	d.confDir = filepath.Join(d.dir, "conf")
	if err := os.MkdirAll(d.confDir, 0o755); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	if o.TLS {
		certs, err := newCerts(d.confDir, d.c.id)
		if err != nil {
			return fmt.Errorf("cluster: certificates: %w", err)
		}
		d.c.certs = certs
	}
	var err error
	d.accessConf, err = o.writeAccessConf(d.confDir)
	return err
}

// clientOptions are the TLS configuration and password every client of
// the default user needs; nil when the nodes take plain unauthenticated
// connections.
func (d *dockerBackend) clientOptions() *redis.Options {
	if d.c.certs == nil && d.c.opts.Password == "" {
		return nil
	}
	o := &redis.Options{Password: d.c.opts.Password}
	if d.c.certs != nil {
		o.TLSConfig = d.c.certs.Config()
	}
	return o
}

// args is redis-server's command line for persistence p: the access
// directives' file first (redis-server reads a config file only as its
// first argument), then the options.
func (d *dockerBackend) args(p Persistence) []string {
	var args []string
	if d.accessConf != "" {
		args = append(args, "/conf/"+d.accessConf)
	}
	args = append(args, redisArgs(p)...)
	if d.c.certs != nil {
		clientAuth := "no"
		if d.c.opts.TLSClientAuth {
			clientAuth = "yes"
		}
		// Later arguments win: the plain port is closed.
		args = append(args, "--port", "0", "--tls-port", "6379",
			"--tls-cert-file", "/conf/"+filepath.Base(d.c.certs.ServerCertFile),
			"--tls-key-file", "/conf/"+filepath.Base(d.c.certs.ServerKeyFile),
			"--tls-ca-cert-file", "/conf/"+filepath.Base(d.c.certs.CAFile),
			"--tls-auth-clients", clientAuth)
	}
	return args
}

// reapStale removes labelled containers left behind by test processes that
// died without Close: those whose process is gone (same host), and any
// older than twice the expiry.
func (d *dockerBackend) reapStale(ctx context.Context) {
	list, err := d.pool.Client.ListContainers(dc.ListContainersOptions{
		All: true, Filters: map[string][]string{"label": {LabelApp + "=1"}}, Context: ctx,
	})
	if err != nil {
		d.c.logf("listing stale containers: %v", err)
		return
	}
	host, _ := os.Hostname()
	for _, ct := range list {
		age := time.Since(time.Unix(ct.Created, 0))
		stale := age > 2*d.c.opts.ContainerExpiry
		if pid, err := strconv.Atoi(ct.Labels[LabelPID]); err == nil && ct.Labels[LabelHost] == host && age > time.Minute {
			stale = stale || !processAlive(pid)
		}
		if !stale {
			continue
		}
		d.c.logf("removing stale container %.12s (cluster %s, age %v)", ct.ID, ct.Labels[LabelCluster], age.Round(time.Second))
		_ = d.pool.Client.RemoveContainer(dc.RemoveContainerOptions{ID: ct.ID, Force: true, RemoveVolumes: true, Context: ctx})
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func (d *dockerBackend) close() error {
	closeIdle(d.pool)
	if d.dir != "" {
		if err := os.RemoveAll(d.dir); err != nil {
			return fmt.Errorf("cluster: remove %s: %w", d.dir, err)
		}
	}
	return nil
}

// dockerNode is one container. Every start creates a fresh container (same
// bind-mounted data and clock dirs, current persistence args); containers
// are started with AutoRemove, so a killed one disappears by itself.
type dockerNode struct {
	n *Node
	d *dockerBackend

	mu        sync.Mutex // guards the fields below
	id        string     // current container, "" when none
	dataDir   string
	clockDir  string
	expCancel context.CancelFunc
	expDone   chan struct{}
}

func (x *dockerNode) redisOptions() *redis.Options { return x.d.clientOptions() }

func (x *dockerNode) dirs() error {
	if x.dataDir != "" {
		return nil
	}
	base := filepath.Join(x.d.dir, fmt.Sprintf("node%d", x.n.index))
	x.dataDir, x.clockDir = filepath.Join(base, "data"), filepath.Join(base, "clock")
	for _, dir := range []string{x.dataDir, x.clockDir} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	return writeClockFile(x.clockDir, 0, 1)
}

func redisArgs(p Persistence) []string {
	args := []string{"--port", "6379", "--bind", "0.0.0.0", "--protected-mode", "no", "--dir", "/data"}
	switch p {
	case PersistAOFAlways:
		args = append(args, "--save", "", "--appendonly", "yes", "--appendfsync", "always")
	case PersistAOFEverySec:
		args = append(args, "--save", "", "--appendonly", "yes", "--appendfsync", "everysec")
	default:
		args = append(args, "--save", "", "--appendonly", "no")
	}
	return args
}

func (x *dockerNode) start(ctx context.Context, wipe bool) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.removeLocked(ctx); err != nil {
		return err
	}
	if err := x.dirs(); err != nil {
		return err
	}
	if wipe {
		if err := os.RemoveAll(x.dataDir); err != nil {
			return err
		}
		if err := os.MkdirAll(x.dataDir, 0o755); err != nil {
			return err
		}
	}
	host, _ := os.Hostname()
	env := []string{}
	if x.d.faketime != "" {
		env = append(env,
			"LD_PRELOAD="+x.d.faketime,
			"FAKETIME_TIMESTAMP_FILE=/faketime/offset",
			"FAKETIME_NO_CACHE=1",
			"FAKETIME_DONT_FAKE_MONOTONIC=1",
			"FAKETIME_XRESET=1",
		)
	}
	repo, tag := splitImage(x.d.image)
	res, err := x.d.pool.RunWithOptions(&dockertest.RunOptions{
		Repository:   repo,
		Tag:          tag,
		Entrypoint:   []string{"redis-server"},
		Cmd:          x.d.args(x.n.Persistence()),
		Env:          env,
		User:         fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
		ExposedPorts: []string{"6379/tcp"},
		PortBindings: map[dc.Port][]dc.PortBinding{"6379/tcp": {{HostIP: "127.0.0.1", HostPort: ""}}},
		Labels: map[string]string{
			LabelApp:     "1",
			LabelCluster: x.d.c.id,
			LabelNode:    strconv.Itoa(x.n.index),
			LabelPID:     strconv.Itoa(os.Getpid()),
			LabelHost:    host,
		},
	}, func(hc *dc.HostConfig) {
		hc.PublishAllPorts = false
		hc.AutoRemove = true
		hc.Binds = []string{x.dataDir + ":/data", x.clockDir + ":/faketime:ro"}
		if x.d.confDir != "" {
			hc.Binds = append(hc.Binds, x.d.confDir+":/conf:ro")
		}
		hc.RestartPolicy = dc.RestartPolicy{Name: "no"}
	})
	if err != nil {
		return fmt.Errorf("run container from %s: %w", x.d.image, err)
	}
	x.id = res.Container.ID
	x.startExpiry()
	addr := res.GetHostPort("6379/tcp")
	if addr == "" || !strings.HasPrefix(addr, "127.0.0.1:") {
		// An exited container has no ports any more: say that instead.
		if err := x.gone(ctx); err != nil {
			return err
		}
		return fmt.Errorf("container %.12s: port 6379 not published on 127.0.0.1 (got %q)", x.id, addr)
	}
	if err := waitPing(ctx, addr, x.d.c.opts.ReadyTimeout, x.d.clientOptions(), x.gone); err != nil {
		return fmt.Errorf("container %.12s at %s: %w", x.id, addr, err)
	}
	return x.n.setUpstream(addr)
}

// startExpiry is the backstop against containers outliving a crashed test
// process: like dockertest's Resource.Expire, a docker stop with the expiry
// as grace period (the image's stop signal is ignored by redis, so the
// daemon kills the container when the grace period ends, and AutoRemove
// deletes it). Unlike Expire the request is owned: cancelled and waited for
// when the container goes.
func (x *dockerNode) startExpiry() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	x.expCancel, x.expDone = cancel, done
	id, secs := x.id, uint(x.d.c.opts.ContainerExpiry/time.Second)
	client := x.d.pool.Client
	go func() {
		defer close(done)
		_ = client.StopContainerWithContext(id, secs, ctx)
	}()
}

func (x *dockerNode) stopExpiryLocked() {
	if x.expCancel != nil {
		x.expCancel()
		<-x.expDone
		x.expCancel, x.expDone = nil, nil
	}
}

// waitPing polls PING on addr until +PONG (a loading server answers
// -LOADING). With auth set, the connection uses its TLS configuration and
// logs in with its password first. gone, when not nil, reports a node
// process that will never answer (its container exited), which ends the
// wait at once.
func waitPing(ctx context.Context, addr string, timeout time.Duration, auth *redis.Options, gone func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	var nextGone time.Time // asking docker on every poll would load the daemon
	for {
		if last = pingRaw(ctx, addr, auth); last == nil {
			return nil
		}
		if now := time.Now(); gone != nil && now.After(nextGone) {
			nextGone = now.Add(250 * time.Millisecond)
			if err := gone(ctx); err != nil {
				return fmt.Errorf("%w (last PING: %v)", err, last)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not answering PING after %v: %v", timeout, last)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func pingRaw(ctx context.Context, addr string, auth *redis.Options) error {
	dl := time.Now().Add(time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	nd := &net.Dialer{Deadline: dl}
	var conn net.Conn
	var err error
	if auth != nil && auth.TLSConfig != nil {
		// The server name comes from addr, as go-redis does it.
		conn, err = (&tls.Dialer{NetDialer: nd, Config: auth.TLSConfig}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = nd.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(dl)
	r := bufio.NewReader(conn)
	if auth != nil && auth.Password != "" {
		// The reply says nothing about the password; it is not echoed.
		if err := respCommand(conn, r, "+OK", "AUTH", auth.Password); err != nil {
			return fmt.Errorf("AUTH: %w", err)
		}
	}
	return respCommand(conn, r, "+PONG", "PING")
}

// respCommand sends one command and checks its one-line reply.
func respCommand(w io.Writer, r *bufio.Reader, want string, args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(line); got != want {
		return fmt.Errorf("answered %q", got)
	}
	return nil
}

// gone reports whether the node's container has exited (or was removed,
// with AutoRemove) while it was expected to start.
func (x *dockerNode) gone(ctx context.Context) error {
	id := x.id // x.mu is held by start
	ct, err := x.d.pool.Client.InspectContainerWithContext(id, ctx)
	var notFound *dc.NoSuchContainer
	switch {
	case errors.As(err, &notFound):
		return fmt.Errorf("container %.12s exited during start-up and was removed (redis-server refused its options or image?)", id)
	case err != nil:
		return nil // cannot tell; keep waiting
	case !ct.State.Running:
		return fmt.Errorf("container %.12s exited during start-up with status %d (redis-server refused its options or image?)", id, ct.State.ExitCode)
	}
	return nil
}

// signal sends sig and waits (bounded) until the container is gone or stopped.
func (x *dockerNode) signal(ctx context.Context, sig dc.Signal, wait time.Duration) error {
	x.mu.Lock()
	id := x.id
	x.mu.Unlock()
	if id == "" {
		return nil
	}
	err := x.d.pool.Client.KillContainer(dc.KillContainerOptions{ID: id, Signal: sig, Context: ctx})
	var notFound *dc.NoSuchContainer
	if err != nil && !errors.As(err, &notFound) {
		var notRunning *dc.ContainerNotRunning
		if !errors.As(err, &notRunning) {
			return err
		}
	}
	return x.waitExited(ctx, id, wait)
}

func (x *dockerNode) waitExited(ctx context.Context, id string, wait time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		ct, err := x.d.pool.Client.InspectContainerWithContext(id, ctx)
		var notFound *dc.NoSuchContainer
		if errors.As(err, &notFound) || (err == nil && !ct.State.Running) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("container %.12s still running after %v", id, wait)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (x *dockerNode) kill(ctx context.Context) error {
	if x.n.pausedNow() {
		_ = x.resume(ctx)
	}
	return x.signal(ctx, dc.SIGKILL, 10*time.Second)
}

func (x *dockerNode) stop(ctx context.Context) error {
	if x.n.pausedNow() {
		_ = x.resume(ctx)
	}
	if err := x.signal(ctx, dc.SIGTERM, 10*time.Second); err != nil {
		x.d.c.logf("node %d: clean stop failed (%v), killing", x.n.index, err)
		return x.signal(ctx, dc.SIGKILL, 10*time.Second)
	}
	return nil
}

func (x *dockerNode) pause(ctx context.Context) error {
	x.mu.Lock()
	id := x.id
	x.mu.Unlock()
	return x.d.pool.Client.PauseContainer(id)
}

func (x *dockerNode) resume(ctx context.Context) error {
	x.mu.Lock()
	id := x.id
	x.mu.Unlock()
	return x.d.pool.Client.UnpauseContainer(id)
}

func (x *dockerNode) setClock(ctx context.Context, offset time.Duration, rate float64) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if err := x.dirs(); err != nil {
		return err
	}
	return writeClockFile(x.clockDir, offset, rate)
}

// writeClockFile writes libfaketime's timestamp file ("+120.5" or
// "+120.5 x2"), atomically so the node never reads half a line.
func writeClockFile(dir string, offset time.Duration, rate float64) error {
	line := strconv.FormatFloat(offset.Seconds(), 'f', 6, 64)
	if offset >= 0 {
		line = "+" + line
	}
	if rate != 1 {
		line += " x" + strconv.FormatFloat(rate, 'f', -1, 64)
	}
	tmp := filepath.Join(dir, ".offset.tmp")
	if err := os.WriteFile(tmp, []byte(line+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "offset"))
}

// removeLocked force-removes the current container, if any.
func (x *dockerNode) removeLocked(ctx context.Context) error {
	x.stopExpiryLocked()
	if x.id == "" {
		return nil
	}
	id := x.id
	_ = x.d.pool.Client.UnpauseContainer(id) // a paused container cannot always be removed
	err := x.d.pool.Client.RemoveContainer(dc.RemoveContainerOptions{ID: id, Force: true, RemoveVolumes: true, Context: ctx})
	var notFound *dc.NoSuchContainer
	if err != nil && !errors.As(err, &notFound) && !strings.Contains(err.Error(), "already in progress") {
		return fmt.Errorf("remove container %.12s: %w", id, err)
	}
	// AutoRemove may still be deleting it; wait until it is gone.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		_, err := x.d.pool.Client.InspectContainerWithContext(id, wctx)
		if errors.As(err, &notFound) {
			break
		}
		select {
		case <-wctx.Done():
			return fmt.Errorf("container %.12s not removed after 10s", id)
		case <-time.After(20 * time.Millisecond):
		}
	}
	x.id = ""
	return nil
}

func (x *dockerNode) close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return x.removeLocked(ctx)
}
