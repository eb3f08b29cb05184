package scheduler_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

// hold is a Loop.Hold the test switches, counting how often the loop asks
// it: the loop asks at every turn (each Poll tick included), so a number of
// asks is a number of turns the loop took without starting anything, which
// is what "nothing started while holding" needs, without a sleep.
type hold struct {
	on    atomic.Bool
	asked atomic.Int64
}

func (h *hold) Hold() bool {
	h.asked.Add(1)
	return h.on.Load()
}

// stillHeld fails if any attempt starts while the loop asks hold n more
// times, and lasts at least min (for a retry delay to come due).
func (h *harness) stillHeld(hd *hold, n int64, min time.Duration) {
	h.t.Helper()
	until := hd.asked.Load() + n
	notBefore := time.Now().Add(min)
	deadline := time.Now().Add(10 * time.Second)
	for hd.asked.Load() < until || time.Now().Before(notBefore) {
		select {
		case s := <-h.started:
			h.t.Fatalf("%s started while holding", s)
		case <-time.After(time.Millisecond):
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the loop asked Hold %d times, want %d more", hd.asked.Load(), n)
		}
	}
}

func (h *harness) eventsNow() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.events)
}

// A hold set while a runs lets a finish, then starts nothing (b waits)
// until it is lifted.
func TestHoldStopsStarts(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:\nb: a", nil)
	hd := &hold{}
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, MaxParallel: 8, Hold: hd.Hold})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	hd.on.Store(true)
	h.succeed("a") // a running attempt goes on under a hold
	h.await("build a SUCCESS")
	h.stillHeld(hd, 20, 0) // b is ready: 20 turns of the loop without it
	hd.on.Store(false)
	h.expect("b#1")
	h.succeed("b")
	r := wait(t, done)
	if r.result != store.Success || r.err != nil {
		t.Fatalf("result %s %v", r.result, r.err)
	}
	if h.results["b"] != store.Success {
		t.Errorf("results %v", h.results)
	}
}

// A retry that comes due while holding waits for the hold to lift, keeping
// its semaphores meanwhile.
func TestHoldDelaysRetry(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:", nil)
	hd := &hold{}
	jobs := map[string]scheduler.JobSpec{"a": {Attempts: 2, Semaphores: map[string]int{"s": 1}}}
	l := &scheduler.Loop{Plan: p, Jobs: jobs, MaxParallel: 8, Hold: hd.Hold, RetryDelay: time.Millisecond}
	done := h.start(context.Background(), l)
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	hd.on.Store(true)
	h.end("a") <- scheduler.Outcome{Infra: errors.New("ssh: connection refused")}
	h.await("attempt a#1 RETRY")
	// The retry is due after 1ms; 50ms and 20 turns leave it time to come
	// due (and be re-armed) many times over.
	h.stillHeld(hd, 20, 50*time.Millisecond)
	h.mu.Lock()
	holders := len(h.sems["s"])
	h.mu.Unlock()
	if holders != 1 {
		t.Errorf("a's semaphore was not kept while holding: %v", h.sems)
	}
	hd.on.Store(false)
	h.expect("a#2")
	h.succeed("a")
	r := wait(t, done)
	if r.result != store.Success || h.results["a"] != store.Success {
		t.Fatalf("result %s %v", r.result, h.results)
	}
	if n := strings.Count(strings.Join(h.events, "\n"), "acquire bs/a"); n != 1 {
		t.Errorf("acquired %d times: %v", n, h.events)
	}
}

// A drain lets the running attempts end and be recorded, starts nothing
// more, and leaves what did not run as it is.
func TestDrain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:\nb:\nc: a b", nil)
	drain := make(chan struct{})
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, MaxParallel: 8, Drain: drain})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1", "b#1")
	close(drain)
	h.succeed("a")
	h.await("build a SUCCESS")
	select {
	case r := <-done:
		t.Fatalf("returned %s %v with b running", r.result, r.err)
	default:
	}
	h.succeed("b") // c is ready now, but must not start
	r := wait(t, done)
	if r.result != "" || !errors.Is(r.err, scheduler.ErrDrained) {
		t.Fatalf("result %q %v, want ErrDrained", r.result, r.err)
	}
	if len(h.started) != 0 {
		t.Errorf("%s started after the drain", <-h.started)
	}
	want := map[string]store.Result{"boot": store.Success, "a": store.Success, "b": store.Success}
	if len(h.results) != len(want) {
		t.Errorf("results %v, want %v (nothing for c)", h.results, want)
	}
	for job, res := range want {
		if h.results[job] != res {
			t.Errorf("%s: %s, want %s", job, h.results[job], res)
		}
	}
	for _, e := range h.events {
		if strings.Contains(e, " c") || strings.Contains(e, "/c") {
			t.Errorf("recorded %q for c", e)
		}
	}
}

// A drain before Run starts nothing at all, resumed jobs included.
func TestDrainBeforeRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:", nil)
	drain := make(chan struct{})
	close(drain)
	resume := map[string]scheduler.Prior{"boot": {Result: store.Success, Attempts: 1}}
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, MaxParallel: 8, Drain: drain, Resume: resume})
	var r run
	select {
	case s := <-h.started:
		// Not waiting for the 10s timeout: end it so that Run returns.
		t.Errorf("%s started though drained before Run", s)
		h.succeed(strings.Split(s, "#")[0])
		r = wait(t, done)
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("loop did not finish")
	}
	if r.result != "" || !errors.Is(r.err, scheduler.ErrDrained) {
		t.Fatalf("result %q %v, want ErrDrained", r.result, r.err)
	}
	if len(h.started) != 0 || len(h.events) != 0 {
		t.Errorf("started %d attempts, recorded %q", len(h.started), h.events)
	}
}

// A drain gives up a retry waiting (an hour here) at once: its semaphores
// are released, nothing more is recorded of it, the next process retries.
func TestDrainWhileWaitingToRetry(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:", nil)
	drain := make(chan struct{})
	jobs := map[string]scheduler.JobSpec{"a": {Attempts: 3, Semaphores: map[string]int{"s": 1}}}
	l := &scheduler.Loop{Plan: p, Jobs: jobs, MaxParallel: 8, Drain: drain, RetryDelay: time.Hour}
	done := h.start(context.Background(), l)
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	h.end("a") <- scheduler.Outcome{Infra: errors.New("ssh: connection refused")}
	h.await("attempt a#1 RETRY")
	before := len(h.eventsNow())
	// The retry is an hour away: wait's bound says the drain did not
	// wait for it.
	close(drain)
	r := wait(t, done)
	if r.result != "" || !errors.Is(r.err, scheduler.ErrDrained) {
		t.Fatalf("result %q %v, want ErrDrained", r.result, r.err)
	}
	if len(h.started) != 0 {
		t.Errorf("%s started after the drain", <-h.started)
	}
	if got := h.events[before:]; !slices.Equal(got, []string{"release bs/a"}) {
		t.Errorf("recorded after the drain %q, want only the release", got)
	}
	if len(h.sems["s"]) != 0 {
		t.Errorf("semaphore leaked: %v", h.sems)
	}
	if _, ok := h.results["a"]; ok {
		t.Errorf("a finished %s", h.results["a"])
	}
}

// A cancel while draining cancels as usual: the running attempt is
// cancelled and the rest recorded, and Run returns CANCELED.
func TestCancelWhileDraining(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:\nb: a\nlocked:", nil)
	jobs := map[string]scheduler.JobSpec{"locked": {Semaphores: map[string]int{"s": 1}}}
	h.sems["s"] = map[string]bool{"someone-else": true}
	drain := make(chan struct{})
	ctx, cancel := context.WithCancelCause(context.Background())
	done := h.start(ctx, &scheduler.Loop{Plan: p, Jobs: jobs, MaxParallel: 8, Drain: drain})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	close(drain)
	cancel(scheduler.ErrCanceled)
	r := wait(t, done)
	if r.result != store.Canceled || r.err != nil {
		t.Fatalf("result %q %v, want CANCELED", r.result, r.err)
	}
	want := map[string]store.Result{"boot": store.Success, "a": store.Canceled, "b": store.Canceled, "locked": store.Canceled}
	for job, res := range want {
		if h.results[job] != res {
			t.Errorf("%s: %s, want %s", job, h.results[job], res)
		}
	}
}
