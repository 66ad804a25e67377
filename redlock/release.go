package redlock

import (
	"context"
	"errors"
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
// there. Deletes are bounded by the request timeout, not by any caller's
// ctx; a delete waiting for a free connection of its node waits until until
// at most (the lock's validity; zero: a TTL from the round's start), and
// gets the request timeout once it has one. A lock granted by releases has
// no round (acq nil): it is deleted on every node.
func (c *Client) releaseAfter(req *request, token string, acq *quorum.Round[vote], held, announce bool, holder string, until time.Time) release {
	if acq == nil {
		r := c.startRelease(req, c.releaseArgs(token, announce, holder), c.every, until)
		return release{r: r, nodes: c.every, done: r.Done()}
	}
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
	rel := release{r: c.startRelease(req, args, now, until), nodes: now}
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
				c.startRelease(req, args, hold, until).Wait()
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
// other client for the rest of its TTL. until bounds the wait for a free
// connection (see deleteOn); zero stands for a TTL from now, when the key
// expires by itself.
func (c *Client) startRelease(req *request, a releaseArgs, nodes []int, until time.Time) *quorum.Round[bool] {
	if until.IsZero() {
		until = c.clk.Now().Add(req.s.ttl)
	}
	del := releaseScript.calls(len(nodes), 6, req.keyArg, req.queue, req.queueExp, req.gone, sentinelKey, runIDKey,
		a.token, a.channel, a.head, a.holder, req.goneMs, c.quarantineMs)
	c.bg.add(len(nodes))
	return quorum.StartNeed(context.Background(), len(nodes), c.Quorum(), req.bounds(), func(ctx context.Context, j int) (bool, bool, error) {
		defer c.bg.done()
		n := c.nodes[nodes[j]]
		got, err := c.deleteOn(ctx, n, del, j, req.s.requestTimeout, until)
		if err != nil && err != errNotAnswering && err != errNoSlot {
			c.background(func() {
				for try := 0; try < 2; try++ {
					ctx, cancel := context.WithTimeout(context.Background(), req.s.requestTimeout)
					_, err := c.deleteOn(ctx, n, del, j, req.s.requestTimeout, until)
					cancel()
					if err == nil || err == errNotAnswering || err == errNoSlot {
						return
					}
				}
			})
		}
		return got, got, err
	})
}

// errNoSlot fails a delete that found no free connection of its node before
// the lock's validity ended: the key expires by itself by then.
var errNoSlot = errors.New("no free connection before the lock's validity ended; the key expires by itself")

// deleteOn runs copy j of the release script on node n, within ctx when
// one of the node's delete slots is free at once and no other delete waits.
// Otherwise the delete queues for the node, until until at most: the
// deletes that queued together are sent in one pipeline as soon as a slot
// is free, each with the request timeout (silence) from then, so that the
// wait does not eat into the call's time — when many locks are released at
// once, most deletes wait (issue #12), and one round trip for many of them
// drains the queue that many times faster. A node that looks hung fails
// the delete at once, before the wait; a delete that waited is sent
// whatever the node's state, since a refusal after the wait would send
// nothing that could show the node answering again, and each such call is
// bounded by its request timeout.
func (c *Client) deleteOn(ctx context.Context, n *node, del calls, j int, silence time.Duration, until time.Time) (bool, error) {
	// A delete counts as under way on the node (node.start) only once it
	// is sent: thousands queued must not make a node that answers look
	// hung.
	if n.silent(silence) {
		return false, errNotAnswering
	}
	if n.idleDeletes() {
		select {
		case n.slots <- struct{}{}:
			n.pending.Add(1)
			got, err := del.run(ctx, n.rdb, j).Int64()
			<-n.slots
			n.finish(err)
			return got == 1, err
		default:
		}
	}
	r := c.queueDelete(n, &queuedDelete{del: del, j: j, silence: silence, done: make(chan nodeReply, 1)}, until)
	return r.got == 1, r.err
}

// queuedDelete is a delete waiting for a slot of its node.
type queuedDelete struct {
	del     calls
	j       int
	silence time.Duration
	done    chan nodeReply // buffered 1: the reply, once sent
	taken   bool           // in a pipeline: the reply will come; guarded by the node's delMu
	dropped bool           // gave up waiting; guarded by the node's delMu
}

// idleDeletes reports whether no delete waits for a slot of n.
func (n *node) idleDeletes() bool {
	n.delMu.Lock()
	defer n.delMu.Unlock()
	return len(n.delQ) == 0
}

// queueDelete queues d for n's next pipeline of deletes, and returns its
// reply, or errNoSlot when no slot was free before until.
func (c *Client) queueDelete(n *node, d *queuedDelete, until time.Time) nodeReply {
	left := until.Sub(c.clk.Now())
	if left <= 0 {
		return nodeReply{err: errNoSlot}
	}
	n.delMu.Lock()
	n.delQ = append(n.delQ, d)
	if !n.delFlushing {
		n.delFlushing = true
		c.bg.add(1)
		go c.flushDeletes(n)
	}
	n.delMu.Unlock()
	t := c.clk.NewTimer(left)
	defer t.Stop()
	select {
	case r := <-d.done:
		return r
	case <-t.C():
	}
	n.delMu.Lock()
	if !d.taken {
		d.dropped = true
		n.delMu.Unlock()
		return nodeReply{err: errNoSlot}
	}
	n.delMu.Unlock()
	return <-d.done // sent meanwhile: bounded by its request timeout
}

// flushDeletes sends n's queued deletes, maxBatch at most in one pipeline,
// each pipeline once one of n's delete slots is free, until none is left.
func (c *Client) flushDeletes(n *node) {
	defer c.bg.done()
	for {
		n.slots <- struct{}{}
		n.delMu.Lock()
		var batch []*queuedDelete
		for len(n.delQ) > 0 && len(batch) < maxBatch {
			d := n.delQ[0]
			n.delQ[0] = nil
			n.delQ = n.delQ[1:]
			if !d.dropped {
				d.taken = true
				batch = append(batch, d)
			}
		}
		if len(batch) == 0 {
			n.delQ = nil
			n.delFlushing = false
			n.delMu.Unlock()
			<-n.slots
			return
		}
		n.delMu.Unlock()
		c.bg.add(1)
		go func() {
			defer c.bg.done()
			c.sendDeletes(n, batch)
			<-n.slots
		}()
	}
}

// sendDeletes sends the deletes to n in one pipeline, with the longest of
// their request timeouts, and hands each its reply.
func (c *Client) sendDeletes(n *node, batch []*queuedDelete) {
	var silence time.Duration
	for _, d := range batch {
		silence = max(silence, d.silence)
	}
	ctx, cancel := context.WithTimeout(context.Background(), silence)
	defer cancel()
	// One request on the wire, as far as telling a hung node goes.
	n.pending.Add(1)
	calls := make([]piped, len(batch))
	for k, d := range batch {
		calls[k] = piped{d.del, d.j}
	}
	cmds, answer := runPiped(ctx, n.rdb, calls)
	for k, d := range batch {
		got, err := cmds[k].Int64()
		d.done <- nodeReply{got: got, err: err}
	}
	n.finish(answer)
}
