package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

// failing is a job that prints 30 numbered lines, then a red "boom", and
// fails.
const failing = `for i in $(seq 1 30); do echo "line $i"; done; printf "\033[31mboom\033[0m\n"; exit 3`

// checkFailureTail checks the part of a summary that shows a failed
// build's last log lines and where its whole log is (want: a regexp).
func checkFailureTail(t *testing.T, out, job, where string) {
	t.Helper()
	i := strings.Index(out, "── "+job+" FAILURE: exit status 3")
	if i < 0 {
		t.Fatalf("no failure summary for %s:\n%s", job, out)
	}
	tail := out[i:]
	for n := 12; n <= 30; n++ {
		if !strings.Contains(tail, fmt.Sprintf("   line %d\n", n)) {
			t.Errorf("line %d of the log is not in the summary:\n%s", n, tail)
		}
	}
	if strings.Contains(tail, "line 11\n") || strings.Contains(tail, "|") {
		t.Errorf("the summary shows more than the last 20 lines, or their timestamps:\n%s", tail)
	}
	// Not a terminal: no escape codes.
	if !strings.Contains(tail, "   boom\n") || strings.Contains(tail, "\x1b") {
		t.Errorf("the last line is not the plain text of the log's last line:\n%q", tail)
	}
	if !regexp.MustCompile(`the whole log: ` + where).MatchString(tail) {
		t.Errorf("the summary does not say where the whole log is (want %s):\n%s", where, tail)
	}
}

// sortie run: a failed build's last lines, where its log is, and what the
// bootstrap job did on the bastion.
func TestRunConsole(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %q}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  bad: {run: '%s'}
  after: {run: "true", dependencies: [bad]}
pipelines:
  deploy: {jobs: [bad, after]}
`, repo, failing))
	state := filepath.Join(dir, "state")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state)
	if r.code != 1 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	checkFailureTail(t, r.stdout, "bad", regexp.QuoteMeta(state)+`/logs/\S+/bad\.1\.log`)
	if strings.Contains(r.stdout, "── after") || strings.Contains(r.stdout, "── boot") {
		t.Errorf("a skipped or successful build has a failure summary:\n%s", r.stdout)
	}
	path := regexp.MustCompile(`the whole log: (\S+)`).FindStringSubmatch(r.stdout)[1]
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the log named is not there: %v", err)
	}
	if !regexp.MustCompile(`bastion boot: checkout made in \d+(\.\d+)?m?s; tools installed`).MatchString(r.stdout) {
		t.Errorf("the first run does not say the tools were installed:\n%s", r.stdout)
	}
	r = runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state)
	if !regexp.MustCompile(`bastion boot: checkout made in \d+(\.\d+)?m?s; tools already up to date`).MatchString(r.stdout) {
		t.Errorf("the second run does not say the tools were up to date:\n%s", r.stdout)
	}
}

func TestVersion(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"version"}, {"--version"}} {
		r := runSortie(t, nil, args...)
		want := regexp.MustCompile(`^sortie \S+\ncommit: \S+\ngo: ` + regexp.QuoteMeta(runtime.Version()) + ` \S+/\S+\nschema: [1-9]\d* \(SQLite\), [1-9]\d* \(PostgreSQL\)\n$`)
		if r.code != 0 || !want.MatchString(r.stdout) {
			t.Errorf("sortie %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
	}
}

// history counts a running buildset's unfinished builds as RUNNING or
// WAITING, never as a bare number.
func TestHistoryOfARunningBuildset(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	gate, started := filepath.Join(dir, "gate"), filepath.Join(dir, "started")
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %q}
jobs:
  boot: {bootstrap: true, run: "true"}
  slow: {run: 'touch %s; %s'}
  next: {run: "true", dependencies: [slow]}
pipelines:
  deploy: {jobs: [slow, next]}
`, repo, started, waitFor(gate, dir)))
	state := filepath.Join(dir, "state")
	cmd := exec.Command(sortieBin(t), "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.WriteFile(gate, nil, 0o644)
		cmd.Wait()
	}()
	deadline := time.Now().Add(time.Minute)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slow never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The run journals its build writes and applies them to the database
	// shortly after (internal/store/sqlite/journal.go): another process,
	// as history is, reads them a few milliseconds late, later on a busy
	// machine. So history is asked until it shows slow running.
	deadline = time.Now().Add(time.Minute)
	for {
		r := runSortie(t, nil, "history", "--state-dir", state)
		if r.code == 0 && strings.Contains(r.stdout, "1 SUCCESS, 1 RUNNING, 1 WAITING") {
			break
		}
		if r.code != 0 || time.Now().After(deadline) {
			t.Fatalf("history of a running buildset: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// trigger --wait shows a failed build's last lines and its log's URL;
// logs --tail counts lines; resume says which pause still holds.
func TestClientConsole(t *testing.T) {
	t.Parallel()
	s := startClientServer(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  bad: {run: '%s'}
pipelines:
  deploy: {jobs: [bad]}
  other: {jobs: [boot]}
`, failing))
	r := s.client(t, nil, "trigger", "--pipeline", "deploy", "--wait")
	if r.code != 1 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	id := strings.SplitN(r.stdout, "\n", 2)[0]
	checkFailureTail(t, r.stdout, "bad", regexp.QuoteMeta(s.url+"/api/v1/buildsets/"+id+"/builds/bad/log?attempt=1"))

	r = s.client(t, nil, "logs", id, "bad", "--tail", "3")
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 0 || len(lines) != 3 || !strings.HasSuffix(lines[0], " | line 29") || !strings.HasSuffix(lines[1], " | line 30") {
		t.Errorf("logs --tail 3: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	s.client(t, nil, "pause", "--pipeline", "deploy", "--reason", "db upgrade")
	s.client(t, nil, "pause", "--reason", "all")
	r = s.client(t, nil, "resume")
	if r.code != 0 || !strings.Contains(r.stderr, "pipeline deploy stays paused by tester: db upgrade: resume it with --pipeline deploy") ||
		strings.Contains(r.stderr, "pipeline other") {
		t.Errorf("resume of all while deploy stays paused: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
