//go:build !linux

package local

// pathCache remembers nothing where there is no inotify: every look is a
// search (see pathcache_linux.go).
type pathCache struct{}

var programs pathCache

func (pathCache) look(name, pathVar string) (string, bool) { return searchPath(name, pathVar) }
