package web_test

import (
	"context"
	"time"

	"fmt"
	"github.com/chromedp/chromedp"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/server/servertest"
)

// playJob is a job's run: a real ansible-playbook over local hosts: web01
// to web04 and ns01, of which web03 fails a task and, with unreachable
// set, gone cannot be reached. before runs first.
func playJob(t *testing.T, before, root string, hosts []string) string {
	t.Helper()
	if _, err := exec.LookPath("ansible-playbook"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ansible-playbook not installed: apt-get install ansible-core (see .ci/run)")
		}
		t.Skip("ansible-playbook not installed")
	}
	var inv strings.Builder
	for _, h := range hosts {
		if h == "gone" {
			fmt.Fprintf(&inv, "            %s: {ansible_connection: ssh, ansible_host: 127.0.0.1, ansible_port: 1, ansible_user: nobody}\n", h)
		} else {
			fmt.Fprintf(&inv, "            %s: {}\n", h)
		}
	}
	return fmt.Sprintf(`|
      %s
      d=$(mktemp -d)
      cat > "$d/inventory.yaml" <<'END'
      all:
        vars: {ansible_connection: local, ansible_python_interpreter: "{{ ansible_playbook_python }}"}
        hosts:
%s      END
      cat > "$d/play.yaml" <<'END'
      - name: deploy the site
        hosts: all
        gather_facts: false
        tasks:
          - name: Create the directories
            ansible.builtin.file: {path: "%[3]s/{{ inventory_hostname }}", state: directory}
          - name: Write the configuration
            ansible.builtin.copy: {dest: "%[3]s/{{ inventory_hostname }}/site.conf", content: "listen 443\n"}
          - name: Check the free space
            ansible.builtin.fail: {msg: "/var is 100%% full on {{ inventory_hostname }}"}
            when: inventory_hostname == "web03"
          - name: Install the certificate
            ansible.builtin.debug: {msg: installed}
            when: inventory_hostname is match("web")
          - name: Reload the service
            ansible.builtin.command: "true"
            changed_when: false
      END
      export ANSIBLE_LOCAL_TEMP="$d/tmp" ANSIBLE_REMOTE_TEMP="$d/tmp" ANSIBLE_RETRY_FILES_ENABLED=0 ANSIBLE_HOST_KEY_CHECKING=0
      ansible-playbook -i "$d/inventory.yaml" "$d/play.yaml"`, before, inv.String(), root)
}

// playing bounds the waits for what real plays report: ansible-playbook
// is slow on a busy machine.
const playing = 45 * time.Second

// TestBrowserHostsViews: a buildset's hosts × jobs matrix shows each
// host's outcome per job, the failed and unreachable hosts first, and
// follows the buildset as its next job reports, without a reload; a
// build's hosts × tasks grid puts the failed host first, a failure's
// message is one click away, and the host filter hides the other hosts.
func TestBrowserHostsViews(t *testing.T) {
	g0, g := servertest.NewGate(t), servertest.NewGate(t)
	root := t.TempDir()
	e := startSortie(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  deploy-web:
    run: %s
  deploy-dns:
    run: %s
pipelines:
  deploy: {jobs: [boot, deploy-web, deploy-dns]}
`, playJob(t, g0.Wait(), root, []string{"web01", "web02", "web03", "web04", "ns01"}),
		playJob(t, g.Wait(), root, []string{"ns01", "ns02", "gone"})), g0, g)
	id := e.Trigger("deploy", nil)
	e.WaitStarted(id, "deploy-dns")
	e.WaitStarted(id, "deploy-web")

	// Opened before any play reported: no matrix yet, then one in place.
	b := newBrowser(t, e.URL)
	b.open("/buildsets/" + id)
	b.waitFor("the page", `document.getElementById('bs-state')`, `document.body.innerHTML.slice(0, 2000)`, live)
	if eval[bool](b, `!!document.getElementById('hosts')`) {
		t.Errorf("a hosts matrix shows before any play reported")
	}
	b.mark()
	g0.Open(t)
	e.Wait(id, "deploy-web is done", func(bs *server.BuildsetJSON) bool {
		for _, b := range bs.Builds {
			if b.Job == "deploy-web" {
				return b.Result != ""
			}
		}
		return false
	})
	matrix := `document.getElementById('hosts')?.outerHTML || document.body.innerHTML.slice(0, 3000)`
	b.waitFor("the matrix shows web03 failed in deploy-web",
		`document.querySelector('#hosts-matrix tr[data-host="web03"] td[data-status="failed"]')`, matrix, playing)
	b.stillLoaded("buildset page")
	if !eval[bool](b, `document.getElementById('actions').nextElementSibling?.id === 'hosts'`) {
		t.Errorf("the matrix did not come where the server renders it, after the actions")
	}
	rows := eval[[]string](b, `[...document.querySelectorAll('#hosts-matrix tbody tr')].map((r) => r.dataset.host)`)
	if strings.Join(rows, " ") != "web03 ns01 web01 web02 web04" {
		t.Errorf("matrix rows %q, want the failed host first, then by name", rows)
	}
	cols := eval[[]string](b, `[...document.querySelectorAll('#hosts-matrix thead th.hjob')].map((c) => c.textContent)`)
	if strings.Join(cols, " ") != "deploy-web deploy-dns" {
		t.Errorf("matrix columns %q", cols)
	}
	if s := eval[string](b, `document.querySelector('#hosts-matrix tr[data-host="ns01"] td:nth-of-type(2)').dataset.status`); s != "none" {
		t.Errorf("ns01 in deploy-dns before it ran: %q, want none (not run)", s)
	}
	if s := eval[string](b, `document.querySelector('#hosts-matrix tr[data-host="web01"] td:nth-of-type(1)').dataset.status`); s != "changed" {
		t.Errorf("web01 in deploy-web: %q, want changed", s)
	}
	b.mark()
	g.Open(t)
	b.waitFor("deploy-dns's hosts come in without a reload",
		`document.querySelector('#hosts-matrix tr[data-host="gone"] td[data-status="unreachable"]') && document.getElementById('hosts-box').dataset.live === 'false'`, matrix, playing)
	b.stillLoaded("buildset page")
	rows = eval[[]string](b, `[...document.querySelectorAll('#hosts-matrix tbody tr')].map((r) => r.dataset.host)`)
	if strings.Join(rows, " ") != "gone web03 ns01 ns02 web01 web02 web04" {
		t.Errorf("matrix rows %q, want the unreachable and failed hosts first", rows)
	}
	b.shot("buildset-hosts")

	// From the matrix, web03's cell leads to its tasks in deploy-web.
	href := eval[string](b, `document.querySelector('#hosts-matrix tr[data-host="web03"] td a').getAttribute('href')`)
	if href != "/buildsets/"+id+"/builds/deploy-web?host=web03#hosts" {
		t.Errorf("web03's cell leads to %q", href)
	}
	b.open("/buildsets/" + id + "/builds/deploy-web")
	grid := `document.getElementById('hosts')?.outerHTML || document.body.innerHTML.slice(0, 3000)`
	b.waitFor("the grid", `document.querySelector('#hosts-grid tbody tr')`, grid, live)
	rows = eval[[]string](b, `[...document.querySelectorAll('#hosts-grid tbody tr')].map((r) => r.dataset.host)`)
	if strings.Join(rows, " ") != "web03 ns01 web01 web02 web04" {
		t.Errorf("grid rows %q, want the failed host first", rows)
	}
	tasks := eval[[]string](b, `[...document.querySelectorAll('#hosts-grid thead th.htask')].map((c) => c.textContent)`)
	if strings.Join(tasks, "|") != "Create the directories|Write the configuration|Check the free space|Install the certificate|Reload the service" {
		t.Errorf("grid columns %q", tasks)
	}
	statuses := eval[[]string](b, `[...document.querySelectorAll('#hosts-grid tr[data-host="web03"] td')].map((c) => c.dataset.status)`)
	if strings.Join(statuses, " ") != "changed changed failed none none" {
		t.Errorf("web03's cells %q", statuses)
	}
	statuses = eval[[]string](b, `[...document.querySelectorAll('#hosts-grid tr[data-host="ns01"] td')].map((c) => c.dataset.status)`)
	if strings.Join(statuses, " ") != "changed changed skipped skipped ok" {
		t.Errorf("ns01's cells %q", statuses)
	}
	// One click on the failed cell shows its message.
	if err := runClick(b, `#hosts-grid tr[data-host="web03"] td[data-status="failed"] a`); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the failure's message is the target", `document.querySelector('.host-details li:target .host-message')`, grid, live)
	if msg := eval[string](b, `document.querySelector('.host-details li:target .host-message').textContent`); msg != "/var is 100% full on web03" {
		t.Errorf("message %q", msg)
	}
	if !eval[bool](b, `(() => { const r = document.querySelector('.host-details li:target').getBoundingClientRect(); return r.top >= 0 && r.top < innerHeight; })()`) {
		t.Errorf("the failure's message is not on the screen after the click")
	}
	b.open("/buildsets/" + id + "/builds/deploy-web")
	b.shot("build-hosts")

	// The filter hides the other hosts, and the address keeps it.
	if err := typeInto(b, "#host-filter", "web0"); err != nil {
		t.Fatal(err)
	}
	b.waitFor("the filter applies", `document.querySelector('#hosts-grid tr[data-host="ns01"]').hidden`, grid, live)
	shown := eval[[]string](b, `[...document.querySelectorAll('#hosts-grid tbody tr:not([hidden])')].map((r) => r.dataset.host)`)
	if strings.Join(shown, " ") != "web03 web01 web02 web04" {
		t.Errorf("filtered rows %q", shown)
	}
	if loc := b.location(); !strings.HasSuffix(loc, "?host=web0") {
		t.Errorf("the address %q does not keep the filter", loc)
	}
	b.open("/buildsets/" + id + "/builds/deploy-web?host=ns")
	shown = eval[[]string](b, `[...document.querySelectorAll('#hosts-grid tbody tr:not([hidden])')].map((r) => r.dataset.host)`)
	if strings.Join(shown, " ") != "ns01" {
		t.Errorf("rows filtered by the address %q", shown)
	}
}

// runClick clicks the element selector matches, as a person would.
func runClick(b *browser, selector string) error {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Do(ctx, chromedp.Click(selector))
}

// typeInto types text into the field selector matches.
func typeInto(b *browser, selector, text string) error {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	return chromedp.Do(ctx, chromedp.SendKeys(selector, text))
}
