package scheduler_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

// flakySems fails the first n requests, as a busy database would, then
// answers as the harness does.
type flakySems struct {
	*harness
	mu    sync.Mutex
	fails int
	tries int
}

var errBusy = errors.New("database is locked")

func (f *flakySems) TryAcquire(ctx context.Context, holder string, sems map[string]int, since time.Time) (bool, error) {
	f.mu.Lock()
	f.tries++
	if f.fails > 0 {
		f.fails--
		f.mu.Unlock()
		return false, errBusy
	}
	f.mu.Unlock()
	return f.harness.TryAcquire(ctx, holder, sems, since)
}

func runFlaky(t *testing.T, fails int) (*harness, *flakySems, <-chan run) {
	h := newHarness(t)
	f := &flakySems{harness: h, fails: fails}
	l := &scheduler.Loop{
		Plan: plan(t, "a:\nb:", nil), Jobs: map[string]scheduler.JobSpec{"b": {Semaphores: map[string]int{"s": 1}}},
		MaxParallel: 8, Buildset: "bs", Poll: time.Millisecond, RetryDelay: time.Millisecond,
		Remaining: map[string]time.Duration{}, Runner: h, Semaphores: f, Recorder: h,
	}
	done := make(chan run, 1)
	go func() {
		r, err := l.Run(context.Background())
		done <- run{r, err}
	}()
	return h, f, done
}

// TestAcquireErrorIsRetried: a semaphore request that fails a few times
// is tried again at the next poll; the build running meanwhile is not
// cancelled, and the buildset succeeds.
func TestAcquireErrorIsRetried(t *testing.T) {
	t.Parallel()
	h, f, done := runFlaky(t, 3)
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1", "b#1") // b after three failed requests
	h.succeed("a", "b")
	r := wait(t, done)
	if r.result != store.Success || r.err != nil {
		t.Fatalf("result %s, %v; want SUCCESS", r.result, r.err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.tries != 4 {
		t.Errorf("%d requests, want 4 (3 failed, then granted)", f.tries)
	}
}

// TestAcquireErrorsInARowStop: a store that keeps failing stops the run
// with ERROR after MaxAcquireErrors tries, saying why.
func TestAcquireErrorsInARowStop(t *testing.T) {
	t.Parallel()
	h, _, done := runFlaky(t, 1000)
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	h.succeed("a")
	r := wait(t, done)
	if r.result != store.Error || r.err == nil || !strings.Contains(r.err.Error(), "20 tries failed in a row") || !errors.Is(r.err, errBusy) {
		t.Fatalf("result %s, %v; want ERROR after 20 failed tries", r.result, r.err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.results["b"] != store.Error {
		t.Errorf("b: %s, want ERROR", h.results["b"])
	}
}
