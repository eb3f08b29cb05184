package logs

import (
	"context"
	"io"
	"path/filepath"
	"strconv"

	"github.com/sortie-ci/sortie/internal/store"
)

// Log is one attempt's log open for writing: a Writer onto a file (File)
// or onto chunks in the store (Chunked). Flush makes what was written so
// far readable by others (a no-op for a file, where every line is written
// at once); Close writes the partial line held back and what is left.
type Log interface {
	io.Writer
	Flush() error
	Close() error
}

// Sink is where a process writes its build logs: files under a directory
// (Files: one host, no cost per line in the database) or chunks in the
// store (Chunks: readable by every process on the store, also after the
// writer died).
type Sink interface {
	// Path is what an attempt records as its log (store.Attempt.Log):
	// the file's path, or "" for a log kept in the store.
	Path(k store.LogKey) string
	// Create opens the log of attempt k for writing, redacting secrets.
	// Once ctx is done, a write the store refuses for now is no longer
	// tried again (ctx does not end the writes themselves). The caller
	// closes the Log.
	Create(ctx context.Context, k store.LogKey, secrets []string) Log
}

// Files is the Sink of log files: <Dir>/<buildset>/<job>.<attempt>.log,
// created on the first line written (Create).
type Files struct {
	Dir string
}

// Path returns the path of the log file of k.
func (f Files) Path(k store.LogKey) string {
	return filepath.Join(f.Dir, k.BuildsetID, k.Job+"."+strconv.Itoa(k.Attempt)+".log")
}

// Create returns the File of k.
func (f Files) Create(_ context.Context, k store.LogKey, secrets []string) Log {
	return Create(f.Path(k), secrets)
}

// Flush does nothing: each line is written to the file at once. It
// returns the Writer's sticky error, if any.
func (f *File) Flush() error {
	f.Writer.mu.Lock()
	defer f.Writer.mu.Unlock()
	return f.Writer.err
}
