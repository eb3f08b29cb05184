package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/sortie-ci/sortie/internal/config"
)

// DefaultTokensEnv is where the bearer tokens come from when server.tokens_env
// is not set.
const DefaultTokensEnv = "SORTIE_TOKENS"

// tokenSet holds the SHA-256 of each token, never the tokens themselves,
// and compares in constant time.
type tokenSet struct {
	env    string
	hashes [][32]byte
}

func readTokens(cfg *config.Config, getenv func(string) string) *tokenSet {
	env := cfg.Server.TokensEnv
	if env == "" {
		env = DefaultTokensEnv
	}
	ts := &tokenSet{env: env}
	for t := range strings.SplitSeq(getenv(env), ",") {
		if t = strings.TrimSpace(t); t != "" {
			ts.hashes = append(ts.hashes, sha256.Sum256([]byte(t)))
		}
	}
	return ts
}

// valid reports whether the request carries one of the tokens. Every
// token is compared, so the time taken says nothing about which matched.
func (ts *tokenSet) valid(r *http.Request) bool {
	tok, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return false
	}
	return ts.validToken(tok)
}

// bearer returns the token of an Authorization header of the Bearer
// scheme. Schemes are case-insensitive (RFC 9110 section 11.1), and one
// or more spaces separate the scheme from the token.
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimLeft(tok, " ")
	return tok, tok != ""
}

// mutating wraps a handler that changes state: it needs a valid token.
func (s *Server) mutating(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ts := s.tokens.Load()
		if !ts.valid(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sortie"`)
			msg := "this call needs Authorization: Bearer <token>, one of the tokens in $" + ts.env
			if len(ts.hashes) == 0 {
				msg = "no token is configured: set $" + ts.env + " (comma-separated tokens) in the server's environment"
			}
			writeError(w, http.StatusUnauthorized, msg)
			return
		}
		h(w, r)
	}
}

// tokenCookie carries a token for reads from a browser, which cannot send
// an Authorization header with a page request (server.public_read: false).
// It is never accepted for a mutating call: those need the header, which
// a cross-site request cannot set.
const tokenCookie = "sortie_token"

// reading wraps a read: open when server.public_read (the default), else it
// needs a token, in the Authorization header or, from a browser, in the
// cookie /login sets. A page request without one is sent to /login.
func (s *Server) reading(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.Config().Server.PublicRead {
			h(w, r)
			return
		}
		ts := s.tokens.Load()
		if ts.valid(r) || ts.validCookie(r) {
			h(w, r)
			return
		}
		if r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/") && r.URL.Path != "/metrics" {
			http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		s.mutating(h)(w, r)
	}
}

// validCookie reports whether the request's token cookie holds a token.
func (ts *tokenSet) validCookie(r *http.Request) bool {
	c, err := r.Cookie(tokenCookie)
	if err != nil || c.Value == "" {
		return false
	}
	return ts.validToken(c.Value)
}

// validToken compares tok with every token, in constant time.
func (ts *tokenSet) validToken(tok string) bool {
	h := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	match := 0
	for _, want := range ts.hashes {
		match |= subtle.ConstantTimeCompare(h[:], want[:])
	}
	return match == 1
}

// loginStyle is the sign-in page's only style, inline so that the page
// stands alone; loginCSP allows it by its hash, and nothing else.
const loginStyle = `body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem;color:#111;background:#fff}
label{display:block;margin:.5rem 0 .25rem}input{width:100%;padding:.4rem;font:inherit}button{margin-top:1rem;padding:.4rem 1rem;font:inherit}
.error{color:#8a1c1c}`

var loginCSP = "default-src 'none'; style-src '" + cspHash(loginStyle) + "'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// cspHash is a Content-Security-Policy source naming an inline element by
// the hash of its text.
func cspHash(text string) string {
	sum := sha256.Sum256([]byte(text))
	return "sha256-" + base64.StdEncoding.EncodeToString(sum[:])
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Sortie</title>
<style>` + loginStyle + `</style></head>
<body><main><h1>Sign in to Sortie</h1>
<p>This server's pages need one of its API tokens (<code>{{.Env}}</code>).</p>
{{if .Error}}<p class="error" role="alert">{{.Error}}</p>{{end}}
<form method="post" action="/login"><input type="hidden" name="next" value="{{.Next}}">
<label for="token">API token</label><input id="token" name="token" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button></form></main></body></html>
`))

// login shows the sign-in form (GET) or checks a token and sets the
// cookie (POST), then sends the browser to next, kept to a path of this
// server (safeNext).
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	ts := s.tokens.Load()
	next := safeNext(r.FormValue("next"))
	w.Header().Set("Content-Security-Policy", loginCSP)
	data := struct{ Env, Next, Error string }{Env: "$" + ts.env, Next: next}
	if r.Method == http.MethodPost {
		if ts.validToken(r.PostFormValue("token")) {
			http.SetCookie(w, &http.Cookie{
				Name: tokenCookie, Value: strings.TrimSpace(r.PostFormValue("token")), Path: "/",
				HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode,
			})
			http.Redirect(w, r, next, http.StatusSeeOther)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		data.Error = "That is not one of this server's tokens."
	} else {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
	}
	loginPage.Execute(w, data)
}

// safeNext returns next if it is a path of this server to send a browser
// to after signing in, else "/". Browsers are lenient with a Location:
// they drop tabs and newlines, read a backslash as a slash, and take
// "//host" as another site; so next must start with one "/" followed by
// neither "/" nor "\", hold no control character, space or backslash,
// and parse to a path with no scheme or host whose decoded form starts
// the same way ("/%2F/evil.com" and "/%09/evil.com" are refused too).
func safeNext(next string) string {
	if !pathStart(next) || strings.IndexFunc(next, badInPath) >= 0 {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "/"
	}
	if !pathStart(u.Path) || strings.IndexFunc(u.Path, badInPath) >= 0 {
		return "/"
	}
	return next
}

// pathStart reports whether p is "/", or starts with "/" followed by
// neither "/" nor a backslash.
func pathStart(p string) bool {
	return len(p) > 0 && p[0] == '/' && (len(p) == 1 || p[1] != '/' && p[1] != '\\')
}

// badInPath reports whether r may not appear in a path to redirect to:
// browsers drop some (tabs, newlines) and read a backslash as a slash.
func badInPath(r rune) bool {
	return r == '\\' || r == utf8.RuneError || unicode.IsSpace(r) || unicode.IsControl(r)
}
