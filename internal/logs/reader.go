package logs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/sortie-ci/sortie/internal/store"
)

// Reader is an attempt's log open for reading: its size when it was
// opened, and its bytes up to that size, wherever they are kept. A log
// grows while its attempt runs: open it again to see more. The caller
// closes it.
type Reader interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// ChunkReader is what Open reads a log kept in the store from:
// store.Logs' reads.
type ChunkReader interface {
	ReadLog(ctx context.Context, p store.ReadLogParams) ([]store.LogChunk, error)
	LogSize(ctx context.Context, k store.LogKey) (int64, error)
}

// Open opens the log of attempt a: the file a.Log names, or, when a.Log is
// "", its chunks in st (Chunks wrote it). A log not written yet (a missing
// file, no chunk) is empty, not an error: an attempt that printed nothing
// leaves none. ctx bounds the reads of chunks.
func Open(ctx context.Context, st ChunkReader, a *store.Attempt) (Reader, error) {
	if a.Log != "" {
		return OpenFile(a.Log)
	}
	if st == nil {
		return nil, fmt.Errorf("logs: %s/%s attempt %d: its log is in the store, and none was given", a.BuildsetID, a.Job, a.Number)
	}
	k := store.LogKey{BuildsetID: a.BuildsetID, Job: a.Job, Attempt: a.Number}
	size, err := st.LogSize(ctx, k)
	if err != nil {
		return nil, err
	}
	return &chunkReader{ctx: ctx, st: st, key: k, size: size}, nil
}

// OpenFile opens a log file: empty if it does not exist.
func OpenFile(path string) (Reader, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return empty{}, nil
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &fileReader{SectionReader: io.NewSectionReader(f, 0, fi.Size()), f: f}, nil
}

type fileReader struct {
	*io.SectionReader
	f *os.File
}

func (r *fileReader) Close() error { return r.f.Close() }

type empty struct{}

func (empty) ReadAt(p []byte, off int64) (int, error) { return 0, io.EOF }
func (empty) Size() int64                             { return 0 }
func (empty) Close() error                            { return nil }

// chunkReader reads a log's chunks, keeping the last ones read: a reader
// going forward reads each chunk once.
type chunkReader struct {
	ctx  context.Context
	st   ChunkReader
	key  store.LogKey
	size int64
	got  []store.LogChunk // the chunks of the last ReadLog
}

func (r *chunkReader) Size() int64  { return r.size }
func (r *chunkReader) Close() error { r.got = nil; return nil }

func (r *chunkReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, errors.New("logs: negative offset")
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := p
	if rest := r.size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	n := 0
	for n < len(want) {
		at := off + int64(n)
		c, ok := r.cached(at)
		if !ok {
			cs, err := r.st.ReadLog(r.ctx, store.ReadLogParams{LogKey: r.key, From: at, MaxBytes: max(len(want)-n, 64<<10)})
			if err != nil {
				return n, err
			}
			if len(cs) == 0 || cs[0].Offset > at {
				return n, fmt.Errorf("logs: %s/%s attempt %d: no chunk holds byte %d of %d", r.key.BuildsetID, r.key.Job, r.key.Attempt, at, r.size)
			}
			r.got = cs
			c = cs[0]
		}
		n += copy(want[n:], c.Data[at-c.Offset:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// cached returns the chunk holding byte at among those read last.
func (r *chunkReader) cached(at int64) (store.LogChunk, bool) {
	for _, c := range r.got {
		if c.Offset <= at && at < c.End() {
			return c, true
		}
	}
	return store.LogChunk{}, false
}
