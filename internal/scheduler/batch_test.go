package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

// batcher is the harness as a scheduler.Batcher: a batch's writes reach
// the harness's events as one "commit [...]", and a commit fails while
// failing is set.
type batcher struct {
	*harness
	failing error
}

func (b *batcher) Batch() scheduler.Batch { return &testBatch{b: b} }

type testBatch struct {
	b       *batcher
	pending []string
	results map[string]store.Result
}

func (t *testBatch) add(e string) { t.pending = append(t.pending, e) }

func (t *testBatch) Len() int { return len(t.pending) }

func (t *testBatch) AttemptStarted(_ context.Context, job string, n int, _ time.Time) error {
	t.add(fmt.Sprintf("start %s#%d", job, n))
	return nil
}

func (t *testBatch) AttemptFinished(_ context.Context, job string, n int, r store.Result, _ string, _ time.Time) error {
	t.add(fmt.Sprintf("attempt %s#%d %s", job, n, r))
	return nil
}

func (t *testBatch) BuildEnded(_ context.Context, job string, n int, ares store.Result, _ string, res store.Result, _ string, _ time.Time) error {
	t.add(fmt.Sprintf("ended %s#%d %s/%s", job, n, ares, res))
	t.result(job, res)
	return nil
}

func (t *testBatch) BuildFinished(_ context.Context, job string, r store.Result, _ string, _ time.Time) error {
	t.add(fmt.Sprintf("build %s %s", job, r))
	t.result(job, r)
	return nil
}

func (t *testBatch) result(job string, r store.Result) {
	if t.results == nil {
		t.results = map[string]store.Result{}
	}
	t.results[job] = r
}

func (t *testBatch) Commit(context.Context) error {
	h := t.b.harness
	h.mu.Lock()
	defer h.mu.Unlock()
	pending, results := t.pending, t.results
	t.pending, t.results = nil, nil
	if t.b.failing != nil {
		h.events = append(h.events, "commit failed")
		return t.b.failing
	}
	h.events = append(h.events, "commit ["+strings.Join(pending, ", ")+"]")
	for job, r := range results {
		h.results[job] = r
	}
	return nil
}

// eventRunner records when an attempt's process would start.
type eventRunner struct{ *harness }

func (r eventRunner) RunAttempt(ctx context.Context, job string, n int) scheduler.Outcome {
	r.record(fmt.Sprintf("run %s#%d", job, n))
	return r.harness.RunAttempt(ctx, job, n)
}

// startBatched runs l with h's fakes, its writes through a batcher, its
// attempts through an eventRunner.
func startBatched(h *harness, l *scheduler.Loop, b *batcher) <-chan run {
	l.Runner, l.Semaphores, l.Recorder = eventRunner{h}, h, b
	l.Buildset, l.Poll, l.RetryDelay = "bs", time.Millisecond, time.Millisecond
	l.Remaining = map[string]time.Duration{}
	done := make(chan run, 1)
	go func() {
		r, err := l.Run(context.Background())
		done <- run{r, err}
	}()
	return done
}

// events returns h's events whose first word is one of kinds.
func (h *harness) eventsOf(kinds ...string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, e := range h.events {
		if slices.Contains(kinds, firstWord(e)) {
			out = append(out, e)
		}
	}
	return out
}

// TestBatchedWrites: with a Batcher, a build's end and the start of the
// build it frees are committed together, and nothing follows from either
// before the commit: the process starts after it, the semaphores are
// released after it; a retry's attempt end goes with the next commit.
func TestBatchedWrites(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	l := &scheduler.Loop{
		Plan: plan(t, "a:\nb: a", nil), Jobs: map[string]scheduler.JobSpec{"a": {Semaphores: map[string]int{"s": 1}, Attempts: 2}},
		MaxParallel: 8,
	}
	done := startBatched(h, l, &batcher{harness: h})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	h.end("a") <- scheduler.Outcome{Infra: errors.New("unreachable")}
	h.expect("a#2")
	h.succeed("a")
	h.expect("b#1")
	h.fail("b")
	if r := wait(t, done); r.result != store.Failure || r.err != nil {
		t.Fatalf("result %s, %v; want FAILURE", r.result, r.err)
	}
	want := []string{
		"commit [start boot#1]", "run boot#1",
		"commit [ended boot#1 SUCCESS/SUCCESS, start a#1]", "run a#1",
		"commit [attempt a#1 RETRY]", "commit [start a#2]", "run a#2",
		"commit [ended a#2 SUCCESS/SUCCESS, start b#1]", "release bs/a", "run b#1",
		"commit [ended b#1 FAILURE/FAILURE]",
	}
	if got := h.eventsOf("commit", "run", "release"); !slices.Equal(got, want) {
		t.Errorf("events\n got %q\nwant %q", got, want)
	}
	if h.results["b"] != store.Failure || h.results["a"] != store.Success {
		t.Errorf("results %v", h.results)
	}
}

// TestBatchCommitFails: when a batch cannot be committed, the attempts
// it started do not run, their builds end ERROR (their dependents
// SKIPPED), and so does the run.
func TestBatchCommitFails(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	l := &scheduler.Loop{Plan: plan(t, "a:\nb: a", nil), MaxParallel: 8}
	b := &batcher{harness: h}
	done := startBatched(h, l, b)
	h.expect("boot#1")
	h.mu.Lock()
	b.failing = errors.New("disk full")
	h.mu.Unlock()
	h.succeed("boot")
	r := wait(t, done)
	if r.result != store.Error || r.err == nil || !strings.Contains(r.err.Error(), "disk full") {
		t.Fatalf("result %s, %v; want ERROR saying why", r.result, r.err)
	}
	if got := h.eventsOf("run"); !slices.Equal(got, []string{"run boot#1"}) {
		t.Errorf("attempts run: %q; want boot#1 alone (a's start was not recorded)", got)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.results["a"] != store.Error || !strings.Contains(h.reasons["a"], "cannot record the attempt") {
		t.Errorf("a: %s %q; want ERROR, its attempt not recorded", h.results["a"], h.reasons["a"])
	}
	if h.results["b"] != store.Skipped {
		t.Errorf("b: %s; want SKIPPED, after a", h.results["b"])
	}
}

// runBatched is startBatched with the caller's context and poll.
func runBatched(ctx context.Context, h *harness, l *scheduler.Loop, b *batcher, poll time.Duration) <-chan run {
	l.Runner, l.Semaphores, l.Recorder = eventRunner{h}, h, b
	l.Buildset, l.Poll = "bs", poll
	if l.RetryDelay == 0 {
		l.RetryDelay = time.Millisecond
	}
	l.Remaining = map[string]time.Duration{}
	done := make(chan run, 1)
	go func() {
		r, err := l.Run(ctx)
		done <- run{r, err}
	}()
	return done
}

// TestBatchSemaphoreHandoff: a build that waits for the semaphore of the
// build it follows gets it in the turn that build ends, as without a
// batch, not at the next poll: the ended build's release waits for the
// commit of its end, and the follower asks again once it is made. The
// poll is an hour, so only the end can start b.
func TestBatchSemaphoreHandoff(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	s := map[string]int{"s": 1}
	l := &scheduler.Loop{
		Plan: plan(t, "a:\nb: a", nil), Jobs: map[string]scheduler.JobSpec{"a": {Semaphores: s}, "b": {Semaphores: s}},
		MaxParallel: 8,
	}
	done := runBatched(context.Background(), h, l, &batcher{harness: h}, time.Hour)
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	h.succeed("a")
	h.expect("b#1")
	h.succeed("b")
	if r := wait(t, done); r.result != store.Success || r.err != nil {
		t.Fatalf("result %s, %v; want SUCCESS", r.result, r.err)
	}
	want := []string{
		"commit [start boot#1]", "run boot#1",
		"acquire bs/a", "commit [ended boot#1 SUCCESS/SUCCESS, start a#1]", "run a#1",
		"commit [ended a#1 SUCCESS/SUCCESS]", "release bs/a", "acquire bs/b", "commit [start b#1]", "run b#1",
		"commit [ended b#1 SUCCESS/SUCCESS]", "release bs/b",
	}
	if got := h.eventsOf("commit", "run", "acquire", "release"); !slices.Equal(got, want) {
		t.Errorf("events\n got %q\nwant %q", got, want)
	}
}

// TestBatchCancelWhileWaitingToRetry: a build cancelled while it waits to
// be retried (holding its semaphores) has its end committed before its
// semaphores are released, as every build's.
func TestBatchCancelWhileWaitingToRetry(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// An hour: the retry must not come by itself during the test.
	l := &scheduler.Loop{
		Plan: plan(t, "a:", nil), MaxParallel: 8, RetryDelay: time.Hour,
		Jobs: map[string]scheduler.JobSpec{"a": {Semaphores: map[string]int{"s": 1}, Attempts: 3}},
	}
	done := runBatched(ctx, h, l, &batcher{harness: h}, time.Millisecond)
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	h.end("a") <- scheduler.Outcome{Infra: errors.New("connection refused")}
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(h.eventsOf("commit"), "commit [attempt a#1 RETRY]") {
		if time.Now().After(deadline) {
			t.Fatal("the failed attempt was never recorded as retried")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if r := wait(t, done); r.result != store.Canceled {
		t.Fatalf("result %s, %v; want CANCELED", r.result, r.err)
	}
	want := []string{"commit [attempt a#1 RETRY]", "commit [build a CANCELED]", "release bs/a"}
	got := h.eventsOf("commit", "release")
	if i := slices.Index(got, want[0]); i < 0 || !slices.Equal(got[i:], want) {
		t.Errorf("events\n got %q\nwant %q at the end", got, want)
	}
}

// TestBatchDrain: with a batch, a drain still records what ended before
// Run returns ErrDrained (the last end committed, its semaphores released
// after the commit) and starts nothing more, c's start included.
func TestBatchDrain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	drain := make(chan struct{})
	l := &scheduler.Loop{
		Plan: plan(t, "a:\nb:\nc: a b", nil), MaxParallel: 8, Drain: drain,
		Jobs: map[string]scheduler.JobSpec{"b": {Semaphores: map[string]int{"s": 1}}},
	}
	done := runBatched(context.Background(), h, l, &batcher{harness: h}, time.Millisecond)
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1", "b#1")
	close(drain)
	h.succeed("a")
	h.await("commit [ended a#1 SUCCESS/SUCCESS]")
	h.succeed("b") // c is ready now, but must not start
	r := wait(t, done)
	if r.result != "" || !errors.Is(r.err, scheduler.ErrDrained) {
		t.Fatalf("result %q %v, want ErrDrained", r.result, r.err)
	}
	got := h.eventsOf("commit", "run", "release")
	want := []string{"commit [ended b#1 SUCCESS/SUCCESS]", "release bs/b"}
	if len(got) < 2 || !slices.Equal(got[len(got)-2:], want) {
		t.Errorf("events\n got %q\nwant %q at the end", got, want)
	}
	for _, e := range got {
		if strings.Contains(e, " c#") {
			t.Errorf("%q after the drain", e)
		}
	}
}

// TestBatchCommitFailsWhileOthersRun: a batch that cannot be committed
// stops the run: the attempt still running is cancelled and its end
// recorded (written at once, the batch given up), the build that had
// not started ends ERROR, and Run waits for the attempt before it
// returns ERROR.
func TestBatchCommitFailsWhileOthersRun(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	l := &scheduler.Loop{Plan: plan(t, "a:\nb:\nc: a", nil), MaxParallel: 8}
	b := &batcher{harness: h}
	done := runBatched(context.Background(), h, l, b, time.Millisecond)
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1", "b#1")
	h.mu.Lock()
	b.failing = errors.New("disk full")
	h.mu.Unlock()
	h.succeed("a")
	r := wait(t, done)
	if r.result != store.Error || r.err == nil || !strings.Contains(r.err.Error(), "disk full") {
		t.Fatalf("result %s, %v; want ERROR saying why", r.result, r.err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.results["b"] != store.Canceled || h.results["c"] != store.Error {
		t.Errorf("results %v; want b CANCELED (cancelled as it ran), c ERROR", h.results)
	}
	if h.running != 0 {
		t.Errorf("%d attempts still running after Run returned", h.running)
	}
}
