// Package source keeps Sortie's own mirror of the deployed repository: it
// fetches it, resolves revisions to commits and lists the files a change
// touched.
package source

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/sortie-ci/sortie/internal/flock"
)

// refspecs are what a Mirror keeps of the remote: branches and tags, not the
// review refs of a forge (refs/pull/*, refs/changes/*), which can outnumber
// them by far.
var refspecs = []string{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}

// ErrUnknownRevision is returned (wrapped) by Resolve and ChangedFiles for a
// revision that names no commit of the mirror.
var ErrUnknownRevision = errors.New("unknown revision")

// FetchError is a failure to fetch from the repository at URL: it is
// unreachable, is not a repository, or refuses access. Update returns it
// (wrapped); it is never an ErrUnknownRevision, which says that the
// repository was read and has no such commit.
type FetchError struct {
	URL string
	Err error // usually a *GitError
}

func (e *FetchError) Error() string { return e.Err.Error() }

func (e *FetchError) Unwrap() error { return e.Err }

// Mirror is a bare mirror of the branches and tags of the repository at URL,
// kept in Dir.
//
// Update may be called concurrently, even by several processes sharing Dir:
// it is serialised by an flock on Dir+".lock". Resolve and ChangedFiles only
// read and need no lock.
type Mirror struct {
	Dir string // the bare repository; Dir+".lock" is its lock file
	URL string // any git URL or local path
}

// Update brings the mirror up to date with URL: it fetches branches and tags,
// pruning those gone from URL, and follows URL's default branch for HEAD. A
// mirror that does not exist yet is made aside and renamed into Dir, so that
// Dir never holds a half-made mirror.
func (m *Mirror) Update(ctx context.Context) error {
	if strings.HasPrefix(m.URL, "-") {
		return fmt.Errorf("source: update %s: bad url %q", m.Dir, m.URL)
	}
	if err := os.MkdirAll(filepath.Dir(m.Dir), 0o755); err != nil {
		return fmt.Errorf("source: update %s: %w", m.Dir, err)
	}
	lock, err := flock.Lock(ctx, m.Dir+".lock")
	if err != nil {
		return fmt.Errorf("source: update %s: %w", m.Dir, err)
	}
	defer lock.Close()

	if _, err := os.Stat(m.Dir); err == nil {
		if err := m.fetch(ctx, m.Dir); err != nil {
			return fmt.Errorf("source: fetch %s: %w", m.Dir, err)
		}
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("source: update %s: %w", m.Dir, err)
	}
	if err := m.create(ctx); err != nil {
		return fmt.Errorf("source: clone %s: %w", m.Dir, err)
	}
	return nil
}

// create makes the mirror in a temporary directory next to Dir and renames
// it into place. It uses init and fetch rather than clone --mirror, which
// would copy every ref of the remote, review refs included.
func (m *Mirror) create(ctx context.Context) error {
	tmp, err := os.MkdirTemp(filepath.Dir(m.Dir), "."+filepath.Base(m.Dir)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if _, err := Git(ctx, "init", "--quiet", "--bare", tmp); err != nil {
		return err
	}
	if err := m.fetch(ctx, tmp); err != nil {
		return err
	}
	return os.Rename(tmp, m.Dir)
}

func (m *Mirror) fetch(ctx context.Context, dir string) error {
	args := append([]string{"--git-dir", dir, "fetch", "--prune", "--quiet", m.URL}, refspecs...)
	if _, err := Git(ctx, args...); err != nil {
		return &FetchError{URL: m.URL, Err: err}
	}
	out, err := Git(ctx, "ls-remote", "--symref", m.URL, "HEAD")
	if err != nil {
		return &FetchError{URL: m.URL, Err: err}
	}
	// "ref: refs/heads/main\tHEAD", when the remote's HEAD is a branch.
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		target, ok := strings.CutPrefix(sc.Text(), "ref: ")
		if !ok {
			continue
		}
		target, _, _ = strings.Cut(target, "\t")
		if !strings.HasPrefix(target, "refs/heads/") {
			break
		}
		// Most fetches find HEAD where it was: read it rather than start
		// a git to write it again.
		if cur, err := os.ReadFile(filepath.Join(dir, "HEAD")); err == nil && strings.TrimSpace(string(cur)) == "ref: "+target {
			break
		}
		if _, err := Git(ctx, "--git-dir", dir, "symbolic-ref", "HEAD", target); err != nil {
			return err
		}
		break
	}
	return nil
}

// Resolve returns the full hash of the commit that rev names in the mirror:
// a branch, a tag, a hash or any other revision git understands; "" means
// HEAD, the remote's default branch. A rev that names no commit is an
// ErrUnknownRevision.
func (m *Mirror) Resolve(ctx context.Context, rev string) (string, error) {
	if rev == "" {
		rev = "HEAD"
	}
	sha, err := m.resolve(ctx, rev)
	if err != nil {
		return "", fmt.Errorf("source: resolve %q in %s: %w", rev, m.Dir, err)
	}
	return sha, nil
}

func (m *Mirror) resolve(ctx context.Context, rev string) (string, error) {
	if strings.HasPrefix(rev, "-") {
		return "", ErrUnknownRevision
	}
	out, err := Git(ctx, "--git-dir", m.Dir, "rev-parse", "--verify", "--quiet", rev+"^{commit}")
	if err != nil {
		// --verify --quiet exits 1, silently, for a rev that names nothing.
		if exitCode(err) == 1 {
			return "", ErrUnknownRevision
		}
		return "", err
	}
	sha := strings.TrimSpace(string(out))
	if !isHash(sha) {
		return "", fmt.Errorf("rev-parse printed %q", sha)
	}
	return sha, nil
}

// ChangedFiles lists the paths that differ between the trees of the commits
// from and to, both the old and the new path of a rename. An empty from (or
// git's null hash, as in a push that creates a branch) means the first
// parent of to, or, when to is a root commit, every file of to. The list is
// empty, not nil, when the trees are the same.
func (m *Mirror) ChangedFiles(ctx context.Context, from, to string) ([]string, error) {
	files, err := m.changedFiles(ctx, from, to)
	if err != nil {
		return nil, fmt.Errorf("source: changed files %s..%s in %s: %w", from, to, m.Dir, err)
	}
	return files, nil
}

func (m *Mirror) changedFiles(ctx context.Context, from, to string) ([]string, error) {
	toSHA, err := m.resolve(ctx, to)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", to, err)
	}
	args := []string{"--git-dir", m.Dir, "diff-tree", "-r", "-z", "--name-only", "--no-renames"}
	if from == "" || (len(from) >= 40 && strings.Trim(from, "0") == "") {
		parent, err := m.resolve(ctx, toSHA+"^1")
		switch {
		case errors.Is(err, ErrUnknownRevision):
			args = append(args, "--root", "--no-commit-id", toSHA)
		case err != nil:
			return nil, err
		default:
			args = append(args, parent, toSHA)
		}
	} else {
		fromSHA, err := m.resolve(ctx, from)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", from, err)
		}
		args = append(args, fromSHA, toSHA)
	}
	out, err := Git(ctx, args...)
	if err != nil {
		return nil, err
	}
	files := []string{}
	for f := range strings.SplitSeq(string(out), "\x00") {
		if f != "" {
			files = append(files, f)
		}
	}
	return files, nil
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
