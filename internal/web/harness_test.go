package web

// The test harness: a real `sortie serve` (SQLite, the local bastion, a
// real git repository) on loopback with the pages mounted, and a small DOM
// to look at what the pages render.

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/bastion/local"
	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/semaphore"
	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/source"
	"github.com/sortie-ci/sortie/internal/source/sourcetest"
	"github.com/sortie-ci/sortie/internal/store"
	"github.com/sortie-ci/sortie/internal/store/sqlite"
)

const uiToken = "ui-test-token"

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// uiServer is a real server with the UI mounted.
type uiServer struct {
	t     *testing.T
	srv   *server.Server
	st    store.Store
	ui    *Handler
	url   string
	dir   string // config dir
	repo  string
	log   *lockedBuffer
	gates []string
}

// gate returns a file path and the shell loop that waits for it; every
// gate opens at the end of the test, before the server stops.
func (u *uiServer) gate() (path, wait string) {
	path = filepath.Join(u.t.TempDir(), "gate")
	u.gates = append(u.gates, path)
	return path, fmt.Sprintf(`while [ ! -e %q ]; do sleep 0.02; done`, path)
}

func openGate(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// newUI makes a test server; make its gates, then start it.
func newUI(t *testing.T) *uiServer {
	return &uiServer{t: t, log: &lockedBuffer{}}
}

// start serves cfg (after a source section naming a fresh repository)
// with the UI mounted, until the test ends.
func (u *uiServer) start(cfg string) *uiServer {
	t := u.t
	t.Helper()
	repo, _ := sourcetest.Repo(t, map[string]string{"README": "hello\n", "docs/index.md": "docs\n", "playbooks/site.yaml": "site\n"})
	u.repo = repo
	u.dir = t.TempDir()
	state := t.TempDir()
	u.writeConfig(cfg)
	c, err := config.Load(u.dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(state, "sortie.db"))
	if err != nil {
		t.Fatal(err)
	}
	u.st = st
	owner := fmt.Sprintf("srv-ui%d", time.Now().UnixNano())
	sems := &semaphore.Client{Store: st, Owner: owner}
	if err := sems.Start(ctx); err != nil {
		t.Fatal(err)
	}
	b := local.New(filepath.Join(state, "bastion"))
	b.Owner = owner
	mirror := &source.Mirror{Dir: filepath.Join(state, "mirror.git"), URL: c.Source.URL}
	getenv := func(k string) string {
		if k == "SORTIE_TOKENS" {
			return uiToken
		}
		return ""
	}
	runner := &buildset.Runner{
		Store: st, Bastion: b, Mirror: mirror, Semaphores: sems, LogDir: filepath.Join(state, "logs"),
		Getenv: getenv, Poll: 20 * time.Millisecond, Grace: time.Second,
	}
	srv, err := server.New(server.Options{
		ConfigPath: u.dir, Config: c, StateDir: state, Listen: "127.0.0.1:0",
		Store: st, Semaphores: sems, Bastion: b, Mirror: mirror, Runner: runner,
		Getenv: getenv, Grace: 2 * time.Second, Tick: 50 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(u.log, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	u.srv = srv
	u.ui = New(srv)
	srv.SetUI(u.ui)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- srv.Run(rctx)
		sems.Stop()
		st.Close()
	}()
	t.Cleanup(func() {
		for _, g := range u.gates {
			os.WriteFile(g, nil, 0o644)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("server: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("server did not stop\n%s", u.log)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("server stopped: %v\n%s", err, u.log)
		default:
		}
		if a := srv.Addr(); a != "" {
			u.url = "http://" + a
			if resp, err := http.Get(u.url + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return u
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready\n%s", u.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (u *uiServer) writeConfig(cfg string) {
	u.t.Helper()
	full := fmt.Sprintf("source: {url: %q, branch: main}\n%s", u.repo, cfg)
	if err := os.WriteFile(filepath.Join(u.dir, "sortie.yaml"), []byte(full), 0o644); err != nil {
		u.t.Fatal(err)
	}
}

// do calls the API with the token; body may be nil.
func (u *uiServer) do(method, path string, body any) (int, []byte) {
	u.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u.url+path, rd)
	if err != nil {
		u.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+uiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func (u *uiServer) post(path string, body any, want int) []byte {
	u.t.Helper()
	code, out := u.do("POST", path, body)
	if code != want {
		u.t.Fatalf("POST %s: %d %s, want %d", path, code, out, want)
	}
	return out
}

func (u *uiServer) trigger(pipeline string, body any) string {
	u.t.Helper()
	var r struct{ Buildset string }
	json.Unmarshal(u.post("/api/v1/pipelines/"+pipeline+"/trigger", body, http.StatusAccepted), &r)
	return r.Buildset
}

func (u *uiServer) buildset(id string) *server.BuildsetJSON {
	u.t.Helper()
	bs, err := u.srv.Buildset(context.Background(), id)
	if err != nil {
		u.t.Fatal(err)
	}
	return bs
}

func (u *uiServer) wait(id, what string, cond func(*server.BuildsetJSON) bool) *server.BuildsetJSON {
	u.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		bs := u.buildset(id)
		if cond(bs) {
			return bs
		}
		if time.Now().After(deadline) {
			u.t.Fatalf("buildset %s: timed out waiting until %s; it is %s %s\n%s", id, what, bs.State, bs.Result, u.log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (u *uiServer) waitDone(id string) *server.BuildsetJSON {
	u.t.Helper()
	return u.wait(id, "done", func(b *server.BuildsetJSON) bool { return b.State == "DONE" })
}

func (u *uiServer) waitStarted(id, job string) {
	u.t.Helper()
	u.wait(id, job+" runs", func(b *server.BuildsetJSON) bool {
		for _, br := range b.Builds {
			if br.Job == job {
				return br.StartedAt.Get() != nil && br.FinishedAt.Get() == nil
			}
		}
		return false
	})
}

// get fetches a page and parses it; it fails unless the status is want.
func (u *uiServer) get(path string, want int) *node {
	u.t.Helper()
	resp, err := http.Get(u.url + path)
	if err != nil {
		u.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		u.t.Fatalf("GET %s: %d, want %d\n%s", path, resp.StatusCode, want, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		u.t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	doc, err := parseHTML(body)
	if err != nil {
		u.t.Fatalf("GET %s: the page does not parse: %v\n%s", path, err, body)
	}
	doc.raw = string(body)
	return doc
}

// ---- A small DOM -------------------------------------------------------------

// node is an element of a parsed page (or its text, in text).
type node struct {
	tag      string
	attrs    map[string]string
	children []*node
	text     string // for text nodes
	parent   *node
	raw      string // the document's source, on the root
}

// parseHTML parses the pages' HTML (well-formed but for void elements)
// with encoding/xml in its lenient HTML mode.
func parseHTML(b []byte) (*node, error) {
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	root := &node{tag: "#document", attrs: map[string]string{}}
	cur := root
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return root, nil
		}
		if err != nil {
			return nil, err
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			n := &node{tag: strings.ToLower(tk.Name.Local), attrs: map[string]string{}, parent: cur}
			for _, a := range tk.Attr {
				name := a.Name.Local
				if a.Name.Space != "" && a.Name.Space != "http://www.w3.org/2000/svg" {
					name = a.Name.Space + ":" + name
				}
				n.attrs[strings.ToLower(name)] = a.Value
			}
			cur.children = append(cur.children, n)
			cur = n
		case xml.EndElement:
			if cur.parent != nil {
				cur = cur.parent
			}
		case xml.CharData:
			cur.children = append(cur.children, &node{text: string(tk), parent: cur})
		}
	}
}

func (n *node) attr(name string) string { return n.attrs[name] }

func (n *node) has(name string) bool {
	_, ok := n.attrs[name]
	return ok
}

func (n *node) hasClass(c string) bool {
	for f := range strings.FieldsSeq(n.attrs["class"]) {
		if f == c {
			return true
		}
	}
	return false
}

// Text is the text content.
func (n *node) Text() string {
	if n.tag == "" {
		return n.text
	}
	var b strings.Builder
	for _, c := range n.children {
		b.WriteString(c.Text())
	}
	return b.String()
}

// all returns the elements under n (n excluded) that match.
func (n *node) all(match func(*node) bool) []*node {
	var out []*node
	var walk func(*node)
	walk = func(x *node) {
		for _, c := range x.children {
			if c.tag == "" {
				continue
			}
			if match(c) {
				out = append(out, c)
			}
			walk(c)
		}
	}
	walk(n)
	return out
}

// sel matches tag (or any, "") with a class (or "") and attributes given
// as name, value pairs (value "*": present).
func sel(tag, class string, attrs ...string) func(*node) bool {
	return func(n *node) bool {
		if tag != "" && n.tag != tag {
			return false
		}
		if class != "" && !n.hasClass(class) {
			return false
		}
		for i := 0; i+1 < len(attrs); i += 2 {
			v, ok := n.attrs[attrs[i]]
			if !ok || (attrs[i+1] != "*" && v != attrs[i+1]) {
				return false
			}
		}
		return true
	}
}

func (n *node) one(t *testing.T, what string, match func(*node) bool) *node {
	t.Helper()
	list := n.all(match)
	if len(list) != 1 {
		t.Fatalf("%d elements are %s, want 1", len(list), what)
	}
	return list[0]
}

func (n *node) byID(t *testing.T, id string) *node {
	t.Helper()
	return n.one(t, "#"+id, sel("", "", "id", id))
}

func (n *node) none(t *testing.T, what string, match func(*node) bool) {
	t.Helper()
	if list := n.all(match); len(list) != 0 {
		t.Errorf("%d elements are %s, want none", len(list), what)
	}
}
