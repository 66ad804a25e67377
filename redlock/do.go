package redlock

import (
	"context"
	"errors"
)

// Do acquires the lock on key (blocking like Acquire), runs fn, and releases
// the lock — also when fn returns an error or panics (the panic is passed on
// after the release). The error of fn comes back unchanged, joined with the
// release error if there is one; a release error matching ErrExpired or
// ErrNotHeld means the lock ended while fn ran.
//
// The ctx given to fn is cancelled the moment the lock's validity ends or an
// extension is refused; context.Cause(ctx) then matches ErrLockLost and says
// why. It also carries the lock, so that commands sent through a client
// guarded with Guard are refused once the lock is gone. Auto-extension is on
// unless opts turn it off (WithAutoExtend(false)).
//
// Do returns by ctx: when ctx has ended, the release goes on in the
// background (see Lock.Release) instead of holding the caller.
func (c *Client) Do(ctx context.Context, key string, fn func(ctx context.Context) error, opts ...LockOption) (err error) {
	ctx = orBackground(ctx)
	if fn == nil {
		return errors.New("redlock: Do: nil function")
	}
	opts = append([]LockOption{WithAutoExtend(true)}, opts...)
	l, err := c.Acquire(ctx, key, opts...)
	if err != nil {
		return err
	}
	fctx, cancel := l.Context(ctx)
	defer func() {
		cancel()
		p := recover()
		rerr := l.Release(ctx)
		if rerr != nil && ctx.Err() != nil && errors.Is(rerr, ctx.Err()) {
			rerr = nil // fn already reports the ctx; the deletes go on
		}
		if p != nil {
			panic(p)
		}
		if rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	return fn(fctx)
}

// Context returns a child of parent that carries the lock (for Guard) and is
// cancelled when the lock ends, with the lock's cause (ErrReleased, or an
// error matching ErrLockLost). Call the cancel function when done with it.
func (l *Lock) Context(parent context.Context) (context.Context, context.CancelFunc) {
	parent = orBackground(parent)
	ctx, cancel := context.WithCancelCause(context.WithValue(parent, lockKey{}, l))
	stop := context.AfterFunc(l.lease.ctx, func() { cancel(context.Cause(l.lease.ctx)) })
	return ctx, func() {
		stop()
		cancel(context.Canceled)
	}
}

type lockKey struct{}

// FromContext returns the lock carried by ctx (see Lock.Context and
// Client.Do), or nil.
func FromContext(ctx context.Context) *Lock {
	if ctx == nil {
		return nil
	}
	l, _ := ctx.Value(lockKey{}).(*Lock)
	return l
}
