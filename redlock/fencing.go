package redlock

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// StaleFenceError reports a fenced write refused because a higher token was
// already accepted for the resource. It matches ErrStaleFence.
type StaleFenceError struct {
	Key     string
	Fence   uint64 // the token of the refused write
	Highest uint64 // the highest token accepted so far
}

func (e *StaleFenceError) Error() string {
	return fmt.Sprintf("redlock: write to %q with fence token %d refused: token %d already accepted", e.Key, e.Fence, e.Highest)
}

// Is makes a *StaleFenceError match ErrStaleFence.
func (e *StaleFenceError) Is(target error) bool { return target == ErrStaleFence }

// FencedSet is the storage-side half of fencing: it sets key to value on rdb
// (the store the lock protects, not a lock node) only when fence is not lower
// than the highest fence token already accepted for key, and records fence as
// the new highest, atomically. A holder whose lock expired while it was
// paused carries an older token than the holder after it, so its late write
// fails with a *StaleFenceError (matching ErrStaleFence) and the newer value
// survives. The highest token is kept under FencedPrefix + key.
func FencedSet(ctx context.Context, rdb redis.Scripter, key string, value any, fence uint64) error {
	if key == "" {
		return errors.New("redlock: empty key")
	}
	if fence == 0 {
		return errors.New("redlock: fence token 0: acquire the lock WithFencing")
	}
	res, err := fencedSetScript.Run(ctx, rdb, []string{key, FencedPrefix + key},
		strconv.FormatUint(fence, 10), value).Int64Slice()
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return errors.New("redlock: malformed reply from the fenced write script")
	}
	if res[0] != 1 {
		return &StaleFenceError{Key: key, Fence: fence, Highest: uint64(res[1])}
	}
	return nil
}
