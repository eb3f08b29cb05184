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
