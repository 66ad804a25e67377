//go:build unix

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/quorumlock/quorumlock/redlock"
)

// Exit statuses of `quorumlock run` besides the command's own.
const (
	// exitNotObtained: the lock was taken (--no-wait) or --wait ran out.
	// EX_TEMPFAIL from sysexits.h: try again later.
	exitNotObtained = 75
	// exitLockLost: the lock was lost while the command ran, and the command
	// was terminated. EX_UNAVAILABLE: the service the job relied on went away.
	exitLockLost = 69
	// exitCannotRun and exitNotFound follow the shell's convention.
	exitCannotRun = 126
	exitNotFound  = 127
)

func init() { subcommands = append(subcommands, newRunCmd) }

// runConfig is what `run` needs; the command fills it from flags, tests
// directly.
type runConfig struct {
	nodes     []string
	tls       tlsFiles
	key       string
	ttl       time.Duration
	wait      time.Duration // 0: wait until interrupted
	noWait    bool
	fencing   bool
	grace     time.Duration
	maxHold   time.Duration
	bootstrap bool
	argv      []string

	stdin          io.Reader
	stdout, stderr io.Writer

	// extra options, for the client and each acquisition, after those from
	// flags (tests lengthen the node timeout, turn off auto-extension).
	lockOpts []redlock.LockOption
}

func newRunCmd() *cobra.Command {
	cfg := runConfig{}
	var nodes *nodeFlags
	c := &cobra.Command{
		Use:   "run --nodes URL,URL,URL --key KEY [flags] -- COMMAND [ARG...]",
		Short: "Run a command while holding a Redlock lock, so that it runs on one host at a time",
		Long: `Run acquires the lock KEY on a majority of the Redis masters given by --nodes,
runs COMMAND while extending the lock, and releases it when COMMAND exits.

COMMAND gets QUORUMLOCK_KEY and QUORUMLOCK_TOKEN (the lock's random value) in
its environment, and QUORUMLOCK_FENCE with --fencing: a number larger than that
of every earlier holder of KEY, to hand to storage that checks it.

COMMAND runs in its own process group. If the lock is lost while it runs (a
majority of nodes no longer holds it, or it could not be extended in time),
the group gets SIGTERM, then SIGKILL after --grace. SIGINT and SIGTERM sent
to quorumlock are passed on to the group; the lock stays held until COMMAND
has exited.

Exit status: COMMAND's own when it ran to completion (128+N when signal N
killed it); 75 when the lock was not obtained (taken with --no-wait, or
--wait ran out); 69 when the lock was lost and COMMAND was terminated;
126 when COMMAND could not be started, 127 when it was not found; 1 for
other errors.

` + nodesHelp,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if c.ArgsLenAtDash() > 0 {
				return fmt.Errorf("unexpected arguments %q before --: put the command after --", args[:c.ArgsLenAtDash()])
			}
			var err error
			if cfg.nodes, cfg.tls, err = nodes.resolve(); err != nil {
				return err
			}
			cfg.argv = args
			cfg.stdin, cfg.stdout, cfg.stderr = c.InOrStdin(), c.OutOrStdout(), c.ErrOrStderr()
			return runLocked(c.Context(), cfg)
		},
	}
	f := c.Flags()
	nodes = addNodesFlag(f)
	f.StringVar(&cfg.key, "key", "", "lock key (required); the same key on every host that runs the job")
	f.DurationVar(&cfg.ttl, "ttl", redlock.DefaultTTL, "lock TTL: how long the nodes keep the lock if this process dies; it is extended while COMMAND runs")
	f.DurationVar(&cfg.wait, "wait", 0, "give up (exit 75) when the lock is not obtained within this time; 0 waits until interrupted")
	f.BoolVar(&cfg.noWait, "no-wait", false, "make one attempt; exit 75 at once when the lock is taken")
	f.BoolVar(&cfg.fencing, "fencing", false, "obtain a fence token and pass it as QUORUMLOCK_FENCE")
	f.DurationVar(&cfg.grace, "grace", 10*time.Second, "after a lost lock, time between SIGTERM and SIGKILL")
	f.DurationVar(&cfg.maxHold, "max-hold", 0, "stop extending the lock after this time (COMMAND is then terminated); 0: no limit")
	f.BoolVar(&cfg.bootstrap, "bootstrap", false, "declare the nodes freshly deployed, so they vote without a restart quarantine; only for nodes that never held a lock")
	c.MarkFlagsMutuallyExclusive("wait", "no-wait")
	return c
}

// runLocked acquires the lock, runs the command under it and releases it.
func runLocked(ctx context.Context, cfg runConfig) error {
	if err := cfg.check(); err != nil {
		return err
	}
	clients, err := openNodesTLS(cfg.nodes, cfg.tls)
	if err != nil {
		return err
	}
	defer closeNodes(clients)
	nodes := make([]redis.UniversalClient, len(clients))
	for i, c := range clients {
		nodes[i] = c
	}
	opts := []redlock.Option{redlock.WithTTL(cfg.ttl)}
	for _, o := range cfg.lockOpts {
		opts = append(opts, o)
	}
	locks, err := redlock.New(nodes, opts...)
	if err != nil {
		return err
	}
	defer locks.Close()

	connect(ctx, clients, cfg.stderr)
	if cfg.bootstrap {
		// A minority may be down; the acquisition decides whether enough
		// nodes are left.
		if err := locks.Bootstrap(ctx); err != nil {
			fmt.Fprintf(cfg.stderr, "quorumlock: bootstrap: %v\n", err)
		}
	}

	l, err := cfg.acquire(ctx, locks)
	if err != nil {
		return err
	}
	defer func() {
		// Also after an interrupt: the key must not outlive the command.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if rerr := l.Release(rctx); rerr != nil && l.Err() == redlock.ErrReleased {
			fmt.Fprintf(cfg.stderr, "quorumlock: release: %v\n", rerr)
		}
	}()
	return cfg.supervise(ctx, l)
}

// connectTimeout bounds the first contact with each node.
const connectTimeout = 5 * time.Second

// connect opens a connection to every node before the lock is requested:
// the per-node timeout of an attempt (tens of milliseconds) is too short
// for a cold dial with AUTH and HELLO on a busy host, and with --no-wait
// there is only one attempt. A node that does not answer is reported; the
// acquisition then decides whether enough are left.
func connect(ctx context.Context, clients []*redis.Client, stderr io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { errs[i] = c.Ping(ctx).Err() })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			fmt.Fprintf(stderr, "quorumlock: node %d (%s): %v\n", i, clients[i].Options().Addr, err)
		}
	}
}

func (cfg *runConfig) check() error {
	switch {
	case cfg.key == "":
		return errors.New("--key is empty: give the lock key")
	case len(cfg.argv) == 0:
		return errors.New("no command: give it after --, e.g. quorumlock run --key KEY -- ./job.sh")
	case cfg.argv[0] == "":
		return errors.New("the command name is empty")
	case cfg.ttl <= 0:
		return fmt.Errorf("--ttl %v must be positive", cfg.ttl)
	case cfg.wait < 0:
		return fmt.Errorf("--wait %v must not be negative", cfg.wait)
	case cfg.grace < 0:
		return fmt.Errorf("--grace %v must not be negative", cfg.grace)
	case cfg.maxHold < 0:
		return fmt.Errorf("--max-hold %v must not be negative", cfg.maxHold)
	case cfg.noWait && cfg.wait > 0:
		return errors.New("--wait and --no-wait exclude each other")
	}
	return nil
}

// acquire obtains the lock, turning "not obtained" into exit status 75.
func (cfg *runConfig) acquire(ctx context.Context, locks *redlock.Client) (*redlock.Lock, error) {
	opts := append([]redlock.LockOption{
		redlock.WithAutoExtend(true),
		redlock.WithFencing(cfg.fencing),
		redlock.WithMaxHold(cfg.maxHold),
	}, cfg.lockOpts...)
	var l *redlock.Lock
	var err error
	if cfg.noWait {
		l, err = locks.TryAcquire(ctx, cfg.key, opts...)
	} else {
		actx := ctx
		if cfg.wait > 0 {
			var cancel context.CancelFunc
			actx, cancel = context.WithTimeout(ctx, cfg.wait)
			defer cancel()
		}
		l, err = locks.Acquire(actx, cfg.key, opts...)
	}
	if err == nil {
		// Acquire stores the lock's queue hand-off after the extender
		// goroutine has started, without the lock's mutex; Until takes that
		// mutex, which orders the store before the extender's next use of
		// it (an otherwise reported data race when the lock is lost).
		_ = l.Until()
		return l, nil
	}
	var re *redlock.RoundError
	if !errors.As(err, &re) {
		return nil, err
	}
	var why string
	switch {
	case ctx.Err() != nil:
		return nil, fmt.Errorf("interrupted while waiting for lock %q: %w", cfg.key, err)
	case errors.Is(err, context.DeadlineExceeded) && cfg.wait > 0:
		// The last attempt was cut short, so its votes tell little.
		why = fmt.Sprintf("not obtained within --wait %v", cfg.wait)
	case quarantined(re):
		why = "nodes in restart quarantine (for freshly deployed nodes only: --bootstrap)"
	case errors.Is(err, redlock.ErrTaken):
		why = "held by another owner"
	default:
		why = "not obtained"
	}
	return nil, &exitError{code: exitNotObtained, err: fmt.Errorf("lock %q %s: %w", cfg.key, why, err)}
}

// supervise runs the command and waits for it, terminating it when the lock
// is lost and passing on the signals quorumlock receives.
func (cfg *runConfig) supervise(ctx context.Context, l *redlock.Lock) error {
	cmd := exec.Command(cfg.argv[0], cfg.argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = cfg.stdin, cfg.stdout, cfg.stderr
	cmd.Env = append(os.Environ(), "QUORUMLOCK_KEY="+l.Key(), "QUORUMLOCK_TOKEN="+l.Token())
	if cfg.fencing {
		cmd.Env = append(cmd.Env, "QUORUMLOCK_FENCE="+strconv.FormatUint(l.Fence(), 10))
	}
	// Its own group, so that a lost lock stops the job's children too and not
	// only the shell that started them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Children that keep the output pipes open must not hold up Wait for long.
	cmd.WaitDelay = cfg.grace + time.Second

	// Registered before the start so that no signal falls between the two.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	if err := cmd.Start(); err != nil {
		code := exitCannotRun
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = exitNotFound
		}
		return &exitError{code: code, err: err}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	group := func(sig syscall.Signal) { _ = syscall.Kill(-cmd.Process.Pid, sig) }
	interrupted := ctx.Done()
	lockDone := l.Done()
	var lost error
	var kill, cancelled <-chan time.Time
	forwarded := false
	for {
		select {
		case err := <-exited:
			if lost != nil {
				return &exitError{code: exitLockLost, err: fmt.Errorf("%s terminated: %w", cfg.argv[0], lost)}
			}
			if lerr := l.Err(); lerr != nil && lerr != redlock.ErrReleased {
				// Lost as the command exited, not known which came first:
				// the command's status stands, the operator hears of it.
				fmt.Fprintf(cfg.stderr, "quorumlock: %v, as %s exited\n", lerr, cfg.argv[0])
			}
			return childStatus(cfg.argv[0], err)
		case sig := <-sigs:
			forwarded = true
			group(sig.(syscall.Signal))
		case <-interrupted:
			// The root command's context ends on SIGINT/SIGTERM, which sigs
			// passes on as they are; the same signal may reach sigs a moment
			// after the context. Any other cancellation ends the command with
			// SIGTERM.
			interrupted = nil
			cancelled = time.After(100 * time.Millisecond)
		case <-cancelled:
			cancelled = nil
			if !forwarded {
				group(syscall.SIGTERM)
			}
		case <-lockDone:
			lockDone = nil
			if err := l.Err(); err == redlock.ErrReleased {
				continue
			}
			lost = l.Err()
			fmt.Fprintf(cfg.stderr, "quorumlock: %v; sending SIGTERM to %s (pid %d), SIGKILL in %v\n",
				lost, cfg.argv[0], cmd.Process.Pid, cfg.grace)
			group(syscall.SIGTERM)
			t := time.NewTimer(cfg.grace)
			defer t.Stop()
			kill = t.C
		case <-kill:
			kill = nil
			fmt.Fprintf(cfg.stderr, "quorumlock: %s (pid %d) still running %v after SIGTERM; sending SIGKILL\n",
				cfg.argv[0], cmd.Process.Pid, cfg.grace)
			group(syscall.SIGKILL)
		}
	}
}

// childStatus turns the command's end into quorumlock's exit: nil for
// success, the same status otherwise (128+N for death by signal N, as a
// shell reports it).
func childStatus(name string, err error) error {
	if err == nil {
		return nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return &exitError{code: 128 + int(ws.Signal()), err: fmt.Errorf("%s: %w", name, err)}
	}
	return &exitError{code: ee.ExitCode(), err: fmt.Errorf("%s: %w", name, err)}
}

// quarantined reports whether some node refused for its restart quarantine.
func quarantined(re *redlock.RoundError) bool {
	for _, n := range re.Nodes {
		if n.Reason == redlock.NodeQuarantined {
			return true
		}
	}
	return false
}
