package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
