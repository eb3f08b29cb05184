package source_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

func TestMain(m *testing.M) {
	// Tests must not depend on the git configuration of whoever runs them.
	for k, v := range map[string]string{
		"GIT_CONFIG_GLOBAL":   os.DevNull,
		"GIT_CONFIG_NOSYSTEM": "1",
		"GIT_AUTHOR_NAME":     "Sortie Test",
		"GIT_AUTHOR_EMAIL":    "test@example.org",
		"GIT_COMMITTER_NAME":  "Sortie Test",
		"GIT_COMMITTER_EMAIL": "test@example.org",
	} {
		os.Setenv(k, v)
	}
	goleak.VerifyTestMain(m)
}

// repo is a real git repository to mirror.
type repo struct {
	t   *testing.T
	dir string
}

func newRepo(t *testing.T) *repo {
	t.Helper()
	r := &repo{t: t, dir: filepath.Join(t.TempDir(), "upstream")}
	r.git("init", "--quiet", "-b", "main", r.dir)
	return r
}

func (r *repo) git(args ...string) string {
	r.t.Helper()
	cmd := exec.Command("git", args...)
	if len(args) == 0 || args[0] != "init" {
		cmd.Dir = r.dir
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		r.t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// commit writes files (path: content; "" deletes) and commits them.
func (r *repo) commit(msg string, files map[string]string) string {
	r.t.Helper()
	for p, c := range files {
		full := filepath.Join(r.dir, p)
		if c == "" {
			if err := os.Remove(full); err != nil {
				r.t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			r.t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			r.t.Fatal(err)
		}
	}
	r.git("add", "-A")
	r.git("commit", "--quiet", "--allow-empty", "-m", msg)
	return r.git("rev-parse", "HEAD")
}

func newMirror(t *testing.T, r *repo) *source.Mirror {
	return &source.Mirror{Dir: filepath.Join(t.TempDir(), "state", "mirror.git"), URL: r.dir}
}

func resolve(t *testing.T, m *source.Mirror, rev string) string {
	t.Helper()
	sha, err := m.Resolve(context.Background(), rev)
	if err != nil {
		t.Fatalf("Resolve(%q): %v", rev, err)
	}
	return sha
}

func TestUpdateAndResolve(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newRepo(t)
	c1 := r.commit("one", map[string]string{"a": "1"})
	r.git("tag", "v1")
	r.git("tag", "-a", "-m", "annotated", "v1a")
	m := newMirror(t, r)
	if err := m.Update(ctx); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []string{"", "HEAD", "main", "refs/heads/main", "v1", "v1a", c1, c1[:10]} {
		if got := resolve(t, m, rev); got != c1 {
			t.Errorf("Resolve(%q) = %s, want %s", rev, got, c1)
		}
	}
	entries, _ := os.ReadDir(filepath.Dir(m.Dir))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary %s left behind", e.Name())
		}
	}

	// Incremental fetch: new commits, a deleted branch, a force-push.
	r.git("branch", "feature")
	if err := m.Update(ctx); err != nil {
		t.Fatal(err)
	}
	resolve(t, m, "feature")
	c2 := r.commit("two", map[string]string{"b": "2"})
	r.git("branch", "-D", "feature")
	if err := m.Update(ctx); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, m, "main"); got != c2 {
		t.Errorf("main after fetch = %s, want %s", got, c2)
	}
	if _, err := m.Resolve(ctx, "feature"); !errors.Is(err, source.ErrUnknownRevision) {
		t.Errorf("deleted branch still resolves: %v", err)
	}
	r.git("reset", "--quiet", "--hard", c1)
	c3 := r.commit("rewritten", map[string]string{"c": "3"})
	if err := m.Update(ctx); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, m, ""); got != c3 {
		t.Errorf("HEAD after force-push = %s, want %s", got, c3)
	}
}

func TestHeadFollowsDefaultBranch(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	r.commit("one", nil)
	r.git("checkout", "--quiet", "-b", "trunk")
	c2 := r.commit("two", nil)
	m := newMirror(t, r)
	if err := m.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, m, ""); got != c2 {
		t.Errorf("Resolve(\"\") = %s, want trunk's %s", got, c2)
	}
	// The remote's default branch moves back to main: so does HEAD.
	r.git("checkout", "--quiet", "main")
	c1 := r.git("rev-parse", "HEAD")
	if err := m.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, m, ""); got != c1 {
		t.Errorf("after the default branch moved, Resolve(\"\") = %s, want main's %s", got, c1)
	}
	// And stays when it does not move.
	if err := m.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, m, ""); got != c1 {
		t.Errorf("after an update with no move, Resolve(\"\") = %s, want %s", got, c1)
	}
}

func TestResolveUnknown(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	r.commit("one", map[string]string{"a": "1"})
	m := newMirror(t, r)
	if err := m.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, rev := range []string{"nope", strings.Repeat("ab", 20), "--all", "main:a"} {
		_, err := m.Resolve(context.Background(), rev)
		if !errors.Is(err, source.ErrUnknownRevision) {
			t.Errorf("Resolve(%q) = %v, want ErrUnknownRevision", rev, err)
		}
	}
}

func TestUpdateConcurrent(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	c1 := r.commit("one", map[string]string{"a": "1"})
	m := newMirror(t, r)
	// Two Mirrors on one Dir, as two processes on one state dir would be.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			mi := &source.Mirror{Dir: m.Dir, URL: m.URL}
			errs[i] = mi.Update(context.Background())
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, m, "main"); got != c1 {
		t.Errorf("main = %s, want %s", got, c1)
	}
}

func TestUpdateErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "no-such-repo")
	m := &source.Mirror{Dir: filepath.Join(t.TempDir(), "mirror.git"), URL: missing}
	err := m.Update(context.Background())
	var ee *exec.ExitError
	if err == nil || !strings.HasPrefix(err.Error(), "source: clone "+m.Dir+": exit status 128: fatal: ") || !errors.As(err, &ee) {
		t.Errorf("clone of a missing repo: %v", err)
	}
	var fe *source.FetchError
	if !errors.As(err, &fe) || fe.URL != missing || errors.Is(err, source.ErrUnknownRevision) {
		t.Errorf("clone of a missing repo: %v is not a FetchError for %s", err, missing)
	}
	if _, serr := os.Stat(m.Dir); !os.IsNotExist(serr) {
		t.Errorf("failed clone left %s: %v", m.Dir, serr)
	}

	r := newRepo(t)
	r.commit("one", nil)
	m.URL = r.dir
	if err := m.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	m.URL = missing
	err = m.Update(context.Background())
	if err == nil || !strings.HasPrefix(err.Error(), "source: fetch "+m.Dir+": exit status 128: fatal: ") || !errors.As(err, &fe) {
		t.Errorf("fetch from a missing repo: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.URL = r.dir
	if err := m.Update(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Update with a canceled context: %v", err)
	}
}

func TestUpdateWaitsForLock(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	r.commit("one", nil)
	m := newMirror(t, r)
	release := holdLock(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Update(ctx) }()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "wait for lock") {
		t.Errorf("Update while locked, then canceled: %v", err)
	}
	release()
	if err := m.Update(context.Background()); err != nil {
		t.Errorf("Update after the lock was released: %v", err)
	}
}

func TestChangedFiles(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	root := r.commit("root", map[string]string{"a": "1", "dir/b": "2"})
	c2 := r.commit("two", map[string]string{"a": "changed", "dir/c": "3"})
	r.git("mv", "dir/b", "dir/renamed")
	c3 := r.commit("rename", map[string]string{"with space": "x"})
	r.git("checkout", "--quiet", "-b", "side", c2)
	side := r.commit("side", map[string]string{"side": "s"})
	r.git("checkout", "--quiet", "main")
	r.git("merge", "--quiet", "--no-ff", "-m", "merge", "side")
	merge := r.git("rev-parse", "HEAD")
	empty := r.commit("empty", nil)
	m := newMirror(t, r)
	if err := m.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from, to string
		want     []string
	}{
		{"", root, []string{"a", "dir/b"}},
		{strings.Repeat("0", 40), root, []string{"a", "dir/b"}},
		{"", c2, []string{"a", "dir/c"}},
		{root, c2, []string{"a", "dir/c"}},
		{c2, c3, []string{"dir/b", "dir/renamed", "with space"}},
		{root, c3, []string{"a", "dir/b", "dir/c", "dir/renamed", "with space"}},
		{c3, root, []string{"a", "dir/b", "dir/c", "dir/renamed", "with space"}},
		{"", merge, []string{"side"}},
		{"", side, []string{"side"}},
		{"", empty, []string{}},
		{merge, "main", []string{}},
	} {
		got, err := m.ChangedFiles(context.Background(), tc.from, tc.to)
		if err != nil {
			t.Errorf("ChangedFiles(%.7s, %.7s): %v", tc.from, tc.to, err)
			continue
		}
		slices.Sort(got)
		if got == nil || !slices.Equal(got, tc.want) {
			t.Errorf("ChangedFiles(%.7s, %.7s) = %q, want %q", tc.from, tc.to, got, tc.want)
		}
	}
	if _, err := m.ChangedFiles(context.Background(), "nope", c2); !errors.Is(err, source.ErrUnknownRevision) {
		t.Errorf("ChangedFiles from an unknown rev: %v", err)
	}
}

func TestSubjects(t *testing.T) {
	r := newRepo(t)
	first := r.commit("Add the base playbook", map[string]string{"a": "1"})
	second := r.commit("Deploy zuul <web> & \"scheduler\"\n\nThe body is not the subject.", map[string]string{"a": "2"})
	m := newMirror(t, r)
	ctx := context.Background()
	if err := m.Update(ctx); err != nil {
		t.Fatal(err)
	}
	unknown := strings.Repeat("ab", 20)
	got, err := m.Subjects(ctx, second, first, unknown, "not-a-hash", first)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{first: "Add the base playbook", second: `Deploy zuul <web> & "scheduler"`}
	if len(got) != len(want) || got[first] != want[first] || got[second] != want[second] {
		t.Errorf("Subjects: %q, want %q", got, want)
	}
	if got, err := m.Subjects(ctx); err != nil || len(got) != 0 {
		t.Errorf("Subjects of nothing: %q, %v", got, err)
	}
	cs, err := m.Commits(ctx, second, unknown)
	if c := cs[second]; err != nil || len(cs) != 1 || c.Author != "Sortie Test" || c.Subject != want[second] {
		t.Errorf("Commits: %+v, %v; want %s by Sortie Test", cs, err, want[second])
	}
}

// holdLock holds the mirror's lock from another process until the returned
// function is called, as a second Sortie on the same state dir would.
func holdLock(t *testing.T, m *source.Mirror) (release func()) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(m.Dir), 0o755); err != nil {
		t.Fatal(err)
	}
	holder := exec.Command("flock", m.Dir+".lock", "sh", "-c", "echo locked; read x || true")
	stdin, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatalf("flock(1): %v", err)
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(stdout, buf); err != nil || string(buf) != "locked\n" {
		t.Fatalf("holder: %q, %v", buf, err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			stdin.Close()
			if err := holder.Wait(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(release)
	return release
}

// waitFor polls cond, a state another goroutine reaches, until it holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Callers that arrive while a fetch runs share the next one: sixteen
// concurrent triggers cost two fetches, not sixteen, and each sees the
// commits made before its call.
func TestUpdateSharesFetches(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	r.commit("one", nil)
	m := newMirror(t, r)
	release := holdLock(t, m)

	first := make(chan error, 1)
	go func() { first <- m.Update(context.Background()) }()
	waitFor(t, "the first fetch to start", func() bool { return m.Fetches() == 1 })
	// Pushed after the first fetch started: only the next one is sure to
	// see it, so every later caller must wait for that one.
	c2 := r.commit("two", nil)
	const callers = 15
	errs := make(chan error, callers)
	for range callers {
		go func() {
			err := m.UpdateBranches(context.Background())
			if err == nil {
				if got, rerr := m.Resolve(context.Background(), "main"); rerr != nil || got != c2 {
					err = fmt.Errorf("after Update, main = %s (%v), want %s", got, rerr, c2)
				}
			}
			errs <- err
		}()
	}
	waitFor(t, "every caller to join the next fetch", func() bool { return m.Waiting() == callers })
	// One more, cancelled while it waits, leaves without harm.
	ctx, cancel := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() { gaveUp <- m.Update(ctx) }()
	waitFor(t, "the cancelled caller to join", func() bool { return m.Waiting() == callers+1 })
	cancel()
	if err := <-gaveUp; !errors.Is(err, context.Canceled) {
		t.Errorf("a caller cancelled while it waited: %v", err)
	}
	if got := m.Waiting(); got != callers {
		t.Errorf("after one left, %d wait, want %d", got, callers)
	}
	release()
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	for range callers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := m.Fetches(); got != 2 {
		t.Errorf("%d fetches for 1+%d concurrent callers, want 2", got, callers)
	}
}

// UpdateBranches fetches branches but leaves HEAD where the last Update put
// it: a push names its branch and need not ask the remote for its default.
func TestUpdateBranchesLeavesHead(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	c1 := r.commit("one", nil)
	m := newMirror(t, r)
	if err := m.UpdateBranches(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, m, ""); got != c1 {
		t.Errorf("a new mirror: Resolve(\"\") = %s, want %s", got, c1)
	}
	r.git("checkout", "--quiet", "-b", "trunk")
	c2 := r.commit("two", nil)
	if err := m.UpdateBranches(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, m, "trunk"); got != c2 {
		t.Errorf("trunk = %s, want %s", got, c2)
	}
	if got := resolve(t, m, ""); got != c1 {
		t.Errorf("after UpdateBranches, Resolve(\"\") = %s, want main's %s still", got, c1)
	}
	if err := m.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := resolve(t, m, ""); got != c2 {
		t.Errorf("after Update, Resolve(\"\") = %s, want trunk's %s", got, c2)
	}
}

// A fetch does not start git's automatic maintenance (a process each time,
// that nearly always has nothing to do); every 50th fetch asks for it, and
// it then does what git's thresholds say.
func TestMaintenanceEveryFiftyFetches(t *testing.T) {
	t.Parallel()
	r := newRepo(t)
	// More objects than a fetch unpacks (fetch.unpackLimit, 100): each
	// fetch of such a commit keeps a pack of its own.
	many := func(tag string) map[string]string {
		files := map[string]string{}
		for i := range 150 {
			files[fmt.Sprintf("%s/%d", tag, i)] = tag + fmt.Sprint(i)
		}
		return files
	}
	r.commit("one", many("a"))
	// Fetched through a URL, so that the first commit is a pack too: a
	// mirror cloned from the path links the repository's loose objects.
	m := newMirror(t, r)
	m.URL = "file://" + r.dir
	if err := m.Update(context.Background()); err != nil {
		t.Fatal(err)
	}
	// More than one pack is too many: git's maintenance would repack,
	// before it returns (not in the background, as by default).
	for _, kv := range [][2]string{{"gc.autoPackLimit", "1"}, {"gc.autoDetach", "false"}} {
		if out, err := exec.Command("git", "--git-dir", m.Dir, "config", kv[0], kv[1]).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	packs := func() string {
		out, err := exec.Command("git", "--git-dir", m.Dir, "count-objects", "-v").Output()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.SplitSeq(string(out), "\n") {
			if n, ok := strings.CutPrefix(line, "packs: "); ok {
				return n
			}
		}
		t.Fatalf("count-objects -v: %s", out)
		return ""
	}
	r.commit("two", many("b"))
	for m.Fetches() < 49 {
		if err := m.UpdateBranches(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := packs(); n != "2" {
		t.Fatalf("after %d fetches, %s packs, want 2: maintenance ran after a fetch", m.Fetches(), n)
	}
	if err := m.UpdateBranches(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := packs(); n != "1" {
		t.Errorf("after the 50th fetch, %s packs, want 1: maintenance did not run", n)
	}
}

// TestEnsure: a mirror made after the commit (another server's buildset)
// or behind it fetches it; one that has it fetches nothing; a commit the
// remote does not have is an ErrUnknownRevision.
func TestEnsure(t *testing.T) {
	r := newRepo(t)
	c1 := r.commit("one", map[string]string{"a": "1"})
	m := newMirror(t, r) // never updated: no mirror on disk yet
	ctx := t.Context()
	if err := m.Ensure(ctx, c1); err != nil {
		t.Fatalf("Ensure on a mirror not made yet: %v", err)
	}
	if got := resolve(t, m, c1); got != c1 {
		t.Errorf("after Ensure, %s resolves to %s", c1, got)
	}
	c2 := r.commit("two", map[string]string{"a": "2"})
	before := m.Fetches()
	if err := m.Ensure(ctx, c1); err != nil || m.Fetches() != before {
		t.Errorf("Ensure of a commit the mirror has: %v, %d fetches, want none", err, m.Fetches()-before)
	}
	if err := m.Ensure(ctx, c2); err != nil || m.Fetches() != before+1 {
		t.Errorf("Ensure of a commit the mirror is behind: %v, %d fetches, want one", err, m.Fetches()-before)
	}
	if got := resolve(t, m, c2); got != c2 {
		t.Errorf("after Ensure, %s resolves to %s", c2, got)
	}
	missing := strings.Repeat("e", 40)
	if err := m.Ensure(ctx, missing); !errors.Is(err, source.ErrUnknownRevision) {
		t.Errorf("Ensure of a commit the remote lacks: %v, want ErrUnknownRevision", err)
	}
}

// TestResolveSharedBetweenFetches: the callers that resolve a revision
// after the same fetch share one rev-parse, and a fetch makes the next
// Resolve read the mirror again.
func TestResolveSharedBetweenFetches(t *testing.T) {
	ctx := context.Background()
	r := newRepo(t)
	c1 := r.commit("one", map[string]string{"a": "1"})
	m := newMirror(t, r)
	if err := m.UpdateBranches(ctx); err != nil {
		t.Fatal(err)
	}
	calls := sourcetest.GitCalls(t)
	resolveAll := func(rev string, n int) []string {
		t.Helper()
		got := make([]string, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { got[i], errs[i] = m.Resolve(ctx, rev) })
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				t.Fatalf("Resolve(%q): %v", rev, err)
			}
		}
		return slices.Compact(got)
	}
	if got := resolveAll("main", 8); !slices.Equal(got, []string{c1}) {
		t.Errorf("Resolve(main) = %v, want %s", got, c1)
	}
	if got := calls(); !slices.Equal(got, []string{"rev-parse"}) {
		t.Errorf("8 Resolve(main) ran git %v, want one rev-parse", got)
	}
	for range 2 {
		if _, err := m.Resolve(ctx, "nosuchbranch"); !errors.Is(err, source.ErrUnknownRevision) {
			t.Errorf("Resolve(nosuchbranch): %v", err)
		}
	}
	if got := calls(); !slices.Equal(got, []string{"rev-parse"}) {
		t.Errorf("2 Resolve(nosuchbranch) ran git %v, want one rev-parse", got)
	}

	// The branch moves: after the next fetch, Resolve sees it.
	c2 := r.commit("two", map[string]string{"a": "2"})
	r.git("branch", "nosuchbranch")
	if err := m.UpdateBranches(ctx); err != nil {
		t.Fatal(err)
	}
	calls()
	if got := resolveAll("main", 4); !slices.Equal(got, []string{c2}) {
		t.Errorf("Resolve(main) after a fetch = %v, want %s", got, c2)
	}
	if got := resolve(t, m, "nosuchbranch"); got != c2 {
		t.Errorf("Resolve(nosuchbranch) after a fetch = %s, want %s", got, c2)
	}
	if got := calls(); !slices.Equal(got, []string{"rev-parse", "rev-parse"}) {
		t.Errorf("Resolve after a fetch ran git %v, want one rev-parse per revision", got)
	}
	// A commit resolved is one the mirror has: the bootstrap's Ensure of
	// it needs no git.
	if err := m.Ensure(ctx, c2); err != nil {
		t.Fatal(err)
	}
	if got := calls(); len(got) != 0 {
		t.Errorf("Ensure of a commit resolved ran git %v, want none", got)
	}
}

// TestHaveBounded: the commits a mirror remembers having are bounded: past
// MaxHave, it forgets them (and looks for each again once).
func TestHaveBounded(t *testing.T) {
	m := &source.Mirror{}
	for i := range source.MaxHave {
		m.Found(fmt.Sprintf("%040x", i))
	}
	m.Found(fmt.Sprintf("%040x", 0)) // known: not counted twice
	if got := m.Haves(); got != source.MaxHave {
		t.Fatalf("%d commits remembered, want %d", got, source.MaxHave)
	}
	m.Found("ffffffffffffffffffffffffffffffffffffffff")
	if got := m.Haves(); got != 0 {
		t.Errorf("%d commits remembered past the bound, want 0 (all forgotten)", got)
	}
}

// TestCreateGitProcesses: a mirror of a repository on this machine starts
// as a bare clone of it, one git where init, a fetch and an ls-remote take
// three; through a URL, or from a repository whose HEAD is detached, it is
// made by init and fetch. Both follow the remote's default branch and keep
// its branches and tags, nothing else.
func TestCreateGitProcesses(t *testing.T) {
	r := newRepo(t)
	c1 := r.commit("one", nil)
	r.git("tag", "v1")
	r.git("checkout", "--quiet", "-b", "trunk")
	c2 := r.commit("two", nil)
	r.git("update-ref", "refs/changes/01/1/1", c1)
	r.git("update-ref", "refs/remotes/origin/old", c1)
	calls := sourcetest.GitCalls(t)
	sorted := func() string {
		c := calls()
		slices.Sort(c)
		return strings.Join(c, " ")
	}
	refs := func(m *source.Mirror) string {
		out, err := exec.Command("git", "--git-dir", m.Dir, "for-each-ref", "--format=%(refname)").Output()
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(strings.Fields(string(out)), " ")
	}
	const wantRefs = "refs/heads/main refs/heads/trunk refs/tags/v1"

	for _, tc := range []struct {
		name, url, gits string
	}{
		{"path", r.dir, "clone"},
		{"url", "file://" + r.dir, "fetch init ls-remote symbolic-ref"},
	} {
		m := newMirror(t, r)
		m.URL = tc.url
		if err := m.Update(t.Context()); err != nil {
			t.Fatal(err)
		}
		if got := sorted(); got != tc.gits {
			t.Errorf("%s: a new mirror ran git %s, want %s", tc.name, got, tc.gits)
		}
		if got := resolve(t, m, ""); got != c2 {
			t.Errorf("%s: HEAD is %s, want trunk's %s", tc.name, got, c2)
		}
		if got := refs(m); got != wantRefs {
			t.Errorf("%s: refs %s, want %s", tc.name, got, wantRefs)
		}
		calls()
	}

	// A HEAD detached at a commit no branch holds names no default
	// branch: the clone is given up for init and fetch, as through a URL.
	r.git("checkout", "--quiet", "--detach", c1)
	r.commit("detached", nil)
	calls() // the test's own
	m := newMirror(t, r)
	if err := m.Update(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := sorted(); got != "clone fetch init ls-remote" {
		t.Errorf("a new mirror of a detached repository ran git %s", got)
	}
	if got := refs(m); got != wantRefs {
		t.Errorf("detached: refs %s, want %s", got, wantRefs)
	}
	entries, _ := os.ReadDir(filepath.Dir(m.Dir))
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary %s left behind", e.Name())
		}
	}
}
