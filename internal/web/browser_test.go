package web_test

// Real-browser tests of the web UI: a real `sortie serve` (SQLite, the
// local bastion, a real git repository) on loopback with the pages mounted,
// driven by headless Chromium through the DevTools protocol (chromedp).
// Jobs wait on gate files, so the tests decide when states change and can
// watch the pages follow without a reload. docs/ui.md describes the pages
// and what these tests check.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/server/servertest"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/web"
)

// live bounds the waits for what a page shows, live updates included: the
// status page polls every 2 s and the buildset page every second, and CI
// runs other packages' tests beside these.
const live = 12 * time.Second

// ---------------------------------------------------------------------------
// The server under test.

// startSortie serves cfg (after a source section naming a fresh
// repository) with the web UI on 127.0.0.1:0. At the end of the test it
// opens gates, so no job waits through the shutdown, then stops the server
// and waits for it. Start the browser after the server: cleanups run last
// first, so the browser closes before the server stops.
func startSortie(t *testing.T, cfg string, gates ...servertest.Gate) *servertest.Server {
	t.Helper()
	return servertest.Start(t, cfg, servertest.Options{
		UI:    func(srv *server.Server) http.Handler { return web.New(srv) },
		Gates: gates,
	})
}

// ---------------------------------------------------------------------------
// The browser.

// chromiumPath finds Debian's Chromium (or another Chromium or Chrome on
// the PATH).
func chromiumPath() string {
	if p := os.Getenv("SORTIE_CHROMIUM"); p != "" {
		return p
	}
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser is one headless Chromium with one tab.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string

	mu         sync.Mutex
	exceptions []string
}

// newBrowser starts Chromium for the test and closes it at its end. With
// no Chromium the test fails in CI (CI set) and is skipped elsewhere.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	path := chromiumPath()
	if path == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("no Chromium (/usr/bin/chromium): .ci/run installs Debian's chromium package; the browser tests must run in CI")
		}
		t.Skip("no Chromium found (/usr/bin/chromium, or chromium on the PATH): install Debian's chromium package to run the browser tests")
	}
	profile, err := os.MkdirTemp("", "sortie-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // tests may run as root, where the sandbox refuses to start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		// On a closed network Chromium's own connections (updates, sync,
		// QUIC probes) are refused many at a time; it needs none of them.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(profile), // a fresh profile
		chromedp.WindowSize(1280, 900),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t, base: base}
	ctx, cancelTab := chromedp.NewContext(actx,
		chromedp.WithListener(b.listen),
		chromedp.WithLogf(func(string, ...any) {}),
		chromedp.WithErrorf(func(string, ...any) {}),
	)
	b.ctx = ctx
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
		os.RemoveAll(profile)
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, x := range b.exceptions {
			t.Errorf("uncaught JavaScript exception in the page: %s", x)
		}
	})
	// The first action starts the browser; its context owns the tab.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	return b
}

// listen runs on chromedp's reading goroutine: it only records.
func (b *browser) listen(ev any) {
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg = d.Exception.Description
		}
		b.mu.Lock()
		b.exceptions = append(b.exceptions, fmt.Sprintf("%s (%s:%d)", msg, d.URL, d.LineNumber))
		b.mu.Unlock()
	case *runtime.EventConsoleAPICalled:
		if ev.Type == "error" {
			var parts []string
			for _, a := range ev.Args {
				if a.Description != "" {
					parts = append(parts, a.Description)
				} else {
					parts = append(parts, string(a.Value))
				}
			}
			b.t.Logf("console.error in the page: %s", strings.Join(parts, " "))
		}
	}
}

// open loads path and waits for it to load; it fails the test on an HTTP
// error status.
func (b *browser) open(path string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(b.base+path))
	if err != nil {
		b.t.Fatalf("open %s: %v", path, err)
	}
	if resp != nil && resp.Status != http.StatusOK {
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 500) : ""`))
		b.t.Fatalf("open %s: HTTP %d: %s", path, resp.Status, body)
	}
}

// eval evaluates a JavaScript expression and decodes its JSON value into T.
func eval[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitFor polls a JavaScript condition until it is true or timeout passes.
// It goes on through a navigation (the evaluation then fails for a moment).
// On a timeout it fails the test with the value of diag.
func (b *browser) waitFor(what, cond, diag string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	var lastErr error
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`!!(`+cond+`)`))
		cancel()
		if err == nil && ok {
			return
		}
		lastErr = err
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	msg := ""
	if diag != "" {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		v, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](diag))
		cancel()
		msg = string(v)
		if err != nil {
			msg = err.Error()
		}
	}
	b.t.Fatalf("timed out after %v waiting until %s (last error: %v); page: %s", timeout, what, lastErr, msg)
}

// has fails the test unless the page has an element matching selector.
func (b *browser) has(selector string) {
	b.t.Helper()
	if !eval[bool](b, fmt.Sprintf(`!!document.querySelector(%s)`, jsString(selector))) {
		b.t.Errorf("%s: no element matches %s", b.location(), selector)
	}
}

func (b *browser) location() string {
	b.t.Helper()
	return eval[string](b, `location.pathname + location.search`)
}

// mark tags the current document, so that stillLoaded can tell it was not
// reloaded: the live updates must come without a reload.
func (b *browser) mark() {
	b.t.Helper()
	eval[bool](b, `(window.__sortieTestMark = true)`)
}

func (b *browser) stillLoaded(what string) {
	b.t.Helper()
	if !eval[bool](b, `window.__sortieTestMark === true`) {
		b.t.Errorf("%s: the page was reloaded; the update should come without one", what)
	}
}

func jsString(s string) string {
	j, _ := json.Marshal(s)
	return string(j)
}

// shot writes a full-page PNG screenshot of the current page.
func (b *browser) shot(name string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	dir := screenshotDir(b.t)
	p := filepath.Join(dir, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Errorf("screenshot %s: %v", name, err)
		return
	}
	abs, _ := filepath.Abs(p)
	b.t.Logf("screenshot of %s: %s", b.location(), abs)
}

// screenshotDir is $SORTIE_SCREENSHOTS, else a folder under the system's
// temporary directory: a plain test run leaves the repository as it was.
// docs/screenshots is regenerated on purpose, with
// SORTIE_SCREENSHOTS=$PWD/docs/screenshots (see docs/ui.md).
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SORTIE_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "sortie-screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// ---------------------------------------------------------------------------
// The tests.

// TestBrowserStatus: the status page lists every pipeline with its running
// and queued buildsets, the semaphores and the config's health, and follows
// pauses and finished buildsets without a reload.
func TestBrowserStatus(t *testing.T) {
	g := servertest.NewGate(t)
	e := startSortie(t, fmt.Sprintf(`
semaphores: {bridge: 1}
jobs:
  boot: {bootstrap: true, run: "true"}
  hold: {run: '%s'}
  work: {run: "true"}
pipelines:
  deploy: {semaphore: bridge, jobs: [boot, hold]}
  hourly: {jobs: [boot, work]}
`, g.Wait()), g)
	first := e.Trigger("deploy", nil)
	e.WaitStarted(first, "hold")
	second := e.Trigger("deploy", nil) // queued behind the first (serial)

	b := newBrowser(t, e.URL)
	b.open("/")
	b.has("main#status")
	for _, p := range []string{"deploy", "hourly"} {
		b.has(fmt.Sprintf(`section.pipeline[data-pipeline=%q]`, p))
	}
	for _, id := range []string{first, second} {
		b.waitFor("the link to "+id+" in deploy", fmt.Sprintf(`document.querySelector('section.pipeline[data-pipeline="deploy"] a.buildset[href="/buildsets/%s"]')`, id),
			`document.querySelector('main#status')?.outerHTML`, live)
	}
	b.has(`section#semaphores tr[data-semaphore="bridge"]`)
	b.has("#config-health")
	if eval[bool](b, `!!document.querySelector('section.pipeline .paused, #paused-all')`) {
		t.Errorf("a pipeline shows paused before any pause")
	}
	b.shot("status")

	b.mark()
	e.Post("/api/v1/pause", map[string]string{"pipeline": "hourly", "reason": "maintenance of the bridge"}, http.StatusOK)
	b.waitFor("hourly shows paused", `document.querySelector('section.pipeline[data-pipeline="hourly"] .paused')`,
		`document.querySelector('section.pipeline[data-pipeline="hourly"]')?.outerHTML`, live)
	if eval[bool](b, `!!document.querySelector('section.pipeline[data-pipeline="deploy"] .paused')`) {
		t.Errorf("deploy shows paused; only hourly was paused")
	}
	holders := `document.querySelector('section#semaphores tr[data-semaphore="bridge"] td.holders')`
	b.waitFor("bridge's holder is the first buildset", fmt.Sprintf(`%s?.querySelector('a[href="/buildsets/%s"]') && /since \d{4}-/.test(%[1]s.textContent)`, holders, first),
		holders+`?.outerHTML`, live)

	g.Open(t)
	e.WaitDone(first)
	e.WaitDone(second)
	b.waitFor("the finished buildsets leave the page", `!document.querySelector('a.buildset')`,
		`document.querySelector('section.pipeline[data-pipeline="deploy"]')?.outerHTML`, live)

	e.Post("/api/v1/pause", map[string]string{"reason": "freeze"}, http.StatusOK)
	b.waitFor("#paused-all shows", `document.querySelector('#paused-all')`, `document.querySelector('main#status')?.outerHTML`, live)
	b.stillLoaded("status page")
	b.shot("status-paused")
}

// TestBrowserBuildsetNames: wherever a page names a buildset it shows its
// short id, linked, its commit and the commit's subject, so that two
// buildsets of one commit are told apart; a waiting reason that cites a
// buildset by its full id links it instead.
func TestBrowserBuildsetNames(t *testing.T) {
	g := servertest.NewGate(t)
	e := startSortie(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  hold: {run: '%s'}
pipelines:
  deploy: {manager: serial, jobs: [boot, hold]}
`, g.Wait()), g)
	subject := `Deploy <b>zuul</b> & "friends"`
	os.WriteFile(filepath.Join(e.Repo, "zuul.yaml"), []byte("zuul\n"), 0o644)
	sha := sourcetest.Commit(t, e.Repo, subject+"\n\nThe body, not the subject.")
	first := e.Trigger("deploy", map[string]string{"commit": sha})
	e.WaitStarted(first, "hold")

	b := newBrowser(t, e.URL)
	b.open("/")
	b.mark()
	second := e.Trigger("deploy", map[string]string{"commit": sha}) // waits behind the first
	short := func(id string) string { return "…" + id[len(id)-8:] }
	type named struct {
		Link    string `json:"link"`
		Text    string `json:"text"`
		Sha     string `json:"sha"`
		Subject string `json:"subject"`
		Author  string `json:"author"`
	}
	// nameIn reads the buildset's name in the element that selector picks.
	nameIn := func(selector, id string) named {
		t.Helper()
		return eval[named](b, fmt.Sprintf(`(() => {
			const box = document.querySelector(%s);
			const a = box?.querySelector('a.buildset[href="/buildsets/%s"]');
			return {link: a?.getAttribute('href') ?? '', text: a?.textContent ?? '',
				sha: box?.querySelector('code.sha')?.textContent ?? '', subject: box?.querySelector('.subject')?.textContent ?? '',
				author: box?.querySelector('.author')?.textContent ?? ''};
		})()`, jsString(selector), id))
	}
	checkName := func(where, selector, id string) {
		t.Helper()
		got := nameIn(selector, id)
		want := named{Link: "/buildsets/" + id, Text: short(id), Sha: sha[:10], Subject: subject, Author: "by t"}
		if got != want {
			t.Errorf("%s names buildset %s as %+v, want %+v", where, id, got, want)
		}
	}
	entry := func(id string) string {
		return fmt.Sprintf(`section.pipeline[data-pipeline="deploy"] li[data-buildset=%q]`, id)
	}
	reason := entry(second) + " .waiting"
	b.waitFor("the second buildset waits, its reason linking the first", fmt.Sprintf(`document.querySelector(%s)?.querySelector('a[href="/buildsets/%s"]')`, jsString(reason), first),
		`document.querySelector('section.pipeline[data-pipeline="deploy"]')?.outerHTML`, live)
	checkName("the status page's running entry", entry(first), first)
	checkName("the status page's queued entry", entry(second), second)
	if got := eval[string](b, fmt.Sprintf(`document.querySelector(%s).textContent`, jsString(reason))); !strings.Contains(got, "buildset "+short(first)) || strings.Contains(got, first) {
		t.Errorf("the waiting reason says %q: want the first buildset named by its short id %s, and not its full id", got, short(first))
	}
	if eval[bool](b, fmt.Sprintf(`document.querySelector('main').innerText.includes(%s)`, jsString(first))) {
		t.Errorf("the status page shows the full id %s as text", first)
	}
	b.stillLoaded("status page")
	b.shot("names-status")

	g.Open(t)
	e.WaitDone(first)
	e.WaitDone(second)
	b.open("/history")
	for _, id := range []string{first, second} {
		checkName("the history", fmt.Sprintf(`table#history tr[data-buildset=%q]`, id), id)
	}
	b.open("/buildsets/" + second)
	if h1 := eval[string](b, `document.querySelector('h1').textContent`); !strings.Contains(h1, short(second)) {
		t.Errorf("the buildset page's h1 says %q, want its short id %s", h1, short(second))
	}
	if got := eval[string](b, `document.querySelector('#bs-commit .subject')?.textContent ?? ''`); got != subject {
		t.Errorf("the buildset page's subject is %q, want %q", got, subject)
	}
	if got := eval[string](b, `document.querySelector('#bs-commit .author')?.textContent ?? ''`); got != "by t" {
		t.Errorf("the buildset page's author is %q, want %q", got, "by t")
	}
	b.open("/buildsets/" + second + "/builds/hold")
	checkName("the build page", "#build-facts", second)
	b.open("/jobs/hold")
	checkName("the job page", fmt.Sprintf(`table#job-builds tr[data-buildset=%q]`, first), first)
}

// TestBrowserStatusProgress: the status page shows a running buildset as
// Zuul's shows a change: each job with its state, a progress bar for the
// running one against the median of its past runs, counting on without a
// reload, and the time the buildset still needs.
func TestBrowserStatusProgress(t *testing.T) {
	open := filepath.Join(t.TempDir(), "open")
	e := startSortie(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: 'sleep 3; while [ ! -e %[1]q ] && [ -d %[2]q ]; do sleep 0.02; done'}
  after: {dependencies: [work], run: "true"}
pipelines:
  deploy: {jobs: [boot, work, after]}
`, open, filepath.Dir(open)), servertest.Gate(open))
	// A first run, gate open, is the history: work takes about 3s.
	os.WriteFile(open, nil, 0o644)
	if r := e.WaitDone(e.Trigger("deploy", nil)).Result; r != "SUCCESS" {
		t.Fatalf("first run: %s", r)
	}
	os.Remove(open)
	os.WriteFile(filepath.Join(e.Repo, "executor.yaml"), []byte("memory: 8G\n"), 0o644)
	sha := sourcetest.Commit(t, e.Repo, "Raise the Zuul executors' memory limit")

	b := newBrowser(t, e.URL)
	b.open("/")
	b.mark()
	id := e.Trigger("deploy", map[string]string{"commit": sha})
	e.WaitStarted(id, "work")
	entry := fmt.Sprintf(`document.querySelector('section.pipeline[data-pipeline="deploy"] li.entry[data-buildset=%q]')`, id)
	job := func(name string) string { return entry + `?.querySelector('ul.jobs li[data-job="` + name + `"]')` }
	b.waitFor("the running buildset lists its jobs, work running", job("work")+`?.dataset.state === 'RUNNING'`, entry+`?.outerHTML`, live)
	for name, state := range map[string]string{"boot": "SUCCESS", "after": "WAITING"} {
		if got := eval[string](b, job(name)+`?.dataset.state ?? ''`); got != state {
			t.Errorf("%s is %q on the status page, want %s", name, got, state)
		}
		if got := eval[string](b, job(name)+`?.querySelector('.badge')?.textContent ?? ''`); got != state {
			t.Errorf("%s's badge says %q, want %s", name, got, state)
		}
	}
	type bar struct {
		Max   float64 `json:"max"`
		Value float64 `json:"value"`
		Label string  `json:"label"`
	}
	readBar := func() bar {
		return eval[bar](b, `(() => { const p = `+job("work")+`?.querySelector('progress'); return p ? {max: p.max, value: p.value, label: p.getAttribute('aria-label') || ''} : {max: 0, value: 0, label: ''}; })()`)
	}
	first := readBar()
	if first.Max < 2500 || first.Max > 6000 {
		t.Fatalf("work's progress bar: %+v, want a max of about 3000 ms (the median of its runs)", first)
	}
	if !strings.Contains(first.Label, "of about 3") {
		t.Errorf("work's progress bar is labelled %q", first.Label)
	}
	// The bar counts on until it is full, at the median (3 s): on a slow
	// machine it may be full already, and then the time beside it must
	// count on instead.
	elapsed := eval[string](b, job("work")+`?.querySelector('.elapsed')?.textContent ?? ''`)
	b.waitFor("work's progress bar, or its time once the bar is full, moves on", fmt.Sprintf(`(() => { const p = %s?.querySelector('progress'); const e = %[1]s?.querySelector('.elapsed'); return p && e && (p.value > %[2]f || (p.value >= p.max && e.textContent !== %[3]s)); })()`, job("work"), first.Value, jsString(elapsed)),
		job("work")+`?.outerHTML`, live)
	if eta := eval[string](b, entry+`?.querySelector('.eta')?.textContent ?? ''`); !regexp.MustCompile(`^1 of 3 jobs done · ((about .+ left|any moment now), ending around \d{4}-|ending any moment)`).MatchString(eta) {
		t.Errorf("the buildset's estimate says %q", eta)
	}
	b.shot("status-progress")
	os.WriteFile(open, nil, 0o644)
	e.WaitDone(id)
	b.waitFor("the finished buildset leaves the page", "!"+entry, `document.querySelector('main#status')?.outerHTML`, live)
	b.stillLoaded("status page")
}

// TestBrowserSemaphoreHoldersLive: a holder that appears while the status
// page is open is drawn by the live script as the server draws it (a link
// to the buildset, its time), and goes when released.
func TestBrowserSemaphoreHoldersLive(t *testing.T) {
	g := servertest.NewGate(t)
	e := startSortie(t, fmt.Sprintf(`
semaphores: {bridge: 1}
jobs:
  boot: {bootstrap: true, run: "true"}
  hold: {run: '%s'}
pipelines:
  deploy: {semaphore: bridge, jobs: [boot, hold]}
`, g.Wait()), g)
	b := newBrowser(t, e.URL)
	b.open("/")
	holders := `document.querySelector('section#semaphores tr[data-semaphore="bridge"] td.holders')`
	b.waitFor("bridge has no holder", holders+`?.textContent.trim() === 'none'`, holders+`?.outerHTML`, live)
	b.mark()
	id := e.Trigger("deploy", nil)
	e.WaitStarted(id, "hold")
	b.waitFor("the buildset appears as bridge's holder", fmt.Sprintf(`%s?.querySelector('a[href="/buildsets/%s"]') && /since \d{4}-/.test(%[1]s.textContent)`, holders, id),
		holders+`?.outerHTML`, live)
	g.Open(t)
	e.WaitDone(id)
	b.waitFor("bridge has no holder again", holders+`?.textContent.trim() === 'none'`, holders+`?.outerHTML`, live)
	b.stillLoaded("status page")
}

// graphNode reads a node of the buildset graph: its state and the computed
// fill colour of its shape.
type graphNode struct {
	Found bool   `json:"found"`
	State string `json:"state"`
	Fill  string `json:"fill"`
}

func readNode(b *browser, job string) graphNode {
	b.t.Helper()
	return eval[graphNode](b, fmt.Sprintf(`(() => {
		const n = document.querySelector('svg#graph g.node[data-job="%s"]');
		if (!n) return {found: false, state: "", fill: ""};
		const s = n.querySelector('rect, circle, ellipse, polygon, path');
		return {found: true, state: n.getAttribute('data-state') || "", fill: s ? getComputedStyle(s).fill : ""};
	})()`, job))
}

// TestBrowserBuildsetGraph: the buildset page draws the job graph with each
// node's state and colour, and follows the run without a reload.
func TestBrowserBuildsetGraph(t *testing.T) {
	g := servertest.NewGate(t)
	e := startSortie(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: '%s'}
  b: {dependencies: [a], run: "echo b"}
pipelines:
  deploy: {jobs: [boot, a, b]}
`, g.Wait()), g)
	id := e.Trigger("deploy", nil)
	e.WaitStarted(id, "a")

	b := newBrowser(t, e.URL)
	b.open("/buildsets/" + id)
	b.waitFor("the graph shows a and b", `document.querySelector('svg#graph g.node[data-job="a"]') && document.querySelector('svg#graph g.node[data-job="b"]')`,
		`document.querySelector('svg#graph')?.outerHTML ?? document.body.innerHTML.slice(0, 2000)`, live)
	a, bb := readNode(b, "a"), readNode(b, "b")
	if a.State != "RUNNING" {
		t.Errorf("a: data-state %q, want RUNNING", a.State)
	}
	if bb.State != "WAITING" {
		t.Errorf("b: data-state %q, want WAITING", bb.State)
	}
	if a.Fill == "" || a.Fill == "none" {
		t.Errorf("a's shape has no fill colour (%q)", a.Fill)
	}
	for _, sel := range []string{"svg#timeline", "ul#files", "form#actions #token", "form#actions #cancel", "form#actions #rerun"} {
		b.has(sel)
	}
	b.shot("buildset-running")

	b.mark()
	g.Open(t)
	b.waitFor("a becomes SUCCESS", `document.querySelector('svg#graph g.node[data-job="a"]')?.getAttribute('data-state') === 'SUCCESS'`,
		`document.querySelector('svg#graph')?.outerHTML`, live)
	b.waitFor("a's colour changes", fmt.Sprintf(`(() => { const s = document.querySelector('svg#graph g.node[data-job="a"]').querySelector('rect, circle, ellipse, polygon, path'); return s && getComputedStyle(s).fill !== %s; })()`, jsString(a.Fill)),
		`document.querySelector('svg#graph g.node[data-job="a"]')?.outerHTML`, live)
	b.waitFor("b becomes SUCCESS", `document.querySelector('svg#graph g.node[data-job="b"]')?.getAttribute('data-state') === 'SUCCESS'`,
		`document.querySelector('svg#graph')?.outerHTML`, live)
	if got := e.WaitDone(id).Result; got != "SUCCESS" {
		t.Fatalf("buildset: %s", got)
	}
	b.waitFor("the timeline marks the critical path", `document.querySelector('svg#timeline rect.bar.critical')`,
		`document.querySelector('svg#timeline')?.outerHTML`, live)
	b.waitFor("the note names the critical path as run", `document.getElementById('critical-note')?.textContent.includes('as run: ')`,
		`document.getElementById('critical-note')?.outerHTML`, live)
	for _, job := range []string{"a", "b"} {
		b.has(fmt.Sprintf(`svg#timeline rect.bar[data-job=%q]`, job))
	}
	b.stillLoaded("buildset page")
	b.shot("buildset-done")
}

// visibleJS is true when the element exists and is rendered.
func visibleJS(selector string) string {
	return fmt.Sprintf(`(() => { const e = document.querySelector(%s); return !!e && e.getClientRects().length > 0; })()`, jsString(selector))
}

// TestBrowserBuildsetActions: the buildset page offers only the actions
// that can apply: cancel while the buildset runs, re-run once it is done
// and something did not succeed, neither for a finished success; and the
// buttons follow the state while the page is open.
func TestBrowserBuildsetActions(t *testing.T) {
	g := servertest.NewGate(t)
	e := startSortie(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: '%s; exit 1'}
  b: {dependencies: [a], run: "true"}
  fine: {run: "true"}
pipelines:
  deploy: {jobs: [boot, a, b]}
  ok: {jobs: [boot, fine]}
`, g.Wait()), g)
	good := e.Trigger("ok", nil)
	if r := e.WaitDone(good).Result; r != "SUCCESS" {
		t.Fatalf("ok: %s", r)
	}
	id := e.Trigger("deploy", nil)
	e.WaitStarted(id, "a")

	b := newBrowser(t, e.URL)
	b.open("/buildsets/" + id)
	form := `document.getElementById('actions')?.outerHTML`
	b.waitFor("#cancel shows while the buildset runs", visibleJS("form#actions #cancel"), form, live)
	if eval[bool](b, visibleJS("form#actions #rerun")) {
		t.Errorf("#rerun shows while the buildset runs")
	}
	b.mark()
	g.Open(t)
	if r := e.WaitDone(id).Result; r != "FAILURE" {
		t.Fatalf("deploy: %s", r)
	}
	b.waitFor("#rerun shows once the buildset failed", visibleJS("form#actions #rerun"), form, live)
	b.waitFor("#cancel goes once the buildset is done", "!"+visibleJS("form#actions #cancel"), form, live)
	b.stillLoaded("buildset page")

	b.open("/buildsets/" + good)
	b.waitFor("the page shows its state", `document.getElementById('bs-state')?.dataset.state === 'SUCCESS'`, `document.body.innerHTML.slice(0, 2000)`, live)
	for _, sel := range []string{"form#actions #cancel", "form#actions #rerun", "form#actions #token"} {
		if eval[bool](b, visibleJS(sel)) {
			t.Errorf("%s shows on a buildset that succeeded", sel)
		}
	}
}

// TestBrowserFailureSummary: the page of a buildset where a build failed
// starts with a summary: which builds failed, with the last lines of their
// logs, in place without a reload when the failure happens while the page
// is open.
func TestBrowserFailureSummary(t *testing.T) {
	g := servertest.NewGate(t)
	e := startSortie(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  deploy-web:
    run: |
      for i in $(seq 1 30); do echo "step $i"; done
      %s
      printf '\033[31mfatal: the web server <did not> start\033[0m\n'
      exit 3
  after-web: {dependencies: [deploy-web], run: "true"}
  fine: {run: "true"}
pipelines:
  deploy: {jobs: [boot, deploy-web, after-web, fine]}
`, g.Wait()), g)
	os.WriteFile(filepath.Join(e.Repo, "web.yaml"), []byte("tls: new\n"), 0o644)
	id := e.Trigger("deploy", map[string]string{"commit": sourcetest.Commit(t, e.Repo, "Serve the web site with the renewed TLS certificate")})
	e.WaitStarted(id, "deploy-web")

	b := newBrowser(t, e.URL)
	b.open("/buildsets/" + id)
	b.waitFor("the graph", `document.querySelector('svg#graph g.node[data-job="deploy-web"][data-state="RUNNING"]')`, `document.body.innerHTML.slice(0, 2000)`, live)
	if eval[bool](b, `!!document.getElementById('failure-summary')`) {
		t.Errorf("a failure summary shows before anything failed")
	}
	b.mark()
	g.Open(t)
	if r := e.WaitDone(id).Result; r != "FAILURE" {
		t.Fatalf("buildset: %s", r)
	}
	summary := `document.getElementById('failure-summary')`
	check := func(when string) {
		t.Helper()
		b.waitFor("the failure summary ("+when+")", summary+`?.querySelector('article.failure[data-job="deploy-web"] pre.log-tail')`, `document.querySelector('main').innerHTML.slice(0, 3000)`, live)
		type sum struct {
			First    bool     `json:"first"`
			Jobs     []string `json:"jobs"`
			Badge    string   `json:"badge"`
			Lines    []string `json:"lines"`
			Red      bool     `json:"red"`
			Link     bool     `json:"link"`
			Heading  string   `json:"heading"`
			HasBuild bool     `json:"hasBuild"`
		}
		got := eval[sum](b, `(() => {
			const s = `+summary+`;
			const a = s.querySelector('article.failure[data-job="deploy-web"]');
			const main = document.querySelector('main');
			const after = [...main.children].filter((c) => !['H1', 'P'].includes(c.tagName));
			return {
				first: after[0] === s,
				jobs: [...s.querySelectorAll('article.failure')].map((x) => x.dataset.job),
				badge: a.querySelector('.badge')?.textContent ?? '',
				lines: [...a.querySelectorAll('pre.log-tail span.line')].map((l) => l.textContent),
				red: !!a.querySelector('pre.log-tail span.fg31'),
				link: !!a.querySelector('a[href="/buildsets/`+id+`/builds/deploy-web"]'),
				heading: s.querySelector('h2')?.textContent ?? '',
				hasBuild: !!document.querySelector('#builds'),
			};
		})()`)
		if !got.First {
			t.Errorf("%s: the failure summary does not start the page (after the title)", when)
		}
		if !slices.Equal(got.Jobs, []string{"deploy-web"}) || got.Badge != "FAILURE" {
			t.Errorf("%s: the summary lists %v (badge %q), want deploy-web FAILURE only", when, got.Jobs, got.Badge)
		}
		if n := len(got.Lines); n != 20 || !strings.HasSuffix(got.Lines[n-1], "fatal: the web server <did not> start") || !strings.HasSuffix(got.Lines[0], "step 12") {
			t.Errorf("%s: the summary shows the lines %q, want the last 20 (step 12 to the fatal line)", when, got.Lines)
		}
		if !got.Red || !got.Link {
			t.Errorf("%s: the summary's log keeps no colour (%v) or does not link the build (%v)", when, got.Red, got.Link)
		}
		if !strings.HasPrefix(got.Heading, "Why it failed") {
			t.Errorf("%s: the summary's heading is %q", when, got.Heading)
		}
	}
	check("live")
	b.stillLoaded("buildset page")
	b.open("/buildsets/" + id)
	check("reloaded")
	b.shot("buildset-failed")
	b.colourScheme("dark")
	b.open("/buildsets/" + id)
	b.checkScheme("dark")
	b.shot("dark-buildset-failed")
}

// TestBrowserWhyItRuns: the builds table says which changed file selected
// a job and by which pattern, not only that "a file matched".
func TestBrowserWhyItRuns(t *testing.T) {
	e := startSortie(t, `
jobs:
  boot: {bootstrap: true, run: "true"}
  zuul: {run: "true", files: [^inventory/zuul, ^playbooks/]}
  base: {run: "true"}
pipelines:
  deploy: {jobs: [boot, zuul, base]}
`)
	id := e.Trigger("deploy", map[string]any{"files": []string{"README", "playbooks/x.yaml"}})
	e.WaitDone(id)
	b := newBrowser(t, e.URL)
	b.open("/buildsets/" + id)
	reason := func(job string) string {
		return eval[string](b, fmt.Sprintf(`document.querySelector('#builds tr[data-job=%q] td.reason')?.textContent ?? ""`, job))
	}
	for job, want := range map[string]string{
		"zuul": "matched playbooks/x.yaml by ^playbooks/",
		"base": "it has no files or irrelevant_files",
		"boot": "the bootstrap job",
	} {
		if got := reason(job); !strings.Contains(got, want) {
			t.Errorf("%s: why it runs says %q, want %q", job, got, want)
		}
	}
	if title := eval[string](b, `document.querySelector('svg#graph g.node[data-job="zuul"] title')?.textContent ?? ""`); !strings.Contains(title, "matched playbooks/x.yaml by ^playbooks/") {
		t.Errorf("zuul's node title says %q", title)
	}
}

// TestBrowserLiveLog: the build page streams the log as the job prints it,
// and renders ANSI colours as classed spans.
func TestBrowserLiveLog(t *testing.T) {
	g := servertest.NewGate(t)
	e := startSortie(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  talk:
    run: |
      echo "line one"
      printf '\033[31mred\033[0m\n'
      %s
      echo "line two"
pipelines:
  deploy: {jobs: [boot, talk]}
`, g.Wait()), g)
	id := e.Trigger("deploy", nil)
	e.WaitStarted(id, "talk")

	b := newBrowser(t, e.URL)
	b.open("/buildsets/" + id + "/builds/talk")
	logHTML := `document.querySelector('pre#log')?.outerHTML ?? document.body.innerHTML.slice(0, 2000)`
	b.waitFor(`"line one" in pre#log`, `[...document.querySelectorAll('pre#log span.line')].some(l => l.textContent.includes('line one'))`, logHTML, live)
	b.waitFor("the red line", `[...document.querySelectorAll('pre#log span.line')].some(l => l.textContent.includes('red'))`, logHTML, live)
	if eval[bool](b, `[...document.querySelectorAll('pre#log span.line')].some(l => l.textContent.includes('line two'))`) {
		t.Fatalf("line two shows before the gate opened")
	}
	type ansi struct {
		Raw       bool   `json:"raw"`
		Class     string `json:"class"`
		Colour    string `json:"colour"`
		LineColor string `json:"lineColour"`
	}
	got := eval[ansi](b, `(() => {
		const pre = document.querySelector('pre#log');
		const raw = /\u001b|\[31m|\[0m/.test(pre.textContent);
		const line = [...pre.querySelectorAll('span.line')].find(l => l.textContent.includes('red'));
		const s = [...line.querySelectorAll('span[class]')].find(s => s.textContent.trim() === 'red');
		return {raw, class: s ? s.className : "", colour: s ? getComputedStyle(s).color : "", lineColour: getComputedStyle(line).color};
	})()`)
	if got.Raw {
		t.Errorf("pre#log shows raw ANSI escape codes")
	}
	if got.Class == "" {
		t.Errorf(`"red" (printed in ANSI red) is not in a span with a class: %s`, eval[string](b, `[...document.querySelectorAll('pre#log span.line')].find(l => l.textContent.includes('red'))?.outerHTML ?? ""`))
	} else if got.Colour == got.LineColor {
		t.Errorf(`the ANSI red span (class %q) has the line's colour %s`, got.Class, got.Colour)
	}
	b.has("a#raw[href]")
	b.shot("log-running")

	b.mark()
	g.Open(t)
	b.waitFor(`"line two" appears`, `[...document.querySelectorAll('pre#log span.line')].some(l => l.textContent.includes('line two'))`, logHTML, live)
	if n := eval[int](b, `[...document.querySelectorAll('pre#log span.line')].filter(l => l.textContent.includes('line one')).length`); n != 1 {
		t.Errorf(`"line one" shows %d times, want once`, n)
	}
	e.WaitDone(id)
	b.stillLoaded("build page")
	// The raw log link serves the log itself.
	href := eval[string](b, `document.querySelector('a#raw').href`)
	if resp, err := http.Get(href); err != nil {
		t.Errorf("a#raw %s: %v", href, err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "line two") {
			t.Errorf("a#raw %s: %d %q, want the log", href, resp.StatusCode, body)
		}
	}
	b.open("/buildsets/" + id + "/builds/talk")
	b.waitFor("the whole log after a reload", `[...document.querySelectorAll('pre#log span.line')].some(l => l.textContent.includes('line two'))`, logHTML, live)
	b.has("table#attempts")
	b.has("#history-compare")
	b.shot("log-done")
}

// TestBrowserLiveLogEnds: a build page opened while the build runs follows
// it to its end: the header says FINISHED with its time and the final
// state, the running duration becomes the final one, the byte count is the
// log's size, every part the server renders reads as a fresh render of the
// page does, and "keep scrolled to the end" keeps the last line in view as
// lines arrive.
func TestBrowserLiveLogEnds(t *testing.T) {
	g := servertest.NewGate(t)
	e := startSortie(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  talk:
    run: |
      for i in $(seq 1 60); do echo "before the gate $i"; done
      %s
      for i in $(seq 1 150); do echo "after the gate $i"; done
pipelines:
  deploy: {jobs: [boot, talk]}
`, g.Wait()), g)
	id := e.Trigger("deploy", nil)
	e.WaitStarted(id, "talk")

	b := newBrowser(t, e.URL)
	b.open("/buildsets/" + id + "/builds/talk")
	logHTML := `document.querySelector('pre#log')?.outerHTML.slice(-2000) ?? document.body.innerHTML.slice(0, 2000)`
	b.waitFor(`"before the gate 60" in pre#log`, `[...document.querySelectorAll('pre#log span.line')].some(l => l.textContent.endsWith('before the gate 60'))`, logHTML, live)
	facts := `document.getElementById('build-facts')?.textContent`
	if got := eval[string](b, facts); !strings.Contains(got, "not yet") {
		t.Errorf("while running, the facts say %q, want Finished: not yet", got)
	}
	compare := `document.getElementById('history-compare')?.textContent`
	first := eval[string](b, compare)
	if !strings.HasPrefix(first, "Running for ") {
		t.Fatalf("while running, #history-compare says %q", first)
	}
	b.waitFor("the running duration to move on", fmt.Sprintf(`%s !== %s`, compare, jsString(first)), compare, live)
	b.mark()
	g.Open(t)
	e.WaitDone(id)
	b.waitFor("the header says SUCCESS", `document.getElementById('build-state')?.dataset.state === 'SUCCESS'`, `document.getElementById('build-facts')?.outerHTML`, live)
	b.waitFor(`"after the gate 150" in pre#log`, `[...document.querySelectorAll('pre#log span.line')].some(l => l.textContent.endsWith('after the gate 150'))`, logHTML, live)
	b.waitFor("the facts say when the build finished", `/Finished\s*\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ/.test(`+facts+`)`, facts, live)
	b.waitFor("the duration is the final one", `/^Took /.test(`+compare+`)`, compare, live)

	// The byte count is the log's size.
	raw := eval[string](b, `document.querySelector('a#raw').href`)
	resp, err := http.Get(raw)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	size := fmt.Sprintf("%d bytes", len(body))
	b.waitFor("the byte count is "+size, `document.querySelector('.log-note')?.textContent.includes(`+jsString(size)+`)`, `document.querySelector('.log-note')?.textContent`, live)

	// What the server renders now, the page shows: the facts, the
	// comparison, the attempts.
	type parts struct {
		Live, Fresh map[string]string
	}
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[parts](`(async () => {
		const r = await fetch(location.href, {cache: 'no-store'});
		const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
		const read = (d) => Object.fromEntries(['build-facts', 'history-compare', 'attempts'].map((id) => [id, (d.getElementById(id)?.textContent ?? '(none)').replace(/\s+/g, ' ').trim()]));
		return {Live: read(document), Fresh: read(doc)};
	})()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	for part, fresh := range got.Fresh {
		if got.Live[part] != fresh {
			t.Errorf("#%s after the end:\n page  %q\n fresh %q", part, got.Live[part], fresh)
		}
	}

	// The last line is in view: the log scrolled to its end, and the page
	// so that the log's end is on the screen.
	type view struct {
		Overflows bool    `json:"overflows"`
		FromEnd   float64 `json:"fromEnd"`
		Bottom    float64 `json:"bottom"`
		Height    float64 `json:"height"`
		Checked   bool    `json:"checked"`
	}
	v := eval[view](b, `(() => {
		const pre = document.querySelector('pre#log');
		const last = pre.lastElementChild.getBoundingClientRect();
		return {overflows: pre.scrollHeight > pre.clientHeight, fromEnd: pre.scrollHeight - pre.scrollTop - pre.clientHeight,
			bottom: last.bottom, height: window.innerHeight, checked: document.getElementById('autoscroll').checked};
	})()`)
	if !v.Checked {
		t.Errorf("keep scrolled to the end is not checked")
	}
	if !v.Overflows {
		t.Errorf("the log does not overflow its box: the test checks nothing")
	}
	if v.FromEnd > 2 || v.Bottom > v.Height+1 || v.Bottom < 0 {
		t.Errorf("the last line is not in view: %+v (%.0fpx from the log's end, its bottom at %.0fpx of %.0fpx)", v, v.FromEnd, v.Bottom, v.Height)
	}
	b.stillLoaded("build page")
	b.shot("log-ended")
}

// TestBrowserANSIScriptMatchesServer: the script that renders followed log lines
// (static/ansi.js, run by the live log page) renders them as the server
// renders the page (ansi.go), in the browser that runs the page. Both
// outputs are parsed and serialized by the browser, so that only what
// they render is compared, not how each escapes its text.
func TestBrowserANSIScriptMatchesServer(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle("GET /static/", web.New(nil)) // static files need no source
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<!doctype html><title>ansi</title><body></body>")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	b := newBrowser(t, srv.URL)
	b.open("/")
	cases := []string{
		"hello", "\x1b[31mred\x1b[0m plain", "\x1b[92mok\x1b[39m", "\x1b[1;33mwarn\x1b[22m yellow\x1b[m", "\x1b[31mr\x1b[;mx",
		"\x1b[41;97mX\x1b[0m", "\x1b[38;5;196;1mX\x1b[0m", "\x1b[38;2;1;2;3;4mX", `<script>alert("x&y")</script>`,
		"\x1b[31m<b>\x1b[0m", "a\x1b[2Kb\x1b[?25hc", "\x1b]0;title\x07text\x1b]8;;http://x\x1b\\link", "a\bb\x00c\td", "x\x1b", "x\x1b[31",
		"a\ufffdb é", "2026-01-02T03:04:05.123456789Z | hello", "2026 | hello", "\x1b[1;31mfatal: {\n  \"msg\": \"x\"\n}\x1b[0m\nafter",
		"\x1b[3;2;95mi\x1b[23;24;49mj", "\x1b[1;4;94;103mx\x1b[0m", "",
	}
	want := make([]string, len(cases))
	for i, c := range cases {
		want[i] = web.RenderLog([]byte(c))
	}
	type pair struct{ Script, Server string }
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	got, err := chromedp.Run(ctx, chromedp.Evaluate[[]pair](fmt.Sprintf(`(async (cases, want) => {
		const {SGR, renderLine} = await import('/static/ansi.js');
		return cases.map((c, i) => {
			const script = document.createElement('div');
			const s = new SGR('');
			if (c !== '') for (const l of c.split('\n')) script.append(renderLine(l, s));
			const server = document.createElement('div');
			server.innerHTML = want[i];
			return {Script: script.innerHTML, Server: server.innerHTML};
		});
	})(%s, %s)`, mustJSON(cases), mustJSON(want)), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("render in the browser: %v", err)
	}
	if len(got) != len(cases) {
		t.Fatalf("the browser rendered %d cases of %d", len(got), len(cases))
	}
	for i, c := range cases {
		if got[i].Script != got[i].Server {
			t.Errorf("%q:\n script %s\n server %s", c, got[i].Script, got[i].Server)
		}
	}
}

// TestBrowserHistory: the history page lists buildsets and filters them by
// result through its form; the job page shows durations and success rate.
func TestBrowserHistory(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "fail")
	e := startSortie(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  work: {run: '[ ! -e %q ]'}
pipelines:
  deploy: {jobs: [boot, work]}
`, flag))
	var ok, failed []string
	run := func(fail bool) {
		if fail {
			os.WriteFile(flag, nil, 0o644)
			defer os.Remove(flag)
		}
		id := e.Trigger("deploy", nil)
		r := e.WaitDone(id).Result
		switch {
		case fail && r == "FAILURE":
			failed = append(failed, id)
		case !fail && r == "SUCCESS":
			ok = append(ok, id)
		default:
			t.Fatalf("buildset %s: %s (fail=%v)\n%s", id, r, fail, e.Log)
		}
	}
	run(false)
	run(false)
	run(true)
	run(false)

	b := newBrowser(t, e.URL)
	b.open("/history")
	rows := `JSON.stringify([...document.querySelectorAll('table#history tr[data-buildset]')].map(r => r.getAttribute('data-buildset')).sort())`
	all := append(append([]string{}, ok...), failed...)
	b.waitFor("every buildset listed", fmt.Sprintf(`(() => { const got = %s; return %s.every(id => got.includes(id)); })()`, rows, mustJSON(all)),
		rows, live)
	b.has("form#filters")
	b.shot("history")

	set := eval[string](b, `(() => {
		const f = document.querySelector('form#filters');
		const el = f.elements.namedItem('result');
		if (!el) return "no field named result";
		el.value = 'FAILURE';
		if (el.value !== 'FAILURE') return "the result field does not take FAILURE";
		el.dispatchEvent(new Event('input', {bubbles: true}));
		el.dispatchEvent(new Event('change', {bubbles: true}));
		const btn = f.querySelector('button:not([type]), button[type=submit], input[type=submit]');
		if (btn) btn.click(); else f.requestSubmit();
		return "";
	})()`)
	if set != "" {
		t.Fatalf("form#filters: %s", set)
	}
	want := mustJSON(failed)
	b.waitFor("only the failed buildset listed", fmt.Sprintf(`%s === %s`, rows, jsString(want)), rows, live)
	b.shot("history-failure")

	b.open("/jobs/work")
	b.has("svg#durations")
	b.has("#success-rate")
	b.shot("job")
}

func mustJSON(v any) string {
	j, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(j)
}

// overflowJS lists what sticks out of a narrow viewport, unless it is
// inside a container that scrolls (or clips) horizontally.
const overflowJS = `(() => {
	const w = window.innerWidth;
	const out = {scrollWidth: document.documentElement.scrollWidth, innerWidth: w, wide: []};
	const scrolls = (e) => { for (let p = e.parentElement; p && p !== document.body; p = p.parentElement) {
		const ox = getComputedStyle(p).overflowX; if (ox === 'auto' || ox === 'scroll' || ox === 'hidden' || ox === 'clip') return true; } return false; };
	for (const e of document.body.querySelectorAll('*')) {
		const r = e.getBoundingClientRect();
		if (r.right > w + 1 && !scrolls(e)) {
			let s = e.localName + (e.id ? '#' + e.id : '') + (typeof e.className === 'string' && e.className ? '.' + e.className.trim().split(/\s+/).join('.') : '');
			out.wide.push(s + ' (right edge ' + Math.round(r.right) + 'px)');
			if (out.wide.length >= 8) break;
		}
	}
	return out;
})()`

type overflow struct {
	ScrollWidth int      `json:"scrollWidth"`
	InnerWidth  int      `json:"innerWidth"`
	Wide        []string `json:"wide"`
}

// TestBrowserNarrow: at 400 px wide, the status and buildset pages do not
// scroll sideways; a wide graph scrolls inside its own container.
func TestBrowserNarrow(t *testing.T) {
	g := servertest.NewGate(t)
	e := startSortie(t, fmt.Sprintf(`
semaphores: {bridge: 1}
jobs:
  boot: {bootstrap: true, run: "true"}
  letsencrypt: {run: "true"}
  service-zuul-scheduler: {dependencies: [letsencrypt], run: 'echo "a long line without spaces: %[2]s"; %[1]s'}
  failing-with-a-long-name: {run: 'echo "%[2]s"; exit 2'}
  service-zuul-executor: {dependencies: [letsencrypt], run: "true"}
  service-nodepool-launcher: {dependencies: [letsencrypt], run: "true"}
  service-etherpad: {dependencies: [letsencrypt], run: "true"}
  service-gitea-cluster: {dependencies: [letsencrypt], run: "true"}
  summary: {dependencies: [service-zuul-scheduler, service-zuul-executor, service-nodepool-launcher, service-etherpad, service-gitea-cluster], run: "true"}
pipelines:
  deploy-infra-production: {semaphore: bridge, jobs: [boot, letsencrypt, service-zuul-scheduler, service-zuul-executor, service-nodepool-launcher, service-etherpad, service-gitea-cluster, summary]}
  hourly-infra-periodic: {jobs: [boot, letsencrypt]}
  broken: {jobs: [boot, failing-with-a-long-name]}
`, g.Wait(), strings.Repeat("x", 300)), g)
	failed := e.Trigger("broken", nil)
	if r := e.WaitDone(failed).Result; r != "FAILURE" {
		t.Fatalf("broken: %s", r)
	}
	// A first run of the scheduler's job is its history: the second one
	// shows a progress bar.
	os.WriteFile(string(g), nil, 0o644)
	if r := e.WaitDone(e.Trigger("deploy-infra-production", nil)).Result; r != "SUCCESS" {
		t.Fatalf("first deploy: %s", r)
	}
	os.Remove(string(g))
	id := e.Trigger("deploy-infra-production", nil)
	e.WaitStarted(id, "service-zuul-scheduler")

	b := newBrowser(t, e.URL)
	if err := chromedp.Do(b.ctx, chromedp.EmulateViewport(400, 800)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ path, ready, name string }{
		{"/", `document.querySelector('section.pipeline li.entry ul.jobs li[data-job="service-zuul-scheduler"] progress')`, "narrow-status"},
		{"/buildsets/" + id, `document.querySelector('svg#graph g.node[data-job="summary"]')`, "narrow-buildset"},
		{"/buildsets/" + failed, `document.querySelector('#failure-summary pre.log-tail')`, "narrow-buildset-failed"},
		{"/buildsets/" + id + "/builds/service-zuul-scheduler", `document.querySelector('pre#log span.line')`, "narrow-log"},
		{"/history", `document.querySelector('table#history tr[data-buildset]')`, "narrow-history"},
		{"/jobs/service-zuul-scheduler", `document.querySelector('svg#durations')`, "narrow-job"},
	} {
		b.open(p.path)
		b.waitFor(p.path+" shows its content", p.ready, `document.body.innerHTML.slice(0, 2000)`, live)
		o := eval[overflow](b, overflowJS)
		if o.InnerWidth != 400 {
			t.Errorf("%s: innerWidth %d, want 400", p.path, o.InnerWidth)
		}
		if o.ScrollWidth > o.InnerWidth+1 {
			t.Errorf("%s at 400px: the page scrolls sideways (scrollWidth %d > innerWidth %d); too wide: %s",
				p.path, o.ScrollWidth, o.InnerWidth, strings.Join(o.Wide, ", "))
		}
		b.shot(p.name)
	}
}

// cssPathJS defines cssPath(el): a CSS selector that names el in a report.
const cssPathJS = `const cssPath = (el) => {
	const parts = [];
	for (let e = el; e && e.nodeType === 1 && parts.length < 6; e = e.parentElement) {
		let s = e.localName;
		if (e.id) { parts.unshift(s + '#' + CSS.escape(e.id)); break; }
		for (const a of ['data-job', 'data-pipeline', 'data-buildset', 'data-semaphore', 'name', 'for']) {
			if (e.hasAttribute(a)) s += '[' + a + '="' + e.getAttribute(a) + '"]';
		}
		const cls = (e.getAttribute('class') || '').trim().split(/\s+/).filter(Boolean);
		if (cls.length) s += '.' + cls.map(c => CSS.escape(c)).join('.');
		const p = e.parentElement;
		if (p) {
			const same = [...p.children].filter(c => c.localName === e.localName);
			if (same.length > 1) s += ':nth-of-type(' + (same.indexOf(e) + 1) + ')';
		}
		parts.unshift(s);
	}
	return parts.join(' > ');
};
`

// colourJS defines the colour helpers of the contrast checks: rgba(css)
// through a canvas (any CSS colour space), over(fg, bg), lum(c) (WCAG 2
// relative luminance), ratio(a, b), hex(c), and htmlBg(el): the background
// behind an HTML element, its own and its ancestors' background colours
// composed over the white canvas.
const colourJS = `const cv = document.createElement('canvas');
cv.width = cv.height = 1;
const cx = cv.getContext('2d', {willReadFrequently: true});
const rgba = (c) => {
	if (!c || !CSS.supports('color', c)) return null;
	cx.clearRect(0, 0, 1, 1);
	cx.fillStyle = '#000';
	cx.fillStyle = c;
	cx.fillRect(0, 0, 1, 1);
	const d = cx.getImageData(0, 0, 1, 1).data;
	return {r: d[0], g: d[1], b: d[2], a: d[3] / 255};
};
const over = (fg, bg) => ({r: fg.r * fg.a + bg.r * (1 - fg.a), g: fg.g * fg.a + bg.g * (1 - fg.a), b: fg.b * fg.a + bg.b * (1 - fg.a), a: 1});
const lum = (c) => {
	const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
	return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
};
const ratio = (a, b) => { const x = lum(a), y = lum(b); return (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05); };
const hex = (c) => '#' + [c.r, c.g, c.b].map(v => Math.round(v).toString(16).padStart(2, '0')).join('');
// The background behind an HTML element: its own and its ancestors'
// background colours, composed over the white canvas.
const htmlBg = (el) => {
	const layers = [];
	for (let e = el; e; e = e.parentElement) {
		const c = rgba(getComputedStyle(e).backgroundColor);
		if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; }
	}
	let bg = {r: 255, g: 255, b: 255, a: 1};
	for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
	return bg;
};
`

// a11yJS checks the basics of accessibility in the page and returns the
// violations. docs/ui.md lists what it checks and what it does not.
const a11yJS = `(() => {
const out = [];
` + cssPathJS + `const add = (rule, el, detail) => out.push({rule, selector: el ? cssPath(el) : 'document', detail});
const rendered = (el) => el.getClientRects().length > 0;
const named = (el) => {
	const al = el.getAttribute('aria-label');
	if (al && al.trim()) return true;
	const lb = el.getAttribute('aria-labelledby');
	return !!(lb && lb.trim().split(/\s+/).some(id => { const r = document.getElementById(id); return r && r.textContent.trim(); }));
};

// The document: a language, a title, one main landmark, unique ids.
const lang = document.documentElement.getAttribute('lang');
if (!lang || !lang.trim()) add('html-lang', document.documentElement, 'html has no lang attribute');
if (!document.title.trim()) add('document-title', null, 'the page has no title');
if (document.querySelectorAll('main').length !== 1) add('one-main', document.body, document.querySelectorAll('main').length + ' main elements, want 1');
const ids = new Set();
for (const el of document.querySelectorAll('[id]')) {
	if (ids.has(el.id)) add('unique-id', el, 'id "' + el.id + '" is used more than once');
	ids.add(el.id);
}

// Headings: exactly one h1, and no level skipped on the way down.
const hs = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].filter(rendered);
const h1s = hs.filter(h => h.localName === 'h1');
if (h1s.length !== 1) add('one-h1', h1s[1] || document.body, h1s.length + ' h1 elements, want 1');
let prev = 0;
for (const h of hs) {
	const lvl = +h.localName[1];
	if (lvl > prev + 1) add('heading-order', h, 'h' + lvl + ' follows ' + (prev ? 'h' + prev : 'the start of the page') + ' ("' + h.textContent.trim().slice(0, 40) + '")');
	prev = lvl;
}

// Form fields have labels.
for (const el of document.querySelectorAll('input, select, textarea')) {
	const type = (el.getAttribute('type') || '').toLowerCase();
	if (type === 'hidden') continue;
	if (['submit', 'button', 'reset'].includes(type) && (el.value || '').trim()) continue;
	if (type === 'image' && (el.getAttribute('alt') || '').trim()) continue;
	const labelled = el.labels && [...el.labels].some(l => l.textContent.trim());
	if (!labelled && !named(el)) add('form-label', el, 'no label (label for=, a wrapping label, aria-label or aria-labelledby)');
}

// Images and drawings have names.
for (const img of document.querySelectorAll('img')) {
	if (img.hasAttribute('alt') || named(img) || img.closest('[aria-hidden="true"]') || ['presentation', 'none'].includes(img.getAttribute('role'))) continue;
	add('img-name', img, 'img has no alt, aria-label or aria-labelledby');
}
for (const svg of document.querySelectorAll('svg')) {
	if (svg.parentElement && svg.parentElement.closest('svg')) continue;
	const content = ['graph', 'timeline', 'durations'].includes(svg.id);
	if (!content && svg.closest('[aria-hidden="true"]')) continue;
	const title = svg.querySelector(':scope > title');
	if ((title && title.textContent.trim()) || named(svg)) continue;
	add('svg-name', svg, 'svg has no title child, aria-label or aria-labelledby' + (content ? '' : ' (nor aria-hidden="true", if it is decoration)'));
}

// Links and buttons have names.
for (const el of document.querySelectorAll('a[href], button, [role="button"]')) {
	if (!rendered(el)) continue;
	const text = (el.textContent || '').trim();
	const inner = [...el.querySelectorAll('img[alt], svg > title')].some(i => (i.getAttribute('alt') || i.textContent || '').trim());
	if (text || inner || named(el) || (el.getAttribute('title') || '').trim()) continue;
	add('control-name', el, 'link or button has no accessible name');
}

// Text contrast, WCAG 2: at least 4.5:1 for every visible text.
` + colourJS + `// The background behind SVG text: the filled shapes drawn before it under
// its centre, over the background of the svg element.
const svgBg = (t) => {
	const svg = t.closest('svg');
	const r = t.getBoundingClientRect();
	const px = r.left + r.width / 2, py = r.top + r.height / 2;
	const layers = [];
	const shapes = [...svg.querySelectorAll('rect, circle, ellipse, polygon, path')]
		.filter(s => !s.closest('defs, marker, clipPath, mask, pattern, symbol'))
		.filter(s => s.compareDocumentPosition(t) & Node.DOCUMENT_POSITION_FOLLOWING);
	for (let i = shapes.length - 1; i >= 0; i--) {
		const s = shapes[i];
		const b = s.getBoundingClientRect();
		if (px < b.left || px > b.right || py < b.top || py > b.bottom) continue;
		const cs = getComputedStyle(s);
		if (cs.display === 'none' || cs.visibility === 'hidden') continue;
		const c = rgba(cs.fill);
		if (!c || c.a === 0) continue;
		c.a *= parseFloat(cs.fillOpacity || '1') * parseFloat(cs.opacity || '1');
		layers.push(c);
		if (c.a >= 1) break;
	}
	let bg = htmlBg(svg);
	for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg);
	return bg;
};
const texts = new Set();
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
while (walker.nextNode()) {
	const n = walker.currentNode;
	let el = n.parentElement;
	if (!el || !n.textContent.trim()) continue;
	if (el.closest('script, style, title, desc, noscript, template')) continue;
	if (el.localName === 'option' || el.localName === 'optgroup') el = el.closest('select') || el;
	texts.add(el);
}
for (const el of document.querySelectorAll('input:not([type=hidden]):not([type=checkbox]):not([type=radio])')) {
	if ((el.value || '').trim()) texts.add(el);
}
let checked = 0;
for (const el of texts) {
	if (!rendered(el)) continue;
	const r = el.getBoundingClientRect();
	if (r.width <= 1 || r.height <= 1) continue; // visually hidden text for screen readers
	const cs = getComputedStyle(el);
	if (cs.visibility !== 'visible') continue;
	let hidden = false;
	for (let e = el; e; e = e.parentElement) if (getComputedStyle(e).opacity === '0') { hidden = true; break; }
	if (hidden) continue;
	if (el.closest(':disabled')) continue; // WCAG exempts inactive controls
	const isSvg = el instanceof SVGElement && el.localName !== 'foreignObject' && !el.closest('foreignObject');
	let fg = rgba(isSvg ? cs.fill : cs.color);
	if (!fg) continue;
	if (isSvg) fg.a *= parseFloat(cs.fillOpacity || '1');
	const bg = isSvg ? svgBg(el) : htmlBg(el);
	fg = over(fg, bg);
	const cr = ratio(fg, bg);
	checked++;
	if (cr < 4.5) add('contrast', el, 'contrast ' + cr.toFixed(2) + ':1 (text ' + hex(fg) + ' on ' + hex(bg) + ', "' + el.textContent.trim().slice(0, 30) + '"), want at least 4.5:1');
}
return {violations: out, texts: checked};
})()`

type a11yReport struct {
	Violations []struct {
		Rule     string `json:"rule"`
		Selector string `json:"selector"`
		Detail   string `json:"detail"`
	} `json:"violations"`
	Texts int `json:"texts"`
}

// focusJS describes the keyboard focus: the element that has it and how
// it shows, with the contrast of its indicator against what surrounds it
// (WCAG 2.2's focus appearance asks 3:1). done is true when nothing in
// the page has focus.
const focusJS = `(() => {` + cssPathJS + colourJS + `
	const e = document.activeElement;
	if (!e || e === document.body || e === document.documentElement) return {done: true};
	const r = e.getBoundingClientRect();
	const out = {done: false, selector: cssPath(e), how: '', ratio: 0, seen: r.width > 0 && r.height > 0};
	const cs = getComputedStyle(e);
	let colour = null, behind = null;
	if (cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2) {
		out.how = 'outline ' + cs.outlineWidth;
		colour = rgba(cs.outlineColor);
		behind = htmlBg(e.parentElement || e);
	} else if (e.closest('svg')) {
		// A link in a drawing may outline its shape instead.
		const shape = e.querySelector('rect');
		const ss = shape && getComputedStyle(shape);
		if (ss && parseFloat(ss.strokeWidth) >= 3) {
			out.how = 'stroke ' + ss.strokeWidth;
			colour = rgba(ss.stroke);
			behind = htmlBg(e.closest('svg'));
		}
	}
	if (colour && behind) out.ratio = ratio(over(colour, behind), behind);
	return out;
})()`

type focusStop struct {
	Done     bool    `json:"done"`
	Selector string  `json:"selector"`
	How      string  `json:"how"`
	Ratio    float64 `json:"ratio"`
	Seen     bool    `json:"seen"`
}

// TestBrowserKeyboardFocus: on every page, in both colour schemes, every
// element the Tab key reaches shows that it has the focus: an outline (or,
// for a link in a drawing, a thick stroke of its shape) in a colour of at
// least 3:1 against what surrounds it.
func TestBrowserKeyboardFocus(t *testing.T) {
	g := servertest.NewGate(t)
	e := startSortie(t, fmt.Sprintf(`
jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: 'echo a; %s'}
  b: {dependencies: [a], run: "true"}
pipelines:
  deploy: {jobs: [boot, a, b]}
`, g.Wait()), g)
	id := e.Trigger("deploy", nil)
	e.WaitStarted(id, "a")

	b := newBrowser(t, e.URL)
	pages := []struct{ path, ready string }{
		{"/", `document.querySelector('section.pipeline li.entry ul.jobs')`},
		{"/buildsets/" + id, `document.querySelector('svg#graph g.node[data-job="a"][data-state="RUNNING"]') && !document.getElementById('actions').hidden`},
		{"/buildsets/" + id + "/builds/a", `[...document.querySelectorAll('pre#log span.line')].some(l => l.textContent.includes('a'))`},
		{"/history", `document.querySelector('form#filters')`},
		{"/jobs/a", `document.querySelector('svg#durations')`},
	}
	for _, scheme := range []string{"light", "dark"} {
		b.colourScheme(scheme)
		for _, p := range pages {
			b.open(p.path)
			b.waitFor(p.path+" shows its content", p.ready, `document.body.innerHTML.slice(0, 2000)`, live)
			seen := map[string]bool{}
			stops := 0
			for range 150 {
				ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
				err := chromedp.Do(ctx, chromedp.KeyEvent(kb.Tab))
				cancel()
				if err != nil {
					t.Fatalf("Tab: %v", err)
				}
				f := eval[focusStop](b, focusJS)
				if f.Done || seen[f.Selector] {
					break // back to the start
				}
				seen[f.Selector] = true
				stops++
				switch {
				case !f.Seen:
					t.Errorf("%s (%s): Tab reaches %s, which is not drawn", p.path, scheme, f.Selector)
				case f.How == "":
					t.Errorf("%s (%s): %s has the focus but shows no outline", p.path, scheme, f.Selector)
				case f.Ratio < 3:
					t.Errorf("%s (%s): the focus on %s (%s) has a contrast of %.2f:1 with what surrounds it, want 3:1", p.path, scheme, f.Selector, f.How, f.Ratio)
				}
			}
			if stops < 3 {
				t.Errorf("%s (%s): Tab reached %d elements", p.path, scheme, stops)
			}
			t.Logf("%s (%s): %d focus stops checked", p.path, scheme, stops)
		}
	}
}

// TestBrowserAccessibility: every page passes the basic checks of a11yJS,
// with a failed buildset and a running one in the state.
func TestBrowserAccessibility(t *testing.T) {
	g := servertest.NewGate(t)
	flag := filepath.Join(t.TempDir(), "fail")
	e := startSortie(t, fmt.Sprintf(`
semaphores: {bridge: 1}
jobs:
  boot: {bootstrap: true, run: "true"}
  a:
    run: |
      echo "deploying"
      printf '\033[32mok\033[0m \033[1;33mwarning\033[0m \033[31mfailed\033[0m\n'
  b: {dependencies: [a], run: '[ ! -e %q ] || { echo "it broke" >&2; exit 1; }'}
  c: {dependencies: [a], run: '%s'}
pipelines:
  deploy: {semaphore: bridge, jobs: [boot, a, b]}
  hourly: {jobs: [boot, a, c]}
`, flag, g.Wait()), g)
	os.WriteFile(flag, nil, 0o644)
	failed := e.Trigger("deploy", nil)
	if r := e.WaitDone(failed).Result; r != "FAILURE" {
		t.Fatalf("buildset %s: %s, want FAILURE\n%s", failed, r, e.Log)
	}
	os.Remove(flag)
	if r := e.WaitDone(e.Trigger("deploy", nil)).Result; r != "SUCCESS" {
		t.Fatalf("second deploy: %s", r)
	}
	running := e.Trigger("hourly", nil)
	e.WaitStarted(running, "c")

	b := newBrowser(t, e.URL)
	pages := []struct{ path, ready, name string }{
		{"/", `document.querySelector('section.pipeline a.buildset')`, "a11y-status"},
		{"/buildsets/" + failed, `document.querySelector('svg#graph g.node[data-job="b"][data-state="FAILURE"]')`, "a11y-buildset-failed"},
		{"/buildsets/" + running, `document.querySelector('svg#graph g.node[data-job="c"][data-state="RUNNING"]')`, "a11y-buildset-running"},
		{"/buildsets/" + failed + "/builds/a", `[...document.querySelectorAll('pre#log span.line')].some(l => l.textContent.includes('failed'))`, "a11y-log"},
		{"/buildsets/" + failed + "/builds/b", `[...document.querySelectorAll('pre#log span.line')].some(l => l.textContent.includes('it broke'))`, "a11y-log-failed"},
		{"/history", `document.querySelector('table#history tr[data-buildset]')`, "a11y-history"},
		{"/jobs/b", `document.querySelector('svg#durations')`, "a11y-job"},
	}
	for _, scheme := range []string{"light", "dark"} {
		b.colourScheme(scheme)
		for _, p := range pages {
			b.open(p.path)
			b.waitFor(p.path+" shows its content", p.ready, `document.body.innerHTML.slice(0, 2000)`, live)
			name := p.name
			if scheme == "dark" {
				name += "-dark"
			}
			b.shot(name)
			b.checkScheme(scheme)
			rep := eval[a11yReport](b, a11yJS)
			for _, v := range rep.Violations {
				t.Errorf("%s (%s): %s: %s: %s", p.path, scheme, v.Rule, v.Selector, v.Detail)
			}
			t.Logf("%s (%s): %d text elements checked for contrast, %d violations", p.path, scheme, rep.Texts, len(rep.Violations))
		}
	}
}

// colourScheme makes the browser prefer a colour scheme, as a system
// setting does (prefers-color-scheme); it holds for the pages opened next.
func (b *browser) colourScheme(scheme string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}},
	})
	if err != nil {
		b.t.Fatalf("prefers-color-scheme %s: %v", scheme, err)
	}
}

// checkScheme fails the test unless the page follows the scheme: a dark
// background and light text in the dark one, the reverse in the light one.
func (b *browser) checkScheme(scheme string) {
	b.t.Helper()
	type lums struct {
		Bg   float64 `json:"bg"`
		Text float64 `json:"text"`
	}
	got := eval[lums](b, `(() => {`+colourJS+`
		return {bg: lum(htmlBg(document.querySelector('main'))), text: lum(rgba(getComputedStyle(document.querySelector('main')).color))};
	})()`)
	dark := got.Bg < 0.1 && got.Text > 0.5
	light := got.Bg > 0.8 && got.Text < 0.2
	if (scheme == "dark" && !dark) || (scheme == "light" && !light) {
		b.t.Errorf("%s with prefers-color-scheme %s: the page's background has a luminance of %.2f and its text %.2f: it does not follow the %[2]s scheme",
			b.location(), scheme, got.Bg, got.Text)
	}
}
