package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

// TestReloadRefusesEmptyConfig: a config emptied under a running server
// (no bootstrap job, no pipeline) is refused on reload, with positions, and
// the server keeps its pipelines.
func TestReloadRefusesEmptyConfig(t *testing.T) {
	t.Parallel()
	s := startClientServer(t, "jobs:\n  boot: {bootstrap: true, run: \"true\"}\npipelines:\n  deploy: {jobs: [boot]}\n")
	defer s.stop(t)
	cfg := filepath.Join(s.dir, "sortie.yaml")
	for _, empty := range []string{"", "# emptied for now\n", "jobs: {}\n"} {
		if err := os.WriteFile(cfg, []byte(empty), 0o644); err != nil {
			t.Fatal(err)
		}
		r := s.client(t, nil, "reload")
		if r.code != 2 || !strings.Contains(r.stderr, cfg+":1:1: jobs: no bootstrap job") || !strings.Contains(r.stderr, ": pipelines: no pipeline") {
			t.Fatalf("reload of %q: exit %d\n%s%s", empty, r.code, r.stdout, r.stderr)
		}
		st := s.client(t, nil, "status")
		if st.code != 0 || !strings.Contains(st.stdout, "LAST RELOAD REFUSED") || !strings.Contains(st.stdout, "\ndeploy ") {
			t.Fatalf("status after a refused reload of %q: exit %d\n%s%s", empty, st.code, st.stdout, st.stderr)
		}
	}
}

// TestRunCommitErrors: a --commit (or source.branch) that names no commit
// is exit 2 and names the repository as configured, not Sortie's mirror of
// it; a repository that cannot be fetched is another error.
func TestRunCommitErrors(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n"})
	dir, state := t.TempDir(), t.TempDir()
	jobs := "jobs:\n  boot: {bootstrap: true, run: \"true\"}\npipelines:\n  deploy: {jobs: [boot]}\n"
	write := func(name, source string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(source+"\n"+jobs), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", fmt.Sprintf("source: {url: %q}", repo))
	r := runSortie(t, nil, "run", "--config", good, "--pipeline", "deploy", "--commit", "nosuch", "--state-dir", state)
	if want := "sortie: run: --commit nosuch: no such commit in " + repo + " (source.url)\n"; r.code != 2 || r.stderr != want {
		t.Errorf("--commit nosuch: exit %d, stderr %q; want 2, %q", r.code, r.stderr, want)
	}

	branch := write("branch.yaml", fmt.Sprintf("source: {url: %q, branch: nosuch}", repo))
	r = runSortie(t, nil, "run", "--config", branch, "--pipeline", "deploy", "--state-dir", state)
	if r.code != 2 || !strings.HasPrefix(r.stderr, "sortie: run: no branch nosuch in "+repo+" (source.branch at ") || strings.Contains(r.stderr, state) {
		t.Errorf("source.branch nosuch: exit %d, stderr %q", r.code, r.stderr)
	}

	missing := filepath.Join(dir, "no-such-repo")
	gone := write("gone.yaml", fmt.Sprintf("source: {url: %q}", missing))
	r = runSortie(t, nil, "run", "--config", gone, "--pipeline", "deploy", "--commit", "main", "--state-dir", t.TempDir())
	if r.code != 1 || !strings.HasPrefix(r.stderr, "sortie: run: cannot fetch "+missing+" (source.url): ") || strings.Contains(r.stderr, "no such commit") {
		t.Errorf("unreachable repository: exit %d, stderr %q; want 1 and cannot fetch", r.code, r.stderr)
	}
}

// TestClientUnknownBuildset: rerun, cancel and logs of an id the server
// does not know say "no buildset ID", without the server's store in it;
// an unknown build of a known buildset still says which.
func TestClientUnknownBuildset(t *testing.T) {
	t.Parallel()
	s := startClientServer(t, "jobs:\n  boot: {bootstrap: true, run: \"true\"}\npipelines:\n  deploy: {jobs: [boot]}\n")
	defer s.stop(t)
	for _, args := range [][]string{
		{"rerun", "nosuch"},
		{"cancel", "nosuch"},
		{"cancel", "nosuch", "--job", "boot"},
		{"logs", "nosuch", "boot"},
	} {
		r := s.client(t, nil, args...)
		want := fmt.Sprintf("sortie: %s: no buildset nosuch on the server at %s\n", args[0], s.url)
		if r.code != 1 || r.stderr != want {
			t.Errorf("sortie %s: exit %d, stderr %q; want 1, %q", strings.Join(args, " "), r.code, r.stderr, want)
		}
	}
	id := s.trigger(t, "deploy")
	s.waitDone(t, id)
	if r := s.client(t, nil, "logs", id, "nosuchjob"); r.code != 1 || !strings.Contains(r.stderr, "has no build of nosuchjob") {
		t.Errorf("logs of an unknown job: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := s.client(t, nil, "cancel", id); r.code != 1 || !strings.Contains(r.stderr, "buildset "+id+" has already finished") {
		t.Errorf("cancel of a finished buildset: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestDamagedDatabaseRefused: a real database with random bytes over the
// middle half of its pages (a few KiB may land on free pages, which no
// check reads) is refused the same way by every command that opens it,
// before anything runs: run, serve and history.
func TestDamagedDatabaseRefused(t *testing.T) {
	t.Parallel()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x\n"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf("source: {url: %q}\njobs:\n  boot: {bootstrap: true, run: \"true\"}\n  a: {run: \"true\"}\npipelines:\n  deploy: {jobs: [a]}\n", repo))
	good := filepath.Join(dir, "good")
	for range 2 {
		if r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", good); r.code != 0 {
			t.Fatalf("run: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	}
	data, err := os.ReadFile(filepath.Join(good, "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for i := len(data) / 4; i < 3*len(data)/4; i++ {
		data[i] = byte(rng.Uint32())
	}
	damaged := func(name string) string {
		state := filepath.Join(dir, name)
		if err := os.MkdirAll(state, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(state, "sortie.db"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return state
	}
	var first string
	for _, c := range []struct {
		name string
		args []string
	}{
		{"run", []string{"run", "--config", cfg, "--pipeline", "deploy"}},
		{"serve", []string{"serve", "--config", cfg, "--listen", "127.0.0.1:0"}},
		{"history", []string{"history"}},
	} {
		state := damaged(c.name)
		r := runWithin(t, time.Minute, append(c.args, "--state-dir", state)...)
		db := filepath.Join(state, "sortie.db")
		if r.code != 1 || !strings.HasPrefix(r.stderr, "sortie: sqlite: open "+db+": the database is damaged (") ||
			!strings.Contains(r.stderr, `(docs/operations.md, "Backups of the state")`) || r.stdout != "" {
			t.Errorf("%s: exit %d\nstdout %q\nstderr %q", c.name, r.code, r.stdout, r.stderr)
		}
		// The same message but for the file's name.
		if msg := strings.ReplaceAll(r.stderr, state, "STATE"); first == "" {
			first = msg
		} else if msg != first {
			t.Errorf("%s says\n%s\nwhere run says\n%s", c.name, msg, first)
		}
	}
}

// runWithin runs the binary like runSortie, but kills it after d: a
// command that should have failed at once may be serving instead.
func runWithin(t *testing.T, d time.Duration, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, sortieBin(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Errorf("sortie %s still ran after %s\n%s%s", strings.Join(args, " "), d, out.String(), errb.String())
		return result{-1, out.String(), errb.String()}
	case errors.As(err, &ee):
		return result{ee.ExitCode(), out.String(), errb.String()}
	case err != nil:
		t.Fatal(err)
	}
	return result{0, out.String(), errb.String()}
}
