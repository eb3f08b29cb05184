package config

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the loader: it must never panic, and a
// failure must always be an Errors list whose entries carry a position.
func FuzzParse(f *testing.F) {
	f.Add([]byte("jobs:\n  boot: {bootstrap: true, install: [\"true\"]}\n  a: {run: x, dependencies: [boot]}\npipelines:\n  p: {jobs: [a]}\n"))
	f.Add([]byte("semaphores: {s: 0}\njobs:\n  a: &x {run: y}\n  b: *x\n"))
	f.Add([]byte("jobs:\n  a: {run: x, files: [{regex: '(', negate: true}], dependencies: [a]}\n"))
	f.Add([]byte("pipelines:\n  p:\n    trigger: {cron: '*/5 * * * *', push: {branch: main, poll: 1m}}\n"))
	f.Add([]byte("---\na: b\n---\nc: d\n"))
	f.Add([]byte("jobs: [1, 2]\n"))
	f.Add([]byte("pipelines:\n  p: {trigger: {cron: 'TZ=UTC'}}\n"))
	f.Add([]byte("pipelines:\n  p: {trigger: {cron: 'CRON_TZ=Europe/Berlin 0 1 * * *'}}\n"))
	f.Add([]byte("jobs:\n  a:\n    files: [^a, ^b\n    run: x\n"))
	f.Add([]byte("jobs:\n  a:\n    run: |\n      echo \"[x\n     bad: 'y\n\t- z: {a: [b}\n"))
	f.Add([]byte("a: &x [b]\nc: *y\nd: \"e\nf: 'g''h\n"))
	f.Add([]byte("jobs:\n  t: {abstract: true, env: {A: b}, files: [^x]}\n  a: {extends: t, run: x, env: {C: d}}\n  b: {extends: c}\n  c: {extends: b, bootstrap: true}\npipelines:\n  p: {jobs: [a, t]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without error")
			}
			return
		}
		var list Errors
		if !errors.As(err, &list) || len(list) == 0 {
			t.Fatalf("error is not a non-empty Errors: %T %v", err, err)
		}
		// YAML breaks lines at \r too, and at NEL, LS and PS: at most this many.
		lines := 1 + bytes.Count(data, []byte("\n")) + bytes.Count(data, []byte("\r")) +
			bytes.Count(data, []byte("\u0085")) + bytes.Count(data, []byte("\u2028")) + bytes.Count(data, []byte("\u2029"))
		for _, e := range list {
			if e.Pos.File != "fuzz.yaml" || !strings.HasPrefix(e.Error(), "fuzz.yaml") {
				t.Fatalf("error without a position: %q", e.Error())
			}
			if e.Pos.Line < 1 || e.Pos.Line > lines || e.Pos.Col < 1 {
				t.Fatalf("error outside the text (%d lines): %q", lines, e.Error())
			}
		}
	})
}

// FuzzMatcher checks the matcher against its definition: a path matches
// when the regex matches at the path's start (Python's re.match), and a
// negated matcher matches exactly the other paths.
func FuzzMatcher(f *testing.F) {
	f.Add("nodepool/.*", "playbooks/nodepool/x")
	f.Add(`^playbooks/zuul`, "playbooks/zuul-web.yaml")
	f.Add(`docs/$`, "docs/")
	f.Add(`a|b`, "xb")
	f.Add(`(?i)README`, "readme.md")
	f.Fuzz(func(t *testing.T, re, path string) {
		m, err := NewMatcher(re, false)
		if err != nil {
			if _, err2 := regexp.Compile(re); err2 == nil {
				t.Fatalf("NewMatcher(%q) failed but the regex compiles: %v", re, err)
			}
			return
		}
		n, err := NewMatcher(re, true)
		if err != nil {
			t.Fatalf("negated matcher failed to compile: %v", err)
		}
		if m.Match(path) == n.Match(path) {
			t.Fatalf("negate does not invert for %q on %q", re, path)
		}
		// Reference: some match starts at 0 iff the leftmost match does.
		loc := regexp.MustCompile(re).FindStringIndex(path)
		want := loc != nil && loc[0] == 0
		if got := m.Match(path); got != want {
			t.Fatalf("Match(%q, %q) = %v, want %v", re, path, got, want)
		}
	})
}
