package redlock

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
)

// instantHook answers the lock scripts itself, without a network or a
// server, so that a benchmark measures the library's own cost: the rounds,
// the goroutines, the arguments and replies, the Lock. Every acquisition is
// granted and every release deletes.
type instantHook struct{}

func (instantHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (instantHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (instantHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "info" { // first contact: a server with no run id
			cmd.(*redis.StringCmd).SetVal("# Server\r\nredis_version:7.0.15\r\n")
			return nil
		}
		c, ok := cmd.(*redis.Cmd)
		if !ok || (cmd.Name() != "evalsha" && cmd.Name() != "eval") {
			return next(ctx, cmd)
		}
		switch {
		case cmd.Args()[2] == 6: // acquire.lua: granted, fence 0, node time
			c.SetVal([]any{int64(1), int64(0), int64(0), int64(1)})
		case isFenceCall(cmd.Args()): // fence.lua: raised to the token
			token, _ := strconv.ParseInt(cmd.Args()[4].(string), 10, 64)
			c.SetVal(token)
		default: // release.lua, extend.lua: done
			c.SetVal(int64(1))
		}
		return nil
	}
}

func isFenceCall(args []any) bool {
	k, ok := args[3].(string)
	return ok && strings.HasPrefix(k, fencePrefix)
}

// instantNodes are n node clients that never connect: instantHook answers.
func instantNodes(b *testing.B, n int) []redis.UniversalClient {
	b.Helper()
	nodes := make([]redis.UniversalClient, n)
	for i := range nodes {
		rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(1+i)})
		rdb.AddHook(instantHook{})
		b.Cleanup(func() { _ = rdb.Close() })
		nodes[i] = rdb
	}
	return nodes
}

// BenchmarkAcquireRelease is the library's overhead on the uncontended path
// (integration's BenchmarkUncontended without the network): Acquire and
// Release of distinct keys on five nodes that answer at once.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, bc := range []struct {
		name      string
		opts      []LockOption
		listening bool
	}{
		{"default", nil, false},
		{"fencing", []LockOption{WithFencing(true)}, false},
		// A Client that waited for a release before: its acquisitions
		// queue with their first attempt.
		{"listening", nil, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := New(instantNodes(b, 5))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = c.Close() })
			if bc.listening {
				// As if the subscriptions were open (the instant nodes
				// have no server to subscribe to).
				c.waker.mu.Lock()
				c.waker.active = true
				c.waker.mu.Unlock()
			}
			keys := make([]string, 1024)
			for i := range keys {
				keys[i] = "bench:" + strconv.Itoa(i)
			}
			ctx := context.Background()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				l, err := c.Acquire(ctx, keys[i%len(keys)], bc.opts...)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Release(ctx); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
