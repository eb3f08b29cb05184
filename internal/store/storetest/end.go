package storetest

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/store"
)

// testEndBuildset: one EndBuildset ends what a buildset left unfinished,
// each by its kind, keeps what had finished, and drops the buildset's
// holders and waiters, not another's; a second one changes nothing.
func testEndBuildset(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "done", "running", "retrying", "waiting")
	create(t, s, &store.Buildset{ID: "other", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "base")
	must(t, "start bs1", s.StartBuildset(ctx, store.StartBuildsetParams{ID: "bs1", Fence: own(t, s, "dead"), At: at(time.Second)}))
	start := func(job string, n int) {
		t.Helper()
		must(t, "start "+job, s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{
			BuildsetID: "bs1", Job: job, Number: n, Owner: "dead", StartedAt: at(time.Duration(n) * time.Second)}, Fence: own(t, s, "dead")}))
	}
	start("done", 1)
	must(t, "finish done", s.FinishAttemptAndBuild(ctx,
		store.FinishAttemptParams{BuildsetID: "bs1", Job: "done", Number: 1, Result: store.Success, At: at(2 * time.Second), Fence: writer(t, s)},
		store.FinishBuildParams{BuildsetID: "bs1", Job: "done", Result: store.Success, At: at(2 * time.Second), Fence: writer(t, s)}))
	start("running", 1)
	// Between two attempts: RUNNING, with no attempt running.
	start("retrying", 1)
	must(t, "retry", s.FinishAttempt(ctx, store.FinishAttemptParams{BuildsetID: "bs1", Job: "retrying", Number: 1, Result: store.Retry, Error: "ssh: refused", At: at(2 * time.Second), Fence: writer(t, s)}))

	acquire(t, s, semaphore.Request{Holder: "bs1", Buildset: "bs1", Owner: "dead", Semaphores: map[string]int{"P": 1}, Since: t0, Now: t0}, true)
	acquire(t, s, semaphore.Request{Holder: "bs1/running", Buildset: "bs1", Owner: "dead", Semaphores: map[string]int{"S": 1}, Since: t0, Now: t0}, true)
	acquire(t, s, semaphore.Request{Holder: "other", Buildset: "other", Owner: "live", Semaphores: map[string]int{"P": 1}, Since: t0, Now: t0}, false)
	acquire(t, s, semaphore.Request{Holder: "bs1/waiting", Buildset: "bs1", Owner: "dead", Semaphores: map[string]int{"S": 1}, Since: t0, Now: t0}, false)

	why := "lost: the process that ran it died"
	end := at(time.Minute)
	ended, err := s.EndBuildset(ctx, store.EndBuildsetParams{
		ID: "bs1", Result: store.Error, Error: why,
		BuildResult: store.Canceled, StartedResult: store.Error, AttemptResult: store.Lost, Reason: why, At: end,
	})
	must(t, "end", err)
	if !ended {
		t.Fatal("end: not ended")
	}
	got := get(t, s, "bs1")
	if got.State != store.BuildsetDone || got.Result != store.Error || got.Error != why ||
		got.FinishedAt == nil || !got.FinishedAt.Equal(end) || got.Owner != "dead" {
		t.Errorf("buildset after end: %+v", got)
	}
	checkUTC(t, "FinishedAt", got.FinishedAt)
	builds, err := s.Builds(ctx, "bs1")
	must(t, "builds", err)
	diff(t, "builds after end", []*store.Build{
		{BuildsetID: "bs1", Job: "done", State: store.BuildDone, Result: store.Success, Attempt: 1,
			StartedAt: ptr(at(time.Second)), FinishedAt: ptr(at(2 * time.Second))},
		{BuildsetID: "bs1", Job: "running", State: store.BuildDone, Result: store.Error, Attempt: 1,
			StartedAt: ptr(at(time.Second)), FinishedAt: ptr(end), Reason: why},
		{BuildsetID: "bs1", Job: "retrying", State: store.BuildDone, Result: store.Error, Attempt: 1,
			StartedAt: ptr(at(time.Second)), FinishedAt: ptr(end), Reason: why},
		// Never started: null times.
		{BuildsetID: "bs1", Job: "waiting", State: store.BuildDone, Result: store.Canceled, Reason: why},
	}, builds)
	atts, err := s.Attempts(ctx, "bs1", "running")
	must(t, "attempts", err)
	diff(t, "the running attempt", []*store.Attempt{{BuildsetID: "bs1", Job: "running", Number: 1, Owner: "dead",
		StartedAt: at(time.Second), FinishedAt: ptr(end), Result: store.Lost, Error: why}}, atts)
	atts, err = s.Attempts(ctx, "bs1", "retrying")
	must(t, "attempts", err)
	if len(atts) != 1 || atts[0].Result != store.Retry {
		t.Errorf("an attempt finished before the end changed: %+v", atts)
	}
	diff(t, "holders after end", []string(nil), holding(t, s), cmpopts.EquateEmpty())
	diff(t, "waiters after end", []string{"P:other"}, waiting(t, s))

	// Ending it again changes nothing, not even a row of its left behind.
	acquire(t, s, semaphore.Request{Holder: "bs1/late", Buildset: "bs1", Owner: "dead", Semaphores: map[string]int{"L": 1}, Since: t0, Now: t0}, true)
	ended, err = s.EndBuildset(ctx, store.EndBuildsetParams{ID: "bs1", Result: store.Canceled, BuildResult: store.Canceled, At: at(time.Hour)})
	must(t, "end again", err)
	if ended {
		t.Error("end again: ended twice")
	}
	diff(t, "after a second end", got, get(t, s, "bs1"))
	diff(t, "holders after a second end", []string{"L:bs1/late"}, holding(t, s))
	if b := build(t, s, "other", "base"); b.State != store.BuildWaiting {
		t.Errorf("another buildset's build changed: %+v", b)
	}

	_, err = s.EndBuildset(ctx, store.EndBuildsetParams{ID: "other", BuildResult: store.Canceled})
	if err == nil {
		t.Error("end without a result: no error")
	}
	if got := get(t, s, "other"); got.State != store.BuildsetQueued {
		t.Errorf("a refused end changed the buildset: %+v", got)
	}
}

// testEndBuildsetDefaults: without StartedResult and AttemptResult, every
// unfinished build and running attempt gets BuildResult; a zero At leaves
// every time nil.
func testEndBuildsetDefaults(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "running", "waiting")
	must(t, "start", s.StartAttempt(ctx, store.StartAttemptParams{Attempt: &store.Attempt{
		BuildsetID: "bs1", Job: "running", Number: 1, Owner: "p", StartedAt: at(time.Second)}, Fence: own(t, s, "p")}))
	ended, err := s.EndBuildset(ctx, store.EndBuildsetParams{
		ID: "bs1", Result: store.Canceled, Error: "cancelled by alice", BuildResult: store.Canceled, Reason: "buildset cancelled",
	})
	must(t, "end", err)
	if !ended {
		t.Fatal("end: not ended")
	}
	if got := get(t, s, "bs1"); got.Result != store.Canceled || got.FinishedAt != nil {
		t.Errorf("buildset after end: %+v", got)
	}
	for _, job := range []string{"running", "waiting"} {
		if b := build(t, s, "bs1", job); b.Result != store.Canceled || b.FinishedAt != nil || b.Reason != "buildset cancelled" {
			t.Errorf("build %s after end: %+v", job, b)
		}
	}
	atts, err := s.Attempts(ctx, "bs1", "running")
	must(t, "attempts", err)
	if len(atts) != 1 || atts[0].Result != store.Canceled || atts[0].Error != "buildset cancelled" || atts[0].FinishedAt != nil {
		t.Errorf("attempt after end: %+v", atts)
	}
}

// testCreateSkipped: a buildset that selects no job is made DONE, SKIPPED,
// at once, keeping its plan; never seen QUEUED, never ended again.
func testCreateSkipped(t *testing.T, s store.Store) {
	ctx := t.Context()
	plan := []byte(`{"pipeline":"deploy","jobs":[]}`)
	bs := &store.Buildset{ID: "none", Pipeline: "deploy", Commit: "a", Files: []string{"docs/x.md"}, Plan: plan, CreatedAt: t0, FinishedAt: ptr(at(time.Second))}
	must(t, "create", s.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: bs, Skipped: "no job matched the changed files"}))
	got := get(t, s, "none")
	diff(t, "skipped", &store.Buildset{
		ID: "none", Pipeline: "deploy", Commit: "a", Files: []string{"docs/x.md"}, Plan: plan, State: store.BuildsetDone, Result: store.Skipped,
		Error: "no job matched the changed files", CreatedAt: t0, FinishedAt: ptr(at(time.Second)),
	}, got, ignoreSeq)
	builds, err := s.Builds(ctx, "none")
	must(t, "builds", err)
	diff(t, "builds", []*store.Build(nil), builds, cmpopts.EquateEmpty())
	active, err := s.ActiveBuildsets(ctx)
	must(t, "active", err)
	diff(t, "active", []string(nil), ids(active), cmpopts.EquateEmpty())
	ended, err := s.EndBuildset(ctx, store.EndBuildsetParams{ID: "none", Result: store.Canceled, BuildResult: store.Canceled})
	must(t, "end", err)
	if ended {
		t.Error("a skipped buildset was ended again")
	}
	for _, p := range []store.CreateBuildsetParams{
		{Buildset: &store.Buildset{ID: "jobs", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, Jobs: []string{"base"}, Skipped: "no job"},
		{Buildset: &store.Buildset{ID: "both", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, Skipped: "no job", ConfigError: "cycle"},
	} {
		if err := s.CreateBuildset(ctx, p); err == nil {
			t.Errorf("create %s: no error", p.Buildset.ID)
		}
		_, err = s.GetBuildset(ctx, p.Buildset.ID)
		wantErr(t, "a refused create", err, store.ErrNotFound)
	}
}

// testCreateConfigError: a buildset whose graph cannot be made is made DONE
// at once, never seen QUEUED.
func testCreateConfigError(t *testing.T, s store.Store) {
	ctx := t.Context()
	bs := &store.Buildset{ID: "bad", Pipeline: "hourly", Commit: "a", Plan: []byte("null"), CreatedAt: t0, FinishedAt: ptr(at(time.Second))}
	must(t, "create", s.CreateBuildset(ctx, store.CreateBuildsetParams{Buildset: bs, ConfigError: "service-zuul needs base"}))
	if bs.Seq == 0 {
		t.Error("Seq not set")
	}
	got := get(t, s, "bad")
	diff(t, "config error", &store.Buildset{
		ID: "bad", Pipeline: "hourly", Commit: "a", Plan: []byte("null"), State: store.BuildsetDone, Result: store.ConfigError,
		Error: "service-zuul needs base", CreatedAt: t0, FinishedAt: ptr(at(time.Second)),
	}, got, ignoreSeq)
	checkUTC(t, "FinishedAt", got.FinishedAt)
	active, err := s.ActiveBuildsets(ctx)
	must(t, "active", err)
	diff(t, "active", []string(nil), ids(active), cmpopts.EquateEmpty())
	ended, err := s.EndBuildset(ctx, store.EndBuildsetParams{ID: "bad", Result: store.Canceled, BuildResult: store.Canceled})
	must(t, "end", err)
	if ended {
		t.Error("a config error buildset was ended again")
	}

	err = s.CreateBuildset(ctx, store.CreateBuildsetParams{
		Buildset:    &store.Buildset{ID: "jobs", Pipeline: "hourly", Commit: "a", CreatedAt: t0},
		Jobs:        []string{"base"},
		ConfigError: "cycle",
	})
	if err == nil {
		t.Error("a config error with jobs: no error")
	}
	_, err = s.GetBuildset(ctx, "jobs")
	wantErr(t, "a refused create", err, store.ErrNotFound)
}
