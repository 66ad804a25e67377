package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"regexp"
)

var labelChars = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// newID returns label-<8 hex> (or just the hex), safe for labels and paths.
func newID(label string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	if label = labelChars.ReplaceAllString(label, "-"); label != "" {
		if len(label) > 40 {
			label = label[:40]
		}
		return label + "-" + id
	}
	return id
}
