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
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/quorumlock/quorumlock/redlock"
)

func init() { subcommands = append(subcommands, newRunCmd) }

// runConfig is what `run` needs; the command fills it from flags, tests
// directly.
type runConfig struct {
	command
	key       string
	ttl       time.Duration
	wait      time.Duration // 0: wait until interrupted
	noWait    bool
	fencing   bool
	grace     time.Duration
	maxHold   time.Duration
	bootstrap bool
	// metricsAddr, when set, is where the lock's metrics are served.
	metricsAddr string

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

While it waits for the lock, run prints one line saying why (held by whom and
for how long; nodes unreachable, in restart quarantine or with a skewed
clock), one more when that changes, and one when it gets the lock. Nodes are
numbered from 0 in the order of --nodes.

Exit status (sysexits.h names in brackets):
  COMMAND's    COMMAND ran to completion (128+N when signal N killed it)
  75           the lock is held by someone else: with --no-wait, or when
               --wait ran out while it was (EX_TEMPFAIL: try again later)
  69           the lock service is unavailable: too few nodes can vote
               (unreachable, in restart quarantine, clock skewed, too slow
               for the TTL): with --no-wait, or when --wait ran out while it
               was (EX_UNAVAILABLE)
  77           the lock was lost while COMMAND ran; COMMAND was terminated
               and may have done part of its work (EX_NOPERM: its
               permission to run was withdrawn)
  130, 143     interrupted by SIGINT, SIGTERM while waiting for the lock
  126, 127     COMMAND could not be started, was not found
  1            other errors (flags, node URLs)
COMMAND's own status may be any of these numbers too; quorumlock's last line
on stderr says which it was.

` + nodesHelp,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if err := cfg.fromArgs(c, args, nodes); err != nil {
				return err
			}
			return runLocked(c.Context(), cfg)
		},
	}
	f := c.Flags()
	nodes = addNodesFlag(f)
	f.StringVar(&cfg.key, "key", "", "lock key (required); the same key on every host that runs the job")
	f.DurationVar(&cfg.ttl, "ttl", redlock.DefaultTTL, "lock TTL: how long the nodes keep the lock if this process dies; it is extended while COMMAND runs")
	f.DurationVar(&cfg.wait, "wait", 0, "give up (exit 75 or 69) when the lock is not obtained within this time; 0 waits until interrupted")
	f.BoolVar(&cfg.noWait, "no-wait", false, "make one attempt; exit at once with 75 when the lock is taken, 69 when the lock service is unavailable")
	f.BoolVar(&cfg.fencing, "fencing", false, "obtain a fence token and pass it as QUORUMLOCK_FENCE")
	f.DurationVar(&cfg.grace, "grace", 10*time.Second, "after a lost lock, time between SIGTERM and SIGKILL")
	f.DurationVar(&cfg.maxHold, "max-hold", 0, "stop extending the lock after this time (COMMAND is then terminated); 0: no limit")
	f.BoolVar(&cfg.bootstrap, "bootstrap", false, bootstrapHelp)
	f.StringVar(&cfg.metricsAddr, "metrics-addr", "", metricsAddrHelp)
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
	// From here on SIGINT and SIGTERM are this run's: they end a wait, or
	// are passed on to the command.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	r := &runner{cfg: &cfg, clients: clients, diag: newNodeDiag(clients), sigs: sigs}
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
	for _, o := range cfg.lockOpts {
		opts = append(opts, o)
	}
	r.locks, err = redlock.New(nodes, opts...)
	if err != nil {
		return err
	}
	defer r.locks.Close()

	down := connect(ctx, clients)
	if cfg.bootstrap {
		// A minority may be down; the acquisition decides whether enough
		// nodes are left.
		if err := r.locks.Bootstrap(ctx); err != nil {
			fmt.Fprintf(cfg.stderr, "quorumlock: bootstrap declared nothing: it did not reach a majority%s\n", nodeErrors(redlockNodeErrors(err), r.diag))
		}
	}

	l, err := r.acquire(ctx)
	if err != nil {
		return err
	}
	defer func() {
		// Also after an interrupt: the key must not outlive the command.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if rerr := l.Release(rctx); rerr != nil && errors.Is(l.Err(), redlock.ErrReleased) {
			fmt.Fprintf(cfg.stderr, "quorumlock: lock %q released on too few nodes%s; it expires on the others within %v\n",
				cfg.key, nodeErrors(redlockNodeErrors(rerr), r.diag), cfg.ttl)
		}
	}()
	if !r.waited {
		for i, err := range down {
			if err != nil {
				fmt.Fprintf(cfg.stderr, "quorumlock: warning: node %d (%s) did not answer (%s); the lock is held on a majority without it\n",
					i, clients[i].Options().Addr, r.diag.explain(i, err))
			}
		}
	}
	return r.supervise(ctx, l)
}

// warnFewNodes warns that one or two nodes give up what Redlock is for.
func warnFewNodes(w io.Writer, n int) {
	switch n {
	case 1:
		fmt.Fprintln(w, "quorumlock: warning: 1 node is not Redlock: the lock is lost when it restarts without its data or fails over, and unavailable while it is down; use 3 or more independent masters")
	case 2:
		fmt.Fprintln(w, "quorumlock: warning: with 2 nodes a majority is both: either one down makes the lock unavailable; 3 nodes tolerate one failure, 5 tolerate two")
	}
}

// runner is one `run`: its nodes, its client and its signals.
type runner struct {
	cfg     *runConfig
	clients []*redis.Client
	diag    *nodeDiag
	locks   *redlock.Client
	sigs    chan os.Signal
	// waited is set once the wait was reported: the operator has seen the
	// state of the nodes.
	waited bool
}

// connectTimeout bounds the first contact with each node.
const connectTimeout = 5 * time.Second

// connect opens a connection to every node before the lock is requested:
// the per-node timeout of an attempt (tens of milliseconds) is too short
// for a cold dial with AUTH and HELLO on a busy host, and with --no-wait
// there is only one attempt. It returns each node's error; the acquisition
// decides whether enough nodes are left.
func connect(ctx context.Context, clients []*redis.Client) []error {
	ctx, cancel := context.WithTimeout(ctx, connectTimeout)
	defer cancel()
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() { errs[i] = c.Ping(ctx).Err() })
	}
	wg.Wait()
	return errs
}

func (cfg *runConfig) check() error {
	if cfg.key == "" {
		return errors.New("--key is empty: give the lock key")
	}
	if err := cfg.command.check("quorumlock run --key KEY -- ./job.sh"); err != nil {
		return err
	}
	switch {
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

// errWaitRanOut is the cause of the acquisition's context when --wait ends it.
var errWaitRanOut = errors.New("--wait ran out")

// acquire obtains the lock: one attempt, and with --no-wait that is all; a
// wait otherwise (see wait). A lock not obtained is an exitError with the
// status of its reason.
func (r *runner) acquire(ctx context.Context) (*redlock.Lock, error) {
	cfg := r.cfg
	opts := append([]redlock.LockOption{
		redlock.WithAutoExtend(true),
		redlock.WithFencing(cfg.fencing),
		redlock.WithMaxHold(cfg.maxHold),
	}, cfg.lockOpts...)
	l, err := r.locks.TryAcquire(ctx, cfg.key, opts...)
	if err == nil {
		return l, nil
	}
	if sig, ok := r.interrupted(ctx); ok {
		return nil, r.interruptedErr(sig)
	}
	if ctx.Err() != nil {
		return nil, fmt.Errorf("lock %q not obtained: %w", cfg.key, context.Cause(ctx))
	}
	b, ok := classify(err, len(r.clients))
	if !ok {
		return nil, err
	}
	r.complete(ctx, b)
	if cfg.noWait {
		return nil, &exitError{code: b.exitCode(), err: &reported{
			msg:   fmt.Sprintf("lock %q not obtained: %s", cfg.key, b.describe(r.diag)),
			cause: err,
		}}
	}
	return r.wait(ctx, b, opts)
}

// wait blocks in Acquire until the lock is held, --wait runs out or a
// signal arrives. It says once why it waits (first, from the attempt that
// failed), and again whenever reads of the nodes find another reason or
// holder; not at every retry.
func (r *runner) wait(ctx context.Context, first *blockage, opts []redlock.LockOption) (*redlock.Lock, error) {
	cfg := r.cfg
	start := time.Now()
	fmt.Fprintf(cfg.stderr, "quorumlock: waiting for lock %q: %s\n", cfg.key, first.describe(r.diag))
	r.waited = true
	last, seen := first, first.signature()
	candidate := "" // a new state seen by one read, to be confirmed by the next

	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if cfg.wait > 0 {
		var stop context.CancelFunc
		actx, stop = context.WithTimeoutCause(actx, cfg.wait, errWaitRanOut)
		defer stop()
	}
	type acquired struct {
		l   *redlock.Lock
		err error
	}
	res := make(chan acquired, 1)
	go func() {
		l, err := r.locks.Acquire(actx, cfg.key, opts...)
		res <- acquired{l, err}
	}()

	tick := time.NewTicker(watchEvery(cfg.ttl))
	defer tick.Stop()
	var snap chan *blockage // the read in flight, if any
	defer func() {
		if snap != nil {
			<-snap
		}
	}()
	var sig syscall.Signal
	for {
		select {
		case a := <-res:
			if a.err == nil && sig == 0 {
				fmt.Fprintf(cfg.stderr, "quorumlock: lock %q obtained after waiting %v\n", cfg.key, time.Since(start).Round(100*time.Millisecond))
				return a.l, nil
			}
			if a.err == nil { // the signal came first
				_ = a.l.Release(context.WithoutCancel(ctx))
			}
			if s, ok := r.interrupted(actx); ok || sig != 0 {
				if !ok {
					s = sig
				}
				return nil, r.interruptedErr(s)
			}
			if errors.Is(context.Cause(actx), errWaitRanOut) {
				b := r.lastWord(ctx, a.err, last)
				return nil, &exitError{code: b.exitCode(), err: &reported{
					msg:   fmt.Sprintf("lock %q not obtained within --wait %v: %s", cfg.key, cfg.wait, b.summary()),
					cause: a.err,
				}}
			}
			if ctx.Err() != nil {
				return nil, fmt.Errorf("lock %q not obtained: %w", cfg.key, context.Cause(ctx))
			}
			if b, ok := classify(a.err, len(r.clients)); ok {
				return nil, &exitError{code: b.exitCode(), err: &reported{
					msg:   fmt.Sprintf("lock %q not obtained: %s", cfg.key, b.describe(r.diag)),
					cause: a.err,
				}}
			}
			return nil, a.err
		case s := <-r.sigs:
			if sig == 0 {
				sig = toSignal(s)
				cancel(&signalError{sig: sig})
			}
		case <-tick.C:
			if snap == nil {
				snap = make(chan *blockage, 1)
				go func(out chan<- *blockage) { out <- r.observe(actx) }(snap)
			}
		case b := <-snap:
			snap = nil
			if b == nil || !b.blocks() {
				candidate = ""
				continue // free, or about to be: the attempt decides
			}
			// A change counts once two reads in a row agree on it, so that
			// a blip (one read that stalled on a busy host) is not news.
			switch sgn := b.signature(); {
			case sgn == seen:
				candidate = ""
			case sgn != candidate:
				candidate = sgn
			default:
				fmt.Fprintf(cfg.stderr, "quorumlock: still waiting for lock %q after %v: %s\n",
					cfg.key, time.Since(start).Round(time.Second), b.describe(r.diag))
				last, seen, candidate = b, sgn, ""
			}
		}
	}
}

// lastWord is the reason a wait that ran out reports: that of Acquire's
// last attempt when it can be trusted, or the last one seen. The end of the
// wait can cut an attempt short, and its votes then fail with the deadline;
// refusals by other owners, the quarantine or the skew guard are answers.
func (r *runner) lastWord(ctx context.Context, err error, last *blockage) *blockage {
	b, ok := classify(err, len(r.clients))
	switch {
	case !ok || b.failed():
		return last
	case b.why == whyTaken && last.why == whyTaken:
		return last // it knows the holder's token
	default:
		r.complete(ctx, b)
	}
	return b
}

// watchEvery is how often a waiting run reads the nodes' state.
func watchEvery(ttl time.Duration) time.Duration {
	return min(max(ttl/4, 250*time.Millisecond), 5*time.Second)
}

// observe reads the nodes' state of the key (Client.Inspect: the holder,
// the quarantine and the skew as the votes judge them): why the lock would
// not be ours now; nil when the wait has ended meanwhile.
func (r *runner) observe(ctx context.Context) *blockage {
	states := r.read(ctx)
	if states == nil || ctx.Err() != nil {
		return nil
	}
	return fromStates(states, r.locks.Quorum(), r.cfg.ttl/10)
}

// read is Client.Inspect of the key; nil when ctx ended.
func (r *runner) read(ctx context.Context) []redlock.NodeState {
	states, err := r.locks.Inspect(ctx, r.cfg.key)
	if err != nil {
		return nil
	}
	return states
}

// complete adds to a blockage from a round what a read of the nodes shows:
// the round stopped listening once its outcome was decided, so it may lack
// some nodes' state, and it does not learn the holders' tokens. Nodes the
// round did not list and the read finds unable to vote are added; for a
// taken lock, the holders come from the read.
func (r *runner) complete(ctx context.Context, b *blockage) {
	states := r.read(ctx)
	if states == nil {
		return
	}
	listed := map[int]bool{}
	if b.why == whyTaken {
		b.nodes = slices.DeleteFunc(b.nodes, func(p nodeProblem) bool { return p.kind == nodeTaken })
	}
	for _, p := range b.nodes {
		listed[p.node] = true
	}
	for _, p := range fromStates(states, b.needed, r.cfg.ttl/10).nodes {
		if !listed[p.node] && p.kind != nodeTaken {
			b.nodes = append(b.nodes, p)
		}
	}
	if b.why == whyTaken {
		for _, st := range states {
			if st.Err == nil && st.Holder != "" && !listed[st.Node] {
				wait := st.TTL
				if wait <= 0 {
					wait = -1
				}
				b.nodes = append(b.nodes, nodeProblem{node: st.Node, addr: st.Addr, kind: nodeTaken, token: st.Holder, wait: wait})
			}
		}
	}
	slices.SortFunc(b.nodes, func(x, y nodeProblem) int { return x.node - y.node })
	b.quarantineHint = b.onlyQuarantine()
}

// lost describes the end of l without a release, with a read of the nodes
// made now.
func (r *runner) lost(ctx context.Context, l *redlock.Lock, acquired time.Time) loss {
	cfg := r.cfg
	// The keep-alive stops short of --max-hold: the next extension would
	// have passed it.
	maxHold := cfg.maxHold > 0 && time.Since(acquired)+cfg.ttl >= cfg.maxHold
	return loss{key: cfg.key, err: l.Err(), maxHold: maxHold, token: l.Token(), states: r.read(context.WithoutCancel(ctx))}
}

// interrupted reports the signal that ended the wait: received here, or
// the cause of ctx (the process's signal context).
func (r *runner) interrupted(ctx context.Context) (syscall.Signal, bool) {
	select {
	case s := <-r.sigs:
		return toSignal(s), true
	default:
	}
	return asSignal(context.Cause(ctx))
}

func (r *runner) interruptedErr(sig syscall.Signal) error {
	return &exitError{code: 128 + int(sig), err: fmt.Errorf("%s while waiting for lock %q", (&signalError{sig: sig}).Error(), r.cfg.key)}
}

// supervise runs the command and waits for it, terminating it when the lock
// is lost and passing on the signals quorumlock receives.
func (r *runner) supervise(ctx context.Context, l *redlock.Lock) error {
	cfg := r.cfg
	if sig, ok := r.interrupted(ctx); ok {
		return r.interruptedErr(sig) // before the command started: it does not
	}
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

	if err := cmd.Start(); err != nil {
		code := exitCannotRun
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			code = exitNotFound
		}
		return &exitError{code: code, err: err}
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	acquired := time.Now() // for --max-hold, measured as the keep-alive does, from about now
	group := func(sig syscall.Signal) { _ = syscall.Kill(-cmd.Process.Pid, sig) }
	cancelled := ctx.Done()
	lockDone := l.Done()
	lost := false // reported on stderr when it happened
	var kill <-chan time.Time
	for {
		select {
		case err := <-exited:
			if lost {
				return &exitError{code: exitLockLost, err: &reported{
					msg:   fmt.Sprintf("lock %q lost while %s ran; it was terminated", cfg.key, cfg.argv[0]),
					cause: l.Err(),
				}}
			}
			if lerr := l.Err(); lerr != nil && !errors.Is(lerr, redlock.ErrReleased) {
				// Lost as the command exited, not known which came first:
				// the command's status stands, the operator hears of it.
				fmt.Fprintf(cfg.stderr, "quorumlock: %s, as %s exited\n", r.lost(ctx, l, acquired).describe(r.diag), cfg.argv[0])
			}
			return childStatus(cfg.argv[0], err)
		case s := <-r.sigs:
			group(toSignal(s))
		case <-cancelled:
			cancelled = nil
			// A signal that ended ctx also reached r.sigs (registered
			// before the acquisition) and is passed on there. Any other
			// end of ctx ends the command with SIGTERM.
			if _, ok := asSignal(context.Cause(ctx)); !ok {
				group(syscall.SIGTERM)
			}
		case <-lockDone:
			lockDone = nil
			if errors.Is(l.Err(), redlock.ErrReleased) {
				continue
			}
			lost = true
			// SIGTERM first: the read of the nodes for the message can take
			// a node timeout.
			group(syscall.SIGTERM)
			fmt.Fprintf(cfg.stderr, "quorumlock: %s; sent SIGTERM to %s (pid %d), SIGKILL in %v\n",
				r.lost(ctx, l, acquired).describe(r.diag), cfg.argv[0], cmd.Process.Pid, cfg.grace)
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
