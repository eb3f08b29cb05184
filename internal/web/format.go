package web

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/graph"
)

func shortCommit(c string) string {
	if len(c) > 10 {
		return c[:10]
	}
	return c
}

// fmtDuration is a duration as people read it: 450ms, 12.3s, 4m05s, 2h03m.
func fmtDuration(d time.Duration) string {
	switch {
	case d < 0:
		return "0s"
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fs", d.Seconds())
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	default:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
}

// fmtTime is a time in UTC, to the second.
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return ""
	}
	return fmtTime(*t)
}

// isoMilli is a time in UTC to the millisecond, for the scripts that
// count a running duration on from it.
func isoMilli(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

func isoTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// stateClass is the CSS class of a state or result: "state-success"...
func stateClass(s string) string {
	if s == "" {
		s = "waiting"
	}
	return "state-" + strings.ToLower(strings.ReplaceAll(s, "_", "-"))
}

// reasonText explains why a job was not selected.
func reasonText(reason string) string {
	switch reason {
	case graph.NotFiles:
		return "no changed file matches its files"
	case graph.NotIrrelevantFiles:
		return "every changed file matches its irrelevant_files"
	case "succeeded":
		return "it succeeded in the buildset this one re-runs"
	}
	return reason
}

// whyText explains why a job was selected: the plan's detail, or for a
// plan frozen before details existed, its why in words.
func whyText(j graph.Job) string {
	if j.Detail != "" {
		return j.Detail
	}
	switch j.Why {
	case graph.WhyBootstrap:
		return "the bootstrap job"
	case graph.WhyFiles:
		return "a changed file matches its files"
	case graph.WhyAll:
		return "no file list, or no file matchers"
	}
	return j.Why
}

func pathEscape(s string) string { return url.PathEscape(s) }

// span is the time between two times; to nil means until now.
func span(from, to *time.Time, now time.Time) (time.Duration, bool) {
	if from == nil {
		return 0, false
	}
	end := now
	if to != nil {
		end = *to
	}
	return end.Sub(*from), true
}

// holderParts is a semaphore holder's id: "<buildset>/<job>" for a build,
// "<buildset>" for a buildset's pipeline semaphore.
type holderParts struct{ Buildset, Job, Short string }

func splitHolder(holder string) holderParts {
	bs, job, _ := strings.Cut(holder, "/")
	return holderParts{Buildset: bs, Job: job, Short: shortID(bs)}
}

// shortID is the end of a buildset id: UUIDv7s begin with the time, so
// ids made close together share their start.
func shortID(id string) string {
	if len(id) > 8 {
		return id[len(id)-8:]
	}
	return id
}
