// Package clustertest holds test helpers for packages that need Redis nodes:
// docker availability checks and clusters closed by t.Cleanup.
package clustertest

import (
	"context"
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/quorumlock/quorumlock/cluster"
)

// RequireDocker returns when the docker backend can run (daemon reachable,
// node image present). Otherwise it fails the test when CI=true and skips it
// elsewhere, saying why and what to run.
func RequireDocker(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := cluster.CheckDocker(ctx, "")
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("docker backend required under CI=true: %v", err)
	}
	t.Skipf("SKIPPING docker test (set CI=true to make this a failure): %v", err)
}

// New starts a cluster with opts, logging to t, and closes it in t.Cleanup.
// Docker clusters call RequireDocker first.
func New(t testing.TB, opts cluster.Options) *cluster.Cluster {
	t.Helper()
	if opts.Backend == cluster.BackendDocker {
		RequireDocker(t)
	}
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	if opts.Label == "" {
		opts.Label = t.Name()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := cluster.New(ctx, opts)
	if err != nil {
		t.Fatalf("start %s cluster: %v", opts.Backend, err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close %s cluster: %v", opts.Backend, err)
		}
	})
	return c
}

// NewDocker starts n docker nodes (see New).
func NewDocker(t testing.TB, n int) *cluster.Cluster {
	t.Helper()
	return New(t, cluster.Options{Backend: cluster.BackendDocker, Nodes: n})
}

// NewEmbedded starts n miniredis nodes (see New).
func NewEmbedded(t testing.TB, n int) *cluster.Cluster {
	t.Helper()
	return New(t, cluster.Options{Backend: cluster.BackendEmbedded, Nodes: n})
}

// UnrelatedCA returns a pool holding a CA made for the call, which signed
// nothing the cluster uses: a client that trusts only it must refuse every
// node's certificate.
func UnrelatedCA(t testing.TB) *x509.CertPool {
	t.Helper()
	certs, err := cluster.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return certs.CertPool
}
