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
// not mixed up. A waiter is alive unless its owner has a lease row that
// ended before p.Now.
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
// Waiters, each alive unless its owner's lease ended before now.
func queryWaiters(ctx context.Context, q conn, names []string, now time.Time) ([]store.WaiterView, error) {
	rows, err := q.Query(ctx, `
		SELECT w.semaphore, w.holder, w.buildset, w.owner, w.precedence, w.since,
			l.expires_at IS NULL OR l.expires_at >= $2
		FROM semaphore_waiters w LEFT JOIN leases l ON l.owner = w.owner
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

// ReleaseSemaphores drops the holder's holds and waits, in one statement.
// Releasing what is not held is not an error.
func (s *Store) ReleaseSemaphores(ctx context.Context, holder string) error {
	_, err := s.exec(ctx, `
		WITH h AS (DELETE FROM semaphore_holders WHERE holder = $1)
		DELETE FROM semaphore_waiters WHERE holder = $1`, holder)
	if err != nil {
		return fmt.Errorf("postgres: release %s: %w", holder, err)
	}
	return nil
}

// ReleaseBuildset drops every hold and wait of a buildset, its pipeline
// semaphore's and its builds', in one statement.
func (s *Store) ReleaseBuildset(ctx context.Context, buildsetID string) error {
	_, err := s.exec(ctx, `
		WITH h AS (DELETE FROM semaphore_holders WHERE buildset = $1)
		DELETE FROM semaphore_waiters WHERE buildset = $1`, buildsetID)
	if err != nil {
		return fmt.Errorf("postgres: release buildset %s: %w", buildsetID, err)
	}
	return nil
}

// ReleaseOwner drops every holder and waiter of owner, but the holders
// named in keep, and its lease row, in one statement, whatever the lease
// says: a restarted server that holds the state directory's lock knows its
// predecessor is dead, and a reaper has ended an expired owner's builds.
// A kept holder has no lease row left, so no acquirer takes it for dead:
// it waits for its buildset's adopter. ExpiredOwners will not report the
// owner afterwards. Releasing an unknown owner is not an error.
func (s *Store) ReleaseOwner(ctx context.Context, owner string, keep []string) error {
	_, err := s.exec(ctx, `
		WITH h AS (DELETE FROM semaphore_holders WHERE owner = $1 AND holder <> ALL($2)),
		     w AS (DELETE FROM semaphore_waiters WHERE owner = $1)
		DELETE FROM leases WHERE owner = $1`,
		owner, append([]string{}, keep...)) // an empty array, not NULL: <> ALL(NULL) is never true
	if err != nil {
		return fmt.Errorf("postgres: release owner %s: %w", owner, err)
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

// RenewLease keeps an owner's holders and waiters alive until until
// (inclusive). It may also shorten a lease.
func (s *Store) RenewLease(ctx context.Context, owner string, until time.Time) error {
	if until.IsZero() {
		return fmt.Errorf("postgres: renew lease %s: %w", owner, errZeroTime("until"))
	}
	_, err := s.exec(ctx, `
		INSERT INTO leases (owner, expires_at) VALUES ($1, $2)
		ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at`,
		owner, until)
	if err != nil {
		return fmt.Errorf("postgres: renew lease %s: %w", owner, err)
	}
	return nil
}

// LeaseAlive reports whether owner's lease runs at now.
func (s *Store) LeaseAlive(ctx context.Context, owner string, now time.Time) (bool, error) {
	var alive bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM leases WHERE owner = $1 AND expires_at >= $2)`,
		owner, now).Scan(&alive)
	if err != nil {
		return false, fmt.Errorf("postgres: lease of %s: %w", owner, mapErr(ctx, err))
	}
	return alive, nil
}

// ExpiredOwners returns the owners whose lease ended before now, sorted.
// It changes nothing: their holders keep their slots until ReleaseOwner.
func (s *Store) ExpiredOwners(ctx context.Context, now time.Time) ([]string, error) {
	if now.IsZero() {
		return nil, fmt.Errorf("postgres: expired owners: %w", errZeroTime("now"))
	}
	rows, err := s.pool.Query(ctx, `SELECT owner FROM leases WHERE expires_at < $1 ORDER BY owner COLLATE "C"`, now)
	if err == nil {
		var owners []string
		if owners, err = pgx.CollectRows(rows, pgx.RowTo[string]); err == nil {
			return owners, nil
		}
	}
	return nil, fmt.Errorf("postgres: expired owners: %w", mapErr(ctx, err))
}
