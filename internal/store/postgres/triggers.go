package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/sortie-ci/sortie/internal/store"
)

// SetPause inserts or replaces the pause of p.Pipeline ("" pauses every
// pipeline). p.At must be set.
func (s *Store) SetPause(ctx context.Context, p store.Pause) error {
	if p.At.IsZero() {
		return fmt.Errorf("postgres: pause %q: %w", p.Pipeline, errZeroTime("At"))
	}
	_, err := s.exec(ctx, `
		INSERT INTO pauses (pipeline, paused_by, reason, paused_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (pipeline) DO UPDATE SET
			paused_by = excluded.paused_by, reason = excluded.reason, paused_at = excluded.paused_at`,
		p.Pipeline, p.By, p.Reason, p.At)
	if err != nil {
		return fmt.Errorf("postgres: pause %q: %w", p.Pipeline, err)
	}
	return nil
}

// ClearPause removes the pause of pipeline ("": the pause of every
// pipeline, not the pauses of each). Clearing what is not paused is not an
// error.
func (s *Store) ClearPause(ctx context.Context, pipeline string) error {
	if _, err := s.exec(ctx, `DELETE FROM pauses WHERE pipeline = $1`, pipeline); err != nil {
		return fmt.Errorf("postgres: clear pause %q: %w", pipeline, err)
	}
	return nil
}

// Pauses returns the pauses by Pipeline, "" first.
func (s *Store) Pauses(ctx context.Context) ([]store.Pause, error) {
	rows, err := s.pool.Query(ctx, `SELECT pipeline, paused_by, reason, paused_at FROM pauses ORDER BY pipeline COLLATE "C"`)
	if err == nil {
		var ps []store.Pause
		ps, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Pause, error) {
			var p store.Pause
			err := row.Scan(&p.Pipeline, &p.By, &p.Reason, &p.At)
			p.At = p.At.UTC()
			return p, err
		})
		if err == nil {
			return ps, nil
		}
	}
	return nil, fmt.Errorf("postgres: pauses: %w", mapErr(ctx, err))
}

// GetMark returns the value of the mark key, or "" when it is unset.
func (s *Store) GetMark(ctx context.Context, key string) (string, error) {
	var v string
	err := s.pool.QueryRow(ctx, `SELECT value FROM marks WHERE name = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("postgres: get mark %q: %w", key, mapErr(ctx, err))
	}
	return v, nil
}

// SetMark inserts or replaces the mark key.
func (s *Store) SetMark(ctx context.Context, key, value string) error {
	_, err := s.exec(ctx, `
		INSERT INTO marks (name, value) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value`,
		key, value)
	if err != nil {
		return fmt.Errorf("postgres: set mark %q: %w", key, err)
	}
	return nil
}

// ClaimDelivery records a delivery unless it is recorded already, and
// forgets the old ones, in one transaction. The primary key makes
// concurrent claims of one id, from any process, succeed once: a second
// INSERT ... ON CONFLICT DO NOTHING waits for the first to commit, then
// does nothing.
func (s *Store) ClaimDelivery(ctx context.Context, c store.DeliveryClaim) (bool, error) {
	if c.At.IsZero() {
		return false, fmt.Errorf("postgres: claim delivery %q: %w", c.ID, errZeroTime("At"))
	}
	var claimed bool
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if !c.ForgetBefore.IsZero() {
			if _, err := tx.Exec(ctx, `DELETE FROM deliveries WHERE received_at < $1`, c.ForgetBefore); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, `INSERT INTO deliveries (id, received_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING`, c.ID, c.At)
		if err != nil {
			return err
		}
		claimed = tag.RowsAffected() == 1
		if c.Keep > 0 {
			// The newest first, ties by arrival.
			if _, err := tx.Exec(ctx, `
				DELETE FROM deliveries WHERE id IN (
					SELECT id FROM deliveries ORDER BY received_at DESC, seq DESC OFFSET $1)`,
				c.Keep); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("postgres: claim delivery %q: %w", c.ID, err)
	}
	return claimed, nil
}
