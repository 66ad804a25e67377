package redlock

import (
	"context"
	_ "embed"
	"errors"

	"github.com/redis/go-redis/v9"
)

// The Lua scripts, embedded. All run through script: EVALSHA, falling back to
// EVAL when a node answers NOSCRIPT (after a restart or SCRIPT FLUSH).
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
	//go:embed scripts/bootstrap.lua
	bootstrapSrc string
	//go:embed scripts/dequeue.lua
	dequeueSrc string
	//go:embed scripts/leader.lua
	leaderSrc string
	//go:embed scripts/leader_read.lua
	leaderReadSrc string

	acquireScript    = newScript(acquireSrc)
	releaseScript    = newScript(releaseSrc)
	extendScript     = newScript(extendSrc)
	fenceScript      = newScript(fenceSrc)
	fencedSetScript  = newScript(fencedSetSrc)
	bootstrapScript  = newScript(bootstrapSrc)
	dequeueScript    = newScript(dequeueSrc)
	leaderScript     = newScript(leaderSrc)
	leaderReadScript = newScript(leaderReadSrc)
)

// KeyPrefix starts every key and channel the library uses besides the lock
// keys themselves; lock keys under it are refused. The lock key is exactly
// the caller's key and holds only the token, as redsync's does, so that the
// two libraries exclude each other. The layout:
//
//	quorumlock:node           per node: node-clock time (ms) its data began
//	quorumlock:node:run       per node: run id of the server process that wrote it
//	quorumlock:fence:<key>    per node: the key's fence counter
//	quorumlock:queue:<key>    per node: the key's waiters by ticket (sorted set)
//	quorumlock:queuex:<key>   per node: when each waiter's entry expires (hash:
//	                          id → expiry), and the token a release may grant
//	                          it, its TTL and restart quarantine ("g:<id>" →
//	                          "<token> <ttl ms> <quarantine ms>")
//	quorumlock:gone:<key>     per node: the token a release just deleted, for a
//	                          request timeout, so that an extension sent
//	                          before the release does not set the key again
//	quorumlock:fenced:<key>   in the store: highest token FencedSet accepted
//	quorumlock:leader:<name>  per node: election name's leader record (hash:
//	                          token, id, value, fence, seq), next to the
//	                          lock key <name> and expiring with it
//	quorumlock:released       pub/sub channel of release announcements:
//	                          "<token> <waiter id at the queue's head> <key>",
//	                          the head as "<id>+<token>" when the release
//	                          granted it the key,
//	                          and of an election's leader records:
//	                          "<token>:<seq> - <name>"
const KeyPrefix = "quorumlock:"

const (
	sentinelKey     = KeyPrefix + "node"
	runIDKey        = KeyPrefix + "node:run"
	fencePrefix     = KeyPrefix + "fence:"
	fencedPrefix    = KeyPrefix + "fenced:"
	queuePrefix     = KeyPrefix + "queue:"
	queueExpPrefix  = KeyPrefix + "queuex:"
	gonePrefix      = KeyPrefix + "gone:"
	leaderPrefix    = KeyPrefix + "leader:"
	releasedChannel = KeyPrefix + "released"
)

// script runs a Lua script the way redis.Script.Run does (EVALSHA, then EVAL
// on NOSCRIPT), from an argument list built once per round: redis.Script
// boxes every key and argument again for every node, a third of the
// allocations of an Acquire+Release on five nodes.
type script struct {
	src, hash any // boxed once
	rs        *redis.Script
}

func newScript(src string) *script {
	rs := redis.NewScript(src)
	return &script{src: src, hash: rs.Hash(), rs: rs}
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

// run sends copy i to rdb and returns the command, answered.
func (c calls) run(ctx context.Context, rdb redis.UniversalClient, i int) *redis.Cmd {
	cmd := c.cmd(ctx, i, false)
	_ = rdb.Process(ctx, cmd)
	if isNoScript(cmd.Err()) {
		// The node lost its script cache (restart, SCRIPT FLUSH): send
		// the source, which also caches it again.
		cmd = c.cmd(ctx, i, true)
		_ = rdb.Process(ctx, cmd)
	}
	return cmd
}

// cmd is copy i of the call as a command; eval sends the script's source
// instead of its hash (and makes copy i send it from then on).
func (c calls) cmd(ctx context.Context, i int, eval bool) *redis.Cmd {
	args := c.args[i*c.width : (i+1)*c.width : (i+1)*c.width]
	if eval {
		args[0], args[1] = "eval", c.s.src
	}
	cmd := redis.NewCmd(ctx, args...)
	cmd.SetFirstKeyPos(3)
	return cmd
}

func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}

// piped is one call in a pipeline: copy i of c.
type piped struct {
	c calls
	i int
}

// runPiped sends the calls to rdb in one pipeline, and those the node no
// longer had cached once more with the script's source, as run does. It
// returns the answered commands, in order, and what node.finish needs: nil
// when any reply came from the node, else the first call's error.
func runPiped(ctx context.Context, rdb redis.UniversalClient, calls []piped) ([]*redis.Cmd, error) {
	cmds := make([]*redis.Cmd, len(calls))
	pipe := rdb.Pipeline()
	for k, p := range calls {
		cmds[k] = p.c.cmd(ctx, p.i, false)
		_ = pipe.Process(ctx, cmds[k])
	}
	_, _ = pipe.Exec(ctx)
	var again []int
	for k, cmd := range cmds {
		if isNoScript(cmd.Err()) {
			again = append(again, k)
		}
	}
	if len(again) > 0 {
		pipe = rdb.Pipeline()
		for _, k := range again {
			cmds[k] = calls[k].c.cmd(ctx, calls[k].i, true)
			_ = pipe.Process(ctx, cmds[k])
		}
		_, _ = pipe.Exec(ctx)
	}
	for _, cmd := range cmds {
		if err := cmd.Err(); err == nil || isReply(err) {
			return cmds, nil
		}
	}
	return cmds, cmds[0].Err()
}

// run is a single call of s on rdb.
func (s *script) run(ctx context.Context, rdb redis.Scripter, numKeysAndArgs ...any) *redis.Cmd {
	if u, ok := rdb.(redis.UniversalClient); ok {
		return s.calls(1, numKeysAndArgs...).run(ctx, u, 0)
	}
	// A Scripter that is not a full client (a pipeline, a transaction):
	// go-redis' own fallback.
	n, _ := numKeysAndArgs[0].(int)
	keys := make([]string, n)
	for i := range keys {
		keys[i], _ = numKeysAndArgs[1+i].(string)
	}
	return s.rs.Run(ctx, rdb, keys, numKeysAndArgs[1+n:]...)
}
