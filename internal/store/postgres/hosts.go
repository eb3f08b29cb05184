package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sortie-ci/sortie/internal/store"
)

// UpdateHosts adds to a build's Ansible results; see store.Hosts. The
// build's row is locked first (the lock order of the package doc), so
// that two writers of one build take turns.
func (s *Store) UpdateHosts(ctx context.Context, p store.HostsUpdate) error {
	if p.Summary.Attempt < 1 {
		return fmt.Errorf("postgres: update hosts of %s/%s: attempt %d: must be at least 1", p.BuildsetID, p.Job, p.Summary.Attempt)
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if p.Fence.Owner != "" {
			if err := checkFence(ctx, tx, p.Fence); err != nil {
				return err
			}
		}
		var one int
		err := tx.QueryRow(ctx, `SELECT 1 FROM builds WHERE buildset_id = $1 AND job = $2 FOR UPDATE`, p.BuildsetID, p.Job).Scan(&one)
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		var kept int
		err = tx.QueryRow(ctx, `SELECT attempt FROM host_builds WHERE buildset_id = $1 AND job = $2`, p.BuildsetID, p.Job).Scan(&kept)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		case kept > p.Summary.Attempt:
			return fmt.Errorf("results of attempt %d are kept, not %d: %w", kept, p.Summary.Attempt, store.ErrConflict)
		case kept < p.Summary.Attempt:
			// The rows of the earlier attempt go with it (ON DELETE CASCADE).
			if _, err := tx.Exec(ctx, `DELETE FROM host_builds WHERE buildset_id = $1 AND job = $2`, p.BuildsetID, p.Job); err != nil {
				return err
			}
		}
		sm := p.Summary
		if _, err := tx.Exec(ctx, `
			INSERT INTO host_builds (buildset_id, job, attempt, runs, plays, dropped, note) VALUES ($1, $2, $3, $4, $5, $6, $7)
			ON CONFLICT (buildset_id, job) DO UPDATE SET runs = excluded.runs, plays = excluded.plays,
				dropped = excluded.dropped, note = excluded.note`,
			p.BuildsetID, p.Job, sm.Attempt, sm.Runs, sm.Plays, sm.Dropped, sm.Note); err != nil {
			return err
		}
		if len(p.Tasks) > 0 {
			var (
				idx         []int32
				play, names []string
			)
			for _, t := range p.Tasks {
				idx, play, names = append(idx, int32(t.Index)), append(play, t.Play), append(names, t.Name)
			}
			if _, err := tx.Exec(ctx, `
				INSERT INTO host_tasks (buildset_id, job, idx, play, name)
				SELECT $1, $2, t.* FROM unnest($3::integer[], $4::text[], $5::text[]) AS t
				ON CONFLICT DO NOTHING`, p.BuildsetID, p.Job, idx, play, names); err != nil {
				return err
			}
		}
		if len(p.Results) > 0 {
			var (
				seq, task               []int32
				host, status, msg, diff []string
				ignored                 []bool
				ms                      []int64
			)
			for _, r := range p.Results {
				seq, task = append(seq, int32(r.Seq)), append(task, int32(r.Task))
				host, status = append(host, r.Host), append(status, string(r.Status))
				ignored, ms = append(ignored, r.Ignored), append(ms, r.Duration.Milliseconds())
				msg, diff = append(msg, r.Message), append(diff, r.Diff)
			}
			if _, err := tx.Exec(ctx, `
				INSERT INTO host_results (buildset_id, job, seq, task, host, status, ignored, duration_ms, message, diff)
				SELECT $1, $2, r.* FROM unnest($3::integer[], $4::integer[], $5::text[], $6::text[], $7::boolean[],
					$8::bigint[], $9::text[], $10::text[]) AS r
				ON CONFLICT DO NOTHING`, p.BuildsetID, p.Job, seq, task, host, status, ignored, ms, msg, diff); err != nil {
				return err
			}
		}
		if len(p.Recaps) > 0 {
			var (
				host                                                           []string
				ok, changed, failed, unreachable, skipped, rescued, ignoredCnt []int32
			)
			for _, r := range p.Recaps {
				c := r.HostCounts
				host = append(host, r.Host)
				ok, changed, failed = append(ok, int32(c.OK)), append(changed, int32(c.Changed)), append(failed, int32(c.Failed))
				unreachable, skipped = append(unreachable, int32(c.Unreachable)), append(skipped, int32(c.Skipped))
				rescued, ignoredCnt = append(rescued, int32(c.Rescued)), append(ignoredCnt, int32(c.Ignored))
			}
			if _, err := tx.Exec(ctx, `
				INSERT INTO host_recaps (buildset_id, job, host, ok, changed, failed, unreachable, skipped, rescued, ignored)
				SELECT $1, $2, r.* FROM unnest($3::text[], $4::integer[], $5::integer[], $6::integer[], $7::integer[],
					$8::integer[], $9::integer[], $10::integer[]) AS r
				ON CONFLICT (buildset_id, job, host) DO UPDATE SET ok = excluded.ok, changed = excluded.changed,
					failed = excluded.failed, unreachable = excluded.unreachable, skipped = excluded.skipped,
					rescued = excluded.rescued, ignored = excluded.ignored`,
				p.BuildsetID, p.Job, host, ok, changed, failed, unreachable, skipped, rescued, ignoredCnt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: update hosts of %s/%s: %w", p.BuildsetID, p.Job, err)
	}
	return nil
}

// BuildHosts returns what is kept of a build's Ansible results; see
// store.Hosts. It reads in one REPEATABLE READ transaction, so that the
// summary, tasks and results agree.
func (s *Store) BuildHosts(ctx context.Context, buildsetID, job string) (*store.BuildHosts, error) {
	var out *store.BuildHosts
	err := s.retry(ctx, func() error {
		return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) (err error) {
			out, err = buildHosts(ctx, tx, buildsetID, job)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: hosts of %s/%s: %w", buildsetID, job, err)
	}
	return out, nil
}

func buildHosts(ctx context.Context, tx pgx.Tx, buildsetID, job string) (*store.BuildHosts, error) {
	out := &store.BuildHosts{Job: job}
	sm := &out.Summary
	err := tx.QueryRow(ctx, `
		SELECT COALESCE(h.attempt, 0), COALESCE(h.runs, 0), COALESCE(h.plays, 0), COALESCE(h.dropped, 0), COALESCE(h.note, '')
		FROM builds b LEFT JOIN host_builds h ON h.buildset_id = b.buildset_id AND h.job = b.job
		WHERE b.buildset_id = $1 AND b.job = $2`, buildsetID, job).
		Scan(&sm.Attempt, &sm.Runs, &sm.Plays, &sm.Dropped, &sm.Note)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	if err != nil || sm.Attempt == 0 {
		return out, err
	}
	rows, err := tx.Query(ctx, `
		SELECT host, ok, changed, failed, unreachable, skipped, rescued, ignored
		FROM host_recaps WHERE buildset_id = $1 AND job = $2 ORDER BY host COLLATE "C"`, buildsetID, job)
	if err != nil {
		return nil, err
	}
	if out.Recaps, err = pgx.CollectRows(rows, scanRecap); err != nil {
		return nil, err
	}
	rows, err = tx.Query(ctx, `SELECT idx, play, name FROM host_tasks WHERE buildset_id = $1 AND job = $2 ORDER BY idx`, buildsetID, job)
	if err != nil {
		return nil, err
	}
	out.Tasks, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.HostTask, error) {
		var t store.HostTask
		err := row.Scan(&t.Index, &t.Play, &t.Name)
		return t, err
	})
	if err != nil {
		return nil, err
	}
	rows, err = tx.Query(ctx, `
		SELECT seq, task, host, status, ignored, duration_ms, message, diff
		FROM host_results WHERE buildset_id = $1 AND job = $2 ORDER BY seq`, buildsetID, job)
	if err != nil {
		return nil, err
	}
	out.Results, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.HostResult, error) {
		var (
			r      store.HostResult
			status string
			ms     int64
		)
		err := row.Scan(&r.Seq, &r.Task, &r.Host, &status, &r.Ignored, &ms, &r.Message, &r.Diff)
		r.Status, r.Duration = store.HostStatus(status), time.Duration(ms)*time.Millisecond
		return r, err
	})
	if len(out.Tasks) == 0 {
		out.Tasks = nil
	}
	if len(out.Results) == 0 {
		out.Results = nil
	}
	if len(out.Recaps) == 0 {
		out.Recaps = nil
	}
	return out, err
}

func scanRecap(row pgx.CollectableRow) (store.HostRecap, error) {
	var r store.HostRecap
	c := &r.HostCounts
	err := row.Scan(&r.Host, &c.OK, &c.Changed, &c.Failed, &c.Unreachable, &c.Skipped, &c.Rescued, &c.Ignored)
	return r, err
}

// BuildsetHosts returns the summary and recaps of every build of a buildset
// that recorded Ansible results; see store.Hosts.
func (s *Store) BuildsetHosts(ctx context.Context, buildsetID string) ([]*store.BuildHosts, error) {
	var out []*store.BuildHosts
	err := s.retry(ctx, func() error {
		return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) (err error) {
			out, err = buildsetHosts(ctx, tx, buildsetID)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: hosts of %s: %w", buildsetID, err)
	}
	return out, nil
}

func buildsetHosts(ctx context.Context, tx pgx.Tx, buildsetID string) ([]*store.BuildHosts, error) {
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM buildsets WHERE id = $1)`, buildsetID).Scan(&exists); err != nil {
		return nil, err
	}
	if !exists {
		return nil, store.ErrNotFound
	}
	rows, err := tx.Query(ctx, `
		SELECT h.job, h.attempt, h.runs, h.plays, h.dropped, h.note
		FROM host_builds h JOIN builds b ON b.buildset_id = h.buildset_id AND b.job = h.job
		WHERE h.buildset_id = $1 ORDER BY b.seq`, buildsetID)
	if err != nil {
		return nil, err
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.BuildHosts, error) {
		b := &store.BuildHosts{}
		sm := &b.Summary
		err := row.Scan(&b.Job, &sm.Attempt, &sm.Runs, &sm.Plays, &sm.Dropped, &sm.Note)
		return b, err
	})
	if err != nil {
		return nil, err
	}
	byJob := map[string]*store.BuildHosts{}
	for _, b := range out {
		byJob[b.Job] = b
	}
	rows, err = tx.Query(ctx, `
		SELECT job, host, ok, changed, failed, unreachable, skipped, rescued, ignored
		FROM host_recaps WHERE buildset_id = $1 ORDER BY host COLLATE "C", job COLLATE "C"`, buildsetID)
	if err != nil {
		return nil, err
	}
	_, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (struct{}, error) {
		var (
			job string
			r   store.HostRecap
		)
		c := &r.HostCounts
		if err := row.Scan(&job, &r.Host, &c.OK, &c.Changed, &c.Failed, &c.Unreachable, &c.Skipped, &c.Rescued, &c.Ignored); err != nil {
			return struct{}{}, err
		}
		if b := byJob[job]; b != nil {
			b.Recaps = append(b.Recaps, r)
		}
		return struct{}{}, nil
	})
	if len(out) == 0 {
		out = nil
	}
	return out, err
}
