// Package logstest is the conformance suite of the ways Sortie keeps build
// logs (logs.Sink): every kind, files or chunks in a store, runs Run and
// must read back, through logs.Open, what it was given, the same way.
package logstest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/store"
)

// Kind is one way of keeping logs under test: where they are written, and
// what logs.Open reads the ones kept in a store from (nil for files).
type Kind struct {
	Sink  logs.Sink
	Store logs.ChunkReader
}

// Run runs the suite; newKind returns a fresh, empty Kind for one subtest.
func Run(t *testing.T, newKind func(t *testing.T) Kind) {
	tests := []struct {
		name string
		fn   func(t *testing.T, k Kind)
	}{
		{"WholeRedacted", testWholeRedacted},
		{"NeverWritten", testNeverWritten},
		{"PartialLastLine", testPartialLastLine},
		{"Tail", testTail},
		{"ReadAtAnywhere", testReadAtAnywhere},
		{"Live", testLive},
		{"Large", testLarge},
		{"AttemptsApart", testAttemptsApart},
		{"ConcurrentWriters", testConcurrentWriters},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newKind(t))
		})
	}
}

var key = store.LogKey{BuildsetID: "01a212a6-5889-795d-907f-9e4ad6a7f0a2", Job: "deploy-web", Attempt: 1}

// attempt is the attempt of k as the sink records it.
func attempt(kind Kind, k store.LogKey) *store.Attempt {
	return &store.Attempt{BuildsetID: k.BuildsetID, Job: k.Job, Number: k.Attempt, Log: kind.Sink.Path(k)}
}

// read returns the whole log of k as it is now.
func read(t *testing.T, kind Kind, k store.LogKey) []byte {
	t.Helper()
	r, err := logs.Open(t.Context(), kind.Store, attempt(kind, k))
	if err != nil {
		t.Fatalf("open %v: %v", k, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil {
		t.Fatalf("read %v: %v", k, err)
	}
	if int64(len(b)) != r.Size() {
		t.Fatalf("read %v: %d bytes, Size %d", k, len(b), r.Size())
	}
	return b
}

// texts are the texts of a log's lines, checking each has its timestamp.
func texts(t *testing.T, b []byte) []string {
	t.Helper()
	if len(b) == 0 {
		return nil
	}
	if b[len(b)-1] != '\n' {
		t.Errorf("log does not end with a newline: %q", b[max(0, len(b)-40):])
	}
	var out []string
	for line := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		ts, text, ok := strings.Cut(line, logs.Separator)
		if _, err := time.Parse(time.RFC3339Nano, ts); !ok || err != nil {
			t.Errorf("line %q has no timestamp", line)
		}
		out = append(out, text)
	}
	return out
}

func write(t *testing.T, l logs.Log, s string) {
	t.Helper()
	if _, err := io.WriteString(l, s); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func closeLog(t *testing.T, l logs.Log) {
	t.Helper()
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// testWholeRedacted: the lines come back whole, in order, timestamped,
// with the secret redacted even when split across writes.
func testWholeRedacted(t *testing.T, kind Kind) {
	l := kind.Sink.Create(t.Context(), key, []string{"hunter2"})
	write(t, l, "login with hun")
	write(t, l, "ter2\nsecond line\n\nfourth \x1b[1mbold\x1b[0m\n")
	closeLog(t, l)
	got := texts(t, read(t, kind, key))
	want := []string{"login with ***", "second line", "", "fourth \x1b[1mbold\x1b[0m"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines = %q, want %q", got, want)
	}
	if bytes.Contains(read(t, kind, key), []byte("hunter2")) {
		t.Error("the secret was kept")
	}
}

// testNeverWritten: a log never written, or opened and closed with nothing
// in it, is empty.
func testNeverWritten(t *testing.T, kind Kind) {
	if b := read(t, kind, key); len(b) != 0 {
		t.Errorf("log never created = %q, want empty", b)
	}
	l := kind.Sink.Create(t.Context(), key, nil)
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	closeLog(t, l)
	if b := read(t, kind, key); len(b) != 0 {
		t.Errorf("log created, nothing written = %q, want empty", b)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// testPartialLastLine: Close writes the partial line held back, as a line.
func testPartialLastLine(t *testing.T, kind Kind) {
	l := kind.Sink.Create(t.Context(), key, nil)
	write(t, l, "a\nb")
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := texts(t, read(t, kind, key)); strings.Join(got, ",") != "a" {
		t.Errorf("before Close: %q, want only the whole line", got)
	}
	closeLog(t, l)
	if got := texts(t, read(t, kind, key)); strings.Join(got, ",") != "a,b" {
		t.Errorf("after Close: %q, want a, b", got)
	}
}

// testTail: the last lines and bytes of a log of many lines, as the API
// and `sortie run` read them.
func testTail(t *testing.T, kind Kind) {
	l := kind.Sink.Create(t.Context(), key, nil)
	for i := 1; i <= 5000; i++ {
		fmt.Fprintf(l, "line %d\n", i)
	}
	closeLog(t, l)
	whole := read(t, kind, key)
	r, err := logs.Open(t.Context(), kind.Store, attempt(kind, key))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	lines, err := logs.TailLines(r, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range lines {
		lines[i] = logs.Text(lines[i])
	}
	if strings.Join(lines, ",") != "line 4998,line 4999,line 5000" {
		t.Errorf("TailLines(3) = %q", lines)
	}
	off, err := logs.TailOffset(r, r.Size(), 400)
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(t, whole[off:]); len(got) != 400 || got[0] != "line 4601" {
		t.Errorf("TailOffset(400) = %d: %d lines from %q", off, len(got), got[0])
	}
	for _, tail := range []int64{0, 1, 100, 20000, r.Size() - 1, r.Size(), r.Size() + 5} {
		start, err := logs.LineStart(r, r.Size(), tail)
		if err != nil {
			t.Fatal(err)
		}
		want := int64(0)
		if tail > 0 && tail < r.Size() {
			cut := r.Size() - tail
			if whole[cut-1] == '\n' {
				want = cut
			} else {
				want = cut + int64(bytes.IndexByte(whole[cut:], '\n')) + 1
			}
		}
		if start != want {
			t.Errorf("LineStart(tail %d) = %d, want %d", tail, start, want)
		}
	}
}

// testReadAtAnywhere: ReadAt of any offset and length gives the log's
// bytes, io.EOF past its end.
func testReadAtAnywhere(t *testing.T, kind Kind) {
	l := kind.Sink.Create(t.Context(), key, nil)
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		fmt.Fprintf(l, "line %d %s\n", i, strings.Repeat("x", rnd.IntN(200)))
		if i%700 == 0 {
			if err := l.Flush(); err != nil { // several chunks, of several sizes
				t.Fatal(err)
			}
		}
	}
	closeLog(t, l)
	whole := read(t, kind, key)
	r, err := logs.Open(t.Context(), kind.Store, attempt(kind, key))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for range 300 {
		off := rnd.Int64N(int64(len(whole)) + 10)
		n := rnd.IntN(100 << 10)
		buf := make([]byte, n)
		got, err := r.ReadAt(buf, off)
		wantN := max(0, min(int64(n), int64(len(whole))-off))
		if int64(got) != wantN || !bytes.Equal(buf[:got], whole[min(off, int64(len(whole))):][:wantN]) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d bytes, want %d (or different bytes)", n, off, got, wantN)
		}
		if wantN < int64(n) && err != io.EOF {
			t.Fatalf("ReadAt(%d bytes at %d) past the end: err %v, want io.EOF", n, off, err)
		}
		if wantN == int64(n) && err != nil {
			t.Fatalf("ReadAt(%d bytes at %d): %v", n, off, err)
		}
	}
}

// testLive: while the log is written, a reader sees whole lines only, each
// read a longer prefix of the last, and once flushed everything written.
func testLive(t *testing.T, kind Kind) {
	l := kind.Sink.Create(t.Context(), key, nil)
	var prev []byte
	for round := range 5 {
		for i := range 10 {
			fmt.Fprintf(l, "round %d line %d\n", round, i)
		}
		write(t, l, "partial ")
		if err := l.Flush(); err != nil {
			t.Fatal(err)
		}
		got := read(t, kind, key)
		if !bytes.HasPrefix(got, prev) {
			t.Fatalf("round %d: the log changed what it held before", round)
		}
		if n := len(texts(t, got)); n != 10*(round+1)+round {
			t.Fatalf("round %d: %d lines, want %d", round, n, 10*(round+1)+round)
		}
		write(t, l, "ends\n")
		prev = got
	}
	closeLog(t, l)
}

// testLarge: lines longer than a chunk, and a log of many chunks, come back
// whole.
func testLarge(t *testing.T, kind Kind) {
	l := kind.Sink.Create(t.Context(), key, nil)
	long := strings.Repeat("0123456789", 10_000) // split by the Writer at 64 KiB
	var want []string
	for i := range 40 {
		line := fmt.Sprintf("%d %s", i, long[:i*2500])
		write(t, l, line+"\n")
		want = append(want, line)
	}
	closeLog(t, l)
	got := strings.Join(texts(t, read(t, kind, key)), "")
	if got != strings.Join(want, "") {
		t.Errorf("a log of %d bytes came back as %d bytes, or different", len(strings.Join(want, "")), len(got))
	}
}

// testAttemptsApart: logs of other attempts and jobs do not mix.
func testAttemptsApart(t *testing.T, kind Kind) {
	keys := []store.LogKey{key, {BuildsetID: key.BuildsetID, Job: key.Job, Attempt: 2}, {BuildsetID: key.BuildsetID, Job: "other", Attempt: 1}}
	ls := make([]logs.Log, len(keys))
	for i, k := range keys {
		ls[i] = kind.Sink.Create(t.Context(), k, nil)
	}
	for line := range 3 {
		for i, l := range ls {
			fmt.Fprintf(l, "log %d line %d\n", i, line)
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, k := range keys {
		closeLog(t, ls[i])
		got := texts(t, read(t, kind, k))
		if want := fmt.Sprintf("log %d line 0,log %d line 1,log %d line 2", i, i, i); strings.Join(got, ",") != want {
			t.Errorf("log %v = %q, want %q", k, got, want)
		}
	}
}

// testConcurrentWriters: several goroutines writing whole lines, a reader
// flushing meanwhile: every line once, none cut.
func testConcurrentWriters(t *testing.T, kind Kind) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	l := kind.Sink.Create(ctx, key, nil)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				fmt.Fprintf(l, "writer %d line %d %s\n", w, i, strings.Repeat("y", i%300))
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			l.Flush()
		}
	})
	wg.Wait()
	closeLog(t, l)
	seen := map[string]bool{}
	for _, line := range texts(t, read(t, kind, key)) {
		if seen[line] {
			t.Fatalf("line %q twice", line)
		}
		seen[line] = true
	}
	if len(seen) != 2000 {
		t.Errorf("%d lines, want 2000", len(seen))
	}
}
