package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/testport"
)

// TestCrashGivesThePipelineSemaphoreBack: deploy (high), hourly and
// periodic (low) share a max-1 pipeline semaphore. Periodic runs, hourly
// then deploy wait for it (both ADMITTED), deploy gets it when periodic
// ends, and the server is killed with -9 while deploy's first job runs.
// After the restart deploy must get the semaphore back before hourly,
// which is older and was waiting: hourly's jobs may not run between two
// of deploy's. Several rounds, on the real binary.
func TestCrashGivesThePipelineSemaphoreBack(t *testing.T) {
	const rounds = 4
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n"})
	dir, state := t.TempDir(), t.TempDir()
	journal := filepath.Join(dir, "journal")
	started, gates := filepath.Join(dir, "started"), filepath.Join(dir, "gates")
	os.Mkdir(started, 0o755)
	os.Mkdir(gates, 0o755)
	// A job records its start, then waits for its pipeline's gate.
	job := fmt.Sprintf(`%s; touch %s/"$SORTIE_BUILDSET.$SORTIE_JOB.$SORTIE_ATTEMPT"; %s`,
		journalLine(journal), started, waitFor(gates+`/"$SORTIE_PIPELINE"`, gates))
	cfgPath := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %q, branch: main}
semaphores: {bridge: 1}
jobs:
  boot: {bootstrap: true, run: '%s'}
  a: {run: '%[3]s', attempts: 5}
  b: {run: '%[3]s', attempts: 5, dependencies: [a]}
pipelines:
  deploy:   {manager: serial, precedence: high, semaphore: bridge, jobs: [boot, a, b]}
  hourly:   {manager: serial, precedence: low, semaphore: bridge, jobs: [boot, a, b]}
  periodic: {manager: serial, precedence: low, semaphore: bridge, jobs: [boot, a, b]}
`, repo, journalLine(journal), job))
	addr := testport.Addr(t)
	logPath := filepath.Join(dir, "serve.log")
	env := []string{"SORTIE_TOKENS=crash-token"}
	args := []string{"--config", cfgPath, "--state-dir", state, "--grace", "2s"}
	srv := startServe(t, addr, logPath, env, args...)
	defer func() { srv.stop(t) }()
	openGate := func(p string) { os.WriteFile(filepath.Join(gates, p), nil, 0o644) }
	failNow := func(format string, a ...any) {
		t.Helper()
		for _, p := range []string{"deploy", "hourly", "periodic"} {
			openGate(p) // so that the server stops at once
		}
		data, _ := os.ReadFile(journal)
		out, _ := os.ReadFile(logPath)
		t.Fatalf(format+"\njournal:\n%s\nserver log:\n%s", append(a, data, tail(string(out), 40))...)
	}
	exists := func(name string) bool {
		_, err := os.Stat(filepath.Join(started, name))
		return err == nil
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				failNow("gave up waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	stateOf := func(id string) string {
		resp, err := http.Get("http://" + addr + "/api/v1/buildsets/" + id)
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		var bs apiBuildset
		json.NewDecoder(resp.Body).Decode(&bs)
		if bs.State != "DONE" {
			return bs.State
		}
		return bs.State + " " + bs.Result
	}
	trigger := func(p string) string {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/pipelines/"+p+"/trigger", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer crash-token")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			failNow("trigger %s: %v", p, err)
		}
		defer resp.Body.Close()
		var out struct{ Buildset string }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusAccepted {
			failNow("trigger %s: %d %v", p, resp.StatusCode, err)
		}
		return out.Buildset
	}

	for round := 1; round <= rounds; round++ {
		periodic := trigger("periodic")
		waitFor("periodic's first job", func() bool { return exists(periodic + ".a.1") })
		hourly := trigger("hourly")
		waitFor("hourly admitted", func() bool { return stateOf(hourly) == "ADMITTED" })
		deploy := trigger("deploy")
		waitFor("deploy admitted", func() bool { return stateOf(deploy) == "ADMITTED" })
		openGate("periodic")
		waitFor("deploy's first job", func() bool { return exists(deploy + ".a.1") })

		noteKill(t, journal, round)
		srv.kill()
		srv = startServe(t, addr, logPath, env, args...)

		// Deploy's lost job starts again, or hourly took the semaphore.
		hourlyRan := func() bool {
			data, _ := os.ReadFile(journal)
			return strings.Contains(string(data), " "+hourly+" ")
		}
		waitFor("deploy's job again, or hourly", func() bool { return exists(deploy+".a.2") || hourlyRan() })
		if hourlyRan() {
			failNow("round %d: after the restart hourly %s started while deploy %s held the pipeline semaphore", round, hourly, deploy)
		}
		openGate("deploy")
		waitFor("deploy done", func() bool { return strings.HasPrefix(stateOf(deploy), "DONE") })
		openGate("hourly")
		waitFor("hourly done", func() bool { return strings.HasPrefix(stateOf(hourly), "DONE") })
		for _, id := range []string{periodic, deploy, hourly} {
			if got := stateOf(id); got != "DONE SUCCESS" {
				failNow("round %d: buildset %s is %s, want DONE SUCCESS", round, id, got)
			}
		}
		for _, p := range []string{"deploy", "hourly", "periodic"} {
			os.Remove(filepath.Join(gates, p))
		}
	}
	if kills, found := interleavings(t, journal, "deploy", "hourly", "periodic"); kills != rounds || len(found) > 0 {
		failNow("%d kills noted, want %d; interleavings: %v", kills, rounds, found)
	}
}
