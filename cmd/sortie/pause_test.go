package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

// TestRunHonoursPauses: a pause in the store (as a server sharing it sets
// one, SPEC §2.4) holds a `sortie run`'s builds: nothing starts, the run
// says who paused it and why, and once resumed it goes on. Paused from the
// outset, the run starts nothing before it says it resumed. Paused again
// while hold and late run, it lets them finish and starts nothing after:
// late ends after hold, and its end is recorded at a later turn of the
// run's loop, so by then the loop has had its turn to start job, which
// waits for hold.
func TestRunHonoursPauses(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	holdGate, lateGate := filepath.Join(dir, "hold-gate"), filepath.Join(dir, "late-gate")
	wait := func(gate string) string { return waitFor(gate, dir) }
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  hold: {run: '%s'}
  late: {run: '%s'}
  job: {run: 'touch %s', dependencies: [hold]}
pipelines:
  deploy: {jobs: [hold, late, job]}
`, repo, wait(holdGate), wait(lateGate), ran))
	open := func(gate string) {
		if err := os.WriteFile(gate, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { open(holdGate); open(lateGate) })
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(state, "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	pause := func(by, reason string) {
		if err := st.SetPause(ctx, store.Pause{Pipeline: "deploy", By: by, Reason: reason, At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	resume := func() {
		if err := st.ClearPause(ctx, "deploy"); err != nil {
			t.Fatal(err)
		}
	}
	pause("alice", "switch upgrade")

	cmd := exec.Command(sortieBin(t), "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	said := func(what string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), what); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("the run never said %q:\n%s", what, out.String())
			}
		}
	}

	said("is paused by alice (switch upgrade)")
	resume()
	said("resumed: deploy")
	said("start   hold")
	said("start   late")
	if o := out.String(); strings.Index(o, "start   ") < strings.Index(o, "resumed: deploy") {
		t.Errorf("a build started before the run said it resumed:\n%s", o)
	}

	pause("bob", "second look")
	said("is paused by bob (second look)")
	open(holdGate)
	said("success hold")
	open(lateGate)
	said("success late")
	if _, err := os.Stat(ran); err == nil || strings.Contains(out.String(), "start   job") {
		t.Errorf("a build started while the pipeline was paused:\n%s", out.String())
	}

	resume()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("run after the resume: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the run did not finish after the resume:\n%s", out.String())
	}
	if _, err := os.Stat(ran); err != nil {
		t.Errorf("the job did not run after the resume: %v\n%s", err, out.String())
	}
	if n := strings.Count(out.String(), "resumed: deploy"); n != 2 {
		t.Errorf("the run said it resumed %d times, want 2:\n%s", n, out.String())
	}
}
