package server

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestBearerScheme: the scheme of Authorization is matched whatever its
// case (RFC 9110); another scheme, or none, is refused.
func TestBearerScheme(t *testing.T) {
	e := start(t, pushConfig, envOpt{})
	for _, tc := range []struct {
		header string
		want   int
	}{
		{"Bearer " + testToken, 200},
		{"bearer " + testToken, 200},
		{"BEARER " + testToken, 200},
		{"bEaReR  " + testToken, 200},
		{"Basic " + testToken, 401},
		{"Bearer" + testToken, 401},
		{testToken, 401},
		{"Bearer ", 401},
		{"Bearer wrong", 401},
	} {
		req, _ := http.NewRequest("POST", e.url+"/api/v1/resume", nil)
		req.Header.Set("Authorization", tc.header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Authorization %q: %d, want %d", tc.header, resp.StatusCode, tc.want)
		}
	}
}

// TestSecurityHeaders: every answer carries the headers the web pages
// have: JSON, errors, a raw log, the sign-in page; the sign-in page's
// policy allows its own style and nothing else.
func TestSecurityHeaders(t *testing.T) {
	e := start(t, pushConfig, envOpt{env: map[string]string{"GH_SECRET": "s3cret"}})
	id := e.trigger("deploy", nil)
	e.waitDone(id)
	for _, tc := range []struct{ method, path string }{
		{"GET", "/healthz"},
		{"GET", "/api/v1/status"},
		{"GET", "/api/v1/buildsets/" + id},
		{"GET", "/api/v1/buildsets/nope"},
		{"GET", "/api/v1/buildsets/" + id + "/builds/boot/log"},
		{"POST", "/api/v1/pause"},
		{"POST", "/webhooks/github"},
		{"GET", "/metrics"},
		{"GET", "/login"},
		{"GET", "/no/such/page"},
	} {
		req, _ := http.NewRequest(tc.method, e.url+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		h := resp.Header
		if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" ||
			h.Get("Referrer-Policy") != "same-origin" || !strings.Contains(h.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
			t.Errorf("%s %s (%d): headers %v, want nosniff, DENY, same-origin and a policy", tc.method, tc.path, resp.StatusCode, h)
		}
		if tc.path == "/login" {
			style := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindSubmatch(body)
			if style == nil {
				t.Fatalf("the sign-in page has no style")
			}
			sum := sha256.Sum256(style[1])
			want := "style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
			if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, want) || !strings.Contains(csp, "default-src 'none'") {
				t.Errorf("sign-in page policy %q, want default-src 'none' and %s", csp, want)
			}
		}
	}
	var st StatusJSON
	if _, out := e.do("GET", "/api/v1/status", nil, ""); json.Unmarshal(out, &st) != nil {
		t.Errorf("status is not JSON: %s", out)
	}
}
