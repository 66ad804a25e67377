//go:build unix

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/quorumlock/quorumlock/redlock"
)

func init() { subcommands = append(subcommands, newElectCmd) }

// electConfig is what `elect` needs; the command fills it from flags, tests
// directly.
type electConfig struct {
	command
	key       string
	identity  string // "": the library's default, host:pid
	value     string
	ttl       time.Duration
	grace     time.Duration
	bootstrap bool
	// metricsAddr, when set, is where the lock's metrics are served.
	metricsAddr string

	// clientOpts are given to redlock.New after those from flags: the
	// place for redlock.WithMeterProvider when metrics are served.
	clientOpts []redlock.Option
	// lockOpts configure each term's lock, after those from flags (tests
	// shorten timings).
	lockOpts []redlock.LockOption
}

func newElectCmd() *cobra.Command {
	cfg := electConfig{}
	var nodes *nodeFlags
	c := &cobra.Command{
		Use:   "elect --nodes URL,URL,URL --key KEY [flags] -- COMMAND [ARG...]",
		Short: "Keep a command running on exactly one host: the leader of an election; standbys take over when it fails",
		Long: `Elect runs the same election on every host that runs it with the same KEY and
keeps COMMAND running on the leader only. The others wait, and say on stderr
who leads whenever that changes ("waiting: leader is ID (term N)").

When this process leads, it starts COMMAND with QUORUMLOCK_KEY,
QUORUMLOCK_FENCE (the term: a number larger than every earlier term's, to
hand to storage that checks it) and QUORUMLOCK_IDENTITY in its environment,
in its own process group. The term's lock extends itself while COMMAND runs.

When the term ends without this process resigning (a majority of nodes
refused the extension, or none succeeded within the validity: a network
partition, a paused process), COMMAND's group gets SIGTERM, then SIGKILL
after --grace, and elect campaigns again. A standby leads once the term's
lock has expired on the nodes: within about one --ttl of the leader's last
extension.

When COMMAND exits on its own, elect resigns (a standby takes over at once)
and exits with COMMAND's status. SIGINT and SIGTERM stop COMMAND (SIGTERM,
then SIGKILL after --grace); elect keeps the term until it has exited, then
resigns and exits 130 or 143.

Exit status:
  COMMAND's    COMMAND exited on its own (128+N when signal N killed it)
  130, 143     interrupted by SIGINT, SIGTERM
  126, 127     COMMAND could not be started, was not found
  1            other errors (flags, node URLs)

` + nodesHelp,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if err := cfg.fromArgs(c, args, nodes); err != nil {
				return err
			}
			return elect(c.Context(), cfg)
		},
	}
	f := c.Flags()
	nodes = addNodesFlag(f)
	f.StringVar(&cfg.key, "key", "", "election name (required): the same on every host; the lock key of its terms")
	f.StringVar(&cfg.identity, "identity", "", "this candidate's name, shown to the others (default: host name:pid)")
	f.StringVar(&cfg.value, "value", "", "what this candidate advertises while it leads, e.g. its address")
	f.DurationVar(&cfg.ttl, "ttl", redlock.DefaultTTL, "term lock TTL: a standby takes over about this long after the leader stops extending")
	f.DurationVar(&cfg.grace, "grace", 10*time.Second, "time between SIGTERM and SIGKILL when COMMAND is stopped")
	f.StringVar(&cfg.metricsAddr, "metrics-addr", "", metricsAddrHelp)
	f.BoolVar(&cfg.bootstrap, "bootstrap", false, bootstrapHelp)
	return c
}

func (cfg *electConfig) check() error {
	if cfg.key == "" {
		return errors.New("--key is empty: give the election name")
	}
	if err := cfg.command.check("quorumlock elect --key KEY -- ./scheduler"); err != nil {
		return err
	}
	switch {
	case cfg.ttl <= 0:
		return fmt.Errorf("--ttl %v must be positive", cfg.ttl)
	case cfg.grace < 0:
		return fmt.Errorf("--grace %v must not be negative", cfg.grace)
	}
	return nil
}

// elect campaigns, runs the command while it leads, and campaigns again
// when a term is lost, until the command exits on its own or ctx ends.
func elect(ctx context.Context, cfg electConfig) error {
	if err := cfg.check(); err != nil {
		return err
	}
	clients, err := openNodesTLS(cfg.nodes, cfg.tls)
	if err != nil {
		return err
	}
	defer closeNodes(clients)
	warnFewNodes(cfg.stderr, len(clients))
	nodes := make([]redis.UniversalClient, len(clients))
	for i, c := range clients {
		nodes[i] = c
	}
	opts := []redlock.Option{redlock.WithTTL(cfg.ttl)}
	if cfg.metricsAddr != "" {
		meters, stop, err := metricsOption(ctx, cfg.metricsAddr, cfg.stderr)
		if err != nil {
			return err
		}
		defer stop() // deferred before the Client's Close, so it runs after it
		opts = append(opts, meters)
	}
	opts = append(opts, cfg.clientOpts...)
	locks, err := redlock.New(nodes, opts...)
	if err != nil {
		return err
	}
	defer locks.Close()
	connect(ctx, clients)
	if cfg.bootstrap {
		if err := locks.Bootstrap(ctx); err != nil {
			fmt.Fprintf(cfg.stderr, "quorumlock: bootstrap declared nothing: it did not reach a majority%s\n",
				nodeErrors(redlockNodeErrors(err), newNodeDiag(clients)))
		}
	}
	eopts := []redlock.ElectionOption{redlock.WithTTL(cfg.ttl), redlock.WithValue([]byte(cfg.value))}
	if cfg.identity != "" {
		eopts = append(eopts, redlock.WithIdentity(cfg.identity))
	}
	for _, o := range cfg.lockOpts {
		eopts = append(eopts, o)
	}
	e := locks.Election(cfg.key, eopts...)

	w := &watcher{e: e, stderr: cfg.stderr}
	octx, stopWatch := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { w.watch(octx) })
	defer func() {
		stopWatch()
		wg.Wait()
	}()

	for {
		term, err := e.Campaign(ctx)
		if err != nil {
			if sig, ok := asSignal(context.Cause(ctx)); ok {
				return &exitError{code: 128 + int(sig), err: fmt.Errorf("%s while waiting to lead %q", (&signalError{sig: sig}).Error(), cfg.key)}
			}
			if ctx.Err() != nil {
				return fmt.Errorf("election %q: %w", cfg.key, context.Cause(ctx))
			}
			return err
		}
		w.setLeading(term.Fence())
		again, err := lead(ctx, &cfg, e, term)
		w.setLeading(0)
		if !again {
			return err
		}
	}
}

// lead runs the command under term. again says whether to campaign again
// (the term was lost); otherwise err is elect's result.
func lead(ctx context.Context, cfg *electConfig, e *redlock.Election, term *redlock.Term) (again bool, err error) {
	resign := func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = term.Resign(rctx) // ErrNotHeld when the term was already over
	}
	if ctx.Err() != nil { // a signal before the command started: it does not
		resign()
		return false, interruptedElect(ctx, cfg)
	}
	fmt.Fprintf(cfg.stderr, "quorumlock: leading %q as %s (term %d); starting %s\n", cfg.key, e.Identity(), term.Fence(), cfg.argv[0])
	cmd := exec.Command(cfg.argv[0], cfg.argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = cfg.stdin, cfg.stdout, cfg.stderr
	cmd.Env = append(os.Environ(), "QUORUMLOCK_KEY="+cfg.key,
		"QUORUMLOCK_FENCE="+strconv.FormatUint(term.Fence(), 10), "QUORUMLOCK_IDENTITY="+e.Identity())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = cfg.grace + time.Second
	if err := cmd.Start(); err != nil {
		resign()
		code := exitCannotRun
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = exitNotFound
		}
		return false, &exitError{code: code, err: err}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	group := func(sig syscall.Signal) { _ = syscall.Kill(-cmd.Process.Pid, sig) }
	var kill <-chan time.Time
	stop := func() {
		group(syscall.SIGTERM)
		t := time.NewTimer(cfg.grace)
		kill = t.C
	}
	cancelled, termDone := ctx.Done(), term.Done()
	lost, interrupted := false, false
	for {
		select {
		case werr := <-exited:
			switch {
			case interrupted:
				resign()
				return false, interruptedElect(ctx, cfg)
			case lost:
				fmt.Fprintf(cfg.stderr, "quorumlock: %s stopped; campaigning again\n", cfg.argv[0])
				return true, nil
			}
			resign()
			fmt.Fprintf(cfg.stderr, "quorumlock: %s exited; resigned the leadership of %q\n", cfg.argv[0], cfg.key)
			return false, childStatus(cfg.argv[0], werr)
		case <-cancelled:
			cancelled = nil
			interrupted = true
			if kill == nil {
				stop() // the term stays held until the command has exited
			}
		case <-termDone:
			termDone = nil
			if interrupted {
				continue // already stopping
			}
			lost = true
			stop()
			fmt.Fprintf(cfg.stderr, "quorumlock: term %d of %q ended: %v; sent SIGTERM to %s (pid %d), SIGKILL in %v\n",
				term.Fence(), cfg.key, term.Err(), cfg.argv[0], cmd.Process.Pid, cfg.grace)
		case <-kill:
			kill = nil
			fmt.Fprintf(cfg.stderr, "quorumlock: %s (pid %d) still running %v after SIGTERM; sending SIGKILL\n",
				cfg.argv[0], cmd.Process.Pid, cfg.grace)
			group(syscall.SIGKILL)
		}
	}
}

// interruptedElect is elect's error when ctx ended: 128+N for signal N.
func interruptedElect(ctx context.Context, cfg *electConfig) error {
	if sig, ok := asSignal(context.Cause(ctx)); ok {
		return &exitError{code: 128 + int(sig), err: fmt.Errorf("%s; resigned the leadership of %q", (&signalError{sig: sig}).Error(), cfg.key)}
	}
	return fmt.Errorf("election %q: %w", cfg.key, context.Cause(ctx))
}

// watcher prints who leads, while this process does not.
type watcher struct {
	e      *redlock.Election
	stderr io.Writer

	mu      sync.Mutex
	leading uint64 // this process's term, 0 while it does not lead
	shown   redlock.Leader
	any     bool // shown is set
	latest  redlock.Leader
}

func (w *watcher) setLeading(fence uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.leading = fence
	if fence == 0 {
		w.showLocked()
	}
}

func (w *watcher) watch(ctx context.Context) {
	for l := range w.e.Observe(ctx) {
		w.mu.Lock()
		w.latest = l
		w.showLocked()
		w.mu.Unlock()
	}
}

// showLocked prints the latest leader when it changed and is not us.
func (w *watcher) showLocked() {
	l := w.latest
	if w.leading != 0 || (l.Identity == w.e.Identity() && l.Fence != 0) {
		return
	}
	if w.any && w.shown.Identity == l.Identity && w.shown.Fence == l.Fence {
		return
	}
	w.shown, w.any = l, true
	if l.IsZero() {
		fmt.Fprintf(w.stderr, "quorumlock: waiting: no leader of %q\n", w.e.Name())
		return
	}
	fmt.Fprintf(w.stderr, "quorumlock: waiting: leader is %s (term %d)\n", l.Identity, l.Fence)
}
