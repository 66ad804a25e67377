package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
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

Exit status 0 when a majority of the nodes answered, 1 otherwise.

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
			v := inspect(c.Context(), clients, args[0], timeout)
			if asJSON {
				enc := json.NewEncoder(c.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(v); err != nil {
					return err
				}
			} else if err := v.writeText(c.OutOrStdout()); err != nil {
				return err
			}
			if v.Answered < v.Quorum {
				return fmt.Errorf("only %d of %d nodes answered, a majority needs %d: the lock's state is unknown", v.Answered, v.Nodes, v.Quorum)
			}
			return nil
		},
	}
	f := c.Flags()
	nodes = addNodesFlag(f)
	f.DurationVar(&timeout, "timeout", 2*time.Second, "bound on each node's answer")
	f.BoolVarP(&asJSON, "json", "j", false, "print JSON instead of a table")
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
	Fence    uint64     `json:"fence"`
	PerNode  []nodeView `json:"per_node"`
	Observed time.Time  `json:"observed"`
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
}

// inspect reads key on every node at once, each bounded by timeout.
func inspect(ctx context.Context, clients []*redis.Client, key string, timeout time.Duration) *lockView {
	v := &lockView{Key: key, Nodes: len(clients), Quorum: quorum.Majority(len(clients)), Observed: time.Now(),
		PerNode: make([]nodeView, len(clients))}
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Go(func() {
			nctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			v.PerNode[i] = inspectNode(nctx, c, key)
			v.PerNode[i].Node = i
		})
	}
	wg.Wait()

	count := map[string]int{}
	for _, n := range v.PerNode {
		if n.Error != "" {
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
	return v
}

// inspectNode reads the key, its TTL, the fence counter, the sentinel and
// the node's clock in one transaction, so the values belong together.
func inspectNode(ctx context.Context, c *redis.Client, key string) nodeView {
	n := nodeView{Addr: c.Options().Addr}
	var get, fence, sentinel *redis.StringCmd
	var pttl *redis.DurationCmd
	var now *redis.TimeCmd
	start := time.Now()
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		get = p.Get(ctx, key)
		pttl = p.PTTL(ctx, key)
		fence = p.Get(ctx, redlock.KeyPrefix+"fence:"+key)
		sentinel = p.Get(ctx, redlock.KeyPrefix+"node")
		now = p.Time(ctx)
		return nil
	})
	rtt := time.Since(start)
	if err != nil && now.Err() != nil { // the transaction failed, not one read
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
	if err := errors.Join(errs...); err != nil {
		n.Error = err.Error()
	}
	return n
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
	if _, err := fmt.Fprintf(w, "key %q: %s; fence counter %d\n", v.Key, summary, v.Fence); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tADDRESS\tKEY\tTOKEN\tPTTL\tFENCE\tSENTINEL\tSKEW\tRTT")
	for _, n := range v.PerNode {
		if n.NodeTime == 0 && n.Error != "" {
			fmt.Fprintf(tw, "%d\t%s\terror: %s\n", n.Node, n.Addr, n.Error)
			continue
		}
		state, token, pttl := "absent", "-", "-"
		if n.Exists {
			state, token, pttl = "present", n.Token, "no expiry"
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
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%+dms\t%.1fms\n",
			n.Node, n.Addr, state, token, pttl, n.Fence, sentinel, n.Skew, n.RTT)
		if n.Error != "" {
			fmt.Fprintf(tw, "\t\terror: %s\n", n.Error)
		}
	}
	return tw.Flush()
}
