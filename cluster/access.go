package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unicode"
)

// User is an ACL user created on every docker node (Options.Users).
type User struct {
	Name     string
	Password string
	// Rules are ACL rules as ACL SETUSER takes them, one per element:
	// "+get", "+@read", "~app:*", "&events:*". The user starts from
	// nothing (ACL "reset"), is enabled and has Password; every permission
	// comes from Rules. A rule Redis refuses makes the node fail to start.
	Rules []string
}

// checkAccess validates TLS, Password and Users against the backend.
func (o *Options) checkAccess() error {
	if o.TLSClientAuth && !o.TLS {
		return fmt.Errorf("cluster: TLSClientAuth needs TLS")
	}
	if o.Backend != BackendDocker {
		var set []string
		if o.TLS {
			set = append(set, "TLS")
		}
		if o.Password != "" {
			set = append(set, "Password")
		}
		if len(o.Users) > 0 {
			set = append(set, "Users")
		}
		if len(set) > 0 {
			hint := ""
			if o.Backend == BackendExternal {
				hint = " (external nodes take TLS and credentials from their URLs: rediss://user:password@host:port)"
			}
			return fmt.Errorf("cluster: %s only for the %s backend, not %q%s", strings.Join(set, ", "), BackendDocker, o.Backend, hint)
		}
		return nil
	}
	if err := checkConfToken("Password", o.Password); err != nil {
		return err
	}
	seen := make(map[string]bool, len(o.Users))
	for i, u := range o.Users {
		switch {
		case u.Name == "":
			return fmt.Errorf("cluster: user %d has no name", i)
		case u.Name == "default":
			return fmt.Errorf("cluster: user %d is named %q: set Options.Password for the default user", i, u.Name)
		case strings.ContainsFunc(u.Name, unicode.IsSpace) || strings.ContainsFunc(u.Name, unicode.IsControl):
			return fmt.Errorf("cluster: user name %q contains white space or control characters", u.Name)
		case seen[u.Name]:
			return fmt.Errorf("cluster: user %q given twice", u.Name)
		case u.Password == "":
			return fmt.Errorf("cluster: user %q has no password", u.Name)
		}
		seen[u.Name] = true
		if err := checkConfToken(fmt.Sprintf("user %q password", u.Name), u.Password); err != nil {
			return err
		}
		for _, r := range u.Rules {
			if r == "" || strings.ContainsFunc(r, unicode.IsSpace) {
				return fmt.Errorf("cluster: user %q: rule %q is empty or contains white space (one rule per element)", u.Name, r)
			}
		}
	}
	return nil
}

// checkConfToken refuses control characters: redis.conf is line based.
// The message does not show the value (a password).
func checkConfToken(what, v string) error {
	if strings.ContainsFunc(v, unicode.IsControl) {
		return fmt.Errorf("cluster: %s contains control characters", what)
	}
	return nil
}

func (o *Options) user(name string) (User, bool) {
	for _, u := range o.Users {
		if u.Name == name {
			return u, true
		}
	}
	return User{}, false
}

// writeAccessConf writes the directives that carry secrets (requirepass,
// users) to dir/redis.conf, so that they stay out of the container's
// command line, and returns the file's name; "" when there is nothing to
// write.
func (o *Options) writeAccessConf(dir string) (string, error) {
	if o.Password == "" && len(o.Users) == 0 {
		return "", nil
	}
	var b strings.Builder
	if o.Password != "" {
		fmt.Fprintf(&b, "requirepass %s\n", confQuote(o.Password))
	}
	for _, u := range o.Users {
		fmt.Fprintf(&b, "user %s reset on %s", confQuote(u.Name), confQuote(">"+u.Password))
		for _, r := range u.Rules {
			b.WriteString(" " + confQuote(r))
		}
		b.WriteString("\n")
	}
	path := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		return "", fmt.Errorf("cluster: write %s: %w", path, err)
	}
	return "redis.conf", nil
}

// confQuote quotes s as one redis.conf argument: double quotes, with
// backslash and double quote escaped (redis' sdssplitargs rules).
func confQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
