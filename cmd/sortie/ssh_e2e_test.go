package main

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion/ssh/sshtest"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
)

// bastionYAML is the bastion section for a test sshd.
func bastionYAML(srv *sshtest.Server, workdir string) string {
	return fmt.Sprintf("bastion:\n  host: %s\n  port: %d\n  user: %s\n  identity_file: %s\n  known_hosts: %s\n  workdir: %s\n",
		srv.Host, srv.Port, srv.User, srv.IdentityFile, srv.KnownHosts, workdir)
}

// copyTree copies the repository's examples/ansible into dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestAnsibleOverSSH deploys the shipped Ansible example through a real
// sshd: every job is a real ansible-playbook run on the bastion, from the
// checkout Sortie shipped there, and the files the playbooks manage appear;
// ns02, broken on purpose, fails service-dns, and the summary says so.
func TestAnsibleOverSSH(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ansible-playbook not installed: apt-get install ansible-core (see .ci/run)")
		}
		t.Skip("ansible-playbook not installed: apt-get install ansible-core (see .ci/run)")
	}
	srv := sshtest.Start(t)
	// A repository holding the example where the config expects it.
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "infra"})
	copyTree(t, "../../examples/ansible", filepath.Join(repo, "examples/ansible"))
	sourcetest.Commit(t, repo, "playbooks")
	dir := t.TempDir()
	root := filepath.Join(dir, "managed")
	remote := filepath.Join(dir, "bastion")
	example, err := os.ReadFile("../../examples/ansible/sortie.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfgText := strings.Replace(string(example), "url: ../..", "url: "+repo, 1)
	cfgText = strings.ReplaceAll(cfgText, "EXAMPLE_ROOT: /tmp/sortie-ansible-example", "EXAMPLE_ROOT: "+root)
	if cfgText == string(example) || !strings.Contains(cfgText, root) {
		t.Fatal("the example config changed shape: update this test")
	}
	cfg := writeConfig(t, dir, cfgText+"\n"+bastionYAML(srv, remote))
	rep := filepath.Join(dir, "r.json")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", filepath.Join(dir, "state"), "--report", rep)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (ns02 fails)\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stdout, "\n  service-dns: failed ns02\n") {
		t.Errorf("the summary does not name ns02 as service-dns's failed host:\n%s", r.stdout)
	}
	report := readReport(t, rep)
	if len(report.Builds) != 5 {
		t.Fatalf("%d builds", len(report.Builds))
	}
	for _, b := range report.Builds {
		log, _ := os.ReadFile(b.Log)
		want := "SUCCESS"
		if b.Job == "service-dns" {
			want = "FAILURE"
		}
		if b.Result != want {
			t.Errorf("%s: %s, want %s\n%s", b.Job, b.Result, want, log)
		}
		if b.Job == "service-web" && !strings.Contains(string(log), "PLAY RECAP") {
			t.Errorf("service-web's log has no ansible output:\n%s", log)
		}
	}
	// The playbooks did what they say, on the bastion.
	for _, f := range []string{"web01/etc/motd", "web01/etc/nginx/sites-available/www.conf", "web02/etc/letsencrypt/live/web02/fullchain.pem", "ns01/etc/bind/zones/db.example.org"} {
		matches, _ := filepath.Glob(filepath.Join(root, f))
		if len(matches) == 0 {
			found, _ := exec.Command("find", root, "-type", "f").CombinedOutput()
			t.Errorf("%s was not written; the playbooks wrote:\n%s", f, found)
		}
	}
	// From the buildset's own checkout in the bastion's workdir.
	bootLog, _ := os.ReadFile(report.Builds[0].Log)
	if !strings.Contains(string(bootLog), "checked out "+report.Commit+" in "+remote+"/src/"+report.ID) {
		t.Errorf("bootstrap log:\n%s", bootLog)
	}
}

// TestConcurrentBuildsetsOverSSH: two buildsets at different commits run at
// once on one bastion, and every job sees its own commit.
func TestConcurrentBuildsetsOverSSH(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	repo, shas := sourcetest.Repo(t, map[string]string{"version": "1"}, map[string]string{"version": "2"})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
%s
jobs:
  boot: {bootstrap: true, install: ["true"]}
  check:
    run: |
      for i in 1 2 3 4 5; do
        test "$(git -C "$SORTIE_SRC" rev-parse HEAD)" = "$SORTIE_COMMIT" || exit 3
        echo "$SORTIE_COMMIT $(cat version)" >> %[3]s/seen-$SORTIE_BUILDSET
        sleep 0.1
      done
pipelines:
  deploy: {jobs: [check]}
`, repo, bastionYAML(srv, filepath.Join(dir, "bastion")), dir))
	var wg sync.WaitGroup
	for i, sha := range shas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", filepath.Join(dir, "state"),
				"--commit", sha, "--report", filepath.Join(dir, fmt.Sprintf("r%d.json", i)))
			if r.code != 0 {
				t.Errorf("run at %s: exit %d\n%s%s", sha, r.code, r.stdout, r.stderr)
			}
		}()
	}
	wg.Wait()
	for i, sha := range shas {
		rep := readReport(t, filepath.Join(dir, fmt.Sprintf("r%d.json", i)))
		data, _ := os.ReadFile(filepath.Join(dir, "seen-"+rep.ID))
		if want := strings.Repeat(fmt.Sprintf("%s %d\n", sha, i+1), 5); string(data) != want {
			t.Errorf("buildset at %s saw:\n%s", sha, data)
		}
	}
}

// TestBastionDownIsRetriedThenRetryLimit stops sshd while a job runs: the
// attempt is lost, the retry cannot connect, and the build ends
// RETRY_LIMIT with a message saying so.
func TestBastionDownIsRetriedThenRetryLimit(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	started := filepath.Join(dir, "started")
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
%s
jobs:
  boot: {bootstrap: true, install: ["true"]}
  long: {run: "touch %s; sleep 60", attempts: 2}
pipelines:
  deploy: {jobs: [long]}
`, repo, bastionYAML(srv, filepath.Join(dir, "bastion")), started))
	rep := filepath.Join(dir, "r.json")
	done := make(chan result, 1)
	go func() {
		done <- runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", filepath.Join(dir, "state"), "--report", rep)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(started); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the job never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	srv.Stop()
	var r result
	select {
	case r = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("sortie did not finish after the bastion went away")
	}
	if r.code != 1 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	report := readReport(t, rep)
	long := report.Builds[1]
	if long.Result != "RETRY_LIMIT" || long.Attempt != 2 || !strings.Contains(long.Reason, "connect to 127.0.0.1") || !strings.Contains(long.Reason, "(attempt 2 of 2)") {
		t.Fatalf("long: %+v", long)
	}
}

// TestWrongHostKeyRunsNothing: a bastion whose host key is not the one in
// known_hosts is refused before any job runs.
func TestWrongHostKeyRunsNothing(t *testing.T) {
	t.Parallel()
	srv := sshtest.Start(t)
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "x"})
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	b := strings.Replace(bastionYAML(srv, filepath.Join(dir, "bastion")), srv.KnownHosts, srv.WrongKnownHosts(t), 1)
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
%s
jobs:
  boot: {bootstrap: true, install: ["touch %s"], attempts: 1}
  a: {run: "touch %s"}
pipelines:
  deploy: {jobs: [a]}
`, repo, b, marker, marker))
	rep := filepath.Join(dir, "r.json")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", filepath.Join(dir, "state"), "--report", rep)
	if r.code != 1 {
		t.Fatalf("exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	report := readReport(t, rep)
	if boot := report.Builds[0]; boot.Result != "RETRY_LIMIT" || !strings.Contains(boot.Reason, "CHANGED") {
		t.Fatalf("boot: %+v", boot)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("something ran on a bastion with the wrong host key")
	}
}
