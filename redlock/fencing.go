package redlock

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/internal/reintroduce"
	"github.com/quorumlock/quorumlock/quorum"
)

// Fence tokens. The acquisition script reads the key's counter on each
// granting node atomically with SET NX, together with the node's clock. The
// token is the larger of (highest counter + 1) and (latest node clock, in
// µs), written back as "raise to at least" to a majority before the lock is
// returned, and the validity is checked only after that write.
//
// Why the clock floor: counters are durable state, and the quarantine only
// protects keys that expire. When the nodes where the previous holder wrote
// its token all lost their data, the next holder's majority may find no
// counter at all. But each of those nodes then served a restart quarantine
// Q between the loss and its next grant, measured on its own clock, and the
// skew guard keeps every voting node's clock within maxSkew of the voting
// client's (whose clocks agree to within the NTP error e). A token is at
// most its round's latest node clock + maxSkew + e + one node timeout ahead
// of real time, so the next holder's floor exceeds the previous token
// whenever Q > 4·maxSkew + nodeTimeout (+4e): New refuses fencing
// otherwise, and with the quarantine or the skew guard off. The argument
// is in DESIGN.md.

// writeFence is the second round of a fenced acquisition: it computes the
// token from the granting votes and raises the counter to it on a majority.
func (c *Client) writeFence(ctx context.Context, req *request, votes []quorum.Vote[vote]) (uint64, error) {
	var granted []int
	var highest, floor int64
	for _, v := range votes {
		if v.Outcome == quorum.Yes {
			granted = append(granted, v.Node)
			highest = max(highest, v.Value.value)
			floor = max(floor, v.Value.nodeUs)
		}
	}
	token := max(highest+1, floor)
	if reintroduce.FenceWithoutClockFloor.Load() {
		token = highest + 1
	}
	arg := strconv.FormatInt(token, 10)
	raise := fenceScript.calls(len(granted), 1, fencePrefix+req.key, arg)
	c.bg.add(len(granted))
	r := quorum.StartNeed(ctx, len(granted), c.Quorum(), req.bounds(), func(ctx context.Context, j int) (struct{}, bool, error) {
		defer c.bg.done()
		n := c.nodes[granted[j]]
		if err := n.start(req.s.requestTimeout); err != nil {
			return struct{}{}, false, err
		}
		got, err := raise.run(ctx, n.rdb, j).Int64()
		n.finish(err)
		return struct{}{}, err == nil && got == token, err
	})
	if d := r.Decide(); !d.OK {
		return 0, fmt.Errorf("the fence token reached %d of %d needed nodes", d.Yes, r.Need())
	}
	return uint64(token), nil
}

// FencedSet is the storage-side half of fencing: it sets key to value on rdb
// (the store the lock protects, not a lock node) only when fence is not lower
// than the highest fence token already accepted for key, and records fence as
// the new highest, atomically. A holder whose lock expired while it was
// paused carries a lower token than the holder after it, so its late write
// fails with an error matching ErrStaleFence and the newer value survives.
//
// An equal token is accepted: it is the same holder writing again (tokens
// are unique per acquisition; two holders never share one while the
// assumptions of the README's safety section hold). The highest token is
// kept under "quorumlock:fenced:" + key.
func FencedSet(ctx context.Context, rdb redis.Scripter, key string, value any, fence uint64) error {
	ctx = orBackground(ctx)
	if key == "" {
		return errors.New("redlock: FencedSet: empty key")
	}
	if fence == 0 {
		return errors.New("redlock: FencedSet: fence token 0: acquire the lock WithFencing")
	}
	if rdb == nil {
		return errors.New("redlock: FencedSet: nil store client")
	}
	res, err := fencedSetScript.run(ctx, rdb, 2, key, fencedPrefix+key, strconv.FormatUint(fence, 10), value).Int64Slice()
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return errors.New("redlock: FencedSet: malformed reply from the fenced write script")
	}
	if res[0] != 1 {
		return withDetail(ErrStaleFence, fmt.Sprintf("write to %q with token %d refused: token %d already accepted", key, fence, res[1]))
	}
	return nil
}
