package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/testport"
)

// tmpfs mounts a tmpfs of size bytes on a new directory for the test, or
// skips the test where mounting is not allowed (not root), unless CI=true:
// CI runs as root and must not skip it.
func tmpfs(t *testing.T, size int) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mount a tmpfs (CI runs as root): %v\n%s", err, out)
		}
		t.Skipf("cannot mount a tmpfs here (not root?): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file in dir until the file system is full, and returns it.
func fill(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte("x"), 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			return path
		}
	}
}

// A server whose state dir fills up while a build runs: the build's end
// cannot be written to the store. The server must not report a state it
// failed to write (the API still says what the store says, and the log
// claims no end), and once space is freed the store says what happened
// (the build ended ERROR because its log could not be written). Then a
// server killed while a build runs and started again on a full disk waits
// for space instead of exiting, and goes on where it was once it has some.
func TestFullDiskLosesNothing(t *testing.T) {
	state := filepath.Join(tmpfs(t, 16<<20), "state")
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n"})
	dir := t.TempDir()
	gate, started := filepath.Join(dir, "gate"), filepath.Join(dir, "started")
	cfgPath := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %q, branch: main}
jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: 'touch %s.$SORTIE_BUILDSET.$SORTIE_ATTEMPT; %s; echo the end of a'}
  b: {run: 'echo b', dependencies: [a]}
pipelines:
  deploy: {jobs: [boot, a, b]}
`, repo, started, waitFor(gate, dir)))
	addr := testport.Addr(t)
	logPath := filepath.Join(dir, "serve.log")
	args := []string{"--config", cfgPath, "--state-dir", state, "--grace", "2s"}
	srv := startServe(t, addr, logPath, []string{"SORTIE_TOKENS=tok"}, args...)
	defer func() { srv.stop(t) }()
	serverLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("gave up waiting for %s\nserver log:\n%s", what, serverLog())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	trigger := func() string {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/pipelines/deploy/trigger", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var trig struct{ Buildset string }
		json.NewDecoder(resp.Body).Decode(&trig)
		return trig.Buildset
	}
	id := trigger()
	get := func() apiBuildset {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/api/v1/buildsets/" + id)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var bs apiBuildset
		json.NewDecoder(resp.Body).Decode(&bs)
		return bs
	}
	exists := func(path string) bool { _, err := os.Stat(path); return err == nil }
	waitFor("job a to start", func() bool { return exists(started + "." + id + ".1") })

	filler := fill(t, filepath.Dir(state))
	os.WriteFile(gate, nil, 0o644)
	// What waits is a's end, or, when the store took it into its journal
	// before it found the disk full (docs/design.md), the buildset's end,
	// which applies the journal first.
	waitFor("the server to wait for the store", func() bool {
		return strings.Contains(serverLog(), "waiting until it can be recorded")
	})
	// The store says RUNNING, so does the API; the server claims no end.
	if bs := get(); bs.State != "RUNNING" || bs.Builds[1].Job != "a" || bs.Builds[1].Result != "" {
		t.Errorf("while the disk is full: %+v, want the buildset RUNNING and a without a result", bs)
	}
	if strings.Contains(serverLog(), "buildset ended") {
		t.Errorf("the server reported an end the store does not have:\n%s", serverLog())
	}

	os.Remove(filler)
	waitFor("the buildset to end", func() bool { return get().State == "DONE" })
	var full struct {
		Result string
		Builds []struct{ Job, Result, Reason string }
	}
	resp, err := http.Get("http://" + addr + "/api/v1/buildsets/" + id)
	if err != nil {
		t.Fatal(err)
	}
	json.NewDecoder(resp.Body).Decode(&full)
	resp.Body.Close()
	// What the store says is what happened: job a's output could not be
	// written (ERROR, and b skipped), or, when a page of the file system
	// was freed meanwhile (SQLite's own files come and go), it was, and
	// only the store waited.
	a, b := full.Builds[1], full.Builds[2]
	switch {
	case a.Result == "ERROR" && strings.Contains(a.Reason, "no space left on device"):
		if b.Result != "SKIPPED" || full.Result != "FAILURE" {
			t.Errorf("a ERROR, then b %s and the buildset %s, want SKIPPED and FAILURE", b.Result, full.Result)
		}
	case a.Result == "SUCCESS":
		if b.Result != "SUCCESS" || full.Result != "SUCCESS" {
			t.Errorf("a SUCCESS, then b %s and the buildset %s, want SUCCESS", b.Result, full.Result)
		}
	default:
		t.Errorf("after space is freed a is %s (%q), want ERROR for its lost output, or SUCCESS", a.Result, a.Reason)
	}
	if !strings.Contains(serverLog(), "recorded after all") {
		t.Errorf("the server never said the end was recorded:\n%s", serverLog())
	}

	// Killed while a build runs, started again on a full disk.
	os.Remove(gate)
	id = trigger()
	waitFor("job a of the second buildset to start", func() bool { return exists(started + "." + id + ".1") })
	srv.kill()
	filler = fill(t, filepath.Dir(state))
	srv = spawnServe(t, addr, logPath, []string{"SORTIE_TOKENS=tok"}, args...)
	waitFor("the restarted server to wait for space", func() bool {
		return strings.Contains(serverLog(), "waiting until the store can be opened and written") ||
			// its registration as an owner, or its recovery
			strings.Contains(serverLog(), "waits until the state can be written")
	})
	select {
	case <-srv.done:
		t.Fatalf("the server exited on a full disk:\n%s", serverLog())
	default:
	}
	os.Remove(filler)
	srv.waitReady(t, addr, logPath)
	os.WriteFile(gate, nil, 0o644)
	waitFor("the resumed buildset to end", func() bool { return get().State == "DONE" })
	if bs := get(); bs.Result != "SUCCESS" || bs.Builds[1].Attempt != 2 {
		t.Errorf("the resumed buildset: %+v, want SUCCESS with a's lost attempt tried again", bs)
	}
}
