package webhook_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/sortie-ci/sortie/internal/trigger/webhook"
)

// TestCheckHeaders: what can be refused without the body is refused from
// the headers alone, in Parse's order; a push (and a ping) is left for the
// body to verify.
func TestCheckHeaders(t *testing.T) {
	t.Parallel()
	body := []byte("{}")
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
	wrongMAC := mac([]byte("guess"), body)
	tests := []struct {
		name   string
		forge  webhook.Forge
		secret []byte
		h      http.Header
		want   error
	}{
		{"github push", webhook.GitHub, secret, github("push", secret, body), nil},
		// The MAC is not checked: that needs the body.
		{"github push wrong mac", webhook.GitHub, secret, github("push", []byte("guess"), body), nil},
		{"github ping", webhook.GitHub, secret, github("ping", secret, body), nil},
		{"github issues", webhook.GitHub, secret, github("issues", secret, body), webhook.ErrNotPush},
		{"github no event", webhook.GitHub, secret, with(github("push", secret, body), "X-GitHub-Event", ""), webhook.ErrNotPush},
		{"github no signature", webhook.GitHub, secret, with(github("push", secret, body), "X-Hub-Signature-256", ""), webhook.ErrBadSignature},
		// The signature is checked before the event: an unsigned delivery
		// of an ignored event is still refused.
		{"github unsigned issues", webhook.GitHub, secret, with(github("issues", secret, body), "X-Hub-Signature-256", ""), webhook.ErrBadSignature},
		{"github sha1 signature", webhook.GitHub, secret, with(github("push", secret, body), "X-Hub-Signature-256", "sha1="+wrongMAC[:40]), webhook.ErrBadSignature},
		{"github no prefix", webhook.GitHub, secret, with(github("push", secret, body), "X-Hub-Signature-256", wrongMAC), webhook.ErrBadSignature},
		{"github short", webhook.GitHub, secret, with(github("push", secret, body), "X-Hub-Signature-256", "sha256="+wrongMAC[:62]), webhook.ErrBadSignature},
		{"github not hex", webhook.GitHub, secret, with(github("push", secret, body), "X-Hub-Signature-256", "sha256="+strings.Repeat("zz", 32)), webhook.ErrBadSignature},
		{"github empty secret", webhook.GitHub, nil, github("push", nil, body), webhook.ErrEmptySecret},
		{"gitea push", webhook.Gitea, secret, gitea("push", []byte("guess"), body), nil},
		{"forgejo push", webhook.Gitea, secret, forgejo("push", secret, body), nil},
		{"gitea delete", webhook.Gitea, secret, gitea("delete", secret, body), webhook.ErrNotPush},
		{"gitea no signature", webhook.Gitea, secret, with(gitea("push", secret, body), "X-Gitea-Signature", ""), webhook.ErrBadSignature},
		{"gitea prefixed", webhook.Gitea, secret, with(gitea("push", secret, body), "X-Gitea-Signature", "sha256="+wrongMAC), webhook.ErrBadSignature},
		{"gitlab push", webhook.GitLab, secret, gitlab("Push Hook", string(secret)), nil},
		{"gitlab tag push", webhook.GitLab, secret, gitlab("Tag Push Hook", string(secret)), nil},
		{"gitlab wrong token", webhook.GitLab, secret, gitlab("Push Hook", "guess"), webhook.ErrBadSignature},
		{"gitlab no token", webhook.GitLab, secret, with(gitlab("Push Hook", "x"), "X-Gitlab-Token", ""), webhook.ErrBadSignature},
		{"gitlab wrong token, other event", webhook.GitLab, secret, gitlab("Issue Hook", "guess"), webhook.ErrBadSignature},
		{"gitlab issue", webhook.GitLab, secret, gitlab("Issue Hook", string(secret)), webhook.ErrNotPush},
		{"gitlab empty token", webhook.GitLab, nil, gitlab("Push Hook", ""), webhook.ErrEmptySecret},
		{"unknown forge", webhook.Forge("svn"), secret, github("push", secret, body), webhook.ErrUnknownForge},
	}
	for _, tt := range tests {
		err := webhook.CheckHeaders(tt.forge, tt.secret, tt.h)
		if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: CheckHeaders = %v, want %v", tt.name, err, tt.want)
		}
		if tt.want != nil && errors.Is(err, webhook.ErrPing) {
			t.Errorf("%s: CheckHeaders = %v: a ping is for the body to verify", tt.name, err)
		}
	}
}

// TestRead: Read returns what Parse returns for every fixture, whether the
// length is known or not, and refuses a declared length over the limit
// without reading a byte.
func TestRead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file  string
		forge webhook.Forge
		h     func(body []byte) http.Header
	}{
		{"github-push.json", webhook.GitHub, func(b []byte) http.Header { return github("push", secret, b) }},
		{"github-push-tag.json", webhook.GitHub, func(b []byte) http.Header { return github("push", secret, b) }},
		{"github-ping.json", webhook.GitHub, func(b []byte) http.Header { return github("ping", secret, b) }},
		{"gitea-push.json", webhook.Gitea, func(b []byte) http.Header { return gitea("push", secret, b) }},
		{"gitea-push.json", webhook.Gitea, func(b []byte) http.Header { return forgejo("push", secret, b) }},
		{"gitlab-push.json", webhook.GitLab, func([]byte) http.Header { return gitlab("Push Hook", string(secret)) }},
		{"github-push.json", webhook.GitHub, func(b []byte) http.Header { return github("push", []byte("guess"), b) }},
	} {
		body := fixture(t, tc.file)
		h := tc.h(body)
		want, wantErr := webhook.Parse(tc.forge, secret, h, body)
		for _, size := range []int64{int64(len(body)), -1} {
			got, err := webhook.Read(tc.forge, secret, h, iotest.OneByteReader(bytes.NewReader(body)), size, 0)
			if kind(err) != kind(wantErr) {
				t.Errorf("%s (size %d): Read error %v, Parse error %v", tc.file, size, err, wantErr)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s (size %d): Read and Parse differ (-Parse +Read):\n%s", tc.file, size, diff)
			}
		}
	}

	body := fixture(t, "github-push.json")
	h := github("push", secret, body)
	r := &countingReader{r: bytes.NewReader(body)}
	if _, err := webhook.Read(webhook.GitHub, secret, h, r, 1<<30, 0); !errors.Is(err, webhook.ErrTooLarge) || r.n != 0 {
		t.Errorf("declared 1 GiB: Read = %v after %d bytes; want ErrTooLarge before reading", err, r.n)
	}
	r = &countingReader{r: neverEnding('x')}
	if _, err := webhook.Read(webhook.GitHub, secret, h, r, -1, 1<<20); !errors.Is(err, webhook.ErrTooLarge) || r.n > 1<<20+1 {
		t.Errorf("endless body: Read = %v after %d bytes; want ErrTooLarge after at most %d", err, r.n, 1<<20+1)
	}
	r = &countingReader{r: bytes.NewReader(body)}
	if _, err := webhook.Read(webhook.GitHub, secret, with1(h, "X-Hub-Signature-256", ""), r, int64(len(body)), 0); !errors.Is(err, webhook.ErrBadSignature) || r.n != 0 {
		t.Errorf("unsigned: Read = %v after %d bytes; want ErrBadSignature before reading", err, r.n)
	}
	if _, err := webhook.Read(webhook.GitHub, secret, h, bytes.NewReader(body[:10]), int64(len(body)), 0); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("short body: Read = %v, want io.ErrUnexpectedEOF", err)
	}
}

func with1(h http.Header, k, v string) http.Header {
	h = h.Clone()
	if v == "" {
		h.Del(k)
	} else {
		h.Set(k, v)
	}
	return h
}

// TestDeliveryID: the id is the one a forge keeps when it sends an event
// again: GitLab's Idempotency-Key before its X-Gitlab-Event-UUID.
func TestDeliveryID(t *testing.T) {
	t.Parallel()
	body := fixture(t, "gitlab-push.json")
	h := gitlab("Push Hook", string(secret))
	push, err := webhook.Parse(webhook.GitLab, secret, h, body)
	if err != nil || push.Delivery != "13792a34-cac6-4fda-95a8-c58e00a3954e" {
		t.Fatalf("without Idempotency-Key: %+v, %v", push, err)
	}
	h.Set("Idempotency-Key", "f5e5f430-f57b-4e6e-9fac-d9128cd7232f")
	push, err = webhook.Parse(webhook.GitLab, secret, h, body)
	if err != nil || push.Delivery != "f5e5f430-f57b-4e6e-9fac-d9128cd7232f" {
		t.Fatalf("with Idempotency-Key: %+v, %v", push, err)
	}
}
