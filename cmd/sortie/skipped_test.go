package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

// nothingToDeploy is a config whose every job, the bootstrap job included,
// has matchers that a docs-only change does not match. The bootstrap job
// would leave a mark if it ran.
const nothingToDeploy = `
jobs:
  boot:
    bootstrap: true
    run: touch %[1]s/boot-ran
    files: [^playbooks/bootstrap\.yaml$, ^inventory/]
  zuul:
    run: "true"
    files: [^playbooks/zuul\.yaml$]
  base:
    run: "true"
    irrelevant_files: [^docs/, .*\.md$]
pipelines:
  deploy: {jobs: [zuul, base]}
`

// assertNoCheckout fails if anything of the buildset reached the bastion:
// its workdir holds no checkout, and the bootstrap job left no mark.
func assertNoCheckout(t *testing.T, workdir, marks string) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(workdir, "src"))
	if len(entries) > 0 {
		t.Errorf("the bastion has %d checkouts in %s/src, want none", len(entries), workdir)
	}
	if _, err := os.Stat(filepath.Join(marks, "boot-ran")); err == nil {
		t.Error("the bootstrap job ran")
	}
}

// TestNothingToDeployRun: a docs-only change with a bootstrap job that has
// matchers makes a buildset that ends at once, SKIPPED, exit 0, with no
// build and nothing done on the bastion; the report and the history say
// why.
func TestNothingToDeployRun(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README.md": "x"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf("source: {url: %s}\n", repo)+fmt.Sprintf(nothingToDeploy, dir))
	state := filepath.Join(dir, "state")
	rep := filepath.Join(dir, "report.json")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--files", "docs/x.md", "--state-dir", state, "--report", rep)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "nothing to deploy: no job matched the changed files") {
		t.Errorf("run does not say there is nothing to deploy:\n%s", r.stdout)
	}
	report := readReport(t, rep)
	if report.Result != "SKIPPED" || report.Error != "no job matched the changed files" || len(report.Builds) != 0 ||
		report.StartedAt.Get() != nil || report.FinishedAt.Get() == nil || len(report.Commit) != 40 {
		t.Errorf("report: %+v", report)
	}
	assertNoCheckout(t, filepath.Join(state, "bastion"), dir)

	h := runSortie(t, nil, "history", "--state-dir", state)
	if h.code != 0 || !strings.Contains(h.stdout, "SKIPPED") || !strings.Contains(h.stdout, "nothing to deploy: no job matched the changed files") {
		t.Errorf("history: exit %d\n%s%s", h.code, h.stdout, h.stderr)
	}

	// The same config on a change that touches a job's files deploys.
	r = runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--files", "playbooks/zuul.yaml", "--state-dir", state, "--report", rep)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := readReport(t, rep); got.Result != "SUCCESS" || len(got.Builds) != 3 {
		t.Errorf("a change to a job's files: %+v", got)
	}
}

// TestNothingToDeployServer: through a server, the API gives the buildset
// SKIPPED with why and its plan (every job not selected), `trigger --wait`
// exits 0, and the buildset and history pages say there was nothing to
// deploy.
func TestNothingToDeployServer(t *testing.T) {
	t.Parallel()
	marks := t.TempDir()
	s := startClientServer(t, fmt.Sprintf(nothingToDeploy, marks))
	r := s.client(t, nil, "trigger", "--pipeline", "deploy", "--files", "docs/index.rst,README.md", "--wait")
	if r.code != 0 {
		t.Fatalf("trigger --wait: exit %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	list := s.getList(t, "/api/v1/buildsets?pipeline=deploy")
	if len(list) != 1 {
		t.Fatalf("%d buildsets, want 1", len(list))
	}
	bs := s.getBuildset(t, list[0].ID)
	if bs.State != "DONE" || bs.Result != "SKIPPED" || bs.Error != "no job matched the changed files" || len(bs.Builds) != 0 {
		t.Errorf("buildset: %+v", bs)
	}
	if bs.Plan == nil || len(bs.Plan.Jobs) != 0 || len(bs.Plan.NotSelected) != 3 {
		t.Errorf("plan: %+v", bs.Plan)
	}
	assertNoCheckout(t, filepath.Join(s.dir, "state", "bastion"), marks)

	page := s.getPage(t, "/buildsets/"+bs.ID)
	for _, want := range []string{"Nothing to deploy:</strong> no job matched the changed files", "Jobs not selected"} {
		if !strings.Contains(page, want) {
			t.Errorf("the buildset page does not say %q", want)
		}
	}
	if strings.Contains(page, `id="graph-h"`) || strings.Contains(page, "error-box") {
		t.Error("the buildset page draws a graph, or an error, for a buildset that selected no job")
	}
	if h := s.getPage(t, "/history"); !strings.Contains(h, "nothing to deploy: no job matched the changed files") {
		t.Error("the history page does not say there was nothing to deploy")
	}
}

func (s *clientServer) getList(t *testing.T, path string) []remoteBuildset {
	t.Helper()
	var out struct {
		Buildsets []remoteBuildset `json:"buildsets"`
	}
	if err := json.Unmarshal([]byte(s.getPage(t, path)), &out); err != nil {
		t.Fatal(err)
	}
	return out.Buildsets
}

func (s *clientServer) getPage(t *testing.T, path string) string {
	t.Helper()
	resp, err := http.Get(s.url + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	return string(body)
}
