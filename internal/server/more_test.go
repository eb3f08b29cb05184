package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/trigger/triggertest"
)

// waitFor polls cond until it holds or 30s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// marker is a file a job creates when its command starts.
type marker string

func newMarker(t *testing.T) marker { return marker(filepath.Join(t.TempDir(), "started")) }

// release opens g when the test ends, before the server stops, so that a
// failing test does not leave a job waiting through the shutdown.
func release(t *testing.T, g gate) {
	t.Cleanup(func() { os.WriteFile(string(g), nil, 0o644) })
}

func (m marker) touch() string { return fmt.Sprintf(`touch %q`, string(m)) }

func (m marker) wait(t *testing.T) {
	t.Helper()
	waitFor(t, "the job runs ("+string(m)+" exists)", func() bool {
		_, err := os.Stat(string(m))
		return err == nil
	})
}

// buildOf returns the build of job in bs, failing the test if there is none.
func buildOf(t *testing.T, bs *BuildsetJSON, job string) *buildset.BuildReport {
	t.Helper()
	for i := range bs.Builds {
		if bs.Builds[i].Job == job {
			return &bs.Builds[i]
		}
	}
	t.Fatalf("buildset %s has no build of %s: %v", bs.ID, job, jobs(bs))
	return nil
}

// list returns a pipeline's buildsets, newest first.
func (e *env) list(pipeline string) []*BuildsetJSON {
	e.t.Helper()
	code, out := e.do("GET", "/api/v1/buildsets?limit=500&pipeline="+pipeline, nil, "")
	if code != http.StatusOK {
		e.t.Fatalf("list: %d %s", code, out)
	}
	var r struct{ Buildsets []*BuildsetJSON }
	if err := json.Unmarshal(out, &r); err != nil {
		e.t.Fatal(err)
	}
	return r.Buildsets
}

func (e *env) pipelinesByName() map[string]PipelineJSON {
	e.t.Helper()
	code, out := e.do("GET", "/api/v1/pipelines", nil, "")
	if code != http.StatusOK {
		e.t.Fatalf("pipelines: %d %s", code, out)
	}
	var r struct{ Pipelines []PipelineJSON }
	if err := json.Unmarshal(out, &r); err != nil {
		e.t.Fatal(err)
	}
	m := map[string]PipelineJSON{}
	for _, p := range r.Pipelines {
		m[p.Name] = p
	}
	return m
}

func (e *env) post(path string, body any, want int) []byte {
	e.t.Helper()
	code, out := e.do("POST", path, body, testToken)
	if code != want {
		e.t.Fatalf("POST %s: %d %s, want %d", path, code, out, want)
	}
	return out
}

// restart stops the server and starts a new one on the same config and
// state dirs.
func (e *env) restart(opt envOpt) {
	e.t.Helper()
	e.stop()
	e.boot(opt)
}

// noneStarted fails unless no build of bs has started.
func noneStarted(t *testing.T, bs *BuildsetJSON) {
	t.Helper()
	for _, b := range bs.Builds {
		if b.StartedAt.Get() != nil || b.Attempt != 0 {
			t.Errorf("buildset %s: build %s started (attempt %d)", bs.ID, b.Job, b.Attempt)
		}
	}
}

const cronConfig = `
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: "true"}
pipelines:
  hourly:
    trigger: {cron: "0 * * * *"}
    jobs: [boot, work]
`

func at(h, m int) time.Time { return time.Date(2026, 1, 2, h, m, 30, 0, time.UTC) }

// TestCron: a cron pipeline fires once per tick of the (fake) clock.
func TestCron(t *testing.T) {
	clock := triggertest.NewClock(at(10, 7))
	e := start(t, cronConfig, envOpt{clock: clock})
	clock.WaitForWaiters(t, 1) // the timer waits for its first tick
	clock.Set(at(10, 59))
	clock.WaitForWaiters(t, 1) // it woke up, found nothing due, waits again
	if n := len(e.list("hourly")); n != 0 {
		t.Fatalf("%d buildsets before the first tick", n)
	}

	for i, now := range []time.Time{at(11, 0), at(12, 0)} {
		clock.Set(now)
		clock.WaitForWaiters(t, 1) // fired, and waits for the next tick
		list := e.list("hourly")
		if len(list) != i+1 {
			t.Fatalf("after the tick of %v: %d buildsets, want %d", now, len(list), i+1)
		}
		bs := list[0]
		if !strings.HasPrefix(bs.Cause, "cron") || strings.Contains(bs.Cause, "missed") {
			t.Errorf("cause = %q, want a plain cron tick", bs.Cause)
		}
		if r := e.waitDone(bs.ID).Result; r != "SUCCESS" {
			t.Errorf("cron buildset: %s", r)
		}
	}
}

// TestCronMissed: ticks missed while no server ran fire once at start,
// not once per tick; a restart with nothing missed fires nothing.
func TestCronMissed(t *testing.T) {
	clock := triggertest.NewClock(at(10, 7))
	opt := envOpt{clock: clock}
	e := start(t, cronConfig, opt)
	clock.WaitForWaiters(t, 1)
	clock.Set(at(11, 0))
	clock.WaitForWaiters(t, 1)
	if list := e.list("hourly"); len(list) != 1 {
		t.Fatalf("%d buildsets after the 11:00 tick, want 1", len(list))
	}

	e.stop()
	// Down over the ticks of 12:00, 13:00 and 14:00. Moving the clock also
	// fires the stopped timer's pending wait, which leaves none pending.
	clock.Set(at(14, 10))
	if n := clock.Waiters(); n != 0 {
		t.Fatalf("%d clock waiters with no server", n)
	}
	e.boot(opt)
	clock.WaitForWaiters(t, 1) // the catch-up fired before the timer waits
	list := e.list("hourly")
	if len(list) != 2 {
		for _, bs := range list {
			t.Logf("%s: %s", bs.ID, bs.Cause)
		}
		t.Fatalf("%d buildsets after a restart over 3 missed ticks, want 2 (one for the missed ticks)", len(list))
	}
	if c := list[0].Cause; !strings.HasPrefix(c, "cron") || !strings.Contains(c, "missed") || !strings.Contains(c, "14:00") {
		t.Errorf("catch-up cause = %q, want a cron tick of 14:00 missed", c)
	}
	if r := e.waitDone(list[0].ID).Result; r != "SUCCESS" {
		t.Errorf("catch-up buildset: %s", r)
	}

	// The catch-up was recorded: another restart at once fires nothing.
	e.restart(opt)
	clock.WaitForWaiters(t, 2) // the stopped timer's wait and the new one's
	if n := len(e.list("hourly")); n != 2 {
		t.Errorf("%d buildsets after a restart with no tick missed, want 2", n)
	}
}

const twoPipelines = `
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: "true"}
pipelines:
  p: {jobs: [boot, work]}
  q: {jobs: [boot, work]}
`

// decide runs one pass of the managers by hand, as each tick of their
// loop does: once it returns, what they decide on the queue as it stands
// (admit, supersede, coalesce) has been applied.
func (e *env) decide() {
	e.t.Helper()
	if err := e.srv.coord.Pass(e.t.Context()); err != nil {
		e.t.Fatalf("managers' pass: %v\n%s", err, e.logBuf)
	}
}

// waitRunEnded waits until the server no longer runs buildset id.
func (e *env) waitRunEnded(id string) {
	e.t.Helper()
	waitFor(e.t, "the server's run of "+id+" to end", func() bool { return !e.srv.coord.Running(id) })
}

// stillQueued checks that the buildsets stay QUEUED, with no build
// started, after a pass of the managers over the queue as it is now.
func stillQueued(t *testing.T, e *env, ids ...string) {
	t.Helper()
	e.decide()
	for _, id := range ids {
		bs := e.buildset(id)
		if bs.State != "QUEUED" {
			t.Errorf("%s is %s while paused, want QUEUED", id, bs.State)
		}
		noneStarted(t, bs)
	}
}

// TestPause: a paused pipeline queues its buildsets and runs them on
// resume; others go on.
func TestPause(t *testing.T) {
	e := start(t, twoPipelines, envOpt{})
	e.post("/api/v1/pause", map[string]any{"pipeline": "p", "reason": "maintenance", "by": "alice"}, http.StatusOK)
	pls := e.pipelinesByName()
	if pz := pls["p"].Paused; pz == nil || pz.By != "alice" || pz.Reason != "maintenance" {
		t.Fatalf("p paused = %+v, want by alice for maintenance", pz)
	}
	if pz := pls["q"].Paused; pz != nil {
		t.Errorf("q paused = %+v, want running", pz)
	}
	id := e.trigger("p", nil)
	other := e.trigger("q", nil)
	if r := e.waitDone(other).Result; r != "SUCCESS" {
		t.Errorf("q, not paused: %s", r)
	}
	stillQueued(t, e, id)
	if q := e.pipelinesByName()["p"].Queued; len(q) != 1 || q[0].ID != id {
		t.Errorf("p's queue = %+v, want %s", q, id)
	}
	// The pause is kept in the store: a restarted server is paused too.
	e.restart(envOpt{})
	if pz := e.pipelinesByName()["p"].Paused; pz == nil || pz.By != "alice" || pz.Reason != "maintenance" {
		t.Fatalf("p paused after a restart = %+v, want by alice for maintenance", pz)
	}
	stillQueued(t, e, id)
	e.post("/api/v1/resume", map[string]any{"pipeline": "p", "by": "alice"}, http.StatusOK)
	if r := e.waitDone(id).Result; r != "SUCCESS" {
		t.Errorf("after resume: %s", r)
	}
	if pz := e.pipelinesByName()["p"].Paused; pz != nil {
		t.Errorf("p still paused after resume: %+v", pz)
	}
}

// TestPauseAll: a pause with no pipeline holds every pipeline.
func TestPauseAll(t *testing.T) {
	e := start(t, twoPipelines, envOpt{})
	e.post("/api/v1/pause", map[string]any{"reason": "freeze", "by": "bob"}, http.StatusOK)
	_, out := e.do("GET", "/api/v1/status", nil, "")
	var st StatusJSON
	json.Unmarshal(out, &st)
	if st.Paused == nil || st.Paused.By != "bob" || st.Paused.Reason != "freeze" {
		t.Errorf("status paused = %+v, want by bob for freeze", st.Paused)
	}
	for name, pl := range e.pipelinesByName() {
		if pl.Paused == nil || pl.Paused.Reason != "freeze" {
			t.Errorf("%s paused = %+v, want the pause of all", name, pl.Paused)
		}
	}
	ids := []string{e.trigger("p", nil), e.trigger("q", nil)}
	stillQueued(t, e, ids...)
	e.post("/api/v1/resume", map[string]any{}, http.StatusOK)
	for _, id := range ids {
		if r := e.waitDone(id).Result; r != "SUCCESS" {
			t.Errorf("%s after resume: %s", id, r)
		}
	}
}

func chainConfig(m marker, g gate) string {
	return fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  hold: {run: '%s; %s'}
  next: {run: "true", dependencies: [hold]}
pipelines:
  p: {jobs: [boot, hold, next]}
`, m.touch(), g.wait())
}

// TestPauseWhileRunning: a pause lets the running builds finish and starts
// nothing after them until resume. Two builds run when the pause comes:
// hold, which next depends on, and late. hold ends first; late's end is
// recorded by the buildset's loop at a later turn than hold's, so once
// late has finished, the loop has had its turn to start next, paused.
func TestPauseWhileRunning(t *testing.T) {
	m, g := newMarker(t), newGate(t)
	lm, lg := marker(filepath.Join(t.TempDir(), "late")), gate(filepath.Join(t.TempDir(), "late-gate"))
	e := start(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  hold: {run: '%s; %s'}
  late: {run: '%s; %s'}
  next: {run: "true", dependencies: [hold]}
pipelines:
  p: {jobs: [boot, hold, late, next]}
`, m.touch(), g.wait(), lm.touch(), lg.wait()), envOpt{})
	release(t, g)
	release(t, lg)
	id := e.trigger("p", nil)
	m.wait(t)
	lm.wait(t)
	e.post("/api/v1/pause", map[string]any{"pipeline": "p", "reason": "look", "by": "carol"}, http.StatusOK)
	g.open(t)
	e.wait(id, "hold succeeded", func(b *BuildsetJSON) bool { return buildOf(t, b, "hold").Result == "SUCCESS" })
	lg.open(t)
	bs := e.wait(id, "late succeeded", func(b *BuildsetJSON) bool { return buildOf(t, b, "late").Result == "SUCCESS" })
	if bs.State != "RUNNING" {
		t.Errorf("buildset is %s while paused, want RUNNING", bs.State)
	}
	if n := buildOf(t, bs, "next"); n.StartedAt.Get() != nil || n.Result != "" {
		t.Fatalf("next started while paused: %s attempt %d", n.Result, n.Attempt)
	}
	e.post("/api/v1/resume", map[string]any{"pipeline": "p"}, http.StatusOK)
	bs = e.waitDone(id)
	if bs.Result != "SUCCESS" || buildOf(t, bs, "next").Result != "SUCCESS" {
		t.Errorf("after resume: %s, next %s", bs.Result, buildOf(t, bs, "next").Result)
	}
}

// TestRerun: a re-run runs the jobs that did not succeed (and the
// bootstrap job), at the same commit.
func TestRerun(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "flag")
	e := start(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  ok: {run: "true"}
  flaky: {run: 'test -e %q'}
  after: {run: "true", dependencies: [flaky]}
pipelines:
  p: {jobs: [boot, ok, flaky, after]}
`, flag), envOpt{})
	id := e.trigger("p", nil)
	old := e.waitDone(id)
	if old.Result != "FAILURE" || buildOf(t, old, "flaky").Result != "FAILURE" || buildOf(t, old, "after").Result != "SKIPPED" || buildOf(t, old, "ok").Result != "SUCCESS" {
		t.Fatalf("first run: %s; builds %+v", old.Result, old.Builds)
	}
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A newer commit must not be picked up by the rerun.
	os.WriteFile(filepath.Join(e.repo, "README"), []byte("v2\n"), 0o644)
	sourcetest.Commit(t, e.repo, "v2")

	var r struct{ Buildset string }
	json.Unmarshal(e.post("/api/v1/buildsets/"+id+"/rerun", map[string]any{"by": "dave"}, http.StatusAccepted), &r)
	if r.Buildset == "" || r.Buildset == id {
		t.Fatalf("rerun returned %q", r.Buildset)
	}
	nb := e.waitDone(r.Buildset)
	if nb.RerunOf != id {
		t.Errorf("rerun_of = %q, want %s", nb.RerunOf, id)
	}
	if nb.Commit != old.Commit {
		t.Errorf("rerun at %s, want the old commit %s", nb.Commit, old.Commit)
	}
	got := jobs(nb)
	slices.Sort(got)
	if want := []string{"after", "boot", "flaky"}; !slices.Equal(got, want) {
		t.Errorf("rerun jobs = %v, want %v", got, want)
	}
	if nb.Result != "SUCCESS" {
		t.Errorf("rerun: %s; builds %+v", nb.Result, nb.Builds)
	}
	if code, out := e.do("POST", "/api/v1/buildsets/"+nb.ID+"/rerun", nil, testToken); code != http.StatusConflict {
		t.Errorf("rerun of a successful buildset: %d %s, want 409", code, out)
	}
	if code, _ := e.do("POST", "/api/v1/buildsets/nosuch/rerun", nil, testToken); code != http.StatusNotFound {
		t.Errorf("rerun of an unknown buildset: %d, want 404", code)
	}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ event, data string }

// readSSE sends the events of body to ch, then closes it.
func readSSE(br *bufio.Reader, ch chan<- sseEvent) {
	defer close(ch)
	var ev sseEvent
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if ev != (sseEvent{}) {
				ch <- ev
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, "event:"):
			ev.event = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
		case strings.HasPrefix(line, "data:"):
			d := strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " ")
			if ev.data != "" {
				d = ev.data + "\n" + d
			}
			ev.data = d
		}
	}
}

// TestLogs: a log is served whole, and followed live as it is written,
// alike whether it is a file or chunks in the store.
func TestLogs(t *testing.T) { forEachLogKind(t, testLogs) }

func testLogs(t *testing.T, opt envOpt) {
	g := newGate(t)
	e := start(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  talk: {run: 'echo first-line; %s; echo second-line'}
pipelines:
  p: {jobs: [boot, talk]}
`, g.wait()), opt)
	release(t, g)
	id := e.trigger("p", nil)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/api/v1/buildsets/"+id+"/builds/talk/log?follow=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("follow: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan sseEvent, 100)
	go readSSE(bufio.NewReader(resp.Body), events)
	next := func() sseEvent {
		t.Helper()
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the event stream ended early")
			}
			return ev
		case <-time.After(30 * time.Second):
			t.Fatal("no event within 30s")
		}
		return sseEvent{}
	}
	// The first line arrives while the job still waits for its gate.
	ev := next()
	if ev.event != "" || !strings.HasSuffix(ev.data, "| first-line") {
		t.Fatalf("first event = %+v, want the first line", ev)
	}
	if bs := e.buildset(id); buildOf(t, bs, "talk").Result != "" {
		t.Fatalf("talk already finished: %s", buildOf(t, bs, "talk").Result)
	}
	g.open(t)
	if ev := next(); ev.event != "" || !strings.HasSuffix(ev.data, "| second-line") {
		t.Fatalf("second event = %+v, want the second line", ev)
	}
	if ev := next(); ev.event != "end" || ev.data != "SUCCESS" {
		t.Fatalf("last event = %+v, want end SUCCESS", ev)
	}
	select {
	case ev, ok := <-events:
		if ok {
			t.Errorf("event after the end: %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Error("the stream did not close after the end event")
	}

	e.waitDone(id)
	code, out := e.do("GET", "/api/v1/buildsets/"+id+"/builds/talk/log", nil, "")
	if code != 200 || !regexp.MustCompile(`(?s)^[^\n]* \| first-line\n[^\n]* \| second-line\n$`).Match(out) {
		t.Errorf("whole log: %d %q", code, out)
	}
	code, out = e.do("GET", "/api/v1/buildsets/"+id+"/builds/talk/log?tail=60", nil, "")
	if code != 200 || !regexp.MustCompile(`^[^\n]* \| second-line\n$`).Match(out) {
		t.Errorf("tail: %d %q, want the last line", code, out)
	}
}

// TestMetrics: finished buildsets and builds are counted.
func TestMetrics(t *testing.T) {
	e := start(t, strings.Replace(twoPipelines, `work: {run: "true"}`, `work: {run: "true", semaphores: [bridge]}`, 1)+"semaphores: {bridge: 1}\n", envOpt{})
	if r := e.waitDone(e.trigger("p", nil)).Result; r != "SUCCESS" {
		t.Fatalf("buildset: %s", r)
	}
	want := []string{
		`sortie_buildsets_total{pipeline="p",result="SUCCESS"} 1`,
		`sortie_builds_total{job="work",pipeline="p",result="SUCCESS"} 1`,
		`sortie_builds_total{job="boot",pipeline="p",result="SUCCESS"} 1`,
		// work's one grant of bridge, which nobody else wanted: no wait.
		`sortie_semaphore_wait_seconds_count{semaphore="bridge"} 1`,
		`sortie_semaphore_wait_seconds_bucket{semaphore="bridge",le="0.1"} 1`,
	}
	var text string
	waitFor(t, "the metrics count the buildset", func() bool {
		code, out := e.do("GET", "/metrics", nil, "")
		text = string(out)
		return code == 200 && strings.Contains(text, `sortie_buildsets_total{pipeline="p"`)
	})
	// Counted twice would show once the run is over: a shutdown waits for
	// it, and the registry is read after.
	e.stop()
	rec := httptest.NewRecorder()
	e.srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text = rec.Body.String()
	for _, w := range want {
		if !strings.Contains(text, w+"\n") {
			t.Errorf("metrics lack %s", w)
		}
	}
	if strings.Contains(text, `sortie_buildsets_total{pipeline="q"`) {
		t.Errorf("metrics count a buildset of q, which never ran")
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", grepLines(text, "sortie_"))
	}
}

func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestCancel: cancelling a running buildset ends its running build;
// cancelling a queued one starts nothing.
func TestCancel(t *testing.T) {
	m, g := newMarker(t), newGate(t)
	e := start(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  hold: {run: '%s; %s'}
pipelines:
  p: {manager: serial, jobs: [boot, hold]}
`, m.touch(), g.wait()), envOpt{})
	release(t, g)
	a := e.trigger("p", nil)
	m.wait(t)
	b := e.trigger("p", nil)
	stillQueued(t, e, b)

	e.post("/api/v1/buildsets/"+b+"/cancel", map[string]any{"by": "erin"}, http.StatusAccepted)
	bb := e.waitDone(b)
	if bb.Result != "CANCELED" {
		t.Errorf("queued buildset after cancel: %s", bb.Result)
	}
	noneStarted(t, bb)
	if st := e.buildset(a).State; st != "RUNNING" {
		t.Errorf("cancelling the queued one touched the running one: %s", st)
	}

	e.post("/api/v1/buildsets/"+a+"/cancel", nil, http.StatusAccepted)
	aa := e.waitDone(a)
	if aa.Result != "CANCELED" || buildOf(t, aa, "hold").Result != "CANCELED" {
		t.Errorf("running buildset after cancel: %s, hold %s", aa.Result, buildOf(t, aa, "hold").Result)
	}
	// The buildset is recorded DONE just before its run lets go of it;
	// until then a cancel still reaches the run (202).
	e.waitRunEnded(a)
	if code, _ := e.do("POST", "/api/v1/buildsets/"+a+"/cancel", nil, testToken); code != http.StatusConflict {
		t.Errorf("cancel of a finished buildset: %d, want 409", code)
	}
	if code, _ := e.do("POST", "/api/v1/buildsets/nosuch/cancel", nil, testToken); code != http.StatusNotFound {
		t.Errorf("cancel of an unknown buildset: %d, want 404", code)
	}
	// The pipeline goes on.
	g.open(t)
	if r := e.waitDone(e.trigger("p", nil)).Result; r != "SUCCESS" {
		t.Errorf("after the cancels: %s", r)
	}
}

// TestCancelBuild: cancelling one build skips its dependents; the others
// run on.
func TestCancelBuild(t *testing.T) {
	m, g := newMarker(t), newGate(t)
	e := start(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  hold: {run: '%s; %s'}
  next: {run: "true", dependencies: [hold]}
  other: {run: "true"}
pipelines:
  p: {jobs: [boot, hold, next, other]}
`, m.touch(), g.wait()), envOpt{})
	release(t, g)
	id := e.trigger("p", nil)
	m.wait(t)
	if code, _ := e.do("POST", "/api/v1/buildsets/"+id+"/builds/next/cancel", nil, testToken); code != http.StatusConflict {
		t.Errorf("cancel of a build not running: %d, want 409", code)
	}
	e.post("/api/v1/buildsets/"+id+"/builds/hold/cancel", nil, http.StatusAccepted)
	bs := e.waitDone(id)
	hold, next, other := buildOf(t, bs, "hold"), buildOf(t, bs, "next"), buildOf(t, bs, "other")
	if hold.Result != "CANCELED" {
		t.Errorf("hold: %s, want CANCELED", hold.Result)
	}
	if next.Result != "SKIPPED" || next.StartedAt.Get() != nil || !strings.Contains(next.Reason, "hold") {
		t.Errorf("next: %s (%q), want SKIPPED because of hold", next.Result, next.Reason)
	}
	if other.Result != "SUCCESS" {
		t.Errorf("other: %s, want SUCCESS", other.Result)
	}
	if bs.Result == "SUCCESS" {
		t.Errorf("buildset with a cancelled build: SUCCESS")
	}
}

// TestShutdownDrain: a shutdown lets the running build finish, starts
// nothing more, and the next server resumes the buildset.
func TestShutdownDrain(t *testing.T) {
	m, g := newMarker(t), newGate(t)
	opt := envOpt{grace: 30 * time.Second}
	e := start(t, chainConfig(m, g), opt)
	release(t, g)
	id := e.trigger("p", nil)
	m.wait(t)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		e.stop()
	}()
	waitFor(t, "the shutdown waits for running builds", func() bool {
		return strings.Contains(e.logBuf.String(), "waiting for running ones")
	})
	select {
	case <-stopped:
		t.Fatal("the server stopped while a build ran, within its grace")
	default:
	}
	// Had it not waited for the build, the buildset would not be left
	// for the next start (checked below) but fail on a closed store.
	g.open(t)
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("the server did not stop after its running build finished")
	}
	if !strings.Contains(e.logBuf.String(), "left unfinished, for the next server to claim it") ||
		!strings.Contains(e.logBuf.String(), "handed this server's buildsets over") {
		t.Errorf("the server did not leave the buildset, handed over, for the next start:\n%s", e.logBuf)
	}
	restarted := time.Now()
	e.boot(opt)
	bs := e.waitDone(id)
	if bs.Result != "SUCCESS" {
		t.Fatalf("resumed buildset: %s; builds %+v", bs.Result, bs.Builds)
	}
	hold, next := buildOf(t, bs, "hold"), buildOf(t, bs, "next")
	if hold.Attempt != 1 || !hold.FinishedAt.Get().Before(restarted) {
		t.Errorf("hold: attempt %d finished %v, want attempt 1 finished before the restart at %v", hold.Attempt, hold.FinishedAt.Get(), restarted)
	}
	if next.Result != "SUCCESS" || next.Attempt != 1 || next.StartedAt.Get().Before(restarted) {
		t.Errorf("next: %s attempt %d started %v, want SUCCESS, attempt 1, started after the restart at %v", next.Result, next.Attempt, next.StartedAt.Get(), restarted)
	}
}

// TestDeadHolderShown: the semaphores API says which holders belong to a
// process whose lease has run out. Here the dead owner's builds cannot be
// ended (its id is not one a bastion accepts, as when the bastion is
// unreachable), so the reaper keeps failing and the holder stays, marked.
func TestDeadHolderShown(t *testing.T) {
	e := start(t, "semaphores: {bridge: 2}\n"+twoPipelines, envOpt{})
	ctx := t.Context()
	now := time.Now()
	for _, owner := range []string{"run-dead!", "run-live"} {
		fence, err := e.srv.st.RegisterOwner(ctx, store.RegisterOwnerParams{ID: owner, Kind: store.OwnerRun, Lease: time.Hour, Now: now})
		if err != nil {
			t.Fatal(err)
		}
		holder := "held-by-" + owner
		ok, err := semaphore.TryAcquire(ctx, e.srv.st, semaphore.Request{Holder: holder, Buildset: holder, Owner: owner, Fence: fence,
			Semaphores: map[string]int{"bridge": 2}, Now: now})
		if !ok || err != nil {
			t.Fatalf("acquire for %s: %v %v", owner, ok, err)
		}
	}
	// run-dead! dies: fenced, as a reaper fences an owner whose lease ran
	// out.
	if _, err := e.srv.st.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{"run-dead!"}, Force: true}); err != nil {
		t.Fatal(err)
	}
	// A round of the reaper, by hand: it fails to end run-dead!'s builds,
	// and must leave its holder.
	if err := e.srv.Coordinator().Reap(ctx); err == nil {
		t.Error("the reaper ended the builds of an owner no bastion accepts")
	}
	_, out := e.do("GET", "/api/v1/semaphores", nil, "")
	var r struct{ Semaphores []SemaphoreJSON }
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatal(err)
	}
	dead := map[string]bool{}
	for _, sem := range r.Semaphores {
		for _, h := range sem.Holders {
			dead[h.Holder.Holder] = h.OwnerDead
		}
	}
	if want := map[string]bool{"held-by-run-dead!": true, "held-by-run-live": false}; !maps.Equal(dead, want) {
		t.Errorf("holders and owner_dead %v, want %v\n%s", dead, want, out)
	}
	if !regexp.MustCompile(`"owner_dead":\s*true`).Match(out) {
		t.Errorf("the JSON has no owner_dead field: %s", out)
	}
}

// TestMaxParallelAcrossBuildsets: limits.max_parallel bounds the builds
// running at once on the server's executor, across buildsets (SPEC §1),
// not in each: three buildsets of an independent pipeline, each with a
// job held by a gate, run two of those jobs at once and the third waits.
func TestMaxParallelAcrossBuildsets(t *testing.T) {
	g := newGate(t)
	e := start(t, "limits: {max_parallel: 2}\n"+managerConfig(g, "independent"), envOpt{})
	ids := []string{e.trigger("p", nil), e.trigger("p", nil), e.trigger("p", nil)}
	running := func() (n, waiting int) {
		for _, id := range ids {
			for _, b := range e.buildset(id).Builds {
				if b.Job != "work" {
					continue
				}
				switch {
				case b.Result == "" && b.StartedAt.Get() != nil:
					n++
				case b.Result == "":
					waiting++
				}
			}
		}
		return n, waiting
	}
	waitFor(t, "two of the three gated jobs running", func() bool { n, _ := running(); return n == 2 })
	// The two hold the executor's two slots, as the status says, so
	// nothing else can start until one ends (the pool itself is proved in
	// internal/scheduler): the third waits.
	if n, w := running(); n != 2 || w != 1 {
		t.Errorf("%d gated jobs running and %d waiting, want 2 and 1 (max_parallel 2 across buildsets)", n, w)
	}
	st, err := e.srv.Status(t.Context())
	if err != nil || st.Slots != (SlotsJSON{InUse: 2, Max: 2}) {
		t.Errorf("status slots %+v (%v), want 2 of 2 in use", st.Slots, err)
	}
	// What it waits for is a slot: a third one, by a reload, lets it run.
	e.writeConfig("limits: {max_parallel: 3}\n" + managerConfig(g, "independent"))
	e.post("/api/v1/reload", nil, http.StatusOK)
	waitFor(t, "the third gated job running once there are three slots", func() bool { n, _ := running(); return n == 3 })
	g.open(t)
	for _, id := range ids {
		if r := e.waitDone(id).Result; r != "SUCCESS" {
			t.Errorf("%s: %s", id, r)
		}
	}
}
