package logs_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
)

// TestMain stops the PostgreSQL cluster the store sink's tests may have
// started, and fails a run that left goroutines (a flusher not stopped).
func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 123456789, time.FixedZone("CET", 3600))

const stamp = "2026-01-02T02:04:05.123456789Z | "

func fixedClock() time.Time { return t0 }

// recorder keeps each Write it gets as one entry.
type recorder struct {
	mu     sync.Mutex
	writes []string
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func (r *recorder) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.writes...)
}

func write(t *testing.T, w io.Writer, chunks ...string) {
	t.Helper()
	for _, c := range chunks {
		n, err := w.Write([]byte(c))
		if err != nil || n != len(c) {
			t.Fatalf("Write(%q) = %d, %v", c, n, err)
		}
	}
}

func equal(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "") != strings.Join(want, "") || len(got) != len(want) {
		t.Errorf("writes:\n%q\nwant:\n%q", got, want)
	}
}

func TestLines(t *testing.T) {
	t.Parallel()
	var r recorder
	w := logs.NewWriter(&r, nil, fixedClock)
	write(t, w, "one\ntwo\n", "\n", "three\n")
	equal(t, r.all(), []string{stamp + "one\n", stamp + "two\n", stamp + "\n", stamp + "three\n"})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	equal(t, r.all(), []string{stamp + "one\n", stamp + "two\n", stamp + "\n", stamp + "three\n"})
}

func TestTimestampIsRFC3339NanoUTC(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	w := logs.NewWriter(&b, nil, func() time.Time { return at })
	write(t, w, "x\n")
	ts, rest, ok := strings.Cut(b.String(), logs.Separator)
	if !ok || rest != "x\n" {
		t.Fatalf("line %q", b.String())
	}
	got, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil || !got.Equal(at) || !strings.HasSuffix(ts, "Z") {
		t.Errorf("timestamp %q: %v, %v", ts, got, err)
	}
}

func TestPartialLines(t *testing.T) {
	t.Parallel()
	var r recorder
	w := logs.NewWriter(&r, nil, fixedClock)
	write(t, w, "hel", "lo wor", "ld\nand", " more")
	equal(t, r.all(), []string{stamp + "hello world\n"})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	equal(t, r.all(), []string{stamp + "hello world\n", stamp + "and more\n"})
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.Write([]byte("late\n")); !errors.Is(err, logs.ErrClosed) {
		t.Errorf("Write after Close: %v, want ErrClosed", err)
	}
}

func TestRedaction(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		secrets []string
		chunks  []string
		want    []string
	}{
		{"whole", []string{"hunter2"}, []string{"pw=hunter2 ok\n"}, []string{"pw=*** ok"}},
		{"split across writes", []string{"hunter2"}, []string{"pw=hun", "ter", "2 ok\n"}, []string{"pw=*** ok"}},
		{"split in partial line", []string{"hunter2"}, []string{"pw=hun", "ter2"}, []string{"pw=***"}},
		{"several", []string{"alpha", "beta"}, []string{"alpha-beta-gamma alpha\n"}, []string{"***-***-gamma ***"}},
		{"overlapping", []string{"abc", "cde"}, []string{"xabcdex\n"}, []string{"x***x"}},
		{"nested", []string{"token", "tok"}, []string{"tok token\n"}, []string{"*** ***"}},
		{"repeated", []string{"aa"}, []string{"aaaaa\n"}, []string{"***"}},
		{"empty ignored", []string{"", "s"}, []string{"a s b\n"}, []string{"a *** b"}},
		{"multi-line secret", []string{"-----BEGIN\nkeydata\n-----END\n"}, []string{"x keydata y\n", "-----BEGIN\n"}, []string{"x *** y", "***"}},
		{"not across lines", []string{"ab"}, []string{"a\nb\n"}, []string{"a", "b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var r recorder
			w := logs.NewWriter(&r, tc.secrets, fixedClock)
			write(t, w, tc.chunks...)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, l := range tc.want {
				want = append(want, stamp+l+"\n")
			}
			equal(t, r.all(), want)
		})
	}
}

func TestLongLineKeepsSecretsWhole(t *testing.T) {
	t.Parallel()
	var b bytes.Buffer
	w := logs.NewWriter(&b, []string{"SECRETVALUE"}, fixedClock)
	// 1 MiB without a newline, written in odd chunks, with secrets at
	// every position of the chunk boundaries.
	var in bytes.Buffer
	for in.Len() < 1<<20 {
		in.WriteString("xxxxxxSECRETVALUEyy")
	}
	data := in.Bytes()
	for len(data) > 0 {
		n := min(len(data), 4093)
		write(t, w, string(data[:n]))
		data = data[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("an overlong partial line was held whole (%d lines)", len(lines))
	}
	for _, l := range lines {
		rest, ok := strings.CutPrefix(l, stamp)
		if !ok {
			t.Fatalf("line without timestamp: %.40q", l)
		}
		text.WriteString(rest)
	}
	if strings.Contains(text.String(), "SECRET") || strings.Contains(text.String(), "VALUE") {
		t.Error("a secret, or part of it, survived a split of a long line")
	}
	if got, want := strings.Count(text.String(), "***"), strings.Count(in.String(), "SECRETVALUE"); got != want {
		t.Errorf("%d redactions, want %d", got, want)
	}
}

func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	var r recorder
	w := logs.NewWriter(&r, []string{"s3cr3t"}, fixedClock)
	const writers, lines = 8, 200
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(w, "writer %d line %d s3cr3t end\n", g, i)
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got := r.all()
	if len(got) != writers*lines {
		t.Fatalf("%d writes, want %d", len(got), writers*lines)
	}
	seen := map[string]bool{}
	for _, l := range got {
		var g, i int
		if _, err := fmt.Sscanf(l, stamp+"writer %d line %d *** end\n", &g, &i); err != nil {
			t.Fatalf("mangled line %q: %v", l, err)
		}
		seen[l] = true
	}
	if len(seen) != writers*lines {
		t.Errorf("%d distinct lines, want %d", len(seen), writers*lines)
	}
}

type failing struct{ n int }

func (f *failing) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

func TestWriteErrorIsSticky(t *testing.T) {
	t.Parallel()
	w := logs.NewWriter(&failing{n: 1}, nil, fixedClock)
	write(t, w, "ok\n")
	if _, err := w.Write([]byte("a\n")); err == nil || !strings.Contains(err.Error(), "logs: write: disk full") {
		t.Fatalf("Write: %v", err)
	}
	if _, err := w.Write([]byte("b\n")); err == nil {
		t.Error("a later Write did not fail")
	}
	if err := w.Close(); err == nil {
		t.Error("Close did not report the error")
	}
}

func TestCreate(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "buildsets", "b1", "job.log")
	for _, chunk := range []string{"first run tok", "second run\n"} {
		f := logs.Create(path, []string{"tok"})
		if f.Name() != path {
			t.Errorf("Name() = %q", f.Name())
		}
		write(t, f, chunk)
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], " | first run ***") || !strings.HasSuffix(lines[1], " | second run") {
		t.Errorf("file:\n%s", b)
	}
}

func TestCreateError(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f := logs.Create(filepath.Join(file, "x.log"), nil)
	f.Write([]byte("a line\n"))
	if err := f.Close(); err == nil || !strings.Contains(err.Error(), "logs: create ") {
		t.Errorf("a log under a file: Close = %v", err)
	}
}

// A log nobody writes to leaves no file: creating 10,000 empty files was
// a third of the CPU of a no-op buildset.
func TestCreateNothingWrittenNoFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "b1", "quiet.1.log")
	f := logs.Create(path, nil)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(path)); !os.IsNotExist(err) {
		t.Errorf("an empty log made %s: %v", filepath.Dir(path), err)
	}
}

func FuzzWriter(f *testing.F) {
	f.Add([]byte("pw=hunter2\nok\n"), "hunter2", "", uint16(3))
	f.Add([]byte("abcabc\nab"), "abc", "bca", uint16(1))
	f.Add([]byte("a\nb\r\nc"), "a\nb", "\n", uint16(2))
	f.Add([]byte("xx***yy"), "*", "y", uint16(5))
	f.Fuzz(func(t *testing.T, in []byte, s1, s2 string, split uint16) {
		var r recorder
		w := logs.NewWriter(&r, []string{s1, s2}, fixedClock)
		chunk := int(split%64) + 1
		for rest := in; len(rest) > 0; {
			n := min(chunk, len(rest))
			if m, err := w.Write(rest[:n]); err != nil || m != n {
				t.Fatalf("Write = %d, %v", m, err)
			}
			rest = rest[n:]
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		// Every secret, and every line of a multi-line one, is a value to
		// hide. One that contains '*' may be formed anew by a Redacted
		// mark next to other text, so it is not checked.
		var secrets []string
		for _, s := range []string{s1, s2} {
			for part := range strings.SplitSeq(s, "\n") {
				part = strings.TrimSuffix(part, "\r")
				if part != "" && !strings.Contains(part, "*") {
					secrets = append(secrets, part)
				}
			}
		}
		var text strings.Builder
		for _, l := range r.all() {
			body, ok := strings.CutPrefix(l, stamp)
			if !ok || !strings.HasSuffix(body, "\n") || strings.Count(body, "\n") != 1 {
				t.Fatalf("malformed line %q", l)
			}
			for _, s := range secrets {
				if strings.Contains(body, s) {
					t.Fatalf("secret %q survived in %q", s, l)
				}
			}
			text.WriteString(body)
		}
		if len(secrets) == 0 && s1 == "" && s2 == "" {
			want := string(in)
			if want != "" && !strings.HasSuffix(want, "\n") {
				want += "\n"
			}
			if text.String() != want {
				t.Fatalf("text %q, want %q", text.String(), want)
			}
		}
	})
}
