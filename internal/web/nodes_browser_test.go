package web_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// TestBrowserNodes: the status page's Nodes section shows this server
// leading, its slots, version and renewal; a second node that registers
// with another config shows up without a reload, its config flagged as
// differing from the leader's, with the warning above the table.
func TestBrowserNodes(t *testing.T) {
	e := startSortie(t, `
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: "true"}
pipelines:
  p: {jobs: [boot, work]}
`)
	b := newBrowser(t, e.URL)
	b.open("/")
	row := `document.querySelector('section#nodes tr.leader')`
	b.waitFor("this node leads", fmt.Sprintf(`%s && %[1]s.textContent.includes('this node') && %[1]s.textContent.includes('leader, term') && %[1]s.querySelector('td.slots').textContent === '0 of 8' && /\d{4}-/.test(%[1]s.querySelector('td.renewal').textContent)`, row),
		`document.querySelector('section#nodes')?.outerHTML`, live)
	if eval[bool](b, `!!document.querySelector('section#nodes .drift, section#nodes .differs')`) {
		t.Errorf("a config drift shows with one node")
	}
	b.mark()
	if _, err := e.Store.RegisterOwner(t.Context(), store.RegisterOwnerParams{
		ID: "o-ghost", Kind: store.OwnerNode, Node: "ghost", Host: "elsewhere", StateDir: "/srv/sortie",
		Version: "v9.9.9", ConfigFP: "0123456789abcdef", SlotsMax: 4, Lease: time.Hour,
	}); err != nil {
		t.Fatal(err)
	}
	ghost := `document.querySelector('section#nodes tr[data-node="ghost"]')`
	b.waitFor("the second node, its config differing", fmt.Sprintf(`%s && %[1]s.querySelector('.differs') && %[1]s.querySelector('td.version').textContent === 'v9.9.9' && %[1]s.querySelector('td.slots').textContent === '0 of 4' && !%[1]s.classList.contains('leader')`, ghost),
		`document.querySelector('section#nodes')?.outerHTML`, live)
	b.waitFor("the drift warning names it", `document.querySelector('section#nodes .drift')?.textContent.includes('ghost')`,
		`document.querySelector('section#nodes')?.outerHTML`, live)
	if eval[bool](b, `!!document.querySelector('section#nodes tr.leader .differs')`) {
		t.Errorf("the leader's config is flagged; the reference cannot differ from itself")
	}
	b.stillLoaded("status page")
	b.shot("status-nodes")
}
