package server

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

// TestPushWebhookGits: a push names its branch, so the trigger it makes
// fetches the branches and reads the branch's head, and never asks the
// remote for its default branch (git ls-remote), a connection more.
func TestPushWebhookGits(t *testing.T) {
	e := start(t, pushConfig, envOpt{env: map[string]string{"GH_SECRET": "s3cret"}})
	e.waitDone(e.trigger("deploy", nil))
	os.WriteFile(filepath.Join(e.repo, "docs", "index.md"), []byte("new docs\n"), 0o644)
	head := sourcetest.Commit(t, e.repo, "docs")

	calls := sourcetest.GitCalls(t)
	code, out := githubPush(t, e, "s3cret", head)
	if code != http.StatusAccepted {
		t.Fatalf("push: %d %s", code, out)
	}
	// What the push ran before it answered; the buildset's own gits (its
	// checkout) may run meanwhile, but none of them asks for ls-remote.
	got := calls()
	if slices.Contains(got, "ls-remote") || !slices.Contains(got, "fetch") {
		t.Errorf("the push ran git %v, want a fetch and no ls-remote", got)
	}
	var r struct{ Buildsets []string }
	json.Unmarshal(out, &r)
	if len(r.Buildsets) != 1 {
		t.Fatalf("push made %v", r.Buildsets)
	}
	if bs := e.waitDone(r.Buildsets[0]); bs.Commit != head {
		t.Errorf("push buildset at %s, want %s", bs.Commit, head)
	}
}

// TestTriggerCommitGits: a trigger that names a commit in full fetches
// nothing when the mirror has that commit, and fetches when it does not.
func TestTriggerCommitGits(t *testing.T) {
	e := start(t, pushConfig, envOpt{env: map[string]string{"GH_SECRET": "s3cret"}})
	first := e.buildset(e.waitDone(e.trigger("deploy", nil)).ID)
	calls := sourcetest.GitCalls(t)

	id := e.trigger("deploy", map[string]any{"commit": first.Commit})
	if got := calls(); slices.Contains(got, "fetch") || slices.Contains(got, "ls-remote") {
		t.Errorf("a trigger of commit %s, which the mirror has, ran git %v; want no fetch", first.Commit, got)
	}
	if bs := e.waitDone(id); bs.Commit != first.Commit {
		t.Errorf("buildset at %s, want %s", bs.Commit, first.Commit)
	}

	os.WriteFile(filepath.Join(e.repo, "docs", "index.md"), []byte("newer docs\n"), 0o644)
	head := sourcetest.Commit(t, e.repo, "docs")
	calls()
	id = e.trigger("deploy", map[string]any{"commit": head})
	if got := calls(); !slices.Contains(got, "fetch") {
		t.Errorf("a trigger of commit %s, which the mirror lacks, ran git %v; want a fetch", head, got)
	}
	if bs := e.waitDone(id); bs.Commit != head {
		t.Errorf("buildset at %s, want %s", bs.Commit, head)
	}
}
