package cluster_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
)

// pingURL connects with a client made from a redis:// or rediss:// URL,
// adjusted by adjust, and sends one PING.
func pingURL(t *testing.T, url string, adjust func(*redis.Options)) error {
	t.Helper()
	o, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	o.MaxRetries = -1
	if adjust != nil {
		adjust(o)
	}
	c := redis.NewClient(o)
	defer c.Close()
	_, err = ping(c, 5*time.Second)
	return err
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A TLS node answers rediss:// clients that trust the cluster's CA, under
// every name its certificate carries, and refuses the others.
func TestTLSConnections(t *testing.T) {
	const password = "tls-test-password"
	c := clustertest.New(t, cluster.Options{Backend: cluster.BackendDocker, Nodes: 1, TLS: true, Password: password})
	certs := c.Certs()
	if certs == nil {
		t.Fatal("Certs() is nil on a TLS cluster")
	}
	if pem, err := os.ReadFile(certs.CAFile); err != nil || !strings.Contains(string(pem), "BEGIN CERTIFICATE") {
		t.Fatalf("CA file %s: %v %.40q", certs.CAFile, err, pem)
	}
	mustPing(t, c.Clients()[0])
	p := port(t, c.Addrs()[0])
	trust := func(o *redis.Options) { o.TLSConfig.RootCAs = certs.CertPool }

	for _, host := range []string{"127.0.0.1", "localhost"} {
		if err := pingURL(t, "rediss://:"+password+"@"+net.JoinHostPort(host, p), trust); err != nil {
			t.Errorf("rediss:// via %s with the cluster's CA: %v", host, err)
		}
	}

	err := pingURL(t, "rediss://:"+password+"@127.0.0.1:"+p, func(o *redis.Options) { o.TLSConfig.RootCAs = clustertest.UnrelatedCA(t) })
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("rediss:// with another CA: %v (%T); want x509.UnknownAuthorityError", err, err)
	}
	if err := pingURL(t, "redis://:"+password+"@127.0.0.1:"+p, nil); err == nil {
		t.Error("a plain TCP client got an answer from a TLS-only node")
	}
	if err := pingURL(t, "rediss://127.0.0.1:"+p, trust); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Errorf("rediss:// without the password: %v; want NOAUTH", err)
	}
}

// With TLSClientAuth a node takes only clients that show a certificate from
// the cluster's CA.
func TestMutualTLS(t *testing.T) {
	c := clustertest.New(t, cluster.Options{Backend: cluster.BackendDocker, Nodes: 1, TLS: true, TLSClientAuth: true})
	mustPing(t, c.Clients()[0])
	url := "rediss://" + c.Addrs()[0]
	if err := pingURL(t, url, func(o *redis.Options) { o.TLSConfig = c.Certs().Config() }); err != nil {
		t.Errorf("with the client certificate: %v", err)
	}
	cert, err := tls.LoadX509KeyPair(c.Certs().ClientCertFile, c.Certs().ClientKeyFile)
	if err != nil {
		t.Fatalf("client certificate files: %v", err)
	}
	if err := pingURL(t, url, func(o *redis.Options) {
		o.TLSConfig.RootCAs = c.Certs().CertPool
		o.TLSConfig.Certificates = []tls.Certificate{cert}
	}); err != nil {
		t.Errorf("with the client certificate from its files: %v", err)
	}
	if err := pingURL(t, url, func(o *redis.Options) { o.TLSConfig.RootCAs = c.Certs().CertPool }); err == nil {
		t.Error("a client without a certificate got an answer")
	}
}

// The fault proxy forwards TLS as bytes: every network fault and every
// process fault acts on a TLS node as on a plain one, and a restarted node
// serves the same certificate.
func TestFaultsOverTLS(t *testing.T) {
	c := clustertest.New(t, cluster.Options{Backend: cluster.BackendDocker, Nodes: 2, TLS: true, Password: "pw"})
	ctx := testCtx(t)
	n, cl := c.Node(0), c.Node(0).Client()
	mustPing(t, cl)

	t.Run("partition", func(t *testing.T) {
		if err := n.Partition(ctx); err != nil {
			t.Fatal(err)
		}
		_, err := ping(cl, 2*time.Second)
		if err == nil {
			t.Fatal("partitioned node answered")
		}
		if err := n.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		mustPing(t, cl)
	})
	t.Run("latency", func(t *testing.T) {
		const delay = 200 * time.Millisecond
		if err := n.Latency(ctx, delay, 0); err != nil {
			t.Fatal(err)
		}
		took, err := ping(cl, 5*time.Second)
		if err != nil || took < delay {
			t.Fatalf("PING with %v latency: %v after %v", delay, err, took)
		}
		if err := n.ClearLatency(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("blackhole", func(t *testing.T) {
		if err := n.Blackhole(ctx); err != nil {
			t.Fatal(err)
		}
		const timeout = 300 * time.Millisecond
		took, err := ping(cl, timeout)
		if !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			t.Fatalf("PING into a blackhole: %v after %v; want a timeout", err, took)
		}
		if err := n.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		mustPing(t, cl)
	})
	t.Run("reset", func(t *testing.T) {
		if err := n.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := ping(cl, 5*time.Second); err == nil || isTimeout(err) {
			t.Fatalf("PING through reset_peer: %v; want the connection broken, not a timeout", err)
		}
		if err := n.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		mustPing(t, cl)
	})
	t.Run("pause", func(t *testing.T) {
		if err := n.Pause(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := ping(cl, 300*time.Millisecond); err == nil {
			t.Fatal("paused node answered")
		}
		if err := n.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		mustPing(t, cl)
	})
	t.Run("restart", func(t *testing.T) {
		if err := cl.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := n.Restart(ctx, cluster.RestartOptions{}); err != nil {
			t.Fatal(err)
		}
		mustPing(t, cl)
		if err := cl.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("GET after a restart without persistence: %v; want the key gone", err)
		}
	})
	t.Run("clock jump", func(t *testing.T) {
		if !c.Supports(cluster.FaultClockJump) {
			t.Skip("the image has no libfaketime")
		}
		if err := cl.Set(ctx, "lock", "token", time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		before, _ := redisTimeIn(t, cl)
		if err := n.ClockJump(ctx, 120*time.Second); err != nil {
			t.Fatal(err)
		}
		after, _ := redisTimeIn(t, cl)
		if jump := after.Sub(before); jump < 120*time.Second {
			t.Fatalf("TIME moved by %v; want at least the 120s jump", jump)
		}
		if err := cl.Get(ctx, "lock").Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("GET after a 120s jump: %v; want the key expired", err)
		}
		// The other node is untouched.
		other, _ := redisTimeIn(t, c.Node(1).Client())
		if d := time.Since(other); d > time.Minute || d < -time.Minute {
			t.Fatalf("node 1's clock is off by %v", d)
		}
	})
}

// rediss:// URLs work on the external backend too: the proxy passes TLS
// through and the client checks the certificate against the URL's host.
func TestExternalRediss(t *testing.T) {
	tlsNodes := clustertest.New(t, cluster.Options{Backend: cluster.BackendDocker, Nodes: 1, TLS: true})
	p := port(t, tlsNodes.Addrs()[0])
	ext := clustertest.New(t, cluster.Options{
		Backend: cluster.BackendExternal,
		URLs:    []string{"rediss://localhost:" + p},
		ClientOptions: func(o *redis.Options) {
			o.TLSConfig.RootCAs = tlsNodes.Certs().CertPool
		},
	})
	cl := ext.Clients()[0]
	mustPing(t, cl)
	if o := cl.(*redis.Client).Options(); o.TLSConfig == nil || o.TLSConfig.ServerName != "localhost" || port(t, o.Addr) == p {
		t.Fatalf("client goes to %s with TLS %+v; want the proxy, checking the name localhost", o.Addr, o.TLSConfig)
	}
	if err := ext.Node(0).Partition(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := ping(cl, 2*time.Second); err == nil {
		t.Fatal("partitioned external TLS node answered")
	}
	if err := ext.Node(0).Heal(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	mustPing(t, cl)
	// Without the CA the external backend refuses to start.
	bare, err := cluster.New(testCtx(t), cluster.Options{Backend: cluster.BackendExternal, URLs: []string{"rediss://localhost:" + p}})
	if err == nil {
		_ = bare.Close()
	}
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("external rediss:// node without its CA: %v; want x509.UnknownAuthorityError", err)
	}
}

// The certificates verify for the loopback names and nothing else, and
// the keys are readable by their owner only.
func TestNewCerts(t *testing.T) {
	dir := t.TempDir()
	certs, err := cluster.NewCerts(dir)
	if err != nil {
		t.Fatal(err)
	}
	server, err := tls.LoadX509KeyPair(certs.ServerCertFile, certs.ServerKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(server.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	verify := func(name string, usage x509.ExtKeyUsage, cert *x509.Certificate) error {
		_, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: certs.CertPool, KeyUsages: []x509.ExtKeyUsage{usage}})
		return err
	}
	for _, name := range []string{"127.0.0.1", "::1", "localhost"} {
		if err := verify(name, x509.ExtKeyUsageServerAuth, leaf); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if err := verify("example.com", x509.ExtKeyUsageServerAuth, leaf); err == nil {
		t.Error("server certificate verifies for example.com")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: clustertest.UnrelatedCA(t)}); err == nil {
		t.Error("server certificate verifies against an unrelated CA")
	}
	client, err := x509.ParseCertificate(certs.ClientCert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := verify("", x509.ExtKeyUsageClientAuth, client); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	for _, f := range []string{certs.ServerKeyFile, certs.ClientKeyFile} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v; want no access for group and others", f, st.Mode().Perm())
		}
	}
}

// A TLS client whose request timed out in a blackhole closes its
// connection with a close_notify record. Arriving after Heal, that record
// once blocked a toxiproxy goroutine for good (its timeout toxic's cleanup
// left the link's head sending into a channel nobody read).
func TestBlackholeOverTLSLeavesNoGoroutine(t *testing.T) {
	clustertest.RequireDocker(t)
	ctx := testCtx(t)
	c, err := cluster.New(ctx, cluster.Options{Backend: cluster.BackendDocker, Nodes: 1, TLS: true, Label: t.Name(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	n, cl := c.Node(0), c.Node(0).Client()
	mustPing(t, cl)
	for range 20 {
		if err := n.Blackhole(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := ping(cl, 100*time.Millisecond); err == nil {
			t.Fatal("PING answered through a blackhole")
		}
		if err := n.Heal(ctx); err != nil {
			t.Fatal(err)
		}
		mustPing(t, cl)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		stuck := proxyGoroutines()
		if len(stuck) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d fault-proxy goroutines still running after Close, e.g.:\n%s", len(stuck), stuck[0])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxyGoroutines returns the stacks of goroutines inside toxiproxy.
func proxyGoroutines() []string {
	buf := make([]byte, 1<<22)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/Shopify/toxiproxy") {
			out = append(out, g)
		}
	}
	return out
}
