package server

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/trigger/webhook"
)

// allForges configures every forge; GITEA_SECRET is left unset.
const allForges = `
webhooks:
  github: {secret_env: GH_SECRET}
  gitea: {secret_env: GITEA_SECRET}
  gitlab: {token_env: GL_TOKEN}
jobs:
  boot: {bootstrap: true, run: "true"}
pipelines:
  deploy:
    trigger: {push: {branch: main}}
    jobs: [boot]
`

// TestWebhookRefusedBeforeBody: what the headers can refuse is refused
// without the body. Each delivery declares a 25 MiB body that never
// comes; the answer arrives all the same, so the server did not wait for
// the body (the old server read it first, and waited).
func TestWebhookRefusedBeforeBody(t *testing.T) {
	e := start(t, allForges, envOpt{env: map[string]string{"GH_SECRET": "s3cret", "GL_TOKEN": "gl-token"}})
	wellFormed := "sha256=" + strings.Repeat("ab", 32)
	tests := []struct {
		name    string
		forge   string
		headers []string
		size    int64
		want    int
	}{
		{"gitlab wrong token", "gitlab", []string{"X-Gitlab-Event", "Push Hook", "X-Gitlab-Token", "guess"}, webhook.MaxBodySize, 401},
		{"gitlab no token", "gitlab", []string{"X-Gitlab-Event", "Push Hook"}, webhook.MaxBodySize, 401},
		{"github no signature", "github", []string{"X-GitHub-Event", "push"}, webhook.MaxBodySize, 401},
		{"github sha1 signature", "github", []string{"X-GitHub-Event", "push", "X-Hub-Signature-256", "sha1=" + strings.Repeat("ab", 20)}, webhook.MaxBodySize, 401},
		{"github signature not hex", "github", []string{"X-GitHub-Event", "push", "X-Hub-Signature-256", "sha256=" + strings.Repeat("zz", 32)}, webhook.MaxBodySize, 401},
		{"gitea without a secret", "gitea", []string{"X-Gitea-Event", "push", "X-Gitea-Signature", strings.Repeat("ab", 32)}, webhook.MaxBodySize, 401},
		{"github event ignored", "github", []string{"X-GitHub-Event", "issues", "X-Hub-Signature-256", wellFormed}, webhook.MaxBodySize, 202},
		{"gitlab event ignored", "gitlab", []string{"X-Gitlab-Event", "Issue Hook", "X-Gitlab-Token", "gl-token"}, webhook.MaxBodySize, 202},
		{"github body too large", "github", []string{"X-GitHub-Event", "push", "X-Hub-Signature-256", wellFormed}, webhook.MaxBodySize + 1, 413},
	}
	client := &http.Client{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pr, pw := io.Pipe()
			defer pw.Close()
			body := &withheldBody{r: pr}
			// The failure: no answer. The transport waits for its write of
			// the body to end before it gives up, so end that too.
			stop := time.AfterFunc(15*time.Second, func() { pr.CloseWithError(errors.New("no answer within 15s while the body was withheld")) })
			defer stop.Stop()
			req, _ := http.NewRequest("POST", e.url+"/webhooks/"+tt.forge, body)
			req.ContentLength = tt.size
			req.Header.Set("Content-Type", "application/json")
			for i := 0; i < len(tt.headers); i += 2 {
				req.Header.Set(tt.headers[i], tt.headers[i+1])
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("no answer while the body is withheld (the server waits for it): %v", err)
			}
			out, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("%d %s, want %d", resp.StatusCode, out, tt.want)
			}
			if n := body.sent(); n != 0 {
				t.Errorf("%d bytes of the body were sent", n)
			}
		})
	}
	if n := e.count(); n != 0 {
		t.Errorf("refused deliveries made %d buildsets", n)
	}
}

// withheldBody is a request body that never yields a byte: its reader is
// a pipe nobody writes, until the client closes it. It counts what it
// gave.
type withheldBody struct {
	r  *io.PipeReader
	mu sync.Mutex
	n  int
}

func (b *withheldBody) Close() error { return b.r.Close() }

func (b *withheldBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.mu.Lock()
	b.n += n
	b.mu.Unlock()
	return n, err
}

func (b *withheldBody) sent() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// TestBodyBudget: a body waits for room, gets it when another releases
// its bytes, and gives up when its context ends.
func TestBodyBudget(t *testing.T) {
	b := newBodyBudget(100)
	if !b.acquire(context.Background(), 100) {
		t.Fatal("acquire of the whole budget failed")
	}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if b.acquire(done, 1) {
		t.Fatal("acquire beyond the budget succeeded")
	}
	got := make(chan bool, 1)
	go func() { got <- b.acquire(context.Background(), 60) }()
	b.release(100)
	if !<-got {
		t.Fatal("acquire after a release failed")
	}
	if b.acquire(done, 41) {
		t.Fatal("acquire of 41 with 60 of 100 reserved succeeded")
	}
	if !b.acquire(done, 40) {
		t.Fatal("acquire of 40 with 60 of 100 reserved failed")
	}
	if b.acquire(done, 101) {
		t.Fatal("acquire of more than the budget succeeded")
	}
}
