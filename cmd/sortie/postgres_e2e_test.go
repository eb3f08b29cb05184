package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store/postgres/pgtest"
	"github.com/sortie-ci/sortie/internal/testport"
)

// quickstartYAML is a config shaped like examples/quickstart (a bootstrap
// job with an install list, a fan-out and fan-in, a job semaphore, a soft
// dependency on a job its files matcher skips, a pipeline semaphore), on
// the repository at url, with jobs that finish at once.
const quickstartYAML = `source: {url: %q}
limits: {max_parallel: 4}
semaphores: {scratch: 1, deployment: 1}
jobs:
  prepare:
    bootstrap: true
    install: ["command -v git >/dev/null"]
    run: echo "buildset $SORTIE_BUILDSET deploys $SORTIE_COMMIT"
  inspect: {run: 'test -f "$SORTIE_SRC/README"'}
  tree: {run: 'ls "$SORTIE_SRC"', dependencies: [inspect], semaphores: [scratch]}
  stats: {run: 'wc -l "$SORTIE_SRC/README"', dependencies: [inspect], semaphores: [scratch]}
  docs: {run: echo docs, files: ['^docs/']}
  summary:
    run: echo done
    dependencies: [tree, stats, {name: docs, soft: true}]
pipelines:
  deploy:
    semaphore: deployment
    jobs: [prepare, inspect, tree, stats, docs, summary]
`

// TestPostgresRunHistoryServe: on a PostgreSQL database, `sortie run
// --database` runs a buildset to SUCCESS and records it there (not in its
// state dir), `sortie history --database` lists it, and `sortie serve`
// given the database by $SORTIE_DATABASE accepts a trigger and finishes
// the buildset, which history then lists beside the first.
func TestPostgresRunHistoryServe(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n", "docs/index.md": "# docs\n"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(quickstartYAML, repo))
	// docs is not selected for a change to README: summary goes without it.
	wantBuilds := map[string]string{
		"prepare": "SUCCESS", "inspect": "SUCCESS", "tree": "SUCCESS", "stats": "SUCCESS", "summary": "SUCCESS",
	}
	checkReport := func(what string, rep *buildset.Report) {
		t.Helper()
		if rep.Result != "SUCCESS" {
			t.Errorf("%s: result %s, want SUCCESS", what, rep.Result)
		}
		got := map[string]string{}
		for _, b := range rep.Builds {
			got[b.Job] = b.Result
		}
		diff := len(got) != len(wantBuilds)
		for job, want := range wantBuilds {
			diff = diff || got[job] != want
		}
		if diff {
			t.Errorf("%s: builds %v, want %v", what, got, wantBuilds)
		}
	}
	history := func(env []string, args ...string) map[string]string {
		t.Helper()
		h := runSortie(t, env, append([]string{"history", "--json"}, args...)...)
		if h.code != 0 {
			t.Fatalf("history: exit %d\n%s%s", h.code, h.stdout, h.stderr)
		}
		var out struct{ Buildsets []*buildset.Report }
		if err := json.Unmarshal([]byte(h.stdout), &out); err != nil {
			t.Fatalf("history --json: %v\n%s", err, h.stdout)
		}
		results := map[string]string{}
		for _, r := range out.Buildsets {
			results[r.ID] = string(r.Result)
		}
		return results
	}

	runState := t.TempDir()
	rep := filepath.Join(dir, "run.json")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--files", "README",
		"--state-dir", runState, "--database", db, "--report", rep)
	if r.code != 0 {
		t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	ran := readReport(t, rep)
	checkReport("sortie run", ran)
	if _, err := os.Stat(filepath.Join(runState, "sortie.db")); err == nil {
		t.Error("sortie run --database postgres:// made a sortie.db in its state dir")
	}
	// Any state dir: the runs are in the database.
	if got := history(nil, "--database", db, "--state-dir", t.TempDir()); got[ran.ID] != "SUCCESS" || len(got) != 1 {
		t.Errorf("history --database: %v, want %s SUCCESS only", got, ran.ID)
	}

	serveState := t.TempDir()
	addr := testport.Addr(t)
	logPath := filepath.Join(dir, "serve.log")
	srv := startServe(t, addr, logPath, []string{"SORTIE_TOKENS=t", "SORTIE_DATABASE=" + db},
		"--config", cfg, "--state-dir", serveState)
	rep = filepath.Join(dir, "served.json")
	tr := runSortie(t, []string{"SORTIE_TOKEN=t"}, "trigger", "--pipeline", "deploy", "--files", "README",
		"--wait", "--report", rep, "--server", "http://"+addr)
	srv.stop(t)
	if tr.code != 0 {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("trigger --wait: exit %d\n%s%s\nserve's log:\n%s", tr.code, tr.stdout, tr.stderr, log)
	}
	served := readReport(t, rep)
	checkReport("sortie serve", served)
	if _, err := os.Stat(filepath.Join(serveState, "sortie.db")); err == nil {
		t.Error("sortie serve on PostgreSQL made a sortie.db in its state dir")
	}
	// The build logs are in the database, not in a state dir.
	for _, state := range []string{runState, serveState} {
		if logs, _ := filepath.Glob(filepath.Join(state, "logs", "*")); len(logs) != 0 {
			t.Errorf("a build log on PostgreSQL was written to a file: %v", logs)
		}
	}
	for _, rep := range []*buildset.Report{ran, served} {
		for _, b := range rep.Builds {
			if want := buildset.LogURL(rep.ID, b.Job, b.Attempt); b.Attempt > 0 && b.Log != want {
				t.Errorf("report of %s: build %s: log %q, want %q", rep.ID, b.Job, b.Log, want)
			}
		}
	}
	got := history([]string{"SORTIE_DATABASE=" + db})
	if got[ran.ID] != "SUCCESS" || got[served.ID] != "SUCCESS" || len(got) != 2 {
		t.Errorf("history with $SORTIE_DATABASE: %v, want %s and %s SUCCESS", got, ran.ID, served.ID)
	}
	if h := runSortie(t, nil, "history", "--database", "mysql://u:s3cret@h/db"); h.code != 2 ||
		!strings.Contains(h.stderr, "want postgres://") || strings.Contains(h.stderr, "s3cret") {
		t.Errorf("history --database mysql://: exit %d, %q; want 2, a clear refusal, and no password", h.code, h.stderr)
	}
}

// TestPostgresRunFailureTail: `sortie run` on PostgreSQL keeps its logs in
// the database, and still prints a failed build's last lines, read from
// there, and how to read the whole log.
func TestPostgresRunFailureTail(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %q}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  bad: {run: '%s'}
pipelines:
  deploy: {jobs: [bad]}
`, repo, failing))
	state := filepath.Join(dir, "state")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state, "--database", db)
	if r.code != 1 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	checkFailureTail(t, r.stdout, "bad", `sortie logs \S+ bad --attempt 1 \(from any server on this database\)`)
	if logs, _ := filepath.Glob(filepath.Join(state, "logs", "*")); len(logs) != 0 {
		t.Errorf("a log file was written: %v", logs)
	}
}

// TestPostgresLogFromAnotherNode: a `sortie serve` runs a build on
// PostgreSQL, its log in the database; a second `sortie serve` on the same
// database follows that log live, and once the first is killed (kill -9)
// still serves it whole.
func TestPostgresLogFromAnotherNode(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n"})
	dir := t.TempDir()
	started, gate, end := filepath.Join(dir, "started"), filepath.Join(dir, "gate"), filepath.Join(dir, "end")
	wait := func(f string) string { return waitFor(f, dir) }
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %q}
jobs:
  boot: {bootstrap: true, run: "true"}
  talk: {run: 'echo first-line; touch %s; %s; echo after-gate; %s'}
pipelines:
  p: {jobs: [boot, talk]}
`, repo, started, wait(gate), wait(end)))
	// The job outlives its killed server: it ends once the test does.
	t.Cleanup(func() { os.WriteFile(end, nil, 0o644) })
	env := []string{"SORTIE_TOKENS=t", "SORTIE_DATABASE=" + db}
	addrA, addrB := testport.Addr(t), testport.Addr(t)
	logA, logB := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	stateA := t.TempDir()
	a := startServe(t, addrA, logA, env, "--config", cfg, "--state-dir", stateA, "--node", "a")
	t.Cleanup(a.kill)
	tr := runSortie(t, []string{"SORTIE_TOKEN=t"}, "trigger", "--pipeline", "p", "--server", "http://"+addrA)
	if tr.code != 0 {
		t.Fatalf("trigger: exit %d\n%s%s", tr.code, tr.stdout, tr.stderr)
	}
	id := strings.TrimSpace(tr.stdout)
	deadline := time.Now().Add(time.Minute)
	for _, err := os.Stat(started); err != nil; _, err = os.Stat(started) {
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logA)
			t.Fatalf("talk did not start within a minute\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// B starts while A runs the build: A owns it, B only reads.
	// Two servers on one host share a database under names of their own.
	b := startServe(t, addrB, logB, env, "--config", cfg, "--state-dir", t.TempDir(), "--node", "b")
	t.Cleanup(func() { b.stop(t) })

	logPath := "/api/v1/buildsets/" + id + "/builds/talk/log"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addrB+logPath+"?follow=1", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := make(chan string, 10)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				lines <- d
			}
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("the event stream from the second server ended")
			}
			return l
		case <-time.After(30 * time.Second):
			t.Fatal("no line from the second server within 30s")
		}
		return ""
	}
	if l := next(); !strings.HasSuffix(l, " | first-line") {
		t.Fatalf("first line followed on the second server: %q", l)
	}
	os.WriteFile(gate, nil, 0o644)
	if l := next(); !strings.HasSuffix(l, " | after-gate") {
		t.Fatalf("second line followed on the second server: %q", l)
	}
	// The first node is gone, and so is its disk.
	a.kill()
	if err := os.RemoveAll(stateA); err != nil {
		t.Fatal(err)
	}
	whole := runSortie(t, []string{"SORTIE_TOKEN=t"}, "logs", id, "talk", "--server", "http://"+addrB)
	if whole.code != 0 || !regexp.MustCompile(`^\S+ \| first-line\n\S+ \| after-gate\n$`).MatchString(whole.stdout) {
		t.Errorf("sortie logs from the second server after the first was killed: exit %d\n%q%s", whole.code, whole.stdout, whole.stderr)
	}
}
