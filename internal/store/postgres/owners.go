package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sortie-ci/sortie/internal/store"
)

// checkFence returns ErrFenced unless f's owner is live with f's epoch. It
// runs inside the writing transaction and keeps the owner's row locked FOR
// SHARE to the commit: FenceOwners' UPDATE of that row waits for the
// write, so a write is either committed before the fence or refused after
// it.
func checkFence(ctx context.Context, tx pgx.Tx, f store.Fence) error {
	var one int
	err := tx.QueryRow(ctx, `SELECT 1 FROM owners WHERE id = $1 AND epoch = $2 AND state = $3 FOR SHARE`,
		f.Owner, f.Epoch, store.OwnerLive).Scan(&one)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("owner %q epoch %d: %w", f.Owner, f.Epoch, store.ErrFenced)
	}
	return err
}

// nowArg is now for a statement that reads it as
// COALESCE($n::timestamptz, statement_timestamp()): the database's clock
// when now is zero, so that no host's clock decides a lease.
func nowArg(now time.Time) any { return nullTime(now) }

// RegisterOwner inserts a live owner with the next epoch (owner_epochs)
// and returns its Fence; see store.Owners.
func (s *Store) RegisterOwner(ctx context.Context, p store.RegisterOwnerParams) (store.Fence, error) {
	if p.ID == "" || p.Kind == "" {
		return store.Fence{}, errors.New("postgres: register owner: no id or kind")
	}
	if p.Lease <= 0 {
		return store.Fence{}, fmt.Errorf("postgres: register owner %s: lease %v is not above zero", p.ID, p.Lease)
	}
	var epoch int64
	err := s.tx(ctx, func(tx pgx.Tx) error {
		err := tx.QueryRow(ctx, `
			WITH n AS (SELECT COALESCE($1::timestamptz, statement_timestamp()) AS t)
			INSERT INTO owners (id, kind, node, host, state_dir, state, started_at, renewed_at, expires_at,
				version, config_fp, slots_max)
			SELECT $2, $3, $4, $5, $6, $7, n.t, n.t, n.t + make_interval(secs => $8::float8), $9, $10, $11 FROM n
			ON CONFLICT (id) DO NOTHING
			RETURNING epoch`,
			nowArg(p.Now), p.ID, p.Kind, p.Node, p.Host, p.StateDir, store.OwnerLive, p.Lease.Seconds(),
			p.Version, p.ConfigFP, p.SlotsMax).Scan(&epoch)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("registered before: %w", store.ErrConflict)
		}
		return err
	})
	if err != nil {
		return store.Fence{}, fmt.Errorf("postgres: register owner %s: %w", p.ID, err)
	}
	return store.Fence{Owner: p.ID, Epoch: epoch}, nil
}

// RenewOwner extends a live owner's lease that has not run out, in one
// statement; see store.Owners.
func (s *Store) RenewOwner(ctx context.Context, p store.RenewOwnerParams) (time.Time, error) {
	if p.Lease <= 0 {
		return time.Time{}, fmt.Errorf("postgres: renew owner %s: lease %v is not above zero", p.Fence.Owner, p.Lease)
	}
	var until time.Time
	err := s.retry(ctx, func() error {
		return s.pool.QueryRow(ctx, `
			WITH n AS (SELECT COALESCE($1::timestamptz, statement_timestamp()) AS t)
			UPDATE owners SET renewed_at = n.t, expires_at = n.t + make_interval(secs => $2::float8), slots_used = $3,
				config_fp = CASE WHEN $4 = '' THEN config_fp ELSE $4 END,
				slots_max = CASE WHEN $8::int > 0 THEN $8::int ELSE slots_max END
			FROM n
			WHERE id = $5 AND epoch = $6 AND state = $7 AND expires_at >= n.t
			RETURNING expires_at`,
			nowArg(p.Now), p.Lease.Seconds(), p.SlotsUsed, p.ConfigFP, p.Fence.Owner, p.Fence.Epoch, store.OwnerLive, p.SlotsMax).Scan(&until)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		err = fmt.Errorf("epoch %d: not live, or its lease ran out: %w", p.Fence.Epoch, store.ErrFenced)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("postgres: renew owner %s: %w", p.Fence.Owner, err)
	}
	return until.UTC(), nil
}

const ownerColumns = `id, kind, node, host, state_dir, epoch, state, started_at, renewed_at, expires_at, version, config_fp, slots_max, slots_used`

func scanOwner(row pgx.Row) (store.Owner, error) {
	var (
		o           store.Owner
		kind, state string
	)
	err := row.Scan(&o.ID, &kind, &o.Node, &o.Host, &o.StateDir, &o.Epoch, &state, &o.StartedAt, &o.RenewedAt, &o.ExpiresAt,
		&o.Version, &o.ConfigFP, &o.SlotsMax, &o.SlotsUsed)
	o.Kind, o.State = store.OwnerKind(kind), store.OwnerState(state)
	o.StartedAt, o.RenewedAt, o.ExpiresAt = o.StartedAt.UTC(), o.RenewedAt.UTC(), o.ExpiresAt.UTC()
	return o, err
}

// ownerWhere is the condition of f, its arguments numbered from len(args)+1.
func ownerWhere(f store.OwnerFilter, args []any) (string, []any) {
	where := []string{"true"}
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if f.IDs != nil {
		where = append(where, "id = ANY("+arg(f.IDs)+")")
	}
	if f.Kind != "" {
		where = append(where, "kind = "+arg(f.Kind))
	}
	if f.Node != "" {
		where = append(where, "node = "+arg(f.Node))
	}
	if f.Host != "" {
		where = append(where, "host = "+arg(f.Host))
	}
	if f.StateDir != "" {
		where = append(where, "state_dir = "+arg(f.StateDir))
	}
	if f.States != nil {
		states := make([]string, len(f.States))
		for i, st := range f.States {
			states[i] = string(st)
		}
		where = append(where, "state = ANY("+arg(states)+")")
	}
	return strings.Join(where, " AND "), args
}

// Owners returns the owners f selects, by StartedAt then ID.
func (s *Store) Owners(ctx context.Context, f store.OwnerFilter) ([]store.Owner, error) {
	where, args := ownerWhere(f, nil)
	rows, err := s.pool.Query(ctx, `SELECT `+ownerColumns+` FROM owners WHERE `+where+` ORDER BY started_at, id COLLATE "C"`, args...)
	if err == nil {
		var out []store.Owner
		if out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Owner, error) { return scanOwner(row) }); err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("postgres: owners: %w", mapErr(ctx, err))
}

// FenceOwners fences live owners, each with a new epoch, in one UPDATE,
// which waits for the writes in progress under their fences (FOR SHARE);
// of two at once, the second finds them fenced and skips them. The leader
// row of an owner fenced is deleted in the same transaction. See
// store.Owners.
func (s *Store) FenceOwners(ctx context.Context, p store.FenceOwnersParams) ([]store.Owner, error) {
	if p.Force && len(p.IDs) == 0 {
		return nil, errors.New("postgres: fence owners: Force without IDs")
	}
	where, args := ownerWhere(store.OwnerFilter{IDs: p.IDs, States: []store.OwnerState{store.OwnerLive}}, []any{store.OwnerFenced})
	if !p.Force {
		// statement_timestamp, not now(): that is the transaction's start.
		args = append(args, nowArg(p.Now))
		where += fmt.Sprintf(` AND expires_at < COALESCE($%d::timestamptz, statement_timestamp())`, len(args))
	}
	var fenced []store.Owner
	err := s.tx(ctx, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `UPDATE owners SET state = $1, epoch = nextval('owner_epochs')
			WHERE `+where+` RETURNING `+ownerColumns, args...)
		if err != nil {
			return err
		}
		if fenced, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Owner, error) { return scanOwner(row) }); err != nil {
			return err
		}
		ids := make([]string, len(fenced))
		for i, o := range fenced {
			ids[i] = o.ID
		}
		// Their right to write is gone, and with it a leadership.
		_, err = tx.Exec(ctx, `DELETE FROM leader WHERE owner = ANY($1)`, ids)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: fence owners: %w", err)
	}
	return fenced, nil
}

// MarkOwnerEnded moves a fenced owner to ended; see store.Owners.
func (s *Store) MarkOwnerEnded(ctx context.Context, id string) error {
	err := s.cas(ctx, `UPDATE owners SET state = $1 WHERE id = $2 AND state = $3`,
		[]any{store.OwnerEnded, id, store.OwnerFenced}, `SELECT state FROM owners WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("postgres: mark owner %s ended: %w", id, err)
	}
	return nil
}

// ReleaseOwner moves an ended owner to released, and drops its waiters and
// its holders but p.Keep, in one transaction; see store.Owners.
func (s *Store) ReleaseOwner(ctx context.Context, p store.ReleaseOwnerParams) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE owners SET state = $1 WHERE id = $2 AND state = $3`,
			store.OwnerReleased, p.ID, store.OwnerEnded)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			var state string
			err := tx.QueryRow(ctx, `SELECT state FROM owners WHERE id = $1`, p.ID).Scan(&state)
			if errors.Is(err, pgx.ErrNoRows) {
				return store.ErrNotFound
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("is %s: %w", state, store.ErrConflict)
		}
		_, err = tx.Exec(ctx, `
			WITH h AS (DELETE FROM semaphore_holders WHERE owner = $1 AND holder <> ALL($2))
			DELETE FROM semaphore_waiters WHERE owner = $1`,
			p.ID, append([]string{}, p.Keep...)) // an empty array, not NULL: <> ALL(NULL) is never true
		if err != nil {
			return err
		}
		// Its work is anyone's to claim now.
		tag, err = tx.Exec(ctx, `UPDATE buildsets SET owner = '' WHERE owner = $1 AND state IN ($2, $3) AND pinned_to = ''`,
			p.ID, store.BuildsetAdmitted, store.BuildsetRunning)
		if err != nil || tag.RowsAffected() == 0 {
			return err
		}
		return Notify(ctx, tx, store.TopicClaims, "")
	})
	if err != nil {
		return fmt.Errorf("postgres: release owner %s: %w", p.ID, err)
	}
	return nil
}
