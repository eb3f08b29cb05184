package web

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/sortie-ci/sortie/internal/server/servertest"
)

// TestPrivateReads: with server.public_read false, a browser without a
// token is sent to /login; a good token sets a cookie that opens the
// pages and the API's reads, never its mutating calls.
func TestPrivateReads(t *testing.T) {
	u := startUI(t, `
server: {public_read: false}
jobs:
  boot: {bootstrap: true, run: "true"}
pipelines:
  p: {jobs: [boot]}
`)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(req *http.Request) (*http.Response, string) {
		t.Helper()
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	get := func(path string, cookie *http.Cookie) (*http.Response, string) {
		req, _ := http.NewRequest("GET", u.URL+path, nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		return do(req)
	}

	// No token: pages go to the sign-in form, the API says 401.
	resp, _ := get("/history?job=boot", nil)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next="+url.QueryEscape("/history?job=boot") {
		t.Fatalf("page without a token: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp, _ := get("/api/v1/status", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("API read without a token: %d", resp.StatusCode)
	}
	if resp, body := get("/login?next=/history", nil); resp.StatusCode != 200 || !strings.Contains(body, `name="token"`) || !strings.Contains(body, `<label for="token"`) {
		t.Errorf("sign-in form: %d\n%s", resp.StatusCode, body)
	}

	login := func(token, next string) *http.Response {
		form := url.Values{"token": {token}, "next": {next}}
		req, _ := http.NewRequest("POST", u.URL+"/login", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, _ := do(req)
		return resp
	}
	if resp := login("wrong", "/"); resp.StatusCode != http.StatusUnauthorized || len(resp.Cookies()) != 0 {
		t.Errorf("a wrong token: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	// An off-site next is not followed.
	if resp := login(servertest.Token, "//evil.example/"); resp.Header.Get("Location") != "/" {
		t.Errorf("off-site next: redirected to %q", resp.Header.Get("Location"))
	}
	resp = login(servertest.Token, "/history")
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/history" || len(resp.Cookies()) != 1 {
		t.Fatalf("a good token: %d %q %v", resp.StatusCode, resp.Header.Get("Location"), resp.Cookies())
	}
	cookie := resp.Cookies()[0]
	if !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode {
		t.Errorf("cookie %+v: want HttpOnly and SameSite=Strict", cookie)
	}

	if resp, body := get("/", cookie); resp.StatusCode != 200 || !strings.Contains(body, `id="status"`) {
		t.Errorf("status page with the cookie: %d", resp.StatusCode)
	}
	if resp, _ := get("/api/v1/status", cookie); resp.StatusCode != 200 {
		t.Errorf("API read with the cookie: %d", resp.StatusCode)
	}
	// The cookie never authorises a change.
	req, _ := http.NewRequest("POST", u.URL+"/api/v1/pause", strings.NewReader(`{}`))
	req.AddCookie(cookie)
	if resp, _ := do(req); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a mutating call with only the cookie: %d, want 401", resp.StatusCode)
	}
}
