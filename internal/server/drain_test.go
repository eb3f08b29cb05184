package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// Once a shutdown has begun, a trigger, a re-run or a push is refused with
// 503 and a reason, not queued unseen for the next start.
func TestTriggerWhileShuttingDown(t *testing.T) {
	t.Parallel()
	g := newGate(t)
	started := filepath.Join(t.TempDir(), "started")
	e := start(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  slow: {run: 'touch %s; %s'}
pipelines:
  deploy: {manager: independent, jobs: [slow]}
webhooks:
  github: {secret_env: HOOK_SECRET}
`, started, g.wait()), envOpt{grace: time.Minute, env: map[string]string{"HOOK_SECRET": "s3"}})
	id := e.trigger("deploy", nil)
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slow never started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel := e.cancel
	cancel() // shutdown, step one: the running build may finish
	for !e.srv.coord.Stopping() {
		if time.Now().After(deadline) {
			t.Fatal("the server never began to shut down")
		}
		time.Sleep(time.Millisecond)
	}
	before, _, _ := e.srv.Buildsets(t.Context(), store.Filter{})
	for _, c := range []struct{ path, body string }{
		{"/api/v1/pipelines/deploy/trigger", "{}"},
		{"/api/v1/buildsets/" + id + "/rerun", "{}"},
	} {
		code, out := e.do("POST", c.path, json.RawMessage(c.body), testToken)
		var answer struct{ Error string }
		json.Unmarshal(out, &answer)
		if code != http.StatusServiceUnavailable || !strings.Contains(answer.Error, "shutting down") {
			t.Errorf("POST %s while shutting down: %d %s, want 503 saying why", c.path, code, out)
		}
	}
	d := githubDelivery("d-drain", strings.Repeat("a", 40), "s3")
	if code, answer := e.send(d); code != http.StatusServiceUnavailable {
		t.Errorf("a push while shutting down: %d %+v, want 503", code, answer)
	}
	after, _, _ := e.srv.Buildsets(t.Context(), store.Filter{})
	if len(after) != len(before) {
		t.Errorf("%d buildsets made while shutting down", len(after)-len(before))
	}
	g.open(t)
	e.stop()
}
