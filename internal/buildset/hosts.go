package buildset

import (
	"context"
	"fmt"
	"slices"

	"github.com/sortie-ci/sortie/internal/store"
)

// Hosts is what Ansible reported of a buildset, per host and job (the
// API's GET /api/v1/buildsets/{id}/hosts, `sortie run`'s summary): each
// host's recap counts in each job that reported it.
type Hosts struct {
	Buildset string `json:"buildset"`
	// Check and Limit are the buildset's Mode.
	Check bool   `json:"check"`
	Limit string `json:"limit"`
	// Hosts by name, in byte order.
	Hosts []HostRow `json:"hosts"`
	// Builds are the builds that reported, in build order, and how.
	Builds []HostsBuild `json:"builds"`
}

// HostRow is one host's recap counts by job.
type HostRow struct {
	Host string                      `json:"host"`
	Jobs map[string]store.HostCounts `json:"jobs"`
}

// HostsBuild is how a build reported: the attempt the results are of, the
// ansible-playbook runs and plays, the results not kept (the bounds of
// internal/ansible), and what went wrong reading them.
type HostsBuild struct {
	Job     string `json:"job"`
	Attempt int    `json:"attempt"`
	Runs    int    `json:"runs"`
	Plays   int    `json:"plays"`
	Dropped int    `json:"dropped"`
	Note    string `json:"note"`
}

// HostsBuildOf is a build's HostsBuild.
func HostsBuildOf(job string, s store.HostsSummary) HostsBuild {
	return HostsBuild{Job: job, Attempt: s.Attempt, Runs: s.Runs, Plays: s.Plays, Dropped: s.Dropped, Note: s.Note}
}

// HostsSource is what MakeHosts reads a buildset from.
type HostsSource interface {
	GetBuildsetLight(ctx context.Context, id string) (*store.Buildset, error)
	BuildsetHosts(ctx context.Context, buildsetID string) ([]*store.BuildHosts, error)
}

// MakeHosts reads what Ansible reported of a buildset.
func MakeHosts(ctx context.Context, st HostsSource, id string) (*Hosts, error) {
	bs, err := st.GetBuildsetLight(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("hosts of %s: %w", id, err)
	}
	builds, err := st.BuildsetHosts(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("hosts of %s: %w", id, err)
	}
	mode := ModeOf(bs)
	out := &Hosts{Buildset: id, Check: mode.Check, Limit: mode.Limit, Hosts: []HostRow{}, Builds: []HostsBuild{}}
	byHost := map[string]int{}
	var names []string
	for _, b := range builds {
		out.Builds = append(out.Builds, HostsBuildOf(b.Job, b.Summary))
		for _, r := range b.Recaps {
			if _, ok := byHost[r.Host]; !ok {
				byHost[r.Host] = -1
				names = append(names, r.Host)
			}
		}
	}
	slices.Sort(names)
	for i, h := range names {
		byHost[h] = i
		out.Hosts = append(out.Hosts, HostRow{Host: h, Jobs: map[string]store.HostCounts{}})
	}
	for _, b := range builds {
		for _, r := range b.Recaps {
			out.Hosts[byHost[r.Host]].Jobs[b.Job] = r.HostCounts
		}
	}
	return out, nil
}

// Trouble lists, for each job that reported, in build order, the hosts
// that failed and those that could not be reached: what a summary says of
// a deploy's hosts.
func (h *Hosts) Trouble() []JobTrouble {
	var out []JobTrouble
	for _, b := range h.Builds {
		t := JobTrouble{Job: b.Job}
		for _, r := range h.Hosts {
			c, ok := r.Jobs[b.Job]
			switch {
			case !ok:
			case c.Unreachable > 0:
				t.Unreachable = append(t.Unreachable, r.Host)
			case c.Failed > 0:
				t.Failed = append(t.Failed, r.Host)
			}
		}
		if len(t.Failed)+len(t.Unreachable) > 0 {
			out = append(out, t)
		}
	}
	return out
}

// JobTrouble is a job's failed and unreachable hosts, by name.
type JobTrouble struct {
	Job         string
	Failed      []string
	Unreachable []string
}
