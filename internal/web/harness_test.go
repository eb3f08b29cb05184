package web

// The test harness: a real `sortie serve` (SQLite, the local bastion, a
// real git repository) on loopback with the pages mounted, and a small DOM
// to look at what the pages render.

import (
	"bytes"
	"encoding/xml"
	"io"
	"net/http"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/server/servertest"
)

// The servers, their runs and the browsers start goroutines: none may
// outlive the tests.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// uiServer is a real server with the UI mounted.
type uiServer struct {
	*servertest.Server
	t  *testing.T
	ui *Handler
}

// startUI serves cfg (after a source section naming a fresh repository)
// with the UI mounted, until the test ends; gates open at its end.
func startUI(t *testing.T, cfg string, gates ...servertest.Gate) *uiServer {
	t.Helper()
	u := &uiServer{t: t}
	u.Server = servertest.Start(t, cfg, servertest.Options{
		UI: func(srv *server.Server) http.Handler {
			u.ui = New(srv)
			return u.ui
		},
		Gates: gates,
	})
	return u
}

// get fetches a page and parses it; it fails unless the status is want.
func (u *uiServer) get(path string, want int) *node {
	u.t.Helper()
	resp, err := http.Get(u.URL + path)
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
