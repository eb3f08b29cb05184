// Package local is the bastion on the machine Sortie runs on: builds run as
// local processes, checkouts and stamps live under a work directory.
//
// The work directory holds:
//
//	mirror.git      a bare repository that checkouts borrow objects from
//	mirror.lock     serialises fetches into mirror.git
//	src/<buildset>  one checkout per buildset
//	src/.tmp-*      checkouts being made
//	src.lock        serialises renames into and removals from src
//	install.stamp   the fingerprint of the last successful install
//	install.lock    serialises installs
//	run/<owner>/    one file per live process group of that owner's builds
//	events/         each running build's events file (bastion.Spec.Events)
//
// The locks are flocks, so several Sortie processes may share a work
// directory.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
	"github.com/sortie-ci/sortie/internal/flock"
)

// tmpMaxAge is the age after which Finish takes a checkout being made for
// one abandoned (its process died) and removes it.
const tmpMaxAge = time.Hour

// finishedMarker, in a checkout's .git directory, marks a finished buildset;
// its modification time is when it finished. It is out of the work tree, so
// that no job sees it.
const finishedMarker = "sortie-finished"

// Bastion is the local machine as a bastion. It is safe for concurrent use,
// and by several processes on one work directory.
type Bastion struct {
	// Owner is the id of the Sortie process using the bastion
	// (coordinator.NewOwner; see bastion.CheckOwner), set before first
	// use or by SetOwner. While it is set, every process group the bastion starts is
	// recorded under <workdir>/run/<Owner>/ until it is gone, so that
	// another process can end them with KillOwner once this one has died,
	// and every process it starts carries OwnerEnv=<Owner>. "" records and
	// tags nothing.
	Owner string
	// Untracked keeps the Owner's tag but writes no records: KillOwner
	// then finds the owner's processes by their tag alone, which a
	// process that clears its environment escapes. It saves a file's
	// creation and removal per build (`sortie run`, where that is a
	// visible share of a no-op job).
	Untracked bool

	workdir string
	clock   func() time.Time
	// eventsDir is set once <workdir>/events exists: made once, not
	// looked for again by every build.
	eventsDir atomic.Bool
}

var _ bastion.Bastion = (*Bastion)(nil)

// New returns the local bastion keeping its state in workdir, which is
// created when needed.
func New(workdir string) *Bastion {
	return &Bastion{workdir: workdir, clock: time.Now}
}

func (b *Bastion) path(elem ...string) string {
	return filepath.Join(append([]string{b.workdir}, elem...)...)
}

// Checkout makes <workdir>/src/<buildset> a checkout of commit, detached,
// and returns its path. commit is fetched from repo into the mirror unless
// the mirror has it; the mirror keeps a ref refs/sortie/<buildset> to it
// until Finish removes the checkout, so that git never prunes the objects a
// checkout borrows. A checkout of buildset that exists already is reused if
// it holds commit, and is an error otherwise; reusing it undoes Finish.
func (b *Bastion) Checkout(ctx context.Context, repo, buildset, commit string, log io.Writer) (string, error) {
	if log == nil {
		log = io.Discard
	}
	dir, err := b.checkout(ctx, repo, buildset, commit, log)
	if err != nil {
		return "", &bastion.InfraError{Op: "checkout", Err: err}
	}
	return dir, nil
}

func (b *Bastion) checkout(ctx context.Context, repo, buildset, commit string, log io.Writer) (string, error) {
	if err := checkBuildset(buildset); err != nil {
		return "", err
	}
	if !isHash(commit) {
		return "", fmt.Errorf("commit %q is not a full hash", commit)
	}
	if repo == "" || strings.HasPrefix(repo, "-") {
		return "", fmt.Errorf("bad repository %q", repo)
	}
	dst := b.path("src", buildset)
	if err := os.MkdirAll(b.path("src"), 0o755); err != nil {
		return "", err
	}
	if ok, err := b.reuse(ctx, dst, commit); err != nil || ok {
		if ok {
			fmt.Fprintf(log, "reusing checkout %s of %s\n", dst, commit)
		}
		return dst, err
	}
	if err := b.fetch(ctx, repo, buildset, commit, log); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(b.path("src"), ".tmp-"+buildset+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp) // nothing left once renamed
	if err := b.cloneShared(ctx, tmp, commit); err != nil {
		return "", err
	}

	lock, err := flock.Lock(ctx, b.path("src.lock"))
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if _, err := os.Lstat(dst); err == nil {
		// Another Checkout of this buildset got there first.
		if ok, err := b.reuseLocked(ctx, dst, commit); err != nil || ok {
			return dst, err
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "checked out %s in %s\n", commit, dst)
	return dst, nil
}

// reuse reports whether dst is a checkout of commit to reuse, under the src
// lock so that Finish cannot remove it meanwhile.
func (b *Bastion) reuse(ctx context.Context, dst, commit string) (bool, error) {
	if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	lock, err := flock.Lock(ctx, b.path("src.lock"))
	if err != nil {
		return false, err
	}
	defer lock.Close()
	if _, err := os.Lstat(dst); errors.Is(err, fs.ErrNotExist) {
		return false, nil // removed meanwhile
	}
	return b.reuseLocked(ctx, dst, commit)
}

// reuseLocked checks that the existing dst holds commit and clears its
// finished mark. The src lock is held.
func (b *Bastion) reuseLocked(ctx context.Context, dst, commit string) (bool, error) {
	head, err := git(ctx, "-C", dst, "rev-parse", "--verify", "HEAD")
	if err != nil {
		return false, fmt.Errorf("existing checkout %s: %w", dst, err)
	}
	if head != commit {
		return false, fmt.Errorf("existing checkout %s holds %s, not %s", dst, head, commit)
	}
	if err := os.Remove(filepath.Join(dst, ".git", finishedMarker)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// Install runs commands unless the stamp holds their fingerprint. Each runs
// with /bin/sh -c in the workdir, with exactly env as its environment (as
// Run does), its output to log. The install lock is waited for while ctx
// allows; a ctx done then, or during a command (which is ended as Run ends
// a build), is returned as a plain error, as is a command that fails. An
// empty list installs nothing and says so.
func (b *Bastion) Install(ctx context.Context, commands []string, env map[string]string, log io.Writer) (bool, error) {
	if log == nil {
		log = io.Discard
	}
	if err := context.Cause(ctx); err != nil {
		return false, fmt.Errorf("local: install: %w", err)
	}
	if len(commands) == 0 {
		fmt.Fprintln(log, "nothing to install: already up to date")
		return false, nil
	}
	if err := b.checkOwner(); err != nil {
		return false, &bastion.InfraError{Op: "install", Err: err}
	}
	envList, err := environ(env, "")
	if err != nil {
		return false, &bastion.InfraError{Op: "install", Err: err}
	}
	if err := os.MkdirAll(b.workdir, 0o755); err != nil {
		return false, &bastion.InfraError{Op: "install", Err: err}
	}
	lock, err := flock.Lock(ctx, b.path("install.lock"))
	if err != nil {
		if ctx.Err() != nil {
			return false, fmt.Errorf("local: install: %w", err)
		}
		return false, &bastion.InfraError{Op: "install", Err: err}
	}
	defer lock.Close()

	fp := bastion.Fingerprint(commands)
	stamp := b.path("install.stamp")
	old, err := os.ReadFile(stamp)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, &bastion.InfraError{Op: "install", Err: err}
	}
	if strings.TrimSpace(string(old)) == fp {
		fmt.Fprintf(log, "already up to date (%.12s)\n", fp)
		return false, nil
	}
	for i, c := range commands {
		fmt.Fprintf(log, "+ %s\n", c)
		p, err := startProcess(c, b.workdir, b.tag(envList), log, b.record)
		if err != nil {
			return false, &bastion.InfraError{Op: "install", Err: err}
		}
		o := p.wait(ctx, 0, nil, bastion.DefaultGrace)
		if o.Canceled {
			return false, fmt.Errorf("local: install: command %d: %w", i+1, context.Cause(ctx))
		}
		if o.ExitCode != 0 {
			return false, fmt.Errorf("local: install: command %d of %d (%q): %w", i+1, len(commands), c, exitError(o))
		}
	}
	if err := writeFileAtomic(stamp, []byte(fp+"\n")); err != nil {
		return false, &bastion.InfraError{Op: "install", Err: err}
	}
	fmt.Fprintf(log, "installed (%.12s)\n", fp)
	return true, nil
}

// writeFileAtomic replaces path with data, so that a reader sees the old
// content or the new, never a part.
func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // nothing left once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Finish marks the checkout of buildset finished, if there is one, then
// removes finished checkouts beyond the newest keep (by the time they
// finished), and checkouts being made that were abandoned more than an hour
// ago. Checkouts not finished are never removed. It is safe to call twice.
func (b *Bastion) Finish(ctx context.Context, buildset string, keep int) error {
	if err := b.finish(ctx, buildset, keep); err != nil {
		return &bastion.InfraError{Op: "finish", Err: fmt.Errorf("%s: %w", buildset, err)}
	}
	return nil
}

func (b *Bastion) finish(ctx context.Context, buildset string, keep int) error {
	if err := checkBuildset(buildset); err != nil {
		return err
	}
	b.pruneEvents()
	src := b.path("src")
	if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	lock, err := flock.Lock(ctx, b.path("src.lock"))
	if err != nil {
		return err
	}
	trash, gone, err := b.prune(buildset, keep)
	lock.Close()

	// The slow part runs without the lock: trash is out of everyone's way.
	var errs []error
	if err != nil {
		errs = append(errs, err)
	}
	for _, dir := range trash {
		if err := removeAll(dir); err != nil {
			errs = append(errs, err)
		}
	}
	if err := b.dropRefs(ctx, gone); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// prune marks buildset finished and moves what is to be removed aside. It
// returns the directories to remove and the buildsets whose checkouts are
// gone. The src lock is held.
func (b *Bastion) prune(buildset string, keep int) (trash, gone []string, err error) {
	src := b.path("src")
	marker := filepath.Join(src, buildset, ".git", finishedMarker)
	if _, err := os.Stat(filepath.Join(src, buildset)); err == nil {
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			return nil, nil, err
		}
		now := b.clock()
		if err := os.Chtimes(marker, now, now); err != nil {
			return nil, nil, err
		}
	} else {
		gone = append(gone, buildset) // its checkout was never made
	}

	entries, err := os.ReadDir(src)
	if err != nil {
		return nil, gone, err
	}
	type finished struct {
		name string
		at   time.Time
	}
	var done []finished
	for _, e := range entries {
		name := e.Name()
		switch {
		case strings.HasPrefix(name, ".rm-"):
			trash = append(trash, filepath.Join(src, name)) // left by a Finish that died
		case strings.HasPrefix(name, ".tmp-"):
			if info, err := e.Info(); err == nil && b.clock().Sub(info.ModTime()) > tmpMaxAge {
				trash = append(trash, filepath.Join(src, name))
			}
		case e.IsDir():
			if info, err := os.Stat(filepath.Join(src, name, ".git", finishedMarker)); err == nil {
				done = append(done, finished{name, info.ModTime()})
			}
		}
	}
	slices.SortFunc(done, func(a, b finished) int {
		if c := b.at.Compare(a.at); c != 0 {
			return c
		}
		return strings.Compare(b.name, a.name)
	})
	for _, f := range done[min(max(keep, 0), len(done)):] {
		rm, err := os.MkdirTemp(src, ".rm-"+f.name+"-")
		if err != nil {
			return trash, gone, err
		}
		if err := os.Rename(filepath.Join(src, f.name), filepath.Join(rm, f.name)); err != nil {
			os.Remove(rm)
			return trash, gone, err
		}
		trash = append(trash, rm)
		gone = append(gone, f.name)
	}
	return trash, gone, nil
}

// removeAll removes dir, making read-only directories in it writable if
// need be (a Go module cache, for one, is read-only).
func removeAll(dir string) error {
	if err := os.RemoveAll(dir); err == nil {
		return nil
	}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(path, 0o700)
		}
		return nil
	})
	return os.RemoveAll(dir)
}

// checkBuildset rejects a buildset id that could not name a directory of
// src and a git ref: it is letters, digits, '_', '-' and '.', starts with a
// letter or digit, and has no ".." and no ".lock" or "." at its end.
func checkBuildset(id string) error {
	bad := id == "" || len(id) > 200 || strings.Contains(id, "..") ||
		strings.HasSuffix(id, ".") || strings.HasSuffix(id, ".lock")
	for i, c := range id {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '-' && c != '.') {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("bad buildset id %q", id)
	}
	return nil
}

// isHash reports whether s is a full SHA-1 or SHA-256 object name.
func isHash(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// WriteFile puts data in the file at path, making the directories above
// it: written aside, then renamed, so that no reader sees half of it. It
// is what a shell's mkdir, cat and mv do, without their processes.
func (b *Bastion) WriteFile(ctx context.Context, path string, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // nothing left once renamed
	_, err = f.Write(data)
	if err2 := f.Chmod(0o644); err == nil {
		err = err2
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
