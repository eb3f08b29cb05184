package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	hookSecret = "hook-secret-0123456789"
	ghToken    = "ghp_token_0123456789abcdef"
)

// hookSink is a receiver of the webhook reporter that checks each
// delivery's signature as docs/api.md says a receiver does.
type hookSink struct {
	t   *testing.T
	mu  sync.Mutex
	got []hookGot
}

type hookGot struct {
	delivery, event, buildset, result string
}

func (h *hookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	mac := hmac.New(sha256.New, []byte(hookSecret))
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	if r.Method != http.MethodPost || !hmac.Equal([]byte(r.Header.Get("X-Sortie-Signature-256")), []byte(want)) {
		h.t.Errorf("webhook: %s with signature %q, want POST signed %q", r.Method, r.Header.Get("X-Sortie-Signature-256"), want)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var b struct{ ID, Result, Event string }
	if err := json.Unmarshal(body, &b); err != nil || b.Event != r.Header.Get("X-Sortie-Event") {
		h.t.Errorf("webhook body %s (%v): event %q, header %q", body, err, b.Event, r.Header.Get("X-Sortie-Event"))
	}
	h.mu.Lock()
	h.got = append(h.got, hookGot{delivery: r.Header.Get("X-Sortie-Delivery"), event: b.Event, buildset: b.ID, result: b.Result})
	h.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// events are the events the sink got of a buildset, in order.
func (h *hookSink) events(id string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, g := range h.got {
		if g.buildset == id {
			out = append(out, g.event)
		}
	}
	return out
}

// ghSink is a fake of GitHub's commit status API: the path, the method,
// the bearer token and the fields GitHub checks.
type ghSink struct {
	t      *testing.T
	mu     sync.Mutex
	states map[string][]string // by commit
	desc   map[string]string   // the last description, by commit
}

func (g *ghSink) lastDesc(sha string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.desc[sha]
}

func (g *ghSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	sha, ok := strings.CutPrefix(r.URL.Path, "/repos/org/infra/statuses/")
	if r.Method != http.MethodPost || !ok || len(sha) != 40 {
		g.t.Errorf("github: %s %s", r.Method, r.URL.Path)
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+ghToken {
		http.Error(w, `{"message":"Bad credentials"}`, http.StatusUnauthorized)
		return
	}
	var s struct {
		State, TargetURL, Description, Context string
	}
	if err := json.Unmarshal(body, &struct {
		State       *string `json:"state"`
		TargetURL   *string `json:"target_url"`
		Description *string `json:"description"`
		Context     *string `json:"context"`
	}{&s.State, &s.TargetURL, &s.Description, &s.Context}); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	switch s.State {
	case "pending", "success", "failure", "error":
	default:
		http.Error(w, `{"message":"Validation Failed"}`, http.StatusUnprocessableEntity)
		return
	}
	if (s.Context != "sortie/deploy" && s.Context != "sortie/broken") || !strings.HasPrefix(s.TargetURL, "https://deploy.example.org/buildsets/") || len(s.Description) > 140 {
		g.t.Errorf("github status %+v", s)
	}
	g.mu.Lock()
	g.states[sha] = append(g.states[sha], s.State)
	g.desc[sha] = s.Description
	g.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, `{"id":1}`)
}

func (g *ghSink) of(sha string) []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.states[sha]...)
}

// reports reads a buildset's deliveries through the API.
func (e *env) reports(id string) []ReportJSON {
	e.t.Helper()
	code, out := e.do("GET", "/api/v1/buildsets/"+id+"/reports", nil, "")
	if code != http.StatusOK {
		e.t.Fatalf("reports of %s: %d %s", id, code, out)
	}
	if strings.Contains(string(out), hookSecret) || strings.Contains(string(out), ghToken) {
		e.t.Fatalf("a secret in the reports of %s: %s", id, out)
	}
	var r struct{ Reports []ReportJSON }
	if err := json.Unmarshal(out, &r); err != nil {
		e.t.Fatal(err)
	}
	return r.Reports
}

// waitDelivered waits until the buildset's deliveries are n, all
// delivered.
func (e *env) waitDelivered(id string, n int) []ReportJSON {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rs := e.reports(id)
		done := len(rs) == n
		for _, r := range rs {
			done = done && r.State == "delivered"
		}
		if done {
			return rs
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("reports of %s: %+v, want %d delivered\n%s", id, rs, n, e.logBuf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReportsOfEachEnd runs a buildset to each end through a real server,
// with a webhook and a GitHub reporter, and checks what each heard, in
// order, what the API and the metrics say of it, and that no secret shows.
func TestReportsOfEachEnd(t *testing.T) {
	hook := &hookSink{t: t}
	gh := &ghSink{t: t, states: map[string][]string{}, desc: map[string]string{}}
	hookSrv, ghSrv := httptest.NewServer(hook), httptest.NewServer(gh)
	defer hookSrv.Close()
	defer ghSrv.Close()
	g := newGate(t)
	cfg := fmt.Sprintf(`
server: {public_url: https://deploy.example.org}
reporters:
  gh: {type: github, url: %q, repository: org/infra, token_env: GH_TOKEN}
  hook: {type: webhook, url: %q, secret_env: HOOK_SECRET}
jobs:
  boot: {bootstrap: true, run: "true", files: [^playbooks/]}
  ok: {run: "true", irrelevant_files: [^docs/]}
  bad: {run: 'test ! -e fail', dependencies: [ok], irrelevant_files: [^docs/]}
  slow: {run: '%s', irrelevant_files: [^docs/]}
  needy: {run: "true", dependencies: [ok]}
pipelines:
  deploy:
    jobs: [ok, bad]
    report: {start: [gh, hook], success: [gh, hook], failure: [gh, hook], cancel: [gh, hook]}
  wait:
    jobs: [slow]
    report: {cancel: [hook]}
  broken:
    jobs: [needy]
    report: {failure: [gh, hook]}
`, ghSrv.URL, hookSrv.URL+"/sortie", g.wait())
	e := start(t, cfg, envOpt{env: map[string]string{"GH_TOKEN": ghToken, "HOOK_SECRET": hookSecret}})

	ok := e.trigger("deploy", nil)
	if bs := e.waitDone(ok); bs.Result != "SUCCESS" {
		t.Fatalf("buildset %s", bs.Result)
	}
	rs := e.waitDelivered(ok, 4)
	for i, want := range []string{"gh start", "hook start", "gh success", "hook success"} {
		if got := rs[i].Reporter + " " + rs[i].Event; got != want || rs[i].Tries != 1 || rs[i].LastError != "" {
			t.Errorf("delivery %d: %s (%+v), want %s tried once", i, got, rs[i], want)
		}
	}
	if got := hook.events(ok); strings.Join(got, " ") != "start success" {
		t.Errorf("the webhook heard %v of a successful buildset", got)
	}
	commit := e.buildset(ok).Commit
	if got := gh.of(commit); strings.Join(got, " ") != "pending success" {
		t.Errorf("GitHub's states of %s: %v", commit, got)
	}

	// A failure: the same commit's status moves on to failure.
	sha := e.commitFile("fail", "x\n")
	bad := e.trigger("deploy", map[string]any{"commit": sha})
	if bs := e.waitDone(bad); bs.Result != "FAILURE" {
		t.Fatalf("buildset %s", bs.Result)
	}
	e.waitDelivered(bad, 4)
	if got := hook.events(bad); strings.Join(got, " ") != "start failure" {
		t.Errorf("the webhook heard %v of a failed buildset", got)
	}
	if got := gh.of(sha); strings.Join(got, " ") != "pending failure" {
		t.Errorf("GitHub's states of the failed %s: %v", sha, got)
	}

	// Cancelled while it runs: only cancel is reported to this pipeline.
	slow := e.trigger("wait", nil)
	e.wait(slow, "running", func(b *BuildsetJSON) bool { return b.State == "RUNNING" })
	e.post("/api/v1/buildsets/"+slow+"/cancel", map[string]string{"by": "test"}, http.StatusAccepted)
	if bs := e.waitDone(slow); bs.Result != "CANCELED" {
		t.Fatalf("buildset %s: %+v\n%s", bs.Result, bs, e.logBuf)
	}
	e.waitDelivered(slow, 1)
	if got := hook.events(slow); strings.Join(got, " ") != "cancel" {
		t.Errorf("the webhook heard %v of a cancelled buildset", got)
	}

	// Its graph cannot be made (needy's hard dependency is not in the
	// pipeline): CONFIG_ERROR is a failure, an error status on the forge.
	broken := e.trigger("broken", map[string]any{"commit": commit})
	if bs := e.waitDone(broken); bs.Result != "CONFIG_ERROR" {
		t.Fatalf("buildset %s", bs.Result)
	}
	e.waitDelivered(broken, 2)
	if got := hook.events(broken); strings.Join(got, " ") != "failure" {
		t.Errorf("the webhook heard %v of a CONFIG_ERROR buildset", got)
	}
	if got := gh.of(commit); strings.Join(got, " ") != "pending success error" {
		t.Errorf("GitHub's states of %s after a CONFIG_ERROR buildset: %v", commit, got)
	}
	if d := gh.lastDesc(commit); !strings.HasPrefix(d, "config error: ") {
		t.Errorf("the CONFIG_ERROR status says %q", d)
	}

	// Nothing to deploy: SKIPPED tells no one.
	skipped := e.trigger("deploy", map[string]any{"files": []string{"docs/index.md"}})
	if bs := e.waitDone(skipped); bs.Result != "SKIPPED" {
		t.Fatalf("buildset %s", bs.Result)
	}
	if rs := e.reports(skipped); len(rs) != 0 {
		t.Errorf("a SKIPPED buildset has deliveries: %+v", rs)
	}
	if code, _ := e.do("GET", "/api/v1/buildsets/nosuch/reports", nil, ""); code != http.StatusNotFound {
		t.Errorf("reports of an unknown buildset: %d, want 404", code)
	}

	// A try is counted once its outcome is recorded: the last may lag
	// behind what the API shows.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, metrics := e.do("GET", "/metrics", nil, "")
		var missing []string
		for _, want := range []string{
			`sortie_report_deliveries_total{outcome="delivered",reporter="gh"} 5`,
			`sortie_report_deliveries_total{outcome="delivered",reporter="hook"} 6`,
			"sortie_report_deliveries_pending 0",
			"sortie_report_oldest_pending_seconds 0",
		} {
			if !strings.Contains(string(metrics), want+"\n") {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics lack %q", missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if logs := e.logBuf.String(); strings.Contains(logs, hookSecret) || strings.Contains(logs, ghToken) {
		t.Error("a secret in the server's log")
	}
}

// TestReloadRefusesUnsetReporterSecret: a reload whose reporter reads a
// variable that is not set is refused, naming it, and the config in force
// stays.
func TestReloadRefusesUnsetReporterSecret(t *testing.T) {
	e := start(t, `
jobs:
  boot: {bootstrap: true, run: "true"}
pipelines:
  deploy: {jobs: [boot]}
`, envOpt{})
	e.writeConfig(`
reporters:
  hook: {type: webhook, url: https://hooks.example.org/sortie, secret_env: HOOK_SECRET}
jobs:
  boot: {bootstrap: true, run: "true"}
pipelines:
  deploy: {jobs: [boot], report: {failure: [hook]}}
`)
	err := e.srv.Reload()
	if err == nil || !strings.Contains(err.Error(), "reporters.hook.secret_env: $HOOK_SECRET is not set") {
		t.Fatalf("reload: %v; want it refused for $HOOK_SECRET", err)
	}
	if len(e.srv.Config().Reporters) != 0 {
		t.Error("the refused config is in force")
	}
	e.envs["HOOK_SECRET"] = "now-set"
	if err := e.srv.Reload(); err != nil {
		t.Fatalf("reload with the secret set: %v", err)
	}
	if e.srv.Config().Reporters["hook"] == nil {
		t.Error("the reloaded config has no reporter hook")
	}
}
