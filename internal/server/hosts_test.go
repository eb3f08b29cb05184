package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/buildset"
)

// hostsConfig is a pipeline whose one job runs a real play over three
// local hosts, one of which (c) fails, with the check mode and limit the
// buildset gives it.
func hostsConfig(t *testing.T, root string) string {
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ansible-playbook not installed: apt-get install ansible-core (see .ci/run)")
		}
		t.Skip("ansible-playbook not installed")
	}
	return fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, install: ["true"]}
  play:
    run: |
      d=$(mktemp -d)
      cat > "$d/inventory.yaml" <<'END'
      all:
        vars: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
        hosts: {a: {}, b: {}, c: {}}
      END
      cat > "$d/play.yaml" <<'END'
      - name: three hosts
        hosts: all
        gather_facts: false
        tasks:
          - name: write the file
            ansible.builtin.copy:
              dest: "%[1]s/{{ inventory_hostname }}"
              content: "check={{ ansible_check_mode }}\n"
          - name: c is broken
            ansible.builtin.fail: {msg: "c has no disk"}
            when: inventory_hostname == "c"
      END
      export ANSIBLE_LOCAL_TEMP="$d/tmp" ANSIBLE_REMOTE_TEMP="$d/tmp" ANSIBLE_RETRY_FILES_ENABLED=0
      ansible-playbook -i "$d/inventory.yaml" ${SORTIE_CHECK:+--check --diff} ${SORTIE_LIMIT:+--limit "$SORTIE_LIMIT"} "$d/play.yaml"
pipelines:
  deploy: {jobs: [play]}
  later: {jobs: [play], manager: supercedent}
`, root)
}

// TestHostsAPI: a buildset's hosts and a build's results per host and
// task, through the API, from a real play; a check buildset with a limit
// changes nothing, on its hosts only, and says so.
func TestHostsAPI(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	e := start(t, hostsConfig(t, root), envOpt{})

	id := e.trigger("deploy", map[string]any{})
	if bs := e.waitDone(id); bs.Result != "FAILURE" || bs.Check || bs.Limit != "" {
		t.Fatalf("buildset %s %s check=%v limit=%q, want a plain FAILURE (c fails)", bs.State, bs.Result, bs.Check, bs.Limit)
	}
	var hosts buildset.Hosts
	e.getJSON("/api/v1/buildsets/"+id+"/hosts", &hosts)
	if len(hosts.Builds) != 1 || hosts.Builds[0].Job != "play" || hosts.Builds[0].Plays != 1 || hosts.Builds[0].Attempt != 1 {
		t.Fatalf("builds %+v, want play's attempt 1 with one play", hosts.Builds)
	}
	got := map[string]string{}
	for _, h := range hosts.Hosts {
		c := h.Jobs["play"]
		got[h.Host] = fmt.Sprintf("ok=%d changed=%d failed=%d", c.OK, c.Changed, c.Failed)
	}
	want := map[string]string{"a": "ok=1 changed=1 failed=0", "b": "ok=1 changed=1 failed=0", "c": "ok=1 changed=1 failed=1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("recaps %v, want %v", got, want)
	}
	if tr := hosts.Trouble(); len(tr) != 1 || strings.Join(tr[0].Failed, ",") != "c" {
		t.Errorf("trouble %+v, want play: failed c", tr)
	}

	var b BuildHostsJSON
	e.getJSON("/api/v1/buildsets/"+id+"/builds/play/hosts", &b)
	var failures []string
	for _, r := range b.Tasks {
		if r.Status == "failed" {
			failures = append(failures, r.Host+": "+r.Name+": "+r.Message)
		}
	}
	if strings.Join(failures, "|") != "c: c is broken: c has no disk" || len(b.Tasks) != 6 { // two tasks on three hosts, the second skipped on a and b
		t.Errorf("%d results, failures %q", len(b.Tasks), failures)
	}

	// The hosts per job and outcome, with no host label.
	_, metrics := e.do("GET", "/metrics", nil, "")
	for _, line := range []string{
		`sortie_ansible_hosts_total{job="play",outcome="failed",pipeline="deploy"} 1`,
		`sortie_ansible_hosts_total{job="play",outcome="changed",pipeline="deploy"} 3`,
		`sortie_ansible_hosts_total{job="play",outcome="reported",pipeline="deploy"} 3`,
		`sortie_ansible_hosts_total{job="play",outcome="unreachable",pipeline="deploy"} 0`,
	} {
		if !strings.Contains(string(metrics), line+"\n") {
			t.Errorf("metrics have no line %s", line)
		}
	}

	// In check mode, on a only: nothing written, the diff kept.
	id2 := e.trigger("deploy", map[string]any{"check": true, "limit": "a"})
	if bs := e.waitDone(id2); bs.Result != "SUCCESS" || !bs.Check || bs.Limit != "a" {
		t.Fatalf("check buildset %s check=%v limit=%q, want SUCCESS in check mode, limit a", bs.Result, bs.Check, bs.Limit)
	}
	if data, _ := os.ReadFile(filepath.Join(root, "a")); string(data) != "check=False\n" {
		t.Errorf("check mode changed a's file: %q", data)
	}
	var b2 BuildHostsJSON
	e.getJSON("/api/v1/buildsets/"+id2+"/builds/play/hosts", &b2)
	if !b2.Check || b2.Limit != "a" || len(b2.Hosts) != 1 || b2.Hosts[0].Host != "a" {
		t.Fatalf("check build: check=%v limit=%q hosts %+v, want a alone", b2.Check, b2.Limit, b2.Hosts)
	}
	if len(b2.Tasks) == 0 || b2.Tasks[0].Status != "changed" || !strings.Contains(b2.Tasks[0].Diff, "+check=True") {
		t.Errorf("check result %+v, want changed with the diff", b2.Tasks)
	}

	// A supercedent pipeline refuses a check run; an unknown build is 404.
	if code, out := e.do("POST", "/api/v1/pipelines/later/trigger", map[string]any{"check": true}, testToken); code != http.StatusBadRequest {
		t.Errorf("check on a supercedent pipeline: %d %s", code, out)
	}
	if code, _ := e.do("GET", "/api/v1/buildsets/"+id+"/builds/nope/hosts", nil, ""); code != http.StatusNotFound {
		t.Errorf("unknown build: %d", code)
	}
	if code, _ := e.do("GET", "/api/v1/buildsets/nope/hosts", nil, ""); code != http.StatusNotFound {
		t.Errorf("unknown buildset: %d", code)
	}
}

func (e *env) getJSON(path string, v any) {
	e.t.Helper()
	code, out := e.do("GET", path, nil, "")
	if code != http.StatusOK {
		e.t.Fatalf("GET %s: %d %s", path, code, out)
	}
	if err := json.Unmarshal(out, v); err != nil {
		e.t.Fatalf("GET %s: %v\n%s", path, err, out)
	}
}
