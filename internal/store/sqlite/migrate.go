package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"

	"github.com/sortie-ci/sortie/internal/store"
)

// migrationFiles are the schema changes, applied in version order. A file
// is named NNNN_what.sql; once released it is never edited, only followed.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migrations returns the embedded migrations in version order.
func migrations() ([]store.Migration, error) {
	return store.ReadMigrations(migrationFiles, "migrations")
}

// migrate applies the migrations db lacks, each in its own BEGIN IMMEDIATE
// transaction that first checks schema_migrations: concurrent openers
// serialise on the write lock, and whoever comes second finds the version
// applied and skips it.
//
// Migrations run on one connection with foreign keys off, as SQLite's way of
// rebuilding a table needs (dropping a referenced table would otherwise
// cascade; the pragma is a no-op inside a transaction), and each checks the
// keys before it commits. The keys are back on before the connection returns
// to the pool, or the connection is discarded.
func migrate(ctx context.Context, db *sql.DB) (err error) {
	ms, err := migrations()
	if err != nil {
		return err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA foreign_keys = OFF`); err != nil {
		return err
	}
	defer func() {
		if _, ferr := conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA foreign_keys = ON`); ferr != nil {
			err = errors.Join(err, fmt.Errorf("migrate: foreign keys back on: %w", ferr))
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	const createTable = `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`
	for _, m := range ms {
		err := func() error {
			tx, err := conn.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(ctx, createTable); err != nil {
				return err
			}
			var newest int
			if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&newest); err != nil {
				return err
			}
			if newest > len(ms) {
				return fmt.Errorf("database schema version %d is newer than this sortie knows (%d): upgrade sortie", newest, len(ms))
			}
			if newest >= m.Version {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return err
			}
			if schemaRewrites[m.Version] {
				if err := nextSchemaVersion(ctx, tx); err != nil {
					return err
				}
			}
			if err := checkForeignKeys(ctx, tx); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, m.Version); err != nil {
				return err
			}
			return tx.Commit()
		}()
		if err != nil {
			return fmt.Errorf("migrate %s: %w", m.Name, err)
		}
	}
	return nil
}

// schemaRewrites are the migrations that change the text of a table's
// definition in sqlite_schema itself (writable_schema), as SQLite documents
// for a change that leaves every stored row as it is. SQLite's connections
// notice a changed schema by its version number, which such a write leaves
// alone, so migrate moves it on after the migration, in its transaction.
var schemaRewrites = map[int]bool{
	15: true, // 0015_checks_compared.sql
}

// nextSchemaVersion adds one to the schema version, so that every
// connection, this one too, reads the schema again before its next
// statement.
func nextSchemaVersion(ctx context.Context, tx *sql.Tx) error {
	var v int64
	if err := tx.QueryRowContext(ctx, `PRAGMA schema_version`).Scan(&v); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA schema_version = %d`, v+1))
	return err
}

// checkForeignKeys fails if a row breaks a foreign key, which SQLite does not
// check while they are off.
func checkForeignKeys(ctx context.Context, tx *sql.Tx) error {
	rows, err := tx.QueryContext(ctx, `PRAGMA foreign_key_check`)
	if err != nil {
		return err
	}
	defer rows.Close()
	if rows.Next() {
		var (
			table, parent string
			rowid         sql.NullInt64
			fk            int
		)
		if err := rows.Scan(&table, &rowid, &parent, &fk); err != nil {
			return err
		}
		return fmt.Errorf("foreign key check: a row (rowid %v) of %s references no row of %s", rowid.Int64, table, parent)
	}
	return rows.Err()
}

// SchemaVersion is the version of the schema this build brings a database
// to: the number of its migrations.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		return 0 // a broken build; Open says why
	}
	return len(ms)
}
