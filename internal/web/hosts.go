package web

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/sortie-ci/sortie/internal/buildset"
	"github.com/sortie-ci/sortie/internal/server"
	"github.com/sortie-ci/sortie/internal/store"
)

// The Ansible views: a build's hosts × tasks grid and a buildset's hosts ×
// jobs matrix, from what the callback plugin reported (internal/ansible).

// hostsSource is what the Ansible views read: *server.Server implements
// it.
type hostsSource interface {
	BuildsetHosts(ctx context.Context, id string) (*buildset.Hosts, error)
	BuildHosts(ctx context.Context, id, job string) (*server.BuildHostsJSON, error)
}

// statusRank orders what a host did, worst first: a cell that holds
// several results shows the worst.
var statusRank = map[string]int{"failed": 0, "unreachable": 1, "changed": 2, "ok": 3, "ignored": 4, "skipped": 5, "": 6}

// statusLabel is a cell's text, so that a status reads without its colour.
var statusLabel = map[string]string{"failed": "F", "unreachable": "U", "changed": "C", "ok": "ok", "ignored": "i", "skipped": "–", "": ""}

func trouble(status string) bool { return status == "failed" || status == "unreachable" }

type hostCell struct {
	Status, Label, Title string
	// Href is where the cell leads: the failure's message or the diff on
	// a build's page, the build's grid on a buildset's.
	Href string
}

type hostRow struct {
	Host    string
	Cells   []hostCell
	Trouble bool
	Recap   string
}

// sortRows puts the hosts with a failed or unreachable cell first, each
// part by name.
func sortRows(rows []hostRow) {
	slices.SortStableFunc(rows, func(a, b hostRow) int {
		if a.Trouble != b.Trouble {
			if a.Trouble {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Host, b.Host)
	})
}

func recapText(c store.HostCounts) string {
	return fmt.Sprintf("ok=%d changed=%d unreachable=%d failed=%d skipped=%d rescued=%d ignored=%d",
		c.OK, c.Changed, c.Unreachable, c.Failed, c.Skipped, c.Rescued, c.Ignored)
}

// hostsMatrix is a buildset's hosts × jobs matrix.
type hostsMatrix struct {
	Live  bool
	Mode  string
	Jobs  []jobColumn
	Rows  []hostRow
	Notes []string
	// Failed and Unreachable count the hosts with such a cell.
	Hosts, Failed, Unreachable int
}

// jobColumn is a job of the matrix, and its build's page.
type jobColumn struct{ Name, URL string }

// matrix reads a buildset's matrix: nil when no build reported hosts.
func (h *Handler) matrix(ctx context.Context, bs *server.BuildsetJSON, done bool) (*hostsMatrix, error) {
	src, ok := h.src.(hostsSource)
	if !ok {
		return nil, nil
	}
	hosts, err := src.BuildsetHosts(ctx, bs.ID)
	if err != nil {
		return nil, err
	}
	if len(hosts.Builds) == 0 {
		return nil, nil
	}
	m := &hostsMatrix{Live: !done, Mode: (buildset.Mode{Check: hosts.Check, Limit: hosts.Limit}).String(), Hosts: len(hosts.Hosts)}
	reported := map[string]bool{}
	for _, b := range hosts.Builds {
		reported[b.Job] = true
		if b.Note != "" {
			m.Notes = append(m.Notes, b.Job+": "+b.Note)
		}
	}
	// The jobs in the buildset's order: those that reported, and those
	// that may yet.
	for _, b := range bs.Builds {
		if reported[b.Job] || (b.Result == "" && !done) {
			m.Jobs = append(m.Jobs, jobColumn{Name: b.Job, URL: buildURL(bs.ID, b.Job) + "#hosts"})
		}
	}
	for _, r := range hosts.Hosts {
		row := hostRow{Host: r.Host}
		for _, col := range m.Jobs {
			job := col.Name
			c, ok := r.Jobs[job]
			cell := hostCell{Status: "none", Label: "·", Title: r.Host + " in " + job + ": not run"}
			if ok {
				cell.Status = "ok"
				switch {
				case c.Unreachable > 0:
					cell.Status = "unreachable"
				case c.Failed > 0:
					cell.Status = "failed"
				case c.Changed > 0:
					cell.Status = "changed"
				}
				cell.Label = statusLabel[cell.Status]
				cell.Title = r.Host + " in " + job + ": " + cell.Status + " (" + recapText(c) + ")"
				cell.Href = buildURL(bs.ID, job) + "?" + url.Values{"host": {r.Host}}.Encode() + "#hosts"
			}
			row.Trouble = row.Trouble || trouble(cell.Status)
			switch cell.Status {
			case "failed":
				row.Recap = "failed"
			case "unreachable":
				if row.Recap == "" {
					row.Recap = "unreachable"
				}
			}
			row.Cells = append(row.Cells, cell)
		}
		if row.Trouble {
			if row.Recap == "failed" {
				m.Failed++
			} else {
				m.Unreachable++
			}
		}
		m.Rows = append(m.Rows, row)
	}
	sortRows(m.Rows)
	return m, nil
}

// hostsGrid is a build's hosts × tasks grid.
type hostsGrid struct {
	Live   bool
	Mode   string
	Filter string
	buildset.HostsBuild
	Tasks   []server.HostResult // one per column: its task's number, name and play
	Rows    []hostRow
	Details []hostDetail
}

// hostDetail is a failure's message or a change's diff, the target of its
// cell.
type hostDetail struct {
	ID, Host, Task, Play, Status, Message, Diff string
}

// grid reads a build's grid: nil when it reported no hosts.
func (h *Handler) grid(ctx context.Context, id, job, filter string, done bool) (*hostsGrid, error) {
	src, ok := h.src.(hostsSource)
	if !ok {
		return nil, nil
	}
	b, err := src.BuildHosts(ctx, id, job)
	if err != nil {
		return nil, err
	}
	if b.Attempt == 0 {
		return nil, nil
	}
	g := &hostsGrid{Live: !done, Mode: (buildset.Mode{Check: b.Check, Limit: b.Limit}).String(), Filter: filter, HostsBuild: b.HostsBuild}
	column := map[int]int{}
	for _, r := range b.Tasks {
		if _, ok := column[r.Task]; !ok {
			column[r.Task] = len(g.Tasks)
			g.Tasks = append(g.Tasks, r)
		}
	}
	slices.SortFunc(g.Tasks, func(a, b server.HostResult) int { return a.Task - b.Task })
	for i, t := range g.Tasks {
		column[t.Task] = i
	}
	rows := map[string]*hostRow{}
	recaps := map[string]store.HostCounts{}
	for _, r := range b.Hosts {
		recaps[r.Host] = r.Jobs[job]
	}
	row := func(host string) *hostRow {
		if r := rows[host]; r != nil {
			return r
		}
		r := &hostRow{Host: host, Cells: make([]hostCell, len(g.Tasks)), Recap: recapText(recaps[host])}
		for i, t := range g.Tasks {
			r.Cells[i] = hostCell{Status: "none", Title: host + ": " + t.Name + ": no result"}
		}
		rows[host] = r
		return r
	}
	for _, r := range b.Hosts {
		row(r.Host)
	}
	for i, res := range b.Tasks {
		r := row(res.Host)
		status := res.Status
		if res.Ignored {
			status = "ignored"
		}
		c := &r.Cells[column[res.Task]]
		if c.Status != "none" && statusRank[c.Status] <= statusRank[status] {
			continue
		}
		*c = hostCell{Status: status, Label: statusLabel[status], Title: res.Host + ": " + res.Name + ": " + status}
		if res.Message != "" || res.Diff != "" {
			d := hostDetail{ID: fmt.Sprintf("result-%d", i), Host: res.Host, Task: res.Name, Play: res.Play, Status: status, Message: res.Message, Diff: res.Diff}
			g.Details = append(g.Details, d)
			c.Href = "#" + d.ID
			if res.Message != "" {
				c.Title += ": " + res.Message
			}
		}
		r.Trouble = r.Trouble || trouble(status)
	}
	for _, r := range rows {
		g.Rows = append(g.Rows, *r)
	}
	sortRows(g.Rows)
	// The failures first, then the diffs.
	slices.SortStableFunc(g.Details, func(a, b hostDetail) int {
		return statusRank[a.Status] - statusRank[b.Status]
	})
	return g, nil
}
