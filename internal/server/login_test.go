package server

import (
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// TestLoginNext: after signing in, a browser is sent only to a path of
// this server; anything a browser could read as another site is "/".
func TestLoginNext(t *testing.T) {
	e := start(t, pushConfig, envOpt{})
	// The transport alone: a client would refuse some of the Locations
	// before the test could look at them.
	postForm := func(next string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", e.url+"/login", strings.NewReader(url.Values{"token": {testToken}, "next": {next}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	hostile := []string{
		"//evil.com", "///evil.com", "/\tevil", "/\t/evil.com", "/\\evil.com", "/\\/evil.com", "https://evil.com",
		"http:/evil.com", "/%09/evil.com", "/%2F/evil.com", "/%2f/evil.com", "/%5Cevil.com", "\t/evil", " /evil",
		"/\n/evil.com", "/\r\n/evil.com", "/x\x00", "/\u00a0/evil.com", "javascript:alert(1)", "evil.com", "",
		"/a\\..\\..\\evil.com", "/\xff/evil.com",
	}
	for _, next := range hostile {
		resp := postForm(next)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
			t.Errorf("POST /login next=%q: %d Location %q, want 303 to /", next, resp.StatusCode, resp.Header.Get("Location"))
		}
		resp, err := http.Get(e.url + "/login?next=" + url.QueryEscape(next))
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.Contains(string(page), `name="next" value="/">`) {
			t.Errorf("GET /login?next=%q pre-fills %s, want /", next, regexp.MustCompile(`name="next" value="[^"]*"`).Find(page))
		}
	}
	for _, next := range []string{"/", "/history?job=boot&result=FAILURE", "/buildsets/01a2/builds/talk", "/jobs/boot#runs"} {
		if resp := postForm(next); resp.Header.Get("Location") != next {
			t.Errorf("POST /login next=%q: Location %q, want it kept", next, resp.Header.Get("Location"))
		}
	}
}
