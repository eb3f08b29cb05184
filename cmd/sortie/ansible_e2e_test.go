package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/sortie-ci/sortie/internal/ansible/ansibletest"
	"github.com/sortie-ci/sortie/internal/bastion/ssh/sshtest"
	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

// TestAnsibleRecaps: a run: job that calls ansible-playbook twice, on a
// play with every kind of result (ok, changed, failed, unreachable,
// skipped, rescued, ignored), is recorded as two plays whose recaps are
// the sums of ansible-playbook's own PLAY RECAP lines, on the local
// bastion and over SSH; the summary names the failed and unreachable
// hosts.
func TestAnsibleRecaps(t *testing.T) {
	t.Parallel()
	ansibletest.Need(t)
	every, err := os.ReadFile("../../internal/ansible/testdata/every-status.yaml")
	if err != nil {
		t.Fatal(err)
	}
	inventory, err := os.ReadFile("../../internal/ansible/testdata/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, over := range []string{"local", "ssh"} {
		t.Run(over, func(t *testing.T) {
			t.Parallel()
			repo, _ := sourcetest.Repo(t, map[string]string{"every.yaml": string(every), "inventory.yaml": string(inventory)})
			dir := t.TempDir()
			bastion := ""
			if over == "ssh" {
				bastion = bastionYAML(sshtest.Start(t), filepath.Join(dir, "bastion"))
			}
			out := filepath.Join(dir, "out")
			cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
%s
jobs:
  boot: {bootstrap: true, install: ["true"]}
  twice:
    run: |
      export ANSIBLE_LOCAL_TEMP=%[3]s/tmp ANSIBLE_REMOTE_TEMP=%[3]s/tmp ANSIBLE_HOST_KEY_CHECKING=0 ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_NOCOLOR=1
      ansible-playbook -i inventory.yaml -e out=%[3]s -e secret=s3cret every.yaml
      ansible-playbook -i inventory.yaml -e out=%[3]s -e secret=s3cret every.yaml
pipelines:
  deploy: {jobs: [twice]}
`, repo, bastion, out))
			state := filepath.Join(dir, "state")
			r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state, "--report", filepath.Join(dir, "r.json"))
			if r.code != 1 {
				t.Fatalf("exit %d, want 1 (beta fails)\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			if !strings.Contains(r.stdout, "  twice: failed beta; unreachable gone\n") {
				t.Errorf("the summary does not name the failed and unreachable hosts:\n%s", r.stdout)
			}
			rep := readReport(t, filepath.Join(dir, "r.json"))
			var log string
			for _, b := range rep.Builds {
				if b.Job == "twice" {
					data, err := os.ReadFile(b.Log)
					if err != nil {
						t.Fatal(err)
					}
					for _, l := range strings.Split(string(data), "\n") {
						log += logs.Text(l) + "\n"
					}
				}
			}
			want := ansibletest.Recaps(log)
			if len(want) != 3 || want["alpha"].Rescued != 2 || want["gone"].Unreachable != 2 || want["beta"].Failed != 2 {
				t.Fatalf("the log's PLAY RECAPs are not the two of every.yaml: %v\n%s", want, log)
			}
			st, err := sqlite.Open(context.Background(), filepath.Join(state, "sortie.db"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			got, err := st.BuildHosts(context.Background(), rep.ID, "twice")
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(want, ansibletest.RecapMap(got.Recaps)); d != "" {
				t.Errorf("recaps (-PLAY RECAPs +kept):\n%s", d)
			}
			if got.Summary.Runs != 2 || got.Summary.Plays != 2 || got.Summary.Note != "" {
				t.Errorf("summary %+v, want two runs of one play each, no note", got.Summary)
			}
		})
	}
}

// TestAnsibleCutShort: a play killed with SIGKILL mid-play, and events
// that are garbage, leave each build with its command's own result and a
// note that says what was not read; the plugin never fails a build.
func TestAnsibleCutShort(t *testing.T) {
	t.Parallel()
	ansibletest.Need(t)
	inventory, err := os.ReadFile("../../internal/ansible/testdata/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := sourcetest.Repo(t, map[string]string{"inventory.yaml": string(inventory), "slow.yaml": `
- name: slow
  hosts: alpha
  gather_facts: false
  tasks:
    - name: first
      ansible.builtin.debug: {msg: first}
    - name: the long one
      ansible.builtin.command: sleep 60
`})
	dir := t.TempDir()
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  killed:
    run: |
      export ANSIBLE_LOCAL_TEMP=%[2]s/tmp ANSIBLE_REMOTE_TEMP=%[2]s/tmp ANSIBLE_RETRY_FILES_ENABLED=0
      ansible-playbook -i inventory.yaml slow.yaml &
      pid=$!
      # Killed once the long task has started, which the events say.
      until grep -q '"name":"the long one"' "$SORTIE_EVENTS" 2>/dev/null; do sleep 0.1; done
      kill -9 $pid
      wait $pid || true
      echo "the play was killed; this job succeeds all the same"
  garbage:
    run: |
      printf '{"ev":"start","run":"x"\nnot json at all\n\000\377\n' >> "$SORTIE_EVENTS"
      echo done
pipelines:
  deploy: {jobs: [killed, garbage]}
`, repo, dir))
	state := filepath.Join(dir, "state")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state, "--report", filepath.Join(dir, "r.json"))
	if r.code != 0 {
		t.Fatalf("exit %d, want 0: the jobs succeed whatever their events say\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{
		"  killed: ansible-playbook slow.yaml ended before its recap (killed, or its output cut short)",
		"  garbage: 3 lines of the Ansible callback's output could not be read and were left out",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the summary does not say %q:\n%s", want, r.stdout)
		}
	}
	rep := readReport(t, filepath.Join(dir, "r.json"))
	for _, b := range rep.Builds {
		if b.Result != "SUCCESS" {
			t.Errorf("%s: %s", b.Job, b.Result)
		}
	}
}

// TestAnsibleCheckAndLimit: a playbook job in check mode (--check, or a
// pipeline with check: true) changes nothing and records the diff; --limit
// restricts the hosts; both are frozen into the buildset and shown in the
// summary and the history; a supercedent pipeline refuses them.
func TestAnsibleCheckAndLimit(t *testing.T) {
	t.Parallel()
	ansibletest.Need(t)
	repo, _ := sourcetest.Repo(t, map[string]string{
		"inventory.yaml": "all:\n  vars: {ansible_connection: local, ansible_python_interpreter: \"{{ ansible_playbook_python }}\"}\n  hosts: {alpha: {}, beta: {}}\n",
		"site.yaml": `
- name: site
  hosts: all
  gather_facts: false
  tasks:
    - name: write the version
      ansible.builtin.copy: {dest: "{{ lookup('env', 'OUT') }}/{{ inventory_hostname }}", content: "v2\n"}
`})
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"alpha", "beta"} {
		if err := os.WriteFile(filepath.Join(out, h), []byte("v1\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := writeConfig(t, dir, fmt.Sprintf(`
source: {url: %s}
jobs:
  boot: {bootstrap: true, install: ["true"]}
  site:
    playbook: site.yaml
    env: {OUT: %s, ANSIBLE_INVENTORY: inventory.yaml, ANSIBLE_LOCAL_TEMP: %[3]s/tmp, ANSIBLE_REMOTE_TEMP: %[3]s/tmp}
pipelines:
  deploy: {jobs: [site]}
  preview: {jobs: [site], check: true}
  periodic: {jobs: [site], manager: supercedent}
`, repo, out, dir))
	state := filepath.Join(dir, "state")
	files := func() string {
		a, _ := os.ReadFile(filepath.Join(out, "alpha"))
		b, _ := os.ReadFile(filepath.Join(out, "beta"))
		return strings.TrimSpace(string(a)) + " " + strings.TrimSpace(string(b))
	}
	st := func() *sqlite.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(state, "sortie.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}

	rep := filepath.Join(dir, "check.json")
	r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state, "--check", "--limit", "alpha", "--report", rep)
	if r.code != 0 {
		t.Fatalf("check run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := files(); got != "v1 v1" {
		t.Errorf("after the check run the files are %q, want them unchanged", got)
	}
	if !strings.Contains(r.stdout, ": SUCCESS in ") || !strings.Contains(r.stdout, "(check mode, limit alpha)\n") {
		t.Errorf("the summary does not mark the check run:\n%s", r.stdout)
	}
	report := readReport(t, rep)
	if !report.Check || report.Limit != "alpha" {
		t.Errorf("report check=%v limit=%q", report.Check, report.Limit)
	}
	got, err := st().BuildHosts(context.Background(), report.ID, "site")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Recaps) != 1 || got.Recaps[0].Host != "alpha" || got.Recaps[0].Changed != 1 {
		t.Errorf("recaps %+v, want alpha alone, changed", got.Recaps)
	}
	if len(got.Results) != 1 || !strings.Contains(got.Results[0].Diff, "-v1") || !strings.Contains(got.Results[0].Diff, "+v2") {
		t.Errorf("results %+v, want alpha's diff from v1 to v2", got.Results)
	}

	rep = filepath.Join(dir, "preview.json")
	if r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "preview", "--state-dir", state, "--report", rep); r.code != 0 {
		t.Fatalf("preview: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := files(); got != "v1 v1" || !readReport(t, rep).Check {
		t.Errorf("a check: true pipeline: files %q, check %v; want unchanged, in check mode", got, readReport(t, rep).Check)
	}

	if r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "deploy", "--state-dir", state, "--limit", "beta"); r.code != 0 {
		t.Fatalf("limited run: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	if got := files(); got != "v1 v2" {
		t.Errorf("after --limit beta the files are %q, want beta's alone changed", got)
	}

	h := runSortie(t, nil, "history", "--state-dir", state)
	if !strings.Contains(h.stdout, "check mode, limit alpha\n") || !strings.Contains(h.stdout, "limit beta\n") {
		t.Errorf("history does not show the modes:\n%s", h.stdout)
	}
	if r := runSortie(t, nil, "run", "--config", cfg, "--pipeline", "periodic", "--state-dir", state, "--check"); r.code != 2 || !strings.Contains(r.stderr, "supercedent") {
		t.Errorf("--check on a supercedent pipeline: exit %d\n%s", r.code, r.stderr)
	}
}

// TestTriggerWaitHosts: `sortie trigger --wait --check` on a server names
// the failed and unreachable hosts by job, and marks the check mode.
func TestTriggerWaitHosts(t *testing.T) {
	t.Parallel()
	ansibletest.Need(t)
	dir := t.TempDir()
	s := startClientServer(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, install: ["true"]}
  play:
    run: |
      cat > %[1]s/inventory.yaml <<'END'
      all:
        vars: {ansible_python_interpreter: "{{ ansible_playbook_python }}"}
        hosts:
          alpha: {ansible_connection: local}
          beta: {ansible_connection: local}
          gone: {ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: 1, ansible_user: nobody}
      END
      cat > %[1]s/play.yaml <<'END'
      - hosts: all
        gather_facts: false
        tasks:
          - ansible.builtin.ping:
          - ansible.builtin.fail: {msg: beta is broken}
            when: inventory_hostname == "beta"
      END
      export ANSIBLE_LOCAL_TEMP=%[1]s/tmp ANSIBLE_REMOTE_TEMP=%[1]s/tmp ANSIBLE_HOST_KEY_CHECKING=0 ANSIBLE_RETRY_FILES_ENABLED=0
      ansible-playbook -i %[1]s/inventory.yaml ${SORTIE_CHECK:+--check --diff} %[1]s/play.yaml
pipelines:
  deploy: {jobs: [play]}
`, dir))
	r := s.client(t, nil, "trigger", "--pipeline", "deploy", "--check", "--wait")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (beta fails)\n%s%s", r.code, r.stdout, r.stderr)
	}
	want := "hosts (check mode): 3 reported by Ansible; failed or unreachable, by job:\n  play: failed beta; unreachable gone\n"
	if !strings.Contains(r.stdout, want) {
		t.Errorf("the summary does not say\n%s\nit says:\n%s", want, r.stdout)
	}
}
