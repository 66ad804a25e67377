package lab

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// runIDs gives embedded nodes what a real redis-server reports in INFO
// server and miniredis does not: a run id that changes with every restart,
// and the uptime since. The request still travels to the node (so a node
// that is down, paused or cut off fails it as a real one would); only the
// node's refusal of the section is replaced by the answer.
type runIDs struct {
	mu   sync.Mutex
	gen  []int
	born []time.Time
}

func newRunIDs(nodes int) *runIDs {
	r := &runIDs{gen: make([]int, nodes), born: make([]time.Time, nodes)}
	for i := range r.born {
		r.born[i] = time.Now()
	}
	return r
}

// restarted gives node n a new run id.
func (r *runIDs) restarted(n int) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.gen[n]++
	r.born[n] = time.Now()
	r.mu.Unlock()
}

func (r *runIDs) info(n int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("# Server\r\nrun_id:%08x%032x\r\nuptime_in_seconds:%d\r\n", n, r.gen[n], int64(time.Since(r.born[n]).Seconds()))
}

// install adds the hook to the clients of one view, node by node.
func (r *runIDs) install(clients []redis.UniversalClient) {
	if r == nil {
		return
	}
	for i, c := range clients {
		c.AddHook(infoHook{r: r, node: i})
	}
}

type infoHook struct {
	r    *runIDs
	node int
}

func (h infoHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h infoHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h infoHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		sc, ok := cmd.(*redis.StringCmd)
		if !ok || cmd.Name() != "info" || err == nil || !strings.Contains(err.Error(), "not supported") {
			return err
		}
		if _, isNet := err.(net.Error); isNet {
			return err
		}
		sc.SetErr(nil)
		sc.SetVal(h.r.info(h.node))
		return nil
	}
}
