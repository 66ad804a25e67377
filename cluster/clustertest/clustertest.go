// Package clustertest holds test helpers for packages that need Redis nodes:
// docker availability checks and clusters closed by t.Cleanup.
package clustertest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
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
// nothing: a client that trusts only it must refuse every node's
// certificate.
func UnrelatedCA(t testing.TB) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "unrelated CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}
