package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sortie-ci/sortie/internal/store"
)

// insertReports records the deliveries of a state change of buildset id,
// inside the change's transaction.
func insertReports(ctx context.Context, q conn, id string, rs []store.NewReportDelivery) error {
	for _, r := range rs {
		if r.ID == "" || r.At.IsZero() || r.Target == nil {
			return fmt.Errorf("report delivery %q: no id, time or target", r.ID)
		}
		_, err := q.Exec(ctx, `
			INSERT INTO report_deliveries (id, buildset_id, reporter, event, target, state, created_at, next_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $7)`,
			r.ID, id, r.Reporter, r.Event, r.Target, store.DeliveryPending, r.At)
		if err != nil {
			return fmt.Errorf("report delivery %s: %w", r.ID, err)
		}
	}
	return nil
}

const deliveryColumns = `seq, id, buildset_id, reporter, event, target, state, tries, last_error, created_at, next_at, last_try_at, done_at, claimed_by, claimed_until`

func scanDelivery(row pgx.Row) (*store.ReportDelivery, error) {
	var (
		d                          store.ReportDelivery
		state                      string
		created, next              time.Time
		lastTry, done, claimedTill *time.Time
	)
	err := row.Scan(&d.Seq, &d.ID, &d.Buildset, &d.Reporter, &d.Event, &d.Target, &state, &d.Tries, &d.LastError,
		&created, &next, &lastTry, &done, &d.ClaimedBy, &claimedTill)
	if err != nil {
		return nil, err
	}
	d.State = store.DeliveryState(state)
	d.CreatedAt, d.NextAt = created.UTC(), next.UTC()
	d.LastTryAt, d.DoneAt, d.ClaimedUntil = utc(lastTry), utc(done), utc(claimedTill)
	return &d, nil
}

func collectDeliveries(rows pgx.Rows) ([]*store.ReportDelivery, error) {
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

// ClaimReportDeliveries claims due deliveries in one statement that locks
// the rows it takes and skips those another node's claim has locked (FOR
// UPDATE SKIP LOCKED): nodes claiming at once get different deliveries,
// and none waits for another.
func (s *Store) ClaimReportDeliveries(ctx context.Context, p store.ClaimReportDeliveriesParams) ([]*store.ReportDelivery, error) {
	if p.Worker == "" || p.Now.IsZero() || p.Until.IsZero() || p.Limit <= 0 {
		return nil, errors.New("postgres: claim report deliveries: worker, now, until and limit are required")
	}
	var out []*store.ReportDelivery
	err := s.retry(ctx, func() error {
		rows, err := s.pool.Query(ctx, `
			WITH c AS (
				SELECT d.seq FROM report_deliveries d
				WHERE d.state = 'pending' AND d.next_at <= $1 AND (d.claimed_until IS NULL OR d.claimed_until < $1)
					AND NOT EXISTS (SELECT 1 FROM report_deliveries e
						WHERE e.buildset_id = d.buildset_id AND e.reporter = d.reporter AND e.state = 'pending' AND e.seq < d.seq)
				ORDER BY d.next_at, d.seq LIMIT $2
				FOR UPDATE SKIP LOCKED)
			UPDATE report_deliveries r SET tries = r.tries + 1, claimed_by = $3, claimed_until = $4, last_try_at = $1
			FROM c WHERE r.seq = c.seq
			RETURNING r.`+strings.ReplaceAll(deliveryColumns, ", ", ", r."),
			p.Now, p.Limit, p.Worker, p.Until)
		if err != nil {
			return err
		}
		out, err = collectDeliveries(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: claim report deliveries: %w", err)
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
		return fmt.Errorf("postgres: finish report delivery %s: pending again with no time to try it", p.ID)
	case p.State != store.DeliveryPending && p.At.IsZero():
		return fmt.Errorf("postgres: finish report delivery %s: %w", p.ID, errZeroTime("At"))
	}
	var done any
	if p.State != store.DeliveryPending {
		done = p.At
	}
	tag, err := s.exec(ctx, `
		UPDATE report_deliveries SET state = $1, last_error = $2, next_at = COALESCE($3, next_at), done_at = $4,
			claimed_by = '', claimed_until = NULL
		WHERE id = $5 AND state = 'pending' AND claimed_by = $6 AND tries = $7`,
		p.State, p.Error, nullTime(p.NextAt), done, p.ID, p.Worker, p.Try)
	if err == nil && tag.RowsAffected() == 0 {
		var state, by string
		var tries int
		err = s.pool.QueryRow(ctx, `SELECT state, claimed_by, tries FROM report_deliveries WHERE id = $1`, p.ID).Scan(&state, &by, &tries)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			err = store.ErrNotFound
		case err == nil:
			err = fmt.Errorf("is %s, claimed by %q for try %d: %w", state, by, tries, store.ErrConflict)
		default:
			err = mapErr(ctx, err)
		}
	}
	if err != nil {
		return fmt.Errorf("postgres: finish report delivery %s: %w", p.ID, err)
	}
	return nil
}

// ReportDeliveries returns a buildset's deliveries in the order recorded,
// or ErrNotFound for an unknown buildset.
func (s *Store) ReportDeliveries(ctx context.Context, buildsetID string) ([]*store.ReportDelivery, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+deliveryColumns+` FROM report_deliveries WHERE buildset_id = $1 ORDER BY seq`, buildsetID)
	var out []*store.ReportDelivery
	if err == nil {
		out, err = collectDeliveries(rows)
	}
	if err == nil && len(out) == 0 {
		err = s.buildsetExists(ctx, buildsetID)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: report deliveries of %s: %w", buildsetID, mapErr(ctx, err))
	}
	return out, nil
}

// ReportDeliveryStats counts the pending deliveries.
func (s *Store) ReportDeliveryStats(ctx context.Context) (store.ReportDeliveryStats, error) {
	var st store.ReportDeliveryStats
	var oldest *time.Time
	err := s.pool.QueryRow(ctx, `SELECT COUNT(*), MIN(created_at) FROM report_deliveries WHERE state = 'pending'`).Scan(&st.Pending, &oldest)
	if err != nil {
		return st, fmt.Errorf("postgres: report delivery stats: %w", mapErr(ctx, err))
	}
	st.OldestPending = utc(oldest)
	return st, nil
}
