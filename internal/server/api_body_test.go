package server

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestJSONBodyOneValue: a body with anything after its JSON value is
// refused, and its first value is not acted on.
func TestJSONBodyOneValue(t *testing.T) {
	e := start(t, pushConfig, envOpt{})
	post := func(body string) (int, string) {
		req, _ := http.NewRequest("POST", e.url+"/api/v1/pause", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	for _, body := range []string{`{} {"pipeline": "deploy"}`, `{"reason": "a"}{"reason": "b"}`, `{} x`, `{}}`, `{} []`} {
		if code, out := post(body); code != http.StatusBadRequest {
			t.Errorf("pause with body %q: %d %s, want 400", body, code, out)
		}
	}
	if _, out := e.do("GET", "/api/v1/status", nil, ""); !strings.Contains(string(out), `"paused": null`) {
		t.Fatalf("a refused body paused: %s", out)
	}
	if code, out := post("{\"reason\": \"ok\"} \n\t"); code != http.StatusOK {
		t.Errorf("pause with white space after the value: %d %s, want 200", code, out)
	}
}

// TestResumeUnknownPipeline: resume, like pause, answers 404 for a
// pipeline the config does not have.
func TestResumeUnknownPipeline(t *testing.T) {
	e := start(t, pushConfig, envOpt{})
	for _, path := range []string{"/api/v1/pause", "/api/v1/resume"} {
		if code, out := e.do("POST", path, map[string]string{"pipeline": "nope"}, testToken); code != http.StatusNotFound {
			t.Errorf("%s of an unknown pipeline: %d %s, want 404", path, code, out)
		}
	}
	if code, out := e.do("POST", "/api/v1/resume", map[string]string{"pipeline": "deploy"}, testToken); code != http.StatusOK {
		t.Errorf("resume of deploy: %d %s, want 200", code, out)
	}
}
