package logs_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/logs/logstest"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/postgres"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

func TestFilesConform(t *testing.T) {
	logstest.Run(t, func(t *testing.T) logstest.Kind {
		return logstest.Kind{Sink: logs.Files{Dir: t.TempDir()}}
	})
}

func openSQLite(t testing.TB) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func openPostgres(t testing.TB) *postgres.Store {
	t.Helper()
	st, err := postgres.Open(t.Context(), pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func TestChunksConformSQLite(t *testing.T) {
	logstest.Run(t, func(t *testing.T) logstest.Kind {
		st := openSQLite(t)
		return logstest.Kind{Sink: logs.Chunks{Store: st}, Store: st}
	})
}

func TestChunksConformPostgres(t *testing.T) {
	logstest.Run(t, func(t *testing.T) logstest.Kind {
		st := openPostgres(t)
		return logstest.Kind{Sink: logs.Chunks{Store: st}, Store: st}
	})
}

// recording is an Appender that fails as told, records what it stores and
// says so on a channel.
type recording struct {
	mu       sync.Mutex
	fail     []error // the next appends' errors, in order
	chunks   []store.AppendLogParams
	appended chan store.AppendLogParams
}

func newRecording(fail ...error) *recording {
	return &recording{fail: fail, appended: make(chan store.AppendLogParams, 100)}
}

func (r *recording) AppendLog(_ context.Context, p store.AppendLogParams) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.fail) > 0 {
		err := r.fail[0]
		r.fail = r.fail[1:]
		return err
	}
	p.Data = append([]byte(nil), p.Data...)
	r.chunks = append(r.chunks, p)
	r.appended <- p
	return nil
}

func (r *recording) wait(t *testing.T) store.AppendLogParams {
	t.Helper()
	select {
	case p := <-r.appended:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no chunk appended")
		return store.AppendLogParams{}
	}
}

func (r *recording) none(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.chunks) > 0 {
		t.Fatalf("chunks appended: %d", len(r.chunks))
	}
}

var k1 = store.LogKey{BuildsetID: "bs", Job: "job", Attempt: 1}

// TestChunksFlushOnTick: lines wait for the flusher's tick, then go as one
// chunk of whole lines; the partial line goes at Close.
func TestChunksFlushOnTick(t *testing.T) {
	rec := newRecording()
	tick := make(chan time.Time)
	l := logs.Chunks{Store: rec, Tick: tick}.Open(t.Context(), k1, nil)
	fmt.Fprint(l, "one\ntwo\nthr")
	rec.none(t) // only a tick (ours) or a full chunk sends
	tick <- time.Now()
	p := rec.wait(t)
	if p.Seq != 0 || p.Offset != 0 || strings.Count(string(p.Data), "\n") != 2 || !strings.HasSuffix(string(p.Data), "two\n") {
		t.Errorf("first chunk = %d at %d %q, want seq 0 at 0 with lines one and two", p.Seq, p.Offset, p.Data)
	}
	tick <- time.Now() // nothing new: no empty chunk
	fmt.Fprint(l, "ee\n")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	q := rec.wait(t)
	if q.Seq != 1 || q.Offset != int64(len(p.Data)) || !strings.HasSuffix(string(q.Data), "three\n") {
		t.Errorf("second chunk = %d at %d %q, want seq 1 after the first, line three", q.Seq, q.Offset, q.Data)
	}
	if n := len(rec.chunks); n != 2 {
		t.Errorf("%d chunks, want 2", n)
	}
}

// TestChunksFlushWhenFull: once a chunk's worth of lines wait, they go
// without a tick.
func TestChunksFlushWhenFull(t *testing.T) {
	rec := newRecording()
	l := logs.Chunks{Store: rec, Tick: make(chan time.Time), ChunkSize: 100}.Open(t.Context(), k1, nil)
	defer l.Close()
	for i := 0; i < 3; i++ {
		fmt.Fprintf(l, "line %d\n", i) // about 45 bytes with the timestamp
	}
	p := rec.wait(t)
	if n := strings.Count(string(p.Data), "\n"); n != 3 || len(p.Data) < 100 {
		t.Errorf("chunk of %d bytes, %d lines; want the 3 lines that passed 100 bytes", len(p.Data), n)
	}
}

// TestChunksFlushEvery: with the real timer, a line is sent without a
// Flush, Close or a full chunk.
func TestChunksFlushEvery(t *testing.T) {
	rec := newRecording()
	l := logs.Chunks{Store: rec, FlushEvery: 10 * time.Millisecond}.Open(t.Context(), k1, nil)
	defer l.Close()
	fmt.Fprintln(l, "hello")
	if p := rec.wait(t); !strings.HasSuffix(string(p.Data), "hello\n") {
		t.Errorf("chunk %q", p.Data)
	}
}

// TestChunksRetryUnavailable: a chunk the store refuses for now is tried
// again, the waiting and recovery told, and stored once.
func TestChunksRetryUnavailable(t *testing.T) {
	rec := newRecording(fmt.Errorf("disk full: %w", store.ErrUnavailable), fmt.Errorf("again: %w", store.ErrUnavailable))
	var waited, recovered int
	l := logs.Chunks{Store: rec, Tick: make(chan time.Time), Retry: time.Millisecond,
		Waiting: func(k store.LogKey, err error) { waited++ }, Recovered: func(store.LogKey) { recovered++ },
	}.Open(t.Context(), k1, nil)
	fmt.Fprintln(l, "kept")
	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if len(rec.chunks) != 1 || !strings.HasSuffix(string(rec.chunks[0].Data), "kept\n") || waited != 1 || recovered != 1 {
		t.Errorf("chunks %d, waiting told %d times, recovery %d; want 1, 1, 1", len(rec.chunks), waited, recovered)
	}
}

// TestChunksGiveUp: once the context is done, a refused chunk is not tried
// again, and the log's Close says it was lost.
func TestChunksGiveUp(t *testing.T) {
	down := fmt.Errorf("down: %w", store.ErrUnavailable)
	rec := newRecording(down, down, down, down, down, down, down, down)
	ctx, cancel := context.WithCancel(t.Context())
	l := logs.Chunks{Store: rec, Tick: make(chan time.Time), Retry: time.Millisecond,
		Waiting: func(store.LogKey, error) { cancel() }}.Open(ctx, k1, nil)
	fmt.Fprintln(l, "lost")
	if err := l.Close(); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Close = %v, want the store's refusal", err)
	}
}

// TestChunksStickyError: an error that is not a refusal for now is not
// retried, and every later Write, Flush and Close returns it.
func TestChunksStickyError(t *testing.T) {
	bad := errors.New("permission denied")
	rec := newRecording(bad)
	l := logs.Chunks{Store: rec, Tick: make(chan time.Time)}.Open(t.Context(), k1, nil)
	fmt.Fprintln(l, "first")
	if err := l.Flush(); !errors.Is(err, bad) {
		t.Fatalf("Flush = %v, want %v", err, bad)
	}
	if _, err := fmt.Fprintln(l, "second"); !errors.Is(err, bad) {
		t.Errorf("Write after the error = %v", err)
	}
	if err := l.Close(); !errors.Is(err, bad) {
		t.Errorf("Close = %v", err)
	}
	rec.none(t)
}

// TestChunksFenced: every chunk of a log carries the writer's fence as it
// was when the log was opened (the attempt's start), not a later one: a
// process that went on as a new owner does not lend its new right to
// write to an attempt of its old self.
func TestChunksFenced(t *testing.T) {
	rec := newRecording()
	fence := store.Fence{Owner: "o-1", Epoch: 7}
	l := logs.Chunks{Store: rec, Tick: make(chan time.Time), ChunkSize: 4, Fence: func() store.Fence { return fence }}.Open(t.Context(), k1, nil)
	fence = store.Fence{Owner: "o-2", Epoch: 8}
	fmt.Fprint(l, "one\ntwo\n")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if p := rec.wait(t); p.Fence == nil || *p.Fence != (store.Fence{Owner: "o-1", Epoch: 7}) {
			t.Errorf("chunk %d written under %v, want o-1's epoch 7", p.Seq, p.Fence)
		}
	}
}
