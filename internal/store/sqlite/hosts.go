package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// UpdateHosts adds to a build's Ansible results; see store.Hosts.
func (s *Store) UpdateHosts(ctx context.Context, p store.HostsUpdate) error {
	if p.Summary.Attempt < 1 {
		return fmt.Errorf("sqlite: update hosts of %s/%s: attempt %d: must be at least 1", p.BuildsetID, p.Job, p.Summary.Attempt)
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if p.Fence.Owner != "" {
			if err := s.checkFence(ctx, tx, p.Fence); err != nil {
				return err
			}
		}
		var one int
		err := s.txRow(ctx, tx, `SELECT 1 FROM builds WHERE buildset_id = ? AND job = ?`, p.BuildsetID, p.Job).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		var kept int
		err = s.txRow(ctx, tx, `SELECT attempt FROM host_builds WHERE buildset_id = ? AND job = ?`, p.BuildsetID, p.Job).Scan(&kept)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		case kept > p.Summary.Attempt:
			return fmt.Errorf("results of attempt %d are kept, not %d: %w", kept, p.Summary.Attempt, store.ErrConflict)
		case kept < p.Summary.Attempt:
			// The rows of the earlier attempt go with it (ON DELETE CASCADE).
			if _, err := s.txExec(ctx, tx, `DELETE FROM host_builds WHERE buildset_id = ? AND job = ?`, p.BuildsetID, p.Job); err != nil {
				return err
			}
		}
		sm := p.Summary
		if _, err := s.txExec(ctx, tx, `
			INSERT INTO host_builds (buildset_id, job, attempt, runs, plays, dropped, note) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (buildset_id, job) DO UPDATE SET runs = excluded.runs, plays = excluded.plays,
				dropped = excluded.dropped, note = excluded.note`,
			p.BuildsetID, p.Job, sm.Attempt, sm.Runs, sm.Plays, sm.Dropped, sm.Note); err != nil {
			return err
		}
		for _, t := range p.Tasks {
			if _, err := s.txExec(ctx, tx, `
				INSERT INTO host_tasks (buildset_id, job, idx, play, name) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT DO NOTHING`, p.BuildsetID, p.Job, t.Index, t.Play, t.Name); err != nil {
				return err
			}
		}
		for _, r := range p.Results {
			if _, err := s.txExec(ctx, tx, `
				INSERT INTO host_results (buildset_id, job, seq, task, host, status, ignored, duration_ms, message, diff)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
				p.BuildsetID, p.Job, r.Seq, r.Task, r.Host, string(r.Status), r.Ignored, r.Duration.Milliseconds(), r.Message, r.Diff); err != nil {
				return err
			}
		}
		for _, r := range p.Recaps {
			c := r.HostCounts
			if _, err := s.txExec(ctx, tx, `
				INSERT INTO host_recaps (buildset_id, job, host, ok, changed, failed, unreachable, skipped, rescued, ignored)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (buildset_id, job, host) DO UPDATE SET ok = excluded.ok, changed = excluded.changed,
					failed = excluded.failed, unreachable = excluded.unreachable, skipped = excluded.skipped,
					rescued = excluded.rescued, ignored = excluded.ignored`,
				p.BuildsetID, p.Job, r.Host, c.OK, c.Changed, c.Failed, c.Unreachable, c.Skipped, c.Rescued, c.Ignored); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: update hosts of %s/%s: %w", p.BuildsetID, p.Job, err)
	}
	return nil
}

// BuildHosts returns what is kept of a build's Ansible results; see
// store.Hosts.
func (s *Store) BuildHosts(ctx context.Context, buildsetID, job string) (*store.BuildHosts, error) {
	out, err := s.buildHosts(ctx, buildsetID, job)
	if err != nil {
		return nil, fmt.Errorf("sqlite: hosts of %s/%s: %w", buildsetID, job, err)
	}
	return out, nil
}

func (s *Store) buildHosts(ctx context.Context, buildsetID, job string) (*store.BuildHosts, error) {
	out := &store.BuildHosts{Job: job}
	err := s.row(ctx, `
		SELECT b.job, COALESCE(h.attempt, 0), COALESCE(h.runs, 0), COALESCE(h.plays, 0), COALESCE(h.dropped, 0), COALESCE(h.note, '')
		FROM builds b LEFT JOIN host_builds h ON h.buildset_id = b.buildset_id AND h.job = b.job
		WHERE b.buildset_id = ? AND b.job = ?`, buildsetID, job).
		Scan(&out.Job, &out.Summary.Attempt, &out.Summary.Runs, &out.Summary.Plays, &out.Summary.Dropped, &out.Summary.Note)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if out.Summary.Attempt == 0 {
		return out, nil
	}
	if out.Recaps, err = s.recaps(ctx, `WHERE buildset_id = ? AND job = ?`, buildsetID, job); err != nil {
		return nil, err
	}
	rows, err := s.rows(ctx, `SELECT idx, play, name FROM host_tasks WHERE buildset_id = ? AND job = ? ORDER BY idx`, buildsetID, job)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var t store.HostTask
		if err := rows.Scan(&t.Index, &t.Play, &t.Name); err != nil {
			rows.Close()
			return nil, err
		}
		out.Tasks = append(out.Tasks, t)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	rows, err = s.rows(ctx, `
		SELECT seq, task, host, status, ignored, duration_ms, message, diff
		FROM host_results WHERE buildset_id = ? AND job = ? ORDER BY seq`, buildsetID, job)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			r      store.HostResult
			status string
			ms     int64
		)
		if err := rows.Scan(&r.Seq, &r.Task, &r.Host, &status, &r.Ignored, &ms, &r.Message, &r.Diff); err != nil {
			return nil, err
		}
		r.Status, r.Duration = store.HostStatus(status), time.Duration(ms)*time.Millisecond
		out.Results = append(out.Results, r)
	}
	return out, rows.Err()
}

// recaps reads host_recaps rows by job then host, given a WHERE clause.
func (s *Store) recaps(ctx context.Context, where string, args ...any) ([]store.HostRecap, error) {
	rows, err := s.rows(ctx, `
		SELECT host, ok, changed, failed, unreachable, skipped, rescued, ignored
		FROM host_recaps `+where+` ORDER BY host`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.HostRecap
	for rows.Next() {
		var r store.HostRecap
		c := &r.HostCounts
		if err := rows.Scan(&r.Host, &c.OK, &c.Changed, &c.Failed, &c.Unreachable, &c.Skipped, &c.Rescued, &c.Ignored); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// BuildsetHosts returns the summary and recaps of every build of a buildset
// that recorded Ansible results; see store.Hosts.
func (s *Store) BuildsetHosts(ctx context.Context, buildsetID string) ([]*store.BuildHosts, error) {
	out, err := s.buildsetHosts(ctx, buildsetID)
	if err != nil {
		return nil, fmt.Errorf("sqlite: hosts of %s: %w", buildsetID, err)
	}
	return out, nil
}

func (s *Store) buildsetHosts(ctx context.Context, buildsetID string) ([]*store.BuildHosts, error) {
	if err := s.buildsetExists(ctx, buildsetID); err != nil {
		return nil, err
	}
	rows, err := s.rows(ctx, `
		SELECT h.job, h.attempt, h.runs, h.plays, h.dropped, h.note
		FROM host_builds h JOIN builds b ON b.buildset_id = h.buildset_id AND b.job = h.job
		WHERE h.buildset_id = ? ORDER BY b.seq`, buildsetID)
	if err != nil {
		return nil, err
	}
	var out []*store.BuildHosts
	byJob := map[string]*store.BuildHosts{}
	for rows.Next() {
		b := &store.BuildHosts{}
		sm := &b.Summary
		if err := rows.Scan(&b.Job, &sm.Attempt, &sm.Runs, &sm.Plays, &sm.Dropped, &sm.Note); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, b)
		byJob[b.Job] = b
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	rows, err = s.rows(ctx, `
		SELECT job, host, ok, changed, failed, unreachable, skipped, rescued, ignored
		FROM host_recaps WHERE buildset_id = ? ORDER BY host, job`, buildsetID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var (
			job string
			r   store.HostRecap
		)
		c := &r.HostCounts
		if err := rows.Scan(&job, &r.Host, &c.OK, &c.Changed, &c.Failed, &c.Unreachable, &c.Skipped, &c.Rescued, &c.Ignored); err != nil {
			return nil, err
		}
		if b := byJob[job]; b != nil {
			b.Recaps = append(b.Recaps, r)
		}
	}
	return out, rows.Err()
}
