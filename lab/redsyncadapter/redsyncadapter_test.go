package redsyncadapter

import (
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/go-redsync/redsync/v4"
	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m) }

func nodes(t *testing.T, n int) []redis.UniversalClient {
	t.Helper()
	var out []redis.UniversalClient
	for range n {
		m := miniredis.RunT(t)
		c := redis.NewClient(&redis.Options{Addr: m.Addr()})
		t.Cleanup(func() { c.Close() })
		out = append(out, c)
	}
	return out
}

func TestLockUnlock(t *testing.T) {
	ns := nodes(t, 3)
	rs := New(ns)
	m, err := Lock(t.Context(), rs, "k", redsync.WithExpiry(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range ns {
		if v, err := n.Get(t.Context(), "k").Result(); err != nil || v != m.Value() {
			t.Errorf("node %d holds %q (%v); want the mutex's value on every node", i, v, err)
		}
	}
	if _, err := Lock(t.Context(), rs, "k", redsync.WithTries(1)); err == nil {
		t.Error("a second Lock of a held key succeeded")
	}
	if err := Unlock(t.Context(), m); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	// redsync answers a second unlock with (false, nil) or an error; either
	// way it is an error here.
	if err := Unlock(t.Context(), m); err == nil {
		t.Error("unlocking a released mutex returned nil")
	}
}
