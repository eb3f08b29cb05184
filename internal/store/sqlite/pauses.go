package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/sortie-ci/sortie/internal/store"
)

// SetPause inserts or replaces the pause of p.Pipeline ("" pauses every
// pipeline). p.At must be set.
func (s *Store) SetPause(ctx context.Context, p store.Pause) error {
	if p.At.IsZero() {
		return fmt.Errorf("sqlite: pause %q: %w", p.Pipeline, errZeroTime("At"))
	}
	_, err := s.exec(ctx, `
		INSERT INTO pauses (pipeline, paused_by, reason, paused_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (pipeline) DO UPDATE SET
			paused_by = excluded.paused_by, reason = excluded.reason, paused_at = excluded.paused_at`,
		p.Pipeline, p.By, p.Reason, nanos(p.At))
	if err != nil {
		return fmt.Errorf("sqlite: pause %q: %w", p.Pipeline, err)
	}
	return nil
}

// ClearPause removes the pause of pipeline ("": the pause of every
// pipeline, not the pauses of each). Clearing what is not paused is not an
// error.
func (s *Store) ClearPause(ctx context.Context, pipeline string) error {
	if _, err := s.exec(ctx, `DELETE FROM pauses WHERE pipeline = ?`, pipeline); err != nil {
		return fmt.Errorf("sqlite: clear pause %q: %w", pipeline, err)
	}
	return nil
}

// Pauses returns the pauses by Pipeline, "" first.
func (s *Store) Pauses(ctx context.Context) ([]store.Pause, error) {
	rows, err := s.rows(ctx, `SELECT pipeline, paused_by, reason, paused_at FROM pauses ORDER BY pipeline`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: pauses: %w", err)
	}
	defer rows.Close()
	var out []store.Pause
	for rows.Next() {
		var (
			p  store.Pause
			at int64
		)
		if err := rows.Scan(&p.Pipeline, &p.By, &p.Reason, &at); err != nil {
			return nil, fmt.Errorf("sqlite: pauses: %w", err)
		}
		p.At = fromNanos(at)
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: pauses: %w", err)
	}
	return out, nil
}

// GetMark returns the value of the mark key, or "" when it is unset.
func (s *Store) GetMark(ctx context.Context, key string) (string, error) {
	var v string
	err := s.row(ctx, `SELECT value FROM marks WHERE name = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("sqlite: get mark %q: %w", key, err)
	}
	return v, nil
}

// SetMark inserts or replaces the mark key.
func (s *Store) SetMark(ctx context.Context, key, value string) error {
	_, err := s.exec(ctx, `
		INSERT INTO marks (name, value) VALUES (?, ?)
		ON CONFLICT (name) DO UPDATE SET value = excluded.value`,
		key, value)
	if err != nil {
		return fmt.Errorf("sqlite: set mark %q: %w", key, err)
	}
	return nil
}

// ClaimDelivery records a delivery unless it is recorded already, and
// forgets the old ones, in one write transaction: the primary key makes
// concurrent claims of one id, from any process, succeed once.
func (s *Store) ClaimDelivery(ctx context.Context, c store.DeliveryClaim) (bool, error) {
	if c.At.IsZero() {
		return false, fmt.Errorf("sqlite: claim delivery %q: %w", c.ID, errZeroTime("At"))
	}
	claimed := false
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if !c.ForgetBefore.IsZero() {
			if _, err := s.txExec(ctx, tx, `DELETE FROM deliveries WHERE received_at < ?`, nanos(c.ForgetBefore)); err != nil {
				return err
			}
		}
		res, err := s.txExec(ctx, tx, `INSERT INTO deliveries (id, received_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING`, c.ID, nanos(c.At))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		claimed = n == 1
		if c.Keep > 0 {
			// The newest first, ties by arrival (rowid).
			if _, err := s.txExec(ctx, tx, `
				DELETE FROM deliveries WHERE rowid IN (
					SELECT rowid FROM deliveries ORDER BY received_at DESC, rowid DESC LIMIT -1 OFFSET ?)`,
				c.Keep); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("sqlite: claim delivery %q: %w", c.ID, err)
	}
	return claimed, nil
}
