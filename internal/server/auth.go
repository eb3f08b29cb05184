package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"

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
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || tok == "" {
		return false
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	match := 0
	for _, want := range ts.hashes {
		match |= subtle.ConstantTimeCompare(h[:], want[:])
	}
	return match == 1
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

// reading wraps a read: open when server.public_read (the default), else it
// needs a token too.
func (s *Server) reading(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.Config().Server.PublicRead {
			s.mutating(h)(w, r)
			return
		}
		h(w, r)
	}
}
