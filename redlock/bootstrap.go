package redlock

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/quorumlock/quorumlock/internal/reintroduce"
	"github.com/quorumlock/quorumlock/quorum"
)

// Bootstrap states of a node (scripts/bootstrap.lua).
const (
	bootMissing = 0 // no sentinel: the node is new or lost its data
	bootYoung   = 1 // in its restart quarantine
	bootService = 2 // in service: data older than the quarantine
	bootFresh   = 3 // declared fresh by this call
)

// Bootstrap declares a freshly deployed set of nodes, so that they vote at
// once instead of serving a restart quarantine of one TTL first (a node with
// no record of when its data began cannot tell "new" from "just lost its
// data", and is quarantined).
//
// It never shortens or hides a quarantine: it declares the nodes only when
// none of them has been in service (data older than the quarantine). When
// some node has, the deployment is in use, and a node with young or missing
// data restarted or lost it: Bootstrap then changes nothing and the node
// votes after its quarantine. A restart that kept the data is recognised by
// its new server run id and quarantined too. So Bootstrap is safe to call
// on every start (a crontab line); its only hole is a deployment where a
// majority lost its data at the same moment, which it takes for a new one.
//
// It returns an error, a *RoundError, when fewer than a majority of nodes
// answered (it cannot tell a fresh deployment from a restarted minority, and
// declares nothing). Nodes it could not reach are logged.
func (c *Client) Bootstrap(ctx context.Context) error {
	ctx = orBackground(ctx)
	if c.ns.quarantine == 0 {
		return nil // nothing to declare: the quarantine is off
	}
	timeout := max(c.defaults.nodeTimeout, time.Second) // not on a hot path: allow for a first connection
	read := c.bootRound(ctx, "read", timeout)
	votes := read.Wait()
	e := &RoundError{Op: "bootstrap", Key: "", Needed: c.Quorum()}
	inService := 0
	for _, v := range votes {
		switch {
		case v.Outcome == quorum.Failed:
			e.Nodes = append(e.Nodes, c.nodeError(v.Node, NodeFailed, 0, v.Err))
		case v.Value[0] == bootService:
			inService++
			e.Granted++
		default:
			e.Granted++
		}
	}
	for _, ne := range e.Nodes {
		c.log.node(slog.LevelWarn, c.nodes[ne.Node], "redlock: Bootstrap could not reach node", "err", ne.Err)
	}
	if e.Granted < e.Needed {
		e.Reason = ErrNoQuorum
		e.detail = "cannot tell a fresh deployment from a restarted minority; nothing declared"
		return e
	}
	if inService > 0 && !reintroduce.BootstrapDeclaresAll.Load() {
		for _, v := range votes {
			if v.Outcome == quorum.Yes && v.Value[0] != bootService {
				c.log.node(slog.LevelInfo, c.nodes[v.Node], "redlock: Bootstrap keeps a node in quarantine",
					"detail", "its data is young or missing while other nodes are in service: it restarted or lost its data")
			}
		}
		return nil
	}
	declare := c.bootRound(ctx, "declare", timeout)
	var errs []error
	for _, v := range declare.Wait() {
		if v.Outcome == quorum.Failed {
			errs = append(errs, c.nodeError(v.Node, NodeFailed, 0, v.Err))
		}
	}
	if len(errs) > 0 {
		c.log.warn("bootstrap declare", "redlock: Bootstrap did not declare every node", "err", errors.Join(errs...))
	}
	return nil
}

// bootRound runs bootstrap.lua in mode on every node.
func (c *Client) bootRound(ctx context.Context, mode string, timeout time.Duration) *quorum.Round[[2]int64] {
	boot := bootstrapScript.calls(len(c.nodes), 2, sentinelKey, runIDKey, mode, c.ns.quarantine.Milliseconds())
	c.bg.add(len(c.nodes))
	return quorum.StartNeed(ctx, len(c.nodes), len(c.nodes), quorum.Within(timeout), func(ctx context.Context, i int) ([2]int64, bool, error) {
		defer c.bg.done()
		n := c.nodes[i]
		if err := n.start(timeout); err != nil {
			return [2]int64{}, false, err
		}
		res, err := boot.run(ctx, n.rdb, i).Int64Slice()
		n.finish(err)
		if err != nil {
			return [2]int64{}, false, err
		}
		if len(res) != 2 {
			return [2]int64{}, false, errors.New("malformed reply from the bootstrap script")
		}
		return [2]int64{res[0], res[1]}, true, nil
	})
}
