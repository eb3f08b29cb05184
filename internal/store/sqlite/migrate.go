package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/sortie-ci/sortie/internal/store"
)

// migrationFiles are the schema changes, applied in version order. A file
// is named NNNN_what.sql; once released it is never edited, only followed.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// schemaFile is the schema the migrations make, with the rows they insert,
// written out from them (TestSchemaSnapshot -update). A new database gets
// it in one statement list instead of every migration in turn, each of
// which has SQLite read the whole schema again: about 4 ms against 12 for
// a new file (docs/benchmarks.md), on the path of a first `sortie run` and
// of every test that opens a store.
//
//go:embed schema.sql
var schemaFile string

// schemaHeader starts schemaFile's first line, followed by the number of
// the migrations it holds: a schemaFile older than the migrations is
// followed by those it lacks, rather than taken for all of them.
const schemaHeader = "-- The schema of migration "

// schemaVersion is the number of the migrations schemaFile holds, 0 if it
// says none.
func schemaVersion() int {
	line, _, _ := strings.Cut(schemaFile, "\n")
	rest, ok := strings.CutPrefix(line, schemaHeader)
	if !ok {
		return 0
	}
	digits, _, _ := strings.Cut(rest, " ")
	v, err := strconv.Atoi(digits)
	if err != nil {
		return 0
	}
	return v
}

// migrations returns the embedded migrations in version order.
func migrations() ([]store.Migration, error) {
	return store.ReadMigrations(migrationFiles, "migrations")
}

// migrate applies the migrations db lacks, each in its own BEGIN IMMEDIATE
// transaction that first checks schema_migrations: concurrent openers
// serialise on the write lock, and whoever comes second finds the version
// applied and skips it. A database without any (a new file) gets
// schemaFile instead, and the versions it holds at once, in the first
// one; the migrations after those follow, if any.
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
	snapshot := schemaVersion()
	made := 0 // the versions schemaFile made, on a new database
	for _, m := range ms {
		if m.Version <= made {
			continue
		}
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
			if newest == 0 && snapshot > 0 && snapshot <= len(ms) {
				if _, err := tx.ExecContext(ctx, schemaFile); err != nil {
					return fmt.Errorf("schema.sql: %w", err)
				}
				if err := checkForeignKeys(ctx, tx); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, `WITH RECURSIVE v(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM v WHERE n < ?)
					INSERT INTO schema_migrations (version) SELECT n FROM v`, snapshot); err != nil {
					return err
				}
				if err := tx.Commit(); err != nil {
					return err
				}
				made = snapshot
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
