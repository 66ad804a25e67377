package redlock

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
)

// The oldest Redis the scripts work on: SET with NX and PX in a script, and
// redis.replicate_commands to write after TIME and INFO.
const minRedisVersion = "3.2.0"

// errNoInfoPermission says what an ACL that denies INFO breaks.
var errNoInfoPermission = errors.New("the ACL user may not run INFO, which the restart quarantine needs " +
	"(grant +info; see the README's Permissions section, or turn the quarantine off with WithQuarantine(0))")

// serverFacts is what first contact learns from INFO.
type serverFacts struct {
	runID, version, role, policy string
	maxmemory                    int64
}

// ready runs the first-contact checks of node i once per server process, and
// returns the error that keeps the node from voting, if any: the same server
// as another node, a Redis too old for the scripts, an ACL without INFO.
// Misconfigurations that do not make a vote wrong (an eviction policy that
// may drop lock keys under memory pressure) are logged once.
// fit reports whether n was probed and found fit to vote: a grant
// announced on a node that does not vote (the same server listed twice, a
// cluster client) must not count, or one server's grant would count twice.
func (n *node) fit() bool {
	if !n.probed.Load() {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fatal == nil
}

func (c *Client) ready(ctx context.Context, n *node) error {
	if n.probed.Load() {
		n.mu.Lock()
		defer n.mu.Unlock()
		return n.fatal
	}
	// One section at a time: Redis before 7 takes one per call, and an
	// embedded test server answers only some (asking it for the default
	// sections races with its shutdown).
	txt, err := n.rdb.Info(ctx, "server").Result()
	if err == nil && strings.Contains(txt, "run_id:") {
		var mem string
		if mem, err = n.rdb.Info(ctx, "memory").Result(); err == nil {
			txt += mem
		}
	}
	if err != nil {
		if isNoPerm(err) {
			c.log.node(slog.LevelWarn, n, "redlock: node denies INFO", "err", errNoInfoPermission)
			return errNoInfoPermission
		}
		if ctx.Err() != nil || !strings.Contains(err.Error(), "not supported") {
			return err // not reached: try again at the next vote
		}
		txt = "" // a server without INFO server (an embedded test server)
	}
	f := parseInfo(txt)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.probed.Load() {
		return n.fatal
	}
	if f.version != "" && versionLess(f.version, minRedisVersion) {
		n.fatal = fmt.Errorf("Redis %s is older than %s, the oldest the lock scripts support", f.version, minRedisVersion)
	}
	if n.fatal == nil && f.runID != "" {
		if j, dup := c.claim(f.runID, n.index, n.runID); dup {
			n.fatal = fmt.Errorf("the same Redis server as node %d (run id %.8s…): it would vote twice; list each master once", j, f.runID)
			c.log.node(slog.LevelError, n, "redlock: one server listed twice", "same_as", j, "detail", n.fatal)
		} else {
			n.runID = f.runID
		}
	}
	if f.maxmemory > 0 && f.policy != "" && f.policy != "noeviction" {
		c.log.node(slog.LevelWarn, n, "redlock: node may evict lock keys",
			"maxmemory_policy", f.policy, "detail", "under memory pressure the node may drop lock keys or its restart sentinel; use noeviction on lock nodes")
	}
	if f.role == "slave" {
		c.log.node(slog.LevelWarn, n, "redlock: node is a replica", "detail", "a replica refuses writes, so it never votes; list masters")
	}
	n.probed.Store(true)
	return n.fatal
}

// reprobe forgets what first contact learnt: the node's server process
// changed.
func (n *node) reprobe() { n.probed.Store(false) }

// claim records that node i runs the server with runID, forgetting the run id
// it had before; it reports the node that already claimed runID.
func (c *Client) claim(runID string, i int, old string) (int, bool) {
	c.idMu.Lock()
	defer c.idMu.Unlock()
	if j, ok := c.runIDs[runID]; ok && j != i {
		return j, true
	}
	if old != "" && c.runIDs[old] == i {
		delete(c.runIDs, old)
	}
	c.runIDs[runID] = i
	return 0, false
}

func parseInfo(txt string) serverFacts {
	var f serverFacts
	sc := bufio.NewScanner(strings.NewReader(txt))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch k {
		case "run_id":
			f.runID = v
		case "redis_version":
			f.version = v
		case "role":
			f.role = v
		case "maxmemory_policy":
			f.policy = v
		case "maxmemory":
			f.maxmemory, _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return f
}

// versionLess compares dotted versions numerically.
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < max(len(as), len(bs)); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func isNoPerm(err error) bool {
	return err != nil && strings.HasPrefix(strings.TrimPrefix(err.Error(), "ERR "), "NOPERM")
}
