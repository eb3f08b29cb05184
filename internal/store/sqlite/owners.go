package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// checkFence returns ErrFenced unless f's owner is live with f's epoch. It
// runs inside the writing transaction: BEGIN IMMEDIATE holds the write lock
// from before this read to the commit, so no FenceOwners can come between
// the check and the write.
func (s *Store) checkFence(ctx context.Context, tx *sql.Tx, f store.Fence) error {
	return checkFence(ctx, sqlTx{s, tx}, f)
}

// checkFence is Store.checkFence on any write transaction.
func checkFence(ctx context.Context, x wtx, f store.Fence) error {
	var live bool
	err := x.row(ctx, `SELECT EXISTS (SELECT 1 FROM owners WHERE id = ? AND epoch = ? AND state = ?)`,
		f.Owner, f.Epoch, store.OwnerLive).Scan(&live)
	if err != nil {
		return err
	}
	if !live {
		return fmt.Errorf("owner %q epoch %d: %w", f.Owner, f.Epoch, store.ErrFenced)
	}
	return nil
}

// fenceCond is checkFence as a term of a write's WHERE, with fenceArgs:
// under BEGIN IMMEDIATE nothing changes between the statements of a
// transaction, so a write that carries it and changes its row was the live
// owner's, one statement instead of two. A write that changes no row asks
// why, the fence first (checkFence), so that a fenced owner is told so
// whatever else is wrong with its write.
const fenceCond = `EXISTS (SELECT 1 FROM owners WHERE id = ? AND epoch = ? AND state = '` + string(store.OwnerLive) + `')`

func fenceArgs(f store.Fence) []any { return []any{f.Owner, f.Epoch} }

// clock is now, or the time of this host when now is zero: SQLite is one
// host's database.
func clock(now time.Time) time.Time {
	if now.IsZero() {
		return time.Now()
	}
	return now
}

// RegisterOwner inserts a live owner with the next epoch (one above the
// largest given: owner rows are never deleted) and returns its Fence; see
// store.Owners.
func (s *Store) RegisterOwner(ctx context.Context, p store.RegisterOwnerParams) (store.Fence, error) {
	if p.ID == "" || p.Kind == "" {
		return store.Fence{}, errors.New("sqlite: register owner: no id or kind")
	}
	if p.Lease <= 0 {
		return store.Fence{}, fmt.Errorf("sqlite: register owner %s: lease %v is not above zero", p.ID, p.Lease)
	}
	now := clock(p.Now)
	var epoch int64
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var exists bool
		if err := s.txRow(ctx, tx, `SELECT EXISTS (SELECT 1 FROM owners WHERE id = ?)`, p.ID).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return fmt.Errorf("registered before: %w", store.ErrConflict)
		}
		if err := s.txRow(ctx, tx, `SELECT COALESCE(MAX(epoch), 0) + 1 FROM owners`).Scan(&epoch); err != nil {
			return err
		}
		_, err := s.txExec(ctx, tx, `
			INSERT INTO owners (id, kind, node, host, state_dir, epoch, state, started_at, renewed_at, expires_at,
				version, config_fp, slots_max)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			p.ID, p.Kind, p.Node, p.Host, p.StateDir, epoch, store.OwnerLive, nanos(now), nanos(now), nanos(now.Add(p.Lease)),
			p.Version, p.ConfigFP, p.SlotsMax)
		return err
	})
	if err != nil {
		return store.Fence{}, fmt.Errorf("sqlite: register owner %s: %w", p.ID, err)
	}
	return store.Fence{Owner: p.ID, Epoch: epoch}, nil
}

// RenewOwner extends a live owner's lease that has not run out; see
// store.Owners.
func (s *Store) RenewOwner(ctx context.Context, p store.RenewOwnerParams) (time.Time, error) {
	if p.Lease <= 0 {
		return time.Time{}, fmt.Errorf("sqlite: renew owner %s: lease %v is not above zero", p.Fence.Owner, p.Lease)
	}
	now := clock(p.Now)
	until := now.Add(p.Lease)
	res, err := s.exec(ctx, `
		UPDATE owners SET renewed_at = ?, expires_at = ?, slots_used = ?,
			config_fp = CASE WHEN ? = '' THEN config_fp ELSE ? END,
			slots_max = CASE WHEN ? > 0 THEN ? ELSE slots_max END
		WHERE id = ? AND epoch = ? AND state = ? AND expires_at >= ?`,
		nanos(now), nanos(until), p.SlotsUsed, p.ConfigFP, p.ConfigFP, p.SlotsMax, p.SlotsMax, p.Fence.Owner, p.Fence.Epoch, store.OwnerLive, nanos(now))
	if err == nil {
		var n int64
		if n, err = res.RowsAffected(); err == nil && n != 1 {
			err = fmt.Errorf("epoch %d: not live, or its lease ran out: %w", p.Fence.Epoch, store.ErrFenced)
		}
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("sqlite: renew owner %s: %w", p.Fence.Owner, err)
	}
	return until.UTC(), nil
}

const ownerColumns = `id, kind, node, host, state_dir, epoch, state, started_at, renewed_at, expires_at, version, config_fp, slots_max, slots_used`

func scanOwner(row scanner) (store.Owner, error) {
	var (
		o                         store.Owner
		kind, state               string
		started, renewed, expires int64
	)
	err := row.Scan(&o.ID, &kind, &o.Node, &o.Host, &o.StateDir, &o.Epoch, &state, &started, &renewed, &expires,
		&o.Version, &o.ConfigFP, &o.SlotsMax, &o.SlotsUsed)
	o.Kind, o.State = store.OwnerKind(kind), store.OwnerState(state)
	o.StartedAt, o.RenewedAt, o.ExpiresAt = fromNanos(started), fromNanos(renewed), fromNanos(expires)
	return o, err
}

// ownerWhere is the WHERE clause and arguments of f.
func ownerWhere(f store.OwnerFilter) (string, []any) {
	var (
		where []string
		args  []any
	)
	in := func(col string, vals []string) {
		b, _ := json.Marshal(vals) // strings: cannot fail
		where = append(where, col+` IN (SELECT value FROM json_each(?))`)
		args = append(args, string(b))
	}
	if f.IDs != nil {
		in("id", f.IDs)
	}
	for col, v := range map[string]string{"kind": string(f.Kind), "node": f.Node, "host": f.Host, "state_dir": f.StateDir} {
		if v != "" {
			where = append(where, col+` = ?`)
			args = append(args, v)
		}
	}
	if f.States != nil {
		states := make([]string, len(f.States))
		for i, st := range f.States {
			states[i] = string(st)
		}
		in("state", states)
	}
	if len(where) == 0 {
		return "", nil
	}
	return ` WHERE ` + strings.Join(where, " AND "), args
}

// Owners returns the owners f selects, by StartedAt then ID.
func (s *Store) Owners(ctx context.Context, f store.OwnerFilter) ([]store.Owner, error) {
	where, args := ownerWhere(f)
	_ = s.settle(ctx)
	rows, err := s.r.QueryContext(ctx, `SELECT `+ownerColumns+` FROM owners`+where+` ORDER BY started_at, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite: owners: %w", err)
	}
	defer rows.Close()
	var out []store.Owner
	for rows.Next() {
		o, err := scanOwner(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite: owners: %w", err)
		}
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: owners: %w", err)
	}
	return out, nil
}

// FenceOwners fences live owners, each with a new epoch, in one
// transaction; see store.Owners.
func (s *Store) FenceOwners(ctx context.Context, p store.FenceOwnersParams) ([]store.Owner, error) {
	if p.Force && len(p.IDs) == 0 {
		return nil, errors.New("sqlite: fence owners: Force without IDs")
	}
	now := clock(p.Now)
	// A dead process's journal is applied while its owner may still write:
	// once fenced, its batches would be refused.
	if err := s.recoverJournals(ctx); err != nil {
		return nil, fmt.Errorf("sqlite: fence owners: %w", err)
	}
	var fenced []store.Owner
	err := s.tx(ctx, func(tx *sql.Tx) error {
		fenced = nil
		f := store.OwnerFilter{IDs: p.IDs, States: []store.OwnerState{store.OwnerLive}}
		where, args := ownerWhere(f)
		if !p.Force {
			where += ` AND expires_at < ?`
			args = append(args, nanos(now))
		}
		rows, err := s.txQuery(ctx, tx, `SELECT id FROM owners`+where+` ORDER BY started_at, id`, args...)
		if err != nil {
			return err
		}
		var ids []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids = append(ids, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range ids {
			if _, err := s.txExec(ctx, tx, `
				UPDATE owners SET state = ?, epoch = (SELECT MAX(epoch) + 1 FROM owners) WHERE id = ? AND state = ?`,
				store.OwnerFenced, id, store.OwnerLive); err != nil {
				return err
			}
			// Its right to write is gone, and with it its leadership.
			if _, err := s.txExec(ctx, tx, `DELETE FROM leader WHERE owner = ?`, id); err != nil {
				return err
			}
			o, err := scanOwner(s.txRow(ctx, tx, `SELECT `+ownerColumns+` FROM owners WHERE id = ?`, id))
			if err != nil {
				return err
			}
			fenced = append(fenced, o)
		}
		return nil
	})
	// The fences this store saw live are read again.
	s.j.forgetFences()
	if err != nil {
		return nil, fmt.Errorf("sqlite: fence owners: %w", err)
	}
	return fenced, nil
}

// MarkOwnerEnded moves a fenced owner to ended; see store.Owners.
func (s *Store) MarkOwnerEnded(ctx context.Context, id string) error {
	if err := s.cas(ctx, "owners", "id = ?", []any{id}, `state = ?`, []any{store.OwnerEnded}, store.OwnerFenced); err != nil {
		return fmt.Errorf("sqlite: mark owner %s ended: %w", id, err)
	}
	return nil
}

// ReleaseOwner moves an ended owner to released, and drops its waiters and
// its holders but p.Keep, in one transaction; see store.Owners.
func (s *Store) ReleaseOwner(ctx context.Context, p store.ReleaseOwnerParams) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := s.txExec(ctx, tx, `UPDATE owners SET state = ? WHERE id = ? AND state = ?`,
			store.OwnerReleased, p.ID, store.OwnerEnded)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n != 1 {
			var state string
			err := s.txRow(ctx, tx, `SELECT state FROM owners WHERE id = ?`, p.ID).Scan(&state)
			if errors.Is(err, sql.ErrNoRows) {
				return store.ErrNotFound
			}
			if err != nil {
				return err
			}
			return fmt.Errorf("is %s: %w", state, store.ErrConflict)
		}
		// One statement whatever len(keep): the kept holders travel as a
		// JSON array.
		kept, err := json.Marshal(append([]string{}, p.Keep...))
		if err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, `DELETE FROM semaphore_holders
			WHERE owner = ? AND holder NOT IN (SELECT value FROM json_each(?))`, p.ID, string(kept)); err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, `DELETE FROM semaphore_waiters WHERE owner = ?`, p.ID); err != nil {
			return err
		}
		// Its work is anyone's to claim now.
		_, err = s.txExec(ctx, tx, `UPDATE buildsets SET owner = '' WHERE owner = ? AND state IN (?, ?) AND pinned_to = ''`,
			p.ID, store.BuildsetAdmitted, store.BuildsetRunning)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: release owner %s: %w", p.ID, err)
	}
	return nil
}
