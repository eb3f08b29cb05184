package logs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// File is a Writer onto a log file of its own.
type File struct {
	*Writer
	f *os.File
}

// Create opens the log file at path for appending, creating it and its
// directories if needed, and returns a Writer onto it that redacts secrets.
// The caller closes the File; Close writes the partial line held back, then
// closes the file, and is safe to call twice.
func Create(path string, secrets []string) (*File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("logs: create %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("logs: create %s: %w", path, err)
	}
	return &File{Writer: NewWriter(f, secrets, nil), f: f}, nil
}

// Name returns the path of the file.
func (f *File) Name() string { return f.f.Name() }

// Close writes the partial line held back and closes the file.
func (f *File) Close() error {
	werr := f.Writer.Close()
	if err := f.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return errors.Join(werr, fmt.Errorf("logs: close %s: %w", f.f.Name(), err))
	}
	return werr
}
