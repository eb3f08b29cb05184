package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sortie-ci/sortie/internal/store"
)

// UpdateSemaphores locks p.Names, reads their holders and waiters, calls
// decide and applies its change, in one READ COMMITTED transaction.
//
// The lock of a semaphore is a transaction-level advisory lock,
// pg_advisory_xact_lock(lockSemaphores, hashtext(name)), taken for each
// name in sorted order, one statement each (a batch runs them in order),
// so that two updates of overlapping names queue instead of deadlocking;
// it is released at commit or rollback. Each later statement takes a
// fresh snapshot, so the reads see every row that the previous holder of
// any of the locks committed. Rows of holders and waiters are inserted
// only here, under their semaphore's lock; deletes happen anywhere and can
// only make room, so a decision can find less room than there is, never
// more. Two names whose hashes collide share a lock: they are serialised,
// not mixed up. A waiter is alive while its owner is live and its lease
// runs at p.Now. p.Fence, when set, is checked (FOR SHARE) right after
// the locks, before anything is read: the owner's row is locked after the
// advisory locks, as everywhere (see the package's lock order).
func (s *Store) UpdateSemaphores(ctx context.Context, p store.LockSemaphoresParams, decide func(store.SemaphoreView) (store.SemaphoreChange, error)) error {
	if p.Now.IsZero() {
		return fmt.Errorf("postgres: update semaphores %v: %w", p.Names, errZeroTime("Now"))
	}
	names := slices.Compact(slices.Sorted(slices.Values(p.Names)))
	if names == nil {
		names = []string{} // an empty array, not NULL
	}
	locked := make(map[string]bool, len(names))
	for _, n := range names {
		locked[n] = true
	}
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if len(names) > 0 {
			b := &pgx.Batch{}
			for _, n := range names {
				b.Queue(`SELECT pg_advisory_xact_lock($1, hashtext($2))`, lockSemaphores, n)
			}
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
		}
		if p.Fence != (store.Fence{}) {
			if err := checkFence(ctx, tx, p.Fence); err != nil {
				return err
			}
		}
		v := store.SemaphoreView{Now: p.Now}
		var err error
		if v.Holders, err = queryHolders(ctx, tx, `WHERE semaphore = ANY($1)`, names); err != nil {
			return err
		}
		if v.Waiters, err = queryWaiters(ctx, tx, names, p.Now); err != nil {
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
			if _, err := tx.Exec(ctx, `DELETE FROM semaphore_waiters WHERE semaphore = $1 AND holder = $2`,
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
			if _, err := tx.Exec(ctx, `
				INSERT INTO semaphore_holders (semaphore, holder, buildset, owner, acquired_at)
				VALUES ($1, $2, $3, $4, $5)`,
				h.Semaphore, h.Holder, h.Buildset, h.Owner, h.AcquiredAt); err != nil {
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
			if _, err := tx.Exec(ctx, `
				INSERT INTO semaphore_waiters (semaphore, holder, buildset, owner, precedence, since)
				VALUES ($1, $2, $3, $4, $5, $6)
				ON CONFLICT (semaphore, holder) DO NOTHING`,
				w.Semaphore, w.Holder, w.Buildset, w.Owner, w.Precedence, w.Since); err != nil {
				return fmt.Errorf("add waiter %s of semaphore %s: %w", w.Holder, w.Semaphore, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres: update semaphores %v: %w", p.Names, err)
	}
	return nil
}

// queryHolders reads the holder rows that where selects, in the order of
// Holders.
func queryHolders(ctx context.Context, q conn, where string, args ...any) ([]store.Holder, error) {
	rows, err := q.Query(ctx, `SELECT semaphore, holder, buildset, owner, acquired_at FROM semaphore_holders `+where+`
		ORDER BY semaphore COLLATE "C", acquired_at, holder COLLATE "C"`, args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Holder, error) {
		var h store.Holder
		err := row.Scan(&h.Semaphore, &h.Holder, &h.Buildset, &h.Owner, &h.AcquiredAt)
		h.AcquiredAt = h.AcquiredAt.UTC()
		return h, err
	})
}

// queryWaiters reads the waiters of the semaphores names, in the order of
// Waiters, each alive while its owner is live and its lease runs at now.
func queryWaiters(ctx context.Context, q conn, names []string, now time.Time) ([]store.WaiterView, error) {
	rows, err := q.Query(ctx, `
		SELECT w.semaphore, w.holder, w.buildset, w.owner, w.precedence, w.since,
			COALESCE(o.state = 'live' AND o.expires_at >= $2, false)
		FROM semaphore_waiters w LEFT JOIN owners o ON o.id = w.owner
		WHERE w.semaphore = ANY($1)
		ORDER BY w.semaphore COLLATE "C", w.since, w.holder COLLATE "C"`, names, now)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.WaiterView, error) {
		var w store.WaiterView
		err := row.Scan(&w.Semaphore, &w.Holder, &w.Buildset, &w.Owner, &w.Precedence, &w.Since, &w.Alive)
		w.Since = w.Since.UTC()
		return w, err
	})
}

// ReleaseSemaphores drops the holder's holds and waits that are f's
// owner's, if f is live. Releasing what is not held is not an error.
func (s *Store) ReleaseSemaphores(ctx context.Context, holder string, f store.Fence) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := checkFence(ctx, tx, f); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			WITH h AS (DELETE FROM semaphore_holders WHERE holder = $1 AND owner = $2)
			DELETE FROM semaphore_waiters WHERE holder = $1 AND owner = $2`, holder, f.Owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: release %s: %w", holder, err)
	}
	return nil
}

// ReleaseBuildset drops every hold and wait of a buildset, its pipeline
// semaphore's and its builds', that are f's owner's, if f is live.
func (s *Store) ReleaseBuildset(ctx context.Context, buildsetID string, f store.Fence) error {
	err := s.tx(ctx, func(tx pgx.Tx) error {
		if err := checkFence(ctx, tx, f); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `
			WITH h AS (DELETE FROM semaphore_holders WHERE buildset = $1 AND owner = $2)
			DELETE FROM semaphore_waiters WHERE buildset = $1 AND owner = $2`, buildsetID, f.Owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: release buildset %s: %w", buildsetID, err)
	}
	return nil
}

// Holders lists the holders by semaphore, then acquisition time, then
// holder.
func (s *Store) Holders(ctx context.Context) ([]store.Holder, error) {
	hs, err := queryHolders(ctx, s.pool, "")
	if err != nil {
		return nil, fmt.Errorf("postgres: holders: %w", mapErr(ctx, err))
	}
	return hs, nil
}

// Waiters lists the waiters by semaphore, then Since, then holder.
func (s *Store) Waiters(ctx context.Context) ([]store.Waiter, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT semaphore, holder, buildset, owner, precedence, since FROM semaphore_waiters
		ORDER BY semaphore COLLATE "C", since, holder COLLATE "C"`)
	if err == nil {
		var ws []store.Waiter
		ws, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Waiter, error) {
			var w store.Waiter
			err := row.Scan(&w.Semaphore, &w.Holder, &w.Buildset, &w.Owner, &w.Precedence, &w.Since)
			w.Since = w.Since.UTC()
			return w, err
		})
		if err == nil {
			return ws, nil
		}
	}
	return nil, fmt.Errorf("postgres: waiters: %w", mapErr(ctx, err))
}
