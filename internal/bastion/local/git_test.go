//go:build linux

package local

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

// A checkout of a commit the mirror has already costs two gits: one pins
// it in the mirror, one checks it out. (It was four gits, six processes:
// cat-file, update-ref, a clone that lists the mirror's refs through a
// shell and git-upload-pack, and checkout.) The first checkout makes the
// mirror as a local clone of a repository on this machine, and by a fetch
// from one elsewhere.
func TestCheckoutGitProcesses(t *testing.T) {
	r := newRepo(t)
	c1 := r.commit(map[string]string{"v": "1"})
	work := t.TempDir()
	b := New(work)
	calls := sourcetest.GitCalls(t)

	if _, err := New(t.TempDir()).Checkout(t.Context(), "file://"+r.dir, "bs1", c1, nil); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(calls(), " "), "init update-ref fetch checkout"; got != want {
		t.Errorf("first checkout from a URL ran git %s, want %s", got, want)
	}
	dir1, _ := checkout(t, b, r, "bs1", c1)
	if got, want := strings.Join(calls(), " "), "clone update-ref checkout"; got != want {
		t.Errorf("first checkout from a path ran git %s, want %s", got, want)
	}
	c2 := r.commit(map[string]string{"v": "2"})
	calls() // the test's own
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

// TestPrepare: Prepare makes the mirror a first checkout would make, in a
// workdir that does not exist yet, and the checkout that follows only pins
// its commit; a second Prepare, with the mirror there, runs no git.
func TestPrepare(t *testing.T) {
	r := newRepo(t)
	c1 := r.commit(map[string]string{"v": "1"})
	b := New(filepath.Join(t.TempDir(), "bastion"))
	calls := sourcetest.GitCalls(t)
	calls() // the test's own
	if err := b.Prepare(t.Context(), r.dir); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(calls(), " "), "clone"; got != want {
		t.Errorf("Prepare ran git %s, want %s", got, want)
	}
	if err := b.Prepare(t.Context(), r.dir); err != nil {
		t.Fatal(err)
	}
	if got := calls(); len(got) > 0 {
		t.Errorf("a second Prepare ran git %v", got)
	}
	dir, _ := checkout(t, b, r, "bs1", c1)
	if got, want := strings.Join(calls(), " "), "update-ref checkout"; got != want {
		t.Errorf("a checkout after Prepare ran git %s, want %s", got, want)
	}
	assertCheckout(t, dir, c1, "1")
	if err := b.Prepare(t.Context(), "-x"); err == nil {
		t.Error("Prepare took a repository named like an option")
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

// BenchmarkCheckout: a buildset's checkout of a commit the mirror has,
// the common case (docs/benchmarks.md).
func BenchmarkCheckout(b *testing.B) {
	up := filepath.Join(b.TempDir(), "upstream")
	for _, args := range [][]string{{"init", "--quiet", "-b", "main", up}, {"-C", up, "commit", "--quiet", "--allow-empty", "-m", "one"}} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			b.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	out, err := exec.Command("git", "-C", up, "rev-parse", "HEAD").Output()
	if err != nil {
		b.Fatal(err)
	}
	commit := strings.TrimSpace(string(out))
	bastion := New(b.TempDir())
	ctx := context.Background()
	if _, err := bastion.Checkout(ctx, up, "bs-first", commit, nil); err != nil {
		b.Fatal(err)
	}
	// The gits' CPU time is the cost: wall time on a shared machine
	// is not.
	var before, after syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &before)
	n := 0
	for b.Loop() {
		if _, err := bastion.Checkout(ctx, up, fmt.Sprintf("bs-%d", n), commit, nil); err != nil {
			b.Fatal(err)
		}
		n++
	}
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &after)
	cpu := func(r syscall.Rusage) time.Duration {
		return time.Duration(r.Utime.Nano() + r.Stime.Nano())
	}
	b.ReportMetric(float64((cpu(after)-cpu(before)).Microseconds())/1000/float64(n), "git-CPU-ms/op")
}
