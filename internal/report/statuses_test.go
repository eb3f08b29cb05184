package report_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/report"
	"github.com/sortie-ci/sortie/internal/store"
)

const (
	commitA = "1111111111111111111111111111111111111111"
	commitB = "2222222222222222222222222222222222222222"
	commitC = "3333333333333333333333333333333333333333"
	commitD = "4444444444444444444444444444444444444444"
)

// TestForgeStatuses: the states a commit goes through on each forge, for
// a buildset that succeeds, one that fails, and one Sortie could not run:
// pending at the start, then the result, under the pipeline's context,
// with a one-line description and the buildset's page as the link.
func TestForgeStatuses(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		kind                     string
		newForge                 func(t *testing.T) *forge
		target                   func(url string) buildset.ReporterSpec
		success, failure, erred  []string
		cancelled                []string
		successDesc, failureDesc string
	}{
		{
			kind:     "github",
			newForge: func(t *testing.T) *forge { return newGitHub(t, "org/repo", "gh-secret") },
			target: func(u string) buildset.ReporterSpec {
				return buildset.ReporterSpec{Name: "gh", Type: "github", URL: u, Repository: "org/repo", TokenEnv: "GH_TOKEN"}
			},
			success: []string{"pending", "success"}, failure: []string{"pending", "failure"}, erred: []string{"pending", "error"},
			cancelled: []string{"pending", "error"},
		},
		{
			kind:     "gitea",
			newForge: func(t *testing.T) *forge { return newGitea(t, "org/repo", "gh-secret") },
			target: func(u string) buildset.ReporterSpec {
				return buildset.ReporterSpec{Name: "gitea", Type: "gitea", URL: u + "/", Repository: "org/repo", TokenEnv: "GH_TOKEN"}
			},
			success: []string{"pending", "success"}, failure: []string{"pending", "failure"}, erred: []string{"pending", "error"},
			cancelled: []string{"pending", "error"},
		},
		{
			kind:     "gitlab",
			newForge: func(t *testing.T) *forge { return newGitLab(t, "group/sub/repo", "gh-secret") },
			target: func(u string) buildset.ReporterSpec {
				return buildset.ReporterSpec{Name: "gitlab", Type: "gitlab", URL: u, Project: "group/sub/repo", TokenEnv: "GH_TOKEN"}
			},
			success: []string{"pending", "success"}, failure: []string{"pending", "failed"}, erred: []string{"pending", "failed"},
			cancelled: []string{"pending", "canceled"},
		},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			t.Parallel()
			f := tc.newForge(t)
			h := newHarness(t, map[string]string{"GH_TOKEN": "gh-secret"})
			target := tc.target(f.URL())
			run := func(id, commit string, result store.Result, jobs map[string]store.Result) {
				t.Helper()
				spec := h.buildset(id, commit, all(target))
				h.start(id, spec)
				if tr := h.next(); tr.Outcome != report.Delivered {
					t.Fatalf("%s start: %+v", id, tr)
				}
				h.finish(id, result, jobs)
				if tr := h.next(); tr.Outcome != report.Delivered {
					t.Fatalf("%s end: %+v", id, tr)
				}
			}
			run("bs-ok", commitA, store.Success, map[string]store.Result{"boot": store.Success, "base": store.Success})
			run("bs-failed", commitB, store.Failure, map[string]store.Result{"boot": store.Success, "base": store.Failure})
			run("bs-error", commitC, store.Error, map[string]store.Result{"boot": store.Success})
			run("bs-cancelled", commitD, store.Canceled, map[string]store.Result{"boot": store.Success})

			for _, c := range []struct {
				commit string
				want   []string
				desc   string
				id     string
			}{
				{commitA, tc.success, "succeeded in 1m0s", "bs-ok"},
				{commitB, tc.failure, "failed: base (1m0s)", "bs-failed"},
				{commitC, tc.erred, "failed in 30s", "bs-error"},
				{commitD, tc.cancelled, "cancelled", "bs-cancelled"},
			} {
				if diff := cmp.Diff(c.want, f.states(c.commit)); diff != "" {
					t.Errorf("states of %s (-want +got):\n%s", c.id, diff)
				}
				last := f.last(c.commit)
				if last.Context != "sortie/deploy" || last.Description != c.desc || last.TargetURL != publicURL+"/buildsets/"+c.id {
					t.Errorf("last status of %s: %+v; want context sortie/deploy, description %q, its page", c.id, last, c.desc)
				}
			}
			if first := f.got()[0]; strings.Contains(first.path, "//") {
				t.Errorf("path %s has an empty segment", first.path)
			}
		})
	}
}

// TestGitLabStartSentAgain: a start whose answer was lost is sent again;
// GitLab refuses to move the pending status it made to pending, which
// says the start holds: delivered. The end then moves that status on.
func TestGitLabStartSentAgain(t *testing.T) {
	t.Parallel()
	f := newGitLab(t, "group/repo", "tok")
	h := newHarness(t, map[string]string{"GL": "tok"})
	spec := h.buildset("bs", commitA, all(buildset.ReporterSpec{Name: "gl", Type: "gitlab", URL: f.URL(), Project: "group/repo", TokenEnv: "GL"}))
	f.failNext(failure{status: 502, body: "Bad Gateway", thenAccept: true})
	h.start("bs", spec)
	if tr := h.next(); tr.Outcome != report.Retry || !strings.Contains(tr.Error, "502") {
		t.Fatalf("first try: %+v; want a retry after a 502", tr)
	}
	h.advance(10 * time.Second) // Backoff.Base
	if tr := h.next(); tr.Outcome != report.Delivered {
		t.Fatalf("second try: %+v; want delivered", tr)
	}
	h.finish("bs", store.Success, map[string]store.Result{"boot": store.Success, "base": store.Success})
	if tr := h.next(); tr.Outcome != report.Delivered {
		t.Fatalf("end: %+v", tr)
	}
	if diff := cmp.Diff([]string{"pending", "success"}, f.states(commitA)); diff != "" {
		t.Errorf("states (-want +got):\n%s", diff)
	}
}
