package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/testport"
)

// TestServeReloadsOnSIGHUP: SIGHUP with a broken config keeps the server
// on its config and shows the errors through the API; SIGHUP with a good
// one takes it.
func TestServeReloadsOnSIGHUP(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n"})
	dir, state := t.TempDir(), t.TempDir()
	good := fmt.Sprintf("source: {url: %q}\njobs:\n  boot: {bootstrap: true, run: \"true\"}\npipelines:\n  deploy: {jobs: [boot]}\n", repo)
	cfg := writeConfig(t, dir, good)
	addr := testport.Addr(t)
	srv := startServe(t, addr, filepath.Join(dir, "serve.log"), []string{"SORTIE_TOKENS=t"}, "--config", cfg, "--state-dir", state)
	t.Cleanup(func() { srv.stop(t) })

	config := func() (reloadErr []string, loaded time.Time) {
		resp, err := http.Get("http://" + addr + "/api/v1/config")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var c struct {
			LoadedAt    time.Time `json:"loaded_at"`
			ReloadError *struct {
				Errors []string `json:"errors"`
			} `json:"reload_error"`
		}
		json.NewDecoder(resp.Body).Decode(&c)
		if c.ReloadError != nil {
			return c.ReloadError.Errors, c.LoadedAt
		}
		return nil, c.LoadedAt
	}
	_, first := config()
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				out, _ := os.ReadFile(filepath.Join(dir, "serve.log"))
				t.Fatalf("timed out waiting for %s\n%s", what, out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	os.WriteFile(cfg, []byte(good+"  broken: {jobs: [boot, ghost]}\n"), 0o644)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil("the reload error", func() bool {
		errs, _ := config()
		return len(errs) > 0 && strings.Contains(strings.Join(errs, "\n"), "ghost")
	})
	if _, loaded := config(); !loaded.Equal(first) {
		t.Errorf("a refused config replaced the one in force (loaded at %v, then %v)", first, loaded)
	}
	// The server still runs its config.
	req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/pipelines/deploy/trigger", nil)
	req.Header.Set("Authorization", "Bearer t")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("trigger after a refused reload: %v %v", resp, err)
	}
	resp.Body.Close()

	os.WriteFile(cfg, []byte(good), 0o644)
	srv.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil("the good config", func() bool {
		errs, loaded := config()
		return errs == nil && loaded.After(first)
	})
}

// TestServeDatabaseFlag: `--database sqlite:PATH` keeps the state in that
// file, not in the state dir's sortie.db; a URL of neither SQLite nor
// PostgreSQL is refused.
func TestServeDatabaseFlag(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n"})
	dir, state := t.TempDir(), t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf("source: {url: %q}\njobs:\n  boot: {bootstrap: true, run: \"true\"}\npipelines:\n  deploy: {jobs: [boot]}\n", repo))
	db := filepath.Join(dir, "elsewhere.db")
	addr := testport.Addr(t)
	srv := startServe(t, addr, filepath.Join(dir, "serve.log"), []string{"SORTIE_TOKENS=t"},
		"--config", cfg, "--state-dir", state, "--database", "sqlite:"+db)
	r := runSortie(t, []string{"SORTIE_TOKEN=t"}, "trigger", "--pipeline", "deploy", "--wait", "--server", "http://"+addr)
	srv.stop(t)
	if r.code != 0 {
		t.Fatalf("trigger --wait: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := os.Stat(db); err != nil {
		t.Errorf("the database named by --database: %v", err)
	}
	if _, err := os.Stat(filepath.Join(state, "sortie.db")); err == nil {
		t.Errorf("the state dir got a sortie.db too")
	}
	h := runSortie(t, nil, "serve", "--config", cfg, "--state-dir", state, "--database", "mysql://sortie:s3cret@x/y")
	if h.code != 2 || !strings.Contains(h.stderr, "want postgres://... (PostgreSQL) or sqlite:PATH") || strings.Contains(h.stderr, "s3cret") {
		t.Errorf("serve --database mysql://: exit %d, %q; want 2 and a clear refusal, without the password", h.code, h.stderr)
	}
}

// TestServeHiddenTimings: the test-only flags --lease, --leader-ttl and
// --leader-retry are accepted but not listed by --help, wrong values are
// refused clearly, and they take effect: the node's lease in
// /api/v1/nodes runs --lease past its last renewal, and the leader's term
// never runs more than --leader-ttl ahead (the default term, renewed every
// third of it, always runs more than 6 s ahead).
func TestServeHiddenTimings(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf("source: {url: %q}\njobs:\n  boot: {bootstrap: true, run: \"true\"}\npipelines:\n  deploy: {jobs: [boot]}\n", repo))

	h := runSortie(t, nil, "serve", "--help")
	if h.code != 0 || !strings.Contains(h.stderr, "-grace") {
		t.Fatalf("serve --help: exit %d\n%s", h.code, h.stderr)
	}
	for _, name := range []string{"lease", "leader-ttl", "leader-retry"} {
		if strings.Contains(h.stderr, "-"+name) {
			t.Errorf("serve --help lists the hidden --%s:\n%s", name, h.stderr)
		}
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--lease", "500ms"}, "--lease 500ms: must be at least 1s"},
		{[]string{"--leader-ttl", "0"}, "--leader-ttl 0s: must be at least 1s"},
		{[]string{"--leader-retry", "-1s"}, "--leader-retry -1s: must be positive"},
		{[]string{"--leader-ttl", "2s", "--leader-retry", "2s"}, "--leader-retry 2s: must be shorter than --leader-ttl 2s"},
	} {
		r := runSortie(t, nil, append([]string{"serve", "--config", cfg, "--state-dir", t.TempDir()}, c.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("serve %s: exit %d, %q; want 2 and why", strings.Join(c.args, " "), r.code, r.stderr)
		}
	}

	addr := testport.Addr(t)
	srv := startServe(t, addr, filepath.Join(dir, "serve.log"), nil,
		"--config", cfg, "--state-dir", t.TempDir(), "--lease", "3s", "--leader-ttl", "2s", "--leader-retry", "200ms")
	defer srv.stop(t)
	var nodes struct {
		Leader *struct {
			ExpiresAt time.Time `json:"expires_at"`
		}
		Nodes []struct {
			Self        bool
			LastRenewal time.Time `json:"last_renewal"`
			ExpiresAt   time.Time `json:"expires_at"`
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/api/v1/nodes")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&nodes)
		resp.Body.Close()
		read := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		if nodes.Leader != nil && len(nodes.Nodes) == 1 {
			if lease := nodes.Nodes[0].ExpiresAt.Sub(nodes.Nodes[0].LastRenewal); lease != 3*time.Second {
				t.Errorf("the node's lease: %s, want 3s (--lease)", lease)
			}
			if ahead := nodes.Leader.ExpiresAt.Sub(read); ahead > 3*time.Second {
				t.Errorf("the leader's term runs %s ahead, more than --leader-ttl 2s allows", ahead)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader in /api/v1/nodes within 30s: %+v", nodes)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
