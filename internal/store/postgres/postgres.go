// Package postgres is Sortie's store on PostgreSQL, for several sortie
// processes, on several hosts, sharing the work (SPEC §2.5). It uses pgx
// through a pgxpool.Pool.
//
// Open applies the embedded migrations (migrations/*.sql, PostgreSQL's
// dialect), each in its own transaction under one advisory lock, so that
// nodes that start at once apply each migration exactly once.
//
// Sessions run with idle_in_transaction_session_timeout=5s and
// lock_timeout=10s unless the URL sets them: a process stopped inside a
// transaction (SIGSTOP, a paused VM) holds its locks for seconds, not for
// as long as it is stopped, and a statement waiting for a lock fails instead
// of hanging behind it.
//
// Errors: a write the database refuses for now (it is unreachable, shutting
// down, out of connections or of disk) wraps store.ErrUnavailable; a unique
// violation wraps store.ErrConflict. A write whose connection broke after it
// was sent may or may not have committed: it too wraps ErrUnavailable, and
// the caller that tries it again must expect either outcome.
//
// Notifications: a Notifier listens on one connection of its own and fans
// NOTIFYs out to in-process subscribers; writers call Notify inside their
// transaction, so a notification is sent at commit and dropped on rollback.
//
// Advisory lock keys (two int4 keys): class 0x736f7275 holds the singleton
// locks, objid 1 for migrations, 3 for making buildsets (objid 2 is kept
// for admission); class 0x736f7274 is for semaphores, one lock per name
// (hashtext of the name: two names that collide only share a lock).
//
// Fencing: a write that carries a store.Fence first reads its owner's row
// FOR SHARE (checkFence) and is refused with store.ErrFenced unless the
// owner is live with that epoch; FenceOwners' UPDATE of the row waits for
// those shares, so a write is either committed before its owner was fenced
// or refused after it. Lease times not given (a zero Now) are the
// database's clock (statement_timestamp()), so no host's clock decides a
// lease.
//
// Leadership: the leader row's expiry is judged on the database's clock
// too. A write under a leader's term (a cron tick, a poll mark) reads the
// row FOR SHARE (checkTerm), so an Elect that replaces the term waits for
// it: the write is committed before the term ended or refused after it.
//
// Lock order, so that transactions cannot deadlock on each other:
// advisory locks (semaphores in sorted order) -> owners (the fence's row
// FOR SHARE; FenceOwners and ReleaseOwner update it) -> buildsets ->
// builds -> attempts -> semaphore holders and waiters. A deadlock that
// happens anyway (two multi-row deletes meeting) aborts one transaction,
// which tx runs again.
//
// Times are timestamptz: microseconds, read back in UTC. A time with
// nanoseconds is truncated to the microsecond (storetest's precision).
// Text is ordered byte by byte (COLLATE "C"), whatever the database's
// collation, as SQLite and Go's sort order it.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/sortie-ci/sortie/internal/store"
)

var _ store.Store = (*Store)(nil)

// lockClass is the first key of Sortie's singleton advisory locks ('soru').
const lockClass = 0x736f7275

// Objids of the singleton advisory locks in lockClass.
const (
	lockMigrate = 1
	// lockCreate orders the buildsets made at once (CreateBuildset).
	lockCreate = 3
)

// lockSemaphores is the first key of the semaphores' advisory locks
// ('sort'); the second is the hashtext of the semaphore's name.
const lockSemaphores = 0x736f7274

// sessionDefaults are the session settings every connection starts with,
// unless the URL names them (any setting in a URL's query is sent as one).
var sessionDefaults = map[string]string{
	"application_name":                    "sortie",
	"idle_in_transaction_session_timeout": "5s",
	"lock_timeout":                        "10s",
}

// connectTimeout bounds a connection attempt when the URL sets no
// connect_timeout: a host that drops packets fails the attempt as
// unavailable instead of hanging it until the caller's deadline.
const connectTimeout = 10 * time.Second

// Store is Sortie's PostgreSQL store. It is safe for concurrent use, and
// several processes may open one database.
type Store struct {
	store.FencedCounter
	pool *pgxpool.Pool
}

// Open connects to the database at url (postgres://user:password@host:port/db?
// pool_max_conns=N...) and applies the migrations it lacks. A database
// that cannot be reached gives an error wrapping store.ErrUnavailable. The
// caller closes the Store.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	for k, v := range sessionDefaults {
		if _, ok := cfg.ConnConfig.RuntimeParams[k]; !ok {
			cfg.ConnConfig.RuntimeParams[k] = v
		}
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = connectTimeout
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", mapErr(ctx, err))
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	return s, nil
}

// Close closes the pool's connections, waiting for those in use to be
// released. The Store is not used afterwards. A Notifier made on it is
// stopped first by its owner. Calling it twice is harmless; it returns
// nil.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// maxTxAttempts is how many times tx runs a transaction that PostgreSQL
// aborted as a serialization failure or a deadlock.
const maxTxAttempts = 4

// tx runs fn in a READ COMMITTED transaction and commits it if fn returns
// nil. A transaction aborted by a serialization failure (40001) or a
// deadlock (40P01) is run again, after a short random delay, up to
// maxTxAttempts times in all: fn must have no effect outside the
// transaction. The error is mapped (mapErr).
func (s *Store) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	err := s.retry(ctx, func() error { return pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{}, fn) })
	s.CountFenced(err)
	return err
}

// exec runs one statement, a transaction of its own, as tx runs one.
func (s *Store) exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	var tag pgconn.CommandTag
	err := s.retry(ctx, func() (err error) {
		tag, err = s.pool.Exec(ctx, sql, args...)
		return err
	})
	return tag, err
}

// retry runs run, again while it fails as retryable, up to maxTxAttempts
// times; the error is mapped (mapErr).
func (s *Store) retry(ctx context.Context, run func() error) error {
	for attempt := 1; ; attempt++ {
		err := run()
		if err == nil || attempt == maxTxAttempts || !retryable(err) {
			return mapErr(ctx, err)
		}
		// Spread the retries so that the transactions that collided do
		// not collide again.
		delay := time.Duration(attempt) * time.Duration(5+rand.IntN(20)) * time.Millisecond
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return mapErr(ctx, err)
		case <-t.C:
		}
	}
}

// retryable tells whether err aborted a transaction that may succeed if
// run again as it is.
func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}
