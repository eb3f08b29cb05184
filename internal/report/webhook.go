package report

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"

	"github.com/sortie-ci/sortie/internal/buildset"
)

// Headers of the webhook reporter's requests.
const (
	// HeaderEvent is the event: start, success, failure or cancel.
	HeaderEvent = "X-Sortie-Event"
	// HeaderDelivery is the delivery's id, the same on every try: a
	// receiver that has seen it may ignore it.
	HeaderDelivery = "X-Sortie-Delivery"
	// HeaderSignature is "sha256=" and the hex HMAC-SHA256 of the body
	// under the secret.
	HeaderSignature = "X-Sortie-Signature-256"
)

// WebhookBody is what the webhook reporter POSTs: the buildset report (as
// `sortie run --report` writes it, with the API's log URLs) plus the event
// and the buildset's page.
type WebhookBody struct {
	*buildset.Report
	Event string `json:"event"`
	// URL is the buildset's page; absent without server.public_url.
	URL string `json:"url,omitempty"`
}

// Sign is the value of HeaderSignature for body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// sendWebhook POSTs the signed report to the webhook's URL.
func sendWebhook(ctx context.Context, c *http.Client, d *Delivery, secret func(string) (string, error)) error {
	key, err := secret(d.Target.SecretEnv)
	if err != nil {
		return err
	}
	body, err := json.Marshal(WebhookBody{Report: d.Report, Event: string(d.Event), URL: d.Link})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.Target.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderEvent, string(d.Event))
	req.Header.Set(HeaderDelivery, d.ID)
	req.Header.Set(HeaderSignature, Sign([]byte(key), body))
	_, err = do(c, req)
	return err
}
