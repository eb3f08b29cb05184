package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// harness is the recording fake behind every interface of the loop. Each
// attempt blocks until the test says how it ends, so the order of events
// is the test's to choose and nothing waits on a clock.
type harness struct {
	t       *testing.T
	started chan string // "job#attempt", one per attempt start

	mu      sync.Mutex
	ends    map[string]chan scheduler.Outcome
	events  []string
	running int
	peak    int
	results map[string]store.Result
	reasons map[string]string

	// semaphores: name -> holders, with the max the request gave.
	sems map[string]map[string]bool
}

func newHarness(t *testing.T) *harness {
	return &harness{
		t:       t,
		started: make(chan string, 100),
		ends:    map[string]chan scheduler.Outcome{},
		results: map[string]store.Result{},
		reasons: map[string]string{},
		sems:    map[string]map[string]bool{},
	}
}

func (h *harness) end(job string) chan scheduler.Outcome {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ends[job] == nil {
		h.ends[job] = make(chan scheduler.Outcome, 10)
	}
	return h.ends[job]
}

func (h *harness) RunAttempt(ctx context.Context, job string, n int) scheduler.Outcome {
	h.mu.Lock()
	h.running++
	h.peak = max(h.peak, h.running)
	h.mu.Unlock()
	defer func() { h.mu.Lock(); h.running--; h.mu.Unlock() }()
	h.started <- fmt.Sprintf("%s#%d", job, n)
	select {
	case o := <-h.end(job):
		return o
	case <-ctx.Done():
		return scheduler.Outcome{Canceled: true}
	}
}

func (h *harness) TryAcquire(_ context.Context, holder string, sems map[string]int, _ time.Time) (bool, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name, max := range sems {
		if hs := h.sems[name]; len(hs) >= max && !hs[holder] {
			return false, nil
		}
	}
	for name := range sems {
		if h.sems[name] == nil {
			h.sems[name] = map[string]bool{}
		}
		h.sems[name][holder] = true
	}
	h.events = append(h.events, "acquire "+holder)
	return true, nil
}

func (h *harness) Release(_ context.Context, holder string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, hs := range h.sems {
		delete(hs, holder)
	}
	h.events = append(h.events, "release "+holder)
	return nil
}

func (h *harness) AttemptStarted(_ context.Context, job string, n int, _ time.Time) error {
	h.record(fmt.Sprintf("start %s#%d", job, n))
	return nil
}

func (h *harness) AttemptFinished(_ context.Context, job string, n int, r store.Result, msg string, _ time.Time) error {
	h.record(fmt.Sprintf("attempt %s#%d %s", job, n, r))
	return nil
}

func (h *harness) BuildFinished(_ context.Context, job string, r store.Result, reason string, _ time.Time) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, dup := h.results[job]; dup {
		h.t.Errorf("build %s finished twice", job)
	}
	h.results[job], h.reasons[job] = r, reason
	h.events = append(h.events, fmt.Sprintf("build %s %s", job, r))
	return nil
}

func (h *harness) record(e string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
}

// expect waits for exactly these attempt starts, in any order.
func (h *harness) expect(want ...string) {
	h.t.Helper()
	var got []string
	deadline := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case s := <-h.started:
			got = append(got, s)
		case <-deadline:
			h.t.Fatalf("started %v, want %v", got, want)
		}
	}
	slices.Sort(got)
	w := slices.Clone(want)
	slices.Sort(w)
	if !slices.Equal(got, w) {
		h.t.Fatalf("started %v, want %v", got, want)
	}
}

// expectInOrder waits for these attempt starts in this order.
func (h *harness) expectInOrder(want ...string) {
	h.t.Helper()
	for _, w := range want {
		select {
		case s := <-h.started:
			if s != w {
				h.t.Fatalf("started %s, want %s next (of %v)", s, w, want)
			}
		case <-time.After(10 * time.Second):
			h.t.Fatalf("nothing started, want %s", w)
		}
	}
}

func (h *harness) succeed(jobs ...string) {
	for _, j := range jobs {
		h.end(j) <- scheduler.Outcome{}
	}
}

func (h *harness) fail(job string) { h.end(job) <- scheduler.Outcome{ExitCode: 2} }

// plan builds a plan from a compact config: jobs as "name: dep dep~soft".
func plan(t *testing.T, jobs string, hints map[string]string) *graph.Plan {
	t.Helper()
	var b strings.Builder
	b.WriteString("jobs:\n  boot: {bootstrap: true, install: [\"true\"]}\n")
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(jobs), "\n") {
		name, deps, _ := strings.Cut(strings.TrimSpace(line), ":")
		names = append(names, name)
		fmt.Fprintf(&b, "  %s:\n    run: \"true\"\n", name)
		if h, ok := hints[name]; ok {
			fmt.Fprintf(&b, "    duration_hint: %s\n", h)
		}
		if fs := strings.Fields(deps); len(fs) > 0 {
			b.WriteString("    dependencies:\n")
			for _, d := range fs {
				if n, ok := strings.CutSuffix(d, "~soft"); ok {
					fmt.Fprintf(&b, "      - {name: %s, soft: true}\n", n)
				} else {
					fmt.Fprintf(&b, "      - %s\n", d)
				}
			}
		}
	}
	fmt.Fprintf(&b, "pipelines:\n  p: {jobs: [%s]}\n", strings.Join(names, ", "))
	cfg, err := config.Parse("test.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	p, err := graph.Select(cfg, "p", nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type run struct {
	result store.Result
	err    error
}

// start runs the loop in the background; wait for its result with <-done.
func (h *harness) start(ctx context.Context, l *scheduler.Loop) <-chan run {
	l.Runner, l.Semaphores, l.Recorder = h, h, h
	l.Buildset = "bs"
	l.Poll = time.Millisecond
	if l.RetryDelay == 0 {
		l.RetryDelay = time.Millisecond
	}
	if l.Remaining == nil {
		l.Remaining = map[string]time.Duration{}
	}
	done := make(chan run, 1)
	go func() {
		r, err := l.Run(ctx)
		done <- run{r, err}
	}()
	return done
}

func wait(t *testing.T, done <-chan run) run {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("loop did not finish")
		return run{}
	}
}

func TestDiamond(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, `
a:
b: a
c: a
d: b c`, nil)
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, MaxParallel: 8})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	h.succeed("a")
	h.expect("b#1", "c#1") // both at once: real parallelism
	h.succeed("b")
	h.succeed("c")
	h.expect("d#1")
	h.succeed("d")
	r := wait(t, done)
	if r.result != store.Success || r.err != nil {
		t.Fatalf("result %s %v", r.result, r.err)
	}
	if h.peak != 2 {
		t.Errorf("peak parallelism %d, want 2", h.peak)
	}
}

func TestFailureInTheMiddle(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, `
a:
b: a
c: b
d: c
x:
y: x`, nil)
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, MaxParallel: 8})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1", "x#1")
	h.succeed("a")
	h.expect("b#1")
	h.fail("b")
	h.succeed("x")
	h.expect("y#1") // the independent branch still runs
	h.succeed("y")
	r := wait(t, done)
	if r.result != store.Failure {
		t.Fatalf("result %s, want FAILURE", r.result)
	}
	want := map[string]store.Result{"boot": store.Success, "a": store.Success, "b": store.Failure,
		"c": store.Skipped, "d": store.Skipped, "x": store.Success, "y": store.Success}
	for job, res := range want {
		if h.results[job] != res {
			t.Errorf("%s: %s, want %s", job, h.results[job], res)
		}
	}
	if h.reasons["c"] != "dependency b failed" || h.reasons["d"] != "dependency c was skipped" {
		t.Errorf("reasons: c %q, d %q", h.reasons["c"], h.reasons["d"])
	}
}

func TestSoftDependencyOrdersWhenSelected(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A soft dependency that is selected orders its dependent, and its
	// failure skips it, as in Zuul.
	p := plan(t, `
base:
svc: base~soft`, nil)
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, MaxParallel: 8})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("base#1")
	h.end("base") <- scheduler.Outcome{TimedOut: true}
	r := wait(t, done)
	if h.results["base"] != store.TimedOut || h.results["svc"] != store.Skipped || h.reasons["svc"] != "dependency base timed out" {
		t.Fatalf("results %v reasons %v", h.results, h.reasons)
	}
	if r.result != store.Failure {
		t.Fatalf("result %s", r.result)
	}
}

func TestMaxParallel(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:\nb:\nc:\nd:\ne:", nil)
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, MaxParallel: 2})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1", "b#1")
	h.succeed("a")
	h.expectInOrder("c#1")
	h.succeed("b", "c")
	h.expect("d#1", "e#1")
	h.succeed("d", "e")
	wait(t, done)
	if h.peak != 2 {
		t.Errorf("peak %d, want 2", h.peak)
	}
}

func TestSemaphores(t *testing.T) {
	for _, max := range []int{1, 2} {
		t.Run(fmt.Sprint("max", max), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			p := plan(t, "a:\nb:\nc:\nd:\nfree:", nil)
			jobs := map[string]scheduler.JobSpec{}
			for _, j := range []string{"a", "b", "c", "d"} {
				jobs[j] = scheduler.JobSpec{Semaphores: map[string]int{"playbook": max}}
			}
			done := h.start(context.Background(), &scheduler.Loop{Plan: p, Jobs: jobs, MaxParallel: 8})
			h.expect("boot#1")
			h.succeed("boot")
			if max == 1 {
				h.expect("free#1", "a#1") // the job without a semaphore is not held up
				h.succeed("a")
				h.expect("b#1")
				h.succeed("b")
				h.expect("c#1")
				h.succeed("c")
			} else {
				h.expect("free#1", "a#1", "b#1")
				h.succeed("a")
				h.expect("c#1")
				h.succeed("b")
				h.expect("d#1")
				h.succeed("c")
			}
			h.succeed("free")
			if max == 1 {
				h.expect("d#1")
			}
			h.succeed("d")
			if r := wait(t, done); r.result != store.Success {
				t.Fatalf("result %s", r.result)
			}
			// Replay the acquire/release log: never more than max holders.
			holders := 0
			for _, e := range h.events {
				switch {
				case strings.HasPrefix(e, "acquire "):
					holders++
				case strings.HasPrefix(e, "release "):
					holders--
				}
				if holders > max {
					t.Fatalf("%d holders of a max-%d semaphore: %v", holders, max, h.events)
				}
			}
			if holders != 0 {
				t.Fatalf("%d holders left at the end", holders)
			}
		})
	}
}

func TestSemaphoresAllOrNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "ab:\na:\nb:", nil)
	jobs := map[string]scheduler.JobSpec{
		"ab": {Semaphores: map[string]int{"sa": 1, "sb": 1}},
		"a":  {Semaphores: map[string]int{"sa": 1}},
		"b":  {Semaphores: map[string]int{"sb": 1}},
	}
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, Jobs: jobs, MaxParallel: 8})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("ab#1") // takes both; a and b wait, holding nothing
	h.mu.Lock()
	if len(h.sems["sa"]) != 1 || len(h.sems["sb"]) != 1 {
		t.Errorf("holders %v", h.sems)
	}
	h.mu.Unlock()
	h.succeed("ab")
	h.expect("a#1", "b#1")
	h.succeed("a", "b")
	wait(t, done)
}

func TestPriorityByCriticalPath(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, `
short:
long1:
long2: long1
mid1:
mid2: mid1`, map[string]string{"short": "1m", "long1": "10m", "long2": "10m", "mid1": "5m", "mid2": "5m"})
	cfgless := map[string]time.Duration{"short": time.Minute, "long1": 20 * time.Minute, "long2": 10 * time.Minute,
		"mid1": 9 * time.Minute, "mid2": 5 * time.Minute, "boot": 21 * time.Minute}
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, MaxParallel: 1, Remaining: cfgless})
	h.expect("boot#1")
	h.succeed("boot")
	// One slot: the longest remaining path goes first, then the next.
	h.expectInOrder("long1#1")
	h.succeed("long1")
	h.expectInOrder("long2#1")
	h.succeed("long2")
	h.expectInOrder("mid1#1")
	h.succeed("mid1")
	h.expectInOrder("mid2#1")
	h.succeed("mid2")
	h.expectInOrder("short#1")
	h.succeed("short")
	wait(t, done)
}

func TestRetriesThenRetryLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:\nb: a", nil)
	jobs := map[string]scheduler.JobSpec{"boot": {Attempts: 2}, "a": {Attempts: 3, Semaphores: map[string]int{"s": 1}}}
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, Jobs: jobs, MaxParallel: 8})
	h.expect("boot#1")
	h.end("boot") <- scheduler.Outcome{Infra: errors.New("ssh: connection refused")}
	h.expect("boot#2")
	h.succeed("boot")
	for n := 1; n <= 3; n++ {
		h.expect(fmt.Sprintf("a#%d", n))
		h.end("a") <- scheduler.Outcome{Infra: errors.New("ssh: connection refused")}
	}
	r := wait(t, done)
	if h.results["a"] != store.RetryLimit || h.results["b"] != store.Skipped {
		t.Fatalf("results %v", h.results)
	}
	if !strings.Contains(h.reasons["a"], "connection refused (attempt 3 of 3)") {
		t.Errorf("reason %q", h.reasons["a"])
	}
	if r.result != store.Failure {
		t.Errorf("result %s", r.result)
	}
	// The semaphore was held once across the retries and released once.
	if n := strings.Count(strings.Join(h.events, "\n"), "acquire bs/a"); n != 1 {
		t.Errorf("acquired %d times: %v", n, h.events)
	}
	if len(h.sems["s"]) != 0 {
		t.Errorf("semaphore leaked: %v", h.sems)
	}
}

func TestCommandFailureIsNotRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:", nil)
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, Jobs: map[string]scheduler.JobSpec{"a": {Attempts: 3}}, MaxParallel: 8})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	h.fail("a")
	wait(t, done)
	if h.results["a"] != store.Failure || h.reasons["a"] != "exit status 2" {
		t.Fatalf("%v %v", h.results, h.reasons)
	}
}

// Cancelling the whole buildset makes every build that has not started
// CANCELED, whatever it waited for: the dependent of a running job (c) and
// of a job waiting for a semaphore (d) end alike. The outcome does not
// depend on how far the builds had got.
func TestCancel(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:\nb:\nc: a\nlocked:\nd: locked", nil)
	jobs := map[string]scheduler.JobSpec{"locked": {Semaphores: map[string]int{"s": 1}}}
	h.sems["s"] = map[string]bool{"someone-else": true}
	ctx, cancel := context.WithCancelCause(context.Background())
	done := h.start(ctx, &scheduler.Loop{Plan: p, Jobs: jobs, MaxParallel: 8})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1", "b#1")
	cancel(scheduler.ErrCanceled)
	r := wait(t, done)
	if r.result != store.Canceled {
		t.Fatalf("result %s", r.result)
	}
	for _, j := range []string{"a", "b"} {
		if h.results[j] != store.Canceled || h.reasons[j] != "cancelled" {
			t.Errorf("running %s: %s %q, want CANCELED \"cancelled\"", j, h.results[j], h.reasons[j])
		}
	}
	for _, j := range []string{"c", "locked", "d"} {
		if h.results[j] != store.Canceled || h.reasons[j] != "buildset cancelled" {
			t.Errorf("not started %s: %s %q, want CANCELED \"buildset cancelled\"", j, h.results[j], h.reasons[j])
		}
	}
	if h.results["boot"] != store.Success {
		t.Errorf("boot: %s", h.results["boot"])
	}
	if !slices.Contains(h.events, "release bs/locked") {
		t.Errorf("the waiter on s was not withdrawn: %v", h.events)
	}
}

func TestDeadlockIsReported(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:\nb: a", nil)
	// Corrupt the frozen graph: b waits on a job that is not in it.
	p.Jobs[2].Dependencies = append(p.Jobs[2].Dependencies, "ghost")
	done := h.start(context.Background(), &scheduler.Loop{Plan: p, MaxParallel: 8})
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	h.succeed("a")
	r := wait(t, done)
	if r.result != store.Error || r.err == nil || !strings.Contains(r.err.Error(), "deadlock: nothing can run: b waits on [ghost]") {
		t.Fatalf("result %s err %v", r.result, r.err)
	}
	if h.results["b"] != store.Error {
		t.Errorf("b: %s", h.results["b"])
	}
}

func TestRetryDelayBacksOff(t *testing.T) {
	l := &scheduler.Loop{}
	got := []time.Duration{l.RetryDelay, 0, 0, 0, 0, 0, 0, 0}
	for i := range got {
		got[i] = scheduler.RetryDelayForTest(l, i+1)
	}
	want := []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute, time.Minute}
	if !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
}

// A cancel while a job waits to be retried ends it as cancelled at once.
func TestCancelWhileWaitingToRetry(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := plan(t, "a:", nil)
	ctx, cancel := context.WithCancel(context.Background())
	// An hour: the retry must not come by itself during the test.
	l := &scheduler.Loop{Plan: p, MaxParallel: 8, Jobs: map[string]scheduler.JobSpec{"a": {Attempts: 3}}, RetryDelay: time.Hour}
	done := h.start(ctx, l)
	h.expect("boot#1")
	h.succeed("boot")
	h.expect("a#1")
	h.end("a") <- scheduler.Outcome{Infra: errors.New("connection refused")}
	deadline := time.Now().Add(10 * time.Second)
	for {
		h.mu.Lock()
		waiting := slices.Contains(h.events, "attempt a#1 RETRY")
		h.mu.Unlock()
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the failed attempt was never recorded as retried")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	r := wait(t, done)
	if r.result != store.Canceled || h.results["a"] != store.Canceled || h.reasons["a"] != "cancelled while waiting to retry" {
		t.Fatalf("%s %v %v", r.result, h.results, h.reasons)
	}
}
