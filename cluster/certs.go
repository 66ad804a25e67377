package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Certs are the TLS certificates of a cluster started with Options.TLS,
// made at New and valid for that cluster only: a CA, a server certificate
// the nodes present and a client certificate the cluster's clients present.
// The files are removed by Cluster.Close.
type Certs struct {
	// CAFile is the CA certificate (PEM), for tools that read it from a
	// file, such as quorumlock --tls-ca.
	CAFile string
	// CertPool holds the CA and nothing else.
	CertPool *x509.CertPool
	// ClientCertFile and ClientKeyFile are a client certificate signed by
	// the CA and its key (PEM), for mutual TLS (Options.TLSClientAuth).
	ClientCertFile, ClientKeyFile string
	// ClientCert is the same client certificate, loaded.
	ClientCert tls.Certificate

	// ServerCertFile and ServerKeyFile are what the nodes present.
	ServerCertFile, ServerKeyFile string
}

// Config returns a new client configuration that trusts the CA only and
// presents the client certificate when a node asks for one. The server
// name is left empty: go-redis takes it from the address it dials, and the
// server certificate is valid for 127.0.0.1, ::1 and localhost.
func (c *Certs) Config() *tls.Config {
	return &tls.Config{
		RootCAs:      c.CertPool,
		Certificates: []tls.Certificate{c.ClientCert},
		MinVersion:   tls.VersionTLS12,
	}
}

// certValidity is how far around the time of New the certificates are
// valid. Generous on both sides: a node under a clock fault checks client
// certificates with its faked clock.
const certValidity = 30 * 24 * time.Hour

// NewCerts makes a CA, a server certificate for 127.0.0.1, ::1 and
// localhost and a client certificate, all valid for 30 days either side of
// now, and writes them as PEM files into dir (ca.crt, server.crt,
// server.key, client.crt, client.key). Docker clusters with Options.TLS
// get theirs at New; tests of TLS clients can make more.
func NewCerts(dir string) (*Certs, error) {
	return newCerts(dir, filepath.Base(dir))
}

func newCerts(dir, name string) (*Certs, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "quorumlock test CA " + name},
		NotBefore:             now.Add(-certValidity),
		NotAfter:              now.Add(certValidity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, caCert, err := sign(caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	c := &Certs{
		CAFile:         filepath.Join(dir, "ca.crt"),
		CertPool:       x509.NewCertPool(),
		ClientCertFile: filepath.Join(dir, "client.crt"),
		ClientKeyFile:  filepath.Join(dir, "client.key"),
		ServerCertFile: filepath.Join(dir, "server.crt"),
		ServerKeyFile:  filepath.Join(dir, "server.key"),
	}
	c.CertPool.AddCert(caCert)
	if err := writePEM(c.CAFile, "CERTIFICATE", caDER, 0o644); err != nil {
		return nil, err
	}
	leaf := func(cn string, usage x509.ExtKeyUsage, certFile, keyFile string) (tls.Certificate, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		tmpl := &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn},
			NotBefore:   now.Add(-certValidity),
			NotAfter:    now.Add(certValidity),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
		der, _, err := sign(tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("%s certificate: %w", cn, err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return tls.Certificate{}, err
		}
		if err := writePEM(certFile, "CERTIFICATE", der, 0o644); err != nil {
			return tls.Certificate{}, err
		}
		// Read by redis-server in the container, which runs as this user.
		if err := writePEM(keyFile, "PRIVATE KEY", keyDER, 0o600); err != nil {
			return tls.Certificate{}, err
		}
		return tls.LoadX509KeyPair(certFile, keyFile)
	}
	if _, err := leaf("localhost", x509.ExtKeyUsageServerAuth, c.ServerCertFile, c.ServerKeyFile); err != nil {
		return nil, err
	}
	if c.ClientCert, err = leaf("quorumlock client", x509.ExtKeyUsageClientAuth, c.ClientCertFile, c.ClientKeyFile); err != nil {
		return nil, err
	}
	return c, nil
}

// sign makes a certificate from tmpl signed by parent's key, with a random
// serial number.
func sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return der, cert, err
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, data, mode); err != nil {
		return fmt.Errorf("cluster: write %s: %w", path, err)
	}
	return nil
}
