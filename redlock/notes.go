package redlock

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"
)

// notes is the Client's logger: it says each fact once, not once per retry.
// A fact (a node in quarantine, a refused vote of one kind on one node) is
// logged again only after noteEvery has passed.
type notes struct {
	l    *slog.Logger // nil: no logging
	mu   sync.Mutex
	last map[string]time.Time
}

const noteEvery = time.Minute

func newNotes(l *slog.Logger) *notes {
	return &notes{l: l, last: make(map[string]time.Time)}
}

// due reports whether the fact named key may be logged now.
func (n *notes) due(key string) bool {
	if n == nil || n.l == nil {
		return false
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	if t, ok := n.last[key]; ok && now.Sub(t) < noteEvery {
		return false
	}
	n.last[key] = now
	return true
}

// node logs a fact about node nd, with its index and address as
// attributes; the fact is the message itself.
func (n *notes) node(level slog.Level, nd *node, msg string, args ...any) {
	if !n.due(msg + " " + strconv.Itoa(nd.index)) {
		return
	}
	args = append([]any{"node", nd.index, "addr", nd.addr}, args...)
	n.l.Log(context.Background(), level, msg, args...)
}

func (n *notes) info(key, msg string, args ...any) {
	if n.due(key) {
		n.l.Info(msg, args...)
	}
}

func (n *notes) warn(key, msg string, args ...any) {
	if n.due(key) {
		n.l.Warn(msg, args...)
	}
}

func (n *notes) error(key, msg string, args ...any) {
	if n.due(key) {
		n.l.Error(msg, args...)
	}
}
