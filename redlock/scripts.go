package redlock

import (
	_ "embed"

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

	acquireScript   = redis.NewScript(acquireSrc)
	releaseScript   = redis.NewScript(releaseSrc)
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
