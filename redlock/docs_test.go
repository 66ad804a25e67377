package redlock_test

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDocFragments checks that every Go fragment of the README and of the
// package documentation appears, line for line and in order, in one of this
// package's test files, where it compiles with its imports and an Example
// runs it: a fragment that drifts from the API fails here.
func TestDocFragments(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	frags := fencedGo(string(readme), "README.md")
	frags = append(frags, indentedDoc(string(doc))...)
	if len(frags) < 3 {
		t.Fatalf("found only %d Go fragments in README.md and doc.go: the parser lost its shape", len(frags))
	}
	files, _ := filepath.Glob("*_test.go")
	srcs := map[string][]string{}
	for _, f := range files {
		if f == "docs_test.go" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		srcs[f] = codeLines(string(b))
	}
	for _, fr := range frags {
		best, bestFile, missing := -1, "", ""
		for f, src := range srcs {
			n := matched(fr.lines, src)
			if n == len(fr.lines) {
				best = n
				break
			}
			if n > best {
				best, bestFile, missing = n, f, fr.lines[n]
			}
		}
		if best < len(fr.lines) {
			t.Errorf("%s, fragment starting %q: no test file holds it; closest is %s, which lacks line %q",
				fr.where, fr.lines[0], bestFile, missing)
		}
	}
}

type fragment struct {
	where string
	lines []string
}

// fencedGo returns the ```go blocks of a markdown text.
func fencedGo(md, name string) []fragment {
	var out []fragment
	var cur *fragment
	sc := bufio.NewScanner(strings.NewReader(md))
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```go":
			cur = &fragment{where: name + ":" + strconv.Itoa(ln)}
		case cur != nil && strings.TrimSpace(line) == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			if l := norm(line); l != "" {
				cur.lines = append(cur.lines, l)
			}
		}
	}
	return out
}

// indentedDoc returns the indented code blocks of doc.go's comment.
func indentedDoc(src string) []fragment {
	var out []fragment
	var cur *fragment
	for i, line := range strings.Split(src, "\n") {
		if code, ok := strings.CutPrefix(line, "//\t"); ok {
			if cur == nil {
				cur = &fragment{where: "doc.go:" + strconv.Itoa(i+1)}
			}
			if l := norm(code); l != "" {
				cur.lines = append(cur.lines, l)
			}
			continue
		}
		if cur != nil && strings.TrimSpace(line) != "//" {
			out = append(out, *cur)
			cur = nil
		}
	}
	return out
}

func codeLines(src string) []string {
	var out []string
	for _, line := range strings.Split(src, "\n") {
		if l := norm(line); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// norm drops indentation and collapses runs of blanks, so that gofmt's
// alignment of comments does not count.
func norm(line string) string { return strings.Join(strings.Fields(line), " ") }

// matched returns how many of want's lines appear in src in order, each
// after the previous one.
func matched(want, src []string) int {
	n, j := 0, 0
	for ; n < len(want); n++ {
		for j < len(src) && src[j] != want[n] {
			j++
		}
		if j == len(src) {
			return n
		}
		j++
	}
	return n
}
