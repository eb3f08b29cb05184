package local

import (
	"os"
	"testing"
	"time"
)

// TestWaitBriefly: the brief wait for a job's end ends, saying so, when its
// output pipe has output or is hung up, and ends without when neither
// comes within briefWait.
func TestWaitBriefly(t *testing.T) {
	// Not parallel: briefWait is the package's.
	defer func(d time.Duration) { briefWait = d }(briefWait)
	returns := func(name string, fd int, want bool) {
		t.Helper()
		done := make(chan bool)
		go func() { done <- waitBriefly(fd) }()
		select {
		case got := <-done:
			if got != want {
				t.Errorf("%s: waitBriefly says ready %v, want %v", name, got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: waitBriefly still waiting after 30s", name)
		}
	}
	pipe := func() (r, w *os.File, rfd int) {
		t.Helper()
		r, w, rfd, err := outputPipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close(); w.Close() })
		return r, w, rfd
	}

	briefWait = time.Hour
	_, w, rfd := pipe()
	w.Close()
	returns("hung up", rfd, true)

	_, w, rfd = pipe()
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	returns("output", rfd, true)

	briefWait = time.Millisecond
	_, _, rfd = pipe()
	returns("neither, at briefWait", rfd, false)
}
