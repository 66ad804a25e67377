package redlock

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Attempts that fail or are cancelled give their admission back: with one
// connection per node (one round admitted at a time), the Client still
// acquires afterwards.
func TestAdmissionGivenBackByFailedAttempts(t *testing.T) {
	tn := newNodesWith(t, 3, func(o *redis.Options) { o.PoolSize = 1 })
	c := newClient(t, tn, WithTTL(2*time.Second))
	if cap(c.rounds) != 1 {
		t.Fatalf("rounds %d", cap(c.rounds))
	}
	tn.down[1].Store(true)
	tn.down[2].Store(true)
	for i := 0; i < 20; i++ {
		if _, err := c.TryAcquire(bg(), "adm"); err == nil {
			t.Fatal("acquired with a majority down")
		}
		ctx, cancel := context.WithCancel(bg())
		cancel()
		_, _ = c.TryAcquire(ctx, "adm")
		ctx, cancel = context.WithTimeout(bg(), time.Millisecond)
		_, _ = c.Acquire(ctx, "adm")
		cancel()
	}
	tn.down[1].Store(false)
	tn.down[2].Store(false)
	ctx, cancel := context.WithTimeout(bg(), 10*time.Second)
	defer cancel()
	l, err := c.Acquire(ctx, "adm")
	if err != nil {
		t.Fatalf("after failed attempts: %v (admitted %d)", err, len(c.rounds))
	}
	_ = l.Release(bg())
	if len(c.rounds) != 0 {
		t.Errorf("%d admissions left", len(c.rounds))
	}
}

// An Acquire waiting for admission returns when its ctx ends.
func TestAdmissionWaitEndsWithCtx(t *testing.T) {
	tn := newNodesWith(t, 3, func(o *redis.Options) { o.PoolSize = 1 })
	c := newClient(t, tn, WithTTL(4*time.Second), WithNodeTimeout(time.Second))
	for i := range tn.stall {
		tn.stall[i].Store(true)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.TryAcquire(bg(), "held-adm") // holds the one admission for a node timeout
	}()
	for len(c.rounds) == 0 {
		time.Sleep(time.Millisecond) // polling the admissions: no event to wait for
	}
	ctx, cancel := context.WithCancel(bg())
	res := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, "other")
		res <- err
	}()
	for !waitsForAdmission() {
		time.Sleep(time.Millisecond) // polling goroutine states: no event to wait for
	}
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v", err)
		}
	case <-done:
		t.Errorf("Acquire waited for the admission past its ctx")
		<-res
	}
	<-done
	for i := range tn.stall {
		tn.stall[i].Store(false)
	}
}

// Close during an extension batch returns, and the lock stays valid.
func TestCloseWaitsForExtensionBatch(t *testing.T) {
	tn := newNodes(t, 3)
	armed := new(atomic.Bool)
	for _, rdb := range tn.clients {
		rdb.AddHook(extensionGate{armed})
	}
	c, err := New(tn.clients, WithTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Bootstrap(bg()); err != nil {
		t.Fatal(err)
	}
	l, err := c.Acquire(bg(), "close-batch", WithAutoExtend(true))
	if err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	for !batchRunning() {
		time.Sleep(time.Millisecond) // polling goroutine states: no event to wait for
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if batchRunning() {
		t.Error("batch outlived Close")
	}
	if !l.Valid() {
		t.Errorf("the lock ended with Close: %v", l.Err())
	}
}

// waitsForAdmission reports whether an acquisition waits in admit.
func waitsForAdmission() bool {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "[select") && strings.Contains(g, "(*Client).admit") {
			return true
		}
	}
	return false
}
