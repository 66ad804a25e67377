//go:build unix

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quorumlock/quorumlock/cluster"
	"github.com/quorumlock/quorumlock/cluster/clustertest"
)

// nodesFile writes one rediss:// URL per node, with password, to a file.
func nodesFile(t *testing.T, addrs []string, password string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# lock nodes for the test\n\n")
	for _, a := range addrs {
		b.WriteString("rediss://:" + password + "@" + a + "\n")
	}
	return writeFile(t, b.String())
}

// run and inspect on TLS nodes that require a client certificate and a
// password, with the URLs in a file: the lock works, and every failure
// (no client certificate, wrong password, unknown CA) is an error that
// shows no password.
func TestRunOverTLS(t *testing.T) {
	const password = "cli-s3cret-5d2e"
	c := clustertest.New(t, cluster.Options{Backend: cluster.BackendDocker, Nodes: 3, TLS: true, TLSClientAuth: true, Password: password})
	t.Setenv(nodesEnv, "")
	certs := c.Certs()
	file := nodesFile(t, c.Addrs(), password)
	withTLS := func(args ...string) []string {
		return append([]string{"--tls-ca", certs.CAFile, "--tls-cert", certs.ClientCertFile, "--tls-key", certs.ClientKeyFile}, args...)
	}

	// The command holds the lock until the test has inspected it.
	dir := t.TempDir()
	tokenFile, doneFile := filepath.Join(dir, "token"), filepath.Join(dir, "done")
	script := `echo "$QUORUMLOCK_TOKEN" > ` + tokenFile + `.tmp && mv ` + tokenFile + `.tmp ` + tokenFile +
		`; while [ ! -e ` + doneFile + ` ]; do sleep 0.05; done`
	done := make(chan error, 1)
	var runOut string
	go func() {
		out, err := execRun(t, withTLS("--nodes-file", file, "--key", "tls-job", "--bootstrap", "--", "sh", "-c", script)...)
		runOut = out
		done <- err
	}()
	var token string
	deadline := time.Now().Add(time.Minute)
	for token == "" {
		select {
		case err := <-done:
			t.Fatalf("run ended before its command held the lock: %v\n%s", err, runOut)
		default:
		}
		if b, err := os.ReadFile(tokenFile); err == nil {
			token = strings.TrimSpace(string(b))
		} else if time.Now().After(deadline) {
			t.Fatal("the command did not start within a minute")
		} else {
			time.Sleep(20 * time.Millisecond)
		}
	}
	out, err := execInspect(t, withTLS("--nodes-file", file, "--json", "tls-job")...)
	if err != nil {
		t.Errorf("inspect over TLS: %v\n%s", err, out)
	} else {
		var v lockView
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("%v in\n%s", err, out)
		}
		if !v.Held || v.HeldOn != 3 || v.Token != token {
			t.Errorf("inspect: %+v; want %s held on 3 nodes", v, token)
		}
	}
	if err := os.WriteFile(doneFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("run over TLS: %v\n%s", err, runOut)
	}
	if strings.Contains(runOut, password) {
		t.Errorf("run shows the password:\n%s", runOut)
	}

	other, err := cluster.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // in the output or the error
	}{
		{"no client certificate", []string{"--nodes-file", file, "--tls-ca", certs.CAFile}, "certificate"},
		{"wrong password", withTLS("--nodes-file", nodesFile(t, c.Addrs(), "wrong-5d2e")), "WRONGPASS"},
		{"unknown CA", []string{"--nodes-file", file, "--tls-ca", other.CAFile, "--tls-cert", certs.ClientCertFile, "--tls-key", certs.ClientKeyFile}, "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := execRun(t, append(tc.args, "--key", "tls-job", "--no-wait", "--", "true")...)
			if err == nil {
				t.Fatalf("run succeeded:\n%s", out)
			}
			t.Logf("output:\n%serror: %v", out, err)
			all := out + err.Error()
			if !strings.Contains(all, tc.want) {
				t.Errorf("nothing says %q:\n%s\nerror: %v", tc.want, out, err)
			}
			for i, a := range c.Addrs() {
				if !strings.Contains(all, a) {
					t.Errorf("node %d (%s) not named:\n%s\nerror: %v", i, a, out, err)
				}
			}
			if strings.Contains(all, password) || strings.Contains(all, "wrong-5d2e") {
				t.Errorf("a password is shown:\n%s\nerror: %v", out, err)
			}
		})
	}
}
