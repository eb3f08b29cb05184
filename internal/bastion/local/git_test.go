//go:build linux

package local

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

// A checkout of a commit the mirror has already costs two gits: one pins
// it in the mirror, one checks it out. (It was four, and five processes
// more: cat-file, update-ref, a clone that lists the mirror's refs through
// a shell and git-upload-pack, and checkout.)
func TestCheckoutGitProcesses(t *testing.T) {
	r := newRepo(t)
	c1 := r.commit(map[string]string{"v": "1"})
	c2 := r.commit(map[string]string{"v": "2"})
	work := t.TempDir()
	b := New(work)
	calls := sourcetest.GitCalls(t)

	dir1, _ := checkout(t, b, r, "bs1", c1)
	if got, want := strings.Join(calls(), " "), "init update-ref fetch checkout"; got != want {
		t.Errorf("first checkout ran git %s, want %s", got, want)
	}
	dir2, log := checkout(t, b, r, "bs2", c1)
	if got, want := strings.Join(calls(), " "), "update-ref checkout"; got != want {
		t.Errorf("checkout of a commit the mirror has ran git %s, want %s", got, want)
	}
	if !strings.Contains(log, "mirror has") {
		t.Errorf("log %q", log)
	}
	dir3, _ := checkout(t, b, r, "bs3", c2)
	if got, want := strings.Join(calls(), " "), "update-ref fetch checkout"; got != want {
		t.Errorf("checkout of a new commit ran git %s, want %s", got, want)
	}
	assertCheckout(t, dir1, c1, "1")
	assertCheckout(t, dir2, c1, "1")
	assertCheckout(t, dir3, c2, "2")

	// Each checkout is a repository of its own, as a clone --shared of
	// the mirror is: its origin is the mirror, whose objects it borrows,
	// and git finds every object it needs.
	mirror := filepath.Join(work, "mirror.git")
	for _, dir := range []string{dir1, dir2, dir3} {
		if got := runGit(t, dir, "rev-parse", "--git-dir"); got != ".git" {
			t.Errorf("%s: git dir %s", dir, got)
		}
		if got := runGit(t, dir, "remote", "get-url", "origin"); got != mirror {
			t.Errorf("%s: origin is %s, want %s", dir, got, mirror)
		}
		runGit(t, dir, "fsck", "--connectivity-only", "--no-dangling")
	}
	// One checkout's work is not another's.
	if err := os.WriteFile(filepath.Join(dir1, "v"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	runGit(t, dir1, "commit", "--quiet", "-am", "local")
	assertCheckout(t, dir2, c1, "1")

	// Finishing checkouts deletes their refs with one git.
	calls()
	if err := b.Finish(t.Context(), "bs1", 0); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(calls(), " "), "update-ref"; got != want {
		t.Errorf("Finish ran git %s, want %s", got, want)
	}
	for _, bs := range []string{"bs1", "bs2", "bs3"} {
		if err := b.Finish(t.Context(), bs, 0); err != nil {
			t.Fatal(err)
		}
	}
	if refs := runGit(t, "", "--git-dir", mirror, "for-each-ref", "refs/sortie/"); refs != "" {
		t.Errorf("refs left after Finish:\n%s", refs)
	}
}

// A mirror that names its objects by SHA-256 gets checkouts that do too.
func TestCheckoutSHA256(t *testing.T) {
	t.Parallel()
	r := &repo{t: t, dir: filepath.Join(t.TempDir(), "upstream")}
	runGit(t, "", "init", "--quiet", "-b", "main", "--object-format=sha256", r.dir)
	c := r.commit(map[string]string{"v": "1"})
	if len(c) != 64 {
		t.Fatalf("commit %s is not a SHA-256 name", c)
	}
	work := t.TempDir()
	runGit(t, "", "init", "--quiet", "--bare", "--object-format=sha256", filepath.Join(work, "mirror.git"))
	dir, _ := checkout(t, New(work), r, "bs1", c)
	assertCheckout(t, dir, c, "1")
}
