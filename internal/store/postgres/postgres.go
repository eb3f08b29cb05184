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
// locks, objid 1 for migrations; class 0x736f7274 is for semaphores.
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
)

// lockClass is the first key of Sortie's singleton advisory locks ('soru').
const lockClass = 0x736f7275

// Objids of the singleton advisory locks in lockClass.
const lockMigrate = 1

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
// stopped first by its owner.
func (s *Store) Close() { s.pool.Close() }

// maxTxAttempts is how many times tx runs a transaction that PostgreSQL
// aborted as a serialization failure or a deadlock.
const maxTxAttempts = 4

// tx runs fn in a READ COMMITTED transaction and commits it if fn returns
// nil. A transaction aborted by a serialization failure (40001) or a
// deadlock (40P01) is run again, after a short random delay, up to
// maxTxAttempts times in all: fn must have no effect outside the
// transaction. The error is mapped (mapErr).
func (s *Store) tx(ctx context.Context, fn func(pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{}, fn)
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
