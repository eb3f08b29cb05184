package web

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/server/servertest"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store"
)

// checkPage checks what every page must have: a language, a title, one
// main and one h1, headings in order, a skip link to main, navigation to
// the status and history pages, labels on form fields, unique ids, and a
// title on each drawing.
func checkPage(t *testing.T, path string, doc *node) {
	t.Helper()
	html := doc.one(t, "html", sel("html", ""))
	if html.attr("lang") == "" {
		t.Errorf("%s: html has no lang", path)
	}
	if title := doc.one(t, "the document's title", func(n *node) bool { return n.tag == "title" && n.parent.tag == "head" }); strings.TrimSpace(title.Text()) == "" {
		t.Errorf("%s: empty title", path)
	}
	main := doc.one(t, "main", sel("main", ""))
	if len(doc.all(sel("h1", ""))) != 1 {
		t.Errorf("%s: %d h1, want 1", path, len(doc.all(sel("h1", ""))))
	}
	skip := doc.one(t, "a.skip", sel("a", "skip"))
	if skip.attr("href") != "#"+main.attr("id") {
		t.Errorf("%s: the skip link goes to %s, main is #%s", path, skip.attr("href"), main.attr("id"))
	}
	nav := doc.one(t, "nav", sel("nav", "", "aria-label", "Main"))
	for _, href := range []string{"/", "/history"} {
		if len(nav.all(sel("a", "", "href", href))) == 0 {
			t.Errorf("%s: no link to %s in the navigation", path, href)
		}
	}
	prev := 0
	for _, h := range doc.all(func(n *node) bool { return len(n.tag) == 2 && n.tag[0] == 'h' && n.tag[1] >= '1' && n.tag[1] <= '6' }) {
		lvl := int(h.tag[1] - '0')
		if lvl > prev+1 && !inHidden(h) {
			t.Errorf("%s: %s %q follows h%d", path, h.tag, h.Text(), prev)
		}
		if !inHidden(h) {
			prev = lvl
		}
	}
	ids := map[string]bool{}
	for _, n := range doc.all(sel("", "", "id", "*")) {
		if ids[n.attr("id")] {
			t.Errorf("%s: id %q used twice", path, n.attr("id"))
		}
		ids[n.attr("id")] = true
	}
	for _, f := range doc.all(func(n *node) bool { return n.tag == "input" || n.tag == "select" || n.tag == "textarea" }) {
		if f.attr("type") == "hidden" || f.has("aria-label") {
			continue
		}
		labelled := f.parent.tag == "label" || f.attr("id") != "" && len(doc.all(sel("label", "", "for", f.attr("id")))) == 1
		if !labelled {
			t.Errorf("%s: %s name=%q id=%q has no label", path, f.tag, f.attr("name"), f.attr("id"))
		}
	}
	for _, s := range doc.all(sel("svg", "")) {
		if s.has("aria-hidden") || s.has("aria-label") {
			continue
		}
		if len(s.all(func(n *node) bool { return n.tag == "title" && n.parent == s })) != 1 {
			t.Errorf("%s: svg#%s has no title", path, s.attr("id"))
		}
	}
}

func inHidden(n *node) bool {
	for ; n != nil; n = n.parent {
		if n.has("hidden") {
			return true
		}
	}
	return false
}

// page fetches a page, checks its basics and returns it.
func (u *uiServer) page(path string, want int) *node {
	u.t.Helper()
	doc := u.get(path, want)
	checkPage(u.t, path, doc)
	return doc
}

func TestStatusPage(t *testing.T) {
	g := servertest.NewGate(t)
	u := startUI(t, fmt.Sprintf(`
semaphores: {bridge: 1, spare: 2}
jobs:
  boot: {bootstrap: true, run: "true"}
  hold: {run: '%s'}
  work: {run: "true"}
pipelines:
  deploy: {semaphore: bridge, jobs: [boot, hold]}
  hourly: {jobs: [boot, work]}
`, g.Wait()), g)
	first := u.Trigger("deploy", nil)
	u.WaitStarted(first, "hold")
	second := u.Trigger("deploy", nil) // serial: waits behind the first
	u.Post("/api/v1/pause", map[string]string{"pipeline": "hourly", "reason": "bridge <maintenance>", "by": "alice"}, http.StatusOK)
	// Wait until the managers said why the second one waits.
	reason := ""
	for deadline := time.Now().Add(10 * time.Second); reason == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		st, err := u.Srv.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range st.Pipelines {
			for _, q := range p.Queued {
				if q.ID == second {
					reason = q.Waiting
				}
			}
		}
	}
	if reason == "" {
		t.Fatalf("the status never says why %s waits", second)
	}

	doc := u.page("/", http.StatusOK)
	doc.one(t, "main#status", sel("main", "", "id", "status"))
	if got := doc.byID(t, "slots").Text(); !strings.HasPrefix(got, "1 of 8 build slots in use") {
		t.Errorf("#slots says %q, want 1 of 8 (the first buildset's hold runs)", got)
	}
	deploy := doc.one(t, "the deploy section", sel("section", "pipeline", "data-pipeline", "deploy"))
	hourly := doc.one(t, "the hourly section", sel("section", "pipeline", "data-pipeline", "hourly"))
	deploy.one(t, "the link to the running buildset", sel("a", "buildset", "href", "/buildsets/"+first))
	queued := deploy.one(t, "the link to the queued buildset", sel("a", "buildset", "href", "/buildsets/"+second))
	// The reason cites the first buildset by its full id: the page links
	// it, named by its short id and its commit's subject.
	w := queued.parent.parent.one(t, "the waiting reason", sel("span", "waiting"))
	if want := strings.Replace(reason, first, "buildset …"+shortID(first)+" (commit 0)", 1); w.Text() != want {
		t.Errorf("the queued buildset says %q, want %q", w.Text(), want)
	}
	w.one(t, "the link to the buildset it waits behind", sel("a", "", "href", "/buildsets/"+first))
	hourly.none(t, "a.buildset in hourly", sel("a", "buildset"))
	deploy.none(t, ".paused in deploy", sel("", "paused"))
	p := hourly.one(t, "hourly's .paused", sel("", "paused"))
	if txt := p.Text(); !strings.Contains(txt, "alice") || !strings.Contains(txt, "bridge <maintenance>") {
		t.Errorf("hourly's pause says %q, want who and why", txt)
	}
	if !strings.Contains(doc.raw, "bridge &lt;maintenance&gt;") {
		t.Errorf("the pause reason is not escaped")
	}
	doc.none(t, "#paused-all", sel("", "", "id", "paused-all"))
	sems := doc.one(t, "section#semaphores", sel("section", "", "id", "semaphores"))
	bridge := sems.one(t, "the bridge row", sel("tr", "", "data-semaphore", "bridge"))
	bridge.one(t, "a link to the holder", sel("a", "", "href", "/buildsets/"+first))
	bridge.none(t, "a dead owner's mark on a live holder", sel("span", "owner-dead"))
	spare := sems.one(t, "the spare row", sel("tr", "", "data-semaphore", "spare"))
	spare.none(t, "a dead owner's mark before any", sel("span", "owner-dead"))

	// A holder whose process died, and whose builds cannot be ended (its
	// owner id is not one a bastion accepts): it stays, marked.
	ctx := context.Background()
	fence, err := u.Store.RegisterOwner(ctx, store.RegisterOwnerParams{ID: "run-dead!", Kind: store.OwnerRun, Lease: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := semaphore.TryAcquire(ctx, u.Store, semaphore.Request{Holder: "gone", Buildset: "gone", Owner: "run-dead!", Fence: fence,
		Semaphores: map[string]int{"spare": 2}, Now: time.Now()}); !ok || err != nil {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	// It dies: fenced, as a reaper fences an owner whose lease ran out.
	if _, err := u.Store.FenceOwners(ctx, store.FenceOwnersParams{IDs: []string{"run-dead!"}, Force: true}); err != nil {
		t.Fatal(err)
	}
	doc = u.page("/", http.StatusOK)
	spare = doc.one(t, "the spare row", sel("tr", "", "data-semaphore", "spare"))
	if m := spare.one(t, "the dead owner's mark", sel("span", "owner-dead")); !strings.Contains(m.Text(), "died") {
		t.Errorf("the dead owner's mark says %q", m.Text())
	}
	health := doc.byID(t, "config-health")
	if health.hasClass("error") {
		t.Errorf("#config-health shows an error before any reload")
	}

	// A reload that fails shows its errors.
	u.WriteConfig("jobs: {boot: {bootstrap: true, run: true, unknown_key: 1}}\npipelines: {}\n")
	if err := u.Srv.Reload(); err == nil {
		t.Fatal("the bad config was accepted")
	}
	doc = u.page("/", http.StatusOK)
	health = doc.byID(t, "config-health")
	if !health.hasClass("error") || !strings.Contains(health.Text(), "unknown_key") {
		t.Errorf("#config-health after a failed reload: class %q, text %q", health.attr("class"), health.Text())
	}

	// A pause of everything.
	u.Post("/api/v1/pause", map[string]string{"reason": "freeze", "by": "bob"}, http.StatusOK)
	doc = u.page("/", http.StatusOK)
	if all := doc.byID(t, "paused-all"); !strings.Contains(all.Text(), "bob") || !strings.Contains(all.Text(), "freeze") {
		t.Errorf("#paused-all says %q", all.Text())
	}
	g.Open(t)
}

func TestBuildsetPage(t *testing.T) {
	g := servertest.NewGate(t)
	u := startUI(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  base: {run: "true", duration_hint: 1m}
  hold: {run: '%s', dependencies: [base], duration_hint: 5m}
  after: {run: "true", dependencies: [hold, base]}
  side: {run: "true", dependencies: [base]}
  docs: {run: "true", files: ['^docs/']}
  never: {run: "true", irrelevant_files: ['^playbooks/']}
pipelines:
  deploy: {jobs: [boot, base, hold, after, side, docs, never]}
`, g.Wait()), g)
	files := []string{"playbooks/site.yaml", "playbooks/<b>&x.yaml"}
	id := u.Trigger("deploy", map[string]any{"files": files})
	u.WaitStarted(id, "hold")
	bs := u.Wait(id, "side succeeded", func(b *server.BuildsetJSON) bool {
		for _, br := range b.Builds {
			if br.Job == "side" {
				return br.Result == "SUCCESS"
			}
		}
		return false
	})
	if bs.Plan == nil {
		t.Fatal("no plan")
	}
	path := "/buildsets/" + id
	check := func(want map[string]string, header string) *node {
		t.Helper()
		doc := u.page(path, http.StatusOK)
		doc.one(t, "main#buildset", sel("main", "", "id", "buildset"))
		graph := doc.byID(t, "graph")
		if graph.tag != "svg" {
			t.Fatalf("#graph is a %s", graph.tag)
		}
		nodes := graph.all(sel("g", "node"))
		if len(nodes) != len(want) {
			t.Errorf("%d nodes, want %d", len(nodes), len(want))
		}
		for job, state := range want {
			n := graph.one(t, "the node of "+job, sel("g", "node", "data-job", job))
			if got := n.attr("data-state"); got != state {
				t.Errorf("node %s: data-state %s, want %s", job, got, state)
			}
			if fill := n.one(t, "the rect of "+job, sel("rect", "")).attr("fill"); fill != stateFill(state) {
				t.Errorf("node %s: fill %s, want %s (%s)", job, fill, stateFill(state), state)
			}
			if !strings.Contains(n.Text(), state) {
				t.Errorf("node %s does not say its state %s: %q", job, state, n.Text())
			}
		}
		tl := doc.byID(t, "timeline")
		critical := map[string]bool{}
		for _, j := range bs.Plan.CriticalPath {
			critical[j] = true
		}
		for job := range want {
			bar := tl.one(t, "the bar of "+job, sel("rect", "bar", "data-job", job))
			if bar.hasClass("critical") != critical[job] {
				t.Errorf("bar %s: critical %v, want %v (critical path %v)", job, bar.hasClass("critical"), critical[job], bs.Plan.CriticalPath)
			}
		}
		if st := doc.byID(t, "bs-state"); st.Text() != header {
			t.Errorf("header state %q, want %q", st.Text(), header)
		}
		return doc
	}
	doc := check(map[string]string{"boot": "SUCCESS", "base": "SUCCESS", "hold": "RUNNING", "after": "WAITING", "side": "SUCCESS"}, "RUNNING")
	if want := []string{"boot", "base", "hold", "after"}; !slices.Equal(bs.Plan.CriticalPath, want) {
		t.Errorf("critical path %v, want %v", bs.Plan.CriticalPath, want)
	}
	// Edges: the transitive reduction (after -> base is implied by hold).
	var edges []string
	for _, e := range doc.byID(t, "graph").all(sel("path", "edge")) {
		edges = append(edges, e.attr("data-from")+">"+e.attr("data-to"))
	}
	slices.Sort(edges)
	if want := []string{"base>hold", "base>side", "boot>base", "hold>after"}; !slices.Equal(edges, want) {
		t.Errorf("edges %v, want %v", edges, want)
	}
	ns := doc.byID(t, "not-selected")
	for job, reason := range map[string]string{"docs": "files", "never": "irrelevant_files"} {
		li := ns.one(t, "not-selected "+job, sel("li", "", "data-job", job))
		if !strings.Contains(li.Text(), "("+reason+")") {
			t.Errorf("not selected %s: %q, want the reason %s", job, li.Text(), reason)
		}
	}
	fl := doc.byID(t, "files")
	var got []string
	for _, li := range fl.all(sel("li", "")) {
		got = append(got, li.Text())
	}
	if !slices.Equal(got, files) {
		t.Errorf("#files lists %q, want %q", got, files)
	}
	if strings.Contains(doc.raw, "<b>&x") || !strings.Contains(doc.raw, "&lt;b&gt;&amp;x") {
		t.Errorf("a file name is not escaped")
	}
	form := doc.byID(t, "actions")
	if form.tag != "form" {
		t.Errorf("#actions is a %s", form.tag)
	}
	if tok := form.one(t, "#token", sel("input", "", "id", "token")); tok.attr("type") != "password" {
		t.Errorf("#token is of type %q", tok.attr("type"))
	}
	form.one(t, "the token's label", sel("label", "", "for", "token"))
	form.one(t, "#cancel", sel("button", "", "id", "cancel"))
	form.one(t, "#rerun", sel("button", "", "id", "rerun"))
	if d := doc.byID(t, "bs-facts"); d.attr("data-id") != id || d.attr("data-done") != "false" {
		t.Errorf("#bs-facts: data-id %q data-done %q", d.attr("data-id"), d.attr("data-done"))
	}

	g.Open(t)
	u.WaitDone(id)
	doc = check(map[string]string{"boot": "SUCCESS", "base": "SUCCESS", "hold": "SUCCESS", "after": "SUCCESS", "side": "SUCCESS"}, "SUCCESS")
	for _, bar := range doc.byID(t, "timeline").all(sel("rect", "bar")) {
		if w, _ := strconv.ParseFloat(bar.attr("width"), 64); w < 2 {
			t.Errorf("bar %s of a finished build: width %s", bar.attr("data-job"), bar.attr("width"))
		}
	}

	// A buildset without a file list says so.
	id2 := u.Trigger("deploy", nil)
	doc = u.page("/buildsets/"+id2, http.StatusOK)
	if fl := doc.byID(t, "files"); !strings.Contains(fl.Text(), "No file list") {
		t.Errorf("#files without a file list: %q", fl.Text())
	}
	u.WaitDone(id2)

	// Unknown buildsets and builds are 404 pages.
	for _, p := range []string{"/buildsets/nosuch", "/buildsets/" + id + "/builds/nosuch", "/buildsets/" + id + "/builds/docs", "/buildsets/" + id + "/builds/hold?attempt=2", "/nosuch"} {
		doc := u.page(p, http.StatusNotFound)
		if h := doc.one(t, "h1", sel("h1", "")); h.Text() != "Not found" {
			t.Errorf("%s: h1 %q", p, h.Text())
		}
	}
}

// TestCriticalPathAsRun: while a buildset runs, the page marks the
// critical path estimated from duration hints; once it is done, the path
// as run (the chain that set its duration), which here is another one:
// the job hinted slow ran fast and the one hinted fast was slow.
func TestCriticalPathAsRun(t *testing.T) {
	g := servertest.NewGate(t)
	u := startUI(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  hinted-slow: {run: "true", duration_hint: 10m}
  after-it: {run: "true", dependencies: [hinted-slow], duration_hint: 1m}
  hinted-fast: {run: '%s', duration_hint: 1s}
pipelines:
  deploy: {jobs: [boot, hinted-slow, after-it, hinted-fast]}
`, g.Wait()), g)
	id := u.Trigger("deploy", nil)
	u.WaitStarted(id, "hinted-fast")
	marked := func(doc *node) (bars, nodes []string) {
		for _, bar := range doc.byID(t, "timeline").all(sel("rect", "bar")) {
			if bar.hasClass("critical") {
				bars = append(bars, bar.attr("data-job"))
			}
		}
		for _, n := range doc.byID(t, "graph").all(sel("g", "node")) {
			if n.hasClass("critical") {
				nodes = append(nodes, n.attr("data-job"))
			}
		}
		slices.Sort(bars)
		slices.Sort(nodes)
		return bars, nodes
	}
	doc := u.page("/buildsets/"+id, http.StatusOK)
	bars, nodes := marked(doc)
	if want := []string{"after-it", "boot", "hinted-slow"}; !slices.Equal(bars, want) || !slices.Equal(nodes, want) {
		t.Errorf("while running: critical bars %v, nodes %v; want the estimate %v", bars, nodes, want)
	}
	if note := doc.byID(t, "critical-note").Text(); !strings.Contains(note, "estimated") || !strings.Contains(note, "boot → hinted-slow → after-it") {
		t.Errorf("while running, the note says %q", note)
	}

	// hinted-fast must end last for the path as run to be through it:
	// after-it, started once hinted-slow is done, may not have ended yet
	// on a loaded machine, so the gate opens only once it has.
	u.Wait(id, "after-it is done", func(b *server.BuildsetJSON) bool {
		for _, br := range b.Builds {
			if br.Job == "after-it" {
				return br.FinishedAt.Get() != nil
			}
		}
		return false
	})
	g.Open(t)
	u.WaitDone(id)
	doc = u.page("/buildsets/"+id, http.StatusOK)
	bars, nodes = marked(doc)
	if want := []string{"boot", "hinted-fast"}; !slices.Equal(bars, want) || !slices.Equal(nodes, want) {
		t.Errorf("done: critical bars %v, nodes %v; want as run %v", bars, nodes, want)
	}
	if note := doc.byID(t, "critical-note").Text(); !strings.Contains(note, "as run") || !strings.Contains(note, "boot → hinted-fast") {
		t.Errorf("done, the note says %q", note)
	}
}

func TestBuildPage(t *testing.T) {
	g := servertest.NewGate(t)
	u := startUI(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  talk:
    run: |
      printf '\033[31mred\033[0m plain \033[1;92mbright\033[0m \033]0;title\007end\n'
      echo '<script>alert(1)</script> & more'
      %s
      echo 'after the gate'
pipelines:
  deploy: {jobs: [boot, talk]}
`, g.Wait()), g)
	id := u.Trigger("deploy", nil)
	u.WaitStarted(id, "talk")
	ctx := context.Background()
	var tail *server.LogTail
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if tail, err = u.Srv.LogTail(ctx, id, "talk", 0, logTail); err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(tail.Data), "\n") == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log has %q", tail.Data)
		}
	}
	path := "/buildsets/" + id + "/builds/talk"
	doc := u.page(path, http.StatusOK)
	pre := doc.byID(t, "log")
	if pre.tag != "pre" {
		t.Fatalf("#log is a %s", pre.tag)
	}
	if pre.attr("data-attempt") != "1" || pre.attr("data-offset") != strconv.FormatInt(tail.Offset, 10) {
		t.Errorf("#log: data-attempt %q data-offset %q, want 1 and %d", pre.attr("data-attempt"), pre.attr("data-offset"), tail.Offset)
	}
	lines := pre.all(sel("span", "line"))
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2: %s", len(lines), doc.raw)
	}
	red := lines[0].one(t, "span.fg31", sel("span", "fg31"))
	if red.Text() != "red" {
		t.Errorf("span.fg31 has %q", red.Text())
	}
	bright := lines[0].one(t, "span.fg92", sel("span", "fg92"))
	if !bright.hasClass("bold") || bright.Text() != "bright" {
		t.Errorf("bright: class %q text %q", bright.attr("class"), bright.Text())
	}
	if txt := lines[0].Text(); !strings.HasSuffix(txt, "red plain bright end") || strings.Contains(txt, "title") {
		t.Errorf("line 1 reads %q", txt)
	}
	lines[0].one(t, "the time", sel("span", "ts"))
	if !strings.HasSuffix(lines[1].Text(), "<script>alert(1)</script> & more") {
		t.Errorf("line 2 reads %q", lines[1].Text())
	}
	if strings.Contains(doc.raw, "\x1b") || strings.Contains(doc.raw, "<script>alert") {
		t.Errorf("the log is not rendered safely:\n%s", doc.raw)
	}
	raw := doc.byID(t, "raw")
	if want := "/api/v1/buildsets/" + id + "/builds/talk/log?attempt=1"; raw.attr("href") != want {
		t.Errorf("a#raw goes to %q, want %q", raw.attr("href"), want)
	}
	doc.byID(t, "attempts").one(t, "the attempt row", sel("tr", "", "data-attempt", "1"))
	if c := doc.byID(t, "history-compare").Text(); !strings.Contains(c, "Running for") {
		t.Errorf("#history-compare while running: %q", c)
	}

	// The script follows from where the page stopped: the next event is
	// the line printed after the page was made, then the end.
	follow := pre.attr("data-follow")
	if !strings.Contains(follow, "follow=1") || !strings.Contains(follow, "from=1%3A"+strconv.FormatInt(tail.Offset, 10)) {
		t.Fatalf("data-follow %q", follow)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(sctx, "GET", u.URL+follow, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	g.Open(t)
	events := readEvents(t, resp.Body, 2)
	if events[0].name != "" || !strings.HasSuffix(events[0].data, "| after the gate") {
		t.Errorf("first event %+v, want the line after the gate", events[0])
	}
	if events[1].name != "end" || events[1].data != "SUCCESS" {
		t.Errorf("second event %+v, want end SUCCESS", events[1])
	}

	u.WaitDone(id)
	doc = u.page(path, http.StatusOK)
	pre = doc.byID(t, "log")
	if pre.has("data-follow") {
		t.Errorf("a finished build's log is followed")
	}
	if n := len(pre.all(sel("span", "line"))); n != 3 {
		t.Errorf("%d lines after the end, want 3", n)
	}
	if c := doc.byID(t, "history-compare").Text(); !strings.Contains(c, "Took") || !strings.Contains(c, "median") {
		t.Errorf("#history-compare when done: %q", c)
	}
	code, body := u.Do("GET", raw.attr("href"), nil, servertest.Token)
	if code != http.StatusOK || !strings.Contains(string(body), "after the gate") {
		t.Errorf("the raw log: %d %q", code, body)
	}
}

type sse struct{ name, data string }

// readEvents reads n events (comments and retry lines skipped).
func readEvents(t *testing.T, r io.Reader, n int) []sse {
	t.Helper()
	br := bufio.NewReader(r)
	var out []sse
	var ev sse
	for len(out) < n {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("the stream ended after %v: %v", out, err)
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "":
			if ev != (sse{}) {
				out = append(out, ev)
			}
			ev = sse{}
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		}
	}
	return out
}

func TestHistoryAndJobPages(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "fail")
	u := startUI(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: '[ ! -e %q ]'}
  other: {run: "true"}
pipelines:
  deploy: {jobs: [boot, work]}
  hourly: {jobs: [boot, other]}
`, flag))
	run := func(pipeline string, body any, want string) string {
		t.Helper()
		id := u.Trigger(pipeline, body)
		if r := u.WaitDone(id).Result; r != want {
			t.Fatalf("%s: %s, want %s\n%s", id, r, want, u.Log)
		}
		return id
	}
	ok1 := run("deploy", nil, "SUCCESS")
	ok2 := run("deploy", nil, "SUCCESS")
	os.WriteFile(flag, nil, 0o644)
	failed := run("deploy", nil, "FAILURE")
	os.Remove(flag)
	var r struct{ Buildset string }
	jsonUnmarshal(t, u.Post("/api/v1/buildsets/"+failed+"/rerun", nil, http.StatusAccepted), &r)
	rerun := r.Buildset
	if res := u.WaitDone(rerun).Result; res != "SUCCESS" {
		t.Fatalf("rerun: %s", res)
	}
	os.WriteFile(filepath.Join(u.Repo, "README"), []byte("v2\n"), 0o644)
	second := sourcetest.Commit(t, u.Repo, "v2")
	hourly := run("hourly", map[string]any{"commit": second}, "SUCCESS")
	all := []string{ok1, ok2, failed, rerun, hourly}

	rows := func(path string) []string {
		t.Helper()
		doc := u.page(path, http.StatusOK)
		var ids []string
		for _, tr := range doc.byID(t, "history").all(sel("tr", "", "data-buildset", "*")) {
			ids = append(ids, tr.attr("data-buildset"))
		}
		slices.Sort(ids)
		return ids
	}
	sorted := func(ids ...string) []string {
		s := slices.Clone(ids)
		slices.Sort(s)
		return s
	}
	doc := u.page("/history", http.StatusOK)
	form := doc.byID(t, "filters")
	if form.tag != "form" || form.attr("method") != "get" {
		t.Errorf("#filters: %s method %q", form.tag, form.attr("method"))
	}
	for _, name := range []string{"pipeline", "job", "result", "commit"} {
		form.one(t, "the field "+name, sel("", "", "name", name))
	}
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"", all},
		{"?result=FAILURE", []string{failed}},
		{"?pipeline=hourly", []string{hourly}},
		{"?job=other", []string{hourly}},
		{"?job=work", []string{ok1, ok2, failed, rerun}},
		{"?job=work&result=SUCCESS", []string{ok1, ok2, rerun}},
		{"?commit=" + second[:7], []string{hourly}},
		{"?commit=" + strings.ToUpper(second), []string{hourly}},
		{"?pipeline=deploy&job=other", nil},
	} {
		if got := rows("/history" + c.query); !slices.Equal(got, sorted(c.want...)) {
			t.Errorf("/history%s lists %v, want %v", c.query, got, sorted(c.want...))
		}
	}
	doc = u.page("/history?job=work&result=FAILURE", http.StatusOK)
	if opt := doc.byID(t, "f-result").one(t, "the selected result", sel("option", "", "selected", "*")); opt.attr("value") != "FAILURE" {
		t.Errorf("the result filter shows %q", opt.attr("value"))
	}
	doc.byID(t, "history").one(t, "the link to the failed build", sel("a", "", "href", "/buildsets/"+failed+"/builds/work"))
	doc = u.page("/history?commit=zz", http.StatusBadRequest)
	doc.one(t, "the error", sel("p", "error-box"))

	// Pagination: follow a#next to the end.
	u.ui.PageSize = 2
	var seen []string
	next := "/history"
	for range 10 {
		doc := u.page(next, http.StatusOK)
		for _, tr := range doc.byID(t, "history").all(sel("tr", "", "data-buildset", "*")) {
			seen = append(seen, tr.attr("data-buildset"))
		}
		links := doc.all(sel("a", "", "id", "next"))
		if len(links) == 0 {
			break
		}
		next = links[0].attr("href")
		if !strings.Contains(next, "before=") {
			t.Fatalf("a#next goes to %q", next)
		}
	}
	if slices.Sort(seen); !slices.Equal(seen, sorted(all...)) {
		t.Errorf("the pages list %v, want %v", seen, sorted(all...))
	}
	u.ui.PageSize = 50

	// The re-run says what it re-runs.
	doc = u.page("/buildsets/"+rerun, http.StatusOK)
	if a := doc.byID(t, "rerun-of"); a.attr("href") != "/buildsets/"+failed {
		t.Errorf("a#rerun-of goes to %q", a.attr("href"))
	}

	// The job page.
	doc = u.page("/jobs/work", http.StatusOK)
	chart := doc.byID(t, "durations")
	if n := len(chart.all(sel("rect", "dbar"))); n != 4 {
		t.Errorf("the chart has %d bars, want 4", n)
	}
	if got := doc.byID(t, "success-rate").Text(); got != "75%" {
		t.Errorf("#success-rate %q, want 75%%", got)
	}
	if n := len(doc.byID(t, "job-builds").all(sel("tr", "", "data-buildset", "*"))); n != 4 {
		t.Errorf("the table has %d builds, want 4", n)
	}
	u.page("/jobs/boot", http.StatusOK)
	u.page("/jobs/nosuch", http.StatusNotFound)
}

func jsonUnmarshal(t *testing.T, b []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
}

// TestStaticFilesAndErrors: static files are cached by their hash; a
// buildset that could not be made (CONFIG_ERROR) has a page without a
// graph that says why.
func TestStaticFilesAndErrors(t *testing.T) {
	u := startUI(t, `
jobs:
  boot: {bootstrap: true, run: "true"}
  base: {run: "true"}
  needy: {run: "true", dependencies: [base]}
pipelines:
  deploy: {jobs: [boot]}
  broken: {jobs: [boot, needy]}
`)
	doc := u.page("/", http.StatusOK)
	css := doc.one(t, "the stylesheet", sel("link", "", "rel", "stylesheet")).attr("href")
	script := doc.one(t, "the script", sel("script", "", "type", "module")).attr("src")
	for _, c := range []struct{ path, ctype, cache string }{
		{css, "text/css", "immutable"},
		{script, "javascript", "immutable"},
		{"/static/common.js", "javascript", "no-cache"},
		{"/static/ansi.js", "javascript", "no-cache"},
	} {
		resp, err := http.Get(u.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(resp.Header.Get("Content-Type"), c.ctype) || !strings.Contains(resp.Header.Get("Cache-Control"), c.cache) || resp.Header.Get("ETag") == "" {
			t.Errorf("%s: %d %q %q %q", c.path, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"), resp.Header.Get("ETag"))
		}
	}
	u.page("/static/nosuch.js", http.StatusNotFound)
	if code, out := u.Do("GET", "/api/v1/nosuch", nil, servertest.Token); code != http.StatusNotFound || !strings.Contains(string(out), `"error"`) {
		t.Errorf("an unknown API path: %d %s", code, out)
	}

	code, out := u.Do("POST", "/api/v1/pipelines/broken/trigger", nil, servertest.Token)
	var r struct{ Buildset, Error string }
	jsonUnmarshal(t, out, &r)
	if code != http.StatusAccepted || r.Buildset == "" || !strings.Contains(r.Error, "needs base") {
		t.Fatalf("trigger broken: %d %s; want 202 with the buildset and why", code, out)
	}
	doc = u.page("/buildsets/"+r.Buildset, http.StatusOK)
	doc.none(t, "svg#graph", sel("svg", "", "id", "graph"))
	if st := doc.byID(t, "bs-state").Text(); st != "CONFIG_ERROR" {
		t.Errorf("state %q", st)
	}
	if box := doc.one(t, "the error", sel("p", "error-box")); !strings.Contains(box.Text(), "needy needs base") {
		t.Errorf("the error says %q", box.Text())
	}
}

// TestBuildsetPageReports: the Reports section says, for each reporter
// and event, how far the delivery got, with the receiver's error redacted;
// the commit line names the commit's author; a SKIPPED buildset tells no
// one, and says so.
func TestBuildsetPageReports(t *testing.T) {
	const secret = "hook-secret-42-abcdef"
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A receiver that echoes what it was given, the signature (the
		// secret's HMAC) and a secret that leaked in its config.
		http.Error(w, "refused: signature "+r.Header.Get("X-Sortie-Signature-256")+" is not that of "+secret, http.StatusServiceUnavailable)
	}))
	defer down.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer up.Close()
	u := &uiServer{t: t}
	u.Server = servertest.Start(t, fmt.Sprintf(`
server: {public_url: https://deploy.example.org}
reporters:
  down: {type: webhook, url: %q, secret_env: HOOK_SECRET}
  up: {type: webhook, url: %q, secret_env: HOOK_SECRET}
jobs:
  boot: {bootstrap: true, run: "true", files: ['^playbooks/']}
  base: {run: "true", irrelevant_files: ['^docs/']}
pipelines:
  deploy: {jobs: [boot, base], report: {success: [down, up]}}
`, down.URL, up.URL), servertest.Options{
		UI:  func(srv *server.Server) http.Handler { u.ui = New(srv); return u.ui },
		Env: map[string]string{"HOOK_SECRET": secret},
	})
	id := u.Trigger("deploy", nil)
	u.WaitDone(id)
	path := "/buildsets/" + id
	deadline := time.Now().Add(30 * time.Second)
	for {
		doc := u.page(path, http.StatusOK)
		table := doc.byID(t, "reports")
		rows := table.all(sel("tr", "", "data-event", "success"))
		states := map[string]string{}
		errs := map[string]string{}
		for _, r := range rows {
			states[r.attr("data-reporter")] = strings.TrimSpace(r.one(t, "state", sel("td", "state")).Text())
			errs[r.attr("data-reporter")] = r.one(t, "error", sel("td", "reason")).Text()
		}
		if len(rows) == 2 && states["up"] == "delivered" && states["down"] == "pending" && errs["down"] != "" {
			if !strings.Contains(errs["down"], "503 Service Unavailable: refused: signature sha256=") || !strings.Contains(errs["down"], "is not that of ***") {
				t.Errorf("the failed delivery's error reads %q: want the receiver's answer, the secret as ***", errs["down"])
			}
			if errs["up"] != "" {
				t.Errorf("the delivered delivery has an error: %q", errs["up"])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reports: states %v, errors %v", states, errs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	resp, err := http.Get(u.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), secret) {
		t.Error("the buildset page shows the secret")
	}
	doc := u.page(path, http.StatusOK)
	if got := doc.one(t, "author", sel("span", "author")).Text(); got != "by t" {
		t.Errorf("the commit line names the author as %q, want %q", got, "by t")
	}

	skipped := u.Trigger("deploy", map[string]any{"files": []string{"docs/index.md"}})
	if bs := u.WaitDone(skipped); bs.Result != "SKIPPED" {
		t.Fatalf("buildset %s, want SKIPPED", bs.Result)
	}
	doc = u.page("/buildsets/"+skipped, http.StatusOK)
	if got := doc.byID(t, "no-reports").Text(); !strings.Contains(got, "tells no one") {
		t.Errorf("a SKIPPED buildset's Reports say %q", got)
	}
}
