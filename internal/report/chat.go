package report

import (
	"context"
	"encoding/json"
	"errors"
	"html"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
)

// message is what a chat reporter posts, in parts each kind renders:
// "deploy succeeded in 3m2s: 1a2b3c4 Fix the zone file", then the failed
// jobs and the link.
type message struct {
	Pipeline string
	Summary  string
	Commit   string // short
	Subject  string
	Failed   []string
	Link     string
}

func messageOf(d *Delivery) message {
	m := message{
		Pipeline: d.Report.Pipeline, Summary: summary(d), Commit: shortCommit(d.Report.Commit),
		Subject: oneLine(d.Subject), Link: d.Link,
	}
	if d.Event == buildset.ReportFailure {
		m.Failed = failedJobs(d.Report)
		// The summary names them already, unless the buildset erred.
		if strings.HasPrefix(m.Summary, "failed: ") {
			m.Summary = "failed"
			if dur := duration(d.Report); dur != "" {
				m.Summary += " in " + dur
			}
		}
	}
	return m
}

// plain renders the message as text.
func (m message) plain() string {
	var b strings.Builder
	b.WriteString(m.Pipeline + " " + m.Summary + ": " + m.Commit)
	if m.Subject != "" {
		b.WriteString(" " + m.Subject)
	}
	if len(m.Failed) > 0 {
		b.WriteString("\nfailed jobs: " + strings.Join(m.Failed, ", "))
	}
	if m.Link != "" {
		b.WriteString("\n" + m.Link)
	}
	return b.String()
}

// slackEscape escapes the three characters Slack's mrkdwn reserves.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// slack renders the message in Slack's mrkdwn.
func (m message) slack() string {
	var b strings.Builder
	b.WriteString("*" + slackEscape(m.Pipeline) + "* " + slackEscape(m.Summary) + ": `" + m.Commit + "`")
	if m.Subject != "" {
		b.WriteString(" " + slackEscape(m.Subject))
	}
	if len(m.Failed) > 0 {
		b.WriteString("\nfailed jobs: " + slackEscape(strings.Join(m.Failed, ", ")))
	}
	if m.Link != "" {
		b.WriteString("\n<" + m.Link + "|the buildset's page>")
	}
	return b.String()
}

// html renders the message as the HTML Matrix clients show.
func (m message) html() string {
	var b strings.Builder
	b.WriteString("<b>" + html.EscapeString(m.Pipeline) + "</b> " + html.EscapeString(m.Summary) + ": <code>" + m.Commit + "</code>")
	if m.Subject != "" {
		b.WriteString(" " + html.EscapeString(m.Subject))
	}
	if len(m.Failed) > 0 {
		b.WriteString("<br>failed jobs: " + html.EscapeString(strings.Join(m.Failed, ", ")))
	}
	if m.Link != "" {
		b.WriteString(`<br><a href="` + html.EscapeString(m.Link) + `">the buildset's page</a>`)
	}
	return b.String()
}

// sendSlack posts the message to a Slack-compatible incoming webhook
// (Slack, Mattermost, Rocket.Chat...): POST {"text": ...} to the URL in
// url_env, which embeds its key.
func sendSlack(ctx context.Context, c *http.Client, d *Delivery, secret func(string) (string, error)) error {
	hook, err := secret(d.Target.URLEnv)
	if err != nil {
		return err
	}
	if u, err := url.Parse(hook); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return errors.New("$" + d.Target.URLEnv + " is not an http or https URL")
	}
	_, err = postJSON(ctx, c, http.MethodPost, hook, nil, map[string]string{"text": messageOf(d).slack()})
	return err
}

// sendMatrix sends the message to a room as an m.notice (what bots send):
// PUT {homeserver}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn},
// the delivery's id as the transaction id, so that the homeserver keeps
// one event however many tries reach it.
func sendMatrix(ctx context.Context, c *http.Client, d *Delivery, secret func(string) (string, error)) error {
	token, err := secret(d.Target.TokenEnv)
	if err != nil {
		return err
	}
	m := messageOf(d)
	endpoint := strings.TrimRight(d.Target.Homeserver, "/") + "/_matrix/client/v3/rooms/" + url.PathEscape(d.Target.Room) +
		"/send/m.room.message/" + url.PathEscape(d.ID)
	_, err = postJSON(ctx, c, http.MethodPut, endpoint, map[string]string{"Authorization": "Bearer " + token}, map[string]string{
		"msgtype": "m.notice", "body": m.plain(), "format": "org.matrix.custom.html", "formatted_body": m.html(),
	})
	// A homeserver that limits the rate says when to come back in its
	// body (M_LIMIT_EXCEEDED), and not always in Retry-After.
	var he *HTTPError
	if errors.As(err, &he) && he.RetryAfter == 0 {
		var body struct {
			RetryAfterMS int64 `json:"retry_after_ms"`
		}
		if json.Unmarshal([]byte(he.Body), &body) == nil && body.RetryAfterMS > 0 {
			he.RetryAfter = time.Duration(body.RetryAfterMS) * time.Millisecond
		}
	}
	return err
}
