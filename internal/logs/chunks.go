package logs

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// Defaults of Chunks.
const (
	// DefaultChunk is the size from which a log's lines are sent as a
	// chunk without waiting for the next flush.
	DefaultChunk = 64 << 10
	// DefaultFlushEvery is how often a log's lines are sent when fewer
	// than a chunk wait: how late a follower on another node sees them.
	DefaultFlushEvery = 250 * time.Millisecond
)

// Appender is what Chunks writes to: store.Logs' AppendLog.
type Appender interface {
	AppendLog(ctx context.Context, p store.AppendLogParams) error
}

// Chunks is the Sink of logs kept in the store, in chunks of whole lines:
// the lines are sent once DefaultChunk bytes wait, every FlushEvery, and
// at Close, so a log costs a row per chunk, not per line. A chunk the
// store refuses for now (store.ErrUnavailable) is tried again
// (store.Persist) until the Create context is done; any other error is
// sticky, returned by the Log's next Write, Flush and Close.
type Chunks struct {
	Store Appender
	// FlushEvery is how often waiting lines are sent; 0 means
	// DefaultFlushEvery.
	FlushEvery time.Duration
	// Tick, if set, replaces the timer: lines waiting are sent each time
	// it fires (tests drive the flushes by hand).
	Tick <-chan time.Time
	// ChunkSize is DefaultChunk when 0.
	ChunkSize int
	// Retry is the first delay before a refused chunk is tried again
	// (doubling up to 10 s); 0 means 250ms.
	Retry time.Duration
	// Waiting, if set, hears of a chunk the store refused for now, and
	// Recovered of one stored after such a refusal.
	Waiting   func(k store.LogKey, err error)
	Recovered func(k store.LogKey)
	// Fence, when set, returns the writer's fence, read once per log when
	// it is opened (at the attempt's start): every chunk is written under
	// it, so that a process whose lease was lost meanwhile adds nothing
	// (store.ErrFenced).
	Fence func() store.Fence
}

// Path is "": the log is in the store.
func (Chunks) Path(store.LogKey) string { return "" }

// Create returns the Chunked log of k. Its flusher runs until Close.
func (c Chunks) Create(ctx context.Context, k store.LogKey, secrets []string) Log {
	return c.Open(ctx, k, secrets)
}

// Open is Create, returning the concrete type.
func (c Chunks) Open(ctx context.Context, k store.LogKey, secrets []string) *Chunked {
	s := &chunkSink{c: c, key: k, ctx: context.WithoutCancel(ctx), giveUp: ctx.Done(),
		stop: make(chan struct{}), done: make(chan struct{})}
	if c.Fence != nil {
		f := c.Fence()
		s.fence = &f
	}
	if s.c.ChunkSize <= 0 {
		s.c.ChunkSize = DefaultChunk
	}
	if s.c.Retry <= 0 {
		s.c.Retry = 250 * time.Millisecond
	}
	tick := c.Tick
	var ticker *time.Ticker
	if tick == nil {
		every := c.FlushEvery
		if every <= 0 {
			every = DefaultFlushEvery
		}
		ticker = time.NewTicker(every)
		tick = ticker.C
	}
	go s.flusher(tick, ticker)
	return &Chunked{Writer: NewWriter(s, secrets, nil), sink: s}
}

// Chunked is a Writer onto chunks of a log in the store (Chunks).
type Chunked struct {
	*Writer
	sink *chunkSink
}

// Flush sends the lines written so far, if any, as a chunk.
func (c *Chunked) Flush() error { return c.sink.flush() }

// Close writes the partial line held back, stops the flusher and sends what
// is left. It returns the first error met; calling it twice is harmless.
func (c *Chunked) Close() error {
	werr := c.Writer.Close()
	if serr := c.sink.close(); werr == nil {
		return serr
	}
	return werr
}

// chunkSink gathers the Writer's lines (one whole line per Write) and
// appends them to the store in chunks.
type chunkSink struct {
	c      Chunks
	key    store.LogKey
	fence  *store.Fence // nil: not fenced
	ctx    context.Context
	giveUp <-chan struct{}

	mu  sync.Mutex
	buf []byte // lines not sent yet
	err error  // sticky

	// sendMu orders the chunks: one is sent at a time, in the order
	// their lines were written.
	sendMu sync.Mutex
	seq    int
	off    int64

	stopOnce   sync.Once
	stop, done chan struct{}
}

func (s *chunkSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return 0, s.err
	}
	if s.buf == nil {
		s.buf = make([]byte, 0, s.c.ChunkSize+len(p))
	}
	s.buf = append(s.buf, p...)
	full := len(s.buf) >= s.c.ChunkSize
	s.mu.Unlock()
	if full {
		if err := s.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flusher sends the waiting lines at each tick until close stops it.
func (s *chunkSink) flusher(tick <-chan time.Time, ticker *time.Ticker) {
	defer close(s.done)
	if ticker != nil {
		defer ticker.Stop()
	}
	for {
		select {
		case <-s.stop:
			return
		case <-tick:
			s.flush() // an error is sticky: the next Write returns it
		}
	}
}

// flush sends the lines waiting, if any, as one chunk.
func (s *chunkSink) flush() error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	data, err := s.buf, s.err
	s.buf = nil
	s.mu.Unlock()
	if err != nil || len(data) == 0 {
		return err
	}
	p := store.AppendLogParams{LogKey: s.key, Seq: s.seq, Offset: s.off, Data: data, Fence: s.fence}
	var waiting func(error)
	if s.c.Waiting != nil {
		waiting = func(err error) { s.c.Waiting(s.key, err) }
	}
	var recovered func()
	if s.c.Recovered != nil {
		recovered = func() { s.c.Recovered(s.key) }
	}
	err = store.Persist(s.giveUp, s.c.Retry, waiting, recovered, func() error { return s.c.Store.AppendLog(s.ctx, p) })
	if err != nil {
		err = fmt.Errorf("logs: %s/%s attempt %d: chunk %d: %w", s.key.BuildsetID, s.key.Job, s.key.Attempt, s.seq, err)
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		err = s.err
		s.mu.Unlock()
		return err
	}
	s.seq++
	s.off += int64(len(data))
	return nil
}

// close stops the flusher, waits for it, and sends what is left.
func (s *chunkSink) close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	return s.flush()
}
