package scheduler_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

// ender is the harness with BuildEnded: a recorder that writes an
// attempt's end and its build's end at once.
type ender struct{ *harness }

func (e ender) BuildEnded(_ context.Context, job string, n int, ares store.Result, _ string, res store.Result, reason string, _ time.Time) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.results[job], e.reasons[job] = res, reason
	e.events = append(e.events, fmt.Sprintf("ended %s#%d %s/%s", job, n, ares, res))
	return nil
}

// TestBuildEnder: with a recorder that has BuildEnded, a build's last
// attempt and the build end in one call, recorded before its semaphores
// are released; a retried attempt is still recorded alone.
func TestBuildEnder(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	e := ender{h}
	l := &scheduler.Loop{
		Plan: plan(t, "a:\nb: a", nil), Jobs: map[string]scheduler.JobSpec{"a": {Semaphores: map[string]int{"s": 1}, Attempts: 2}},
		MaxParallel: 8, Buildset: "bs", Poll: time.Millisecond, RetryDelay: time.Millisecond,
		Remaining: map[string]time.Duration{}, Runner: h, Semaphores: h, Recorder: e,
	}
	done := make(chan run, 1)
	go func() {
		r, err := l.Run(context.Background())
		done <- run{r, err}
	}()
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	h.end("a") <- scheduler.Outcome{Infra: fmt.Errorf("unreachable")}
	h.expect("a#2")
	h.succeed("a")
	h.expect("b#1")
	h.fail("b")
	if r := wait(t, done); r.result != store.Failure {
		t.Fatalf("result %s", r.result)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	want := []string{"ended boot#1 SUCCESS/SUCCESS", "attempt a#1 RETRY", "ended a#2 SUCCESS/SUCCESS", "release bs/a", "ended b#1 FAILURE/FAILURE"}
	var got []string
	for _, ev := range h.events {
		if slices.Contains([]string{"ended", "attempt", "release"}, firstWord(ev)) {
			got = append(got, ev)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("events\n got %q\nwant %q", got, want)
	}
}

func firstWord(s string) string {
	for i, c := range s {
		if c == ' ' {
			return s[:i]
		}
	}
	return s
}
