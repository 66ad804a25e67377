package leaktest

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestMain(m *testing.M) { VerifyTestMain(m) }

func TestRedisLoggerDropsOnlyFailedConnections(t *testing.T) {
	var b strings.Builder
	l := RedisLogger{W: &b}
	ctx := context.Background()
	l.Printf(ctx, "redis: connection pool: failed to dial after %d attempts: %v", 5, "connection refused")
	l.Printf(ctx, "redis: connection pool: failed to get a usable connection after %d attempts", 3)
	l.Printf(ctx, "push: pre-command drain failed, retiring conn: %v", errors.New("remote error: tls: certificate required"))
	if b.Len() != 0 {
		t.Fatalf("dial failures were written: %q", b.String())
	}
	l.Printf(ctx, "addIdleConn panic: %+v", "boom")
	l.Printf(ctx, "redis: connection pool: conn[%d] rejected by hook, returning to pool", 7)
	l.Printf(ctx, "push: pre-command drain failed, retiring conn: %v", errors.New("proto: got '$', want '>'"))
	want := "redis: addIdleConn panic: boom\nredis: connection pool: conn[7] rejected by hook, returning to pool\n" +
		"redis: push: pre-command drain failed, retiring conn: proto: got '$', want '>'\n"
	if b.String() != want {
		t.Fatalf("logged %q, want %q", b.String(), want)
	}
}
