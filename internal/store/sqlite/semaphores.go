package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"

	"github.com/sortie-ci/sortie/internal/store"
)

// UpdateSemaphores reads the holders and waiters of p.Names, calls decide
// and applies its change, in one BEGIN IMMEDIATE transaction: SQLite's
// write lock, taken before the first read, is the lock of every semaphore
// at once, for this process and every other on the file. A waiter is alive
// while its owner is live and its lease runs at p.Now. p.Fence, when set,
// is checked first, in the same transaction.
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
		if p.Fence != (store.Fence{}) {
			if err := s.checkFence(ctx, tx, p.Fence); err != nil {
				return err
			}
		}
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
		if len(ch.AddHolders)+len(ch.AddWaiters) > 0 {
			if p.Fence == (store.Fence{}) {
				return fmt.Errorf("rows added without a fence: %w", store.ErrFenced)
			}
			if err := ch.CheckOwner(p.Fence.Owner); err != nil {
				return err
			}
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
// names, in the order of Waiters, each alive while its owner is live and
// its lease runs at now.
func (s *Store) txWaiters(ctx context.Context, tx *sql.Tx, names string, now int64) ([]store.WaiterView, error) {
	rows, err := s.txQuery(ctx, tx, `
		SELECT w.semaphore, w.holder, w.buildset, w.owner, w.precedence, w.since,
			COALESCE(o.state = 'live' AND o.expires_at >= ?, 0)
		FROM semaphore_waiters w LEFT JOIN owners o ON o.id = w.owner
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

// ReleaseSemaphores drops the holder's holds and waits that are f's
// owner's, if f is live. Releasing what is not held is not an error.
func (s *Store) ReleaseSemaphores(ctx context.Context, holder string, f store.Fence) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.checkFence(ctx, tx, f); err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, `DELETE FROM semaphore_holders WHERE holder = ? AND owner = ?`, holder, f.Owner); err != nil {
			return err
		}
		_, err := s.txExec(ctx, tx, `DELETE FROM semaphore_waiters WHERE holder = ? AND owner = ?`, holder, f.Owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: release %s: %w", holder, err)
	}
	return nil
}

// ReleaseBuildset drops every hold and wait of a buildset, its pipeline
// semaphore's and its builds', that are f's owner's, if f is live.
func (s *Store) ReleaseBuildset(ctx context.Context, buildsetID string, f store.Fence) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.checkFence(ctx, tx, f); err != nil {
			return err
		}
		if _, err := s.txExec(ctx, tx, `DELETE FROM semaphore_holders WHERE buildset = ? AND owner = ?`, buildsetID, f.Owner); err != nil {
			return err
		}
		_, err := s.txExec(ctx, tx, `DELETE FROM semaphore_waiters WHERE buildset = ? AND owner = ?`, buildsetID, f.Owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite: release buildset %s: %w", buildsetID, err)
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
