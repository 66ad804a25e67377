package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
	"github.com/quorumlock/quorumlock/redlock"
)

// lockUserACL is the ACL of a Redis user that takes locks with quorumlock,
// every feature on (restart quarantine, wake-up on release, fencing,
// Bootstrap, Inspect), in ACL SETUSER syntax. It is the one place that
// states it; TestLockUserACL shows it is enough and TestLockUserACLIsMinimal
// that every rule in it is needed. What each rule is for, and what happens
// without it (Redis 7.0, go-redis v9):
//
//   - +eval +evalsha: the scripts (EVALSHA, then EVAL when the node's
//     script cache lacks the script). Without either, Bootstrap and every
//     acquisition fail with NOPERM.
//   - +get +set +del +pexpire +pttl +time +publish: the commands the
//     scripts call; Redis checks them against the caller's ACL. Without
//     +get or +time Bootstrap fails, without +set every acquisition,
//     without +pexpire Extend, without +del or +publish Release ("no
//     quorum"). Without +pttl a vote refused because the key is taken
//     fails instead (a node error, not "taken"), and Inspect fails.
//   - +zadd +zrange +zrem +zrank +zcard +hset +hget +hdel: the waiting
//     queue the scripts keep per key (WithFairness). Without them every
//     acquisition fails; with WithFairness(false) they are not needed.
//   - +info: the restart check inside every vote reads INFO server (run
//     id), and first contact reads INFO server and memory (version,
//     eviction policy). Without it no node votes, and the error names the
//     missing permission.
//   - +subscribe: release announcements. Without it a waiter is not woken
//     by a release and waits for its retry delay (no error).
//   - +ping: go-redis checks an idle subscription with PING every 3 s and,
//     refused, reconnects it, losing announcements meanwhile (no error).
//   - ~*: lock keys and the library's quorumlock:* keys. It can be narrowed
//     to the application's lock keys plus ~quorumlock:* (tested).
//   - &quorumlock:released: the announcement channel. Without it Release
//     fails (its script publishes) and waiters are not woken.
//
// Not needed: +unsubscribe (a Client keeps its one subscription per node
// until Close), and CLIENT SETINFO, which go-redis sends on every new
// connection and whose refusal it ignores (ACL LOG records it;
// +client|setinfo or Options.DisableIdentity silences it).
const lockUserACL = "+eval +evalsha +get +set +del +pexpire +pttl +time +publish +info +subscribe +ping " +
	"+zadd +zrange +zrem +zrank +zcard +hset +hget +hdel ~* &quorumlock:released"

// ignoredDenials are refusals that cost nothing (see lockUserACL).
var ignoredDenials = []string{"client|setinfo"}

// aclEnv is docker nodes with a password for the default user (the test's
// admin) and ACL users.
type aclEnv struct {
	c     *cluster.Cluster
	admin []redis.UniversalClient
}

func newACLEnv(t *testing.T, nodes int, users ...cluster.User) *aclEnv {
	t.Helper()
	c := clustertest.New(t, cluster.Options{
		Backend: cluster.BackendDocker, Nodes: nodes, Password: "admin-password", Users: users,
	})
	e := &aclEnv{c: c, admin: c.Clients()}
	ctx := ctxFor(t, 30*time.Second)
	for i, a := range e.admin {
		// Room for every user's distinct refusals.
		if err := a.ConfigSet(ctx, "acllog-max-len", "1024").Err(); err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	// The nodes are fresh; the users' own Bootstrap calls then only check
	// their permissions, whatever order they run in.
	boot, err := redlock.New(e.admin)
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	if err := boot.Bootstrap(ctx); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	e.resetLog(t)
	return e
}

func (e *aclEnv) resetLog(t *testing.T) {
	t.Helper()
	for i, a := range e.admin {
		if err := a.Do(context.Background(), "ACL", "LOG", "RESET").Err(); err != nil {
			t.Fatalf("node %d: ACL LOG RESET: %v", i, err)
		}
	}
}

// denial is one ACL LOG entry: what was refused to whom.
type denial struct {
	node    int
	user    string
	reason  string // command, key, channel, auth
	context string // toplevel, lua, multi
	object  string
	count   int64
}

func (d denial) String() string {
	return fmt.Sprintf("node %d: %s %s in %s (×%d)", d.node, d.reason, d.object, d.context, d.count)
}

// denials reads ACL LOG on every node, without the ignored entries.
func (e *aclEnv) denials(t *testing.T) map[string][]denial {
	t.Helper()
	out := make(map[string][]denial)
	for i, a := range e.admin {
		entries, err := a.ACLLog(context.Background(), 1024).Result()
		if err != nil {
			t.Fatalf("node %d: ACL LOG: %v", i, err)
		}
		for _, en := range entries {
			d := denial{node: i, user: en.Username, reason: en.Reason, context: en.Context, object: en.Object, count: en.Count}
			if slices.Contains(ignoredDenials, d.object) {
				continue
			}
			out[d.user] = append(out[d.user], d)
		}
	}
	return out
}

// deniedTo reports whether ACL LOG has any entry for user (ignored ones
// included: the waits below only ask whether the user was refused at all).
func (e *aclEnv) deniedTo(user string, object string) bool {
	for _, a := range e.admin {
		entries, err := a.ACLLog(context.Background(), 1024).Result()
		if err != nil {
			return false
		}
		for _, en := range entries {
			if en.Username == user && (object == "" || en.Object == object) && !slices.Contains(ignoredDenials, en.Object) {
				return true
			}
		}
	}
	return false
}

// waitFor polls cond until it holds, the user is refused something (then
// the scenario goes on: the refusal is what the caller looks for), or
// within passes.
func (e *aclEnv) waitFor(user, what string, within time.Duration, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if e.deniedTo(user, "") {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not seen within %v", what, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// everyNode reports whether, on every node, some connection of user
// matches: its CLIENT LIST fields (name=value) pass ok.
func (e *aclEnv) everyNode(user string, ok func(fields map[string]string) bool) bool {
	for _, a := range e.admin {
		list, err := a.ClientList(context.Background()).Result()
		if err != nil {
			return false
		}
		found := false
		for _, line := range strings.Split(list, "\n") {
			fields := make(map[string]string)
			for _, f := range strings.Fields(line) {
				if k, v, ok := strings.Cut(f, "="); ok {
					fields[k] = v
				}
			}
			if fields["user"] == user && ok(fields) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// subscribed reports whether user holds a subscription on every node.
func (e *aclEnv) subscribed(user string) bool {
	return e.everyNode(user, func(f map[string]string) bool { return f["sub"] != "" && f["sub"] != "0" })
}

// pinged reports whether user has, on every node, a connection whose last
// command was PING (go-redis' health check of an idle subscription).
func (e *aclEnv) pinged(user string) bool {
	return e.everyNode(user, func(f map[string]string) bool { return f["cmd"] == "ping" })
}

// lockScenario uses every feature of the library as user, on its own key:
// Bootstrap, a fenced acquisition, an extension, a second client (another
// view: another process) that waits on pub/sub long enough for go-redis'
// health check, is woken by the release and releases in turn. It returns
// the first step that failed; the steps after a failure that leaves
// nothing to do are skipped.
func (e *aclEnv) lockScenario(ctx context.Context, user string) error {
	// Long, so that the waits below (bounded at 15 s each) end well inside
	// the holder's validity on a busy machine. Nothing waits for it: the
	// waiter retries every second, or is cancelled once refused.
	const ttl = time.Minute
	key := "acl:" + user
	clientsIn := func(view string) ([]redis.UniversalClient, error) {
		v, err := e.c.View(view)
		if err != nil {
			return nil, err
		}
		return v.ClientsAs(user)
	}
	holderNodes, err := clientsIn("holder")
	if err != nil {
		return err
	}
	waiterNodes, err := clientsIn("waiter")
	if err != nil {
		return err
	}
	// The Client's TTL also sets its restart quarantine, which must cover
	// the TTL of its locks.
	holder, err := redlock.New(holderNodes, redlock.WithTTL(ttl))
	if err != nil {
		return err
	}
	defer holder.Close()
	waiter, err := redlock.New(waiterNodes, redlock.WithTTL(ttl))
	if err != nil {
		return err
	}
	defer waiter.Close()

	if err := holder.Bootstrap(ctx); err != nil {
		return fmt.Errorf("Bootstrap: %w", err)
	}
	first, err := holder.TryAcquire(ctx, key, redlock.WithFencing(true))
	if err != nil {
		return fmt.Errorf("TryAcquire: %w", err)
	}
	if err := first.Extend(ctx); err != nil {
		_ = first.Release(ctx)
		return fmt.Errorf("Extend: %w", err)
	}

	type result struct {
		l   *redlock.Lock
		err error
	}
	got := make(chan result, 1)
	wctx, cancel := context.WithTimeout(ctx, 2*ttl)
	defer cancel()
	go func() {
		// Woken by the release, or at the latest a second later: how soon
		// is the library's business, the refusals are this test's.
		l, err := waiter.Acquire(wctx, key, redlock.WithRetryDelay(time.Second, time.Second))
		got <- result{l, err}
	}()
	steps := []error{
		e.waitFor(user, "the waiter's subscription", 15*time.Second, func() bool { return e.subscribed(user) }),
		e.waitFor(user, "a health-check PING on the subscription", 15*time.Second, func() bool { return e.pinged(user) }),
		// The first waiter has its place in the key's queue.
		e.waitFor(user, "the waiter's place in the queue", 15*time.Second, func() bool { return waiter.Stats().VotesTaken >= 2 }),
	}
	// A second waiter queues behind the first: its first attempt finds the
	// queue (ZCARD), its next one its rank in it (ZRANK).
	behind, err := redlock.New(waiterNodes, redlock.WithTTL(ttl))
	if err != nil {
		return err
	}
	defer behind.Close()
	behindGot := make(chan result, 1)
	go func() {
		l, err := behind.Acquire(wctx, key, redlock.WithRetryDelay(time.Second, time.Second))
		behindGot <- result{l, err}
	}()
	steps = append(steps, e.waitFor(user, "the second waiter behind the first", 15*time.Second, func() bool { return behind.Stats().VotesQueued >= 4 }))
	if err := first.Release(ctx); err != nil {
		steps = append(steps, fmt.Errorf("Release: %w", err))
	}
	if e.deniedTo(user, "") {
		// Refused already: the waiter would only show it again, at the end
		// of its retry delay.
		cancel()
	}
	r := <-got
	if r.err != nil {
		steps = append(steps, fmt.Errorf("waiting Acquire: %w", r.err))
	}
	if r.l != nil {
		if _, err := waiter.Inspect(ctx, key); err != nil {
			steps = append(steps, fmt.Errorf("Inspect: %w", err))
		}
		if err := r.l.Release(ctx); err != nil {
			steps = append(steps, fmt.Errorf("second Release: %w", err))
		}
	} else {
		cancel() // the second waiter would wait in vain
	}
	b := <-behindGot
	if b.err != nil && r.err == nil {
		steps = append(steps, fmt.Errorf("second waiting Acquire: %w", b.err))
	}
	if b.l != nil {
		if err := b.l.Release(ctx); err != nil {
			steps = append(steps, fmt.Errorf("third Release: %w", err))
		}
	}
	return errors.Join(steps...)
}

func lockUser(name string, rules []string) cluster.User {
	return cluster.User{Name: name, Password: "pw-" + name, Rules: rules}
}

// A user with lockUserACL uses every feature and is refused nothing; so is
// a user whose keys are narrowed to its lock keys and quorumlock:*.
func TestLockUserACL(t *testing.T) {
	narrow := strings.Replace(lockUserACL, "~* ", "~acl:* ~quorumlock:* ", 1)
	if narrow == lockUserACL {
		t.Fatalf("no ~* in %q to narrow", lockUserACL)
	}
	acls := map[string]string{"locker": lockUserACL, "narrow-keys": narrow}
	var users []cluster.User
	for name, acl := range acls {
		users = append(users, lockUser(name, strings.Fields(acl)))
	}
	e := newACLEnv(t, 3, users...)
	ctx := ctxFor(t, 3*time.Minute)
	errs := make(map[string]error)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name := range acls {
		wg.Go(func() {
			err := e.lockScenario(ctx, name)
			mu.Lock()
			errs[name] = err
			mu.Unlock()
		})
	}
	wg.Wait()
	denied := e.denials(t)
	for name, acl := range acls {
		if errs[name] != nil {
			t.Errorf("as %s with %q: %v", name, acl, errs[name])
		}
		if d := denied[name]; len(d) > 0 {
			t.Errorf("%s refused with %q: %v", name, acl, d)
		}
	}
}

// Every rule of lockUserACL is needed: without it the same scenario is
// refused something. Each reduced rule set is a user of its own, all on the
// same nodes at once; ACL LOG says who was refused what.
func TestLockUserACLIsMinimal(t *testing.T) {
	rules := strings.Fields(lockUserACL)
	var users []cluster.User
	for i := range rules {
		users = append(users, lockUser(fmt.Sprintf("without-%d", i), slices.Delete(slices.Clone(rules), i, i+1)))
	}
	// A control with every rule, among the others: a refusal to it would
	// make the attribution below meaningless.
	control := lockUser("control", rules)
	e := newACLEnv(t, 3, append(users, control)...)
	ctx := ctxFor(t, 4*time.Minute)
	outcome := make([]error, len(rules))
	run := func(i int) { outcome[i] = e.lockScenario(ctx, users[i].Name) }

	// Without +eval a script runs only where another user has loaded it:
	// that user goes first, alone, on nodes with empty script caches.
	evalAt := slices.Index(rules, "+eval")
	for i, a := range e.admin {
		if err := a.ScriptFlush(ctx).Err(); err != nil {
			t.Fatalf("node %d: SCRIPT FLUSH: %v", i, err)
		}
	}
	if evalAt >= 0 {
		run(evalAt)
	}
	var wg sync.WaitGroup
	var controlErr error
	wg.Go(func() { controlErr = e.lockScenario(ctx, control.Name) })
	for i := range rules {
		if i != evalAt {
			wg.Go(func() { run(i) })
		}
	}
	wg.Wait()

	denied := e.denials(t)
	if controlErr != nil || len(denied[control.Name]) > 0 {
		t.Fatalf("the control user with every rule failed: %v; refused %v", controlErr, denied[control.Name])
	}
	for i, r := range rules {
		u := users[i].Name
		if len(denied[u]) == 0 {
			t.Errorf("without %s: refused nothing (scenario: %v); the rule looks unneeded", r, outcome[i])
			continue
		}
		t.Logf("without %-22s refused %v; the library saw: %v", r, denied[u], firstLine(outcome[i]))
	}
}

func firstLine(err error) string {
	if err == nil {
		return "no error"
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// A wrong password: the library's errors name each node that refused, by
// index and address, and never show a password.
func TestWrongPassword(t *testing.T) {
	const (
		right = "right-password-7c1f"
		wrong = "wrong-password-93ab"
	)
	e := newACLEnv(t, 3, cluster.User{Name: "locker", Password: right, Rules: strings.Fields(lockUserACL)})
	addrs := e.c.Addrs()
	nodes := make([]redis.UniversalClient, len(addrs))
	for i, a := range addrs {
		pass := wrong
		if i == 1 {
			pass = right
		}
		cl := redis.NewClient(&redis.Options{Addr: a, Username: "locker", Password: pass, ContextTimeoutEnabled: true, MaxRetries: -1})
		t.Cleanup(func() { _ = cl.Close() })
		nodes[i] = cl
	}
	locks, err := redlock.New(nodes)
	if err != nil {
		t.Fatal(err)
	}
	defer locks.Close()
	ctx := ctxFor(t, time.Minute)
	bootErr := locks.Bootstrap(ctx)
	_, acqErr := locks.TryAcquire(ctx, key(t))
	for what, err := range map[string]error{"Bootstrap": bootErr, "TryAcquire": acqErr} {
		if err == nil {
			t.Errorf("%s succeeded with wrong passwords on nodes 0 and 2", what)
			continue
		}
		for _, i := range []int{0, 2} {
			if !namesNode(err, i, addrs[i]) {
				t.Errorf("%s: error does not name node %d (%s): %v", what, i, addrs[i], err)
			}
		}
		if namesNode(err, 1, addrs[1]) {
			t.Errorf("%s: error blames node 1, which has the right password: %v", what, err)
		}
		if !strings.Contains(err.Error(), "WRONGPASS") {
			t.Errorf("%s: error does not say the password was refused: %v", what, err)
		}
		if strings.Contains(err.Error(), wrong) || strings.Contains(err.Error(), right) {
			t.Errorf("%s: error shows a password: %v", what, err)
		}
	}
}
