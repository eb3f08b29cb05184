package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"time"

	"github.com/sortie-ci/sortie/internal/store"
)

// UpdateSemaphores reads the holders and waiters of p.Names, calls decide
// and applies its change, in one BEGIN IMMEDIATE transaction: SQLite's
// write lock, taken before the first read, is the lock of every semaphore
// at once, for this process and every other on the file. A waiter is alive
// unless its owner has a lease row that ended before p.Now.
func (s *Store) UpdateSemaphores(ctx context.Context, p store.LockSemaphoresParams, decide func(store.SemaphoreView) (store.SemaphoreChange, error)) error {
	if p.Now.IsZero() {
		return fmt.Errorf("sqlite: update semaphores %v: %w", p.Names, errZeroTime("Now"))
	}
	// One statement whatever len(p.Names): the names travel as a JSON array.
	names, err := json.Marshal(append([]string{}, p.Names...))
	if err != nil {
		return fmt.Errorf("sqlite: update semaphores %v: %w", p.Names, err)
	}
	locked := make(map[string]bool, len(p.Names))
	for _, n := range p.Names {
		locked[n] = true
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		v := store.SemaphoreView{Now: p.Now}
		var err error
		if v.Holders, err = s.txHolders(ctx, tx, string(names)); err != nil {
			return err
		}
		if v.Waiters, err = s.txWaiters(ctx, tx, string(names), nanos(p.Now)); err != nil {
			return err
		}
		ch, err := decide(v)
		if err != nil {
			return err
		}
		for _, w := range ch.DropWaiters {
			if !locked[w.Semaphore] {
				return fmt.Errorf("drop waiter %s of semaphore %s, which is not locked", w.Holder, w.Semaphore)
			}
			if _, err := s.txExec(ctx, tx, `DELETE FROM semaphore_waiters WHERE semaphore = ? AND holder = ?`,
				w.Semaphore, w.Holder); err != nil {
				return err
			}
		}
		for _, h := range ch.AddHolders {
			if !locked[h.Semaphore] {
				return fmt.Errorf("add holder %s of semaphore %s, which is not locked", h.Holder, h.Semaphore)
			}
			if h.AcquiredAt.IsZero() {
				return fmt.Errorf("add holder %s of semaphore %s: %w", h.Holder, h.Semaphore, errZeroTime("AcquiredAt"))
			}
			if _, err := s.txExec(ctx, tx, `
				INSERT INTO semaphore_holders (semaphore, holder, buildset, owner, acquired_at)
				VALUES (?, ?, ?, ?, ?)`,
				h.Semaphore, h.Holder, h.Buildset, h.Owner, nanos(h.AcquiredAt)); err != nil {
				return fmt.Errorf("add holder %s of semaphore %s: %w", h.Holder, h.Semaphore, err)
			}
		}
		for _, w := range ch.AddWaiters {
			if !locked[w.Semaphore] {
				return fmt.Errorf("add waiter %s of semaphore %s, which is not locked", w.Holder, w.Semaphore)
			}
			if w.Since.IsZero() {
				return fmt.Errorf("add waiter %s of semaphore %s: %w", w.Holder, w.Semaphore, errZeroTime("Since"))
			}
			if _, err := s.txExec(ctx, tx, `
				INSERT INTO semaphore_waiters (semaphore, holder, buildset, owner, precedence, since)
				VALUES (?, ?, ?, ?, ?, ?)
				ON CONFLICT (semaphore, holder) DO NOTHING`,
				w.Semaphore, w.Holder, w.Buildset, w.Owner, w.Precedence, nanos(w.Since)); err != nil {
				return fmt.Errorf("add waiter %s of semaphore %s: %w", w.Holder, w.Semaphore, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: update semaphores %v: %w", p.Names, err)
	}
	return nil
}

// txHolders reads the holders of the semaphores named in the JSON array
// names, in the order of Holders.
func (s *Store) txHolders(ctx context.Context, tx *sql.Tx, names string) ([]store.Holder, error) {
	rows, err := s.txQuery(ctx, tx, `
		SELECT semaphore, holder, buildset, owner, acquired_at FROM semaphore_holders
		WHERE semaphore IN (SELECT value FROM json_each(?))
		ORDER BY semaphore, acquired_at, holder`, names)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Holder
	for rows.Next() {
		var (
			h  store.Holder
			at int64
		)
		if err := rows.Scan(&h.Semaphore, &h.Holder, &h.Buildset, &h.Owner, &at); err != nil {
			return nil, err
		}
		h.AcquiredAt = fromNanos(at)
		out = append(out, h)
	}
	return out, rows.Err()
}

// txWaiters reads the waiters of the semaphores named in the JSON array
// names, in the order of Waiters, each alive unless its owner's lease
// ended before now.
func (s *Store) txWaiters(ctx context.Context, tx *sql.Tx, names string, now int64) ([]store.WaiterView, error) {
	rows, err := s.txQuery(ctx, tx, `
		SELECT w.semaphore, w.holder, w.buildset, w.owner, w.precedence, w.since,
			l.expires_at IS NULL OR l.expires_at >= ?
		FROM semaphore_waiters w LEFT JOIN leases l ON l.owner = w.owner
		WHERE w.semaphore IN (SELECT value FROM json_each(?))
		ORDER BY w.semaphore, w.since, w.holder`, now, names)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.WaiterView
	for rows.Next() {
		var (
			w     store.WaiterView
			since int64
		)
		if err := rows.Scan(&w.Semaphore, &w.Holder, &w.Buildset, &w.Owner, &w.Precedence, &since, &w.Alive); err != nil {
			return nil, err
		}
		w.Since = fromNanos(since)
		out = append(out, w)
	}
	return out, rows.Err()
}

// ReleaseSemaphores drops the holder's holds and waits. Releasing what is
// not held is not an error.
func (s *Store) ReleaseSemaphores(ctx context.Context, holder string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := s.txExec(ctx, tx, `DELETE FROM semaphore_holders WHERE holder = ?`, holder); err != nil {
			return err
		}
		_, err := s.txExec(ctx, tx, `DELETE FROM semaphore_waiters WHERE holder = ?`, holder)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: release %s: %w", holder, err)
	}
	return nil
}

// ReleaseBuildset drops every hold and wait of a buildset: its pipeline
// semaphore and its builds' semaphores.
func (s *Store) ReleaseBuildset(ctx context.Context, buildsetID string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := s.txExec(ctx, tx, `DELETE FROM semaphore_holders WHERE buildset = ?`, buildsetID); err != nil {
			return err
		}
		_, err := s.txExec(ctx, tx, `DELETE FROM semaphore_waiters WHERE buildset = ?`, buildsetID)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: release buildset %s: %w", buildsetID, err)
	}
	return nil
}

// ReleaseOwner drops every holder and waiter of owner, but the holders
// named in keep, and its lease row, in one transaction, whatever the lease
// says: a restarted server that holds the state directory's lock knows its
// predecessor is dead, and a reaper has ended an expired owner's builds.
// A kept holder has no lease row left, so no acquirer takes it for dead:
// it waits for its buildset's adopter. ExpiredOwners will not report the
// owner afterwards. Releasing an unknown owner is not an error.
func (s *Store) ReleaseOwner(ctx context.Context, owner string, keep []string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		// One statement whatever len(keep): the kept holders travel as a
		// JSON array.
		kept, err := json.Marshal(append([]string{}, keep...))
		if err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, `DELETE FROM semaphore_holders
			WHERE owner = ? AND holder NOT IN (SELECT value FROM json_each(?))`, owner, string(kept)); err != nil {
			return err
		}
		for _, q := range []string{
			`DELETE FROM semaphore_waiters WHERE owner = ?`,
			`DELETE FROM leases WHERE owner = ?`,
		} {
			if _, err := s.txExec(ctx, tx, q, owner); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite: release owner %s: %w", owner, err)
	}
	return nil
}

// Holders lists the holders by semaphore, then acquisition time, then
// holder.
func (s *Store) Holders(ctx context.Context) ([]store.Holder, error) {
	rows, err := s.rows(ctx, `
		SELECT semaphore, holder, buildset, owner, acquired_at FROM semaphore_holders
		ORDER BY semaphore, acquired_at, holder`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: holders: %w", err)
	}
	defer rows.Close()
	var out []store.Holder
	for rows.Next() {
		var (
			h  store.Holder
			at int64
		)
		if err := rows.Scan(&h.Semaphore, &h.Holder, &h.Buildset, &h.Owner, &at); err != nil {
			return nil, fmt.Errorf("sqlite: holders: %w", err)
		}
		h.AcquiredAt = fromNanos(at)
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: holders: %w", err)
	}
	return out, nil
}

// Waiters lists the waiters by semaphore, then Since, then holder.
func (s *Store) Waiters(ctx context.Context) ([]store.Waiter, error) {
	rows, err := s.rows(ctx, `
		SELECT semaphore, holder, buildset, owner, precedence, since FROM semaphore_waiters
		ORDER BY semaphore, since, holder`)
	if err != nil {
		return nil, fmt.Errorf("sqlite: waiters: %w", err)
	}
	defer rows.Close()
	var out []store.Waiter
	for rows.Next() {
		var (
			w     store.Waiter
			since int64
		)
		if err := rows.Scan(&w.Semaphore, &w.Holder, &w.Buildset, &w.Owner, &w.Precedence, &since); err != nil {
			return nil, fmt.Errorf("sqlite: waiters: %w", err)
		}
		w.Since = fromNanos(since)
		out = append(out, w)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: waiters: %w", err)
	}
	return out, nil
}

// RenewLease keeps an owner's holders and waiters alive until until
// (inclusive). It may also shorten a lease.
func (s *Store) RenewLease(ctx context.Context, owner string, until time.Time) error {
	if until.IsZero() {
		return fmt.Errorf("sqlite: renew lease %s: %w", owner, errZeroTime("until"))
	}
	_, err := s.exec(ctx, `
		INSERT INTO leases (owner, expires_at) VALUES (?, ?)
		ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at`,
		owner, nanos(until))
	if err != nil {
		return fmt.Errorf("sqlite: renew lease %s: %w", owner, err)
	}
	return nil
}

// LeaseAlive reports whether owner's lease runs at now.
func (s *Store) LeaseAlive(ctx context.Context, owner string, now time.Time) (bool, error) {
	var n int
	err := s.row(ctx, `SELECT COUNT(*) FROM leases WHERE owner = ? AND expires_at >= ?`, owner, nanos(now)).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("sqlite: lease of %s: %w", owner, err)
	}
	return n > 0, nil
}

// ExpiredOwners returns the owners whose lease ended before now, sorted.
// It changes nothing: their holders keep their slots until ReleaseOwner.
func (s *Store) ExpiredOwners(ctx context.Context, now time.Time) ([]string, error) {
	if now.IsZero() {
		return nil, fmt.Errorf("sqlite: expired owners: %w", errZeroTime("now"))
	}
	rows, err := s.rows(ctx, `SELECT owner FROM leases WHERE expires_at < ? ORDER BY owner`, nanos(now))
	if err != nil {
		return nil, fmt.Errorf("sqlite: expired owners: %w", err)
	}
	defer rows.Close()
	var owners []string
	for rows.Next() {
		var o string
		if err := rows.Scan(&o); err != nil {
			return nil, fmt.Errorf("sqlite: expired owners: %w", err)
		}
		owners = append(owners, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite: expired owners: %w", err)
	}
	return owners, nil
}
