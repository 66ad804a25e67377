package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/pflag"
)

// nodesEnv supplies --nodes when the flag is not given, so that a fleet's
// node list is configured once per host rather than in every crontab line.
const nodesEnv = "QUORUMLOCK_NODES"

// addNodesFlag defines --nodes on fs, defaulting to $QUORUMLOCK_NODES, and
// returns where the URLs land. Pass them to openNodes.
func addNodesFlag(fs *pflag.FlagSet) *[]string {
	var def []string
	for _, u := range strings.Split(os.Getenv(nodesEnv), ",") {
		if u = strings.TrimSpace(u); u != "" {
			def = append(def, u)
		}
	}
	return fs.StringSlice("nodes", def,
		"Redis URLs of independent masters, comma-separated, e.g. redis://h1:6379,redis://h2:6379,redis://h3:6379 (default $"+nodesEnv+")")
}

// parseNodes turns node URLs (redis.ParseURL syntax) into client options,
// one per node. Each URL must name a different server: a server listed
// twice, even with another database number, would vote twice. Errors name
// the offending URL, with any password masked.
func parseNodes(urls []string) ([]*redis.Options, error) {
	if len(urls) == 0 {
		return nil, errors.New("no nodes: give --nodes redis://host:port,... or set " + nodesEnv)
	}
	opts := make([]*redis.Options, 0, len(urls))
	seen := make(map[string]int, len(urls))
	for i, u := range urls {
		u = strings.TrimSpace(u)
		if u == "" {
			return nil, fmt.Errorf("--nodes: node %d is an empty URL", i+1)
		}
		o, err := redis.ParseURL(u)
		if err != nil {
			return nil, fmt.Errorf("--nodes: node %d %q: %w", i+1, redactURL(u), err)
		}
		server := o.Network + " " + strings.ToLower(o.Addr)
		if j, dup := seen[server]; dup {
			return nil, fmt.Errorf("--nodes: node %d %q is the same server (%s) as node %d: each node must be a separate Redis master",
				i+1, redactURL(u), o.Addr, j+1)
		}
		seen[server] = i
		// Without it go-redis bounds a request by its read timeout only and
		// the per-node timeout of the algorithm would not apply.
		o.ContextTimeoutEnabled = true
		opts = append(opts, o)
	}
	return opts, nil
}

// openNodes parses urls (see parseNodes) and returns one client per node.
// Close them with closeNodes.
func openNodes(urls []string) ([]*redis.Client, error) {
	opts, err := parseNodes(urls)
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

// redactURL masks the password of a node URL for messages.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return s
	}
	return u.Redacted()
}
