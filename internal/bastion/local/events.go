package local

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
)

// eventsPoll is how often a build's events file is read while it runs.
const eventsPoll = 250 * time.Millisecond

// eventsMaxAge is the age after which Finish removes an events file that
// no Run removed (its Sortie process died).
const eventsMaxAge = 24 * time.Hour

// events copies a Run's events file (bastion.Spec.Events) as it grows. The
// file is <workdir>/events/<random>.jsonl; the job creates it, or not.
type events struct {
	path    string
	w       io.Writer
	f       *os.File // open once it exists
	missing bool     // the last look found no file
	dead    bool     // w failed: read no more
	poll    *bastion.Poller
}

// newEvents names a fresh events file for a Run and starts nothing yet.
func (b *Bastion) newEvents(w io.Writer) (*events, error) {
	dir := b.path("events")
	if !b.eventsDir.Load() {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		b.eventsDir.Store(true)
	}
	return &events{path: filepath.Join(dir, bastion.NewRunID()+".jsonl"), w: w}, nil
}

// follow copies the file as it grows until finish.
func (e *events) follow() { e.poll = bastion.Poll(eventsPoll, e.copy) }

// copy writes what the file holds past what was copied.
func (e *events) copy() {
	if e.dead {
		return
	}
	if e.f == nil {
		f, err := os.Open(e.path)
		if err != nil {
			e.missing = errors.Is(err, fs.ErrNotExist)
			return // not made yet
		}
		e.f, e.missing = f, false
	}
	if _, err := io.Copy(e.w, e.f); err != nil {
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			e.dead = true // the writer's error
		}
	}
}

// finish stops following, copies the rest of the file and removes it.
func (e *events) finish() {
	e.poll.Stop()
	e.copy()
	if e.f != nil {
		e.f.Close()
	}
	if !e.missing {
		// Most jobs never make the file: the look above said so, and
		// the process that could have made it has ended.
		os.Remove(e.path)
	}
}

// pruneEvents removes the events files older than eventsMaxAge.
func (b *Bastion) pruneEvents() {
	dir := b.path("events")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, en := range entries {
		if fi, err := en.Info(); err == nil && b.clock().Sub(fi.ModTime()) > eventsMaxAge {
			os.Remove(filepath.Join(dir, en.Name()))
		}
	}
}
