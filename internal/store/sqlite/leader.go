package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

const leaderColumns = `owner, term, elected_at, expires_at`

func scanTerm(row scanner) (*store.Term, error) {
	var (
		t                store.Term
		elected, expires int64
	)
	if err := row.Scan(&t.Owner, &t.Term, &elected, &expires); err != nil {
		return nil, err
	}
	t.ElectedAt, t.ExpiresAt = fromNanos(elected), fromNanos(expires)
	return &t, nil
}

// Elect takes the leader row for p.Fence's owner with the next term, if
// nobody else's term runs at p.Now, in one write transaction; see
// store.Leadership.
func (s *Store) Elect(ctx context.Context, p store.ElectParams) (*store.Term, error) {
	if p.TTL <= 0 {
		return nil, fmt.Errorf("sqlite: elect %s: ttl %v is not above zero", p.Fence.Owner, p.TTL)
	}
	now := clock(p.Now)
	var term *store.Term
	err := s.tx(ctx, func(tx *sql.Tx) error {
		term = nil
		if err := s.checkFence(ctx, tx, p.Fence); err != nil {
			return err
		}
		// A term that ran out, or one this owner gave up, ends here.
		if _, err := s.txExec(ctx, tx, `DELETE FROM leader WHERE expires_at < ? OR owner = ?`, nanos(now), p.Fence.Owner); err != nil {
			return err
		}
		var held bool
		if err := s.txRow(ctx, tx, `SELECT EXISTS (SELECT 1 FROM leader)`).Scan(&held); err != nil || held {
			return err
		}
		var n int64
		if err := s.txRow(ctx, tx, `UPDATE leader_terms SET last = last + 1 RETURNING last`).Scan(&n); err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, `INSERT INTO leader (owner, term, elected_at, expires_at) VALUES (?, ?, ?, ?)`,
			p.Fence.Owner, n, nanos(now), nanos(now.Add(p.TTL))); err != nil {
			return err
		}
		term = &store.Term{Owner: p.Fence.Owner, Term: n, ElectedAt: now.UTC(), ExpiresAt: now.Add(p.TTL).UTC()}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: elect %s: %w", p.Fence.Owner, err)
	}
	return term, nil
}

// Reelect extends a term still the leader's and running; see
// store.Leadership.
func (s *Store) Reelect(ctx context.Context, p store.ReelectParams) (*store.Term, error) {
	if p.TTL <= 0 {
		return nil, fmt.Errorf("sqlite: reelect %s: ttl %v is not above zero", p.Term.Owner, p.TTL)
	}
	now := clock(p.Now)
	var term *store.Term
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var err error
		term, err = scanTerm(s.txRow(ctx, tx, `
			UPDATE leader SET expires_at = ? WHERE owner = ? AND term = ? AND expires_at >= ?
			RETURNING `+leaderColumns,
			nanos(now.Add(p.TTL)), p.Term.Owner, p.Term.Term, nanos(now)))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("term %d: %w", p.Term.Term, store.ErrNotLeader)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: reelect %s: %w", p.Term.Owner, err)
	}
	return term, nil
}

// Resign deletes the leader row if it still holds t; see
// store.Leadership.
func (s *Store) Resign(ctx context.Context, t store.Term) error {
	if _, err := s.exec(ctx, `DELETE FROM leader WHERE owner = ? AND term = ?`, t.Owner, t.Term); err != nil {
		return fmt.Errorf("sqlite: resign %s term %d: %w", t.Owner, t.Term, err)
	}
	return nil
}

// Leader returns the leader row, or nil when there is none.
func (s *Store) Leader(ctx context.Context) (*store.Term, error) {
	t, err := scanTerm(s.row(ctx, `SELECT `+leaderColumns+` FROM leader`))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: leader: %w", err)
	}
	return t, nil
}

// checkTerm returns ErrNotLeader unless the leader row holds t, inside
// tx. Whether the term ran out is not asked: Elect replaces a term that
// ran out in the same transaction as it makes the next, so a row that
// still holds t means nobody leads after it.
func (s *Store) checkTerm(ctx context.Context, tx *sql.Tx, t *store.Term) error {
	var held bool
	if err := s.txRow(ctx, tx, `SELECT EXISTS (SELECT 1 FROM leader WHERE owner = ? AND term = ?)`, t.Owner, t.Term).Scan(&held); err != nil {
		return err
	}
	if !held {
		return fmt.Errorf("term %d of %s: %w", t.Term, t.Owner, store.ErrNotLeader)
	}
	return nil
}

// claimTriggers claims what p's triggers claim with the buildset bs,
// inside tx: the cron tick, the poller's mark swap.
func (s *Store) claimTriggers(ctx context.Context, tx *sql.Tx, bs *store.Buildset, p store.CreateBuildsetParams) error {
	if p.Term != nil {
		if err := s.checkTerm(ctx, tx, p.Term); err != nil {
			return err
		}
	}
	if p.Cron != nil {
		var term int64
		if p.Term != nil {
			term = p.Term.Term
		}
		res, err := s.txExec(ctx, tx, `INSERT INTO cron_ticks (pipeline, tick, buildset, term) VALUES (?, ?, ?, ?)
			ON CONFLICT (pipeline, tick) DO NOTHING`, bs.Pipeline, nanos(p.Cron.Tick), bs.ID, term)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			return fmt.Errorf("pipeline %s tick %s: %w", bs.Pipeline, p.Cron.Tick.UTC().Format(time.RFC3339Nano), store.ErrTickTaken)
		}
	}
	if m := p.Poll; m != nil {
		var res sql.Result
		var err error
		if m.Old == "" {
			res, err = s.txExec(ctx, tx, `INSERT INTO marks (name, value) VALUES (?, ?)
				ON CONFLICT (name) DO UPDATE SET value = excluded.value WHERE marks.value = ''`, m.Key, m.New)
		} else {
			res, err = s.txExec(ctx, tx, `UPDATE marks SET value = ? WHERE name = ? AND value = ?`, m.New, m.Key, m.Old)
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			return fmt.Errorf("mark %s is no longer %q: %w", m.Key, m.Old, store.ErrMarkChanged)
		}
	}
	return nil
}

// LastCronTick returns the latest tick claimed for pipeline.
func (s *Store) LastCronTick(ctx context.Context, pipeline string) (time.Time, bool, error) {
	var n sql.NullInt64
	if err := s.row(ctx, `SELECT MAX(tick) FROM cron_ticks WHERE pipeline = ?`, pipeline).Scan(&n); err != nil {
		return time.Time{}, false, fmt.Errorf("sqlite: last cron tick of %s: %w", pipeline, err)
	}
	if !n.Valid {
		return time.Time{}, false, nil
	}
	return fromNanos(n.Int64), true, nil
}
