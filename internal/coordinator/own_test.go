package coordinator

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion/local"
	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
)

// runCoordinator starts a `sortie run`'s coordinator on the harness's
// store, state dir and bastion work dir, as a process of its own would
// have: its own owner, semaphore client and runner.
func (h *harness) runCoordinator() *Coordinator {
	t := h.t
	t.Helper()
	owner := NewOwner()
	b := local.New(filepath.Join(h.state, "bastion"))
	b.Owner, b.Untracked = owner, true
	r := *h.runner
	r.Bastion, r.Semaphores = b, &semaphore.Client{Store: h.st, Owner: owner}
	c, err := New(Options{
		Kind: store.OwnerRun, Store: h.st, Runner: &r, StateDir: h.state, Config: h.cfg.Load,
		Log: slog.New(slog.NewTextHandler(h.log, nil)), Tick: time.Hour,
	})
	if err != nil {
		t.Fatal(err)
	}
	c.TestSignals.Init()
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(context.Background()) })
	return c
}

// pinned makes a QUEUED buildset of pipeline pinned to run c.
func (h *harness) pinned(c *Coordinator, pipeline string) *store.Buildset {
	h.t.Helper()
	bs, err := c.opt.Runner.Create(h.t.Context(), h.cfg.Load(), buildset.Event{Pipeline: pipeline, PinnedTo: c.Owner()})
	if err != nil {
		h.t.Fatal(err)
	}
	return bs
}

// said collects what RunOwn says.
type said struct {
	mu    sync.Mutex
	lines []string
	ch    chan string
}

func newSaid() *said { return &said{ch: make(chan string, 16)} }

func (s *said) say(line string) {
	s.mu.Lock()
	s.lines = append(s.lines, line)
	s.mu.Unlock()
	s.ch <- line
}

// TestRunOwnTakesItsTurn: a `sortie run`'s buildset of a serial pipeline
// waits behind another run's, which is running, says so, and starts once
// that one has ended; a server's coordinator sharing the store never
// starts it, though its managers count it.
func TestRunOwnTakesItsTurn(t *testing.T) {
	h := newHarness(t, `
jobs:
  boot: {bootstrap: true, run: "true"}
  ok: {run: "true"}
pipelines:
  p: {manager: serial, jobs: [boot, ok]}
`)
	ctx := t.Context()
	first, second := h.runCoordinator(), h.runCoordinator()
	ahead := h.pinned(first, "p")
	if err := h.st.StartBuildset(ctx, store.StartBuildsetParams{ID: ahead.ID, Fence: first.opt.Runner.Semaphores.Fence(), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	mine := h.pinned(second, "p")
	// A server's managers, on the same store: they start neither.
	h.start()
	h.pass()
	for _, id := range []string{ahead.ID, mine.ID} {
		if bs := h.get(id); (id == mine.ID && bs.State != store.BuildsetQueued) || bs.Owner == h.c.Owner() {
			t.Errorf("%s after the server's pass: %s, owner %q", id, bs.State, bs.Owner)
		}
	}
	s := newSaid()
	type outcome struct {
		r   store.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		r, err := second.RunOwn(ctx, mine, RunOwnOptions{Say: s.say, Poll: 10 * time.Millisecond})
		done <- outcome{r, err}
	}()
	want := "waiting for buildset " + ahead.ID + " of pipeline p (RUNNING, serial manager) to finish"
	select {
	case line := <-s.ch:
		if line != want {
			t.Errorf("said %q, want %q", line, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RunOwn never said what it waits for")
	}
	if bs := h.get(mine.ID); bs.State != store.BuildsetQueued {
		t.Fatalf("started while the other ran: %s", bs.State)
	}
	if _, err := h.st.EndBuildset(ctx, store.EndBuildsetParams{ID: ahead.ID, Result: store.Success, BuildResult: store.Success,
		At: time.Now(), Fence: ptr(first.opt.Runner.Semaphores.Fence())}); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-done:
		if o.r != store.Success || o.err != nil {
			t.Errorf("RunOwn: %s %v, want SUCCESS", o.r, o.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RunOwn did not run once the other had ended")
	}
	if bs := h.get(mine.ID); bs.Owner != second.Owner() || bs.Result != store.Success {
		t.Errorf("the run's buildset: owner %s result %s, want %s SUCCESS", bs.Owner, bs.Result, second.Owner())
	}
}

// TestRunOwnAlone: with no server alive, a QUEUED buildset left for the
// managers is not waited for (nobody would start it), and a run's
// buildset cancelled while it waits for its turn ends CANCELED, published
// once.
func TestRunOwnAlone(t *testing.T) {
	h := newHarness(t, `
jobs:
  boot: {bootstrap: true, run: "true"}
  ok: {run: "true"}
pipelines:
  p: {manager: serial, jobs: [boot, ok]}
`)
	ctx := t.Context()
	orphan := h.create("p") // a server's, and no server runs
	run := h.runCoordinator()
	bs := h.pinned(run, "p")
	if r, err := run.RunOwn(ctx, bs, RunOwnOptions{}); r != store.Success || err != nil {
		t.Fatalf("RunOwn with only a server's queued buildset before it: %s %v", r, err)
	}
	if got := h.get(orphan.ID); got.State != store.BuildsetQueued {
		t.Errorf("the server's buildset: %s, want left QUEUED", got.State)
	}

	// Behind a running one, cancelled while it waits.
	other := h.runCoordinator()
	ahead := h.pinned(other, "p")
	if err := h.st.StartBuildset(ctx, store.StartBuildsetParams{ID: ahead.ID, Fence: other.opt.Runner.Semaphores.Fence(), At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	waiting := h.pinned(run, "p")
	wctx, cancel := context.WithCancel(ctx)
	s := newSaid()
	done := make(chan store.Result, 1)
	go func() {
		r, _ := run.RunOwn(wctx, waiting, RunOwnOptions{Say: s.say, Poll: 10 * time.Millisecond})
		done <- r
	}()
	select {
	case line := <-s.ch:
		if !strings.Contains(line, ahead.ID) {
			t.Errorf("said %q, want it to name %s", line, ahead.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("RunOwn never said what it waits for")
	}
	cancel()
	if r := <-done; r != store.Canceled {
		t.Errorf("cancelled while waiting: %s", r)
	}
	if got := h.get(waiting.ID); got.State != store.BuildsetDone || got.Result != store.Canceled {
		t.Errorf("the cancelled buildset: %s %s", got.State, got.Result)
	}
	var ends []Ended
	for _, ev := range run.TestSignals.Ended.Pending() {
		if ev.Buildset == waiting.ID {
			ends = append(ends, ev)
		}
	}
	if len(ends) != 1 || ends[0].Result != store.Canceled {
		t.Errorf("Ended of the cancelled buildset: %+v, want one CANCELED", ends)
	}
}

func ptr[T any](v T) *T { return &v }
