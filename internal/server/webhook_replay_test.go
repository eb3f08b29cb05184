package server

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

// delivery is a GitHub push delivery: its body, signed, and its id.
type delivery struct {
	body     string
	id       string
	event    string
	signWith string
}

// githubDelivery is GitHub's push of after to main, signed with secret.
func githubDelivery(id, after, secret string) delivery {
	body := fmt.Sprintf(`{"ref":"refs/heads/main","before":"%s","after":"%s","repository":{"full_name":"org/infra"}}`, strings.Repeat("1", 40), after)
	return delivery{body: body, id: id, event: "push", signWith: secret}
}

// webhookAnswer is the JSON answer of POST /webhooks/{forge}.
type webhookAnswer struct {
	Buildsets []string
	Commit    string
	Current   map[string]string
	Ignored   string
	Error     string
}

// send posts d to /webhooks/github, byte for byte the same each time.
func (e *env) send(d delivery) (int, webhookAnswer) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/webhooks/github", strings.NewReader(d.body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Event", d.event)
	if d.id != "" {
		req.Header.Set("X-GitHub-Delivery", d.id)
	}
	m := hmac.New(sha256.New, []byte(d.signWith))
	m.Write([]byte(d.body))
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(m.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var a webhookAnswer
	if err := json.Unmarshal(out, &a); err != nil {
		e.t.Fatalf("webhook answer %d %q: %v", resp.StatusCode, out, err)
	}
	return resp.StatusCode, a
}

// commitFile writes a file of the test's source repository and commits it.
func (e *env) commitFile(name, content string) string {
	e.t.Helper()
	if err := os.WriteFile(filepath.Join(e.repo, name), []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return sourcetest.Commit(e.t, e.repo, "change "+name)
}

func (e *env) git(args ...string) string {
	e.t.Helper()
	out, err := exec.Command("git", append([]string{"-C", e.repo}, args...)...).CombinedOutput()
	if err != nil {
		e.t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestWebhookReplayDeploysHead: a signed push of C1 replayed byte for byte
// after C2 was pushed never deploys C1 again. With the same delivery id it
// is acknowledged and ignored; with a new one it deploys the branch's head
// (C2), with the files changed since the last success; once the head's
// buildset is queued, running or done, a further replay makes nothing.
func TestWebhookReplayDeploysHead(t *testing.T) {
	e := start(t, pushConfig, envOpt{env: map[string]string{"GH_SECRET": "s3cret"}})
	first := e.waitDone(e.trigger("deploy", nil))
	if first.Result != "SUCCESS" {
		t.Fatalf("first deploy: %s", first.Result)
	}
	c1 := e.commitFile("docs/index.md", "c1\n")
	d1 := githubDelivery("d-1", c1, "s3cret")
	code, a := e.send(d1)
	if code != http.StatusAccepted || len(a.Buildsets) != 1 {
		t.Fatalf("push of C1: %d %+v", code, a)
	}
	b1 := e.waitDone(a.Buildsets[0])
	if b1.Commit != c1 || b1.Result != "SUCCESS" {
		t.Fatalf("C1's buildset: %s at %s", b1.Result, b1.Commit)
	}

	c2 := e.commitFile("playbooks/a.yaml", "c2\n")
	// The same delivery again: acknowledged, ignored.
	for range 3 {
		code, a = e.send(d1)
		if code != http.StatusAccepted || len(a.Buildsets) != 0 || !strings.Contains(a.Ignored, "received before") {
			t.Fatalf("replay of d-1: %d %+v, want 202 ignored as received before", code, a)
		}
	}
	// The same body under a new delivery id: the head, C2, not C1.
	replay := d1
	replay.id = "d-2"
	code, a = e.send(replay)
	if code != http.StatusAccepted || len(a.Buildsets) != 1 || a.Commit != c2 {
		t.Fatalf("C1's body as d-2: %d %+v, want one buildset at C2 %s", code, a, c2)
	}
	b2 := e.buildset(a.Buildsets[0])
	if b2.Commit != c2 {
		t.Errorf("C1's body as d-2 deployed %s, want the head C2 %s (C1 is %s)", b2.Commit, c2, c1)
	}
	if !reflect.DeepEqual(b2.Files, []string{"playbooks/a.yaml"}) {
		t.Errorf("files = %v, want [playbooks/a.yaml]: those between the last success (C1) and the commit deployed (C2)", b2.Files)
	}
	// The head has its buildset: more replays make nothing.
	for _, id := range []string{"d-3", "d-4"} {
		replay.id = id
		code, a = e.send(replay)
		if code != http.StatusAccepted || len(a.Buildsets) != 0 || a.Current["deploy"] != b2.ID {
			t.Fatalf("replay as %s while C2's buildset exists: %d %+v, want none made and current %s", id, code, a, b2.ID)
		}
	}
	e.waitDone(b2.ID)
	if n := e.count(); n != 3 {
		t.Errorf("%d buildsets, want 3 (the first deploy, C1, C2)", n)
	}
	code, out := e.do("GET", "/api/v1/buildsets?commit="+c1, nil, "")
	var list struct{ Buildsets []json.RawMessage }
	json.Unmarshal(out, &list)
	if code != 200 || len(list.Buildsets) != 1 {
		t.Errorf("%d buildsets at C1, want 1: a replay rolled back", len(list.Buildsets))
	}
}

// TestWebhookOtherBranchCommit: a signed push to main whose after is a
// commit only on another branch deploys main's head.
func TestWebhookOtherBranchCommit(t *testing.T) {
	e := start(t, pushConfig, envOpt{env: map[string]string{"GH_SECRET": "s3cret"}})
	head := e.git("rev-parse", "HEAD")
	e.git("checkout", "-q", "-b", "feature")
	feature := e.commitFile("playbooks/a.yaml", "not on main\n")
	e.git("checkout", "-q", "main")

	code, a := e.send(githubDelivery("d-f", feature, "s3cret"))
	if code != http.StatusAccepted || len(a.Buildsets) != 1 {
		t.Fatalf("push: %d %+v", code, a)
	}
	if bs := e.buildset(a.Buildsets[0]); bs.Commit != head {
		t.Errorf("a push to main naming %s (only on feature) deployed %s, want main's head %s", feature, bs.Commit, head)
	}
}

// TestWebhookDeliveryRemembered: a delivery's id is kept in the store, so
// a server started again still ignores it.
func TestWebhookDeliveryRemembered(t *testing.T) {
	// The job fails, so that the head has no successful buildset and
	// only the delivery's id can tell a replay from a new push.
	cfg := strings.Replace(pushConfig, `play:
    run: "true"`, `play:
    run: "false"`, 1)
	e := start(t, cfg, envOpt{env: map[string]string{"GH_SECRET": "s3cret"}})
	c1 := e.commitFile("playbooks/a.yaml", "c1\n")
	d := githubDelivery("d-restart", c1, "s3cret")
	code, a := e.send(d)
	if code != http.StatusAccepted || len(a.Buildsets) != 1 {
		t.Fatalf("push: %d %+v", code, a)
	}
	if bs := e.waitDone(a.Buildsets[0]); bs.Result != "FAILURE" {
		t.Fatalf("buildset: %s, want FAILURE", bs.Result)
	}
	e.restart(envOpt{env: map[string]string{"GH_SECRET": "s3cret"}})
	code, a = e.send(d)
	if code != http.StatusAccepted || len(a.Buildsets) != 0 || !strings.Contains(a.Ignored, "received before") {
		t.Fatalf("replay after a restart: %d %+v, want 202 ignored as received before", code, a)
	}
	if n := e.count(); n != 1 {
		t.Errorf("%d buildsets, want 1", n)
	}
}

// TestWebhookConcurrentDeliveries: the same delivery arriving several
// times at once makes one buildset.
func TestWebhookConcurrentDeliveries(t *testing.T) {
	e := start(t, pushConfig, envOpt{env: map[string]string{"GH_SECRET": "s3cret"}})
	c1 := e.commitFile("playbooks/a.yaml", "c1\n")
	d := githubDelivery("d-twice", c1, "s3cret")
	var wg sync.WaitGroup
	var mu sync.Mutex
	made := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, a := e.send(d)
			if code != http.StatusAccepted {
				t.Errorf("delivery: %d %+v", code, a)
			}
			mu.Lock()
			made += len(a.Buildsets)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if made != 1 || e.count() != 1 {
		t.Errorf("8 copies of one delivery made %d buildsets (%d listed), want 1", made, e.count())
	}
}
