package local

import (
	"path/filepath"
	"sync"
	"syscall"
)

// A job's program is looked for in the directories of its PATH, one
// stat a directory until it is found: on a machine whose PATH has a
// dozen directories before /usr/bin, that was a tenth of Sortie's own
// CPU a no-op job. Like a shell's hash table, pathCache remembers where
// each program was found. Unlike it, it forgets all of it as soon as
// anything is added to, removed from, renamed in or changed the mode of
// in one of those directories: an inotify watch is on each, and the
// watch is read, without blocking, before each use of the cache. The
// kernel queues the event before the system call that made the change
// returns, so a program that a job installs (the bootstrap job's tools)
// is found by every job that starts after that job ended.
//
// A directory of PATH that does not exist is watched through its nearest
// existing parent, so that its creation is seen too. After any event the
// watches are made again from scratch.
//
// What it does not see: a directory of PATH reached through a symbolic
// link that is later pointed elsewhere, or a mount over it. A program
// found there keeps its path until something else changes; a cached path
// that no longer runs is handed to sh, as any failed direct start is.
type pathCache struct {
	mu sync.Mutex
	fd int // the inotify instance, or -1
	// watched says, for each PATH value met, whether all its
	// directories are watched; found, by PATH value and name, where the
	// program was found in it; nfound counts its entries.
	watched map[string]bool
	found   map[string]map[string]string
	nfound  int
	buf     []byte
	// searches counts the searches of PATH, for tests.
	searches int
}

// programs is the process's cache: one inotify instance for the life of
// the process, as devNull is one descriptor.
var programs = newPathCache()

const (
	// maxPathValues and maxPrograms bound what is remembered: past
	// them, programs are looked for every time.
	maxPathValues = 16
	maxPrograms   = 4096
	nameMax       = 255 // NAME_MAX
	// watchEvents are the changes to a directory that may change what a
	// search finds in it (a file's content does not).
	watchEvents = syscall.IN_CREATE | syscall.IN_DELETE | syscall.IN_MOVED_FROM | syscall.IN_MOVED_TO |
		syscall.IN_ATTRIB | syscall.IN_DELETE_SELF | syscall.IN_MOVE_SELF | syscall.IN_ONLYDIR
)

func newPathCache() *pathCache {
	return &pathCache{fd: -1, watched: map[string]bool{}, found: map[string]map[string]string{}}
}

// look returns where name is in pathVar, as searchPath would find it now.
func (c *pathCache) look(name, pathVar string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.changed() {
		c.reset()
	}
	if p, ok := c.found[pathVar][name]; ok {
		return p, true
	}
	// Watch first: a change made during the search is then seen at the
	// next look.
	keep := c.watch(pathVar) && c.nfound < maxPrograms
	c.searches++
	p, ok := searchPath(name, pathVar)
	if ok && keep {
		if c.found[pathVar] == nil {
			c.found[pathVar] = map[string]string{}
		}
		c.found[pathVar][name] = p
		c.nfound++
	}
	return p, ok
}

// changed reads the watch: whether anything happened in a watched
// directory since the watches were made. Any failure counts as a change.
func (c *pathCache) changed() bool {
	if c.fd < 0 {
		return false
	}
	if c.buf == nil {
		// Room for one event with the longest name.
		c.buf = make([]byte, syscall.SizeofInotifyEvent+nameMax+1)
	}
	n, err := syscall.Read(c.fd, c.buf)
	return n > 0 || err != syscall.EAGAIN
}

// reset forgets everything, watches included.
func (c *pathCache) reset() {
	if c.fd >= 0 {
		syscall.Close(c.fd)
		c.fd = -1
	}
	clear(c.watched)
	clear(c.found)
	c.nfound = 0
}

// watch watches every directory of pathVar, and says whether what is found
// in it may be remembered.
func (c *pathCache) watch(pathVar string) bool {
	if w, ok := c.watched[pathVar]; ok {
		return w
	}
	if len(c.watched) >= maxPathValues {
		return false
	}
	if c.fd < 0 {
		fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
		if err != nil {
			return false // out of instances: look every time
		}
		c.fd = fd
	}
	w := true
	for _, dir := range filepath.SplitList(pathVar) {
		if !filepath.IsAbs(dir) || !c.watchDir(filepath.Clean(dir)) {
			w = false
			break
		}
	}
	// Remembered either way: a PATH that cannot be watched is not tried
	// again until the next change.
	c.watched[pathVar] = w
	return w
}

// watchDir watches dir, or, while it is missing or not a directory, its
// nearest parent that is one.
func (c *pathCache) watchDir(dir string) bool {
	for {
		_, err := syscall.InotifyAddWatch(c.fd, dir, watchEvents)
		switch {
		case err == nil:
			return true
		case (err == syscall.ENOENT || err == syscall.ENOTDIR) && dir != "/":
			dir = filepath.Dir(dir)
		default:
			return false // unreadable, or out of watches
		}
	}
}
