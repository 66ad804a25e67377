package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/quorumlock/quorumlock/cluster"
)

// resolveArgs parses args with the node flags only and resolves them.
func resolveArgs(t *testing.T, args ...string) ([]string, tlsFiles, error) {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f := addNodesFlag(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse %q: %v", args, err)
	}
	return f.resolve()
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nodes")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestNodesFile(t *testing.T) {
	t.Setenv(nodesEnv, "")
	path := writeFile(t, "# lock nodes\n\nredis://:pa%23ss@h1:6379\r\n   # indented comment\n  redis://h2:6379  \n\t\nrediss://user:pw@h3:6380/2\n")
	urls, _, err := resolveArgs(t, "--nodes-file", path)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"redis://:pa%23ss@h1:6379", "redis://h2:6379", "rediss://user:pw@h3:6380/2"}
	if !slices.Equal(urls, want) {
		t.Fatalf("URLs %q, want %q", urls, want)
	}
}

// Exactly one source: --nodes and --nodes-file refuse each other, either
// wins over the environment, which serves when neither is given.
func TestNodeSources(t *testing.T) {
	file := writeFile(t, "redis://file1:6379\nredis://file2:6379\n")
	env := "redis://env1:6379, redis://env2:6379"
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want []string // URLs, or nil when an error is wanted
		err  string
	}{
		{"flag", "", []string{"--nodes", "redis://a:1,redis://b:1"}, []string{"redis://a:1", "redis://b:1"}, ""},
		{"file", "", []string{"--nodes-file", file}, []string{"redis://file1:6379", "redis://file2:6379"}, ""},
		{"environment", env, nil, []string{"redis://env1:6379", "redis://env2:6379"}, ""},
		{"flag over environment", env, []string{"--nodes", "redis://a:1"}, []string{"redis://a:1"}, ""},
		{"file over environment", env, []string{"--nodes-file", file}, []string{"redis://file1:6379", "redis://file2:6379"}, ""},
		{"flag and file", "", []string{"--nodes", "redis://a:1", "--nodes-file", file}, nil, "--nodes and --nodes-file exclude each other"},
		{"none", "", nil, nil, "no nodes: give --nodes"},
		{"empty file name", "", []string{"--nodes-file", ""}, nil, "--nodes-file is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(nodesEnv, tc.env)
			urls, _, err := resolveArgs(t, tc.args...)
			switch {
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("error %v, want one containing %q", err, tc.err)
			case tc.err == "" && err != nil:
				t.Fatalf("error %v", err)
			case !slices.Equal(urls, tc.want):
				t.Fatalf("URLs %q, want %q", urls, tc.want)
			}
		})
	}
}

func TestBadNodesFile(t *testing.T) {
	t.Setenv(nodesEnv, "")
	missing := filepath.Join(t.TempDir(), "no-such-file")
	for _, tc := range []struct {
		name, content, want string
	}{
		{"only comments", "# nothing yet\n\n", "holds no URL"},
		{"bad URL", "redis://h1:6379\n# c\nhttp://:s3cret@h2:6379\n", `line 3 "http://:xxxxx@h2:6379": redis: invalid URL scheme: http`},
		{"duplicate", "redis://h1:6379\n\nredis://:s3cret@H1:6379/4\n", `line 3 "redis://:xxxxx@H1:6379/4" is the same server (H1:6379) as line 1`},
		{"two URLs on a line", "redis://h1:6379 redis://:s3cret@h2:6379\n", "line 1"},
		{"unparsable password", "redis://:s3cret/#x@h1:6379\n", `line 1 "redis://xxxxx@h1:6379": not a valid URL`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.content)
			_, _, err := resolveArgs(t, "--nodes-file", path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error %q shows the password", err)
			}
		})
	}
	_, _, err := resolveArgs(t, "--nodes-file", missing)
	if err == nil || !strings.Contains(err.Error(), missing) || !os.IsNotExist(unwrapAll(err)) {
		t.Fatalf("missing file: %v; want a not-exist error naming it", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// The environment is not the flag's default: the help would print it.
func TestHelpShowsNoPassword(t *testing.T) {
	t.Setenv(nodesEnv, "redis://:s3cret@h1:6379")
	for _, c := range []func() *cobra.Command{newRunCmd, newInspectCmd} {
		out, err := execCmd(t, c(), "--help")
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out, "s3cret") {
			t.Errorf("help shows the password from $%s:\n%s", nodesEnv, out)
		}
		for _, want := range []string{"--nodes-file", "--tls-ca", "--tls-cert", "--tls-key", "keep it out"} {
			if !strings.Contains(out, want) {
				t.Errorf("help does not mention %q:\n%s", want, out)
			}
		}
	}
}

func TestTLSFlags(t *testing.T) {
	t.Setenv(nodesEnv, "")
	certs, err := cluster.NewCerts(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	notPEM := writeFile(t, "not a certificate\n")
	nodes := "rediss://localhost:6380,redis://h2:6379,rediss://:pw@127.0.0.1:6381"
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"CA for plain nodes", []string{"--nodes", "redis://h1:1,redis://h2:1", "--tls-ca", certs.CAFile}, "--tls-ca given, but no node URL is rediss://"},
		{"cert without key", []string{"--nodes", nodes, "--tls-cert", certs.ClientCertFile}, "--tls-cert needs --tls-key"},
		{"key without cert", []string{"--nodes", nodes, "--tls-key", certs.ClientKeyFile}, "--tls-key needs --tls-cert"},
		{"missing CA", []string{"--nodes", nodes, "--tls-ca", certs.CAFile + ".gone"}, certs.CAFile + ".gone"},
		{"CA file without PEM", []string{"--nodes", nodes, "--tls-ca", notPEM}, "--tls-ca " + notPEM + ": no PEM certificate"},
		{"key of another certificate", []string{"--nodes", nodes, "--tls-cert", certs.ClientCertFile, "--tls-key", certs.ServerKeyFile}, "--tls-cert " + certs.ClientCertFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := resolveArgs(t, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}

	urls, tf, err := resolveArgs(t, "--nodes", nodes, "--tls-ca", certs.CAFile, "--tls-cert", certs.ClientCertFile, "--tls-key", certs.ClientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := parseNodes(urls, nodeSource{}, tf)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range opts {
		secure := strings.HasPrefix(urls[i], "rediss://")
		if !secure {
			if o.TLSConfig != nil {
				t.Errorf("node %d (%s): TLS on a redis:// node", i, urls[i])
			}
			continue
		}
		switch {
		case o.TLSConfig == nil:
			t.Errorf("node %d (%s): no TLS", i, urls[i])
		case o.TLSConfig.RootCAs == nil || !o.TLSConfig.RootCAs.Equal(certs.CertPool):
			t.Errorf("node %d: RootCAs is not the --tls-ca pool", i)
		case len(o.TLSConfig.Certificates) != 1 || !slices.Equal(o.TLSConfig.Certificates[0].Certificate[0], certs.ClientCert.Certificate[0]):
			t.Errorf("node %d: client certificate not set", i)
		case o.TLSConfig.ServerName != strings.Split(o.Addr, ":")[0]:
			t.Errorf("node %d: server name %q for %s", i, o.TLSConfig.ServerName, o.Addr)
		}
	}
	if opts[0].TLSConfig == opts[2].TLSConfig {
		t.Error("two nodes share one TLS configuration")
	}
}
