// Command handofftrace takes one hand-off of a contended lock between
// processes apart: workers, each with a Client and connections of its own,
// contend for one key as in the bench's contention figure, and every step of
// every hand-off is timestamped — the release's start, each node's delete
// reply, each node's announcement as a subscriber hears it, the next
// holder's winning round (its start and each vote), and Acquire's return —
// so that the report says where the time between a release and the next
// acquisition goes.
//
//	go run ./bench/handofftrace            # 5 docker nodes
//	go run ./bench/handofftrace -embedded  # 5 miniredis nodes in this process
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/bench"
	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/redlock"
)

// Argument positions in an EVALSHA of the scripts (after "evalsha", hash).
const (
	acquireKeys   = "6" // acquire.lua's number of keys
	acquireArgs   = 21  // and of arguments: evalsha, hash, numkeys, 6 keys, 12 ARGV
	releaseKeys   = "6" // release.lua's
	releaseArgs   = 15  // evalsha, hash, numkeys, 6 keys, 6 ARGV
	acquireToken  = 9   // ARGV[1]
	acquireWaiter = 16  // ARGV[8]
	releaseToken  = 9   // ARGV[1]
)

type cmdEvent struct {
	worker, node int
	release      bool
	token, id    string
	start, end   time.Duration
	status       int64 // acquire: vote status; release: 1 deleted
}

type annEvent struct {
	node        int
	token, head string
	at          time.Duration
}

type opEvent struct {
	worker                      int
	want, got, relStart, relEnd time.Duration
	token                       string
}

type recorder struct {
	start time.Time
	mu    sync.Mutex
	cmds  []cmdEvent
	anns  []annEvent
	ops   []opEvent
}

func (r *recorder) now() time.Duration { return time.Since(r.start) }

type hook struct {
	r            *recorder
	worker, node int
}

func (h hook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h hook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
func (h hook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		args := cmd.Args()
		if len(args) < 3 || (cmd.Name() != "evalsha" && cmd.Name() != "eval") {
			return next(ctx, cmd)
		}
		nk := fmt.Sprint(args[2])
		acquire := nk == acquireKeys && len(args) == acquireArgs
		release := nk == releaseKeys && len(args) == releaseArgs
		if !acquire && !release {
			return next(ctx, cmd)
		}
		e := cmdEvent{worker: h.worker, node: h.node, release: release, start: h.r.now()}
		err := next(ctx, cmd)
		e.end = h.r.now()
		if e.release {
			e.token = fmt.Sprint(args[releaseToken])
			if c, ok := cmd.(*redis.Cmd); ok {
				e.status, _ = c.Int64()
			}
		} else {
			e.token, e.id = fmt.Sprint(args[acquireToken]), fmt.Sprint(args[acquireWaiter])
			if c, ok := cmd.(*redis.Cmd); ok {
				if s, err := c.Slice(); err == nil && len(s) > 0 {
					e.status, _ = s[0].(int64)
				}
			}
		}
		h.r.mu.Lock()
		h.r.cmds = append(h.r.cmds, e)
		h.r.mu.Unlock()
		return err
	}
}

func main() {
	embedded := flag.Bool("embedded", false, "miniredis nodes in this process instead of docker")
	workers := flag.Int("workers", 8, "processes contending")
	dur := flag.Duration("time", 5*time.Second, "how long to contend")
	critical := flag.Duration("critical", 2*time.Millisecond, "critical section")
	shared := flag.Bool("shared", false, "one Client for every worker (goroutines of one process)")
	flag.Parse()
	if err := run(*embedded, *shared, *workers, *dur, *critical); err != nil {
		fmt.Fprintln(os.Stderr, "handofftrace:", err)
		os.Exit(1)
	}
}

func run(embedded, shared bool, workers int, dur, critical time.Duration) error {
	ctx := context.Background()
	opts := cluster.Options{Backend: cluster.BackendDocker, Nodes: 5, Label: "handofftrace", NoClockFaults: true}
	if embedded {
		opts.Backend = cluster.BackendEmbedded
	}
	cl, err := cluster.New(ctx, opts)
	if err != nil {
		return err
	}
	defer cl.Close()
	n, err := bench.Open(ctx, bench.ClusterEnv(cl))
	if err != nil {
		return err
	}
	defer n.Close()
	rtt, err := bench.RoundTrip(ctx, n.Clients, 200)
	if err != nil {
		return err
	}
	// The same two rounds with nobody else about: what a hand-off would
	// cost if nothing competed with it.
	var idleAcq, idleRel []time.Duration
	for i := range 200 {
		k := n.Key("handofftrace-idle", fmt.Sprint(i%8))
		t0 := time.Now()
		l, err := n.Ours.Acquire(ctx, k)
		if err != nil {
			return err
		}
		t1 := time.Now()
		if err := l.Release(ctx); err != nil {
			return err
		}
		idleAcq, idleRel = append(idleAcq, t1.Sub(t0)), append(idleRel, time.Since(t1))
	}
	slices.Sort(idleAcq)
	slices.Sort(idleRel)
	fmt.Printf("alone: Acquire p50 %.3f ms (%.1f RTT), Release p50 %.3f ms (%.1f RTT)\n",
		ms(idleAcq[100]), ms(idleAcq[100])/rtt.RoundP50Ms, ms(idleRel[100]), ms(idleRel[100])/rtt.RoundP50Ms)
	r := &recorder{start: time.Now()}
	// The announcements, as a process subscribed to every node hears them.
	subCtx, stopSubs := context.WithCancel(ctx)
	defer stopSubs()
	var subs sync.WaitGroup
	for i, c := range n.Clients {
		ps := c.Subscribe(subCtx, "quorumlock:released")
		if _, err := ps.Receive(ctx); err != nil {
			return err
		}
		subs.Add(1)
		go func() {
			defer subs.Done()
			defer ps.Close()
			for {
				select {
				case <-subCtx.Done():
					return
				case m := <-ps.Channel():
					at := r.now()
					tok, rest, _ := strings.Cut(m.Payload, " ")
					head, _, _ := strings.Cut(rest, " ")
					r.mu.Lock()
					r.anns = append(r.anns, annEvent{node: i, token: tok, head: head, at: at})
					r.mu.Unlock()
				}
			}
		}()
	}
	key := n.Key("handofftrace")
	var wg sync.WaitGroup
	runCtx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var total atomic.Int64
	var one *redlock.Client
	if shared {
		c, conns, err := n.NewProcessClient()
		if err != nil {
			return err
		}
		for i, rc := range conns {
			rc.AddHook(hook{r: r, worker: -1, node: i})
		}
		one = c
	}
	for w := range workers {
		c := one
		if c == nil {
			var conns []redis.UniversalClient
			if c, conns, err = n.NewProcessClient(); err != nil {
				return err
			}
			for i, rc := range conns {
				rc.AddHook(hook{r: r, worker: w, node: i})
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for runCtx.Err() == nil {
				want := r.now()
				l, err := c.Acquire(runCtx, key)
				if err != nil {
					continue
				}
				got := r.now()
				total.Add(1)
				time.Sleep(critical)
				rs := r.now()
				_ = l.Release(context.Background())
				r.mu.Lock()
				r.ops = append(r.ops, opEvent{worker: w, want: want, got: got, relStart: rs, relEnd: r.now(), token: l.Token()})
				r.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	stopSubs()
	subs.Wait()
	analyse(r, rtt, workers, dur, total.Load())
	return nil
}

// analyse pairs each acquisition with the release before it and prints
// where the time went.
func analyse(r *recorder, rtt bench.RTTResult, workers int, dur time.Duration, total int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sort.Slice(r.ops, func(i, j int) bool { return r.ops[i].got < r.ops[j].got })
	byToken := map[string][]cmdEvent{}
	for _, e := range r.cmds {
		byToken[e.token] = append(byToken[e.token], e)
	}
	anns := map[string][]annEvent{}
	for _, a := range r.anns {
		anns[a.token] = append(anns[a.token], a)
	}
	var (
		delMaj, annMaj, wakeToRound, roundToMaj, majToRet, total2 []time.Duration
		rounds                                                    []int
		kinds                                                     = map[string]int{}
		slow                                                      []string
	)
	for k := 1; k < len(r.ops); k++ {
		prev, cur := r.ops[k-1], r.ops[k]
		if prev.worker == cur.worker || cur.want > prev.relStart {
			continue // not a hand-off to a waiter
		}
		t0 := prev.relStart
		dels := byToken[prev.token]
		var delEnds []time.Duration
		for _, e := range dels {
			if e.release && e.end >= t0 {
				delEnds = append(delEnds, e.end)
			}
		}
		slices.Sort(delEnds)
		as := anns[prev.token]
		var annAt []time.Duration
		heads := map[string]int{}
		for _, a := range as {
			annAt = append(annAt, a.at)
			heads[a.head]++
		}
		slices.Sort(annAt)
		// The winner's rounds since the release began.
		win := byToken[cur.token]
		var winID string
		var roundStart time.Duration = -1
		var grants []time.Duration
		for _, e := range win {
			if e.release {
				continue
			}
			winID = e.id
			if roundStart < 0 || e.start < roundStart {
				roundStart = e.start
			}
			if e.status == 1 {
				grants = append(grants, e.end)
			}
		}
		slices.Sort(grants)
		tokens := map[string]bool{}
		for _, e := range r.cmds {
			if e.worker == cur.worker && !e.release && e.start >= t0 && e.start <= cur.got {
				tokens[e.token] = true
			}
		}
		rounds = append(rounds, len(tokens))
		if len(delEnds) < 3 || len(annAt) < 3 || len(grants) < 3 || roundStart < 0 {
			kinds["incomplete trace"]++
			continue
		}
		named := heads[winID]
		kind := "woken by the release"
		switch {
		case roundStart < annAt[2]:
			if winID != "" && named < 3 {
				kind = "round before a majority announced (not named head)"
			} else {
				kind = "round before a majority announced"
			}
		case named < 3 && winID != "":
			kind = fmt.Sprintf("not named head by a majority (named by %d)", named)
		case roundStart-annAt[2] > 2*time.Millisecond:
			kind = "round long after the announcements (timer?)"
		}
		kinds[kind]++
		delMaj = append(delMaj, delEnds[2]-t0)
		annMaj = append(annMaj, annAt[2]-t0)
		wakeToRound = append(wakeToRound, roundStart-annAt[2])
		roundToMaj = append(roundToMaj, grants[2]-roundStart)
		majToRet = append(majToRet, cur.got-grants[2])
		total2 = append(total2, cur.got-t0)
		if cur.got-t0 > 20*time.Millisecond && len(slow) < 8 {
			line := fmt.Sprintf("  at %v (winner waiting since %+v): %v: winner %d (id %.8s) rounds %d, heads named %v, round start %+v after majority announced",
				t0, cur.want-t0, cur.got-t0, cur.worker, winID, len(tokens), headsShort(heads), roundStart-annAt[2])
			for _, a := range as {
				line += fmt.Sprintf("\n    announce node %d head %.8s at %+v", a.node, a.head, a.at-t0)
			}
			for _, e := range r.cmds {
				mine := e.worker == cur.worker || (e.worker < 0 && e.id != "" && e.id == winID)
				if mine && !e.release && e.end >= cur.want && e.start <= cur.got {
					line += fmt.Sprintf("\n    vote node %d token %.6s id %.8s sent %+v answered %+v status %d", e.node, e.token, e.id, e.start-t0, e.end-t0, e.status)
				}
			}
			slow = append(slow, line)
		}
	}
	fmt.Printf("%d workers, %v, %d acquisitions; RTT (PING all nodes) p50 %.3f ms\n", workers, dur, total, rtt.RoundP50Ms)
	q := func(name string, d []time.Duration) {
		if len(d) == 0 {
			return
		}
		s := slices.Clone(d)
		slices.Sort(s)
		at := func(p float64) time.Duration { return s[int(p*float64(len(s)-1))] }
		fmt.Printf("  %-44s p50 %8.3f ms (%5.1f RTT)  p90 %8.3f  p99 %8.3f  max %8.3f\n", name,
			ms(at(0.5)), ms(at(0.5))/rtt.RoundP50Ms, ms(at(0.9)), ms(at(0.99)), ms(s[len(s)-1]))
	}
	fmt.Printf("hand-offs: %d\n", len(total2))
	q("release start → 3rd delete reply", delMaj)
	q("release start → 3rd announcement heard", annMaj)
	q("3rd announcement → winner's round start", wakeToRound)
	q("round start → 3rd grant", roundToMaj)
	q("3rd grant → Acquire returns", majToRet)
	q("release start → Acquire returns", total2)
	rc := map[int]int{}
	for _, n := range rounds {
		rc[n]++
	}
	fmt.Printf("winner's rounds per hand-off: %v\n", rc)
	var acq, rel int
	for _, e := range r.cmds {
		if e.release {
			rel++
		} else {
			acq++
		}
	}
	fmt.Printf("per acquisition: %.1f acquisition scripts, %.1f release scripts\n", float64(acq)/float64(total), float64(rel)/float64(total))
	for k, v := range kinds {
		fmt.Printf("  %-60s %d\n", k, v)
	}
	if len(slow) > 0 {
		fmt.Println("slow hand-offs:")
		for _, s := range slow {
			fmt.Println(s)
		}
	}
}

func headsShort(h map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range h {
		if len(k) > 8 {
			k = k[:8]
		}
		out[k] += v
	}
	return out
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
