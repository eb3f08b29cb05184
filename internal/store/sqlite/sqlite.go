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
// The build writes, a run's per-job path, run on the write connection's
// driver connection with statements prepared once (rawTx), the others in
// database/sql transactions (Store.tx): the same statements, BEGIN
// IMMEDIATE to COMMIT, on the same connection.
//
// Owners and fencing: an owner registers (RegisterOwner) before it writes
// anything of its own; there is no "owner without a row". A write that
// carries a Fence reads the owner's row inside its BEGIN IMMEDIATE
// transaction (a build's write, in its own statement: fenceCond) and is
// refused with store.ErrFenced unless the owner is live with that epoch:
// the write lock held from that read to the commit is what orders it
// against FenceOwners. UpdateSemaphores shows the waiters of
// an owner not alive (fenced, or its lease run out) dead, for the rule
// (semaphore.Decide) to drop, and its holders as any other, since its
// builds may still run, until ReleaseOwner drops them. Times not given
// (a zero Now) are this host's clock: the file is one host's.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" database/sql driver
	sqlite3 "modernc.org/sqlite/lib"

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
	store.FencedCounter
	// w is the write pool: a single connection, so this process's writers
	// queue in Go instead of sleeping in SQLite's busy handler; other
	// processes are waited for by busy_timeout.
	w *sql.DB
	// r is the read pool, query-only.
	r *sql.DB
	// stmts caches prepared statements by pool and text: parsing the SQL
	// again for every build's writes was an eighth of Sortie's CPU on a
	// 10,000-job buildset.
	stmts     sync.Map // stmtKey -> *sql.Stmt
	toPrepare sync.Map // query -> true: missed inside a transaction
	// j is the build writes' journal (journal.go): every read and write
	// of the store applies what it holds first (settle).
	j *journal
}

type stmtKey struct {
	db    *sql.DB
	query string
}

// prepared returns the cached statement for query on db, preparing it once.
func (s *Store) prepared(ctx context.Context, db *sql.DB, query string) (*sql.Stmt, error) {
	k := stmtKey{db, query}
	if st, ok := s.stmts.Load(k); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.stmts.LoadOrStore(k, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// exec runs a statement on the write pool, outside a transaction.
func (s *Store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := s.settle(ctx); err != nil {
		return nil, unavailable(err)
	}
	st, err := s.prepared(ctx, s.w, query)
	if err != nil {
		return nil, unavailable(err)
	}
	res, err := st.ExecContext(ctx, args...)
	return res, unavailable(err)
}

// row runs a single-row query on the read pool, once the journal is
// applied: this process reads what it wrote. A journal that cannot be
// applied now is not waited for; its error is the next write's.
func (s *Store) row(ctx context.Context, query string, args ...any) *sql.Row {
	_ = s.settle(ctx)
	return s.rowNow(ctx, query, args...)
}

// rowNow is row without applying the journal first.
func (s *Store) rowNow(ctx context.Context, query string, args ...any) *sql.Row {
	st, err := s.prepared(ctx, s.r, query)
	if err != nil {
		// A Row carries no error of its own making; let the read pool
		// report the same preparation error through Scan.
		return s.r.QueryRowContext(ctx, query, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// rows runs a query on the read pool, once the journal is applied (row).
func (s *Store) rows(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	_ = s.settle(ctx)
	return s.rowsNow(ctx, query, args...)
}

// rowsNow is rows without applying the journal first.
func (s *Store) rowsNow(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	st, err := s.prepared(ctx, s.r, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

// txExec runs a statement inside tx, prepared if it is cached. The write
// pool's one connection is the transaction's, so a statement cannot be
// prepared now: a miss runs unprepared and is prepared after the commit.
func (s *Store) txExec(ctx context.Context, tx *sql.Tx, query string, args ...any) (sql.Result, error) {
	if st, ok := s.stmts.Load(stmtKey{s.w, query}); ok {
		return tx.StmtContext(ctx, st.(*sql.Stmt)).ExecContext(ctx, args...)
	}
	s.toPrepare.Store(query, true)
	return tx.ExecContext(ctx, query, args...)
}

// txRow is txExec for a single-row query.
func (s *Store) txRow(ctx context.Context, tx *sql.Tx, query string, args ...any) *sql.Row {
	if st, ok := s.stmts.Load(stmtKey{s.w, query}); ok {
		return tx.StmtContext(ctx, st.(*sql.Stmt)).QueryRowContext(ctx, args...)
	}
	s.toPrepare.Store(query, true)
	return tx.QueryRowContext(ctx, query, args...)
}

// txQuery is txExec for a query.
func (s *Store) txQuery(ctx context.Context, tx *sql.Tx, query string, args ...any) (*sql.Rows, error) {
	if st, ok := s.stmts.Load(stmtKey{s.w, query}); ok {
		return tx.StmtContext(ctx, st.(*sql.Stmt)).QueryContext(ctx, args...)
	}
	s.toPrepare.Store(query, true)
	return tx.QueryContext(ctx, query, args...)
}

// prepareMissed prepares the statements transactions missed; called with
// the write connection free.
func (s *Store) prepareMissed(ctx context.Context) {
	s.toPrepare.Range(func(k, _ any) bool {
		s.toPrepare.Delete(k)
		s.prepared(ctx, s.w, k.(string))
		return true
	})
}

// Open opens (creating it if missing) the database file at path and brings
// its schema up to date. The directory must exist. Several processes may
// Open the same file at once; each migration is applied exactly once. A
// damaged file (PRAGMA quick_check) is refused with a *CorruptError. The
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
	// A damaged file is refused here, the same way by every command,
	// rather than by whichever query first reads the damaged page.
	if err := migrateRetrying(ctx, w); err != nil {
		w.Close()
		return nil, damaged(abs, err, fmt.Errorf("sqlite: open %s: %w", path, err))
	}
	if err := quickCheck(ctx, w, abs); err != nil {
		w.Close()
		return nil, err
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
	s := &Store{w: w, r: r, j: newJournal(journalDir(abs))}
	// A process that died with build writes not yet applied left them in
	// its journal: they are the database's before anything reads it.
	if err := s.recoverJournals(ctx); err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return s, nil
}

// CorruptError is a database file that SQLite finds damaged, or that is not
// a SQLite database at all. Open returns it before anything else reads or
// writes the file.
type CorruptError struct {
	Path   string // absolute
	Detail string // what SQLite said
}

func (e *CorruptError) Error() string {
	b := filepath.Base(e.Path)
	return fmt.Sprintf("sqlite: open %s: the database is damaged (%s); stop every sortie process that uses it, "+
		"put your latest backup in its place and delete %s-wal, %s-shm and %s-writes beside it "+
		"(docs/operations.md, \"Backups of the state\")", e.Path, e.Detail, b, b, b)
}

// quickCheck runs SQLite's PRAGMA quick_check: every page of the file is
// read and its b-tree structure checked (not the indexes against their
// tables, which integrity_check adds). About 0.2 s for a 50 MB database.
func quickCheck(ctx context.Context, db *sql.DB, abs string) error {
	rows, err := db.QueryContext(ctx, "PRAGMA quick_check(3)")
	if err != nil {
		return damaged(abs, err, fmt.Errorf("sqlite: open %s: quick_check: %w", abs, err))
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return damaged(abs, err, fmt.Errorf("sqlite: open %s: quick_check: %w", abs, err))
		}
		if line != "ok" {
			problems = append(problems, strings.ReplaceAll(line, "\n", " "))
		}
	}
	if err := rows.Err(); err != nil {
		return damaged(abs, err, fmt.Errorf("sqlite: open %s: quick_check: %w", abs, err))
	}
	if len(problems) > 0 {
		return &CorruptError{Path: abs, Detail: strings.Join(problems, "; ")}
	}
	return nil
}

// damaged returns a *CorruptError when err is SQLite finding the file
// damaged or not a database, else otherwise.
func damaged(abs string, err, otherwise error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB:
			return &CorruptError{Path: abs, Detail: se.Error()}
		}
	}
	return otherwise
}

// openDB opens a pool on the file at abs. The file: URI form lets any
// character appear in the path; the driver consumes the underscore keys.
// migrateRetrying migrates, trying again while SQLite answers BUSY. Two
// processes opening a new database file at once can get SQLITE_BUSY
// without the busy handler being consulted (the first one is switching the
// file to WAL and creating the schema); the second then simply retries,
// for at most busyTimeout.
func migrateRetrying(ctx context.Context, db *sql.DB) error {
	deadline := time.Now().Add(busyTimeout)
	for {
		err := migrate(ctx, db)
		var se *sqlite.Error
		if err == nil || !errors.As(err, &se) || se.Code()&0xff != sqlite3.SQLITE_BUSY || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func openDB(abs string, readOnly bool) (*sql.DB, error) {
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busyTimeout.Milliseconds()))
	q.Set("_foreign_keys", "1")
	q.Set("_txlock", "immediate")
	// SQLite's default page cache is 2 MB per connection; a server's
	// database outgrows it within days, and each miss is a read and a
	// page parse. 32 MB (a bound, used only as the file grows) took 7%
	// off a 10,000-job run (docs/benchmarks.md).
	q.Add("_pragma", "cache_size(-32000)")
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
	if readOnly {
		return sql.Open("sqlite", u.String())
	}
	c, err := sqlite.NewConnector(u.String())
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(writeConnector{c}), nil
}

// Checkpoint copies into the database file every page the write-ahead log
// holds that no reader still needs (a passive checkpoint, which waits for
// no one). Close checkpoints what is left, which is then little: a caller
// with other work before closing (`sortie run` writing its report) has the
// copy done meanwhile. Writes made after it are Close's to copy.
func (s *Store) Checkpoint(ctx context.Context) error {
	if _, err := s.w.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
		return fmt.Errorf("sqlite: checkpoint: %w", err)
	}
	return nil
}

// Close applies the journal and closes both connection pools. It waits for
// nothing else: callers stop using the store first. Calling it twice is
// harmless.
func (s *Store) Close() error {
	jerr := s.closeJournal()
	s.stmts.Range(func(_, st any) bool {
		st.(*sql.Stmt).Close()
		return true
	})
	return errors.Join(jerr, s.r.Close(), s.w.Close())
}

// tx runs fn in a write transaction (BEGIN IMMEDIATE) and commits it if fn
// returns nil. fn must use tx only: the write pool has one connection.
func (s *Store) tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if err := s.settle(ctx); err != nil {
		return unavailable(err)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return unavailable(err)
	}
	if err := fn(tx); err != nil {
		s.CountFenced(err)
		err = errors.Join(err, ignoreDone(tx.Rollback()))
		s.prepareMissed(ctx)
		return unavailable(err)
	}
	err = tx.Commit()
	s.prepareMissed(ctx)
	return unavailable(err)
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

// optNanos is nullNanos as a driver's value: nil, or the int64 itself.
func optNanos(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
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
