package report_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sync"
	"testing"
	"unicode/utf8"
)

// status is a commit status as a fake forge recorded it.
type status struct {
	State, Context, Description, TargetURL string
}

// forge is a fake forge's commit statuses, by commit, in the order set.
type forge struct {
	*receiver
	mu       sync.Mutex
	statuses map[string][]status
}

func (f *forge) record(sha string, s status) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.statuses[sha] = append(f.statuses[sha], s)
}

// states returns the states a commit went through, in order.
func (f *forge) states(sha string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, s := range f.statuses[sha] {
		out = append(out, s.State)
	}
	return out
}

func (f *forge) last(sha string) status {
	f.mu.Lock()
	defer f.mu.Unlock()
	ss := f.statuses[sha]
	if len(ss) == 0 {
		return status{}
	}
	return ss[len(ss)-1]
}

// decodeStrict decodes a JSON body, refusing fields the API does not take.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func jsonMessage(msg string) string {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return string(b)
}

// checkStatus checks the fields GitHub and Gitea document for a commit
// status: state among states, a description of at most 140 characters,
// a target_url that is an http(s) URL, a context.
func checkStatus(body []byte, states []string) (status, int, string) {
	var b struct {
		State       string  `json:"state"`
		TargetURL   *string `json:"target_url"`
		Description *string `json:"description"`
		Context     *string `json:"context"`
	}
	if err := decodeStrict(body, &b); err != nil {
		return status{}, http.StatusBadRequest, jsonMessage("Problems parsing JSON: " + err.Error())
	}
	s := status{State: b.State}
	if !slices.Contains(states, b.State) {
		return s, http.StatusUnprocessableEntity, jsonMessage("Validation Failed: state")
	}
	if b.Description != nil {
		if utf8.RuneCountInString(*b.Description) > 140 {
			return s, http.StatusUnprocessableEntity, jsonMessage("Validation Failed: description is too long (maximum is 140 characters)")
		}
		s.Description = *b.Description
	}
	if b.TargetURL != nil {
		if u, err := url.Parse(*b.TargetURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") {
			return s, http.StatusUnprocessableEntity, jsonMessage("Validation Failed: target_url")
		}
		s.TargetURL = *b.TargetURL
	}
	if b.Context == nil || *b.Context == "" {
		s.Context = "default"
	} else {
		s.Context = *b.Context
	}
	return s, http.StatusCreated, ""
}

var sha40 = `([0-9a-f]{40})`

// newGitHub fakes GitHub's "create a commit status": POST
// /repos/{owner}/{repo}/statuses/{sha}, a token as Bearer (or token),
// JSON with state pending, success, failure or error; 201.
func newGitHub(t *testing.T, repository, token string) *forge {
	f := &forge{statuses: map[string][]status{}}
	path := regexp.MustCompile(`^/repos/` + regexp.QuoteMeta(repository) + `/statuses/` + sha40 + `$`)
	f.receiver = newReceiver(t, func(r *http.Request, body []byte) (int, string) {
		m := path.FindStringSubmatch(r.URL.Path)
		switch {
		case m == nil:
			return http.StatusNotFound, jsonMessage("Not Found")
		case r.Method != http.MethodPost:
			return http.StatusMethodNotAllowed, jsonMessage("Method Not Allowed")
		case r.Header.Get("Authorization") != "Bearer "+token && r.Header.Get("Authorization") != "token "+token:
			return http.StatusUnauthorized, jsonMessage("Bad credentials")
		case r.Header.Get("Content-Type") != "application/json":
			return http.StatusUnsupportedMediaType, jsonMessage("Unsupported Media Type")
		}
		s, code, msg := checkStatus(body, []string{"error", "failure", "pending", "success"})
		if code != http.StatusCreated {
			return code, msg
		}
		f.record(m[1], s)
		return code, fmt.Sprintf(`{"state":%q,"context":%q}`, s.State, s.Context)
	})
	return f
}

// newGitea fakes Gitea's (and Forgejo's) "create a commit status": POST
// /api/v1/repos/{owner}/{repo}/statuses/{sha}, Authorization: token ...,
// JSON with state pending, success, error, failure or warning; 201.
func newGitea(t *testing.T, repository, token string) *forge {
	f := &forge{statuses: map[string][]status{}}
	path := regexp.MustCompile(`^/api/v1/repos/` + regexp.QuoteMeta(repository) + `/statuses/` + sha40 + `$`)
	f.receiver = newReceiver(t, func(r *http.Request, body []byte) (int, string) {
		m := path.FindStringSubmatch(r.URL.Path)
		switch {
		case m == nil:
			return http.StatusNotFound, jsonMessage("Not Found")
		case r.Method != http.MethodPost:
			return http.StatusMethodNotAllowed, ""
		case r.Header.Get("Authorization") != "token "+token && r.Header.Get("Authorization") != "Bearer "+token:
			return http.StatusUnauthorized, jsonMessage("token is required")
		}
		s, code, msg := checkStatus(body, []string{"pending", "success", "error", "failure", "warning"})
		if code != http.StatusCreated {
			return code, msg
		}
		f.record(m[1], s)
		return code, fmt.Sprintf(`{"status":%q,"context":%q}`, s.State, s.Context)
	})
	return f
}

// newGitLab fakes GitLab's "set the pipeline status of a commit": POST
// /api/v4/projects/{id or url-encoded path}/statuses/{sha}, PRIVATE-TOKEN,
// state pending, running, success, failed or canceled, name (or context).
// Like GitLab, it moves one status per name through its state machine: a
// pending or running status of that name is updated, else one is created;
// a move the machine refuses is a 400 ("Cannot transition status via
// :enqueue from :pending").
func newGitLab(t *testing.T, project, token string) *forge {
	f := &forge{statuses: map[string][]status{}}
	path := regexp.MustCompile(`^/api/v4/projects/` + regexp.QuoteMeta(url.PathEscape(project)) + `/statuses/` + sha40 + `$`)
	current := map[string]string{} // sha + name -> state of its pending or running status
	var mu sync.Mutex
	f.receiver = newReceiver(t, func(r *http.Request, body []byte) (int, string) {
		// The project's path is one segment: its slash is encoded.
		m := path.FindStringSubmatch(r.URL.EscapedPath())
		switch {
		case m == nil:
			return http.StatusNotFound, jsonMessage("404 Project Not Found")
		case r.Method != http.MethodPost:
			return http.StatusMethodNotAllowed, ""
		case r.Header.Get("PRIVATE-TOKEN") != token:
			return http.StatusUnauthorized, jsonMessage("401 Unauthorized")
		}
		var b struct {
			State       string `json:"state"`
			Name        string `json:"name"`
			Context     string `json:"context"`
			TargetURL   string `json:"target_url"`
			Description string `json:"description"`
			Ref         string `json:"ref"`
		}
		if err := decodeStrict(body, &b); err != nil {
			return http.StatusBadRequest, jsonMessage(err.Error())
		}
		name := b.Name
		if name == "" {
			name = b.Context
		}
		if name == "" {
			name = "default"
		}
		key := m[1] + "\x00" + name
		mu.Lock()
		defer mu.Unlock()
		from, ok := current[key]
		if !ok {
			from = "created"
		}
		refuse := func(event string) (int, string) {
			return http.StatusBadRequest, jsonMessage(fmt.Sprintf("Cannot transition status via :%s from :%s (Reason(s): Status cannot transition via \"%s\")", event, from, event))
		}
		switch b.State {
		case "pending":
			if from != "created" {
				return refuse("enqueue")
			}
		case "running":
			if from != "created" && from != "pending" {
				return refuse("run")
			}
		case "success", "failed", "canceled":
			// From created, pending or running: always.
		default:
			return http.StatusBadRequest, jsonMessage("state does not have a valid value")
		}
		if b.State == "pending" || b.State == "running" {
			current[key] = b.State
		} else {
			delete(current, key)
		}
		f.record(m[1], status{State: b.State, Context: name, Description: b.Description, TargetURL: b.TargetURL})
		return http.StatusCreated, fmt.Sprintf(`{"status":%q,"name":%q}`, b.State, name)
	})
	return f
}
