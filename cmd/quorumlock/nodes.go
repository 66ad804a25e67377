package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"

	"github.com/quorumlock/quorumlock/cluster"
)

// nodesEnv supplies the node URLs when neither --nodes nor --nodes-file is
// given, so that a fleet's node list is configured once per host rather
// than in every crontab line.
const nodesEnv = "QUORUMLOCK_NODES"

// nodesHelp is the part of a command's help about the node flags.
const nodesHelp = `Nodes: --nodes URL,URL,... or --nodes-file PATH (one URL per line; blank
lines and lines starting with # are skipped), not both; without either,
$` + nodesEnv + ` (comma-separated). A URL is
redis://[user:password@]host:port[/db], or rediss://... for TLS.
A password given with --nodes is visible to every user of the host in ps
output; --nodes-file and the environment keep it out. Messages never show
a password. rediss:// nodes are verified against the system's CAs, or
against --tls-ca; --tls-cert and --tls-key give a client certificate to
nodes that require one (mutual TLS).`

// nodeFlags are the flags that choose the nodes and how to reach them.
type nodeFlags struct {
	fs   *pflag.FlagSet
	list []string
	file string
	tls  tlsFiles
}

// tlsFiles are the PEM files for rediss:// nodes; "" means not given.
type tlsFiles struct {
	ca, cert, key string
}

// addNodesFlag defines --nodes, --nodes-file and the TLS flags on fs. Call
// resolve on the result, then openNodesTLS.
func addNodesFlag(fs *pflag.FlagSet) *nodeFlags {
	f := &nodeFlags{fs: fs}
	// No default from the environment here: the help would print it,
	// passwords included.
	fs.StringSliceVar(&f.list, "nodes", nil,
		"Redis URLs of independent masters, comma-separated, e.g. redis://h1:6379,redis://h2:6379,redis://h3:6379 (else --nodes-file or $"+nodesEnv+")")
	fs.StringVar(&f.file, "nodes-file", "", "file with one node URL per line (# comments and blank lines ignored); keeps passwords out of ps")
	fs.StringVar(&f.tls.ca, "tls-ca", "", "PEM file of the CA(s) that sign the rediss:// nodes' certificates (default: the system's)")
	fs.StringVar(&f.tls.cert, "tls-cert", "", "PEM client certificate for rediss:// nodes that require one (with --tls-key)")
	fs.StringVar(&f.tls.key, "tls-key", "", "PEM key of --tls-cert")
	return f
}

// nodeSource is where the node URLs came from, for messages.
type nodeSource struct {
	name  string // "--nodes", "--nodes-file PATH", "$QUORUMLOCK_NODES"
	lines []int  // line of each URL, for a file
}

// node names URL i (0-based) in messages: its line in a file, else its
// 1-based position.
func (s nodeSource) node(i int) string {
	if s.lines != nil {
		return fmt.Sprintf("line %d", s.lines[i])
	}
	return fmt.Sprintf("node %d", i+1)
}

// resolve picks the one source of node URLs (--nodes or --nodes-file, which
// exclude each other and win over $QUORUMLOCK_NODES) and checks the URLs and
// the TLS files, so that a mistake is reported before anything starts.
func (f *nodeFlags) resolve() ([]string, tlsFiles, error) {
	urls, src, err := f.urls()
	if err != nil {
		return nil, tlsFiles{}, err
	}
	if _, err := parseNodes(urls, src, f.tls); err != nil {
		return nil, tlsFiles{}, err
	}
	return urls, f.tls, nil
}

func (f *nodeFlags) urls() ([]string, nodeSource, error) {
	list, file := f.fs.Changed("nodes"), f.fs.Changed("nodes-file")
	switch {
	case list && file:
		return nil, nodeSource{}, errors.New("--nodes and --nodes-file exclude each other: give one")
	case file:
		return readNodesFile(f.file)
	case list:
		return f.list, nodeSource{name: "--nodes"}, nil
	}
	var urls []string
	for _, u := range strings.Split(os.Getenv(nodesEnv), ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls, nodeSource{name: "$" + nodesEnv}, nil
}

// readNodesFile reads one URL per line; blank lines and lines whose first
// non-blank character is # are skipped. A # later in a line is part of the
// URL (a password may hold one).
func readNodesFile(path string) ([]string, nodeSource, error) {
	src := nodeSource{name: "--nodes-file " + path, lines: []int{}}
	if path == "" {
		return nil, src, errors.New("--nodes-file is empty: give the path of a file with one node URL per line")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, src, fmt.Errorf("--nodes-file: %w", err)
	}
	var urls []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsAny(line, " \t") {
			return nil, src, fmt.Errorf("%s: line %d %q: one URL per line, without spaces", src.name, n, cluster.RedactURL(line))
		}
		urls = append(urls, line)
		src.lines = append(src.lines, n)
	}
	if err := sc.Err(); err != nil {
		return nil, src, fmt.Errorf("%s: %w", src.name, err)
	}
	if len(urls) == 0 {
		return nil, src, fmt.Errorf("no nodes: %s holds no URL", src.name)
	}
	return urls, src, nil
}

// parseNodes turns node URLs (redis.ParseURL syntax) into client options,
// one per node, with the TLS files applied to the rediss:// ones. Each URL
// must name a different server: a server listed twice, even with another
// database number, would vote twice. Errors name the offending URL, with
// any password masked.
func parseNodes(urls []string, src nodeSource, tf tlsFiles) ([]*redis.Options, error) {
	if len(urls) == 0 {
		return nil, errors.New("no nodes: give --nodes redis://host:port,..., --nodes-file PATH or set " + nodesEnv)
	}
	if src.name == "" {
		src.name = "--nodes"
	}
	tc, err := tf.config()
	if err != nil {
		return nil, err
	}
	opts := make([]*redis.Options, 0, len(urls))
	seen := make(map[string]int, len(urls))
	secure := 0
	for i, u := range urls {
		u = strings.TrimSpace(u)
		if u == "" {
			return nil, fmt.Errorf("%s: %s is an empty URL", src.name, src.node(i))
		}
		o, err := redis.ParseURL(u)
		if err != nil {
			return nil, fmt.Errorf("%s: %s %q: %w", src.name, src.node(i), cluster.RedactURL(u), withoutURL(err))
		}
		server := o.Network + " " + strings.ToLower(o.Addr)
		if j, dup := seen[server]; dup {
			return nil, fmt.Errorf("%s: %s %q is the same server (%s) as %s: each node must be a separate Redis master",
				src.name, src.node(i), cluster.RedactURL(u), o.Addr, src.node(j))
		}
		seen[server] = i
		if o.TLSConfig != nil {
			secure++
			if tc != nil {
				o.TLSConfig.RootCAs = tc.RootCAs
				o.TLSConfig.Certificates = tc.Certificates
			}
		}
		// Without it go-redis bounds a request by its read timeout only and
		// the per-node timeout of the algorithm would not apply.
		o.ContextTimeoutEnabled = true
		opts = append(opts, o)
	}
	if tc != nil && secure == 0 {
		return nil, fmt.Errorf("%s given, but no node URL is rediss://: the connections would not use TLS", tf.given())
	}
	return opts, nil
}

// given names the TLS flags that were set.
func (tf tlsFiles) given() string {
	var set []string
	for _, f := range []struct{ flag, v string }{{"--tls-ca", tf.ca}, {"--tls-cert", tf.cert}, {"--tls-key", tf.key}} {
		if f.v != "" {
			set = append(set, f.flag)
		}
	}
	return strings.Join(set, ", ")
}

// config loads the files into the parts of a client TLS configuration they
// set; nil when none is given.
func (tf tlsFiles) config() (*tls.Config, error) {
	if tf == (tlsFiles{}) {
		return nil, nil
	}
	c := &tls.Config{}
	if tf.ca != "" {
		pem, err := os.ReadFile(tf.ca)
		if err != nil {
			return nil, fmt.Errorf("--tls-ca: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--tls-ca %s: no PEM certificate in the file", tf.ca)
		}
	}
	switch {
	case tf.cert != "" && tf.key != "":
		cert, err := tls.LoadX509KeyPair(tf.cert, tf.key)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", tf.cert, tf.key, err)
		}
		c.Certificates = []tls.Certificate{cert}
	case tf.cert != "":
		return nil, errors.New("--tls-cert needs --tls-key")
	case tf.key != "":
		return nil, errors.New("--tls-key needs --tls-cert")
	}
	return c, nil
}

// openNodes opens nodes without TLS files (see openNodesTLS).
func openNodes(urls []string) ([]*redis.Client, error) {
	return openNodesTLS(urls, tlsFiles{})
}

// openNodesTLS parses urls (see parseNodes) and returns one client per
// node. Close them with closeNodes.
func openNodesTLS(urls []string, tf tlsFiles) ([]*redis.Client, error) {
	opts, err := parseNodes(urls, nodeSource{}, tf)
	if err != nil {
		return nil, err
	}
	clients := make([]*redis.Client, len(opts))
	for i, o := range opts {
		clients[i] = redis.NewClient(o)
	}
	return clients, nil
}

// closeNodes closes every client.
func closeNodes(clients []*redis.Client) error {
	var errs []error
	for _, c := range clients {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// withoutURL replaces an error of net/url, whose message quotes the URL
// (password included), with one that does not.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return errors.New("not a valid URL (characters such as @ : / ? # % in a password must be percent-encoded)")
	}
	return err
}
