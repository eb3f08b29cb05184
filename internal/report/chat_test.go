package report_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/report"
	"github.com/sortie-ci/sortie/internal/store"
)

// newSlack fakes a Slack incoming webhook: POST of JSON with a text to the
// hook's secret path; 200 "ok", as Slack answers.
func newSlack(t *testing.T, path string) (*receiver, func() []string) {
	var mu sync.Mutex
	var texts []string
	rc := newReceiver(t, func(r *http.Request, body []byte) (int, string) {
		if r.URL.Path != path {
			return http.StatusNotFound, "no_service"
		}
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			return http.StatusBadRequest, "invalid_payload"
		}
		var b struct {
			Text string `json:"text"`
		}
		if err := decodeStrict(body, &b); err != nil || b.Text == "" {
			return http.StatusBadRequest, "no_text"
		}
		mu.Lock()
		texts = append(texts, b.Text)
		mu.Unlock()
		return http.StatusOK, "ok"
	})
	return rc, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), texts...)
	}
}

// matrixRoom fakes a Matrix homeserver's room: PUT
// /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn} with the
// access token as a bearer token; a transaction id seen before returns
// the same event and adds none, as the spec requires.
type matrixRoom struct {
	*receiver
	mu     sync.Mutex
	events []map[string]string
	txns   map[string]string // txn -> event id
}

func newMatrix(t *testing.T, room, token string) *matrixRoom {
	m := &matrixRoom{txns: map[string]string{}}
	path := regexp.MustCompile(`^/_matrix/client/v3/rooms/([^/]+)/send/m\.room\.message/([^/]+)$`)
	m.receiver = newReceiver(t, func(r *http.Request, body []byte) (int, string) {
		p := path.FindStringSubmatch(r.URL.Path)
		switch {
		case p == nil || r.Method != http.MethodPut:
			return http.StatusNotFound, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`
		case r.Header.Get("Authorization") != "Bearer "+token:
			return http.StatusUnauthorized, `{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed."}`
		case p[1] != room:
			return http.StatusForbidden, `{"errcode":"M_FORBIDDEN","error":"not in room"}`
		}
		var content map[string]string
		if err := json.Unmarshal(body, &content); err != nil || content["msgtype"] == "" || content["body"] == "" {
			return http.StatusBadRequest, `{"errcode":"M_BAD_JSON","error":"bad content"}`
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		if id, ok := m.txns[p[2]]; ok {
			return http.StatusOK, fmt.Sprintf(`{"event_id":%q}`, id)
		}
		id := fmt.Sprintf("$event%d", len(m.events))
		m.txns[p[2]] = id
		m.events = append(m.events, content)
		return http.StatusOK, fmt.Sprintf(`{"event_id":%q}`, id)
	})
	return m
}

func (m *matrixRoom) bodies() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, e := range m.events {
		out = append(out, e["body"])
	}
	return out
}

// TestChatMessages: Slack and Matrix hear of each event in one message:
// the pipeline, the short commit and its subject, the result, the failed
// jobs, the duration and the link.
func TestChatMessages(t *testing.T) {
	t.Parallel()
	slack, texts := newSlack(t, "/services/T000/B000/sekrit-key")
	room := newMatrix(t, "!ops:example.org", "mx-token")
	h := newHarness(t, map[string]string{"SLACK_URL": slack.URL() + "/services/T000/B000/sekrit-key", "MX": "mx-token"},
		func(o *report.Options) {
			o.Subjects = subjects{commitA: "Fix the <zone> file & more", commitB: "Add a host"}
		})
	rs := all(
		buildset.ReporterSpec{Name: "chat", Type: "slack", URLEnv: "SLACK_URL"},
		buildset.ReporterSpec{Name: "room", Type: "matrix", Homeserver: room.URL(), Room: "!ops:example.org", TokenEnv: "MX"},
	)
	spec := h.buildset("bs-ok", commitA, rs)
	h.start("bs-ok", spec)
	h.next()
	h.next()
	h.finish("bs-ok", store.Success, map[string]store.Result{"boot": store.Success, "base": store.Success})
	h.next()
	h.next()
	spec = h.buildset("bs-bad", commitB, rs)
	h.start("bs-bad", spec)
	h.next()
	h.next()
	h.finish("bs-bad", store.Failure, map[string]store.Result{"boot": store.Success, "base": store.TimedOut})
	h.next()
	h.next()
	link := publicURL + "/buildsets/"
	want := []string{
		"*deploy* started: `1111111` Fix the &lt;zone&gt; file &amp; more\n<" + link + "bs-ok|the buildset's page>",
		"*deploy* succeeded in 1m0s: `1111111` Fix the &lt;zone&gt; file &amp; more\n<" + link + "bs-ok|the buildset's page>",
		"*deploy* started: `2222222` Add a host\n<" + link + "bs-bad|the buildset's page>",
		"*deploy* failed in 1m0s: `2222222` Add a host\nfailed jobs: base\n<" + link + "bs-bad|the buildset's page>",
	}
	if diff := cmp.Diff(want, texts()); diff != "" {
		t.Errorf("Slack's messages (-want +got):\n%s", diff)
	}
	wantMX := []string{
		"deploy started: 1111111 Fix the <zone> file & more\n" + link + "bs-ok",
		"deploy succeeded in 1m0s: 1111111 Fix the <zone> file & more\n" + link + "bs-ok",
		"deploy started: 2222222 Add a host\n" + link + "bs-bad",
		"deploy failed in 1m0s: 2222222 Add a host\nfailed jobs: base\n" + link + "bs-bad",
	}
	if diff := cmp.Diff(wantMX, room.bodies()); diff != "" {
		t.Errorf("Matrix's messages (-want +got):\n%s", diff)
	}
	room.mu.Lock()
	html := room.events[3]["formatted_body"]
	room.mu.Unlock()
	if !strings.Contains(html, "<b>deploy</b> failed in 1m0s: <code>2222222</code>") || !strings.Contains(html, `<a href="`+link+`bs-bad">`) {
		t.Errorf("Matrix's HTML: %s", html)
	}
}

// TestMatrixOneEventPerDelivery: a try whose answer is lost is sent again
// with the same transaction id, and the room gets one message.
func TestMatrixOneEventPerDelivery(t *testing.T) {
	t.Parallel()
	room := newMatrix(t, "!ops:example.org", "mx-token")
	h := newHarness(t, map[string]string{"MX": "mx-token"})
	spec := h.buildset("bs", commitA, reporters{buildset.ReportStart: {{Name: "room", Type: "matrix", Homeserver: room.URL(), Room: "!ops:example.org", TokenEnv: "MX"}}})
	room.failNext(failure{status: http.StatusBadGateway, body: "Bad Gateway", thenAccept: true})
	h.start("bs", spec)
	if tr := h.next(); tr.Outcome != report.Retry {
		t.Fatalf("first try: %+v", tr)
	}
	h.advance(10 * time.Second)
	if tr := h.next(); tr.Outcome != report.Delivered {
		t.Fatalf("second try: %+v", tr)
	}
	got := room.got()
	if len(got) != 2 || got[0].path != got[1].path {
		t.Errorf("tries went to %v, want one path twice", got)
	}
	if n := len(room.bodies()); n != 1 {
		t.Errorf("the room has %d messages, want 1", n)
	}
}

// subjects are commits' subjects, as the mirror gives them.
type subjects map[string]string

func (s subjects) Subjects(_ context.Context, shas ...string) (map[string]string, error) {
	out := map[string]string{}
	for _, sha := range shas {
		if v, ok := s[sha]; ok {
			out[sha] = v
		}
	}
	return out, nil
}
