package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Raw is the floor: the requests every Redlock sends, and nothing else.
type Raw struct {
	nodes []redis.UniversalClient
	ttl   time.Duration
}

var rawRelease = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

// ErrRawNotObtained: fewer than a majority of nodes granted the raw SET NX.
var ErrRawNotObtained = errors.New("bench: raw lock not obtained")

// NewRaw returns the raw floor on nodes, setting keys with ttl.
func NewRaw(nodes []redis.UniversalClient, ttl time.Duration) *Raw {
	return &Raw{nodes: nodes, ttl: ttl}
}

// Lock sends SET key token NX PX ttl to every node at once and waits for all
// of them. It returns the token when a majority granted it; on failure it
// deletes the key where it landed.
func (r *Raw) Lock(ctx context.Context, key string) (string, error) {
	var b [16]byte
	_, _ = rand.Read(b[:])
	token := base64.RawURLEncoding.EncodeToString(b[:])
	var granted atomic.Int32
	var wg sync.WaitGroup
	for _, c := range r.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := c.SetNX(ctx, key, token, r.ttl).Result(); err == nil && ok {
				granted.Add(1)
			}
		}()
	}
	wg.Wait()
	if int(granted.Load()) < len(r.nodes)/2+1 {
		r.Unlock(context.WithoutCancel(ctx), key, token)
		return "", ErrRawNotObtained
	}
	return token, nil
}

// Unlock runs the token-checked delete on every node at once and waits for
// all of them; it returns how many deleted the key.
func (r *Raw) Unlock(ctx context.Context, key, token string) int {
	var deleted atomic.Int32
	var wg sync.WaitGroup
	for _, c := range r.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if n, err := rawRelease.Run(ctx, c, []string{key}, token).Int64(); err == nil && n == 1 {
				deleted.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(deleted.Load())
}
