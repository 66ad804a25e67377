package redlock

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// NodeState is one node's view of a lock key, for operators (quorumlock
// inspect).
type NodeState struct {
	Node int
	Addr string
	// Err is set when the node could not be read; the other fields are
	// then zero.
	Err error
	// Holder is the token stored under the key ("" when free) and TTL how
	// long the node keeps it.
	Holder string
	TTL    time.Duration
	// Fence is the node's fence counter for the key.
	Fence uint64
	// DataAge is how long the node's data has existed by its own clock
	// (since its restart sentinel was written); -1 when it has none yet.
	DataAge time.Duration
	// Quarantine is how long until the node votes again; 0 when it votes.
	// A node whose server run id changed since the last vote is reported in
	// quarantine for the whole quarantine: its next vote restarts it.
	Quarantine time.Duration
	// Skew is the node's clock minus this client's.
	Skew time.Duration
	// RunID and Version identify the server process, when it reports them.
	RunID, Version string
}

// Inspect reads key's state on every node at once, each bounded by the node
// timeout (at least a second). It changes nothing. The error is for a bad
// key only; a node that cannot be read has its Err set.
func (c *Client) Inspect(ctx context.Context, key string) ([]NodeState, error) {
	ctx = orBackground(ctx)
	if key == "" {
		return nil, errors.New("redlock: Inspect: empty key")
	}
	timeout := max(c.defaults.nodeTimeout, time.Second)
	states := make([]NodeState, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			states[i] = c.inspectNode(ctx, n, key)
		}()
	}
	wg.Wait()
	return states, nil
}

func (c *Client) inspectNode(ctx context.Context, n *node, key string) NodeState {
	st := NodeState{Node: n.index, Addr: n.addr, DataAge: -1}
	sent := time.Now()
	var holder, pttl, fence, born, run *redis.Cmd
	var now *redis.TimeCmd
	_, err := n.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		holder = p.Do(ctx, "get", key)
		pttl = p.Do(ctx, "pttl", key)
		fence = p.Do(ctx, "get", fencePrefix+key)
		born = p.Do(ctx, "get", sentinelKey)
		run = p.Do(ctx, "get", runIDKey)
		now = p.Time(ctx)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		st.Err = err
		return st
	}
	nodeNow := now.Val()
	st.Skew = nodeNow.Sub(sent.Add(time.Since(sent) / 2)).Round(time.Millisecond)
	st.Holder, _ = holder.Text()
	if ms, err := pttl.Int64(); err == nil && ms > 0 {
		st.TTL = time.Duration(ms) * time.Millisecond
	}
	if s, err := fence.Text(); err == nil {
		st.Fence, _ = strconv.ParseUint(s, 10, 64)
	}
	txt, ierr := n.rdb.Info(ctx, "server").Result()
	if ierr == nil {
		f := parseInfo(txt)
		st.RunID, st.Version = f.runID, f.version
	}
	recorded, _ := run.Text()
	q := c.ns.quarantine
	if s, err := born.Text(); err == nil {
		if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
			st.DataAge = nodeNow.Sub(time.UnixMilli(ms)).Round(time.Millisecond)
		}
	}
	switch {
	case q == 0:
	case st.DataAge < 0, st.RunID != "" && recorded != st.RunID:
		st.Quarantine = q
	case st.DataAge < q:
		st.Quarantine = q - st.DataAge
	}
	return st
}
