package logs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// File is a Writer onto a log file of its own, created on the first byte
// written: an attempt that prints nothing leaves no file, and a reader
// treats a missing log as empty. On a 10,000-job buildset of no-op jobs,
// creating the files was a third of Sortie's CPU time.
type File struct {
	*Writer
	lazy *lazyFile
}

// Create returns a File for the log at path, creating it and its
// directories when the first line is written. The Writer redacts secrets.
// The caller closes the File; Close writes the partial line held back,
// closes the file, and returns the first error met (creating, writing or
// closing); it is safe to call twice.
func Create(path string, secrets []string) *File {
	lazy := &lazyFile{path: path}
	return &File{Writer: NewWriter(lazy, secrets, nil), lazy: lazy}
}

// Name returns the path of the file.
func (f *File) Name() string { return f.lazy.path }

// Close writes the partial line held back and closes the file.
func (f *File) Close() error {
	werr := f.Writer.Close()
	if err := f.lazy.close(); err != nil {
		return errors.Join(werr, err)
	}
	return werr
}

// lazyFile opens its file for appending on the first Write.
type lazyFile struct {
	path string
	f    *os.File
}

func (l *lazyFile) Write(p []byte) (int, error) {
	if l.f == nil {
		open := func() (*os.File, error) {
			return os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		}
		// The directory usually exists (one per buildset): make it only
		// when the open says it is missing.
		f, err := open()
		if errors.Is(err, fs.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(l.path), 0o755); err != nil {
				return 0, fmt.Errorf("logs: create %s: %w", l.path, err)
			}
			f, err = open()
		}
		if err != nil {
			return 0, fmt.Errorf("logs: create %s: %w", l.path, err)
		}
		l.f = f
	}
	return l.f.Write(p)
}

func (l *lazyFile) close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	if err != nil && !errors.Is(err, os.ErrClosed) {
		return fmt.Errorf("logs: close %s: %w", l.path, err)
	}
	return nil
}
