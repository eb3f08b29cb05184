package buildset

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/sortie-ci/sortie/internal/config"
	"github.com/sortie-ci/sortie/internal/store"
)

// ReportEvent is an event of a buildset that its pipeline's reporters
// hear of.
type ReportEvent string

const (
	// ReportStart: the buildset starts running (it holds its pipeline
	// semaphore; its first build is about to start).
	ReportStart ReportEvent = "start"
	// ReportSuccess: it ended SUCCESS.
	ReportSuccess ReportEvent = "success"
	// ReportFailure: it ended FAILURE, ERROR or CONFIG_ERROR.
	ReportFailure ReportEvent = "failure"
	// ReportCancel: it ended CANCELED.
	ReportCancel ReportEvent = "cancel"
)

// EventOf is the event of a buildset that ended with result; false for a
// result that reports nothing (SKIPPED: nothing was deployed).
func EventOf(result store.Result) (ReportEvent, bool) {
	switch result {
	case store.Success:
		return ReportSuccess, true
	case store.Failure, store.Error, store.ConfigError:
		return ReportFailure, true
	case store.Canceled:
		return ReportCancel, true
	}
	return "", false
}

// ReporterSpec is a reporter as frozen into a buildset's spec and into each
// of its deliveries (store.ReportDelivery.Target): how to reach it, never
// a secret, only the names of the variables that hold them.
type ReporterSpec struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	URL        string `json:"url,omitempty"`
	Repository string `json:"repository,omitempty"`
	Project    string `json:"project,omitempty"`
	Homeserver string `json:"homeserver,omitempty"`
	Room       string `json:"room,omitempty"`
	TokenEnv   string `json:"token_env,omitempty"`
	URLEnv     string `json:"url_env,omitempty"`
	SecretEnv  string `json:"secret_env,omitempty"`
	// PublicURL is server.public_url: the base of the link to the
	// buildset's page; "" for no link.
	PublicURL string `json:"public_url,omitempty"`
}

// freezeReports takes the reporters of each event of a pipeline from cfg.
func freezeReports(cfg *config.Config, pl *config.Pipeline) map[ReportEvent][]ReporterSpec {
	out := map[ReportEvent][]ReporterSpec{}
	for ev, refs := range map[ReportEvent][]config.Ref{
		ReportStart: pl.Report.Start, ReportSuccess: pl.Report.Success, ReportFailure: pl.Report.Failure, ReportCancel: pl.Report.Cancel,
	} {
		for _, ref := range refs {
			r := cfg.Reporters[ref.Name]
			if r == nil {
				continue // refused at load
			}
			out[ev] = append(out[ev], ReporterSpec{
				Name: r.Name, Type: string(r.Type), URL: r.URL, Repository: r.Repository, Project: r.Project,
				Homeserver: r.Homeserver, Room: r.Room, TokenEnv: r.TokenEnv, URLEnv: r.URLEnv, SecretEnv: r.SecretEnv,
				PublicURL: cfg.Server.PublicURL,
			})
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Deliveries are the report deliveries of event ev of a buildset with this
// spec, to record at at with the state change that causes it: one per
// reporter of the event, each with an id of its own.
func (s *Spec) Deliveries(ev ReportEvent, at time.Time) ([]store.NewReportDelivery, error) {
	var out []store.NewReportDelivery
	for _, r := range s.Reports[ev] {
		id, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("report %s to %s: %w", ev, r.Name, err)
		}
		target, err := json.Marshal(r)
		if err != nil {
			return nil, fmt.Errorf("report %s to %s: %w", ev, r.Name, err)
		}
		out = append(out, store.NewReportDelivery{ID: id.String(), Reporter: r.Name, Event: string(ev), Target: target, At: at})
	}
	return out, nil
}

// endReports are the deliveries of a buildset's end as p says it ends,
// from the spec frozen into it; none for a result that reports nothing
// (SKIPPED) or a buildset without a spec.
func (r *Runner) endReports(ctx context.Context, p store.EndBuildsetParams) ([]store.NewReportDelivery, error) {
	if _, ok := EventOf(p.Result); !ok {
		return nil, nil // not worth reading the buildset
	}
	bs, err := r.Store.GetBuildset(ctx, p.ID)
	if err != nil {
		return nil, err
	}
	if len(bs.Spec) == 0 || bs.State == store.BuildsetDone {
		return nil, nil
	}
	spec, err := SpecOf(bs)
	if err != nil {
		return nil, err
	}
	if p.At.IsZero() {
		p.At = r.now()
	}
	return endDeliveries(spec, p)
}

// endDeliveries are the deliveries of a buildset's end as p says it ends,
// from its spec, never nil (End reads the spec for nil Reports); none for a
// result that reports nothing. p.At is set.
func endDeliveries(spec *Spec, p store.EndBuildsetParams) ([]store.NewReportDelivery, error) {
	ev, ok := EventOf(p.Result)
	if !ok {
		return []store.NewReportDelivery{}, nil
	}
	out, err := spec.Deliveries(ev, p.At)
	if out == nil && err == nil {
		out = []store.NewReportDelivery{}
	}
	return out, err
}
