package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sortie-ci/sortie/internal/store"
)

const leaderColumns = `owner, term, elected_at, expires_at`

func scanTerm(row pgx.Row) (*store.Term, error) {
	var t store.Term
	if err := row.Scan(&t.Owner, &t.Term, &t.ElectedAt, &t.ExpiresAt); err != nil {
		return nil, err
	}
	t.ElectedAt, t.ExpiresAt = t.ElectedAt.UTC(), t.ExpiresAt.UTC()
	return &t, nil
}

// Elect takes the leader row for p.Fence's owner with the next term
// (leader_terms), if nobody else's term runs at p.Now (the database's
// clock when zero); see store.Leadership. Of candidates at once, the
// first INSERT wins; the others' ON CONFLICT waits for it to commit, then
// does nothing.
func (s *Store) Elect(ctx context.Context, p store.ElectParams) (*store.Term, error) {
	if p.TTL <= 0 {
		return nil, fmt.Errorf("postgres: elect %s: ttl %v is not above zero", p.Fence.Owner, p.TTL)
	}
	var term *store.Term
	err := s.tx(ctx, func(tx pgx.Tx) error {
		term = nil
		if err := checkFence(ctx, tx, p.Fence); err != nil {
			return err
		}
		// A term that ran out, or one this owner gave up, ends here.
		if _, err := tx.Exec(ctx, `DELETE FROM leader WHERE expires_at < COALESCE($1::timestamptz, statement_timestamp()) OR owner = $2`,
			nowArg(p.Now), p.Fence.Owner); err != nil {
			return err
		}
		t, err := scanTerm(tx.QueryRow(ctx, `
			WITH n AS (SELECT COALESCE($1::timestamptz, statement_timestamp()) AS t)
			INSERT INTO leader (owner, term, elected_at, expires_at)
			SELECT $2, nextval('leader_terms'), n.t, n.t + make_interval(secs => $3::float8) FROM n
			ON CONFLICT (name) DO NOTHING
			RETURNING `+leaderColumns,
			nowArg(p.Now), p.Fence.Owner, p.TTL.Seconds()))
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // another leads
		}
		term = t
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: elect %s: %w", p.Fence.Owner, err)
	}
	return term, nil
}

// Reelect extends a term still the leader's and running, in one statement;
// see store.Leadership.
func (s *Store) Reelect(ctx context.Context, p store.ReelectParams) (*store.Term, error) {
	if p.TTL <= 0 {
		return nil, fmt.Errorf("postgres: reelect %s: ttl %v is not above zero", p.Term.Owner, p.TTL)
	}
	var term *store.Term
	err := s.retry(ctx, func() (err error) {
		term, err = scanTerm(s.pool.QueryRow(ctx, `
			WITH n AS (SELECT COALESCE($1::timestamptz, statement_timestamp()) AS t)
			UPDATE leader SET expires_at = n.t + make_interval(secs => $2::float8) FROM n
			WHERE owner = $3 AND term = $4 AND expires_at >= n.t
			RETURNING `+leaderColumns,
			nowArg(p.Now), p.TTL.Seconds(), p.Term.Owner, p.Term.Term))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		err = fmt.Errorf("term %d: %w", p.Term.Term, store.ErrNotLeader)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: reelect %s: %w", p.Term.Owner, err)
	}
	return term, nil
}

// Resign deletes the leader row if it still holds t; see
// store.Leadership.
func (s *Store) Resign(ctx context.Context, t store.Term) error {
	if _, err := s.exec(ctx, `DELETE FROM leader WHERE owner = $1 AND term = $2`, t.Owner, t.Term); err != nil {
		return fmt.Errorf("postgres: resign %s term %d: %w", t.Owner, t.Term, err)
	}
	return nil
}

// Leader returns the leader row, or nil when there is none.
func (s *Store) Leader(ctx context.Context) (*store.Term, error) {
	t, err := scanTerm(s.pool.QueryRow(ctx, `SELECT `+leaderColumns+` FROM leader`))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: leader: %w", mapErr(ctx, err))
	}
	return t, nil
}

// checkTerm returns ErrNotLeader unless the leader row holds t, and keeps
// the row locked FOR SHARE to the commit: an Elect that would end the term
// waits for the write, so a write under a term is committed before the
// term ended or refused after. Whether the term ran out is not asked:
// Elect replaces a term that ran out in the same transaction as it makes
// the next, so a row that still holds t means nobody leads after it.
func checkTerm(ctx context.Context, tx pgx.Tx, t *store.Term) error {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM leader WHERE owner = $1 AND term = $2 FOR SHARE`, t.Owner, t.Term).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("term %d of %s: %w", t.Term, t.Owner, store.ErrNotLeader)
	}
	return err
}

// claimTriggers claims what p's triggers claim with the buildset bs,
// inside tx: the cron tick (a second claim of a tick waits for the first
// to commit, then finds the key taken), the poller's mark swap.
func claimTriggers(ctx context.Context, tx pgx.Tx, bs *store.Buildset, p store.CreateBuildsetParams) error {
	if p.Term != nil {
		if err := checkTerm(ctx, tx, p.Term); err != nil {
			return err
		}
	}
	if p.Cron != nil {
		var term int64
		if p.Term != nil {
			term = p.Term.Term
		}
		tag, err := tx.Exec(ctx, `INSERT INTO cron_ticks (pipeline, tick, buildset, term) VALUES ($1, $2, $3, $4)
			ON CONFLICT (pipeline, tick) DO NOTHING`, bs.Pipeline, p.Cron.Tick, bs.ID, term)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("pipeline %s tick %s: %w", bs.Pipeline, p.Cron.Tick.UTC().Format(time.RFC3339Nano), store.ErrTickTaken)
		}
	}
	if m := p.Poll; m != nil {
		sql := `UPDATE marks SET value = $1 WHERE name = $2 AND value = $3`
		if m.Old == "" {
			sql = `INSERT INTO marks (name, value) VALUES ($2, $1)
				ON CONFLICT (name) DO UPDATE SET value = excluded.value WHERE marks.value = $3`
		}
		tag, err := tx.Exec(ctx, sql, m.New, m.Key, m.Old)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return fmt.Errorf("mark %s is no longer %q: %w", m.Key, m.Old, store.ErrMarkChanged)
		}
	}
	return nil
}

// LastCronTick returns the latest tick claimed for pipeline.
func (s *Store) LastCronTick(ctx context.Context, pipeline string) (time.Time, bool, error) {
	var t *time.Time
	if err := s.pool.QueryRow(ctx, `SELECT MAX(tick) FROM cron_ticks WHERE pipeline = $1`, pipeline).Scan(&t); err != nil {
		return time.Time{}, false, fmt.Errorf("postgres: last cron tick of %s: %w", pipeline, mapErr(ctx, err))
	}
	if t == nil {
		return time.Time{}, false, nil
	}
	return t.UTC(), true, nil
}
