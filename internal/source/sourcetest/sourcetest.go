// Package sourcetest makes real git repositories for tests.
package sourcetest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Repo makes a repository on branch main with one commit per entry of
// commits (file name -> content; an empty map makes an empty commit) and
// returns its path and the commits' full hashes, oldest first. It does not
// depend on the git configuration of whoever runs the test.
func Repo(t testing.TB, commits ...map[string]string) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	git := func(args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL="+os.DevNull, "GIT_CONFIG_NOSYSTEM=1",
			"GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@x", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@x")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	var shas []string
	for i, files := range commits {
		for name, content := range files {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		git("add", "-A")
		git("commit", "-q", "--allow-empty", "-m", fmt.Sprintf("commit %d", i))
		shas = append(shas, git("rev-parse", "HEAD"))
	}
	return dir, shas
}

// Commit commits everything in the working tree of repo and returns the
// new commit's hash.
func Commit(t testing.TB, repo, message string) string {
	t.Helper()
	for _, args := range [][]string{{"add", "-A"}, {"commit", "-q", "-m", message}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@x", "GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@x")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	out, err := exec.Command("git", "-C", repo, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// GitCalls puts on PATH, for the rest of the test, a git that records its
// arguments and runs the real one, and returns a function that returns the
// subcommands of the gits run since it was last called (without the
// global options --git-dir DIR and -C DIR), oldest first. Only the gits
// started through PATH are seen, which is how Sortie starts them; those
// git starts itself (upload-pack for a fetch) run from git's exec path.
// It sets PATH with t.Setenv: the test cannot be parallel.
func GitCalls(t *testing.T) func() []string {
	t.Helper()
	real, err := exec.LookPath("git")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	log := filepath.Join(dir, "calls")
	script := "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '" + log + "'\nexec '" + real + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "git"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return func() []string {
		t.Helper()
		b, err := os.ReadFile(log)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if err := os.Remove(log); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		var subs []string
		for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(line)
			for len(f) > 1 && (f[0] == "--git-dir" || f[0] == "-C") {
				f = f[2:]
			}
			if len(f) > 0 {
				subs = append(subs, f[0])
			}
		}
		return subs
	}
}
