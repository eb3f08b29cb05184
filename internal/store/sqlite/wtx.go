package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
)

// wtx runs the statements of a write transaction: database/sql's (sqlTx),
// or the write connection's own (connTx), which the build writes, the path
// of every job, take.
type wtx interface {
	// exec runs a statement and returns how many rows it changed.
	exec(ctx context.Context, query string, args ...any) (int64, error)
	// row runs a single-row query; Scan says sql.ErrNoRows for none.
	row(ctx context.Context, query string, args ...any) scanner
}

// sqlTx is a wtx on a database/sql transaction (Store.tx).
type sqlTx struct {
	s  *Store
	tx *sql.Tx
}

func (x sqlTx) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := x.s.txExec(ctx, x.tx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (x sqlTx) row(ctx context.Context, query string, args ...any) scanner {
	return x.s.txRow(ctx, x.tx, query, args...)
}

// writeConnector opens the write pool's connections as writeConns.
type writeConnector struct{ driver.Connector }

func (c writeConnector) Connect(ctx context.Context) (driver.Conn, error) {
	dc, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	inner, ok := dc.(driverConn)
	if !ok {
		dc.Close()
		return nil, fmt.Errorf("the driver's connection %T lacks what database/sql uses of it", dc)
	}
	return &writeConn{driverConn: inner, stmts: map[string]driver.Stmt{}}, nil
}

// driverConn is what database/sql uses of a connection of
// modernc.org/sqlite, which writeConn passes on (no NamedValueChecker:
// the driver has none, and database/sql converts the arguments).
type driverConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// writeConn is a connection of the write pool: the driver's, and the
// statements rawTx prepared on it, which its Close closes first (SQLite
// keeps a connection closed with statements left open, its page cache
// with it, until they are finalized). Only the goroutine that holds the
// connection, which database/sql hands over under its own lock, uses
// stmts and args.
type writeConn struct {
	driverConn
	stmts map[string]driver.Stmt
	args  []driver.NamedValue // a statement's, reused by the next
}

func (c *writeConn) Close() error {
	var errs []error
	for _, st := range c.stmts {
		errs = append(errs, st.Close())
	}
	c.stmts = nil
	return errors.Join(append(errs, c.driverConn.Close())...)
}

// connTx is a write transaction run on the driver's connection itself
// (Store.rawTx), BEGIN IMMEDIATE to COMMIT, the same statements as
// Store.tx: database/sql costs a job's batch more than its own statements
// do (its Tx, a Stmt of the Tx's for each statement, BEGIN and COMMIT
// parsed again each time by the driver; docs/benchmarks.md).
type connTx struct {
	c *writeConn
}

// rawTx runs fn in a write transaction on the write connection's driver
// connection, with Store.tx's guarantees: BEGIN IMMEDIATE, committed if fn
// returns nil, rolled back otherwise, the fenced counted and the
// unavailable marked. fn must use x only.
func (s *Store) rawTx(ctx context.Context, fn func(x wtx) error) error {
	if err := s.settle(ctx); err != nil {
		return unavailable(err)
	}
	return s.rawTxNow(ctx, fn)
}

// rawTxNow is rawTx without applying the journal first: the journal's own
// transactions.
func (s *Store) rawTxNow(ctx context.Context, fn func(x wtx) error) error {
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return unavailable(err)
	}
	defer conn.Close()
	var fnErr error
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*writeConn)
		if !ok {
			return fmt.Errorf("the write pool's connection is a %T", dc)
		}
		x := &connTx{c}
		// ROLLBACK and COMMIT run whatever becomes of ctx; as
		// database/sql's, a transaction whose ctx is done before its
		// COMMIT is rolled back.
		endCtx := ctx
		if ctx.Done() != nil {
			endCtx = context.WithoutCancel(ctx)
		}
		if _, err := x.exec(ctx, "BEGIN IMMEDIATE"); err != nil {
			// A BEGIN that took effect as ctx ended is reported failed:
			// end it (a ROLLBACK with no transaction fails, harmlessly).
			x.exec(endCtx, "ROLLBACK")
			return err
		}
		end := "COMMIT"
		if fnErr = fn(x); fnErr == nil {
			fnErr = ctx.Err()
		}
		if fnErr != nil {
			end = "ROLLBACK"
		}
		_, err := x.exec(endCtx, end)
		if err == nil {
			return nil
		}
		if end == "COMMIT" {
			// As the driver's own Commit: a COMMIT that failed may have
			// left the transaction open.
			if _, rerr := x.exec(endCtx, "ROLLBACK"); rerr == nil {
				return err
			}
		}
		// The transaction may still be open, and a connection in one
		// cannot go back to the pool: database/sql closes it for
		// ErrBadConn.
		return errors.Join(err, driver.ErrBadConn)
	})
	if fnErr != nil {
		s.CountFenced(fnErr)
		return unavailable(errors.Join(fnErr, err))
	}
	return unavailable(err)
}

// stmt returns the statement of query on the connection, prepared once.
func (x *connTx) stmt(ctx context.Context, query string) (driver.Stmt, error) {
	if st, ok := x.c.stmts[query]; ok {
		return st, nil
	}
	st, err := x.c.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	x.c.stmts[query] = st
	return st, nil
}

// named converts args as database/sql does for a driver that checks none:
// the driver's own types as they are, the others (named string types,
// int, sql.Null*) by driver.DefaultParameterConverter.
func (x *connTx) named(args []any) ([]driver.NamedValue, error) {
	nv := x.c.args[:0]
	for i, a := range args {
		var v driver.Value
		switch a := a.(type) {
		case string, int64, nil, []byte:
			v = a
		case int:
			v = int64(a)
		default:
			var err error
			if v, err = driver.DefaultParameterConverter.ConvertValue(a); err != nil {
				return nil, fmt.Errorf("argument %d: %w", i+1, err)
			}
		}
		nv = append(nv, driver.NamedValue{Ordinal: i + 1, Value: v})
	}
	x.c.args = nv
	return nv, nil
}

func (x *connTx) exec(ctx context.Context, query string, args ...any) (int64, error) {
	st, err := x.stmt(ctx, query)
	if err != nil {
		return 0, err
	}
	nv, err := x.named(args)
	if err != nil {
		return 0, err
	}
	res, err := st.(driver.StmtExecContext).ExecContext(ctx, nv)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (x *connTx) row(ctx context.Context, query string, args ...any) scanner {
	st, err := x.stmt(ctx, query)
	if err != nil {
		return rawRow{err: err}
	}
	nv, err := x.named(args)
	if err != nil {
		return rawRow{err: err}
	}
	rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, nv)
	return rawRow{rows: rows, err: err}
}

// rawRow is the first row of rows, for the few types the build writes'
// reasons scan into. Its Scan must be called: it closes rows, which
// releases the statement for its next use.
type rawRow struct {
	rows driver.Rows
	err  error
}

func (r rawRow) Scan(dest ...any) (err error) {
	if r.err != nil {
		return r.err
	}
	defer func() { err = errors.Join(err, r.rows.Close()) }()
	vals := make([]driver.Value, len(r.rows.Columns()))
	if len(vals) != len(dest) {
		return fmt.Errorf("scan: %d columns into %d values", len(vals), len(dest))
	}
	if err := r.rows.Next(vals); errors.Is(err, io.EOF) {
		return sql.ErrNoRows
	} else if err != nil {
		return err
	}
	for i, v := range vals {
		if err := scanValue(dest[i], v); err != nil {
			return fmt.Errorf("scan column %d: %w", i+1, err)
		}
	}
	return nil
}

func scanValue(dest any, v driver.Value) error {
	switch d := dest.(type) {
	case *string:
		switch v := v.(type) {
		case string:
			*d = v
			return nil
		case []byte:
			*d = string(v)
			return nil
		}
	case *int64:
		if v, ok := v.(int64); ok {
			*d = v
			return nil
		}
	case *int:
		if v, ok := v.(int64); ok {
			*d = int(v)
			return nil
		}
	case *bool:
		if v, ok := v.(int64); ok {
			*d = v != 0
			return nil
		}
	}
	return fmt.Errorf("%T into %T", v, dest)
}
