package main

import (
	"context"
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
// says who paused it and why, and once resumed it goes on.
func TestRunHonoursPauses(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	ran := filepath.Join(dir, "ran")
	cfg := writeConfig(t, dir, `
source: {url: `+repo+`}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  job: {run: 'touch `+ran+`'}
pipelines:
  deploy: {jobs: [job]}
`)
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
	if err := st.SetPause(ctx, store.Pause{Pipeline: "deploy", By: "alice", Reason: "switch upgrade", At: time.Now()}); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(sortieBin(t), "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(out.String(), "is paused by alice (switch upgrade)"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("the run never said it is paused:\n%s", out.String())
		}
	}
	time.Sleep(1500 * time.Millisecond) // time enough for a build to start, were it let
	if _, err := os.Stat(ran); err == nil || strings.Contains(out.String(), "start   boot") {
		t.Errorf("a build started while the pipeline was paused:\n%s", out.String())
	}
	if err := st.ClearPause(ctx, "deploy"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("run after the resume: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("the run did not finish after the resume:\n%s", out.String())
	}
	if _, err := os.Stat(ran); err != nil {
		t.Errorf("the job did not run after the resume: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "resumed: deploy") {
		t.Errorf("the run did not say it resumed:\n%s", out.String())
	}
}
