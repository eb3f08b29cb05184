package storetest

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/sortie-ci/sortie/internal/store"
)

// testWriteBuilds: WriteBuilds makes every write of a batch or, when one
// fails, none of them, and returns that one's error as its own method
// would.
func testWriteBuilds(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "base", "web", "db", "cache")
	f := own(t, s, "p1")
	start := func(job string, n int, d time.Duration) store.BuildWrite {
		return store.BuildWrite{Start: &store.StartAttemptParams{
			Attempt: &store.Attempt{BuildsetID: "bs1", Job: job, Number: n, Owner: "p1", StartedAt: at(d), Log: job + ".log"}, Fence: f}}
	}
	finishAttempt := func(job string, n int, res store.Result, d time.Duration) store.BuildWrite {
		return store.BuildWrite{FinishAttempt: &store.FinishAttemptParams{BuildsetID: "bs1", Job: job, Number: n, Result: res, At: at(d), Fence: f}}
	}
	finishBuild := func(job string, res store.Result, d time.Duration) store.BuildWrite {
		return store.BuildWrite{FinishBuild: &store.FinishBuildParams{BuildsetID: "bs1", Job: job, Result: res, At: at(d), Fence: f}}
	}
	must(t, "start base", s.WriteBuilds(ctx, []store.BuildWrite{start("base", 1, time.Second)}))
	// A build's end, then the start of the next, in one batch.
	must(t, "end base, start web and db", s.WriteBuilds(ctx, []store.BuildWrite{
		finishAttempt("base", 1, store.Success, 2*time.Second), finishBuild("base", store.Success, 2*time.Second),
		start("web", 1, 3*time.Second), start("db", 1, 3*time.Second),
	}))
	diff(t, "base", &store.Build{BuildsetID: "bs1", Job: "base", State: store.BuildDone, Result: store.Success, Attempt: 1,
		StartedAt: ptr(at(time.Second)), FinishedAt: ptr(at(2 * time.Second)), Log: "base.log"}, build(t, s, "bs1", "base"))
	diff(t, "web", &store.Build{BuildsetID: "bs1", Job: "web", State: store.BuildRunning, Attempt: 1,
		StartedAt: ptr(at(3 * time.Second)), Log: "web.log"}, build(t, s, "bs1", "web"))
	atts, err := s.Attempts(ctx, "bs1", "base")
	must(t, "attempts of base", err)
	if len(atts) != 1 || atts[0].Result != store.Success || atts[0].FinishedAt == nil || !atts[0].FinishedAt.Equal(at(2*time.Second)) {
		t.Errorf("attempt of base: %+v", atts)
	}
	// An attempt's end alone (a retry to come), and a build that never
	// started, skipped.
	must(t, "retry web, skip cache", s.WriteBuilds(ctx, []store.BuildWrite{
		finishAttempt("web", 1, store.Retry, 4*time.Second), finishBuild("cache", store.Skipped, 4*time.Second),
	}))
	if b := build(t, s, "bs1", "cache"); b.State != store.BuildDone || b.Result != store.Skipped || b.FinishedAt != nil {
		t.Errorf("a skipped build: %+v (never started: no times)", b)
	}

	// The third write fails: none of the three is made, and its error says
	// which it was and why.
	err = s.WriteBuilds(ctx, []store.BuildWrite{
		finishAttempt("db", 1, store.Success, 5*time.Second), finishBuild("db", store.Success, 5*time.Second),
		start("base", 2, 5*time.Second), // base is DONE
	})
	wantErr(t, "a batch with a start of a DONE build", err, store.ErrConflict)
	if !strings.Contains(err.Error(), "bs1/base #2") {
		t.Errorf("the error does not name the write that failed: %v", err)
	}
	if b := build(t, s, "bs1", "db"); b.State != store.BuildRunning {
		t.Errorf("db after a refused batch: %+v; want it RUNNING (all or nothing)", b)
	}
	if running, err := s.RunningAttempts(ctx, "bs1"); err != nil || len(running) != 1 || running[0].Job != "db" {
		t.Errorf("running attempts after a refused batch: %+v, %v; want db's alone", running, err)
	}
	// Each write's own refusals.
	wantErr(t, "an attempt finished twice", s.WriteBuilds(ctx, []store.BuildWrite{finishAttempt("web", 1, store.Success, 6*time.Second)}), store.ErrConflict)
	wantErr(t, "a build finished twice", s.WriteBuilds(ctx, []store.BuildWrite{finishBuild("base", store.Failure, 6*time.Second)}), store.ErrConflict)
	wantErr(t, "an unknown build", s.WriteBuilds(ctx, []store.BuildWrite{finishBuild("nope", store.Failure, 6*time.Second)}), store.ErrNotFound)
	wantErr(t, "an unknown attempt", s.WriteBuilds(ctx, []store.BuildWrite{
		finishAttempt("web", 7, store.Success, 6*time.Second), finishBuild("web", store.Success, 6*time.Second)}), store.ErrNotFound)
	wantErr(t, "an attempt started twice", s.WriteBuilds(ctx, []store.BuildWrite{start("db", 1, 6*time.Second)}), store.ErrConflict)

	// A fenced writer writes nothing.
	_, err = s.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{"p1"}, Force: true})
	must(t, "fence p1", err)
	wantErr(t, "a fenced batch", s.WriteBuilds(ctx, []store.BuildWrite{
		finishAttempt("db", 1, store.Success, 7*time.Second), finishBuild("db", store.Success, 7*time.Second),
	}), store.ErrFenced)
	if b := build(t, s, "bs1", "db"); b.State != store.BuildRunning {
		t.Errorf("db after a fenced batch: %+v", b)
	}
}

// testWriteBuildsFenced: each fence of a batch is checked by the first
// write that carries it, of any kind; a fenced owner's batch writes
// nothing, whatever the write its fence comes with, whatever else is wrong
// with that write, and whatever writes of a live owner come before it.
func testWriteBuildsFenced(t *testing.T, s store.Store) {
	ctx := t.Context()
	create(t, s, &store.Buildset{ID: "bs1", Pipeline: "deploy", Commit: "a", CreatedAt: t0}, "done", "running", "waiting")
	live, doomed := own(t, s, "live"), own(t, s, "doomed")
	start := func(f store.Fence, job string, n int) store.BuildWrite {
		return store.BuildWrite{Start: &store.StartAttemptParams{
			Attempt: &store.Attempt{BuildsetID: "bs1", Job: job, Number: n, Owner: f.Owner, StartedAt: at(time.Second), Log: job + ".log"}, Fence: f}}
	}
	finishAttempt := func(f store.Fence, job string, n int) store.BuildWrite {
		return store.BuildWrite{FinishAttempt: &store.FinishAttemptParams{BuildsetID: "bs1", Job: job, Number: n, Result: store.Success, At: at(2 * time.Second), Fence: f}}
	}
	finishBuild := func(f store.Fence, job string, res store.Result) store.BuildWrite {
		return store.BuildWrite{FinishBuild: &store.FinishBuildParams{BuildsetID: "bs1", Job: job, Result: res, At: at(2 * time.Second), Fence: f}}
	}
	// Two live fences in one batch: each checked, both written.
	must(t, "two owners' batch", s.WriteBuilds(ctx, []store.BuildWrite{
		start(live, "done", 1), start(doomed, "running", 1), finishAttempt(live, "done", 1), finishBuild(live, "done", store.Success),
	}))
	if b := build(t, s, "bs1", "done"); b.State != store.BuildDone {
		t.Fatalf("done after the two owners' batch: %+v", b)
	}
	if b := build(t, s, "bs1", "running"); b.State != store.BuildRunning || b.Attempt != 1 {
		t.Fatalf("running after the two owners' batch: %+v", b)
	}

	fence(t, s, "doomed")
	before := snapshot(t, s)
	for _, c := range []struct {
		name  string
		batch []store.BuildWrite
	}{
		{"a skipped build's end first", []store.BuildWrite{finishBuild(doomed, "waiting", store.Skipped)}},
		{"a start first", []store.BuildWrite{start(doomed, "waiting", 1), finishBuild(doomed, "waiting", store.Skipped)}},
		{"an attempt's end first", []store.BuildWrite{finishAttempt(doomed, "running", 1), finishBuild(doomed, "running", store.Success)}},
		{"the end of a DONE build", []store.BuildWrite{finishBuild(doomed, "done", store.Failure)}},
		{"the end of an unknown attempt", []store.BuildWrite{finishAttempt(doomed, "running", 7)}},
		{"the start of an unknown build", []store.BuildWrite{start(doomed, "nope", 1)}},
		{"after a live owner's writes", []store.BuildWrite{
			start(live, "waiting", 1), finishAttempt(live, "waiting", 1), finishBuild(doomed, "running", store.Success)}},
		{"after a live owner's writes, of the same build", []store.BuildWrite{
			finishAttempt(live, "running", 1), finishBuild(doomed, "running", store.Success)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantErr(t, c.name, s.WriteBuilds(ctx, c.batch), store.ErrFenced)
			diff(t, "the store after a fenced batch", before, snapshot(t, s), cmpopts.EquateEmpty())
		})
	}
}
