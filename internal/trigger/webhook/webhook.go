// Package webhook verifies and parses the push webhooks that forges send
// (POST /webhooks/github, /webhooks/gitea, /webhooks/gitlab). It knows
// nothing of HTTP servers. A server checks the headers first (CheckHeaders),
// so that a delivery that can be refused without its body is refused before
// a byte of the body is read; it then reads the body with Read, which
// computes the MAC as it reads and holds the body once. Parse does the same
// checks on a body already read. The server maps the errors to statuses:
// ErrBadSignature and ErrEmptySecret to 401, ErrNotPush to 202 or 204,
// ErrBadPayload to 400, ErrTooLarge to 413.
//
// What is verified, per forge:
//
//   - GitHub: X-Hub-Signature-256 is "sha256=" and the hex HMAC-SHA256 of
//     the raw body under the secret; X-GitHub-Event is "push" ("ping", sent
//     when a hook is made, is ErrPing).
//   - Gitea and Forgejo: X-Gitea-Signature (or, when absent,
//     X-Forgejo-Signature) is the hex HMAC-SHA256 of the raw body, with no
//     prefix; X-Gitea-Event (or X-Forgejo-Event) is "push".
//   - GitLab: X-Gitlab-Token equals the secret; X-Gitlab-Event is "Push Hook"
//     or "Tag Push Hook".
//
// MACs and tokens are compared in constant time. Parse and Read check the
// signature before anything else of the request is looked at: an unverified
// request learns nothing but "bad signature". Only the body is signed; the
// headers, the event name included, are not, which is why a payload that
// does not look like a push is rejected even when its event header says
// push. CheckHeaders looks at the event before the body is verified, so
// that the bodies of events Sortie ignores are never read: its ErrNotPush
// says only "ignore this", never that the delivery came from the forge.
//
// A verified payload can still be a replay of an old delivery: treat a Push
// as "this branch moved", resolve the branch's head from the repository and
// compute the changed files from git, rather than deploying Push.After or
// trusting the payload's file lists (which this package does not read).
// Push.Delivery names the delivery, to recognise one received before; it
// is not signed, so a replay can carry a new one.
package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// Forge names a kind of forge, as in the webhook's URL path.
type Forge string

// Forges.
const (
	// GitHub signs with X-Hub-Signature-256.
	GitHub Forge = "github"
	// Gitea signs with X-Gitea-Signature. Forgejo is served by it too: it
	// sends Gitea's headers, or its own X-Forgejo-* ones.
	Gitea Forge = "gitea"
	// GitLab sends the shared token in X-Gitlab-Token.
	GitLab Forge = "gitlab"
)

// ParseForge returns the Forge named name ("github", "gitea" or "gitlab";
// "forgejo" is Gitea), as in the path /webhooks/{name}.
func ParseForge(name string) (Forge, error) {
	switch f := Forge(name); f {
	case GitHub, Gitea, GitLab:
		return f, nil
	case "forgejo":
		return Gitea, nil
	}
	return "", fmt.Errorf("webhook: forge %q: %w", name, ErrUnknownForge)
}

// Errors returned (wrapped) by Parse and ReadBody. Branch on them with
// errors.Is.
var (
	// ErrEmptySecret: the forge is configured with an empty secret or token.
	// Nothing is accepted then, not even a delivery without a signature: an
	// unset environment variable must not open the door.
	ErrEmptySecret = errors.New("no secret configured")
	// ErrBadSignature: the signature or token is missing, malformed or
	// wrong, or the body was changed after signing.
	ErrBadSignature = errors.New("bad signature")
	// ErrNotPush: a verified delivery of another event (issues, pull
	// requests, a branch deletion event of its own...), to acknowledge and
	// ignore.
	ErrNotPush = errors.New("not a push event")
	// ErrPing: a verified ping, which GitHub sends when a hook is made.
	// errors.Is(ErrPing, ErrNotPush) holds.
	ErrPing error = pingError{}
	// ErrBadPayload: a verified delivery whose body is not a push payload
	// (not JSON, no ref, no commit hashes).
	ErrBadPayload = errors.New("bad payload")
	// ErrTooLarge: ReadBody's limit was exceeded.
	ErrTooLarge = errors.New("body too large")
	// ErrUnknownForge: not a forge this package knows.
	ErrUnknownForge = errors.New("unknown forge")
)

type pingError struct{}

func (pingError) Error() string        { return "ping event" }
func (pingError) Is(target error) bool { return target == ErrNotPush }

// Push is a verified push: a branch or a tag moved, was made or was deleted.
type Push struct {
	Forge Forge
	// Delivery is the forge's id of the delivery (X-GitHub-Delivery,
	// X-Gitea-Delivery, X-Forgejo-Delivery, or GitLab's Idempotency-Key,
	// else X-Gitlab-Event-UUID), "" when there is none. A forge sends the
	// same id when it delivers an event again, so a server can recognise a
	// delivery it has seen; it is not signed.
	Delivery string
	// Ref is the full ref that moved: "refs/heads/main", "refs/tags/v1".
	Ref string
	// Branch is the branch of a refs/heads/ ref, "" for a tag or any other
	// ref.
	Branch string
	// Before and After are the full commit hashes (40 hex digits, or 64
	// for a SHA-256 repository) of the ref before and after the push;
	// Before is all zeros when the push made the ref, After when it
	// deleted it.
	Before, After string
	// Deleted is set when the push deleted the ref.
	Deleted bool
	// Repository is the repository's full name, "owner/name" (GitLab's
	// path with namespace, "group/subgroup/name").
	Repository string
}

// MaxBodySize is the default limit of ReadBody: GitHub caps payloads at 25
// MiB, and drops larger ones instead of sending them.
const MaxBodySize = 25 << 20

// ReadBody reads all of r, up to limit bytes (MaxBodySize when limit <= 0).
// A longer body is an ErrTooLarge, after reading at most limit+1 bytes. It
// does not close r.
func ReadBody(r io.Reader, limit int64) ([]byte, error) {
	if limit <= 0 {
		limit = MaxBodySize
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("webhook: read body: %w", err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("webhook: read body: more than %d bytes: %w", limit, ErrTooLarge)
	}
	return b, nil
}

// Parse verifies a delivery from forge against secret (the HMAC key, or
// GitLab's token) and returns the push it carries. h are the request's
// headers and body its raw body, unchanged: the MAC is over those bytes.
//
// The checks run in this order, and the first that fails decides the
// error: a known forge, a non-empty secret (ErrEmptySecret), the signature
// or token (ErrBadSignature), the event (ErrPing, ErrNotPush), the payload
// (ErrBadPayload). A body sent as application/x-www-form-urlencoded (a
// GitHub or Gitea hook set to "form") carries its JSON in the payload field.
//
// Parse never panics, whatever h and body hold; it does not keep them.
func Parse(forge Forge, secret []byte, h http.Header, body []byte) (*Push, error) {
	if err := Verify(forge, secret, h, body); err != nil {
		return nil, err
	}
	return parseVerified(forge, h, body)
}

// parseVerified is Parse after the signature or token was verified.
func parseVerified(forge Forge, h http.Header, body []byte) (*Push, error) {
	op := "webhook: " + string(forge)
	if err := checkEvent(forge, h); err != nil {
		return nil, err
	}
	doc, err := jsonBody(h, body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %w", op, ErrBadPayload, err)
	}
	var p payload
	if err := json.Unmarshal(doc, &p); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", op, ErrBadPayload, err)
	}
	push := &Push{
		Forge:      forge,
		Delivery:   delivery(forge, h),
		Ref:        p.Ref,
		Before:     p.Before,
		After:      p.After,
		Repository: p.Repository.FullName,
	}
	if forge == GitLab {
		push.Repository = p.Project.PathWithNamespace
	}
	if !strings.HasPrefix(p.Ref, "refs/") {
		return nil, fmt.Errorf("%s: ref %.100q is not a full ref: %w", op, p.Ref, ErrBadPayload)
	}
	if !isHash(p.Before) || !isHash(p.After) {
		return nil, fmt.Errorf("%s: before %.80q, after %.80q: want commit hashes: %w", op, p.Before, p.After, ErrBadPayload)
	}
	push.Branch, _ = strings.CutPrefix(p.Ref, "refs/heads/")
	if push.Branch == p.Ref {
		push.Branch = ""
	}
	push.Deleted = p.Deleted || isZeroHash(p.After)
	return push, nil
}

// checkEvent returns nil for a push event, ErrPing or ErrNotPush for any
// other.
func checkEvent(forge Forge, h http.Header) error {
	op := "webhook: " + string(forge)
	event := Event(forge, h)
	switch forge {
	case GitHub:
		if event == "ping" {
			return fmt.Errorf("%s: %w", op, ErrPing)
		}
		if event != "push" {
			return fmt.Errorf("%s: event %.64q: %w", op, event, ErrNotPush)
		}
	case Gitea:
		if event != "push" {
			return fmt.Errorf("%s: event %.64q: %w", op, event, ErrNotPush)
		}
	case GitLab:
		if event != "Push Hook" && event != "Tag Push Hook" {
			return fmt.Errorf("%s: event %.64q: %w", op, event, ErrNotPush)
		}
	}
	return nil
}

// CheckHeaders runs the checks of a delivery that need no body, so that a
// server can refuse a delivery before it reads (and holds) its body. In
// this order, the first that fails deciding the error: a known forge
// (ErrUnknownForge), a non-empty secret (ErrEmptySecret), the signature
// header present and well formed (64 hex digits, after "sha256=" for
// GitHub) or, for GitLab, the token itself (ErrBadSignature), then the
// event. It returns nil for a push, and for GitHub's ping, whose body is
// worth verifying (it tells whoever made the hook whether the secret is
// right); ErrNotPush for any other event.
//
// ErrNotPush from CheckHeaders means "not a push: no need to read the
// body", not that the delivery is genuine: for GitHub and Gitea the MAC has
// not been checked yet. nil means only that the body is worth reading;
// Read or Parse still verifies it.
func CheckHeaders(forge Forge, secret []byte, h http.Header) error {
	op, sig, err := signatureOf(forge, secret, h)
	if err != nil {
		return err
	}
	switch forge {
	case GitHub, Gitea:
		if !isMAC(sig.mac) {
			return fmt.Errorf("%s: %s is not %s: %w", op, sig.header, sig.form, ErrBadSignature)
		}
	case GitLab:
		// The token is the whole proof, and it is in the headers.
		if err := Verify(forge, secret, h, nil); err != nil {
			return err
		}
	}
	if err := checkEvent(forge, h); err != nil && !errors.Is(err, ErrPing) {
		return err
	}
	return nil
}

// signature is the header of a delivery that signs its body.
type signature struct {
	header string // its name
	mac    string // the hex HMAC-SHA256 it carries ("" if not of its form)
	form   string // what its value must look like, for errors
}

// signatureOf checks the forge and the secret, and finds the signature
// header of a GitHub or Gitea delivery (none for GitLab, whose proof is a
// token): missing, it is an ErrBadSignature. op prefixes errors.
func signatureOf(forge Forge, secret []byte, h http.Header) (op string, sig signature, err error) {
	op = "webhook: " + string(forge)
	switch forge {
	case GitHub, Gitea, GitLab:
	default:
		return op, sig, fmt.Errorf("webhook: forge %.64q: %w", forge, ErrUnknownForge)
	}
	if len(secret) == 0 {
		return op, sig, fmt.Errorf("%s: %w", op, ErrEmptySecret)
	}
	switch forge {
	case GitHub:
		v := h.Get("X-Hub-Signature-256")
		if v == "" {
			return op, sig, fmt.Errorf("%s: no X-Hub-Signature-256 header: %w", op, ErrBadSignature)
		}
		mac, ok := strings.CutPrefix(v, "sha256=")
		if !ok {
			mac = ""
		}
		sig = signature{header: "X-Hub-Signature-256", mac: mac, form: "sha256= and 64 hex digits"}
	case Gitea:
		name, v := giteaSignature(h)
		if v == "" {
			return op, sig, fmt.Errorf("%s: no X-Gitea-Signature or X-Forgejo-Signature header: %w", op, ErrBadSignature)
		}
		sig = signature{header: name, mac: v, form: "64 hex digits"}
	}
	return op, sig, nil
}

// isMAC reports whether s has the form of a hex HMAC-SHA256.
func isMAC(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

// Read reads a delivery's body from r and returns the push it carries,
// with the checks and errors of Parse. size is the body's length when it is
// known (an HTTP request's ContentLength), else -1; limit bounds it
// (MaxBodySize when limit <= 0): a size over limit is an ErrTooLarge before
// anything is read, and an unknown size stops at limit+1 bytes.
//
// The body is held once: in one buffer of size bytes when size is known,
// else in chunks that grow as it arrives, the MAC computed over each as it
// is read. Only a verified body is then joined and decoded. A body shorter
// than size is an error (io.ErrUnexpectedEOF). Read does not close r.
func Read(forge Forge, secret []byte, h http.Header, r io.Reader, size, limit int64) (*Push, error) {
	if limit <= 0 {
		limit = MaxBodySize
	}
	op := "webhook: " + string(forge)
	if size > limit {
		return nil, fmt.Errorf("%s: read body: %d bytes, more than %d: %w", op, size, limit, ErrTooLarge)
	}
	// The headers are checked again, so that Read alone refuses what
	// CheckHeaders would, before it reads anything.
	if err := CheckHeaders(forge, secret, h); err != nil && !errors.Is(err, ErrNotPush) {
		return nil, err
	}
	var mac hash.Hash
	if forge != GitLab {
		mac = hmac.New(sha256.New, secret)
	}
	var body []byte
	if size >= 0 {
		body = make([]byte, size)
		if _, err := io.ReadFull(r, body); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("%s: read body: %w", op, err)
		}
		if mac != nil {
			mac.Write(body)
		}
		if err := verifyMAC(forge, h, mac); err != nil {
			return nil, err
		}
		return parseVerified(forge, h, body)
	}
	chunks, n, err := readChunks(r, limit, mac)
	if err != nil {
		return nil, fmt.Errorf("%s: read body: %w", op, err)
	}
	if n > limit {
		return nil, fmt.Errorf("%s: read body: more than %d bytes: %w", op, limit, ErrTooLarge)
	}
	if err := verifyMAC(forge, h, mac); err != nil {
		return nil, err
	}
	body = make([]byte, 0, n)
	for _, c := range chunks {
		body = append(body, c...)
	}
	return parseVerified(forge, h, body)
}

// readChunks reads r up to limit+1 bytes in chunks that double from 4 KiB
// to 1 MiB, so that a small body takes little and a large one is never
// copied to grow, writing each to mac when it is not nil.
func readChunks(r io.Reader, limit int64, mac hash.Hash) ([][]byte, int64, error) {
	var chunks [][]byte
	var n int64
	size := 4 << 10
	lr := io.LimitReader(r, limit+1)
	for {
		c := make([]byte, size)
		m, err := io.ReadFull(lr, c)
		if m > 0 {
			chunks = append(chunks, c[:m])
			n += int64(m)
			if mac != nil {
				mac.Write(c[:m])
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return chunks, n, nil
		}
		if err != nil {
			return nil, n, err
		}
		if size < 1<<20 {
			size *= 2
		}
	}
}

// verifyMAC compares the MAC computed over a body with the delivery's
// signature header (GitLab's token has no MAC: CheckHeaders verified it).
func verifyMAC(forge Forge, h http.Header, mac hash.Hash) error {
	op := "webhook: " + string(forge)
	switch forge {
	case GitHub:
		hexMAC, _ := strings.CutPrefix(h.Get("X-Hub-Signature-256"), "sha256=")
		if !sumEqual(mac.Sum(nil), hexMAC) {
			return fmt.Errorf("%s: X-Hub-Signature-256 does not match the body: %w", op, ErrBadSignature)
		}
	case Gitea:
		name, sig := giteaSignature(h)
		if !sumEqual(mac.Sum(nil), sig) {
			return fmt.Errorf("%s: %s does not match the body: %w", op, name, ErrBadSignature)
		}
	}
	return nil
}

// payload holds the fields of GitHub's, Gitea's and GitLab's push payloads
// that Parse reads; they agree on ref, before and after.
type payload struct {
	Ref     string `json:"ref"`
	Before  string `json:"before"`
	After   string `json:"after"`
	Deleted bool   `json:"deleted"` // GitHub only; the others send zeros in after
	// Repository is GitHub's and Gitea's.
	Repository struct {
		FullName string `json:"full_name"`
	} `json:"repository"`
	// Project is GitLab's.
	Project struct {
		PathWithNamespace string `json:"path_with_namespace"`
	} `json:"project"`
}

// Verify checks only the signature or token of a delivery, as Parse does
// first: it returns nil, or an error wrapping ErrUnknownForge,
// ErrEmptySecret or ErrBadSignature.
func Verify(forge Forge, secret []byte, h http.Header, body []byte) error {
	op, sig, err := signatureOf(forge, secret, h)
	if err != nil {
		return err
	}
	switch forge {
	case GitHub, Gitea:
		if !macEqual(secret, body, sig.mac) {
			return fmt.Errorf("%s: %s does not match the body: %w", op, sig.header, ErrBadSignature)
		}
	case GitLab:
		tok := h.Get("X-Gitlab-Token")
		if tok == "" {
			return fmt.Errorf("%s: no X-Gitlab-Token header: %w", op, ErrBadSignature)
		}
		// Comparing digests takes the same time whatever the lengths, so
		// that not even the token's length leaks.
		got, want := sha256.Sum256([]byte(tok)), sha256.Sum256(secret)
		if !hmac.Equal(got[:], want[:]) {
			return fmt.Errorf("%s: X-Gitlab-Token is wrong: %w", op, ErrBadSignature)
		}
	}
	return nil
}

// macEqual reports whether hexMAC is the hex HMAC-SHA256 of body under
// secret, comparing in constant time.
func macEqual(secret, body []byte, hexMAC string) bool {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return sumEqual(m.Sum(nil), hexMAC)
}

// sumEqual reports whether hexMAC is the hex of sum, in constant time.
func sumEqual(sum []byte, hexMAC string) bool {
	got, err := hex.DecodeString(hexMAC)
	if err != nil {
		return false
	}
	return hmac.Equal(got, sum)
}

// giteaSignature returns the signature header of a Gitea or Forgejo
// delivery and its name: X-Gitea-Signature, or X-Forgejo-Signature when
// that is absent.
func giteaSignature(h http.Header) (name, sig string) {
	if sig := h.Get("X-Gitea-Signature"); sig != "" {
		return "X-Gitea-Signature", sig
	}
	return "X-Forgejo-Signature", h.Get("X-Forgejo-Signature")
}

// Event returns the event name a delivery's headers give, "" if none. It is
// not signed: read it only after Verify.
func Event(forge Forge, h http.Header) string {
	switch forge {
	case GitHub:
		return h.Get("X-GitHub-Event")
	case Gitea:
		if e := h.Get("X-Gitea-Event"); e != "" {
			return e
		}
		return h.Get("X-Forgejo-Event")
	case GitLab:
		return h.Get("X-Gitlab-Event")
	}
	return ""
}

// delivery returns the forge's id of a delivery, the same when the forge
// sends the delivery again: X-GitHub-Delivery (GitHub keeps it on a
// redelivery), X-Gitea-Delivery or X-Forgejo-Delivery, and GitLab's
// Idempotency-Key (kept across retries, since GitLab 17.4), else its
// X-Gitlab-Event-UUID.
func delivery(forge Forge, h http.Header) string {
	switch forge {
	case GitHub:
		return h.Get("X-GitHub-Delivery")
	case Gitea:
		if d := h.Get("X-Gitea-Delivery"); d != "" {
			return d
		}
		return h.Get("X-Forgejo-Delivery")
	case GitLab:
		if d := h.Get("Idempotency-Key"); d != "" {
			return d
		}
		return h.Get("X-Gitlab-Event-UUID")
	}
	return ""
}

// jsonBody returns the JSON document of a body: the body itself, or its
// payload field when it was posted as a form.
func jsonBody(h http.Header, body []byte) ([]byte, error) {
	ct := h.Get("Content-Type")
	if ct == "" {
		return body, nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/x-www-form-urlencoded" {
		// Forges send JSON as application/json; anything else is tried as
		// JSON too, and fails as such if it is not.
		return body, nil
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, fmt.Errorf("form body: %w", err)
	}
	p := form.Get("payload")
	if p == "" {
		return nil, errors.New("form body without a payload field")
	}
	return []byte(p), nil
}

// isHash reports whether s is a full commit hash: 40 (SHA-1) or 64
// (SHA-256) lowercase hex digits.
func isHash(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func isZeroHash(s string) bool { return strings.Trim(s, "0") == "" }
