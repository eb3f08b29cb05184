package main

import (
	"strings"
	"testing"
	"time"
)

// Lines that are not redrawn go through a buffer between Start and Stop:
// a line printed while the run goes on still comes out during the run,
// and what is printed after Stop goes straight out.
func TestProgressBufferFlushesDuringTheRun(t *testing.T) {
	var out lockedBuffer
	p := newProgress(&out, false)
	p.Start()
	defer p.Stop()
	p.AttemptStarted("deploy", 1, time.Date(2026, 12, 5, 1, 0, 0, 0, time.UTC))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(out.String(), "start   deploy (attempt 1)") {
		if time.Now().After(deadline) {
			t.Fatalf("the line was not flushed while the run goes on; output: %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	p.Stop()
	p.Note("after the run")
	if got := out.String(); !strings.HasSuffix(got, "after the run\n") {
		t.Fatalf("a line after Stop is not written at once; output: %q", got)
	}
}
