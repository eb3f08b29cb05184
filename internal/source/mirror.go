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
	"sync"
	"sync/atomic"

	"github.com/sortie-ci/sortie/internal/flock"
)

// refspecs are what a Mirror keeps of the remote: branches and tags, not the
// review refs of a forge (refs/pull/*, refs/changes/*), which can outnumber
// them by far.
var refspecs = []string{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"}

// maintenanceEvery is how many fetches the mirror makes between two runs of
// git's automatic maintenance (gc, repacking), which then does what its
// own thresholds say.
const maintenanceEvery = 50

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
// Update may be called concurrently, even by several processes sharing Dir.
// In one process, concurrent calls share fetches: a caller waits for the
// fetch in progress to end and then joins the next one, which starts after
// its call and so sees every push made before it; however many callers
// arrive meanwhile, that is one more fetch, not one each. Processes are
// serialised by an flock on Dir+".lock". Resolve and ChangedFiles only read
// and need no lock. A Mirror must not be copied once used.
type Mirror struct {
	Dir string // the bare repository; Dir+".lock" is its lock file
	URL string // any git URL or local path

	// have are the commits Ensure or Resolve found in the mirror, up to
	// maxHave of them; haves counts them.
	have  sync.Map
	haves atomic.Int64

	mu      sync.Mutex
	running *fetchCall // the fetch in progress, nil when none
	next    *fetchCall // the one that starts when it ends, nil when no one waits
	fetches atomic.Int64
	// resolves are the Resolve calls made since the last fetch of this
	// process ended, by revision: the triggers that shared a fetch share
	// the rev-parse after it. Emptied when a fetch ends.
	resolves map[string]*resolveCall
}

// resolveCall is one rev-parse shared by the Resolve calls that joined it.
type resolveCall struct {
	done chan struct{} // closed when it ended; sha and err are set then
	sha  string
	err  error
}

// maxResolves bounds the revisions Resolve remembers between two fetches.
const maxResolves = 1024

// maxHave bounds the commits a Mirror remembers having: past it, it
// forgets them all and looks for each again once.
const maxHave = 10000

// found remembers that the mirror has commit sha.
func (m *Mirror) found(sha string) {
	if _, loaded := m.have.LoadOrStore(sha, true); !loaded && m.haves.Add(1) > maxHave {
		m.have.Clear()
		m.haves.Store(0)
	}
}

// fetchCall is one fetch shared by the callers that joined it.
type fetchCall struct {
	done  chan struct{} // closed when it ended; err is set then
	err   error
	head  bool // follow the remote's default branch too (ls-remote)
	joins int  // callers waiting on it, for tests
}

// Update brings the mirror up to date with URL: it fetches branches and tags,
// pruning those gone from URL, and follows URL's default branch for HEAD. A
// mirror that does not exist yet is made aside and renamed into Dir, so that
// Dir never holds a half-made mirror.
func (m *Mirror) Update(ctx context.Context) error {
	return m.update(ctx, true)
}

// UpdateBranches is Update without following URL's default branch, which
// costs one more connection to the remote (git ls-remote): for a caller
// that names the branch it wants, as a push does. HEAD keeps what the last
// Update found.
func (m *Mirror) UpdateBranches(ctx context.Context) error {
	return m.update(ctx, false)
}

// Fetches is how many fetches the mirror made in this process: callers
// that shared one count once.
func (m *Mirror) Fetches() int64 { return m.fetches.Load() }

func (m *Mirror) update(ctx context.Context, head bool) error {
	if strings.HasPrefix(m.URL, "-") {
		return fmt.Errorf("source: update %s: bad url %q", m.Dir, m.URL)
	}
	for {
		m.mu.Lock()
		if m.running == nil {
			// Nothing runs: start the pending fetch, which everyone
			// waiting joined after their call, or a new one.
			c := m.next
			if c == nil {
				c = &fetchCall{done: make(chan struct{})}
			}
			c.head = c.head || head
			m.running, m.next = c, nil
			m.mu.Unlock()
			return m.lead(ctx, c)
		}
		// A fetch runs, which may have started before the push our
		// caller wants to see: join the one after it.
		prev := m.running
		if m.next == nil {
			m.next = &fetchCall{done: make(chan struct{})}
		}
		c := m.next
		c.head = c.head || head
		c.joins++
		m.mu.Unlock()
		select {
		case <-prev.done:
		case <-ctx.Done():
			m.leave(c)
			return fmt.Errorf("source: update %s: %w", m.Dir, context.Cause(ctx))
		}
		m.mu.Lock()
		c.joins--
		// Nothing runs and c waits: lead it now. Going back to the top
		// to do so would let another of c's callers lead it first, and
		// this one would then take it for a fetch begun before its call
		// and wait for one more.
		lead := m.running == nil && m.next == c
		if lead {
			m.running, m.next = c, nil
		}
		started := m.running == c || m.next != c
		m.mu.Unlock()
		if lead {
			return m.lead(ctx, c)
		}
		if !started {
			continue // a newer fetch runs first: wait for it, still joined to c
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("source: update %s: %w", m.Dir, context.Cause(ctx))
		}
		if c.err != nil && ctx.Err() == nil && isCanceled(c.err) {
			continue // its leader gave up, not us: fetch again
		}
		return c.err
	}
}

// leave takes back a caller's join of c, a pending fetch.
func (m *Mirror) leave(c *fetchCall) {
	m.mu.Lock()
	c.joins--
	m.mu.Unlock()
}

// lead runs the fetch c, which m.running names, and ends it for everyone
// who joined.
func (m *Mirror) lead(ctx context.Context, c *fetchCall) error {
	err := m.updateLocked(ctx, c.head)
	m.mu.Lock()
	c.err = err
	m.running = nil
	// What was resolved before may have moved: those who waited for this
	// fetch resolve again, after it.
	m.resolves = nil
	close(c.done)
	m.mu.Unlock()
	return err
}

func isCanceled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// updateLocked fetches under the lock that serialises processes.
func (m *Mirror) updateLocked(ctx context.Context, head bool) error {
	m.fetches.Add(1)
	if err := os.MkdirAll(filepath.Dir(m.Dir), 0o755); err != nil {
		return fmt.Errorf("source: update %s: %w", m.Dir, err)
	}
	lock, err := flock.Lock(ctx, m.Dir+".lock")
	if err != nil {
		return fmt.Errorf("source: update %s: %w", m.Dir, err)
	}
	defer lock.Close()

	if _, err := os.Stat(m.Dir); err == nil {
		if err := m.fetch(ctx, m.Dir, head); err != nil {
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
// would copy every ref of the remote, review refs included; a repository
// on this machine is cloned instead (see cloneLocal).
func (m *Mirror) create(ctx context.Context) error {
	tmp, err := os.MkdirTemp(filepath.Dir(m.Dir), "."+filepath.Base(m.Dir)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	if m.cloneLocal(ctx, tmp) {
		return os.Rename(tmp, m.Dir)
	}
	// What a failed clone left is not a repository to fetch into.
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if _, err := Git(ctx, "init", "--quiet", "--bare", tmp); err != nil {
		return err
	}
	if err := m.fetch(ctx, tmp, true); err != nil {
		return err
	}
	return os.Rename(tmp, m.Dir)
}

// cloneLocal makes tmp, an empty directory, the mirror of URL when URL is
// the absolute path of a repository on this machine, as it is for most
// `sortie run`s: a bare clone links the repository's objects instead of
// packing and unpacking them, and keeps what a fetch with refspecs keeps
// (branches and tags, no other refs) with HEAD on the remote's default
// branch; three processes where init, a fetch and an ls-remote take ten.
// It says whether tmp is that mirror. A remote whose HEAD is not on a
// branch (detached, or the clone failed) is left to init and fetch, which
// leave HEAD where init put it.
func (m *Mirror) cloneLocal(ctx context.Context, tmp string) bool {
	if !filepath.IsAbs(m.URL) {
		return false
	}
	if fi, err := os.Stat(m.URL); err != nil || !fi.IsDir() {
		return false
	}
	if _, err := Git(ctx, "clone", "--quiet", "--bare", "--local", "--", m.URL, tmp); err != nil {
		return false
	}
	head, err := os.ReadFile(filepath.Join(tmp, "HEAD"))
	return err == nil && strings.HasPrefix(string(head), "ref: refs/heads/")
}

// fetch fetches branches and tags into the repository dir and, when head
// is set, points its HEAD where the remote's points.
func (m *Mirror) fetch(ctx context.Context, dir string, head bool) error {
	// git starts `git maintenance run --auto` after every fetch, a process
	// that nearly always finds nothing to do: the mirror asks for it
	// every maintenanceEvery fetches instead.
	args := append([]string{"--git-dir", dir, "fetch", "--prune", "--quiet", "--no-auto-maintenance", "--no-write-fetch-head", m.URL}, refspecs...)
	// The remote's HEAD is asked for at the same time as the fetch: both
	// wait on the remote, and one need not wait for the other.
	var remoteHead func() ([]byte, error)
	if head {
		hctx, cancel := context.WithCancel(ctx)
		remoteHead = goGit(hctx, "ls-remote", "--symref", m.URL, "HEAD")
		defer func() {
			cancel()
			remoteHead() // its answer may be of no use; not left running
		}()
	}
	if _, err := Git(ctx, args...); err != nil {
		return &FetchError{URL: m.URL, Err: err}
	}
	if m.fetches.Load()%maintenanceEvery == 0 {
		if _, err := Git(ctx, "--git-dir", dir, "maintenance", "run", "--auto", "--quiet"); err != nil {
			return err
		}
	}
	if !head {
		return nil
	}
	out, err := remoteHead()
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

// Ensure makes sure the mirror has the commit sha, fetching from URL when
// it does not: a buildset made by another server, whose mirror had the
// commit, runs from this one's. A commit URL does not have (any more) is
// an ErrUnknownRevision. Once found, a commit is not looked for again.
func (m *Mirror) Ensure(ctx context.Context, sha string) error {
	if _, ok := m.have.Load(sha); ok {
		return nil
	}
	_, err := os.Stat(m.Dir)
	if err == nil {
		_, err = m.resolve(ctx, sha)
	}
	if err != nil {
		if err := m.UpdateBranches(ctx); err != nil {
			return err
		}
		if _, err := m.resolve(ctx, sha); err != nil {
			return fmt.Errorf("source: commit %s is not in %s: %w", sha, m.URL, err)
		}
	}
	m.found(sha)
	return nil
}

// Resolve returns the full hash of the commit that rev names in the mirror:
// a branch, a tag, a hash or any other revision git understands; "" means
// HEAD, the remote's default branch. A rev that names no commit is an
// ErrUnknownRevision.
//
// The answer is what the mirror held after the last fetch this process
// made ended (Update, UpdateBranches, Ensure), or later: calls between two
// fetches share one rev-parse per revision, so that the triggers that
// shared a fetch do not each start a git to read the same branch. A
// revision relative to the time (main@{1.hour.ago}) is read every time.
// Refs another process moves in Dir meanwhile are seen after the next
// fetch of this one.
func (m *Mirror) Resolve(ctx context.Context, rev string) (string, error) {
	if rev == "" {
		rev = "HEAD"
	}
	sha, err := m.resolveShared(ctx, rev)
	if err != nil {
		return "", fmt.Errorf("source: resolve %q in %s: %w", rev, m.Dir, err)
	}
	return sha, nil
}

// resolveShared is resolve, shared by the calls between two fetches.
func (m *Mirror) resolveShared(ctx context.Context, rev string) (string, error) {
	if strings.Contains(rev, "@{") {
		return m.resolve(ctx, rev)
	}
	m.mu.Lock()
	if c, ok := m.resolves[rev]; ok {
		m.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return "", context.Cause(ctx)
		}
		if c.err == nil || errors.Is(c.err, ErrUnknownRevision) {
			return c.sha, c.err
		}
		// Its caller's failure (a cancel, a git that could not start)
		// need not be ours.
		return m.resolve(ctx, rev)
	}
	if m.resolves == nil || len(m.resolves) >= maxResolves {
		m.resolves = map[string]*resolveCall{}
	}
	c := &resolveCall{done: make(chan struct{})}
	resolves := m.resolves
	resolves[rev] = c
	m.mu.Unlock()

	c.sha, c.err = m.resolve(ctx, rev)
	m.mu.Lock()
	if c.err != nil && !errors.Is(c.err, ErrUnknownRevision) && resolves[rev] == c {
		delete(resolves, rev) // the next call tries again
	}
	m.mu.Unlock()
	close(c.done)
	return c.sha, c.err
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
	if !IsHash(sha) {
		return "", fmt.Errorf("rev-parse printed %q", sha)
	}
	// The bootstrap's Ensure of the commit just resolved needs no git.
	m.found(sha)
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
// IsHash says whether s is a commit's id in full (SHA-1 or SHA-256, in
// lower case), which names the same commit in every repository.
func IsHash(s string) bool {
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

// goGit starts Git(ctx, args...) in a goroutine and returns what waits for
// its answer; it must be called.
func goGit(ctx context.Context, args ...string) func() ([]byte, error) {
	var (
		out  []byte
		err  error
		done = make(chan struct{})
	)
	go func() {
		defer close(done)
		out, err = Git(ctx, args...)
	}()
	return func() ([]byte, error) {
		<-done
		return out, err
	}
}
