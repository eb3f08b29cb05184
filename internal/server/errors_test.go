package server

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// The API names what is missing as the client asked for it: never the
// store's words ("sqlite: get buildset ...") nor Sortie's mirror of the
// repository.
func TestErrorsNameWhatTheClientAsked(t *testing.T) {
	t.Parallel()
	e := start(t, `
jobs:
  boot: {bootstrap: true, run: "true"}
  a: {run: "true"}
pipelines:
  deploy: {jobs: [boot, a]}
`, envOpt{})
	id := e.trigger("deploy", nil)
	e.waitDone(id)
	cases := []struct {
		method, path string
		body         any
		code         int
		want         string
	}{
		{"GET", "/api/v1/buildsets/nosuch", nil, 404, "no buildset nosuch"},
		{"GET", "/api/v1/buildsets/nosuch/builds/a", nil, 404, "no buildset nosuch"},
		{"GET", "/api/v1/buildsets/" + id + "/builds/zz", nil, 404, "buildset " + id + " has no build of zz"},
		{"GET", "/api/v1/buildsets/nosuch/builds/a/log", nil, 404, "no build a in buildset nosuch"},
		{"POST", "/api/v1/buildsets/nosuch/cancel", map[string]any{}, 404, "no buildset nosuch"},
		{"POST", "/api/v1/buildsets/nosuch/rerun", map[string]any{}, 404, "no buildset nosuch"},
		{"POST", "/api/v1/pipelines/deploy/trigger", map[string]any{"commit": "nosuchref"}, 422, "no commit nosuchref in " + e.repo + " (source.url)"},
	}
	for _, c := range cases {
		code, out := e.do(c.method, c.path, c.body, testToken)
		var answer struct{ Error string }
		json.Unmarshal(out, &answer)
		if code != c.code || answer.Error != c.want {
			t.Errorf("%s %s: %d %q, want %d %q", c.method, c.path, code, answer.Error, c.code, c.want)
		}
		if strings.Contains(answer.Error, "sqlite") || strings.Contains(answer.Error, "mirror.git") {
			t.Errorf("%s %s: the answer names Sortie's internals: %s", c.method, c.path, out)
		}
	}
	if code, _ := e.do("GET", "/api/v1/buildsets/"+id, nil, ""); code != http.StatusOK {
		t.Errorf("a known buildset: %d", code)
	}
}
