// Package report tells people and forges what became of buildsets: commit
// statuses on GitHub, Gitea (and Forgejo) and GitLab, messages to a
// Slack-compatible incoming webhook or a Matrix room, and a signed JSON
// webhook. One file per kind.
//
// What is told is decided elsewhere: each event of a buildset (start,
// success, failure, cancel) is recorded as a row of the store's outbox, in
// the transaction of the state change that causes it (buildset.Spec's
// Deliveries). A Worker claims those rows, from any process sharing the
// store, sends each, and records how it went; a delivery is tried until it
// is delivered, with backoff, across restarts, or given up on after a day.
// Nothing here can block or slow a build, or change a buildset's result.
//
// Secrets (tokens, Slack's URL, the webhook's key) are read from the
// environment at each try, by the variable names frozen into the delivery;
// they are in no row, no log line, and no error kept: a receiver's error
// is kept redacted.
package report

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/logs"
	"github.com/sortie-ci/sortie/internal/store"
)

// Delivery is one event of one buildset to tell one reporter: what a
// sender needs, read from the outbox's row and the store.
type Delivery struct {
	// ID is the delivery's: the same on every try (X-Sortie-Delivery, a
	// Matrix transaction id).
	ID     string
	Event  buildset.ReportEvent
	Target buildset.ReporterSpec
	// Report is the buildset as of the event (see View).
	Report *buildset.Report
	// Subject is the commit's subject, "" when the mirror does not have
	// it.
	Subject string
	// Link is the buildset's page, "" without server.public_url.
	Link string
}

// sender sends a delivery to one kind of reporter. secret returns the
// value of one of the target's *_env variables, or an error when it is
// not set.
type sender func(ctx context.Context, c *http.Client, d *Delivery, secret func(name string) (string, error)) error

// senders are the kinds of reporter, by config type.
var senders = map[string]sender{
	"github":  sendGitHub,
	"gitea":   sendGitea,
	"gitlab":  sendGitLab,
	"slack":   sendSlack,
	"matrix":  sendMatrix,
	"webhook": sendWebhook,
}

// View is the buildset as a reporter of event ev tells it. The end events
// tell it as it ended (a buildset DONE changes no more). The start is
// told as it started, whenever it is sent: running, every build waiting,
// so that a delivery says the same on every try. Logs are the API's URLs,
// under publicURL.
func View(rep *buildset.Report, ev buildset.ReportEvent, publicURL string) *buildset.Report {
	v := *rep
	v.Builds = make([]buildset.BuildReport, len(rep.Builds))
	for i, b := range rep.Builds {
		if ev == buildset.ReportStart {
			b = buildset.BuildReport{Job: b.Job}
		} else if b.Attempt > 0 {
			b.Log = publicURL + fmt.Sprintf("/api/v1/buildsets/%s/builds/%s/log?attempt=%d", url.PathEscape(rep.ID), url.PathEscape(b.Job), b.Attempt)
		}
		v.Builds[i] = b
	}
	if ev == buildset.ReportStart {
		v.Result, v.Error, v.FinishedAt = string(store.BuildsetRunning), "", buildset.TimeOf(nil)
	}
	return &v
}

// pageLink is the buildset's page under publicURL, "" without one.
func pageLink(publicURL, id string) string {
	if publicURL == "" {
		return ""
	}
	return publicURL + "/buildsets/" + url.PathEscape(id)
}

// shortCommit is the first 7 hex digits, as git shows them.
func shortCommit(sha string) string {
	if len(sha) > 7 {
		return sha[:7]
	}
	return sha
}

// failedJobs are the builds that did not succeed for a reason of their
// own: not those skipped or cancelled because of another.
func failedJobs(rep *buildset.Report) []string {
	var out []string
	for _, b := range rep.Builds {
		switch store.Result(b.Result) {
		case store.Failure, store.TimedOut, store.RetryLimit, store.Error:
			out = append(out, b.Job)
		}
	}
	return out
}

// duration is how long the buildset ran, "" when it has not both started
// and finished.
func duration(rep *buildset.Report) string {
	s, e := rep.StartedAt.Get(), rep.FinishedAt.Get()
	if s == nil || e == nil {
		return ""
	}
	return e.Sub(*s).Round(time.Second).String()
}

// summary says in a few words what became of the buildset: "started",
// "succeeded in 3m2s", "failed: base, letsencrypt (4m1s)", "cancelled".
func summary(d *Delivery) string {
	rep, dur := d.Report, duration(d.Report)
	in := func(s string) string {
		if dur == "" {
			return s
		}
		return s + " in " + dur
	}
	switch d.Event {
	case buildset.ReportStart:
		return "started"
	case buildset.ReportSuccess:
		return in("succeeded")
	case buildset.ReportCancel:
		return "cancelled"
	}
	failed := failedJobs(rep)
	switch {
	case len(failed) > 0:
		s := "failed: " + strings.Join(failed, ", ")
		if dur != "" {
			s += " (" + dur + ")"
		}
		return s
	case rep.Error != "":
		return strings.ToLower(strings.ReplaceAll(rep.Result, "_", " ")) + ": " + oneLine(rep.Error)
	}
	return in("failed")
}

// oneLine keeps the first line of s.
func oneLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// truncate cuts s to at most n runes, marking the cut with "…".
func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// HTTPError is a receiver's refusal: its status, what it said (at most a
// few hundred bytes, on one line), and when it asked to be tried again.
type HTTPError struct {
	Status int
	Body   string
	// RetryAfter is its Retry-After (seconds or a date), or Matrix's
	// retry_after_ms; 0 when it said nothing.
	RetryAfter time.Duration
}

func (e *HTTPError) Error() string {
	s := strconv.Itoa(e.Status) + " " + http.StatusText(e.Status)
	if e.Body != "" {
		s += ": " + e.Body
	}
	return s
}

// maxErrorBody bounds what is kept of a receiver's answer.
const maxErrorBody = 512

// postJSON sends body as JSON with headers, and returns the answer's body:
// see do.
func postJSON(ctx context.Context, c *http.Client, method, endpoint string, headers map[string]string, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, endpoint, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	return do(c, req)
}

// do sends req and reads the answer's body: nil for a 2xx, else an
// *HTTPError. The error of a request that failed says why without its
// URL, which may be a secret (Slack's).
func do(c *http.Client, req *http.Request) ([]byte, error) {
	req.Header.Set("User-Agent", "sortie")
	resp, err := c.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("%s: %w", strings.ToLower(ue.Op), ue.Err)
		}
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("read the answer: %w", err)
	}
	if resp.StatusCode/100 == 2 {
		return body, nil
	}
	he := &HTTPError{Status: resp.StatusCode, Body: truncate(strings.Join(strings.Fields(string(body)), " "), maxErrorBody)}
	he.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), time.Now())
	return body, he
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(h string, now time.Time) time.Duration {
	h = strings.TrimSpace(h)
	if h == "" {
		return 0
	}
	if n, err := strconv.Atoi(h); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(h); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// redact removes the values of the delivery's secrets from an error's
// text.
func redact(msg string, secrets []string) string { return logs.Redact(msg, secrets) }
