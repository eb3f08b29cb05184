//go:build linux

package local

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
)

func checkout(t *testing.T, b *Bastion, r *repo, buildset, commit string) (string, string) {
	t.Helper()
	var log buffer
	dir, err := b.Checkout(context.Background(), r.dir, buildset, commit, &log)
	if err != nil {
		t.Fatalf("Checkout(%s, %.7s): %v", buildset, commit, err)
	}
	return dir, log.String()
}

// assertCheckout asserts that dir is a clean checkout of commit whose file
// v holds want.
func assertCheckout(t *testing.T, dir, commit, want string) {
	t.Helper()
	if head := runGit(t, dir, "rev-parse", "HEAD"); head != commit {
		t.Errorf("%s: HEAD is %s, want %s", dir, head, commit)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "v")); err != nil || string(got) != want {
		t.Errorf("%s: v is %q (%v), want %q", dir, got, err, want)
	}
	if st := runGit(t, dir, "status", "--porcelain", "--ignored"); st != "" {
		t.Errorf("%s is not clean:\n%s", dir, st)
	}
}

func assertNoTemporaries(t *testing.T, dir string) {
	t.Helper()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("%s left in %s", e.Name(), dir)
		}
	}
}

func TestCheckout(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	c1 := r.commit(map[string]string{"v": "1"})
	work := t.TempDir()
	b := New(work)

	// The repository is a path on this machine: the mirror is its clone.
	dir, log := checkout(t, b, r, "bs1", c1)
	if dir != filepath.Join(work, "src", "bs1") || !strings.Contains(log, "local clone of "+r.dir) {
		t.Errorf("Checkout = %s, log %q", dir, log)
	}
	assertCheckout(t, dir, c1, "1")
	mirror, err := os.Stat(filepath.Join(work, "mirror.git"))
	if err != nil {
		t.Fatal(err)
	}

	// The same buildset again: reused.
	again, log := checkout(t, b, r, "bs1", c1)
	if again != dir || !strings.Contains(log, "reusing") {
		t.Errorf("second Checkout = %s, log %q", again, log)
	}
	assertCheckout(t, dir, c1, "1")

	// A new commit for another buildset: fetched into the same mirror.
	c2 := r.commit(map[string]string{"v": "2"})
	dir2, log := checkout(t, b, r, "bs2", c2)
	if !strings.Contains(log, "fetching") {
		t.Errorf("log %q", log)
	}
	assertCheckout(t, dir2, c2, "2")
	assertCheckout(t, dir, c1, "1")
	if now, err := os.Stat(filepath.Join(work, "mirror.git")); err != nil || !os.SameFile(mirror, now) {
		t.Errorf("mirror.git was replaced: %v", err)
	}
	for bs, c := range map[string]string{"bs1": c1, "bs2": c2} {
		if got := runGit(t, "", "--git-dir", filepath.Join(work, "mirror.git"), "rev-parse", "refs/sortie/"+bs); got != c {
			t.Errorf("refs/sortie/%s = %s, want %s", bs, got, c)
		}
	}

	// A commit the mirror has already: no fetch.
	_, log = checkout(t, b, r, "bs3", c1)
	if !strings.Contains(log, "mirror has") {
		t.Errorf("log %q", log)
	}

	// Another commit for an existing buildset is refused.
	_, err = b.Checkout(context.Background(), r.dir, "bs1", c2, nil)
	if !bastion.IsInfra(err) || !strings.Contains(err.Error(), "holds "+c1) {
		t.Errorf("Checkout of another commit into bs1: %v", err)
	}
	assertCheckout(t, dir, c1, "1")
	assertNoTemporaries(t, filepath.Join(work, "src"))
}

func TestCheckoutConcurrent(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	c1 := r.commit(map[string]string{"v": "1"})
	c2 := r.commit(map[string]string{"v": "2"})
	work := t.TempDir()
	type job struct{ buildset, commit, want string }
	jobs := []job{{"a", c1, "1"}, {"b", c2, "2"}, {"c", c1, "1"}, {"c", c1, "1"}}
	dirs := make([]string, len(jobs))
	errs := make([]error, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Go(func() {
			// A Bastion each, as several processes on one workdir.
			dirs[i], errs[i] = New(work).Checkout(context.Background(), r.dir, j.buildset, j.commit, nil)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for i, j := range jobs {
		assertCheckout(t, dirs[i], j.commit, j.want)
	}
	assertNoTemporaries(t, filepath.Join(work, "src"))
}

func TestCheckoutErrors(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	c1 := r.commit(map[string]string{"v": "1"})
	for name, args := range map[string][3]string{
		"unknown commit":  {r.dir, "bs", strings.Repeat("ab", 20)},
		"missing repo":    {filepath.Join(t.TempDir(), "nope"), "bs", c1},
		"short commit":    {r.dir, "bs", c1[:12]},
		"branch":          {r.dir, "bs", "main"},
		"bad buildset":    {r.dir, "../bs", c1},
		"hidden buildset": {r.dir, ".tmp-bs", c1},
		"option repo":     {"--upload-pack=touch /tmp/x", "bs", c1},
	} {
		work := t.TempDir()
		_, err := New(work).Checkout(context.Background(), args[0], args[1], args[2], nil)
		if !bastion.IsInfra(err) {
			t.Errorf("%s: %v, want an InfraError", name, err)
		}
		if _, err := os.Stat(filepath.Join(work, "src", "bs")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a failed checkout left src/bs: %v", name, err)
		}
		assertNoTemporaries(t, filepath.Join(work, "src"))
		if name == "missing repo" && !strings.HasPrefix(err.Error(), "bastion: checkout: fetch "+c1) {
			t.Errorf("error %q", err)
		}
	}
}

func count(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "\n")
}

func TestInstall(t *testing.T) {
	t.Parallel()
	b := New(t.TempDir())
	counter := filepath.Join(t.TempDir(), "counter")
	env := pathEnv("COUNTER", counter)
	install := func(commands ...string) (bool, string, error) {
		var log buffer
		ok, err := b.Install(context.Background(), commands, env, &log)
		return ok, log.String(), err
	}

	cmds := []string{`echo run >> "$COUNTER"`}
	if ok, log, err := install(cmds...); !ok || err != nil || !strings.Contains(log, "installed") || count(t, counter) != 1 {
		t.Fatalf("first install: %v, %v, log %q, %d runs", ok, err, log, count(t, counter))
	}
	if ok, log, err := install(cmds...); ok || err != nil || !strings.Contains(log, "already up to date") || count(t, counter) != 1 {
		t.Fatalf("second install: %v, %v, log %q, %d runs", ok, err, log, count(t, counter))
	}
	cmds = append(cmds, "true")
	if ok, log, err := install(cmds...); !ok || err != nil || !strings.Contains(log, "+ true\n") || count(t, counter) != 2 {
		t.Fatalf("changed install: %v, %v, log %q, %d runs", ok, err, log, count(t, counter))
	}

	// A failing command is the bootstrap job's failure, and is run again
	// next time: nothing was stamped.
	failing := []string{`echo run >> "$COUNTER"`, "echo oops; exit 3", "echo not reached"}
	for want := 3; want <= 4; want++ {
		ok, log, err := install(failing...)
		if ok || err == nil || bastion.IsInfra(err) || !strings.Contains(err.Error(), "command 2 of 3") ||
			!strings.Contains(err.Error(), "exit status 3") || count(t, counter) != want {
			t.Errorf("failing install: %v, %v, %d runs", ok, err, count(t, counter))
		}
		if !strings.Contains(log, "oops\n") || strings.Contains(log, "not reached") {
			t.Errorf("log %q", log)
		}
	}
	if ok, log, err := install(cmds...); ok || err != nil || !strings.Contains(log, "already up to date") {
		t.Errorf("install after a failed one: %v, %v, log %q", ok, err, log)
	}

	if ok, log, err := install(); ok || err != nil || !strings.Contains(log, "nothing to install") {
		t.Errorf("empty install: %v, %v, log %q", ok, err, log)
	}
}

func TestInstallConcurrent(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	counter := filepath.Join(t.TempDir(), "counter")
	cmds := []string{`echo run >> "$COUNTER"`, "sleep 0.05"}
	results := make([]bool, 6)
	errs := make([]error, len(results))
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			// A Bastion each, as several processes on one workdir.
			results[i], errs[i] = New(work).Install(context.Background(), cmds, pathEnv("COUNTER", counter), nil)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	installed := 0
	for _, ok := range results {
		if ok {
			installed++
		}
	}
	if installed != 1 || count(t, counter) != 1 {
		t.Errorf("%d installed, %d runs; want 1 each", installed, count(t, counter))
	}
}

func TestInstallCanceledWaitingForLock(t *testing.T) {
	t.Parallel()
	work := t.TempDir()
	holder := exec.Command("flock", filepath.Join(work, "install.lock"), "sh", "-c", "echo locked; read x || true")
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Skipf("flock(1): %v", err)
	}
	defer holder.Wait()
	defer stdin.Close()
	buf := make([]byte, 7)
	if _, err := stdout.Read(buf); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = New(work).Install(ctx, []string{"true"}, nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) || bastion.IsInfra(err) {
		t.Errorf("Install while locked: %v", err)
	}
}

func TestFinish(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	c1 := r.commit(map[string]string{"v": "1"})
	work := t.TempDir()
	b := New(work)
	now := time.Now()
	b.clock = func() time.Time { return now }
	tick := func() { now = now.Add(time.Minute) }
	for _, bs := range []string{"a", "b", "c", "d"} {
		checkout(t, b, r, bs, c1)
	}
	src := filepath.Join(work, "src")
	exists := func(names ...string) {
		t.Helper()
		entries, err := os.ReadDir(src)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range entries {
			got = append(got, e.Name())
		}
		if strings.Join(got, " ") != strings.Join(names, " ") {
			t.Errorf("src holds %q, want %q", got, names)
		}
	}
	hasRef := func(bs string) bool {
		cmd := exec.Command("git", "--git-dir", filepath.Join(work, "mirror.git"), "rev-parse", "--verify", "--quiet", "refs/sortie/"+bs)
		return cmd.Run() == nil
	}
	finish := func(bs string, keep int) {
		t.Helper()
		tick()
		if err := b.Finish(context.Background(), bs, keep); err != nil {
			t.Fatalf("Finish(%s, %d): %v", bs, keep, err)
		}
	}

	finish("a", 2)
	finish("b", 2)
	exists("a", "b", "c", "d")
	finish("c", 2)
	exists("b", "c", "d")
	if hasRef("a") || !hasRef("b") {
		t.Errorf("refs: a %v, b %v", hasRef("a"), hasRef("b"))
	}

	// A checkout used again is not finished any more.
	checkout(t, b, r, "b", c1)

	// Leftovers: a checkout being made for an hour, one just begun, and a
	// removal that was interrupted.
	for _, name := range []string{".tmp-x-1", ".tmp-y-2", ".rm-z-3"} {
		if err := os.MkdirAll(filepath.Join(src, name, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	old := now.Add(-2 * time.Hour)
	if err := os.Chtimes(filepath.Join(src, ".tmp-x-1"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(src, ".tmp-y-2"), now, now); err != nil {
		t.Fatal(err)
	}
	finish("never-checked-out", 0)
	exists(".tmp-y-2", "b", "d")
	if hasRef("c") || !hasRef("d") {
		t.Errorf("refs: c %v, d %v", hasRef("c"), hasRef("d"))
	}

	// Keeping none removes every finished checkout, and only those.
	finish("d", 0)
	exists(".tmp-y-2", "b")
	finish("d", 0) // twice
	exists(".tmp-y-2", "b")

	if err := b.Finish(context.Background(), "../b", 0); !bastion.IsInfra(err) {
		t.Errorf("Finish of a bad id: %v", err)
	}
}

func TestCheckBuildset(t *testing.T) {
	t.Parallel()
	for _, id := range []string{"a", "0f8a1c2e-7d9b-4c1a-9e0f-123456789abc", "deploy_42.1", "A-b"} {
		if err := checkBuildset(id); err != nil {
			t.Errorf("checkBuildset(%q): %v", id, err)
		}
	}
	for _, id := range []string{"", ".a", "-a", "_a", "a/b", "a..b", "a.", "a.lock", "a b", "é", strings.Repeat("a", 201)} {
		if err := checkBuildset(id); err == nil {
			t.Errorf("checkBuildset(%q) accepted it", id)
		}
	}
}

// WriteFile makes the directories, replaces a file there before, and
// leaves no temporary file behind.
func TestWriteFile(t *testing.T) {
	t.Parallel()
	b := New(t.TempDir())
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "plugin.py")
	for _, content := range []string{"first\n", "second, longer\n"} {
		if err := b.WriteFile(t.Context(), path, []byte(content)); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Errorf("read %q, %v; want %q", got, err, content)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("stat: %v, %v", fi, err)
		}
		assertNoTemporaries(t, dir)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := b.WriteFile(ctx, filepath.Join(dir, "other"), nil); err == nil {
		t.Error("WriteFile with a done context succeeded")
	}
}
