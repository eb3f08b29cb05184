package buildset_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/store"
)

// TestFreshIsDecoded: the plan and spec that a Runner's Fresh hands to
// RunWith are those RunWith would decode from the buildset, for every
// pipeline of the infra example (semaphores, reporters, secrets, soft
// dependencies, playbooks, hints), with and without a file list and in
// check mode; and a buildset is handed over once, only to its own run.
func TestFreshIsDecoded(t *testing.T) {
	r, _ := setup(t, twoJobs)
	cfg, err := config.Load("../../examples/infra")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Source.URL = r.Mirror.URL
	r.Fresh = &buildset.Fresh{}
	ctx := context.Background()
	events := 0
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range cfg.Pipelines {
			if !yield(n) {
				return
			}
		}
	}) {
		for _, ev := range []buildset.Event{
			{Pipeline: name},
			{Pipeline: name, Files: []string{"playbooks/service-zuul.yaml", "inventory/service/group_vars/zuul.yaml"}},
			{Pipeline: name, Mode: buildset.Mode{Check: true, Limit: "zuul*"}},
		} {
			if ev.Mode.Check && ev.Mode.Allowed(name, cfg.Pipelines[name]) != nil {
				continue
			}
			bs, err := r.Create(ctx, cfg, ev)
			if err != nil {
				t.Fatalf("%s %v: %v", name, ev.Files, err)
			}
			if bs.State != store.BuildsetQueued {
				if plan, _ := r.Fresh.TakeFresh(bs.ID); plan != nil {
					t.Errorf("%s %v: a buildset made %s was kept for a run", name, ev.Files, bs.Result)
				}
				continue
			}
			events++
			plan, spec := r.Fresh.TakeFresh(bs.ID)
			if plan == nil || spec == nil {
				t.Fatalf("%s %v: nothing kept for buildset %s", name, ev.Files, bs.ID)
			}
			wantPlan, err := buildset.Plan(bs)
			if err != nil {
				t.Fatal(err)
			}
			wantSpec, err := buildset.SpecOf(bs)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(wantPlan, plan); d != "" {
				t.Errorf("%s %v: kept plan differs from the decoded one (-decoded +kept):\n%s", name, ev.Files, d)
			}
			if d := cmp.Diff(wantSpec, spec); d != "" {
				t.Errorf("%s %v: kept spec differs from the decoded one (-decoded +kept):\n%s", name, ev.Files, d)
			}
			if again, _ := r.Fresh.TakeFresh(bs.ID); again != nil {
				t.Errorf("%s: the plan was handed over twice", name)
			}
		}
	}
	if events < 4 {
		t.Fatalf("only %d buildsets compared", events)
	}
	// Only the last buildset made is kept, and only for its own ID.
	first, err := r.Create(ctx, cfg, buildset.Event{Pipeline: "deploy"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Create(ctx, cfg, buildset.Event{Pipeline: "deploy"}); err != nil {
		t.Fatal(err)
	}
	if plan, _ := r.Fresh.TakeFresh(first.ID); plan != nil {
		t.Error("an older buildset's plan was handed over")
	}
}

// estimates records what an EstimateObserver hears.
type estimates struct {
	remaining []map[string]time.Duration
}

func (*estimates) BuildsetStarted(*store.Buildset, *graph.Plan)          {}
func (*estimates) AttemptStarted(string, int, time.Time)                 {}
func (*estimates) BuildFinished(string, store.Result, string, time.Time) {}
func (e *estimates) Estimated(rem map[string]time.Duration)              { e.remaining = append(e.remaining, rem) }

// TestFreshPriorities: the jobs' priorities that a Runner's Fresh reads
// while it inserts the buildset are those of the jobs' history, as a run
// that reads them as it starts has them.
func TestFreshPriorities(t *testing.T) {
	r, cfg := setup(t, `
jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: "true"}
  b: {run: "true", dependencies: [a]}
  c: {run: "true"}
pipelines:
  p: {jobs: [boot, a, b, c]}
`)
	ctx := context.Background()
	obs := &estimates{}
	r.Observer = obs
	run := func() {
		t.Helper()
		bs, err := r.Create(ctx, cfg, buildset.Event{Pipeline: "p"})
		if err != nil {
			t.Fatal(err)
		}
		if res, err := r.Run(ctx, bs); res != store.Success || err != nil {
			t.Fatalf("Run = %s, %v", res, err)
		}
	}
	plan, err := graph.Select(cfg, "p", nil)
	if err != nil {
		t.Fatal(err)
	}
	// What the jobs' history gives each job's remaining path now.
	want := func() map[string]time.Duration {
		t.Helper()
		hist, err := r.Store.JobDurations(ctx, []string{"boot", "a", "b", "c"})
		if err != nil {
			t.Fatal(err)
		}
		if len(hist) != 4 {
			t.Fatalf("history of %d jobs, want 4: %v", len(hist), hist)
		}
		return plan.Remaining(func(job string) time.Duration { return hist[job] })
	}
	run() // the history: no estimate yet
	if len(obs.remaining) != 0 {
		t.Fatalf("estimated without history: %v", obs.remaining)
	}
	wantStarted := want()
	run() // read as the run starts
	wantFresh := want()
	r.Fresh = &buildset.Fresh{}
	run() // read beside the insert
	if len(obs.remaining) != 2 {
		t.Fatalf("%d estimates, want 2 (the runs with history)", len(obs.remaining))
	}
	if d := cmp.Diff(wantStarted, obs.remaining[0]); d != "" {
		t.Errorf("read as the run starts (-history +estimated):\n%s", d)
	}
	if d := cmp.Diff(wantFresh, obs.remaining[1]); d != "" {
		t.Errorf("read beside the insert (-history +estimated):\n%s", d)
	}
	if wantFresh["boot"] <= wantFresh["a"] || wantFresh["a"] <= wantFresh["b"] {
		t.Errorf("remaining paths %v do not follow the graph", wantFresh)
	}
}
