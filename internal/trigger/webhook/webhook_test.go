package webhook_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/sortie-ci/sortie/internal/trigger/webhook"
)

var secret = []byte("It's a Secret to Everybody")

// mac is the hex HMAC-SHA256 of body under key, as the forges compute it.
func mac(key, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// headers builds a header set from name/value pairs, with Set, as
// net/http's server does (canonical keys).
func headers(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// github returns the headers GitHub sends with a delivery of event whose
// body is body, signed with key.
func github(event string, key, body []byte) http.Header {
	return headers(
		"X-GitHub-Event", event,
		"X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		"X-GitHub-Hook-ID", "424242",
		"X-Hub-Signature", "sha1=0000000000000000000000000000000000000000", // legacy, ignored
		"X-Hub-Signature-256", "sha256="+mac(key, body),
		"User-Agent", "GitHub-Hookshot/044aadd",
		"Content-Type", "application/json",
	)
}

// gitea returns the headers Gitea sends; Forgejo sends the same with
// X-Forgejo-* names as well.
func gitea(event string, key, body []byte) http.Header {
	return headers(
		"X-Gitea-Event", event,
		"X-Gitea-Event-Type", event,
		"X-Gitea-Delivery", "f6266f16-1bf3-46a5-9ea4-602e06ead473",
		"X-Gitea-Signature", mac(key, body),
		"X-Gogs-Event", event,
		"X-Hub-Signature-256", "sha256="+mac(key, body),
		"Content-Type", "application/json",
	)
}

func forgejo(event string, key, body []byte) http.Header {
	return headers(
		"X-Forgejo-Event", event,
		"X-Forgejo-Event-Type", event,
		"X-Forgejo-Delivery", "0b8f4a3e-7a6c-4c43-9a53-0c8f5e0c1a2b",
		"X-Forgejo-Signature", mac(key, body),
		"Content-Type", "application/json",
	)
}

func gitlab(event, token string) http.Header {
	return headers(
		"X-Gitlab-Event", event,
		"X-Gitlab-Token", token,
		"X-Gitlab-Event-UUID", "13792a34-cac6-4fda-95a8-c58e00a3954e",
		"X-Gitlab-Instance", "https://gitlab.example.org",
		"Content-Type", "application/json",
	)
}

func TestParsePushes(t *testing.T) {
	t.Parallel()
	const zero = "0000000000000000000000000000000000000000"
	ghPush := fixture(t, "github-push.json")
	ghDeleted := fixture(t, "github-push-deleted.json")
	ghTag := fixture(t, "github-push-tag.json")
	giteaPush := fixture(t, "gitea-push.json")
	glPush := fixture(t, "gitlab-push.json")
	glDeleted := fixture(t, "gitlab-push-deleted.json")
	glTag := fixture(t, "gitlab-tag-push.json")
	ghForm := []byte("payload=" + url.QueryEscape(string(ghPush)))
	sha256Repo := bytes.ReplaceAll(ghPush, []byte("0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"),
		[]byte("0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c0d1a26e67d8f5eaf1f6ba5c5"))

	ghMain := &webhook.Push{
		Forge: webhook.GitHub, Delivery: "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		Ref: "refs/heads/main", Branch: "main",
		Before:     "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
		After:      "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
		Repository: "example-org/system-config",
	}
	tests := []struct {
		name  string
		forge webhook.Forge
		h     http.Header
		body  []byte
		want  *webhook.Push
	}{
		{"github push", webhook.GitHub, github("push", secret, ghPush), ghPush, ghMain},
		{"github form body", webhook.GitHub, func() http.Header {
			h := github("push", secret, ghForm)
			h.Set("Content-Type", "application/x-www-form-urlencoded")
			return h
		}(), ghForm, ghMain},
		{"github uppercase hex", webhook.GitHub, func() http.Header {
			h := github("push", secret, ghPush)
			h.Set("X-Hub-Signature-256", "sha256="+strings.ToUpper(mac(secret, ghPush)))
			return h
		}(), ghPush, ghMain},
		{"github sha-256 repository", webhook.GitHub, github("push", secret, sha256Repo), sha256Repo, &webhook.Push{
			Forge: webhook.GitHub, Delivery: ghMain.Delivery, Ref: "refs/heads/main", Branch: "main",
			Before: ghMain.Before, After: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c0d1a26e67d8f5eaf1f6ba5c5",
			Repository: "example-org/system-config",
		}},
		{"github deleted branch", webhook.GitHub, github("push", secret, ghDeleted), ghDeleted, &webhook.Push{
			Forge: webhook.GitHub, Delivery: ghMain.Delivery, Ref: "refs/heads/feature", Branch: "feature",
			Before: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c", After: zero, Deleted: true,
			Repository: "example-org/system-config",
		}},
		{"github tag", webhook.GitHub, github("push", secret, ghTag), ghTag, &webhook.Push{
			Forge: webhook.GitHub, Delivery: ghMain.Delivery, Ref: "refs/tags/v1.2.0", Branch: "",
			Before: zero, After: "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c",
			Repository: "example-org/system-config",
		}},
		{"gitea push", webhook.Gitea, gitea("push", secret, giteaPush), giteaPush, &webhook.Push{
			Forge: webhook.Gitea, Delivery: "f6266f16-1bf3-46a5-9ea4-602e06ead473",
			Ref: "refs/heads/main", Branch: "main",
			Before:     "28e1879d029cb852e4844d9c718537df08844e03",
			After:      "bffeb74224043ba2feb48d137756c8a9331c449a",
			Repository: "infra/system-config",
		}},
		{"forgejo push", webhook.Gitea, forgejo("push", secret, giteaPush), giteaPush, &webhook.Push{
			Forge: webhook.Gitea, Delivery: "0b8f4a3e-7a6c-4c43-9a53-0c8f5e0c1a2b",
			Ref: "refs/heads/main", Branch: "main",
			Before:     "28e1879d029cb852e4844d9c718537df08844e03",
			After:      "bffeb74224043ba2feb48d137756c8a9331c449a",
			Repository: "infra/system-config",
		}},
		{"gitlab push", webhook.GitLab, gitlab("Push Hook", string(secret)), glPush, &webhook.Push{
			Forge: webhook.GitLab, Delivery: "13792a34-cac6-4fda-95a8-c58e00a3954e",
			Ref: "refs/heads/main", Branch: "main",
			Before:     "95790bf891e76fee5e1747ab589903a6a1f80f22",
			After:      "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
			Repository: "ops/infra/system-config",
		}},
		{"gitlab deleted branch", webhook.GitLab, gitlab("Push Hook", string(secret)), glDeleted, &webhook.Push{
			Forge: webhook.GitLab, Delivery: "13792a34-cac6-4fda-95a8-c58e00a3954e",
			Ref: "refs/heads/old-feature", Branch: "old-feature",
			Before: "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", After: zero, Deleted: true,
			Repository: "ops/infra/system-config",
		}},
		{"gitlab tag", webhook.GitLab, gitlab("Tag Push Hook", string(secret)), glTag, &webhook.Push{
			Forge: webhook.GitLab, Delivery: "13792a34-cac6-4fda-95a8-c58e00a3954e",
			Ref: "refs/tags/v1.0.0", Branch: "",
			Before: zero, After: "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
			Repository: "ops/infra/system-config",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := webhook.Parse(tt.forge, secret, tt.h, tt.body)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	ghPush := fixture(t, "github-push.json")
	ghPing := fixture(t, "github-ping.json")
	giteaPush := fixture(t, "gitea-push.json")
	glPush := fixture(t, "gitlab-push.json")
	altered := bytes.Replace(ghPush, []byte(`"refs/heads/main"`), []byte(`"refs/heads/prod"`), 1)
	trailing := append(append([]byte{}, ghPush...), '\n')
	signed := func(body string) (http.Header, []byte) { return github("push", secret, []byte(body)), []byte(body) }
	with := func(h http.Header, kv ...string) http.Header {
		h = h.Clone()
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				h.Del(kv[i])
			} else {
				h.Set(kv[i], kv[i+1])
			}
		}
		return h
	}

	tests := []struct {
		name   string
		forge  webhook.Forge
		secret []byte
		h      http.Header
		body   []byte
		want   error
	}{
		// Signatures.
		{"github no signature", webhook.GitHub, secret, with(github("push", secret, ghPush), "X-Hub-Signature-256", ""), ghPush, webhook.ErrBadSignature},
		{"github only the sha1 signature", webhook.GitHub, secret, with(github("push", secret, ghPush), "X-Hub-Signature-256", "", "X-Hub-Signature", "sha1="+mac(secret, ghPush)[:40]), ghPush, webhook.ErrBadSignature},
		{"github wrong secret", webhook.GitHub, secret, github("push", []byte("guess"), ghPush), ghPush, webhook.ErrBadSignature},
		{"github body altered after signing", webhook.GitHub, secret, github("push", secret, ghPush), altered, webhook.ErrBadSignature},
		{"github newline appended after signing", webhook.GitHub, secret, github("push", secret, ghPush), trailing, webhook.ErrBadSignature},
		{"github no sha256= prefix", webhook.GitHub, secret, with(github("push", secret, ghPush), "X-Hub-Signature-256", mac(secret, ghPush)), ghPush, webhook.ErrBadSignature},
		{"github sha1= prefix", webhook.GitHub, secret, with(github("push", secret, ghPush), "X-Hub-Signature-256", "sha1="+mac(secret, ghPush)), ghPush, webhook.ErrBadSignature},
		{"github truncated mac", webhook.GitHub, secret, with(github("push", secret, ghPush), "X-Hub-Signature-256", "sha256="+mac(secret, ghPush)[:62]), ghPush, webhook.ErrBadSignature},
		{"github not hex", webhook.GitHub, secret, with(github("push", secret, ghPush), "X-Hub-Signature-256", "sha256="+strings.Repeat("zz", 32)), ghPush, webhook.ErrBadSignature},
		{"github unsigned ping", webhook.GitHub, secret, with(github("ping", secret, ghPing), "X-Hub-Signature-256", ""), ghPing, webhook.ErrBadSignature},
		{"github signed for gitea", webhook.Gitea, secret, github("push", secret, ghPush), ghPush, webhook.ErrBadSignature},
		{"gitea no signature", webhook.Gitea, secret, with(gitea("push", secret, giteaPush), "X-Gitea-Signature", ""), giteaPush, webhook.ErrBadSignature},
		{"gitea wrong secret", webhook.Gitea, secret, gitea("push", []byte("guess"), giteaPush), giteaPush, webhook.ErrBadSignature},
		{"gitea sha256= prefix", webhook.Gitea, secret, with(gitea("push", secret, giteaPush), "X-Gitea-Signature", "sha256="+mac(secret, giteaPush)), giteaPush, webhook.ErrBadSignature},
		{"gitea body altered", webhook.Gitea, secret, gitea("push", secret, giteaPush), append(append([]byte{}, giteaPush...), ' '), webhook.ErrBadSignature},
		{"forgejo wrong secret", webhook.Gitea, secret, forgejo("push", []byte("guess"), giteaPush), giteaPush, webhook.ErrBadSignature},
		{"gitlab no token", webhook.GitLab, secret, with(gitlab("Push Hook", string(secret)), "X-Gitlab-Token", ""), glPush, webhook.ErrBadSignature},
		{"gitlab wrong token", webhook.GitLab, secret, gitlab("Push Hook", "guess"), glPush, webhook.ErrBadSignature},
		{"gitlab token prefix", webhook.GitLab, secret, gitlab("Push Hook", string(secret[:len(secret)-1])), glPush, webhook.ErrBadSignature},
		{"gitlab token longer", webhook.GitLab, secret, gitlab("Push Hook", string(secret)+"x"), glPush, webhook.ErrBadSignature},
		{"gitlab with a github signature", webhook.GitLab, secret, github("push", secret, glPush), glPush, webhook.ErrBadSignature},

		// An empty secret refuses everything, even what it would verify.
		{"github empty secret", webhook.GitHub, []byte{}, github("push", []byte{}, ghPush), ghPush, webhook.ErrEmptySecret},
		{"github nil secret unsigned", webhook.GitHub, nil, with(github("push", nil, ghPush), "X-Hub-Signature-256", ""), ghPush, webhook.ErrEmptySecret},
		{"gitea empty secret", webhook.Gitea, nil, gitea("push", nil, giteaPush), giteaPush, webhook.ErrEmptySecret},
		{"gitlab empty token", webhook.GitLab, nil, gitlab("Push Hook", ""), glPush, webhook.ErrEmptySecret},

		// Verified, but not a push.
		{"github ping", webhook.GitHub, secret, github("ping", secret, ghPing), ghPing, webhook.ErrPing},
		{"github issues", webhook.GitHub, secret, github("issues", secret, ghPush), ghPush, webhook.ErrNotPush},
		{"github no event", webhook.GitHub, secret, with(github("push", secret, ghPush), "X-GitHub-Event", ""), ghPush, webhook.ErrNotPush},
		{"gitea delete", webhook.Gitea, secret, gitea("delete", secret, giteaPush), giteaPush, webhook.ErrNotPush},
		{"gitlab merge request", webhook.GitLab, secret, gitlab("Merge Request Hook", string(secret)), glPush, webhook.ErrNotPush},
		{"gitlab system hook", webhook.GitLab, secret, gitlab("System Hook", string(secret)), glPush, webhook.ErrNotPush},

		// Verified, claims to be a push, is not one.
		{"github ping body as push", webhook.GitHub, secret, github("push", secret, ghPing), ghPing, webhook.ErrBadPayload},
		{"not json", webhook.GitHub, secret, github("push", secret, []byte("ref=main")), []byte("ref=main"), webhook.ErrBadPayload},
		{"short ref", webhook.GitHub, secret, nil, nil, webhook.ErrBadPayload},
		{"short hash", webhook.GitHub, secret, nil, nil, webhook.ErrBadPayload},
		{"uppercase hash", webhook.GitHub, secret, nil, nil, webhook.ErrBadPayload},
		{"form without payload", webhook.GitHub, secret, with(github("push", secret, []byte("x=1")), "Content-Type", "application/x-www-form-urlencoded"), []byte("x=1"), webhook.ErrBadPayload},

		{"unknown forge", webhook.Forge("bitbucket"), secret, github("push", secret, ghPush), ghPush, webhook.ErrUnknownForge},
	}
	for i, tt := range tests {
		switch tt.name {
		case "short ref":
			tests[i].h, tests[i].body = signed(`{"ref":"main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}`)
		case "short hash":
			tests[i].h, tests[i].body = signed(`{"ref":"refs/heads/main","before":"6113728","after":"0d1a26e"}`)
		case "uppercase hash":
			tests[i].h, tests[i].body = signed(`{"ref":"refs/heads/main","before":"6113728F27AE82C7B1A177C8D03F9E96E0ADF246","after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c"}`)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := webhook.Parse(tt.forge, tt.secret, tt.h, tt.body)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse = %+v, %v; want %v", got, err, tt.want)
			}
			if got != nil {
				t.Errorf("Parse returned a push with error %v", err)
			}
			if !strings.HasPrefix(err.Error(), "webhook: ") {
				t.Errorf("error %q does not start with the package's name", err)
			}
		})
	}
}

func TestErrorKinds(t *testing.T) {
	t.Parallel()
	if !errors.Is(webhook.ErrPing, webhook.ErrNotPush) {
		t.Error("ErrPing is not an ErrNotPush")
	}
	if errors.Is(webhook.ErrNotPush, webhook.ErrPing) {
		t.Error("ErrNotPush is an ErrPing")
	}
	// A bad signature must never look like something to acknowledge.
	body := fixture(t, "github-ping.json")
	_, err := webhook.Parse(webhook.GitHub, secret, github("ping", []byte("guess"), body), body)
	if errors.Is(err, webhook.ErrNotPush) || errors.Is(err, webhook.ErrPing) {
		t.Errorf("unsigned ping: %v is an ErrNotPush", err)
	}
}

func TestVerifyDoesNotLookAtTheEvent(t *testing.T) {
	t.Parallel()
	body := []byte("anything at all")
	if err := webhook.Verify(webhook.GitHub, secret, github("issues", secret, body), body); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if err := webhook.Verify(webhook.GitHub, secret, github("push", []byte("guess"), body), body); !errors.Is(err, webhook.ErrBadSignature) {
		t.Errorf("Verify with the wrong key = %v, want ErrBadSignature", err)
	}
}

func TestEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		forge webhook.Forge
		h     http.Header
		want  string
	}{
		{webhook.GitHub, headers("X-GitHub-Event", "push"), "push"},
		{webhook.Gitea, headers("X-Gitea-Event", "push", "X-Forgejo-Event", "issues"), "push"},
		{webhook.Gitea, headers("X-Forgejo-Event", "push"), "push"},
		{webhook.GitLab, headers("X-Gitlab-Event", "Push Hook"), "Push Hook"},
		{webhook.GitLab, headers("X-GitHub-Event", "push"), ""},
		{webhook.Forge("svn"), headers("X-GitHub-Event", "push"), ""},
	}
	for _, tt := range tests {
		if got := webhook.Event(tt.forge, tt.h); got != tt.want {
			t.Errorf("Event(%s, %v) = %q, want %q", tt.forge, tt.h, got, tt.want)
		}
	}
}

func TestParseForge(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]webhook.Forge{"github": webhook.GitHub, "gitea": webhook.Gitea, "forgejo": webhook.Gitea, "gitlab": webhook.GitLab} {
		got, err := webhook.ParseForge(name)
		if err != nil || got != want {
			t.Errorf("ParseForge(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	for _, name := range []string{"", "GitHub", "bitbucket", "github/"} {
		if _, err := webhook.ParseForge(name); !errors.Is(err, webhook.ErrUnknownForge) {
			t.Errorf("ParseForge(%q) = %v, want ErrUnknownForge", name, err)
		}
	}
}

func TestReadBody(t *testing.T) {
	t.Parallel()
	got, err := webhook.ReadBody(strings.NewReader("12345"), 5)
	if err != nil || string(got) != "12345" {
		t.Errorf("ReadBody at the limit = %q, %v", got, err)
	}
	if _, err := webhook.ReadBody(strings.NewReader("123456"), 5); !errors.Is(err, webhook.ErrTooLarge) {
		t.Errorf("ReadBody over the limit = %v, want ErrTooLarge", err)
	}
	// The limit stops reading: an endless body is refused, not read.
	r := &countingReader{r: neverEnding('x')}
	if _, err := webhook.ReadBody(r, 1<<10); !errors.Is(err, webhook.ErrTooLarge) {
		t.Errorf("ReadBody of an endless body = %v, want ErrTooLarge", err)
	}
	if r.n > 1<<10+1 {
		t.Errorf("ReadBody read %d bytes with a limit of %d", r.n, 1<<10)
	}
	// limit <= 0 is MaxBodySize.
	big := bytes.Repeat([]byte{'x'}, webhook.MaxBodySize)
	if got, err := webhook.ReadBody(bytes.NewReader(big), 0); err != nil || len(got) != webhook.MaxBodySize {
		t.Errorf("ReadBody of MaxBodySize bytes = %d bytes, %v", len(got), err)
	}
	if _, err := webhook.ReadBody(io.MultiReader(bytes.NewReader(big), strings.NewReader("x")), -1); !errors.Is(err, webhook.ErrTooLarge) {
		t.Errorf("ReadBody of MaxBodySize+1 bytes = %v, want ErrTooLarge", err)
	}
	boom := errors.New("connection reset")
	if _, err := webhook.ReadBody(iotest.ErrReader(boom), 5); !errors.Is(err, boom) {
		t.Errorf("ReadBody of a failing reader = %v, want %v", err, boom)
	}
}

type neverEnding byte

func (b neverEnding) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}
