package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/trigger/triggertest"
)

// TestPoll: a pipeline polling its branch makes a buildset when the branch
// moves, with the files git says changed since the last success.
func TestPoll(t *testing.T) {
	clock := triggertest.NewClock(time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC))
	cfg := strings.Replace(pushConfig, "trigger: {push: {branch: main}}", "trigger: {push: {branch: main, poll: 1m}}", 1)
	e := start(t, cfg, envOpt{clock: clock})
	clock.WaitForWaiters(t, 1) // first poll done: the head is recorded, nothing made
	if n := e.count(); n != 0 {
		t.Fatalf("the first poll made %d buildsets; it should only record the head", n)
	}
	first := e.waitDone(e.trigger("deploy", nil))
	if first.Result != "SUCCESS" {
		t.Fatalf("first deploy: %s", first.Result)
	}
	os.WriteFile(filepath.Join(e.repo, "playbooks", "a.yaml"), []byte("changed\n"), 0o644)
	head := sourcetest.Commit(t, e.repo, "playbook")
	clock.Advance(time.Minute)
	clock.WaitForWaiters(t, 1) // polled, and waits for the next poll
	var got *BuildsetJSON
	waitFor(t, "a buildset for the new head", func() bool {
		code, out := e.do("GET", "/api/v1/buildsets?commit="+head, nil, "")
		var r struct{ Buildsets []*BuildsetJSON }
		json.Unmarshal(out, &r)
		if code == 200 && len(r.Buildsets) == 1 {
			got = r.Buildsets[0]
			return true
		}
		return false
	})
	bs := e.waitDone(got.ID)
	if !reflect.DeepEqual(bs.Files, []string{"playbooks/a.yaml"}) || !reflect.DeepEqual(jobs(bs), []string{"boot", "play"}) {
		t.Errorf("polled buildset: files %v jobs %v, want [playbooks/a.yaml] and [boot play]", bs.Files, jobs(bs))
	}
	if !strings.Contains(bs.Cause, "polling") {
		t.Errorf("cause %q", bs.Cause)
	}
	// Nothing moved: the next poll makes nothing.
	clock.Advance(time.Minute)
	clock.WaitForWaiters(t, 1)
	if n := e.count(); n != 2 {
		t.Errorf("%d buildsets after a poll that found nothing new, want 2", n)
	}
}

// TestGitLabWebhook: GitLab's shared token is checked; a wrong one is 401.
func TestGitLabWebhook(t *testing.T) {
	cfg := strings.Replace(pushConfig, "github: {secret_env: GH_SECRET}", "gitlab: {token_env: GL_TOKEN}", 1)
	e := start(t, cfg, envOpt{env: map[string]string{"GL_TOKEN": "gl-token"}})
	head := strings.TrimSpace(gitHead(t, e.repo))
	send := func(token string) (int, string) {
		body := fmt.Sprintf(`{"object_kind":"push","ref":"refs/heads/main","before":"%s","after":"%s","project":{"path_with_namespace":"ops/infra"}}`, strings.Repeat("0", 40), head)
		req, _ := http.NewRequest("POST", e.url+"/webhooks/gitlab", strings.NewReader(body))
		req.Header.Set("X-Gitlab-Event", "Push Hook")
		if token != "" {
			req.Header.Set("X-Gitlab-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out strings.Builder
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		out.Write(buf[:n])
		return resp.StatusCode, out.String()
	}
	for _, tok := range []string{"", "nope"} {
		if code, out := send(tok); code != http.StatusUnauthorized {
			t.Errorf("token %q: %d %s, want 401", tok, code, out)
		}
	}
	if n := e.count(); n != 0 {
		t.Fatalf("refused deliveries made %d buildsets", n)
	}
	code, out := send("gl-token")
	if code != http.StatusAccepted {
		t.Fatalf("good token: %d %s", code, out)
	}
	var r struct{ Buildsets []string }
	json.Unmarshal([]byte(out), &r)
	if len(r.Buildsets) != 1 {
		t.Fatalf("made %v", r.Buildsets)
	}
	bs := e.waitDone(r.Buildsets[0])
	if bs.Result != "SUCCESS" || bs.Commit != head || bs.Files != nil {
		t.Errorf("gitlab push: %s at %s files %v; want SUCCESS at %s with no file list (no earlier success)", bs.Result, bs.Commit, bs.Files, head)
	}
}

func gitHead(t *testing.T, repo string) string {
	t.Helper()
	out, err := os.ReadFile(filepath.Join(repo, ".git", "refs", "heads", "main"))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

// TestDeadRunDoesNotBlock: a buildset a `sortie run` process left RUNNING
// when it died (its lease gone) would hold up a serial pipeline for ever;
// the server ends it ERROR, and the next buildset runs.
func TestDeadRunDoesNotBlock(t *testing.T) {
	g := newGate(t)
	g.open(t)
	e := start(t, managerConfig(g, "serial"), envOpt{})
	ctx := t.Context()
	// Made by a sortie run, it is that run's to start (the server leaves
	// it alone); it started it and died.
	fence := registerRun(t, e, "run-gone", time.Now())
	bs, err := e.srv.opt.Runner.Create(ctx, e.srv.Config(), buildset.Event{Pipeline: "p", Cause: "a sortie run", PinnedTo: "run-gone"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.st.StartBuildset(ctx, store.StartBuildsetParams{ID: bs.ID, Fence: fence, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	next := e.trigger("p", nil)
	// It dies: fenced, as a reaper fences an owner whose lease ran out,
	// then a round of the reaper, by hand.
	if _, err := e.srv.st.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{"run-gone"}, Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Coordinator().Reap(ctx); err != nil {
		t.Fatal(err)
	}
	dead := e.waitDone(bs.ID)
	if dead.Result != "ERROR" || !strings.Contains(dead.Error, "run-gone") {
		t.Errorf("dead run's buildset: %s %q", dead.Result, dead.Error)
	}
	if r := e.waitDone(next).Result; r != "SUCCESS" {
		t.Errorf("the buildset queued behind it: %s", r)
	}
}

// registerRun registers a `sortie run` owner id with a lease of a minute
// from at, and returns its fence: at an hour ago, it is dead.
func registerRun(t *testing.T, e *env, id string, at time.Time) store.Fence {
	t.Helper()
	fence, err := e.srv.st.RegisterOwner(t.Context(), store.RegisterOwnerParams{ID: id, Kind: store.OwnerRun, Lease: time.Minute, Now: at})
	if err != nil {
		t.Fatal(err)
	}
	return fence
}

// TestRunsBuildsetLeftAlone: a buildset a live `sortie run` has just made
// (QUEUED, owned by the run) is the run's to start: the server's managers
// count it as running for its serial pipeline and never start it, so a
// buildset triggered after it waits. Once the run has ended it, the next
// one goes; and a run that dies before starting its buildset has it ended
// for it.
func TestRunsBuildsetLeftAlone(t *testing.T) {
	g := newGate(t)
	g.open(t)
	e := start(t, managerConfig(g, "serial"), envOpt{})
	ctx := t.Context()
	registerRun(t, e, "run-alive", time.Now())
	mine, err := e.srv.opt.Runner.Create(ctx, e.srv.Config(), buildset.Event{Pipeline: "p", Cause: "a sortie run", PinnedTo: "run-alive"})
	if err != nil {
		t.Fatal(err)
	}
	next := e.trigger("p", nil)
	stillQueued(t, e, mine.ID, next)
	// The run finishes its buildset (here: ends it as a run would on a
	// cancel); the server's goes on.
	if _, err := e.srv.st.EndBuildset(ctx, store.EndBuildsetParams{ID: mine.ID, Result: store.Canceled, BuildResult: store.Canceled, Reason: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if r := e.waitDone(next).Result; r != "SUCCESS" {
		t.Errorf("the server's buildset after the run's: %s", r)
	}

	// A run that died before it started its buildset: ended for it.
	// (Made before the run's row, so that the reaper's own rounds cannot
	// take the run away before it has a buildset.)
	orphan, err := e.srv.opt.Runner.Create(ctx, e.srv.Config(), buildset.Event{Pipeline: "p", Cause: "a sortie run", PinnedTo: "run-dead"})
	if err != nil {
		t.Fatal(err)
	}
	registerRun(t, e, "run-dead", time.Now().Add(-time.Hour))
	if err := e.srv.Coordinator().Reap(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.waitDone(orphan.ID); got.Result != "ERROR" || !strings.Contains(got.Error, "run-dead") {
		t.Errorf("the dead run's queued buildset: %s %q", got.Result, got.Error)
	}
}

// TestConcurrentReloads: reloads racing each other (SIGHUP and the API)
// leave exactly one set of triggers running, which shutdown stops.
func TestConcurrentReloads(t *testing.T) {
	clock := triggertest.NewClock(time.Date(2026, 1, 2, 10, 0, 0, 0, time.UTC))
	cfg := strings.Replace(pushConfig, "trigger: {push: {branch: main}}", "trigger: {push: {branch: main, poll: 1m}, cron: \"0 * * * *\"}", 1)
	e := start(t, cfg, envOpt{clock: clock})
	clock.WaitForWaiters(t, 2) // the poller and the timer
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.srv.Reload()
		}()
	}
	wg.Wait()
	// A set of triggers whose cancel was lost would never stop: shutdown
	// waits for every trigger goroutine.
	stopped := make(chan struct{})
	go func() {
		e.stop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(20 * time.Second):
		t.Fatal("the server did not stop: a trigger was left running")
	}
}
