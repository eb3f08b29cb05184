package webhook_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/sortie-ci/sortie/internal/trigger/webhook"
)

// A server's handler for POST /webhooks/github reads the body with a limit,
// hands it to Parse with the headers, and maps the errors to statuses.
func ExampleParse() {
	secret := []byte("It's a Secret to Everybody") // from the secret_env variable
	body := `{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246",` +
		`"after":"0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c","repository":{"full_name":"example-org/system-config"}}`
	h := http.Header{}
	h.Set("X-GitHub-Event", "push")
	h.Set("X-Hub-Signature-256", "sha256="+mac(secret, []byte(body)))

	status := func(err error) int {
		switch {
		case err == nil:
			return http.StatusAccepted
		case errors.Is(err, webhook.ErrBadSignature), errors.Is(err, webhook.ErrEmptySecret):
			return http.StatusUnauthorized
		case errors.Is(err, webhook.ErrNotPush):
			return http.StatusNoContent
		case errors.Is(err, webhook.ErrTooLarge):
			return http.StatusRequestEntityTooLarge
		default:
			return http.StatusBadRequest
		}
	}

	raw, err := webhook.ReadBody(strings.NewReader(body), webhook.MaxBodySize)
	if err != nil {
		fmt.Println(status(err), err)
		return
	}
	push, err := webhook.Parse(webhook.GitHub, secret, h, raw)
	fmt.Println(status(err), push.Repository, push.Branch, push.After)

	_, err = webhook.Parse(webhook.GitHub, secret, h, append(raw, ' '))
	fmt.Println(status(err), err)

	h.Set("X-GitHub-Event", "ping")
	_, err = webhook.Parse(webhook.GitHub, secret, h, raw)
	fmt.Println(status(err), err)

	_, err = webhook.Parse(webhook.GitHub, nil, h, raw)
	fmt.Println(status(err), err)
	// Output:
	// 202 example-org/system-config main 0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c
	// 401 webhook: github: X-Hub-Signature-256 does not match the body: bad signature
	// 204 webhook: github: ping event
	// 401 webhook: github: no secret configured
}
