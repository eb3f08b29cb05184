package local

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// eventsPoll is how often a build's events file is read while it runs.
const eventsPoll = 250 * time.Millisecond

// eventsMaxAge is the age after which Finish removes an events file that
// no Run removed (its Sortie process died).
const eventsMaxAge = 24 * time.Hour

// events copies a Run's events file (bastion.Spec.Events) as it grows,
// when the Run's wait calls copy. The file is <workdir>/events/<run
// id>.jsonl; the job creates it, or not.
type events struct {
	path string
	w    io.Writer
	f    *os.File // open once it exists
	dead bool     // w failed: read no more
	none bool     // the last open found no file
}

// newEvents names the events file of Run id, and starts nothing.
func (b *Bastion) newEvents(id string, w io.Writer) (*events, error) {
	if !b.eventsDir.Load() {
		if err := os.MkdirAll(b.path("events"), 0o700); err != nil {
			return nil, err
		}
		b.eventsDir.Store(true)
	}
	return &events{path: b.path("events", id+".jsonl"), w: w}, nil
}

// copy writes what the file holds past what was copied.
func (e *events) copy() {
	if e.dead {
		return
	}
	if e.f == nil {
		f, err := os.Open(e.path)
		if err != nil {
			e.none = errors.Is(err, fs.ErrNotExist)
			return // not made yet
		}
		e.f = f
	}
	if _, err := io.Copy(e.w, e.f); err != nil {
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			e.dead = true // the writer's error
		}
	}
}

// finish copies the rest of the file and removes it. A file never made,
// as by most jobs, costs one failed open.
func (e *events) finish() {
	e.copy()
	if e.f != nil {
		e.f.Close()
	} else if e.none {
		return
	}
	os.Remove(e.path)
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
