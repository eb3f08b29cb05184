package bastiontest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion"
)

// eventsBuffer is an Events writer that tells when it holds a string.
type eventsBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	got  chan struct{} // closed once buf holds want
}

func (e *eventsBuffer) Write(p []byte) (int, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.buf.Write(p)
	if e.got != nil && strings.Contains(e.buf.String(), e.want) {
		close(e.got)
		e.got = nil
	}
	return len(p), nil
}

func (e *eventsBuffer) String() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.buf.String()
}

// failingWriter refuses every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no room") }

// testEvents: what a build appends to its events file reaches Spec.Events
// while it runs and to its end once Run returns; the file is gone
// afterwards; the log is what the job printed, with events or without; a
// job that makes no events file, or an Events writer that fails, changes
// nothing of the build.
func testEvents(t *testing.T, newHost NewHost) {
	b := newHost(t)("")
	dir := t.TempDir()
	goOn := filepath.Join(dir, "go-on")
	// The second line comes only once the first was seen: the copy is live.
	job := `echo "file $SORTIE_EVENTS"
printf '{"n":1}\n' >> "$SORTIE_EVENTS"
while [ ! -e "$GO_ON" ]; do sleep 0.05; done
printf '{"n":2}\n{"n":3' >> "$SORTIE_EVENTS"
echo done
exit 3`
	ev := &eventsBuffer{want: "{\"n\":1}\n", got: make(chan struct{})}
	seen := ev.got
	spec := bastion.Spec{Command: job, Dir: dir, Env: map[string]string{"GO_ON": goOn}, Events: ev, Grace: grace}
	done := make(chan result, 1)
	var log bytes.Buffer
	go func() {
		o, err := b.Run(context.Background(), spec, &log)
		done <- result{o, err}
	}()
	select {
	case <-seen:
	case r := <-done:
		t.Fatalf("Run returned before the first event was copied: %+v, %v; events %q", r.o, r.err, ev.String())
	case <-time.After(30 * time.Second):
		t.Fatal("the first event was not copied while the job ran")
	}
	if err := os.WriteFile(goOn, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return")
	}
	if r.err != nil || r.o.ExitCode != 3 {
		t.Fatalf("Run: %+v, %v; want exit 3", r.o, r.err)
	}
	if got, want := ev.String(), "{\"n\":1}\n{\"n\":2}\n{\"n\":3"; got != want {
		t.Errorf("events %q, want %q", got, want)
	}
	out := log.String()
	path := strings.TrimSpace(strings.TrimPrefix(strings.SplitN(out, "\n", 2)[0], "file "))
	if !strings.HasSuffix(path, ".jsonl") || out != "file "+path+"\ndone\n" {
		t.Errorf("log %q, want the events file's name and done", out)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the events file %s is still there: %v", path, err)
	}

	// Without events, or with events the job never makes, or with an
	// Events writer that fails: the same build, the same log.
	job = `echo "[$SORTIE_EVENTS]"; echo out; exit 4`
	for _, w := range []io.Writer{nil, &eventsBuffer{}, failingWriter{}} {
		var log bytes.Buffer
		spec := bastion.Spec{Command: job, Dir: dir, Events: w}
		o, err := b.Run(context.Background(), spec, &log)
		if err != nil || o.ExitCode != 4 {
			t.Errorf("Run with Events %T: %+v, %v; want exit 4", w, o, err)
		}
		if w == nil && log.String() != "[]\nout\n" || w != nil && !strings.HasSuffix(log.String(), ".jsonl]\nout\n") {
			t.Errorf("Run with Events %T: log %q", w, log.String())
		}
		if eb, ok := w.(*eventsBuffer); ok && eb.String() != "" {
			t.Errorf("events %q from a job that made none", eb.String())
		}
	}
	// A failing writer with a job that makes events.
	o, err := b.Run(context.Background(), bastion.Spec{Command: `echo x >> "$SORTIE_EVENTS"; exit 5`, Dir: dir, Events: failingWriter{}}, io.Discard)
	if err != nil || o.ExitCode != 5 {
		t.Errorf("Run with a failing Events writer: %+v, %v; want exit 5", o, err)
	}
}
