package coordinator

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/store"
)

// endsConfig has a pipeline per way a buildset ends; gone is left out
// when withGone is false (its pipeline leaves the config).
func endsConfig(g gate, withGone bool) string {
	cfg := fmt.Sprintf(`
semaphores: {bridge: 1}
jobs:
  boot: {bootstrap: true, run: "true"}
  ok: {run: "true"}
  held: {run: '%s'}
  a: {run: "true"}
  b: {run: "true", dependencies: [a]}
pipelines:
  ind:  {manager: independent, jobs: [boot, ok]}
  slow: {manager: independent, semaphore: bridge, jobs: [boot, held]}
  wait: {manager: independent, semaphore: bridge, jobs: [boot, ok]}
  sup:  {manager: supercedent, jobs: [boot, ok]}
  coal: {manager: coalesce, jobs: [boot, ok]}
  ser:  {manager: serial, jobs: [boot, ok]}
  bad:  {jobs: [boot, b]}
`, g.wait())
	if withGone {
		cfg += "  gone: {manager: serial, jobs: [boot, ok]}\n"
	}
	return cfg
}

// TestEndedOncePerPath: every way a buildset ends that the coordinator
// sees publishes exactly one Ended event, with the result the store has:
// a run's end (success, cancelled while running), a run cancelled while
// it waited for its pipeline semaphore, a queued buildset superseded,
// coalesced, cancelled or whose pipeline left the config, the buildset a
// coalesce made, a buildset made with a config error, and a dead `sortie
// run`'s buildset reaped.
func TestEndedOncePerPath(t *testing.T) {
	g := newGate(t)
	h := newHarness(t, endsConfig(g, true))
	ctx := t.Context()
	sub := h.c.Ended()
	defer sub.Close()
	h.start()
	seen := map[string][]Ended{}
	want := map[string]store.Result{}
	expect := func(id string, r store.Result) {
		t.Helper()
		want[id] = r
		if ev := h.waitEnded(id, seen); ev.Result != r {
			t.Errorf("%s ended %s, want %s", id, ev.Result, r)
		}
	}

	// A run's end.
	expect(h.submit("ind").ID, store.Success)

	// A run cancelled while it waits for its pipeline semaphore, which
	// slow holds; then slow, cancelled while its job runs.
	slow := h.submit("slow")
	waitFor(t, "slow to hold bridge", func() bool {
		hs, err := h.st.Holders(ctx)
		return err == nil && slices.ContainsFunc(hs, func(x store.Holder) bool { return x.Buildset == slow.ID })
	})
	waiting := h.submit("wait")
	waitSignal(t, "wait's run", &h.c.TestSignals.Launched, waiting.ID)
	waitFor(t, "wait to wait for bridge", func() bool {
		ws, err := h.st.Waiters(ctx)
		return err == nil && slices.ContainsFunc(ws, func(x store.Waiter) bool { return x.Buildset == waiting.ID })
	})
	if err := h.c.Cancel(ctx, waiting.ID, "test"); err != nil {
		t.Fatal(err)
	}
	expect(waiting.ID, store.Canceled)
	if err := h.c.Cancel(ctx, slow.ID, "test"); err != nil {
		t.Fatal(err)
	}
	expect(slow.ID, store.Canceled)

	// Superseded: two queued while paused; the newest runs on resume.
	if err := h.c.SetPause(ctx, store.Pause{Pipeline: "sup", By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	older, newer := h.create("sup"), h.create("sup")
	h.pass()
	expect(older.ID, store.Canceled)
	if err := h.c.ClearPause(ctx, "sup"); err != nil {
		t.Fatal(err)
	}
	expect(newer.ID, store.Success)

	// Coalesced: two queued while paused merge into one on resume.
	if err := h.c.SetPause(ctx, store.Pause{Pipeline: "coal", By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	x, y := h.create("coal"), h.create("coal")
	if err := h.c.ClearPause(ctx, "coal"); err != nil {
		t.Fatal(err)
	}
	expect(x.ID, store.Canceled)
	expect(y.ID, store.Canceled)
	list, err := h.st.ListBuildsets(ctx, store.Filter{Pipeline: "coal"})
	if err != nil || len(list) != 3 {
		t.Fatalf("coal has %d buildsets (%v), want 3", len(list), err)
	}
	for _, bs := range list {
		if bs.ID != x.ID && bs.ID != y.ID {
			expect(bs.ID, store.Success) // the one the coalesce made
		}
	}

	// Cancelled while queued.
	if err := h.c.SetPause(ctx, store.Pause{Pipeline: "ser", By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	q := h.create("ser")
	if err := h.c.Cancel(ctx, q.ID, "test"); err != nil {
		t.Fatal(err)
	}
	expect(q.ID, store.Canceled)

	// Its pipeline left the config.
	if err := h.c.SetPause(ctx, store.Pause{Pipeline: "gone", By: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	gone := h.create("gone")
	h.setConfig(endsConfig(g, false))
	h.c.ConfigChanged()
	expect(gone.ID, store.Canceled)

	// Made with a config error.
	bad, err := h.c.Submit(ctx, buildset.Event{Pipeline: "bad"})
	var missing *graph.MissingDependencyError
	if bad == nil || !errors.As(err, &missing) {
		t.Fatalf("Submit(bad) = %v, %v; want a CONFIG_ERROR buildset", bad, err)
	}
	expect(bad.ID, store.ConfigError)

	// A dead sortie run's: its lease ran out before it started it. (Made
	// before the run's row, so that the reaper's own rounds cannot take
	// the run away before it has a buildset.)
	orphan, err := h.runner.Create(ctx, h.cfg.Load(), buildset.Event{Pipeline: "ind", PinnedTo: "o-dead1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "o-dead1", Kind: store.OwnerRun,
		Host: h.c.opt.Host, Lease: time.Second, Now: time.Now().Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := h.c.Reap(ctx); err != nil {
		t.Fatal(err)
	}
	expect(orphan.ID, store.Error)
	waitSignal(t, "the reap", &h.c.TestSignals.Reaped, orphan.ID)

	g.open(t) // nothing waits on it now; for a failing test's shutdown
	h.c.Stop(context.Background())
	got := map[string]int{}
	for _, ev := range sub.Take() {
		got[ev.Buildset]++
		bs := h.get(ev.Buildset)
		if ev.Result != bs.Result || ev.At.IsZero() || ev.Pipeline != bs.Pipeline {
			t.Errorf("event %+v; the store has %s %s of %s", ev, bs.State, bs.Result, bs.Pipeline)
		}
	}
	for id := range want {
		if got[id] != 1 {
			t.Errorf("%s (%s): %d Ended events, want 1", id, h.get(id).Pipeline, got[id])
		}
	}
	for id, n := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("%s (%s): %d Ended events, want none", id, h.get(id).Pipeline, n)
		}
	}
	if len(want) != 12 {
		t.Errorf("%d buildsets checked, want 12", len(want))
	}
}

// TestSubscription: a subscriber gets every event in order however late it
// reads, a closed one gets none, and publishing never waits.
func TestSubscription(t *testing.T) {
	var b broker
	early, closed := b.subscribe(), b.subscribe()
	closed.Close()
	closed.Close()
	for i := range 1000 {
		b.publish(Ended{Buildset: fmt.Sprint(i)})
	}
	late := b.subscribe()
	b.publish(Ended{Buildset: "last"})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for i := range 1000 {
		ev, err := early.Next(ctx)
		if err != nil || ev.Buildset != fmt.Sprint(i) {
			t.Fatalf("event %d: %+v %v", i, ev, err)
		}
	}
	if evs := early.Take(); len(evs) != 1 || evs[0].Buildset != "last" {
		t.Errorf("early's last: %+v", evs)
	}
	if evs := late.Take(); len(evs) != 1 || evs[0].Buildset != "last" {
		t.Errorf("late: %+v, want only the event after it subscribed", evs)
	}
	if evs := closed.Take(); len(evs) != 0 {
		t.Errorf("closed: %+v", evs)
	}
	done, cancelDone := context.WithCancel(t.Context())
	cancelDone()
	if _, err := late.Next(done); err == nil {
		t.Error("Next on an empty subscription with a done context returned no error")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
