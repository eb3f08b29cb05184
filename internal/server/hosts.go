package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/store"
)

// BuildHostsJSON is what Ansible reported of one build
// (GET /api/v1/buildsets/{id}/builds/{job}/hosts): the recaps, and each
// task's result per host, in the order they came. A build that reported
// nothing has attempt 0 and empty lists.
type BuildHostsJSON struct {
	Buildset string `json:"buildset"`
	Check    bool   `json:"check"`
	Limit    string `json:"limit"`
	buildset.HostsBuild
	Hosts []buildset.HostRow `json:"hosts"`
	Tasks []HostResult       `json:"tasks"`
}

// HostResult is one task's result on one host.
type HostResult struct {
	// Task numbers the task in the order of its first result.
	Task       int    `json:"task"`
	Name       string `json:"name"`
	Play       string `json:"play"`
	Host       string `json:"host"`
	Status     string `json:"status"`
	Ignored    bool   `json:"ignored,omitempty"`
	DurationMS int64  `json:"duration_ms"`
	Message    string `json:"message"`
	Diff       string `json:"diff,omitempty"`
}

// BuildsetHosts is what Ansible reported of a buildset (GET
// /api/v1/buildsets/{id}/hosts).
func (s *Server) BuildsetHosts(ctx context.Context, id string) (*buildset.Hosts, error) {
	h, err := buildset.MakeHosts(ctx, s.reads, id)
	if err != nil {
		return nil, noBuildset(err, id)
	}
	return h, nil
}

// BuildHosts is what Ansible reported of one build (GET
// /api/v1/buildsets/{id}/builds/{job}/hosts).
func (s *Server) BuildHosts(ctx context.Context, id, job string) (*BuildHostsJSON, error) {
	bs, err := s.reads.GetBuildsetLight(ctx, id)
	if err != nil {
		return nil, noBuildset(err, id)
	}
	b, err := s.reads.BuildHosts(ctx, id, job)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, notFound(fmt.Sprintf("buildset %s has no build of %s", id, job))
		}
		return nil, err
	}
	mode := buildset.ModeOf(bs)
	out := &BuildHostsJSON{Buildset: id, Check: mode.Check, Limit: mode.Limit, HostsBuild: buildset.HostsBuildOf(job, b.Summary),
		Hosts: []buildset.HostRow{}, Tasks: []HostResult{}}
	for _, r := range b.Recaps {
		out.Hosts = append(out.Hosts, buildset.HostRow{Host: r.Host, Jobs: map[string]store.HostCounts{job: r.HostCounts}})
	}
	tasks := map[int]store.HostTask{}
	for _, t := range b.Tasks {
		tasks[t.Index] = t
	}
	for _, r := range b.Results {
		t := tasks[r.Task]
		out.Tasks = append(out.Tasks, HostResult{Task: r.Task, Name: t.Name, Play: t.Play, Host: r.Host, Status: string(r.Status),
			Ignored: r.Ignored, DurationMS: r.Duration.Milliseconds(), Message: r.Message, Diff: r.Diff})
	}
	return out, nil
}

func (s *Server) getBuildsetHosts(w http.ResponseWriter, r *http.Request) {
	h, err := s.BuildsetHosts(r.Context(), r.PathValue("id"))
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) getBuildHosts(w http.ResponseWriter, r *http.Request) {
	h, err := s.BuildHosts(r.Context(), r.PathValue("id"), r.PathValue("job"))
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

// checkMode refuses a check mode or limit asked of a trigger where it
// cannot be kept apart (buildset.Mode.Allowed).
func (s *Server) checkMode(pipeline string, m buildset.Mode) error {
	return m.Allowed(pipeline, s.Config().Pipelines[pipeline])
}
