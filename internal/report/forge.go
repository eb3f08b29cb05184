package report

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/store"
)

// maxDescription bounds a commit status's description: GitHub's limit,
// which the others accept too.
const maxDescription = 140

// Context is the name of the commit status a pipeline's buildsets set:
// one per pipeline, so that a deploy and an hourly run of the same commit
// show side by side.
func Context(pipeline string) string { return "sortie/" + pipeline }

// statusState is the state of the commit status GitHub and Gitea take for
// an event: pending at the start, then success, failure (the deploy
// failed), or error (Sortie could not run it, or it was cancelled).
func statusState(d *Delivery) string {
	switch d.Event {
	case buildset.ReportStart:
		return "pending"
	case buildset.ReportSuccess:
		return "success"
	case buildset.ReportCancel:
		return "error"
	}
	if r := store.Result(d.Report.Result); r == store.Error || r == store.ConfigError {
		return "error"
	}
	return "failure"
}

// description is a commit status's one line.
func description(d *Delivery) string {
	return truncate(oneLine(summary(d)), maxDescription)
}

// statusBody is the JSON body GitHub and Gitea take: the same fields.
type statusBody struct {
	State       string `json:"state"`
	TargetURL   string `json:"target_url,omitempty"`
	Description string `json:"description"`
	Context     string `json:"context"`
}

// repoPath is owner/name, each part escaped for a URL's path.
func repoPath(repository string) string {
	owner, name, _ := strings.Cut(repository, "/")
	return url.PathEscape(owner) + "/" + url.PathEscape(name)
}

// sendGitHub sets a commit status through GitHub's REST API: POST
// {url}/repos/{owner}/{repo}/statuses/{sha}, the token as a bearer token.
func sendGitHub(ctx context.Context, c *http.Client, d *Delivery, secret func(string) (string, error)) error {
	token, err := secret(d.Target.TokenEnv)
	if err != nil {
		return err
	}
	endpoint := strings.TrimRight(d.Target.URL, "/") + "/repos/" + repoPath(d.Target.Repository) + "/statuses/" + url.PathEscape(d.Report.Commit)
	_, err = postJSON(ctx, c, http.MethodPost, endpoint, map[string]string{
		"Authorization": "Bearer " + token, "Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28",
	}, statusBody{State: statusState(d), TargetURL: d.Link, Description: description(d), Context: Context(d.Report.Pipeline)})
	return err
}

// sendGitea sets a commit status through Gitea's (and Forgejo's) API: POST
// {url}/api/v1/repos/{owner}/{repo}/statuses/{sha}, Authorization: token.
func sendGitea(ctx context.Context, c *http.Client, d *Delivery, secret func(string) (string, error)) error {
	token, err := secret(d.Target.TokenEnv)
	if err != nil {
		return err
	}
	endpoint := strings.TrimRight(d.Target.URL, "/") + "/api/v1/repos/" + repoPath(d.Target.Repository) + "/statuses/" + url.PathEscape(d.Report.Commit)
	_, err = postJSON(ctx, c, http.MethodPost, endpoint, map[string]string{"Authorization": "token " + token},
		statusBody{State: statusState(d), TargetURL: d.Link, Description: description(d), Context: Context(d.Report.Pipeline)})
	return err
}

// gitlabBody is the body GitLab's commit status API takes.
type gitlabBody struct {
	State       string `json:"state"`
	Name        string `json:"name"`
	TargetURL   string `json:"target_url,omitempty"`
	Description string `json:"description"`
}

// gitlabState is GitLab's state for an event: pending, success, failed,
// canceled.
func gitlabState(d *Delivery) string {
	switch d.Event {
	case buildset.ReportStart:
		return "pending"
	case buildset.ReportSuccess:
		return "success"
	case buildset.ReportCancel:
		return "canceled"
	}
	return "failed"
}

// sendGitLab sets a commit status through GitLab's API: POST
// {url}/api/v4/projects/{id or url-encoded path}/statuses/{sha},
// PRIVATE-TOKEN.
//
// GitLab moves one status per name through a state machine, and refuses
// to move a pending status to pending (400 "Cannot transition status via
// :enqueue from :pending"). A start sent again after a try whose answer
// was lost finds its own status pending: what it asked for holds, so
// that refusal of a start is taken as delivered.
func sendGitLab(ctx context.Context, c *http.Client, d *Delivery, secret func(string) (string, error)) error {
	token, err := secret(d.Target.TokenEnv)
	if err != nil {
		return err
	}
	// One segment: its slashes encoded.
	project := url.PathEscape(strings.Trim(d.Target.Project, "/"))
	endpoint := strings.TrimRight(d.Target.URL, "/") + "/api/v4/projects/" + project + "/statuses/" + url.PathEscape(d.Report.Commit)
	_, err = postJSON(ctx, c, http.MethodPost, endpoint, map[string]string{"PRIVATE-TOKEN": token},
		gitlabBody{State: gitlabState(d), Name: Context(d.Report.Pipeline), TargetURL: d.Link, Description: description(d)})
	var he *HTTPError
	if d.Event == buildset.ReportStart && errors.As(err, &he) && he.Status == http.StatusBadRequest &&
		strings.Contains(he.Body, "Cannot transition status via :enqueue from :pending") {
		return nil
	}
	return err
}
