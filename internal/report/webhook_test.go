package report_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/report"
	"github.com/sortie-ci/sortie/internal/store"
)

// verify is docs/api.md's snippet, word for word (TestSnippetIsDocumented
// checks): what a receiver runs to check a delivery's signature.
func verify(secret, body []byte, header string) bool {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(header), []byte(want))
}

// TestSnippetIsDocumented: the verification snippet of docs/api.md is
// verify, so the test below checks what the docs tell receivers to run.
func TestSnippetIsDocumented(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("webhook_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fn := regexp.MustCompile(`(?s)\nfunc verify\(.*?\n}\n`)
	inDoc, inTest := fn.Find(doc), fn.Find(src)
	if inDoc == nil || inTest == nil {
		t.Fatalf("func verify: in docs/api.md %v, in this file %v", inDoc != nil, inTest != nil)
	}
	if diff := cmp.Diff(string(inTest), string(inDoc)); diff != "" {
		t.Errorf("docs/api.md's snippet differs from verify (-test +doc):\n%s", diff)
	}
}

// newHook fakes a webhook receiver that checks each delivery as the docs
// say: the signature with verify, the headers, the body's event.
func newHook(t *testing.T, secret string) *receiver {
	return newReceiver(t, func(r *http.Request, body []byte) (int, string) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			return http.StatusBadRequest, "not a JSON POST"
		}
		if !verify([]byte(secret), body, r.Header.Get(report.HeaderSignature)) {
			return http.StatusUnauthorized, "bad signature"
		}
		var b struct {
			Event string `json:"event"`
			ID    string `json:"id"`
		}
		if err := json.Unmarshal(body, &b); err != nil || b.Event != r.Header.Get(report.HeaderEvent) || b.ID == "" ||
			r.Header.Get(report.HeaderDelivery) == "" {
			return http.StatusBadRequest, "bad body or headers"
		}
		return http.StatusNoContent, ""
	})
}

func hookTarget(url string) buildset.ReporterSpec {
	return buildset.ReporterSpec{Name: "hook", Type: "webhook", URL: url, SecretEnv: "HOOK_SECRET"}
}

// TestWebhookDelivery: the body is the buildset report plus the event and
// the page, signed; the signature verifies with the documented snippet.
func TestWebhookDelivery(t *testing.T) {
	t.Parallel()
	hook := newHook(t, "s3cret")
	h := newHarness(t, map[string]string{"HOOK_SECRET": "s3cret"})
	spec := h.buildset("bs", commitA, all(hookTarget(hook.URL())))
	h.start("bs", spec)
	if tr := h.next(); tr.Outcome != report.Delivered {
		t.Fatalf("start: %+v", tr)
	}
	h.finish("bs", store.Failure, map[string]store.Result{"boot": store.Success, "base": store.Failure})
	if tr := h.next(); tr.Outcome != report.Delivered {
		t.Fatalf("end: %+v", tr)
	}
	got := hook.got()
	if len(got) != 2 {
		t.Fatalf("%d requests, want 2", len(got))
	}
	var start, end report.WebhookBody
	if err := json.Unmarshal(got[0].body, &start); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(got[1].body, &end); err != nil {
		t.Fatal(err)
	}
	// The start as it started, whenever it is sent.
	if start.Event != "start" || start.Result != "RUNNING" || start.FinishedAt.Get() != nil || start.Builds[1].Result != "" ||
		start.URL != publicURL+"/buildsets/bs" || got[0].header.Get(report.HeaderEvent) != "start" {
		t.Errorf("start's body: %s", got[0].body)
	}
	if end.Event != "failure" || end.Result != "FAILURE" || end.Commit != commitA || end.Pipeline != "deploy" ||
		end.Builds[1].Job != "base" || end.Builds[1].Result != "FAILURE" ||
		end.Builds[1].Log != publicURL+"/api/v1/buildsets/bs/builds/base/log?attempt=1" {
		t.Errorf("end's body: %s", got[1].body)
	}
	if got[0].header.Get(report.HeaderDelivery) == got[1].header.Get(report.HeaderDelivery) {
		t.Error("two deliveries share an id")
	}
	if !verify([]byte("s3cret"), got[1].body, got[1].header.Get(report.HeaderSignature)) || verify([]byte("other"), got[1].body, got[1].header.Get(report.HeaderSignature)) {
		t.Error("the signature does not verify under the secret, or verifies under another")
	}
}

// TestReceiverDown: while the receiver fails, a buildset's deliveries stay
// pending (the later waiting behind the earlier), each try recorded with
// its error; once it is back they are delivered in order, each try with
// the same X-Sortie-Delivery.
func TestReceiverDown(t *testing.T) {
	t.Parallel()
	hook := newHook(t, "s3cret")
	h := newHarness(t, map[string]string{"HOOK_SECRET": "s3cret"})
	spec := h.buildset("bs", commitA, all(hookTarget(hook.URL())))
	hook.failNext(
		failure{status: 500, body: "down for maintenance"},
		failure{status: 503, body: "still down"},
		failure{status: 502, body: "almost"},
	)
	h.start("bs", spec)
	tr := h.next()
	if tr.Outcome != report.Retry || tr.Next != t0.Add(10*time.Second) || tr.Error != "500 Internal Server Error: down for maintenance" {
		t.Fatalf("first try: %+v", tr)
	}
	h.finish("bs", store.Success, map[string]store.Result{"boot": store.Success, "base": store.Success})
	// The clock is at 1m, past the start's retry at 10s: the start is
	// tried again (the worker may have found it due before this wake).
	h.advance(0)
	if tr := h.next(); tr.Delivery.Event != "start" || tr.Outcome != report.Retry || tr.Next != h.clock.Now().Add(20*time.Second) {
		t.Fatalf("second try: %+v", tr)
	}
	// The end waits behind the start: it is not tried while the start is
	// pending.
	ds := h.deliveries("bs")
	if len(ds) != 2 || ds[0].State != store.DeliveryPending || ds[0].Tries != 2 || ds[0].LastError != "503 Service Unavailable: still down" ||
		ds[1].State != store.DeliveryPending || ds[1].Tries != 0 {
		t.Fatalf("while down: %+v, %+v", ds[0], ds[1])
	}
	h.advance(20 * time.Second)
	if tr := h.next(); tr.Delivery.Event != "start" || tr.Outcome != report.Retry || tr.Next != h.clock.Now().Add(40*time.Second) {
		t.Fatalf("third try: %+v", tr)
	}
	h.advance(40 * time.Second)
	for _, ev := range []string{"start", "success"} {
		if tr := h.next(); tr.Delivery.Event != ev || tr.Outcome != report.Delivered {
			t.Fatalf("once back: %+v, want %s delivered", tr, ev)
		}
	}
	var events, ids []string
	for _, r := range hook.got() {
		events = append(events, r.header.Get(report.HeaderEvent))
		ids = append(ids, r.header.Get(report.HeaderDelivery))
	}
	if diff := cmp.Diff([]string{"start", "start", "start", "start", "success"}, events); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	ds = h.deliveries("bs")
	if ids[0] != ds[0].ID || ids[1] != ds[0].ID || ids[2] != ds[0].ID || ids[3] != ds[0].ID || ids[4] != ds[1].ID {
		t.Errorf("X-Sortie-Delivery of each request: %v; want %s four times, then %s", ids, ds[0].ID, ds[1].ID)
	}
	if ds[0].State != store.DeliveryDelivered || ds[0].Tries != 4 || ds[0].DoneAt == nil || ds[1].State != store.DeliveryDelivered || ds[1].Tries != 1 {
		t.Errorf("once delivered: %+v, %+v", ds[0], ds[1])
	}
}

// TestRetryAfter: a receiver that says when to come back (seconds, or a
// date) is tried again then, not by the backoff.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	hook := newHook(t, "s3cret")
	h := newHarness(t, map[string]string{"HOOK_SECRET": "s3cret"})
	spec := h.buildset("bs", commitA, all(hookTarget(hook.URL())))
	hook.failNext(failure{status: http.StatusTooManyRequests, retryAfter: "7", body: "slow down"},
		failure{status: http.StatusServiceUnavailable, retryAfter: time.Now().Add(30 * time.Minute).UTC().Format(http.TimeFormat)})
	h.start("bs", spec)
	if tr := h.next(); tr.Outcome != report.Retry || tr.Next != t0.Add(7*time.Second) {
		t.Fatalf("after a 429 with Retry-After: 7: %+v", tr)
	}
	h.advance(7 * time.Second)
	tr := h.next()
	if wait := tr.Next.Sub(h.clock.Now()); tr.Outcome != report.Retry || wait < 29*time.Minute || wait > 30*time.Minute {
		t.Fatalf("after a 503 with a Retry-After half an hour from now: %+v (in %v)", tr, wait)
	}
}

// TestFailuresOfTheNetwork: no answer within the timeout, and a refused
// connection, are tries that failed and are tried again.
func TestFailuresOfTheNetwork(t *testing.T) {
	t.Parallel()
	hook := newHook(t, "s3cret")
	h := newHarness(t, map[string]string{"HOOK_SECRET": "s3cret"}, func(o *report.Options) { o.Timeout = 200 * time.Millisecond })
	spec := h.buildset("hang", commitA, reporters{buildset.ReportStart: {hookTarget(hook.URL())}})
	hook.failNext(failure{hang: true})
	h.start("hang", spec)
	if tr := h.next(); tr.Outcome != report.Retry || tr.Error != "no answer within 200ms" {
		t.Fatalf("a receiver that does not answer: %+v", tr)
	}
	spec = h.buildset("refused", commitB, reporters{buildset.ReportStart: {hookTarget(refusedURL(t))}})
	h.start("refused", spec)
	if tr := h.next(); tr.Outcome != report.Retry || !strings.Contains(tr.Error, "connection refused") {
		t.Fatalf("a connection refused: %+v", tr)
	}
}

// TestGiveUp: a delivery that keeps failing is given up on once its next
// try would come after Backoff.GiveUp; the next one of its buildset goes.
func TestGiveUp(t *testing.T) {
	t.Parallel()
	hook := newHook(t, "s3cret")
	h := newHarness(t, map[string]string{"HOOK_SECRET": "s3cret"}, func(o *report.Options) { o.Backoff.GiveUp = 30 * time.Second })
	spec := h.buildset("bs", commitA, all(hookTarget(hook.URL())))
	hook.failNext(failure{status: 500}, failure{status: 500}, failure{status: 500})
	h.start("bs", spec)
	h.next()
	h.advance(10 * time.Second)
	h.next()
	h.advance(20 * time.Second)
	tr := h.next()
	if tr.Outcome != report.GaveUp || tr.Error != "gave up after 3 tries in 30s: 500 Internal Server Error" {
		t.Fatalf("third try: %+v", tr)
	}
	h.finish("bs", store.Canceled, nil)
	if tr := h.next(); tr.Outcome != report.Delivered || tr.Delivery.Event != "cancel" {
		t.Fatalf("the cancel after a start given up: %+v", tr)
	}
	ds := h.deliveries("bs")
	if ds[0].State != store.DeliveryFailed || ds[0].LastError != tr.Error && !strings.HasPrefix(ds[0].LastError, "gave up") {
		t.Errorf("given up: %+v", ds[0])
	}
}

// TestSecretsStayOut: a token or a Slack URL that a receiver echoes in its
// error, or that an error would name, is in no recorded error; a secret
// not set is named by its variable, and the delivery waits for it.
func TestSecretsStayOut(t *testing.T) {
	t.Parallel()
	gh := newGitHub(t, "org/repo", "ghp-sekrit")
	slack, _ := newSlack(t, "/services/T0/B0/hook-sekrit")
	h := newHarness(t, map[string]string{"SLACK_URL": slack.URL() + "/services/T0/B0/hook-sekrit"})
	gh.failNext(failure{status: 401, body: `{"message":"Bad credentials: ghp-sekrit"}`})
	slack.failNext(failure{status: 404, body: "no_service: /services/T0/B0/hook-sekrit"})
	spec := h.buildset("bs", commitA, reporters{buildset.ReportStart: {
		{Name: "gh", Type: "github", URL: gh.URL(), Repository: "org/repo", TokenEnv: "GH_TOKEN"},
		{Name: "chat", Type: "slack", URLEnv: "SLACK_URL"},
	}})
	h.start("bs", spec)
	got := map[string]report.Try{}
	for range 2 {
		tr := h.next()
		got[tr.Delivery.Reporter] = tr
	}
	if tr := got["gh"]; tr.Outcome != report.Retry || tr.Error != "$GH_TOKEN is not set in the environment of this sortie (srv-test)" {
		t.Errorf("a token not set: %+v", tr)
	}
	if tr := got["chat"]; tr.Outcome != report.Retry || tr.Error != "404 Not Found: no_service: ***" {
		t.Errorf("Slack's answer naming its URL: %+v", tr)
	}
	h.setenv("GH_TOKEN", "ghp-sekrit")
	h.setenv("SLACK_URL", refusedURL(t)+"/services/T0/B0/hook-sekrit")
	h.advance(10 * time.Second)
	for range 2 {
		tr := h.next()
		got[tr.Delivery.Reporter] = tr
	}
	if tr := got["gh"]; tr.Error != `401 Unauthorized: {"message":"Bad credentials: ***"}` {
		t.Errorf("GitHub's answer naming the token: %+v", tr)
	}
	if tr := got["chat"]; !strings.Contains(tr.Error, "connection refused") || strings.Contains(tr.Error, "sekrit") || strings.Contains(tr.Error, "/services/") {
		t.Errorf("a refused connection to Slack: %+v", tr)
	}
	for _, d := range h.deliveries("bs") {
		if strings.Contains(d.LastError, "sekrit") || strings.Contains(string(d.Target), "sekrit") {
			t.Errorf("the store holds a secret: %+v (target %s)", d, d.Target)
		}
	}
}

// TestStopLeavesDeliveriesPending: a worker stopped during a try leaves
// the delivery pending, unclaimed and due, and the next worker sends it.
func TestStopLeavesDeliveriesPending(t *testing.T) {
	t.Parallel()
	hook := newHook(t, "s3cret")
	h := newHarness(t, map[string]string{"HOOK_SECRET": "s3cret"})
	spec := h.buildset("bs", commitA, reporters{buildset.ReportStart: {hookTarget(hook.URL())}})
	hook.failNext(failure{hang: true})
	h.start("bs", spec)
	select {
	case <-hook.arrived:
	case <-time.After(wait):
		t.Fatal("the try did not arrive")
	}
	h.w.Stop(t.Context())
	if tr := h.next(); tr.Outcome != report.Retry || tr.Next != t0 {
		t.Fatalf("the try cut short: %+v", tr)
	}
	d := h.deliveries("bs")[0]
	if d.State != store.DeliveryPending || d.ClaimedBy != "" || d.ClaimedUntil != nil || !d.NextAt.Equal(t0) {
		t.Fatalf("after Stop: %+v", d)
	}
	if err := h.w.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if tr := h.next(); tr.Outcome != report.Delivered || tr.Delivery.Tries != 2 {
		t.Fatalf("after a new start: %+v", tr)
	}
}
