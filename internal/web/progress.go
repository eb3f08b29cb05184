package web

import (
	"fmt"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/graph"
)

// The status page shows a running buildset as Zuul's status page shows a
// change: its jobs with their states, a progress bar for each running job
// against the job's expected duration, and the time the buildset still
// needs.

// expected is a job's expected duration: the median of its recent
// successful runs (store.JobDurations), else its duration_hint.
type expected struct {
	d        time.Duration
	fromHint bool
}

// expectations weighs the plan's jobs by history, else by hint; jobs with
// neither are left out.
func expectations(plan *graph.Plan, cfg *config.Config, medians map[string]time.Duration) map[string]expected {
	out := map[string]expected{}
	for _, j := range plan.Jobs {
		if d, ok := medians[j.Name]; ok {
			out[j.Name] = expected{d: d}
		} else if cj := cfg.Jobs[j.Name]; cj != nil && cj.DurationHint > 0 {
			out[j.Name] = expected{d: cj.DurationHint, fromHint: true}
		}
	}
	return out
}

// jobView is a job of a running buildset on the status page.
type jobView struct {
	Name  string
	URL   string
	State string
	// Since is the start of a running job's attempt.
	Since   time.Time
	Elapsed string
	// Expected is the job's expected duration ("" unknown), in ms for the
	// progress bar.
	Expected   string
	ExpectedMS int64
	ElapsedMS  int64
	FromHint   bool
	// Over says a running job has run past its expected duration.
	Over bool
}

// etaView is the time a running buildset still needs.
type etaView struct {
	// Known is false when a job not finished has no expected duration.
	Known bool
	// Left is the longest remaining path, Until when it ends.
	Left  string
	Until time.Time
	// Missing names a job without history or hint, when not Known.
	Missing string
	// Overdue: jobs still run past their expected durations.
	Overdue bool
	// Now: nothing is left by the estimate, yet jobs still run.
	Now bool
}

// progressOf lays out a running buildset's jobs for the status page, in
// plan order, and estimates the time it still needs: the longest path of
// expected durations from a job not finished, less what a running one has
// already run (as `sortie run`'s live line does).
func progressOf(bs *buildset.Report, plan *graph.Plan, exp map[string]expected, now time.Time) ([]jobView, etaView) {
	builds := map[string]*buildset.BuildReport{}
	for i := range bs.Builds {
		builds[bs.Builds[i].Job] = &bs.Builds[i]
	}
	var jobs []jobView
	for _, j := range plan.Jobs {
		b := builds[j.Name]
		v := jobView{Name: j.Name, URL: buildURL(bs.ID, j.Name), State: buildState(b)}
		e, known := exp[j.Name]
		if known {
			v.Expected, v.ExpectedMS, v.FromHint = fmtDuration(e.d), e.d.Milliseconds(), e.fromHint
		}
		if v.State == stateRunning && b != nil {
			if s := b.StartedAt.Get(); s != nil {
				v.Since = *s
				el := now.Sub(*s)
				v.Elapsed, v.ElapsedMS = fmtDuration(el), el.Milliseconds()
				v.Over = known && el > e.d
			}
		}
		jobs = append(jobs, v)
	}

	eta := etaView{Known: true}
	weight := func(job string) time.Duration { return exp[job].d }
	rem := plan.Remaining(weight)
	var most time.Duration
	for _, v := range jobs {
		b := builds[v.Name]
		if b != nil && b.Result != "" {
			continue // finished
		}
		if _, ok := exp[v.Name]; !ok {
			eta = etaView{Missing: v.Name}
			return jobs, eta
		}
		left := rem[v.Name]
		if !v.Since.IsZero() {
			own := weight(v.Name)
			ran := now.Sub(v.Since)
			if ran > own {
				eta.Overdue = true
			}
			left = max(own-ran, 0) + (rem[v.Name] - own)
		}
		most = max(most, left)
	}
	eta.Left, eta.Until, eta.Now = fmtDuration(most), now.Add(most), most <= 0
	return jobs, eta
}

// maxJobsShown is how many jobs of one buildset the status page lists;
// a bigger one lists its running and failed jobs, and counts the others.
const maxJobsShown = 40

// shownJobs keeps the jobs the status page lists: all of them when they
// are few, else the running and the failed ones (at most maxJobsShown),
// and says how many of the others are in each state.
func shownJobs(jobs []jobView) (shown []jobView, rest string) {
	if len(jobs) <= maxJobsShown {
		return jobs, ""
	}
	counts := map[string]int{}
	var order []string
	for _, j := range jobs {
		if (j.State == stateRunning || failed(j.State)) && len(shown) < maxJobsShown {
			shown = append(shown, j)
			continue
		}
		if counts[j.State] == 0 {
			order = append(order, j.State)
		}
		counts[j.State]++
	}
	parts := make([]string, len(order))
	for i, st := range order {
		parts[i] = fmt.Sprintf("%d %s", counts[st], st)
	}
	return shown, fmt.Sprintf("and %d more jobs: %s", len(jobs)-len(shown), strings.Join(parts, ", "))
}

// progressLabel names a running job's progress bar.
func (v jobView) ProgressLabel() string {
	s := fmt.Sprintf("%s: running for %s", v.Name, v.Elapsed)
	if v.Expected != "" {
		s += fmt.Sprintf(" of about %s", v.Expected)
	}
	return s
}
