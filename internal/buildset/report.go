package buildset

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	"github.com/sortie-ci/sortie/internal/graph"
	"github.com/sortie-ci/sortie/internal/store"
)

// Report is a buildset as SPEC §3 shows it (`run --report`, the API's
// buildset resource).
type Report struct {
	ID         string `json:"id"`
	Pipeline   string `json:"pipeline"`
	Commit     string `json:"commit"`
	Result     string `json:"result"`
	Error      string `json:"error,omitempty"`
	StartedAt  Time   `json:"started_at"`
	FinishedAt Time   `json:"finished_at"`
	// Check and Limit are the buildset's mode (Mode): a check buildset
	// says so wherever it is reported.
	Check  bool          `json:"check,omitempty"`
	Limit  string        `json:"limit,omitempty"`
	Builds []BuildReport `json:"builds"`
}

// BuildReport is one build of a Report.
type BuildReport struct {
	Job        string `json:"job"`
	Result     string `json:"result"`
	Attempt    int    `json:"attempt"`
	StartedAt  Time   `json:"started_at"`
	FinishedAt Time   `json:"finished_at"`
	// Log is the latest attempt's log: its file, or, for a log kept in
	// the store, its path in a server's API (LogURL); "" if it never ran.
	Log    string `json:"log"`
	Reason string `json:"reason"`
}

// Time renders RFC 3339 with nine fraction digits in UTC, or null when
// unset (a build that never started).
type Time struct{ t *time.Time }

// TimeLayout is RFC 3339 with nanoseconds, never trimmed.
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// MarshalJSON implements json.Marshaler. The time's text has nothing to
// escape (digits, "-", ":", "T", ".", "Z"), so it is quoted as it is,
// without the encoder's reflection per time: a thousand builds' report has
// two thousand of them.
func (t Time) MarshalJSON() ([]byte, error) {
	if t.t == nil {
		return []byte("null"), nil
	}
	b := make([]byte, 0, len(TimeLayout)+2)
	b = append(b, '"')
	b = t.t.UTC().AppendFormat(b, TimeLayout)
	return append(b, '"'), nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (t *Time) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		t.t = nil
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	t.t = &v
	return nil
}

// Get returns the time, or nil.
func (t Time) Get() *time.Time { return t.t }

// ReportSource is what MakeReport reads a buildset from.
type ReportSource interface {
	// GetBuildsetLight: a report shows nothing of the plan, and of the
	// spec only the mode.
	GetBuildsetLight(ctx context.Context, id string) (*store.Buildset, error)
	Builds(ctx context.Context, buildsetID string) ([]*store.Build, error)
}

// MakeReport reads a buildset and its builds, in the order of its plan.
func MakeReport(ctx context.Context, st ReportSource, id string) (*Report, error) {
	bs, err := st.GetBuildsetLight(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", id, err)
	}
	builds, err := st.Builds(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("report %s: %w", id, err)
	}
	mode := ModeOf(bs)
	r := &Report{
		ID: bs.ID, Pipeline: bs.Pipeline, Commit: bs.Commit, Result: string(bs.Result), Error: bs.Error,
		StartedAt: Time{bs.StartedAt}, FinishedAt: Time{bs.FinishedAt}, Check: mode.Check, Limit: mode.Limit, Builds: []BuildReport{},
	}
	if r.Result == "" {
		r.Result = string(bs.State) // QUEUED or RUNNING while it is not done
	}
	for _, b := range builds {
		log := b.Log
		if log == "" && b.Attempt > 0 {
			log = LogURL(bs.ID, b.Job, b.Attempt) // a log kept in the store
		}
		r.Builds = append(r.Builds, BuildReport{
			Job: b.Job, Result: string(b.Result), Attempt: b.Attempt,
			StartedAt: Time{b.StartedAt}, FinishedAt: Time{b.FinishedAt}, Log: log, Reason: b.Reason,
		})
	}
	return r, nil
}

// LogURL is the path of an attempt's log in a server's API: where a log
// kept in the store (logs.Chunks) is read, from any server on that store.
func LogURL(id, job string, attempt int) string {
	return fmt.Sprintf("/api/v1/buildsets/%s/builds/%s/log?attempt=%d", url.PathEscape(id), url.PathEscape(job), attempt)
}

// Plan decodes the graph frozen into a buildset.
func Plan(bs *store.Buildset) (*graph.Plan, error) {
	var p graph.Plan
	if err := json.Unmarshal(bs.Plan, &p); err != nil {
		return nil, fmt.Errorf("buildset %s: decode its plan: %w", bs.ID, err)
	}
	if len(p.Jobs) > 0 {
		p.Bootstrap = p.Jobs[0].Name
	}
	return &p, nil
}

// TimeOf wraps a time for a report; nil renders as null.
func TimeOf(t *time.Time) Time { return Time{t} }

// Spans returns when each build that ran did, by job: its start to its
// end, for graph.Plan.RunPath. Builds that never started or have not
// ended are left out.
func Spans(builds []BuildReport) map[string]graph.Span {
	spans := make(map[string]graph.Span, len(builds))
	for _, b := range builds {
		if s, e := b.StartedAt.Get(), b.FinishedAt.Get(); s != nil && e != nil {
			spans[b.Job] = graph.Span{Start: *s, End: *e}
		}
	}
	return spans
}
