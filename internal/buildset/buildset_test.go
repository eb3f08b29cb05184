package buildset_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/bastion/local"
	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/scheduler"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

// Runs start goroutines (lease watchers, attempts, the bastion's waits):
// none may outlive the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func setup(t *testing.T, yaml string) (*buildset.Runner, *config.Config) {
	t.Helper()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n"})
	cfg, err := config.Parse("sortie.yaml", []byte("source: {url: "+repo+"}\n"+yaml))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := sqlite.Open(context.Background(), filepath.Join(dir, "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	b := local.New(filepath.Join(dir, "bastion"))
	b.Owner = "run-test"
	sems := &semaphore.Client{Store: st, Owner: "run-test", Identity: store.RegisterOwnerParams{Kind: store.OwnerRun}}
	if err := sems.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sems.Stop)
	return &buildset.Runner{
		Store: st, Bastion: b, Semaphores: sems, Grace: time.Second,
		Mirror: &source.Mirror{Dir: filepath.Join(dir, "mirror.git"), URL: repo}, LogDir: filepath.Join(dir, "logs"),
	}, cfg
}

const twoJobs = `
jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: "exit 1", env: {COLOUR: blue}, secret_env: [TOKEN]}
  b: {run: "true", dependencies: [a]}
  c: {run: "true"}
pipelines:
  p: {jobs: [boot, a, b, c]}
`

// TestRunFailsWhole: a buildset that cannot run (here its frozen spec is
// unreadable) ends ERROR with every build ERROR and the reason, rather
// than leaving builds waiting forever.
func TestRunFailsWhole(t *testing.T) {
	r, cfg := setup(t, twoJobs)
	ctx := context.Background()
	bs, err := r.Create(ctx, cfg, buildset.Event{Pipeline: "p"})
	if err != nil {
		t.Fatal(err)
	}
	bs.Spec = []byte("{not json")
	res, err := r.Run(ctx, bs)
	if res != store.Error || err == nil {
		t.Fatalf("Run = %s, %v; want ERROR", res, err)
	}
	builds, err := r.Store.Builds(ctx, bs.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range builds {
		if b.State != store.BuildDone || b.Result != store.Error || !strings.Contains(b.Reason, "decode its spec") {
			t.Errorf("%s: %s %s %q, want DONE ERROR with the reason", b.Job, b.State, b.Result, b.Reason)
		}
	}
}

// TestSpecIsFrozen: the buildset runs the spec it was made with, whatever
// the config says later, and keeps no secret value.
func TestSpecIsFrozen(t *testing.T) {
	r, cfg := setup(t, twoJobs)
	r.Getenv = func(k string) string { return map[string]string{"TOKEN": "hunter2"}[k] }
	ctx := context.Background()
	bs, err := r.Create(ctx, cfg, buildset.Event{Pipeline: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(bs.Spec), "hunter2") {
		t.Fatalf("the spec holds a secret value: %s", bs.Spec)
	}
	spec, err := buildset.SpecOf(bs)
	if err != nil {
		t.Fatal(err)
	}
	if a := spec.Jobs["a"]; a.Command != "exit 1" || a.Env["COLOUR"] != "blue" || a.SecretEnv[0] != "TOKEN" || a.Attempts != 3 {
		t.Errorf("frozen a = %+v", a)
	}
	// The config changes after the buildset was made: a now succeeds.
	cfg.Jobs["a"].Run = "true"
	res, err := r.Run(ctx, bs)
	if err != nil {
		t.Fatal(err)
	}
	if res != store.Failure {
		t.Errorf("result %s, want FAILURE: the frozen a fails", res)
	}
}

// TestRerun: a re-run runs the bootstrap job, the jobs that did not
// succeed and those below them, at the same commit, linked to the first.
func TestRerun(t *testing.T) {
	r, cfg := setup(t, twoJobs)
	ctx := context.Background()
	first, err := r.Create(ctx, cfg, buildset.Event{Pipeline: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Rerun(ctx, first.ID, "too early"); err == nil {
		t.Error("re-run of an unfinished buildset accepted")
	}
	r.Getenv = func(k string) string { return "x" }
	if res, _ := r.Run(ctx, first); res != store.Failure {
		t.Fatalf("first run: %s", res)
	}
	again, err := r.Rerun(ctx, first.ID, "by test")
	if err != nil {
		t.Fatal(err)
	}
	if again.RerunOf != first.ID || again.Commit != first.Commit {
		t.Errorf("re-run: rerun_of %q commit %s, want %s at %s", again.RerunOf, again.Commit, first.ID, first.Commit)
	}
	builds, _ := r.Store.Builds(ctx, again.ID)
	var names []string
	for _, b := range builds {
		names = append(names, b.Job)
	}
	if strings.Join(names, " ") != "boot a b" {
		t.Errorf("re-run jobs %v, want [boot a b] (c succeeded)", names)
	}
	spec, _ := buildset.SpecOf(again)
	if _, ok := spec.Jobs["c"]; ok || len(spec.Jobs) != 3 {
		t.Errorf("re-run spec jobs %v", spec.Jobs)
	}
}

// cancelOnStart cancels the buildset's context the moment it is started
// in the store: the window where a cancel sees it RUNNING before any
// build has begun.
type cancelOnStart struct {
	cancel context.CancelCauseFunc
}

func (o cancelOnStart) BuildsetStarted(*store.Buildset, *graph.Plan) {
	o.cancel(scheduler.ErrCanceled)
}
func (cancelOnStart) AttemptStarted(string, int, time.Time)                 {}
func (cancelOnStart) BuildFinished(string, store.Result, string, time.Time) {}

// TestCancelRightAfterStart: a buildset cancelled once it is RUNNING but
// before its first build starts ends CANCELED, every build CANCELED, not
// ERROR (its history estimate was read with the cancelled context).
func TestCancelRightAfterStart(t *testing.T) {
	r, cfg := setup(t, twoJobs)
	bs, err := r.Create(context.Background(), cfg, buildset.Event{Pipeline: "p"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	r.Observer = cancelOnStart{cancel: cancel}
	res, err := r.Run(ctx, bs)
	if res != store.Canceled || err != nil {
		t.Fatalf("Run = %s, %v; want CANCELED", res, err)
	}
	got, err := r.Store.GetBuildset(context.Background(), bs.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Result != store.Canceled {
		t.Errorf("the store says %s (%s), want CANCELED", got.Result, got.Error)
	}
	builds, err := r.Store.Builds(context.Background(), bs.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range builds {
		if b.Result != store.Canceled {
			t.Errorf("%s: %s %q, want CANCELED", b.Job, b.Result, b.Reason)
		}
	}
}
