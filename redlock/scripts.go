package redlock

import (
	"context"
	_ "embed"
	"errors"

	"github.com/redis/go-redis/v9"
)

// The scripts run through redis.Script: EVALSHA, falling back to EVAL when a
// node answers NOSCRIPT (after a restart or SCRIPT FLUSH).
var (
	//go:embed scripts/acquire.lua
	acquireSrc string
	//go:embed scripts/release.lua
	releaseSrc string
	//go:embed scripts/extend.lua
	extendSrc string
	//go:embed scripts/fence.lua
	fenceSrc string
	//go:embed scripts/fenced_set.lua
	fencedSetSrc string
	//go:embed scripts/restart.lua
	restartSrc string

	acquireScript   = newScript(acquireSrc)
	releaseScript   = newScript(releaseSrc)
	extendScript    = redis.NewScript(extendSrc)
	fenceScript     = redis.NewScript(fenceSrc)
	fencedSetScript = redis.NewScript(fencedSetSrc)
	restartScript   = redis.NewScript(restartSrc)
)

// Companion keys. The lock key itself is exactly the caller's key and holds
// only the token, as redsync's does, so the two libraries exclude each other;
// everything else lives under the "quorumlock:" prefix.
const (
	// SentinelKey is the per-node key (no TTL) that records, in the node's
	// clock, when the node's data began; the restart quarantine reads it.
	SentinelKey = "quorumlock:node"
	// RunIDKey is the per-node key that records the run id of the Redis
	// process that last confirmed the sentinel; a different run id means
	// the node restarted.
	RunIDKey = "quorumlock:node:run"
	// FencePrefix + key holds the node's fence counter for key.
	FencePrefix = "quorumlock:fence:"
	// ReleasedPrefix + key is the pub/sub channel on which releases are
	// announced.
	ReleasedPrefix = "quorumlock:released:"
	// FencedPrefix + key holds the highest fence token FencedSet has
	// accepted for key.
	FencedPrefix = "quorumlock:fenced:"
)

// script runs a Lua script the way redis.Script.Run does (EVALSHA, then EVAL
// on NOSCRIPT) for the two scripts of the uncontended path. It takes an
// argument list built once per round: redis.Script boxes every key and
// argument again for every node, a third of the allocations of an
// Acquire+Release on five nodes.
type script struct {
	src, hash any // boxed once
}

func newScript(src string) *script {
	return &script{src: src, hash: redis.NewScript(src).Hash()}
}

// calls is one call of a script, repeated for each node of a round: n copies
// of the command in one allocation. Each node's goroutine uses only its own
// copy, so that a hook that rewrites a command's arguments (a key prefix,
// say) sees no other node's.
type calls struct {
	s     *script
	width int
	args  []any
}

// calls returns n copies of the call of s with numKeysAndArgs: the number of
// keys, the keys, then the arguments, as after EVALSHA's script hash.
func (s *script) calls(n int, numKeysAndArgs ...any) calls {
	w := 2 + len(numKeysAndArgs)
	c := calls{s: s, width: w, args: make([]any, n*w)}
	for i := 0; i < n; i++ {
		one := c.args[i*w : (i+1)*w]
		one[0], one[1] = "evalsha", s.hash
		copy(one[2:], numKeysAndArgs)
	}
	return c
}

// run sends node i's copy to rdb and returns the command, answered.
func (c calls) run(ctx context.Context, rdb redis.UniversalClient, i int) *redis.Cmd {
	args := c.args[i*c.width : (i+1)*c.width : (i+1)*c.width]
	cmd := redis.NewCmd(ctx, args...)
	cmd.SetFirstKeyPos(3)
	_ = rdb.Process(ctx, cmd)
	if err := cmd.Err(); err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")) {
		// The node lost its script cache (restart, SCRIPT FLUSH): send
		// the source, which also caches it again.
		args[0], args[1] = "eval", c.s.src
		cmd = redis.NewCmd(ctx, args...)
		cmd.SetFirstKeyPos(3)
		_ = rdb.Process(ctx, cmd)
	}
	return cmd
}
