package redlock

import (
	"context"
	"time"

	"github.com/quorumlock/quorumlock/quorum"
)

// release is a round of deletes: r's votes are for nodes[j]. done is closed
// once every delete, including those that waited for the acquisition, has
// ended.
type release struct {
	r     *quorum.Round[bool]
	nodes []int
	done  <-chan struct{}
}

// releaseAfter deletes the key holding token from every node that may hold
// it after the acquisition round acq: at once on the nodes that granted or
// failed (the SET may have landed) — the returned round — and, in the
// background, on the nodes whose acquisition call still runs, once it ended
// (a late SET must not outlive its delete). A held lock (held) is deleted on
// the nodes that refused it too: an extension may have repaired the key
// there. Deletes are bounded by the node timeout, not by any caller's ctx.
func (c *Client) releaseAfter(req *request, token string, acq *quorum.Round[vote], held, announce bool, holder string) release {
	votes := acq.Collect()
	// One allocation for both lists: each has at most one entry per node.
	buf := make([]int, 0, 2*len(votes))
	now, later := buf[:0:len(votes)], buf[len(votes):len(votes)]
	for _, v := range votes {
		switch {
		case v.Outcome == quorum.Pending:
			later = append(later, v.Node)
		case v.Outcome != quorum.No || held:
			now = append(now, v.Node)
		}
	}
	args := c.releaseArgs(token, announce, holder)
	rel := release{r: c.startRelease(req, args, now), nodes: now}
	rel.done = rel.r.Done()
	if len(later) > 0 {
		done := make(chan struct{})
		rel.done = done
		c.background(func() {
			defer close(done)
			defer rel.r.Wait()
			final := acq.Wait()
			var hold []int
			for _, i := range later {
				if final[i].Outcome != quorum.No || held {
					hold = append(hold, i)
				}
			}
			if len(hold) > 0 {
				c.startRelease(req, args, hold).Wait()
			}
		})
	}
	return rel
}

// releaseArgs are the release script's per-lock arguments (ARGV), boxed
// once for the release's rounds: the token, the channel to announce on
// ("" for none), whether the announcement names the queue's head, and the
// holder's place in the queue.
type releaseArgs struct{ token, channel, head, holder any }

// Boxed constants of the release script's arguments.
var (
	argEmpty    any = ""
	argZero     any = "0"
	argOne      any = "1"
	argReleased any = releasedChannel
)

func (c *Client) releaseArgs(token string, announce bool, holder string) releaseArgs {
	a := releaseArgs{token: token, channel: argEmpty, head: argZero, holder: argEmpty}
	if announce {
		a.channel = argReleased
		if c.ns.fair {
			a.head = argOne
		}
	}
	if c.ns.fair && holder != "" {
		a.holder = holder
	}
	return a
}

// startRelease deletes the key from the given nodes where it still holds
// the token; votes are indexed like nodes and say whether the key was
// there. A delete that fails (a timeout, a broken connection) is tried
// again in the background, twice at most: a key left behind blocks every
// other client for the rest of its TTL.
func (c *Client) startRelease(req *request, a releaseArgs, nodes []int) *quorum.Round[bool] {
	del := releaseScript.calls(len(nodes), 4, req.keyArg, req.queue, req.queueExp, req.gone, a.token, a.channel, a.head, a.holder, req.goneMs)
	c.bg.add(len(nodes))
	return quorum.StartNeed(context.Background(), len(nodes), c.Quorum(), req.bounds(), func(ctx context.Context, j int) (bool, bool, error) {
		defer c.bg.done()
		n := c.nodes[nodes[j]]
		got, err := c.deleteOn(ctx, n, del, j, req.s.requestTimeout)
		if err != nil && err != errNotAnswering {
			c.background(func() {
				for try := 0; try < 2; try++ {
					ctx, cancel := context.WithTimeout(context.Background(), req.s.requestTimeout)
					_, err := c.deleteOn(ctx, n, del, j, req.s.requestTimeout)
					cancel()
					if err == nil || err == errNotAnswering {
						return
					}
				}
			})
		}
		return got, got, err
	})
}

// deleteOn runs copy j of the release script on node n.
func (c *Client) deleteOn(ctx context.Context, n *node, del calls, j int, silence time.Duration) (bool, error) {
	if err := n.start(silence); err != nil {
		return false, err
	}
	got, err := del.run(ctx, n.rdb, j).Int64()
	n.finish(err)
	return got == 1, err
}
