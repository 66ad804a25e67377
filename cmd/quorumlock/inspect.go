package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/quorumlock/quorumlock/quorum"
	"github.com/quorumlock/quorumlock/redlock"
)

func init() { subcommands = append(subcommands, newInspectCmd) }

func newInspectCmd() *cobra.Command {
	var (
		nodes   *nodeFlags
		timeout time.Duration
		ttl     time.Duration
		asJSON  bool
	)
	c := &cobra.Command{
		Use:   "inspect --nodes URL,URL,URL KEY",
		Short: "Show a lock as each node sees it: holder's token, TTL, fence counter, node sentinel, clock skew",
		Long: `Inspect reads KEY on every node and shows, per node, whether the key exists,
its value (the holder's token) and remaining TTL, the fence counter of KEY,
the node's sentinel (when its data began, by the node's clock; "bootstrapped"
when set by --bootstrap) and how far the node's clock is from this host's.

The summary says whether one token is on a majority. It is a snapshot: a
holder's own validity is shorter than the TTL the nodes report.

The STATE column says whether each node can vote now: "ok"; "quarantined"
while its data is younger than the restart quarantine (one --ttl, as the
clients' default; a node without a sentinel starts it at its next vote);
"skewed" when its clock is off this host's by more than --ttl/10; or
"unreachable" and why. Nodes are numbered from 0 in the order of --nodes.

Exit status 0 when every node answered; 69 (EX_UNAVAILABLE) when a node did
not (the summary then says whether enough answered to know the lock's state);
1 for other errors.

` + nodesHelp,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return fmt.Errorf("need exactly one KEY, got %d arguments %q", len(args), args)
			}
			if args[0] == "" {
				return errors.New("KEY is empty")
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			if timeout <= 0 {
				return fmt.Errorf("--timeout %v must be positive", timeout)
			}
			urls, tf, err := nodes.resolve()
			if err != nil {
				return err
			}
			clients, err := openNodesTLS(urls, tf)
			if err != nil {
				return err
			}
			defer closeNodes(clients)
			if ttl <= 0 {
				return fmt.Errorf("--ttl %v must be positive", ttl)
			}
			diag := newNodeDiag(clients)
			v := inspect(c.Context(), clients, args[0], timeout, votePolicy{quarantine: ttl, maxSkew: ttl / 10}, diag)
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(v); err != nil {
					return err
				}
			} else if err := v.writeText(c.OutOrStdout()); err != nil {
				return err
			}
			return v.status()
		},
	}
	f := c.Flags()
	nodes = addNodesFlag(f)
	f.DurationVar(&timeout, "timeout", 2*time.Second, "bound on each node's answer")
	f.BoolVarP(&asJSON, "json", "j", false, "print JSON instead of a table")
	f.DurationVar(&ttl, "ttl", redlock.DefaultTTL, "the TTL the clients use: a node votes once its data is that old, and only with a clock within TTL/10 of theirs")
	return c
}

// lockView is a lock across the quorum.
type lockView struct {
	Key      string `json:"key"`
	Nodes    int    `json:"nodes"`
	Quorum   int    `json:"quorum"`
	Answered int    `json:"answered"`
	// Token is the token found on most nodes, HeldOn how many; Held is true
	// when that is a majority.
	Token  string `json:"token,omitempty"`
	HeldOn int    `json:"held_on"`
	Held   bool   `json:"held"`
	// Fence is the highest fence counter of the key on any node: the token
	// of the last fenced acquisition.
	Fence uint64 `json:"fence"`
	// Leader is set when KEY is an election (quorumlock elect, the
	// library's Election) and the majority's token wrote its record.
	Leader   *leaderView `json:"leader,omitempty"`
	PerNode  []nodeView  `json:"per_node"`
	Observed time.Time   `json:"observed"`
}

// leaderView is who leads an election: its identity and term (fence).
type leaderView struct {
	Identity string `json:"identity"`
	Term     uint64 `json:"term"`
}

// nodeView is what one node says. Times are in milliseconds.
type nodeView struct {
	Node  int    `json:"node"`
	Addr  string `json:"addr"`
	Error string `json:"error,omitempty"`

	Exists bool   `json:"exists"`
	Token  string `json:"token,omitempty"`
	// PTTL is the key's remaining TTL; -1 when it has none.
	PTTL  int64  `json:"pttl_ms,omitempty"`
	Fence uint64 `json:"fence"`
	// Sentinel is the node-clock time at which the node's data began (0:
	// bootstrapped), nil when the node has none yet.
	Sentinel *int64 `json:"sentinel_ms"`
	// NodeTime is the node's clock (TIME); Skew is NodeTime minus this
	// host's clock at the middle of the round trip, RTT the round trip.
	NodeTime int64   `json:"node_time_ms,omitempty"`
	Skew     int64   `json:"skew_ms"`
	RTT      float64 `json:"rtt_ms"`
	// State is whether the node can vote now: "ok", "quarantined" (for
	// QuarantineLeft more), "skewed", or "unreachable".
	State          string `json:"state"`
	QuarantineLeft int64  `json:"quarantine_left_ms,omitempty"`
	// The election's leader record on the node, when KEY is an election.
	LeaderToken string `json:"leader_token,omitempty"`
	LeaderID    string `json:"leader_identity,omitempty"`
	LeaderTerm  uint64 `json:"leader_term,omitempty"`

	err error // the read's error, for messages
}

// Node states.
const (
	stateOK          = "ok"
	stateQuarantined = "quarantined"
	stateSkewed      = "skewed"
	stateUnreachable = "unreachable"
)

// votePolicy is what the voting clients enforce, to tell which nodes can
// vote.
type votePolicy struct {
	quarantine time.Duration // 0: none
	maxSkew    time.Duration // 0: none
}

// The library's keys that inspect reads (redlock.KeyPrefix documents them).
const sentinelKey = redlock.KeyPrefix + "node"

func fenceKey(key string) string { return redlock.KeyPrefix + "fence:" + key }

// leaderKey is the leader record of election key.
func leaderKey(key string) string { return redlock.KeyPrefix + "leader:" + key }

// inspect reads key on every node at once, each bounded by timeout, and
// judges each node's state by pol; d explains failed reads.
func inspect(ctx context.Context, clients []*redis.Client, key string, timeout time.Duration, pol votePolicy, d *nodeDiag) *lockView {
	v := &lockView{Key: key, Nodes: len(clients), Quorum: quorum.Majority(len(clients)), Observed: time.Now(),
		PerNode: make([]nodeView, len(clients))}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			nctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			n := inspectNode(nctx, c, key)
			n.Node = i
			n.judge(pol, d)
			v.PerNode[i] = n
		})
	}
	wg.Wait()

	count := map[string]int{}
	for _, n := range v.PerNode {
		if n.State == stateUnreachable || n.Error != "" {
			continue
		}
		v.Answered++
		v.Fence = max(v.Fence, n.Fence)
		if n.Exists {
			count[n.Token]++
			if c := count[n.Token]; c > v.HeldOn || (c == v.HeldOn && n.Token < v.Token) {
				v.Token, v.HeldOn = n.Token, c
			}
		}
	}
	v.Held = v.HeldOn >= v.Quorum
	if v.Held {
		for _, n := range v.PerNode {
			if n.Exists && n.Token == v.Token && n.LeaderToken == v.Token {
				v.Leader = &leaderView{Identity: n.LeaderID, Term: n.LeaderTerm}
				break
			}
		}
	}
	return v
}

// inspectNode reads the key, its TTL, the fence counter, the sentinel and
// the node's clock in one transaction, so the values belong together.
func inspectNode(ctx context.Context, c *redis.Client, key string) nodeView {
	n := nodeView{Addr: c.Options().Addr}
	var get, fence, sentinel, ltoken, lid, lterm *redis.StringCmd
	var pttl *redis.DurationCmd
	var now *redis.TimeCmd
	start := time.Now()
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, key)
		pttl = p.PTTL(ctx, key)
		fence = p.Get(ctx, fenceKey(key))
		sentinel = p.Get(ctx, sentinelKey)
		ltoken = p.HGet(ctx, leaderKey(key), "token")
		lid = p.HGet(ctx, leaderKey(key), "id")
		lterm = p.HGet(ctx, leaderKey(key), "fence")
		now = p.Time(ctx)
		return nil
	})
	rtt := time.Since(start)
	if err != nil && now.Err() != nil { // the transaction failed, not one read
		n.err = err
		n.Error = err.Error()
		return n
	}
	local := start.Add(rtt / 2)
	n.RTT = float64(rtt.Microseconds()) / 1000
	n.NodeTime = now.Val().UnixMilli()
	n.Skew = now.Val().Sub(local).Milliseconds()

	var errs []error
	switch tok, err := get.Result(); {
	case err == nil:
		n.Exists, n.Token = true, tok
		n.PTTL = -1
		if d := pttl.Val(); d >= 0 {
			n.PTTL = d.Milliseconds()
		}
	case !errors.Is(err, redis.Nil):
		errs = append(errs, fmt.Errorf("key: %w", err))
	}
	switch s, err := fence.Result(); {
	case err == nil:
		f, perr := strconv.ParseUint(s, 10, 64)
		if perr != nil {
			errs = append(errs, fmt.Errorf("fence counter %q: %w", s, perr))
		}
		n.Fence = f
	case !errors.Is(err, redis.Nil):
		errs = append(errs, fmt.Errorf("fence counter: %w", err))
	}
	switch s, err := sentinel.Result(); {
	case err == nil:
		ms, perr := strconv.ParseInt(s, 10, 64)
		if perr != nil {
			errs = append(errs, fmt.Errorf("sentinel %q: %w", s, perr))
		} else {
			n.Sentinel = &ms
		}
	case !errors.Is(err, redis.Nil):
		errs = append(errs, fmt.Errorf("sentinel: %w", err))
	}
	if tok, err := ltoken.Result(); err == nil {
		n.LeaderToken, n.LeaderID = tok, lid.Val()
		n.LeaderTerm, _ = strconv.ParseUint(lterm.Val(), 10, 64)
	}
	if err := errors.Join(errs...); err != nil {
		n.Error = err.Error()
	}
	return n
}

// judge sets the node's state: could it vote now, by pol?
func (n *nodeView) judge(pol votePolicy, d *nodeDiag) {
	switch {
	case n.NodeTime == 0 && n.err != nil:
		n.State = stateUnreachable
		n.Error = d.explain(n.Node, n.err)
	case pol.quarantine > 0 && n.Sentinel == nil:
		// The next vote creates the sentinel and starts the quarantine.
		n.State, n.QuarantineLeft = stateQuarantined, pol.quarantine.Milliseconds()
	case pol.quarantine > 0 && *n.Sentinel != 0 && n.NodeTime-*n.Sentinel < pol.quarantine.Milliseconds():
		n.State, n.QuarantineLeft = stateQuarantined, pol.quarantine.Milliseconds()-(n.NodeTime-*n.Sentinel)
	case pol.maxSkew > 0 && abs(n.Skew)-int64(n.RTT/2) > pol.maxSkew.Milliseconds():
		// Only beyond what the round trip leaves uncertain.
		n.State = stateSkewed
	default:
		n.State = stateOK
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}

// status is the command's verdict: nil when every node answered, an
// exitUnavailable error naming the nodes that did not.
func (v *lockView) status() error {
	var down []string
	for _, n := range v.PerNode {
		if n.State == stateUnreachable {
			down = append(down, fmt.Sprintf("node %d (%s): %s", n.Node, n.Addr, n.Error))
		}
	}
	if len(down) == 0 {
		return nil
	}
	verdict := fmt.Sprintf("%d of %d nodes answered, enough to know the lock's state", v.Answered, v.Nodes)
	if v.Answered < v.Quorum {
		verdict = fmt.Sprintf("only %d of %d nodes answered, a majority needs %d: the lock's state is unknown", v.Answered, v.Nodes, v.Quorum)
	}
	return &exitError{code: exitUnavailable, err: fmt.Errorf("unreachable: %s; %s", strings.Join(down, "; "), verdict)}
}

// blockage is what keeps the key from a new holder in this view, by the
// rules of a vote; the acquisition's own token is not known here, so a node
// holding any token counts as taken.
func (v *lockView) blockage() *blockage {
	b := &blockage{total: v.Nodes, needed: v.Quorum}
	for _, n := range v.PerNode {
		p := nodeProblem{node: n.Node, addr: n.Addr}
		switch {
		case n.State == stateUnreachable:
			p.kind, p.err = nodeFailed, n.err
		case n.State == stateQuarantined:
			p.kind, p.wait = nodeQuarantined, time.Duration(n.QuarantineLeft)*time.Millisecond
		case n.State == stateSkewed:
			p.kind, p.wait = nodeSkewed, time.Duration(n.Skew)*time.Millisecond
		case n.Exists:
			p.kind, p.token, p.wait = nodeTaken, n.Token, time.Duration(n.PTTL)*time.Millisecond
			if n.PTTL < 0 {
				p.wait = -1
			}
		default:
			continue
		}
		b.nodes = append(b.nodes, p)
	}
	b.decideFromRead()
	return b
}

// writeText prints the summary line and one row per node.
func (v *lockView) writeText(w io.Writer) error {
	var summary string
	switch {
	case v.Answered == 0:
		summary = "no node answered"
	case v.HeldOn == 0:
		summary = fmt.Sprintf("not held on any of the %d nodes that answered", v.Answered)
	case v.Held:
		summary = fmt.Sprintf("held on %d of %d nodes (majority %d) by token %s", v.HeldOn, v.Nodes, v.Quorum, v.Token)
	default:
		summary = fmt.Sprintf("not held by a majority: token %s on %d of %d nodes, a majority needs %d", v.Token, v.HeldOn, v.Nodes, v.Quorum)
	}
	if v.Leader != nil {
		summary += fmt.Sprintf("; election leader %s (term %d)", v.Leader.Identity, v.Leader.Term)
	}
	if _, err := fmt.Fprintf(w, "key %q: %s; fence counter %d\n", v.Key, summary, v.Fence); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tSTATE\tKEY\tTOKEN\tPTTL\tFENCE\tSENTINEL\tSKEW\tRTT")
	for _, n := range v.PerNode {
		if n.State == stateUnreachable {
			fmt.Fprintf(tw, "%d\t%s\tunreachable: %s\n", n.Node, n.Addr, n.Error)
			continue
		}
		state := n.State
		if n.State == stateQuarantined {
			state += " " + (time.Duration(n.QuarantineLeft) * time.Millisecond).Round(100*time.Millisecond).String()
		}
		present, token, pttl := "absent", "-", "-"
		if n.Exists {
			present, token, pttl = "present", n.Token, "no expiry"
			if n.PTTL >= 0 {
				pttl = (time.Duration(n.PTTL) * time.Millisecond).String()
			}
		}
		sentinel := "none"
		switch {
		case n.Sentinel == nil:
		case *n.Sentinel == 0:
			sentinel = "bootstrapped"
		default:
			age := time.Duration(n.NodeTime-*n.Sentinel) * time.Millisecond
			sentinel = "data age " + age.Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%+dms\t%.1fms\n",
			n.Node, n.Addr, state, present, token, pttl, n.Fence, sentinel, n.Skew, n.RTT)
		if n.Error != "" {
			fmt.Fprintf(tw, "\t\terror: %s\n", n.Error)
		}
	}
	return tw.Flush()
}
