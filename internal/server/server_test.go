package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

const pushConfig = `
webhooks:
  github: {secret_env: GH_SECRET}
jobs:
  boot: {bootstrap: true, run: "true"}
  docs:
    run: "true"
    files: ['^docs/']
  play:
    run: "true"
    files: ['^playbooks/']
pipelines:
  deploy:
    trigger: {push: {branch: main}}
    jobs: [boot, docs, play]
`

func githubPush(t *testing.T, e *env, secret, after string) (int, []byte) {
	t.Helper()
	body := fmt.Sprintf(`{"ref":"refs/heads/main","before":"%s","after":"%s","repository":{"full_name":"org/infra"}}`, strings.Repeat("0", 40), after)
	req, _ := http.NewRequest("POST", e.url+"/webhooks/github", strings.NewReader(body))
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", "d-1")
	if secret != "" {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(body))
		req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []byte
	buf := make([]byte, 4096)
	n, _ := resp.Body.Read(buf)
	out = buf[:n]
	return resp.StatusCode, out
}

func (e *env) count() int {
	e.t.Helper()
	code, out := e.do("GET", "/api/v1/buildsets?limit=500", nil, "")
	if code != 200 {
		e.t.Fatalf("list: %d %s", code, out)
	}
	var r struct{ Buildsets []json.RawMessage }
	json.Unmarshal(out, &r)
	return len(r.Buildsets)
}

// TestPushWebhook: a signed push makes a buildset whose jobs are chosen by
// the files git says changed since the last deploy; an unsigned or wrongly
// signed one is refused with 401 and makes nothing.
func TestPushWebhook(t *testing.T) {
	e := start(t, pushConfig, envOpt{env: map[string]string{"GH_SECRET": "s3cret"}})
	// A first deploy, by hand: every job.
	first := e.waitDone(e.trigger("deploy", nil))
	if first.Result != "SUCCESS" || len(first.Builds) != 3 {
		t.Fatalf("first deploy: %s %v", first.Result, jobs(first))
	}
	// A change to the docs only.
	os.WriteFile(filepath.Join(e.repo, "docs", "index.md"), []byte("new docs\n"), 0o644)
	head := sourcetest.Commit(t, e.repo, "docs")

	for _, tc := range []struct{ name, secret string }{{"unsigned", ""}, {"wrong secret", "guess"}} {
		code, out := githubPush(t, e, tc.secret, head)
		if code != http.StatusUnauthorized {
			t.Errorf("%s push: %d %s, want 401", tc.name, code, out)
		}
	}
	if n := e.count(); n != 1 {
		t.Fatalf("refused pushes made buildsets: %d buildsets, want 1", n)
	}

	code, out := githubPush(t, e, "s3cret", head)
	if code != http.StatusAccepted {
		t.Fatalf("signed push: %d %s", code, out)
	}
	var r struct{ Buildsets []string }
	json.Unmarshal(out, &r)
	if len(r.Buildsets) != 1 {
		t.Fatalf("signed push made %v", r.Buildsets)
	}
	bs := e.waitDone(r.Buildsets[0])
	if bs.Result != "SUCCESS" || bs.Commit != head {
		t.Fatalf("push buildset: %s at %s, want SUCCESS at %s", bs.Result, bs.Commit, head)
	}
	if !reflect.DeepEqual(bs.Files, []string{"docs/index.md"}) {
		t.Errorf("files = %v, want [docs/index.md] (from git, since the last deploy)", bs.Files)
	}
	if got := jobs(bs); !reflect.DeepEqual(got, []string{"boot", "docs"}) {
		t.Errorf("jobs = %v, want [boot docs]", got)
	}
	if !strings.Contains(bs.Cause, "push to main by github") {
		t.Errorf("cause = %q", bs.Cause)
	}
}

// serialConfig: one pipeline per manager; each job waits for its gate.
func managerConfig(g gate, manager string) string {
	return fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  work:
    run: '%s'
    files: ['^']
  docs:
    run: "true"
    files: ['^docs/']
pipelines:
  p:
    manager: %s
    jobs: [boot, work, docs]
`, g.wait(), manager)
}

func started(bs *BuildsetJSON) time.Time {
	if t := bs.StartedAt.Get(); t != nil {
		return *t
	}
	return time.Time{}
}

func finished(bs *BuildsetJSON) time.Time {
	if t := bs.FinishedAt.Get(); t != nil {
		return *t
	}
	return time.Time{}
}

// TestSerial: buildsets run one at a time, in arrival order.
func TestSerial(t *testing.T) {
	g := newGate(t)
	e := start(t, managerConfig(g, "serial"), envOpt{})
	release(t, g)
	var ids []string
	for range 3 {
		ids = append(ids, e.trigger("p", nil))
	}
	e.wait(ids[0], "running", func(b *BuildsetJSON) bool { return b.State == "RUNNING" })
	e.decide() // a pass over the queue as it is now: the others must wait
	for _, id := range ids[1:] {
		if st := e.buildset(id).State; st != "QUEUED" {
			t.Errorf("%s is %s while the first runs, want QUEUED", id, st)
		}
	}
	g.open(t)
	var done []*BuildsetJSON
	for _, id := range ids {
		bs := e.waitDone(id)
		if bs.Result != "SUCCESS" {
			t.Errorf("%s: %s", id, bs.Result)
		}
		done = append(done, bs)
	}
	for i := 1; i < len(done); i++ {
		if started(done[i]).Before(finished(done[i-1])) {
			t.Errorf("buildset %d started at %v, before buildset %d finished at %v", i, started(done[i]), i-1, finished(done[i-1]))
		}
	}
}

// TestSupercedent: one runs, at most one waits, a newer event replaces the
// waiting one.
func TestSupercedent(t *testing.T) {
	g := newGate(t)
	e := start(t, managerConfig(g, "supercedent"), envOpt{})
	release(t, g)
	a := e.trigger("p", nil)
	e.wait(a, "running", func(b *BuildsetJSON) bool { return b.State == "RUNNING" })
	b := e.trigger("p", nil)
	c := e.trigger("p", nil)
	bb := e.waitDone(b)
	if bb.Result != "CANCELED" || !strings.Contains(bb.Error, c) {
		t.Errorf("waiting buildset: %s %q, want CANCELED superseded by %s", bb.Result, bb.Error, c)
	}
	g.open(t)
	if r := e.waitDone(a).Result; r != "SUCCESS" {
		t.Errorf("running one: %s", r)
	}
	if r := e.waitDone(c).Result; r != "SUCCESS" {
		t.Errorf("newest: %s", r)
	}
}

// TestCoalesce: the buildsets waiting behind a running one merge into one,
// for the newest commit, with the union of their files.
func TestCoalesce(t *testing.T) {
	g := newGate(t)
	e := start(t, managerConfig(g, "coalesce"), envOpt{})
	release(t, g)
	a := e.trigger("p", map[string]any{"files": []string{"playbooks/a.yaml"}})
	e.wait(a, "running", func(b *BuildsetJSON) bool { return b.State == "RUNNING" })
	b := e.trigger("p", map[string]any{"files": []string{"docs/index.md"}})
	os.WriteFile(filepath.Join(e.repo, "README"), []byte("v2\n"), 0o644)
	head := sourcetest.Commit(t, e.repo, "v2")
	c := e.trigger("p", map[string]any{"files": []string{"README"}, "commit": head})
	g.open(t)
	e.waitDone(a)
	bb, cc := e.waitDone(b), e.waitDone(c)
	for _, m := range []*BuildsetJSON{bb, cc} {
		if m.Result != "CANCELED" || !strings.Contains(m.Error, "coalesced into") {
			t.Fatalf("member %s: %s %q, want CANCELED coalesced", m.ID, m.Result, m.Error)
		}
	}
	merged := strings.Fields(strings.SplitN(bb.Error, "coalesced into ", 2)[1])[0]
	m := e.waitDone(merged)
	if m.Result != "SUCCESS" || m.Commit != head {
		t.Errorf("merged: %s at %s, want SUCCESS at %s", m.Result, m.Commit, head)
	}
	if want := []string{"README", "docs/index.md"}; !reflect.DeepEqual(m.Files, want) {
		t.Errorf("merged files = %v, want %v", m.Files, want)
	}
	if got := jobs(m); !slices.Contains(got, "docs") {
		t.Errorf("merged jobs = %v: docs (matched by a member's files) is missing", got)
	}
}

// TestPrecedence: a deploy and an hourly buildset wait on the pipeline
// semaphore they share; when it frees, the deploy (high) gets it first
// although the hourly one (low) waited longer.
func TestPrecedence(t *testing.T) {
	g := newGate(t)
	cfg := fmt.Sprintf(`
semaphores: {bridge: 1}
jobs:
  boot: {bootstrap: true, run: "true"}
  hold: {run: '%s'}
  work: {run: "true"}
pipelines:
  periodic: {semaphore: bridge, jobs: [boot, hold]}
  hourly:   {semaphore: bridge, precedence: low, manager: supercedent, jobs: [boot, work]}
  deploy:   {semaphore: bridge, precedence: high, jobs: [boot, work]}
`, g.wait())
	e := start(t, cfg, envOpt{})
	release(t, g)
	p := e.trigger("periodic", nil)
	e.wait(p, "running", func(b *BuildsetJSON) bool { return b.State == "RUNNING" })
	h := e.trigger("hourly", nil)
	// The hourly one is older: made, then admitted, before the deploy is
	// made (the store keeps nanoseconds).
	e.wait(h, "admitted", func(b *BuildsetJSON) bool { return b.State == "ADMITTED" })
	d := e.trigger("deploy", nil)
	e.wait(d, "admitted", func(b *BuildsetJSON) bool { return b.State == "ADMITTED" })
	// Both wait on the semaphore (admitted first, then queued on it by
	// their run).
	waitFor(t, "both buildsets waiting on the semaphore", func() bool {
		code, out := e.do("GET", "/api/v1/semaphores", nil, "")
		var r struct{ Semaphores []SemaphoreJSON }
		json.Unmarshal(out, &r)
		waiting := map[string]bool{}
		for _, sem := range r.Semaphores {
			for _, w := range sem.Waiters {
				waiting[w.Holder] = true
			}
		}
		return code == 200 && waiting[h] && waiting[d]
	})
	g.open(t)
	hh, dd := e.waitDone(h), e.waitDone(d)
	if hh.Result != "SUCCESS" || dd.Result != "SUCCESS" {
		t.Fatalf("results: hourly %s, deploy %s", hh.Result, dd.Result)
	}
	if !hh.CreatedAt.Get().Before(*dd.CreatedAt.Get()) {
		t.Fatalf("hourly made at %v, deploy at %v: the test needs the hourly one older", hh.CreatedAt.Get(), dd.CreatedAt.Get())
	}
	if !started(dd).Before(started(hh)) {
		t.Errorf("deploy started %v, hourly %v: the deploy should go first", started(dd), started(hh))
	}
	// Three grants of bridge. The hourly one waited at least from its
	// creation to the deploy's end, when the deploy released bridge.
	_, out := e.do("GET", "/metrics", nil, "")
	text := string(out)
	if w := `sortie_semaphore_wait_seconds_count{semaphore="bridge"} 3`; !strings.Contains(text, w+"\n") {
		t.Errorf("metrics lack %s:\n%s", w, grepLines(text, "sortie_semaphore_wait"))
	}
	m := regexp.MustCompile(`sortie_semaphore_wait_seconds_sum\{semaphore="bridge"\} (\S+)`).FindStringSubmatch(text)
	var sum float64
	if m != nil {
		sum, _ = strconv.ParseFloat(m[1], 64)
	}
	if least := finished(dd).Sub(*hh.CreatedAt.Get()).Seconds(); sum < least {
		t.Errorf("bridge's waits add up to %gs, less than the hourly buildset's own wait of at least %gs:\n%s", sum, least, grepLines(text, "sortie_semaphore_wait"))
	}
}

// TestReloadBadConfig: a broken config is refused with its errors, visible
// in the API, and the server goes on with the old one.
func TestReloadBadConfig(t *testing.T) {
	e := start(t, pushConfig, envOpt{})
	e.writeConfig(pushConfig + "  nightly:\n    jobs: [boot, nosuchjob]\n    manager: sometimes\n")
	code, out := e.do("POST", "/api/v1/reload", nil, testToken)
	if code != http.StatusUnprocessableEntity || !strings.Contains(string(out), "nosuchjob") || !strings.Contains(string(out), "sortie.yaml:") {
		t.Fatalf("reload of a bad config: %d %s", code, out)
	}
	code, out = e.do("GET", "/api/v1/config", nil, "")
	var c ConfigJSON
	json.Unmarshal(out, &c)
	if code != 200 || c.ReloadError == nil || len(c.ReloadError.Errors) < 2 {
		t.Fatalf("config after a refused reload: %d %s", code, out)
	}
	// The old config still runs.
	if r := e.waitDone(e.trigger("deploy", nil)).Result; r != "SUCCESS" {
		t.Fatalf("deploy after a refused reload: %s", r)
	}
	if code, _ := e.do("POST", "/api/v1/pipelines/nightly/trigger", nil, testToken); code != http.StatusNotFound {
		t.Errorf("the refused config's pipeline can be triggered: %d", code)
	}
	// A good config is taken, and the error cleared.
	e.writeConfig(pushConfig + "  nightly:\n    jobs: [boot, docs]\n")
	if code, out := e.do("POST", "/api/v1/reload", nil, testToken); code != 200 {
		t.Fatalf("reload: %d %s", code, out)
	}
	_, out = e.do("GET", "/api/v1/config", nil, "")
	c = ConfigJSON{}
	json.Unmarshal(out, &c)
	if c.ReloadError != nil {
		t.Errorf("reload error kept after a good reload: %s", out)
	}
	if r := e.waitDone(e.trigger("nightly", nil)).Result; r != "SUCCESS" {
		t.Errorf("nightly: %s", r)
	}
}

// TestAuth: mutating calls need a token; reads are open by default.
func TestAuth(t *testing.T) {
	e := start(t, pushConfig, envOpt{})
	for _, tok := range []string{"", "wrong", testToken + "x"} {
		for _, path := range []string{"/api/v1/pipelines/deploy/trigger", "/api/v1/pause", "/api/v1/reload"} {
			if code, _ := e.do("POST", path, nil, tok); code != http.StatusUnauthorized {
				t.Errorf("POST %s with token %q: %d, want 401", path, tok, code)
			}
		}
	}
	if n := e.count(); n != 0 {
		t.Errorf("refused calls made %d buildsets", n)
	}
	if code, _ := e.do("GET", "/api/v1/status", nil, ""); code != 200 {
		t.Errorf("status without a token: %d", code)
	}
}

// TestLeaderMetrics: a server alone on its store leads, and says so in
// its metrics.
func TestLeaderMetrics(t *testing.T) {
	e := start(t, pushConfig, envOpt{})
	_, out := e.do("GET", "/metrics", nil, "")
	text := string(out)
	for _, w := range []string{"sortie_cluster_leader 1", "sortie_leader_elections_total 1"} {
		if !strings.Contains(text, w+"\n") {
			t.Errorf("metrics lack %s:\n%s", w, grepLines(text, "leader"))
		}
	}
}
