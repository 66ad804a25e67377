//go:build unix

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/quorumlock/quorumlock/redlock"
)

func init() { subcommands = append(subcommands, newBootstrapCmd) }

// bootstrapConfig is what `bootstrap` needs; the command fills it from
// flags, tests directly.
type bootstrapConfig struct {
	nodes []string
	tls   tlsFiles
	ttl   time.Duration // the clients' TTL, which is their restart quarantine
	out   io.Writer
}

func newBootstrapCmd() *cobra.Command {
	cfg := bootstrapConfig{}
	var nodes *nodeFlags
	c := &cobra.Command{
		Use:   "bootstrap --nodes URL,URL,URL [--ttl TTL]",
		Short: "Declare freshly deployed nodes, so that they vote without serving a restart quarantine first",
		Long: `Bootstrap declares a freshly deployed set of Redis masters, so that they vote
at once instead of after a restart quarantine of one TTL (a node with no record
of when its data began cannot tell "new" from "just lost its data", and waits).

It never shortens a quarantine: it declares the nodes only when none of them
has been in service (data older than the quarantine). When some node has, a
node with young or missing data restarted or lost it, and keeps its
quarantine. So it is safe to run on every start. Its one blind spot: a
majority that lost its data at the same moment looks like a new deployment.

It prints, for each node, what it found and did: declared fresh, in service
already, kept in its restart quarantine, or did not answer.

Exit status:
  0    done: the nodes that could be declared were (see each node's line)
  69   fewer than a majority of nodes answered: nothing was declared, since
       a restarted minority cannot be told from a fresh deployment
       (EX_UNAVAILABLE)
  1    other errors (flags, node URLs)

` + nodesHelp,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			var err error
			if cfg.nodes, cfg.tls, err = nodes.resolve(); err != nil {
				return err
			}
			cfg.out = c.OutOrStdout()
			return bootstrap(c.Context(), cfg)
		},
	}
	f := c.Flags()
	nodes = addNodesFlag(f)
	f.DurationVar(&cfg.ttl, "ttl", redlock.DefaultTTL, "the TTL the clients use (run --ttl): a node is in service once its data is that old")
	return c
}

// bootstrapProbeKey is the key whose state Inspect reads around Bootstrap;
// only the nodes' state matters here.
const bootstrapProbeKey = redlock.KeyPrefix + "bootstrap"

// bootstrap runs Client.Bootstrap on the nodes and says what became of
// each, from their state before and after.
func bootstrap(ctx context.Context, cfg bootstrapConfig) error {
	if cfg.ttl <= 0 {
		return fmt.Errorf("--ttl %v must be positive", cfg.ttl)
	}
	clients, err := openNodesTLS(cfg.nodes, cfg.tls)
	if err != nil {
		return err
	}
	defer closeNodes(clients)
	diag := newNodeDiag(clients)
	nodes := make([]redis.UniversalClient, len(clients))
	for i, c := range clients {
		nodes[i] = c
	}
	locks, err := redlock.New(nodes, redlock.WithTTL(cfg.ttl))
	if err != nil {
		return err
	}
	defer locks.Close()
	connect(ctx, clients)

	before, err := locks.Inspect(ctx, bootstrapProbeKey)
	if err != nil {
		return err
	}
	berr := locks.Bootstrap(ctx)
	after, err := locks.Inspect(ctx, bootstrapProbeKey)
	if err != nil {
		return err
	}
	if berr != nil && ctx.Err() != nil {
		return fmt.Errorf("bootstrap: %w", context.Cause(ctx))
	}
	var round *redlock.RoundError
	if berr != nil && !errors.As(berr, &round) {
		return berr
	}
	failed := map[int]error{}
	if round != nil {
		for _, ne := range round.Nodes {
			failed[ne.Node] = ne.Err
		}
	}
	voting := 0
	for i, b := range before {
		a := after[i]
		line := ""
		switch {
		case failed[i] != nil || b.Err != nil:
			err := failed[i]
			if err == nil {
				err = b.Err
			}
			line = "did not answer: " + diag.explain(i, err)
		case round != nil:
			line = "nothing declared" + quarantineLeft(a)
		case b.Quarantine == 0:
			line = "in service already: unchanged"
		case a.Err == nil && a.Quarantine == 0:
			line = "declared fresh: it votes now"
		case a.Err != nil:
			line = "state unknown after the bootstrap: " + diag.explain(i, a.Err)
		case a.DataAge >= cfg.ttl:
			line = "kept in its restart quarantine" + quarantineLeft(a) +
				": its data is old but its server restarted (new run id), so it may lack the last lock keys"
		default:
			line = "kept in its restart quarantine" + quarantineLeft(a) +
				": its data is young or missing while other nodes are in service, so it restarted or lost its data"
		}
		if a.Err == nil && a.Quarantine == 0 {
			voting++
		}
		fmt.Fprintf(cfg.out, "node %d (%s): %s\n", i, clients[i].Options().Addr, line)
	}
	if round != nil {
		return &exitError{code: exitUnavailable, err: fmt.Errorf(
			"bootstrap declared nothing: %d of %d nodes answered, a majority needs %d; a restarted minority cannot be told from a fresh deployment",
			round.Granted, len(clients), round.Needed)}
	}
	fmt.Fprintf(cfg.out, "%d of %d nodes vote now; a majority needs %d\n", voting, len(clients), locks.Quorum())
	return nil
}

// quarantineLeft says how long a node's quarantine lasts, if it has one.
func quarantineLeft(s redlock.NodeState) string {
	if s.Err != nil || s.Quarantine == 0 {
		return ""
	}
	return fmt.Sprintf(" (votes in %v)", s.Quarantine.Round(100*time.Millisecond))
}
