package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/sortie-ci/sortie/internal/store"
)

// insertReports records the deliveries of a state change of buildset id,
// inside the change's transaction.
func (s *Store) insertReports(ctx context.Context, tx *sql.Tx, id string, rs []store.NewReportDelivery) error {
	for _, r := range rs {
		if r.ID == "" || r.At.IsZero() || r.Target == nil {
			return fmt.Errorf("report delivery %q: no id, time or target", r.ID)
		}
		_, err := s.txExec(ctx, tx, `
			INSERT INTO report_deliveries (id, buildset_id, reporter, event, target, state, created_at, next_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, id, r.Reporter, r.Event, r.Target, store.DeliveryPending, nanos(r.At), nanos(r.At))
		if err != nil {
			return fmt.Errorf("report delivery %s: %w", r.ID, err)
		}
	}
	return nil
}

const deliveryColumns = `seq, id, buildset_id, reporter, event, target, state, tries, last_error, created_at, next_at, last_try_at, done_at, claimed_by, claimed_until`

func scanDelivery(row scanner) (*store.ReportDelivery, error) {
	var (
		d                          store.ReportDelivery
		state                      string
		created, next              int64
		lastTry, done, claimedTill sql.NullInt64
	)
	err := row.Scan(&d.Seq, &d.ID, &d.Buildset, &d.Reporter, &d.Event, &d.Target, &state, &d.Tries, &d.LastError,
		&created, &next, &lastTry, &done, &d.ClaimedBy, &claimedTill)
	if err != nil {
		return nil, err
	}
	d.State = store.DeliveryState(state)
	d.CreatedAt, d.NextAt = fromNanos(created), fromNanos(next)
	d.LastTryAt, d.DoneAt, d.ClaimedUntil = fromNullNanos(lastTry), fromNullNanos(done), fromNullNanos(claimedTill)
	return &d, nil
}

// ClaimReportDeliveries claims due deliveries in one statement under the
// write lock (BEGIN IMMEDIATE): two processes on one file take turns, and
// the second finds the first's claims.
func (s *Store) ClaimReportDeliveries(ctx context.Context, p store.ClaimReportDeliveriesParams) ([]*store.ReportDelivery, error) {
	if p.Worker == "" || p.Now.IsZero() || p.Until.IsZero() || p.Limit <= 0 {
		return nil, errors.New("sqlite: claim report deliveries: worker, now, until and limit are required")
	}
	// Most polls find nothing due: a read says so without taking the
	// write lock, which the builds' writes need.
	var due bool
	if err := s.row(ctx, `SELECT EXISTS (SELECT 1 FROM report_deliveries
		WHERE state = 'pending' AND next_at <= ? AND (claimed_until IS NULL OR claimed_until < ?))`,
		nanos(p.Now), nanos(p.Now)).Scan(&due); err != nil {
		return nil, fmt.Errorf("sqlite: claim report deliveries: %w", err)
	}
	if !due {
		return nil, nil
	}
	var out []*store.ReportDelivery
	err := s.tx(ctx, func(tx *sql.Tx) error {
		out = nil
		rows, err := s.txQuery(ctx, tx, `
			UPDATE report_deliveries SET tries = tries + 1, claimed_by = ?, claimed_until = ?, last_try_at = ?
			WHERE seq IN (
				SELECT d.seq FROM report_deliveries d
				WHERE d.state = 'pending' AND d.next_at <= ? AND (d.claimed_until IS NULL OR d.claimed_until < ?)
					AND NOT EXISTS (SELECT 1 FROM report_deliveries e
						WHERE e.buildset_id = d.buildset_id AND e.reporter = d.reporter AND e.state = 'pending' AND e.seq < d.seq)
				ORDER BY d.next_at, d.seq LIMIT ?)
			RETURNING `+deliveryColumns,
			p.Worker, nanos(p.Until), nanos(p.Now), nanos(p.Now), nanos(p.Now), p.Limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			d, err := scanDelivery(rows)
			if err != nil {
				return err
			}
			out = append(out, d)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: claim report deliveries: %w", err)
	}
	slices.SortFunc(out, func(a, b *store.ReportDelivery) int {
		return cmp.Or(a.NextAt.Compare(b.NextAt), cmp.Compare(a.Seq, b.Seq))
	})
	return out, nil
}

// FinishReportDelivery records how a claimed try went; see store.Outbox.
func (s *Store) FinishReportDelivery(ctx context.Context, p store.FinishReportDeliveryParams) error {
	switch {
	case p.State == store.DeliveryPending && p.NextAt.IsZero():
		return fmt.Errorf("sqlite: finish report delivery %s: pending again with no time to try it", p.ID)
	case p.State != store.DeliveryPending && p.At.IsZero():
		return fmt.Errorf("sqlite: finish report delivery %s: %w", p.ID, errZeroTime("At"))
	}
	var done sql.NullInt64
	if p.State != store.DeliveryPending {
		done = nullNanos(p.At)
	}
	res, err := s.exec(ctx, `
		UPDATE report_deliveries SET state = ?, last_error = ?, next_at = COALESCE(?, next_at), done_at = ?,
			claimed_by = '', claimed_until = NULL
		WHERE id = ? AND state = 'pending' AND claimed_by = ? AND tries = ?`,
		p.State, p.Error, nullNanos(p.NextAt), done, p.ID, p.Worker, p.Try)
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n == 0 {
			err = s.deliveryConflict(ctx, p.ID)
		}
	}
	if err != nil {
		return fmt.Errorf("sqlite: finish report delivery %s: %w", p.ID, err)
	}
	return nil
}

// deliveryConflict says why no row changed: the delivery is unknown, or
// not claimed by that try.
func (s *Store) deliveryConflict(ctx context.Context, id string) error {
	var state, by string
	var tries int
	err := s.row(ctx, `SELECT state, claimed_by, tries FROM report_deliveries WHERE id = ?`, id).Scan(&state, &by, &tries)
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	if err != nil {
		return err
	}
	return fmt.Errorf("is %s, claimed by %q for try %d: %w", state, by, tries, store.ErrConflict)
}

// ReportDeliveries returns a buildset's deliveries in the order recorded,
// or ErrNotFound for an unknown buildset.
func (s *Store) ReportDeliveries(ctx context.Context, buildsetID string) ([]*store.ReportDelivery, error) {
	out, err := s.queryDeliveries(ctx, `SELECT `+deliveryColumns+` FROM report_deliveries WHERE buildset_id = ? ORDER BY seq`, buildsetID)
	if err == nil && len(out) == 0 {
		var exists bool
		if err = s.row(ctx, `SELECT EXISTS (SELECT 1 FROM buildsets WHERE id = ?)`, buildsetID).Scan(&exists); err == nil && !exists {
			err = store.ErrNotFound
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite: report deliveries of %s: %w", buildsetID, err)
	}
	return out, nil
}

func (s *Store) queryDeliveries(ctx context.Context, q string, args ...any) ([]*store.ReportDelivery, error) {
	rows, err := s.rows(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*store.ReportDelivery
	for rows.Next() {
		d, err := scanDelivery(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// ReportDeliveryStats counts the pending deliveries.
func (s *Store) ReportDeliveryStats(ctx context.Context) (store.ReportDeliveryStats, error) {
	var st store.ReportDeliveryStats
	var oldest sql.NullInt64
	err := s.row(ctx, `SELECT COUNT(*), MIN(created_at) FROM report_deliveries WHERE state = 'pending'`).Scan(&st.Pending, &oldest)
	if err != nil {
		return st, fmt.Errorf("sqlite: report delivery stats: %w", err)
	}
	st.OldestPending = fromNullNanos(oldest)
	return st, nil
}
