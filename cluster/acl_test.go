package cluster_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
)

// An ACL user runs what its rules allow and gets NOPERM for the rest; a
// wrong password is refused; the default user needs Options.Password.
func TestACLUsers(t *testing.T) {
	const (
		adminPass  = "admin-secret"
		readerPass = "reader secret with \"quotes\" and \\ spaces"
	)
	c := clustertest.New(t, cluster.Options{
		Backend:  cluster.BackendDocker,
		Nodes:    2,
		Password: adminPass,
		Users: []cluster.User{
			{Name: "reader", Password: readerPass, Rules: []string{"+get", "+ping", "~app:*"}},
		},
	})
	ctx := testCtx(t)
	mustPing(t, c.Clients()[0])
	for i, cl := range c.Clients() {
		if err := cl.Set(ctx, "app:x", "1", 0).Err(); err != nil {
			t.Fatalf("node %d: SET as default user: %v", i, err)
		}
		if err := cl.Set(ctx, "other:x", "1", 0).Err(); err != nil {
			t.Fatalf("node %d: SET as default user: %v", i, err)
		}
	}
	readers, err := c.DefaultView().ClientsAs("reader")
	if err != nil {
		t.Fatal(err)
	}
	if len(readers) != c.Len() {
		t.Fatalf("%d clients for %d nodes", len(readers), c.Len())
	}
	again, err := c.DefaultView().ClientsAs("reader")
	if err != nil || again[0] != readers[0] {
		t.Fatalf("a second ClientsAs made new clients (%v)", err)
	}
	for i, r := range readers {
		if v, err := r.Get(ctx, "app:x").Result(); err != nil || v != "1" {
			t.Errorf("node %d: allowed GET app:x = %q, %v", i, v, err)
		}
		for what, err := range map[string]error{
			"SET (command not granted)":   r.Set(ctx, "app:x", "2", 0).Err(),
			"GET other:x (key not in ~)":  r.Get(ctx, "other:x").Err(),
			"DEL (command not granted)":   r.Del(ctx, "app:x").Err(),
			"PUBLISH (no channel rights)": r.Publish(ctx, "ch", "m").Err(),
		} {
			if err == nil || !strings.HasPrefix(err.Error(), "NOPERM") {
				t.Errorf("node %d: %s: %v; want NOPERM", i, what, err)
			}
		}
	}

	// Other views log in the same way.
	v, err := c.View("other")
	if err != nil {
		t.Fatal(err)
	}
	vr, err := v.ClientsAs("reader")
	if err != nil {
		t.Fatal(err)
	}
	if err := vr[1].Ping(ctx).Err(); err != nil {
		t.Errorf("reader through another view: %v", err)
	}
	if _, err := v.ClientsAs("writer"); err == nil || !strings.Contains(err.Error(), `"writer"`) {
		t.Errorf("ClientsAs an unknown user: %v", err)
	}

	login := func(user, pass string) error {
		cl := redis.NewClient(&redis.Options{Addr: c.Addrs()[0], Username: user, Password: pass, MaxRetries: -1})
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return cl.Ping(ctx).Err()
	}
	for _, tc := range []struct {
		user, pass, want string
	}{
		{"reader", "wrong", "WRONGPASS"},
		{"nobody", readerPass, "WRONGPASS"},
		{"", "wrong", "WRONGPASS"},
		{"", "", "NOAUTH"},
	} {
		err := login(tc.user, tc.pass)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("log in as %q: %v; want %s", tc.user, err, tc.want)
		}
		if err != nil && tc.pass != "" && strings.Contains(err.Error(), tc.pass) {
			t.Errorf("log in as %q: the error %q shows the password", tc.user, err)
		}
	}
	if err := login("reader", readerPass); err != nil {
		t.Errorf("log in as reader with its password: %v", err)
	}
}

// A rule Redis refuses stops the node at start-up; New says so at once
// instead of waiting ReadyTimeout for a node that will never answer.
func TestBadRuleFailsFast(t *testing.T) {
	clustertest.RequireDocker(t)
	const ready = 2 * time.Minute
	start := time.Now()
	c, err := cluster.New(testCtx(t), cluster.Options{
		Backend:      cluster.BackendDocker,
		Nodes:        1,
		Label:        t.Name(),
		ReadyTimeout: ready,
		Users:        []cluster.User{{Name: "u", Password: "p", Rules: []string{"+no-such-command"}}},
	})
	took := time.Since(start)
	if err == nil {
		_ = c.Close()
		t.Fatal("a node with an unknown command in its rules started")
	}
	if !strings.Contains(err.Error(), "exited during start-up") || took >= ready {
		t.Fatalf("after %v: %v; want the exit reported before ReadyTimeout", took, err)
	}
	t.Logf("after %v: %v", took, err)
}

func TestAccessOptionErrors(t *testing.T) {
	ctx := testCtx(t)
	docker := func(o cluster.Options) cluster.Options { o.Backend = cluster.BackendDocker; return o }
	for _, tc := range []struct {
		opts cluster.Options
		want string
	}{
		{cluster.Options{Backend: cluster.BackendEmbedded, TLS: true}, `TLS only for the docker backend, not "embedded"`},
		{cluster.Options{Backend: cluster.BackendEmbedded, Password: "p", Users: []cluster.User{{Name: "u", Password: "p"}}}, "Password, Users only for the docker backend"},
		{cluster.Options{Backend: cluster.BackendExternal, URLs: []string{"redis://127.0.0.1:1"}, Password: "p"}, "rediss://user:password@host:port"},
		{docker(cluster.Options{TLSClientAuth: true}), "TLSClientAuth needs TLS"},
		{docker(cluster.Options{Users: []cluster.User{{Password: "p"}}}), "user 0 has no name"},
		{docker(cluster.Options{Users: []cluster.User{{Name: "default", Password: "p"}}}), "set Options.Password for the default user"},
		{docker(cluster.Options{Users: []cluster.User{{Name: "a b", Password: "p"}}}), `user name "a b" contains white space`},
		{docker(cluster.Options{Users: []cluster.User{{Name: "u", Password: "p"}, {Name: "u", Password: "q"}}}), `user "u" given twice`},
		{docker(cluster.Options{Users: []cluster.User{{Name: "u"}}}), `user "u" has no password`},
		{docker(cluster.Options{Users: []cluster.User{{Name: "u", Password: "p", Rules: []string{"+get +set"}}}}), `rule "+get +set" is empty or contains white space`},
		{docker(cluster.Options{Password: "line\nbreak"}), "Password contains control characters"},
	} {
		c, err := cluster.New(ctx, tc.opts)
		if err == nil {
			_ = c.Close()
			t.Errorf("%+v: want error %q", tc.opts, tc.want)
			continue
		}
		if !strings.HasPrefix(err.Error(), "cluster: ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %q, want it to contain %q", tc.opts, err, tc.want)
		}
		if strings.Contains(err.Error(), "line\nbreak") {
			t.Errorf("error %q shows the password", err)
		}
	}
}
