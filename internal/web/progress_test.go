package web

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/graph"
)

// TestProgressOf: the time a running buildset still needs is the longest
// path of expected durations from a job not finished, less what a running
// job has run; a job without an expected duration leaves no estimate.
func TestProgressOf(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := t0.Add(d); return &x }
	plan := &graph.Plan{Jobs: []graph.Job{
		{Name: "boot"},
		{Name: "a", Dependencies: []string{"boot"}},
		{Name: "b", Dependencies: []string{"a"}},
		{Name: "c", Dependencies: []string{"boot"}},
	}}
	rep := &buildset.Report{ID: "bs", Builds: []buildset.BuildReport{
		{Job: "boot", Result: "SUCCESS", Attempt: 1, StartedAt: buildset.TimeOf(at(0)), FinishedAt: buildset.TimeOf(at(time.Second))},
		{Job: "a", Attempt: 1, StartedAt: buildset.TimeOf(at(time.Second))},
		{Job: "c", Attempt: 1, StartedAt: buildset.TimeOf(at(time.Second))},
	}}
	exp := map[string]expected{
		"boot": {d: time.Second}, "a": {d: 10 * time.Second}, "b": {d: 5 * time.Second}, "c": {d: 2 * time.Second, fromHint: true},
	}
	now := t0.Add(5 * time.Second) // a and c have run 4s
	jobs, eta := progressOf(rep, plan, exp, now)
	// a: 6s left, then b 5s: 11s; c: over by 2s.
	if !eta.Known || eta.Left != "11s" || !eta.Until.Equal(now.Add(11*time.Second)) || !eta.Overdue {
		t.Errorf("eta %+v, want 11s left, overdue (c)", eta)
	}
	var got []string
	for _, j := range jobs {
		got = append(got, fmt.Sprintf("%s %s %s/%s over=%v", j.Name, j.State, j.Elapsed, j.Expected, j.Over))
	}
	want := []string{"boot SUCCESS /1.0s over=false", "a RUNNING 4.0s/10s over=false", "b WAITING /5.0s over=false", "c RUNNING 4.0s/2.0s over=true"}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("jobs:\n got %q\nwant %q", got, want)
	}
	delete(exp, "b")
	if _, eta := progressOf(rep, plan, exp, now); eta.Known || eta.Missing != "b" {
		t.Errorf("without b's duration: %+v, want no estimate naming b", eta)
	}
}

func TestShownJobs(t *testing.T) {
	var jobs []jobView
	for i := range 100 {
		st := "SUCCESS"
		switch {
		case i%10 == 0:
			st = stateRunning
		case i == 5:
			st = "FAILURE"
		case i > 80:
			st = stateWaiting
		}
		jobs = append(jobs, jobView{Name: fmt.Sprint(i), State: st})
	}
	shown, rest := shownJobs(jobs)
	if len(shown) != 11 || rest != "and 89 more jobs: 71 SUCCESS, 18 WAITING" {
		t.Errorf("shown %d, rest %q", len(shown), rest)
	}
	if shown, rest := shownJobs(jobs[:maxJobsShown]); len(shown) != maxJobsShown || rest != "" {
		t.Errorf("few jobs: shown %d, rest %q", len(shown), rest)
	}
}
