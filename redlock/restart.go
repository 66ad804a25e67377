package redlock

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Restart detection. A node that restarts and reloads its data from an AOF
// written every second can come back with the sentinel but without the last
// lock keys. Every restart breaks the client's connections, so a new
// connection is the moment to look: the next vote of that node is checked
// against INFO server and, when the run id is new (a restart, or a failover
// to a replica behind the same address), the quarantine starts again. In
// the steady state this costs nothing; after each new connection to a node,
// two round trips on that node (INFO and a script), in parallel with the
// other nodes' votes.

// restartState is per node.
type restartState struct {
	dials   atomic.Uint64 // connections opened to the node
	checked atomic.Uint64 // value of dials when the node was last checked
	noInfo  atomic.Bool   // the node does not serve INFO server (embedded)
}

// dialCounter counts new connections to a node.
type dialCounter struct{ st *restartState }

func (h dialCounter) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := next(ctx, network, addr)
		if err == nil {
			h.st.dials.Add(1)
		}
		return conn, err
	}
}
func (h dialCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h dialCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// needsCheck reports whether the node opened a connection since its last
// restart check.
func (st *restartState) needsCheck() bool {
	return !st.noInfo.Load() && st.dials.Load() != st.checked.Load()
}

// checkRestart asks node i for its run id and uptime and records a restart
// in its sentinel. It returns how long the node stays in quarantine (0 when
// it may vote).
func (c *Client) checkRestart(ctx context.Context, i int, quarantine time.Duration) (time.Duration, error) {
	n := &c.nodes[i]
	seen := n.restart.dials.Load()
	runID, uptime, err := serverInfo(ctx, n.rdb)
	if errors.Is(err, errNoInfo) {
		n.restart.noInfo.Store(true)
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	res, err := restartScript.Run(ctx, n.rdb, []string{SentinelKey, RunIDKey}, runID, uptime.Milliseconds()).Int64Slice()
	if err != nil {
		return 0, err
	}
	if len(res) != 3 {
		return 0, errors.New("redlock: malformed reply from the restart script")
	}
	n.restart.checked.Store(seen)
	if res[0] == 1 {
		c.logWarn("redlock: node restarted", "node", i, "addr", n.addr, "run_id", runID, "uptime", uptime)
	}
	age := time.Duration(res[2]-res[1]) * time.Millisecond
	if quarantine > 0 && age < quarantine {
		return quarantine - age, nil
	}
	return 0, nil
}

var errNoInfo = errors.New("redlock: node does not report run_id and uptime")

// serverInfo reads run_id and uptime_in_seconds from INFO server.
func serverInfo(ctx context.Context, rdb redis.UniversalClient) (string, time.Duration, error) {
	txt, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		if ctx.Err() == nil && strings.Contains(strings.ToLower(err.Error()), "not supported") {
			return "", 0, errNoInfo
		}
		return "", 0, err
	}
	var runID string
	uptime := time.Duration(-1)
	sc := bufio.NewScanner(strings.NewReader(txt))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch k {
		case "run_id":
			runID = v
		case "uptime_in_seconds":
			if s, err := strconv.ParseInt(v, 10, 64); err == nil {
				uptime = time.Duration(s) * time.Second
			}
		}
	}
	if runID == "" || uptime < 0 {
		return "", 0, errNoInfo
	}
	return runID, uptime, nil
}
