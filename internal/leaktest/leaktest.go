// Package leaktest checks, after a package's tests, that they left no
// goroutine running: goleak with more patience. It also quiets go-redis'
// reports of failed dials, which tests that kill nodes cause by the dozen.
//
// A go-redis pool that failed to dial a node (killed or partitioned on
// purpose) as often as its size redials from a goroutine that sleeps a second
// between tries and notices that its pool was closed only when it wakes up;
// goleak's own retries give up before that.
package leaktest

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

// Patience is how long VerifyTestMain waits for goroutines to end.
const Patience = 3 * time.Second

// VerifyTestMain quiets go-redis' dial failures (see RedisLogger), runs the
// tests and then fails the run if goroutines are still running after
// Patience.
func VerifyTestMain(m *testing.M) {
	redis.SetLogger(RedisLogger{W: os.Stderr})
	code := m.Run()
	if code == 0 {
		if err := Find(Patience); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Find retries goleak.Find until it reports nothing or patience runs out.
func Find(patience time.Duration) error {
	deadline := time.Now().Add(patience)
	for {
		err := goleak.Find()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// RedisLogger is a go-redis logger (redis.SetLogger) that drops the
// connection pool's reports of dials that failed and of connections it could
// not get, and of a pooled connection retired because the server's TLS
// alert (a client certificate refused) arrived on it: in tests they are the
// expected echo of nodes killed, paused, partitioned or refusing on purpose,
// and the command that needed the connection returns the same error to the
// test. Every other message (a panic recovered in the pool, a connection with
// unread data) is written to W.
type RedisLogger struct{ W io.Writer }

// Printf implements go-redis' internal.Logging.
func (l RedisLogger) Printf(_ context.Context, format string, v ...any) {
	if strings.HasPrefix(format, "redis: connection pool: failed to") {
		return
	}
	if strings.HasPrefix(format, "push: pre-command drain failed") && len(v) == 1 {
		if err, ok := v[0].(error); ok && strings.Contains(err.Error(), "remote error: tls:") {
			return
		}
	}
	fmt.Fprintf(l.W, "redis: "+strings.TrimPrefix(format, "redis: ")+"\n", v...)
}
