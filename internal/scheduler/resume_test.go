package scheduler_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

// await waits until the loop has recorded event.
func (h *harness) await(event string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		seen := slices.Contains(h.events, event)
		h.mu.Unlock()
		if seen {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("never recorded %q", event)
		}
		time.Sleep(time.Millisecond)
	}
}

// A buildset interrupted by a crash is taken up where it was: finished
// builds keep their results, running ones are lost and retried as the next
// attempt (or ERROR without attempts left), and what the crash kept from
// being recorded is recorded now.
func TestResumeAfterCrash(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, `
ok:
bad:
bad_dep: bad
bad_dep2: bad_dep
bad_skipped: bad
lost:
dead:
dead_dep: dead
waiting:
after: lost waiting`, nil)
	jobs := map[string]scheduler.JobSpec{
		"lost":    {Attempts: 3},
		"dead":    {Attempts: 2},
		"waiting": {Attempts: 3, Semaphores: map[string]int{"s": 1}},
	}
	resume := map[string]scheduler.Prior{
		"boot":        {Result: store.Success, Attempts: 1},
		"ok":          {Result: store.Success, Attempts: 1},
		"bad":         {Result: store.Failure, Attempts: 1},
		"bad_skipped": {Result: store.Skipped}, // recorded before the crash
		"lost":        {Attempts: 1, Running: true},
		"dead":        {Attempts: 2, Running: true},
		"waiting":     {Attempts: 1}, // its attempt 1 was RETRY
	}
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, Jobs: jobs, MaxParallel: 8, Resume: resume})
	h.expect("lost#2", "waiting#2")
	h.succeed("lost")
	h.await("build lost SUCCESS")
	h.succeed("waiting")
	h.expect("after#1")
	h.succeed("after")
	r := wait(t, done)
	if r.result != store.Failure || r.err != nil {
		t.Fatalf("result %s %v", r.result, r.err)
	}
	if len(h.started) != 0 {
		t.Errorf("more attempts started: %d", len(h.started))
	}
	want := []string{
		// Before anything starts: the skips the crash kept from being
		// recorded, then the lost attempts.
		"build bad_dep SKIPPED",
		"build bad_dep2 SKIPPED",
		"attempt lost#1 LOST",
		"attempt dead#2 LOST",
		"build dead ERROR",
		"build dead_dep SKIPPED",
		// Then the resumed jobs, acquiring their semaphores anew.
		"start lost#2",
		"acquire bs/waiting",
		"start waiting#2",
		"attempt lost#2 SUCCESS",
		"build lost SUCCESS",
		"attempt waiting#2 SUCCESS",
		"release bs/waiting",
		"build waiting SUCCESS",
		"start after#1",
		"attempt after#1 SUCCESS",
		"build after SUCCESS",
	}
	if !slices.Equal(h.events, want) {
		t.Errorf("recorded\n%q\nwant\n%q", h.events, want)
	}
	wantReasons := map[string]string{
		"bad_dep":  "dependency bad failed",
		"bad_dep2": "dependency bad_dep was skipped",
		"dead":     "lost: the sortie process running it stopped (attempt 2 of 2)",
		"dead_dep": "dependency dead ended with ERROR",
	}
	for job, reason := range wantReasons {
		if h.reasons[job] != reason {
			t.Errorf("%s: reason %q, want %q", job, h.reasons[job], reason)
		}
	}
	if len(h.sems["s"]) != 0 {
		t.Errorf("semaphore leaked: %v", h.sems)
	}
}

// A buildset whose every build has a result ends at once with the result
// they make, running and recording nothing.
func TestResumeAllDone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		b    store.Result
		want store.Result
	}{
		{"success", store.Success, store.Success},
		{"failure", store.Failure, store.Failure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			p := plan(t, "a:\nb: a\nc: b", nil)
			c := store.Success
			if tc.b != store.Success {
				c = store.Skipped
			}
			resume := map[string]scheduler.Prior{
				"boot": {Result: store.Success, Attempts: 1},
				"a":    {Result: store.Success, Attempts: 2},
				"b":    {Result: tc.b, Attempts: 1},
				"c":    {Result: c, Attempts: 0},
			}
			r := wait(t, h.start(context.Background(), &scheduler.Loop{Plan: p, MaxParallel: 8, Resume: resume}))
			if r.result != tc.want || r.err != nil {
				t.Fatalf("result %s %v, want %s", r.result, r.err, tc.want)
			}
			if len(h.events) != 0 || len(h.started) != 0 {
				t.Errorf("recorded %q, started %d attempts", h.events, len(h.started))
			}
		})
	}
}

// Restore finishes jobs that never started here, taking a ready one off
// the ready queue.
func TestCoreRestore(t *testing.T) {
	t.Parallel()
	p := plan(t, "a:\nb: a\nx:", nil)
	c := scheduler.NewCore(p, nil)
	ready, skipped := c.Restore("boot", store.Success) // boot was ready
	if !slices.Equal(ready, []string{"a", "x"}) || skipped != nil {
		t.Fatalf("ready %v skipped %v", ready, skipped)
	}
	ready, skipped = c.Restore("a", store.Failure) // a was ready too
	if ready != nil || !slices.Equal(skipped, []scheduler.Skip{{Job: "b", Result: store.Skipped, Reason: "dependency a failed"}}) {
		t.Fatalf("ready %v skipped %v", ready, skipped)
	}
	if job, ok := c.PopReady(); job != "x" || !ok {
		t.Fatalf("popped %q %v, want x", job, ok)
	}
	if _, ok := c.PopReady(); ok {
		t.Fatal("a restored job was still queued")
	}
	c.Start("x")
	func() {
		defer func() {
			if recover() == nil {
				t.Error("restore of a running job did not panic")
			}
		}()
		c.Restore("x", store.Success)
	}()
	c.Finish("x", store.Success)
	if !c.Done() || c.Deadlocked() || c.Result() != store.Failure {
		t.Fatalf("done %v deadlocked %v result %s", c.Done(), c.Deadlocked(), c.Result())
	}
}
