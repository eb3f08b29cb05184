// Package sqlite is the embedded store.Store: one SQLite file, shared safely
// by every sortie process that opens it (SPEC §2.5). It uses
// modernc.org/sqlite, so it needs no cgo.
//
// Several processes on one file coordinate through SQLite's own locks: the
// database runs in WAL mode, every write transaction starts with BEGIN
// IMMEDIATE (so a transaction that reads then writes takes the write lock
// before it reads, and two processes can neither deadlock on a lock upgrade
// nor both grant the last slot of a semaphore), and a busy writer is waited
// for up to busyTimeout.
//
// Leases: an owner that has never called RenewLease has no lease row and is
// treated as alive. Callers renew an owner's lease before it first acquires a
// semaphore; until then nothing can tell a slow starter from a dead process,
// and taking a live holder away is the worse mistake (SPEC §2.5).
// ExpireLeases deletes the lease rows it reports, so each dead owner is
// reported once; AcquireSemaphores drops an expired owner's holders and
// waiters but leaves its lease row for ExpireLeases to report.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/sortie-ci/sortie/internal/store"
)

// busyTimeout is how long a statement waits for another connection or
// process to release the write lock before it fails with SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// maxReaders bounds the read pool; WAL readers do not block the writer.
const maxReaders = 4

var _ store.Store = (*Store)(nil)

// Store is a store.Store backed by one SQLite file. It is safe for
// concurrent use by several goroutines and by several processes that open
// the same file.
type Store struct {
	// w is the write pool: a single connection, so this process's writers
	// queue in Go instead of sleeping in SQLite's busy handler; other
	// processes are waited for by busy_timeout.
	w *sql.DB
	// r is the read pool, query-only.
	r *sql.DB
}

// Open opens (creating it if missing) the database file at path and brings
// its schema up to date. The directory must exist. Several processes may
// Open the same file at once; each migration is applied exactly once. The
// caller must Close the store.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: open: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	w, err := openDB(abs, false)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	if err := migrate(ctx, w); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	r, err := openDB(abs, true)
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	r.SetMaxOpenConns(maxReaders)
	if err := r.PingContext(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return &Store{w: w, r: r}, nil
}

// openDB opens a pool on the file at abs. The file: URI form lets any
// character appear in the path; the driver consumes the underscore keys.
func openDB(abs string, readOnly bool) (*sql.DB, error) {
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busyTimeout.Milliseconds()))
	q.Set("_foreign_keys", "1")
	q.Set("_txlock", "immediate")
	if readOnly {
		q.Set("_query_only", "1")
	} else {
		// journal_mode is persistent in the file; the writer sets it
		// before the schema exists. NORMAL is durable across a process
		// crash in WAL mode; only a power loss can lose the last commits.
		q.Set("_journal_mode", "WAL")
		q.Set("_synchronous", "NORMAL")
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, err
	}
	return db, nil
}

// Close closes both connection pools. It waits for nothing: callers stop
// using the store first. Calling it twice is harmless.
func (s *Store) Close() error {
	return errors.Join(s.r.Close(), s.w.Close())
}

// tx runs fn in a write transaction (BEGIN IMMEDIATE) and commits it if fn
// returns nil. fn must use tx only: the write pool has one connection.
func (s *Store) tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return errors.Join(err, ignoreDone(tx.Rollback()))
	}
	return tx.Commit()
}

func ignoreDone(err error) error {
	if errors.Is(err, sql.ErrTxDone) {
		return nil
	}
	return err
}

// Times are stored as INTEGER unix nanoseconds and read back in UTC.

func nanos(t time.Time) int64 { return t.UnixNano() }

// nullNanos stores a zero time as NULL.
func nullNanos(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixNano(), Valid: true}
}

func fromNanos(n int64) time.Time { return time.Unix(0, n).UTC() }

func fromNullNanos(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromNanos(n.Int64)
	return &t
}

// errZeroTime reports a required time left zero: a programmer error that
// would otherwise store an undefined UnixNano.
func errZeroTime(field string) error {
	return fmt.Errorf("%s is zero", field)
}
