package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sortie-ci/sortie/internal/flock"
	"github.com/sortie-ci/sortie/internal/source"
)

// git runs git through source.Git and returns its stdout, trimmed.
func git(ctx context.Context, args ...string) (string, error) {
	out, err := source.Git(ctx, args...)
	return strings.TrimSpace(string(out)), err
}

// fetch puts commit in the mirror, under refs/sortie/<buildset>.
func (b *Bastion) fetch(ctx context.Context, repo, buildset, commit string, log io.Writer) error {
	lock, err := flock.Lock(ctx, b.path("mirror.lock"))
	if err != nil {
		return err
	}
	defer lock.Close()
	mirror := b.path("mirror.git")
	if err := b.makeMirror(ctx, repo, log); err != nil {
		return err
	}
	ref := "refs/sortie/" + buildset
	// update-ref refuses a ref to an object the mirror lacks: when the
	// mirror has the commit, as for most buildsets, pinning it is the
	// only git needed.
	if _, err := git(ctx, "--git-dir", mirror, "update-ref", ref, commit); err == nil {
		fmt.Fprintf(log, "mirror has %s already\n", commit)
		return nil
	}
	fmt.Fprintf(log, "fetching %s from %s\n", commit, repo)
	// The refs of the mirror are the haves that keep the fetch
	// incremental; the fetch writes ref itself.
	_, err = git(ctx, "--git-dir", mirror, "fetch", "--quiet", "--no-tags", repo, "+"+commit+":"+ref)
	if err == nil {
		return nil
	}
	// A server may refuse a want by hash; fetch its branches.
	fmt.Fprintf(log, "fetching %s by hash failed, fetching all branches\n", commit)
	if _, err2 := git(ctx, "--git-dir", mirror, "fetch", "--quiet", "--prune", repo,
		"+refs/heads/*:refs/sortie-heads/*"); err2 != nil {
		return fmt.Errorf("fetch %s from %s: %w", commit, repo, err2)
	}
	if _, err3 := git(ctx, "--git-dir", mirror, "cat-file", "-e", commit+"^{commit}"); err3 != nil {
		return fmt.Errorf("fetch %s from %s: %w", commit, repo, err)
	}
	if _, err := git(ctx, "--git-dir", mirror, "update-ref", ref, commit); err != nil {
		return fmt.Errorf("update-ref %s: %w", ref, err)
	}
	return nil
}

// Prepare makes the mirror, from repo, if there is none yet, as the first
// Checkout would: a caller that knows a checkout follows (`sortie run`,
// once Sortie's own mirror is there) has it made while it does other work,
// and the checkout finds it made. Nothing else is done.
func (b *Bastion) Prepare(ctx context.Context, repo string) error {
	if repo == "" || strings.HasPrefix(repo, "-") {
		return fmt.Errorf("prepare: bad repository %q", repo)
	}
	if err := os.MkdirAll(b.workdir, 0o755); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	lock, err := flock.Lock(ctx, b.path("mirror.lock"))
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer lock.Close()
	if err := b.makeMirror(ctx, repo, io.Discard); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	return nil
}

// makeMirror makes mirror.git, from repo, if it does not exist. The
// caller holds mirror.lock.
func (b *Bastion) makeMirror(ctx context.Context, repo string, log io.Writer) error {
	mirror := b.path("mirror.git")
	if _, err := os.Stat(mirror); !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	cloned, err := b.initMirror(ctx, repo)
	if err != nil {
		return fmt.Errorf("init %s: %w", mirror, err)
	}
	if cloned {
		fmt.Fprintf(log, "mirror made as a local clone of %s\n", repo)
	}
	return nil
}

// initMirror makes mirror.git aside and renames it into place, so that a
// crash never leaves a half-made mirror. When repo is a repository on this
// machine, as Sortie's own mirror is for `sortie run`, the mirror starts as
// a local clone of it: git links its objects rather than packing and
// unpacking them, three processes where init and a fetch take eight. It
// says whether it cloned.
func (b *Bastion) initMirror(ctx context.Context, repo string) (cloned bool, err error) {
	tmp, err := os.MkdirTemp(b.workdir, ".mirror.git.tmp-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	if fi, err := os.Stat(repo); err == nil && fi.IsDir() && filepath.IsAbs(repo) {
		// tmp is empty, as clone wants its destination.
		_, err := git(ctx, "clone", "--quiet", "--bare", "--local", "--no-tags", repo, tmp)
		cloned = err == nil
	}
	if !cloned {
		// What a failed clone left is not a repository to fetch into.
		if err := os.RemoveAll(tmp); err != nil {
			return false, err
		}
		if _, err := git(ctx, "init", "--quiet", "--bare", tmp); err != nil {
			return false, err
		}
	}
	return cloned, os.Rename(tmp, b.path("mirror.git"))
}

// cloneShared makes dir, an empty directory, a checkout of commit, detached,
// whose repository borrows the mirror's objects: what `git clone --shared
// --no-checkout` of the mirror and `git checkout --detach` make, in one git
// process instead of four (a clone of a local path lists the mirror's refs
// through a shell and git-upload-pack). The repository is
// written here as git init would write it, without the sample hooks, and
// with the mirror as its origin, as a clone would; the checkout is its
// own repository, with its own index and HEAD, and shares only the
// mirror's object store, where the ref refs/sortie/<buildset> keeps its
// commit.
func (b *Bastion) cloneShared(ctx context.Context, dir, commit string) error {
	mirror := b.path("mirror.git")
	if err := writeSharedRepo(filepath.Join(dir, ".git"), mirror, len(commit) == 64); err != nil {
		return fmt.Errorf("make the repository of %s: %w", dir, err)
	}
	if _, err := git(ctx, "-C", dir, "checkout", "--quiet", "--detach", commit); err != nil {
		return fmt.Errorf("checkout %s: %w", commit, err)
	}
	return nil
}

// writeSharedRepo writes a repository in gitDir (which must not exist)
// whose objects are those of the bare repository mirror, by an alternate.
// sha256 says that the mirror names its objects by SHA-256.
func writeSharedRepo(gitDir, mirror string, sha256 bool) error {
	objects, err := filepath.Abs(filepath.Join(mirror, "objects"))
	if err != nil {
		return err
	}
	// git makes the other directories (refs/heads, objects/pack) when it
	// needs them.
	for _, d := range []string{"objects/info", "refs"} {
		if err := os.MkdirAll(filepath.Join(gitDir, d), 0o755); err != nil {
			return err
		}
	}
	config := "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n"
	if sha256 {
		config = "[core]\n\trepositoryformatversion = 1\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n[extensions]\n\tobjectformat = sha256\n"
	}
	// The same quoting as git config's for a value: a path may hold
	// a backslash or a double quote.
	quoted := `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(mirror) + `"`
	config += "[remote \"origin\"]\n\turl = " + quoted + "\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n"
	files := []struct{ name, content string }{
		{"objects/info/alternates", objects + "\n"},
		{"config", config},
		// HEAD is written last: git takes a directory for a repository
		// once it has a HEAD, objects and refs.
		{"HEAD", "ref: refs/heads/main\n"},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(gitDir, f.name), []byte(f.content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// dropRefs deletes the mirror's refs of buildsets whose checkouts are gone,
// letting git collect their objects in time: one git for them all.
func (b *Bastion) dropRefs(ctx context.Context, buildsets []string) error {
	mirror := b.path("mirror.git")
	if _, err := os.Stat(mirror); err != nil || len(buildsets) == 0 {
		return nil
	}
	lock, err := flock.Lock(ctx, b.path("mirror.lock"))
	if err != nil {
		return err
	}
	defer lock.Close()
	var in strings.Builder
	var names []string
	for _, bs := range buildsets {
		if checkBuildset(bs) != nil {
			continue // no checkout of it made a ref, nor could
		}
		// Deleting a ref that does not exist succeeds.
		fmt.Fprintf(&in, "delete refs/sortie/%s\n", bs)
		names = append(names, bs)
	}
	if len(names) == 0 {
		return nil
	}
	if _, err := source.GitInput(ctx, strings.NewReader(in.String()), "--git-dir", mirror, "update-ref", "--stdin"); err != nil {
		return fmt.Errorf("delete the refs of %s: %w", strings.Join(names, ", "), err)
	}
	return nil
}
